"""Verify registered rules: the checker (:func:`mcjax.check`, full mode) run over the registry.

For every rule, every argument it has a derivative for, every shape case and dtype, the
rule's derivative is checked at a random point exactly as :func:`mcjax.check` would check a
user's: the same references (``jax.jacfwd``, ``jax.jacrev``, float64 finite differences,
one-sided derivatives at kinks, the Taylor test), the same tolerance policy
(:mod:`mcjax._check._config`) and the same :class:`~mcjax.Report`.  A rule's checks compile
as one program; the rules' programs compile on a small thread pool, since XLA compiles
without the GIL.

The forward function and the derivative are both called with the rule's verification
hyper-parameters (:attr:`Rule.hyper <mcjax.registry.Rule>`), explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check._api import check_cases
from mcjax._check._report import Report
from mcjax._conventions import DTYPES, SHAPE_CASES
from mcjax._registry import REGISTRY, Registry, Rule


@dataclass(frozen=True)
class RuleResult:
    """The verdict for one rule, one argument, one shape case, one dtype.

    Attributes:
      rule, wrt, dtype: what was checked.
      shapes: the argument shapes of the case (``()`` for a pytree argument).
      formula: the derivative's formula in plain text.
      report: the checker's :class:`~mcjax.Report`, or None when the check could not run.
      error: why the check could not run (the rule failed to trace, a shape error), or None.
    """

    rule: str
    wrt: str
    dtype: str
    shapes: tuple[tuple[int, ...], ...]
    formula: str
    report: Report | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the check ran and passed."""
        return self.error is None and self.report is not None and self.report.ok

    @property
    def comparisons(self) -> tuple:
        """The report's comparisons, one per reference (empty when the check did not run)."""
        return self.report.comparisons if self.report is not None else ()

    def worst(self, attribute: str = "max_rel") -> float:
        """The largest ``max_rel`` (or ``max_abs``) over the references; NaN if none ran."""
        values = [getattr(c, attribute) for c in self.comparisons]
        return max(values) if values else math.nan

    def as_dict(self) -> dict:
        """A JSON-ready dict: the case, the verdict and the gist of the checker's report."""
        out = {"name": self.rule, "wrt": self.wrt, "dtype": self.dtype,
               "shapes": [list(s) for s in self.shapes], "formula": self.formula,
               "ok": self.ok, "error": self.error}
        r = self.report
        if r is not None:
            out["comparisons"] = {c.reference: {"max_abs": c.max_abs,
                                                "max_rel": json_number(c.max_rel), "ok": c.ok}
                                  for c in r.comparisons}
            out.update(taylor=r.taylor.note if r.taylor else None,
                       kinks=r.kinks.note if r.kinks else None, diagnosis=list(r.diagnosis),
                       problems=list(r.problems))
        return out


def json_number(x: float) -> float | None:
    """``x``, or None where JSON has no number for it (an infinite relative error)."""
    return x if math.isfinite(x) else None


def as_checked(rule: Rule, wrt: str):
    """``(f, derivative)``: the rule's forward function and its derivative with respect to
    ``wrt``, both with the rule's verification hyper-parameters, named for reports."""
    hyper, d = dict(rule.hyper), rule.derivative(wrt)

    def f(*args):
        return rule.forward(*args, **hyper)

    def derivative(*args):
        return d(*args, **hyper)

    f.name, derivative.name = rule.name, f"d {rule.name} / d {wrt}"
    return f, derivative


def _shapes(args) -> tuple:
    return tuple(() if isinstance(a, (list, dict, tuple)) else tuple(np.shape(a)) for a in args)


