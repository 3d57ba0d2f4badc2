"""Verify registered rules against JAX autodiff: the engine behind ``mcjax verify``.

For every rule, every argument it has a derivative for, every shape case and dtype, the
hand-derived derivative (densified) is compared with ``jax.jacfwd``, ``jax.jacrev`` and, for
scalar outputs, ``jax.grad``, all computed under one ``jax.jit`` at the same random point.
A comparison passes when ``max|got - ref| <= atol + rtol * max|ref|`` with the tolerance of the
dtype from :mod:`mcjax._conventions`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._jit import quick_jit
from mcjax._conventions import DTYPES, SHAPE_CASES, tolerance
from mcjax._jacobian import densify
from mcjax._registry import REGISTRY, Registry, Rule


@dataclass(frozen=True)
class Comparison:
    """The rule's derivative against one reference."""

    reference: str  # "jacfwd", "jacrev" or "grad"
    max_abs: float
    max_rel: float  # max_abs / max|reference|
    ok: bool


@dataclass(frozen=True)
class RuleResult:
    """The verdict for one rule, one argument, one shape case, one dtype."""

    rule: str
    wrt: str
    dtype: str
    shapes: tuple[tuple[int, ...], ...]
    formula: str
    comparisons: tuple[Comparison, ...] = ()
    error: str | None = None
    tolerance: tuple[float, float] = (0.0, 0.0)
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the derivative was computed and agrees with every reference."""
        return self.error is None and bool(self.comparisons) and all(c.ok for c in self.comparisons)

    def worst(self, attribute: str = "max_rel") -> float:
        """The largest ``max_rel`` (or ``max_abs``) over the references; NaN if none ran."""
        values = [getattr(c, attribute) for c in self.comparisons]
        return max(values) if values else math.nan

    def as_dict(self) -> dict:
        """A JSON-ready dict: the case, the verdict and the error against each reference."""
        return {
            "name": self.rule,
            "wrt": self.wrt,
            "dtype": self.dtype,
            "shapes": [list(s) for s in self.shapes],
            "formula": self.formula,
            "ok": self.ok,
            "error": self.error,
            "rtol": self.tolerance[0],
            "atol": self.tolerance[1],
            "comparisons": {
                c.reference: {"max_abs": c.max_abs, "max_rel": json_number(c.max_rel), "ok": c.ok}
                for c in self.comparisons
            },
        }


def json_number(x: float) -> float | None:
    """``x``, or None where JSON has no number for it (an infinite relative error)."""
    return x if math.isfinite(x) else None


def compare(got, reference, dtype) -> tuple[float, float, bool] | str:
    """Compare two derivative pytrees; a string says why they cannot be compared."""
    got_leaves, got_tree = jax.tree_util.tree_flatten(got)
    ref_leaves, ref_tree = jax.tree_util.tree_flatten(reference)
    if got_tree != ref_tree:
        return f"the derivative has structure {got_tree} but autodiff gives {ref_tree}"
    for g, r in zip(got_leaves, ref_leaves):
        if np.shape(g) != np.shape(r):
            return (
                f"the derivative has shape {tuple(np.shape(g))} but autodiff gives "
                f"{tuple(np.shape(r))} (numerator layout: out.shape + arg.shape)"
            )
    got_leaves = [np.asarray(g, dtype=np.float64) for g in got_leaves]
    ref_leaves = [np.asarray(r, dtype=np.float64) for r in ref_leaves]
    if not all(np.all(np.isfinite(g)) for g in got_leaves):
        return "the derivative has NaN or Inf entries"
    err = max((float(np.max(np.abs(g - r), initial=0.0)) for g, r in zip(got_leaves, ref_leaves)),
              default=0.0)
    scale = max((float(np.max(np.abs(r), initial=0.0)) for r in ref_leaves), default=0.0)
    tol = tolerance(dtype)
    ok = err <= tol.atol + tol.rtol * scale
    rel = err / scale if scale > 0 else (0.0 if err == 0 else math.inf)
    return err, rel, ok


def _references(rule: Rule, names: Sequence[str], args: tuple) -> dict:
    """Each derivative of the rule at ``args`` (densified) with its autodiff references."""
    out = {}
    scalar = all(jnp.ndim(leaf) == 0 for leaf in jax.tree_util.tree_leaves(rule(*args)))
    for name in names:
        i = rule.arg_index(name)

        def f(a, i=i):
            return rule(*args[:i], a, *args[i + 1 :])

        out[name] = {
            "rule": densify(rule.derivative(name)(*args)),
            "jacfwd": jax.jacfwd(f)(args[i]),
            "jacrev": jax.jacrev(f)(args[i]),
        }
        if scalar:
            out[name]["grad"] = jax.grad(f)(args[i])
    return out


def _results(rule, names, args, values, dtype) -> list[RuleResult]:
    tol = tolerance(dtype)
    shapes = tuple(() if isinstance(a, (list, dict, tuple)) else tuple(np.shape(a)) for a in args)
    base = functools.partial(RuleResult, rule=rule.name, dtype=dtype, shapes=shapes,
                             tolerance=tuple(tol))
    if isinstance(values, Exception):
        e = values
        return [base(wrt=n, formula=rule.wrt[n].text, error=f"{type(e).__name__}: {e}")
                for n in names]
    results = []
    for name in names:
        refs = dict(values[name])
        got = refs.pop("rule")
        comparisons, error = [], None
        for ref_name, ref in refs.items():
            outcome = compare(got, ref, dtype)
            if isinstance(outcome, str):
                error = outcome
                break
            comparisons.append(Comparison(ref_name, *outcome))
        results.append(base(wrt=name, formula=rule.wrt[name].text,
                            comparisons=tuple(comparisons), error=error))
    return results


def verify_points(
    rule: Rule,
    points: Sequence[tuple[Mapping[str, int], str]],
    rng: np.random.Generator | int = 0,
    wrt: Iterable[str] | None = None,
) -> list[RuleResult]:
    """Verify ``rule``'s derivatives at several random points, compiled as one program.

    Args:
      rule: the rule.
      points: ``(dims, dtype)`` pairs: sizes of the symbolic dimensions (``{"n": 3, ...}``)
        and ``"float32"`` or ``"float64"``; each gets a random point.
      rng: a NumPy ``Generator`` (or seed) the points are drawn from.
      wrt: the arguments to verify (default: all the rule has derivatives for).

    Returns:
      One :class:`RuleResult` per point and argument.  A rule that fails to trace at a point
      gives results carrying the error, not an exception.
    """
    names = list(wrt if wrt is not None else rule.wrt)
    rng = np.random.default_rng(rng)
    all_args = [rule.example(rng, dims, jnp.dtype(dtype)) for dims, dtype in points]
    try:
        # one jit for all points, with the checker's compile-time options (bitwise the same
        # values): compiling once per rule, fast, is what makes verify take seconds
        values = quick_jit(lambda all_args: [_references(rule, names, a) for a in all_args])(
            all_args)
    except Exception:
        values = []
        for args in all_args:  # find which point fails
            try:
                values.append(quick_jit(lambda a: _references(rule, names, a))(args))
            except Exception as e:  # a rule that fails to trace is a failed rule
                values.append(e)
    results = []
    for args, value, (_, dtype) in zip(all_args, values, points):
        results.extend(_results(rule, names, args, value, dtype))
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
) -> list[RuleResult]:
    """Verify every rule of ``registry`` whose name matches ``pattern``.

    Args:
      registry: the rules (default: mcjax's own).
      pattern: a glob on rule names, e.g. ``"neuron*"``.
      dtypes: the dtypes to verify in; float64 needs ``jax_enable_x64``.
      cases: dimension sizes to instantiate the rules' symbolic shapes with.
      seed: seed of the random points.
      points: random points per rule, shape case and dtype.

    Returns:
      One :class:`RuleResult` per rule, argument, shape case, dtype and point.
    """
    registry = registry if registry is not None else REGISTRY
    for dtype in dtypes:
        if np.dtype(dtype) == np.float64 and not jax.config.jax_enable_x64:
            raise RuntimeError(
                "mcjax.verify: float64 needs jax_enable_x64; call "
                "jax.config.update('jax_enable_x64', True) first, or verify float32 only"
            )
    results = []
    rng = np.random.default_rng(seed)
    for rule in registry.select(pattern):
        batch = [
            (case, dtype)
            for case in shape_cases(rule, cases)
            for dtype in dtypes
            for _ in range(points)
        ]
        results.extend(verify_points(rule, batch, rng))
    return results