def verify_points(
    rule: Rule,
    points: Sequence[tuple[Mapping[str, int], str]],
    rng: np.random.Generator | int = 0,
    wrt: Iterable[str] | None = None,
) -> list[RuleResult]:
    """Check ``rule``'s derivatives at several random points, compiled as one program.

    Args:
      rule: the rule.
      points: ``(dims, dtype)`` pairs: sizes of the symbolic dimensions (``{"n": 3, ...}``)
        and ``"float32"`` or ``"float64"``; each gets a random point.
      rng: a NumPy ``Generator`` (or seed) the points are drawn from.
      wrt: the arguments to verify (default: all the rule has derivatives for).

    Returns:
      One :class:`RuleResult` per point and argument.  A rule that fails to trace gives
      results carrying the error, not an exception.
    """
    names = list(wrt if wrt is not None else rule.wrt)
    rng = np.random.default_rng(rng)
    all_args = [rule.example(rng, dims, jnp.dtype(dtype)) for dims, dtype in points]
    checked = {name: as_checked(rule, name) for name in names}
    cases = [(*checked[name], args, rule.arg_index(name))
             for args in all_args for name in names]
    keys = [(name, dtype, args) for args, (_, dtype) in zip(all_args, points) for name in names]
    try:
        reports: list = check_cases(cases, stencils=False)
    except Exception:  # noqa: BLE001 - find which case fails; a failure to run is a verdict
        reports = []
        for case in cases:
            try:
                reports.append(check_cases([case], stencils=False)[0])
            except Exception as e:  # noqa: BLE001
                reports.append(e)
    results = []
    for (name, dtype, args), report in zip(keys, reports):
        failed = isinstance(report, Exception)
        results.append(RuleResult(
            rule.name, name, dtype, _shapes(args), rule.wrt[name].text,
            report=None if failed else report,
            error=f"{type(report).__name__}: {report}" if failed else None))
    return results


def shape_cases(rule: Rule, cases: Sequence[Mapping[str, int]] = SHAPE_CASES) -> list[dict]:
    """The shape cases that give ``rule`` distinct argument shapes (a scalar rule has one)."""
    seen, out = set(), []
    for case in cases:
        used = tuple(case[d] for dims in rule.shapes.values() for d in dims if d != "*")
        if used not in seen:
            seen.add(used)
            out.append(dict(case))
    return out


def verify(
    registry: Registry | None = None,
    *,
    pattern: str = "*",
    dtypes: Sequence[str] = DTYPES,
    cases: Sequence[Mapping[str, int]] = SHAPE_CASES,
    seed: int = 0,
    points: int = 1,
    threads: int = 2,
) -> list[RuleResult]:
    """Check every rule of ``registry`` whose name matches ``pattern`` with the checker.

    Args:
      registry: the rules (default: mcjax's own).
      pattern: a glob on rule names, e.g. ``"neuron*"``.
      dtypes: the dtypes to verify in; float64 needs ``jax_enable_x64``.
      cases: dimension sizes to instantiate the rules' symbolic shapes with.
      seed: seed of the random points.
      points: random points per rule, shape case and dtype.
      threads: rules checked at once (their programs compile in parallel).

    Returns:
      One :class:`RuleResult` per rule, argument, shape case, dtype and point, in the
      registry's order.
    """
    registry = registry if registry is not None else REGISTRY
    for dtype in dtypes:
        if np.dtype(dtype) == np.float64 and not jax.config.jax_enable_x64:
            raise RuntimeError(
                "mcjax.registry.verify: float64 needs jax_enable_x64; call "
                "jax.config.update('jax_enable_x64', True) first, or verify float32 only"
            )
    rng = np.random.default_rng(seed)
    jobs = []
    for rule in registry.select(pattern):
        batch = [(case, dtype) for case in shape_cases(rule, cases) for dtype in dtypes
                 for _ in range(points)]
        # each rule draws its points from its own stream, so the threads cannot reorder them
        jobs.append((rule, batch, np.random.default_rng(rng.integers(2**63))))
    with ThreadPoolExecutor(max(1, threads)) as pool:
        done = pool.map(lambda job: verify_points(*job), jobs)
        return [result for results in done for result in results]
