"""Verify registered rules: the checker (``mcjax.check``, full mode) run over the registry.

For every rule, every argument it has a derivative for, every shape case and dtype, the
rule's derivative is checked at a random point exactly as ``mcjax.check`` would check a
user's: the same references (``jax.jacfwd``, ``jax.jacrev``, float64 finite differences,
one-sided derivatives at kinks, the Taylor test), the same tolerance policy
(``mcjax._core._tolerance``) and the same ``mcjax.Report``.  A rule's checks compile
as one program.

The forward function and the derivative are both called with the rule's verification
hyper-parameters (``Rule.hyper``), explicitly.

A rule's second derivatives (``Rule.hessian``) are checked the same way, as first
derivatives: $\\partial^2 f/\\partial a\\,\\partial b$ as the Jacobian with respect to ``b`` of
``jax.grad(forward, a)``, whose references ``jax.jacfwd`` and ``jax.jacrev`` of the gradient
are ``jax.hessian``'s two halves.  Their results are labelled ``"(a, b)"``.
"""

from __future__ import annotations

import collections
import math
import multiprocessing
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check._api import check_cases
from mcjax._check._report import Report
from mcjax._core._arguments import count, describe
from mcjax._core._conventions import DTYPES, SHAPE_CASES
from mcjax._core._user_code import import_user_module
from mcjax._registry import REGISTRY, Registry, Rule


@dataclass(frozen=True)
class RuleResult:
    """The verdict for one rule, one argument, one shape case, one dtype.

    Attributes:
      rule, wrt, dtype: what was checked.
      shapes: the argument shapes of the case (``()`` for a pytree argument).
      formula: the derivative's formula in plain text.
      report: the checker's ``mcjax.Report``, or None when the check could not run.
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

    def derivative(*args):
        return d(*args, **hyper)

    derivative.name = f"d {rule.name} / d {wrt}"
    return rule, derivative  # calling a Rule applies its hyper-parameters; its name is its own


def as_checked_together(rule: Rule, names: Sequence[str]):
    """``(f, derivative)`` of the rule with respect to all of ``names`` at once: ``f(wrt,
    *rest)`` takes them as one tuple ``wrt`` (the other arguments follow in order) and the
    derivative returns the tuple of their derivatives, ``jax.jacfwd``'s structure for it."""
    hyper, index = dict(rule.hyper), [rule.arg_index(n) for n in names]
    ds = [rule.derivative(n) for n in names]

    def full(wrt, rest):  # the arguments in the rule's order
        args = list(rest)
        for i, value in sorted(zip(index, wrt)):
            args.insert(i, value)
        return args

    def f(wrt, *rest):
        return rule(*full(wrt, rest))

    def derivative(wrt, *rest):
        args = full(wrt, rest)
        return tuple(d(*args, **hyper) for d in ds)

    f.name, derivative.name = rule.name, f"d {rule.name} / d ({', '.join(names)})"
    return f, derivative


def second_label(a: str, b: str) -> str:
    """How results name a second derivative: ``"(w, w)"``."""
    return f"({a}, {b})"


def as_checked_second(rule: Rule, a: str, b: str):
    """``(gradient, second)``: ``jax.grad`` of the rule with respect to ``a`` and the rule's
    second derivative with respect to ``(a, b)``, both with the verification hyper-parameters:
    the second derivative is checked as the gradient's Jacobian with respect to ``b``."""
    hyper, d, index = dict(rule.hyper), rule.second_derivative(a, b), rule.arg_index(a)

    def gradient(*args):
        return jax.grad(rule, argnums=index)(*args)

    def second(*args):
        return d(*args, **hyper)

    gradient.name, second.name = f"d {rule.name} / d {a}", f"d2 {rule.name} / d {a} d {b}"
    return gradient, second


def _second_results(rule: Rule, names: Sequence[str] | None, all_args: list, points) -> list:
    """One ``RuleResult`` per point and second derivative (whose pair is among ``names``,
    unless it is None)."""
    pairs = [(a, b) for a, b in rule.hessian if names is None or (a in names and b in names)]
    if not pairs:
        return []
    checked = {pair: as_checked_second(rule, *pair) for pair in pairs}
    reports = iter(_run([(*checked[a, b], args, rule.arg_index(b))
                         for args in all_args for a, b in pairs]))
    results = []
    for args, (_, dtype) in zip(all_args, points):
        for a, b in pairs:
            one = next(reports)
            failed = isinstance(one, Exception)
            results.append(RuleResult(
                rule.name, second_label(a, b), dtype, _shapes(args), rule.hessian[a, b].text,
                report=None if failed else one,
                error=f"{type(one).__name__}: {one}" if failed else None))
    return results


def _shapes(args) -> tuple:
    return tuple(() if isinstance(a, (list, dict, tuple)) else tuple(np.shape(a)) for a in args)


def _run(cases: list) -> list:
    """``mcjax.check_cases`` without finite differences; a case that cannot run gives its error."""
    try:
        return check_cases(cases, stencils=False)
    except Exception:  # noqa: BLE001 - find which case fails; a failure to run is a verdict
        reports = []
        for case in cases:
            try:
                reports.append(check_cases([case], stencils=False)[0])
            except Exception as e:  # noqa: BLE001
                reports.append(e)
        return reports


def _together(rule: Rule, names: list[str], all_args: list) -> list:
    """One check per point with respect to every argument at once; None where it failed (each
    argument is then checked on its own, so that the failing one is named)."""
    f, d = as_checked_together(rule, names)
    index = [rule.arg_index(n) for n in names]
    cases = [(f, d, (tuple(args[i] for i in index),
                     *(a for k, a in enumerate(args) if k not in index)), 0) for args in all_args]
    return [r if not isinstance(r, Exception) and r.ok else None for r in _run(cases)]


def verify_points(
    rule: Rule,
    points: Sequence[tuple[Mapping[str, int], str]],
    rng: np.random.Generator | int = 0,
    wrt: Iterable[str] | None = None,
) -> list[RuleResult]:
    """Check ``rule``'s derivatives at several random points, compiled as one program.

    Every argument is checked at once (one check with respect to all of them, as a tuple);
    where that fails, each argument on its own, so that the report names the failing one.
    Then each second derivative of the rule (``Rule.hessian``) whose pair is among ``wrt``.

    Args:
      rule: the rule.
      points: ``(dims, dtype)`` pairs: sizes of the symbolic dimensions (``{"n": 3, ...}``)
        and ``"float32"`` or ``"float64"``; each gets a random point.
      rng: a NumPy ``Generator`` (or seed) the points are drawn from.
      wrt: the arguments to verify (default: all the rule has derivatives for).

    Returns:
      One ``mcjax.registry.RuleResult`` per point and argument, then one per point and second
      derivative (``wrt`` ``"(a, b)"``).  A rule that fails to trace gives results carrying
      the error, not an exception.
    """
    names = list(wrt if wrt is not None else rule.wrt)
    rng = np.random.default_rng(rng)
    all_args = [rule.example(rng, dims, jnp.dtype(dtype)) for dims, dtype in points]
    shared = _together(rule, names, all_args) if len(names) > 1 else [None] * len(all_args)
    checked = {name: as_checked(rule, name) for name in names}
    alone = [(*checked[name], args, rule.arg_index(name))
             for args, report in zip(all_args, shared) if report is None for name in names]
    single = iter(_run(alone))
    results = []
    for args, (_, dtype), report in zip(all_args, points, shared):
        for name in names:
            one = report if report is not None else next(single)
            failed = isinstance(one, Exception)
            results.append(RuleResult(
                rule.name, name, dtype, _shapes(args), rule.wrt[name].text,
                report=None if failed else one,
                error=f"{type(one).__name__}: {one}" if failed else None))
    return results + _second_results(rule, None if wrt is None else names, all_args, points)


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
    processes: int = 1,
    imports: Sequence[str] = (),
) -> list[RuleResult]:
    """Check every rule of ``registry`` whose name matches ``pattern`` with the checker.

    Args:
      registry: the rules (default: mcjax's own).
      pattern: a glob on rule names, e.g. ``"neuron*"``.
      dtypes: the dtypes to verify in; float64 needs ``jax_enable_x64``.
      cases: dimension sizes to instantiate the rules' symbolic shapes with.
      seed: seed of the random points (an int >= 0).
      points: random points per rule, shape case and dtype (at least 1).
      processes: worker processes to check mcjax's own registry in (tracing and compiling
        hold Python's lock: threads would not run them at once); 1 (the least) checks here.
      imports: modules the workers import first (the rules ``mcjax verify --import`` adds).

    Returns:
      One ``mcjax.registry.RuleResult`` per rule, argument, shape case, dtype and point, in the
      registry's order (the same results however many processes); none when no rule
      matches ``pattern``.

    Raises:
      TypeError, ValueError: a keyword is out of range (the message names it).
      RuntimeError: float64 is asked for without ``jax_enable_x64``.
    """
    _validate(registry, pattern, dtypes, cases, seed, points, processes, imports)
    own = registry is None or registry is REGISTRY
    registry = registry if registry is not None else REGISTRY
    for dtype in dtypes:
        if np.dtype(dtype) == np.float64 and not jax.config.read("jax_enable_x64"):
            raise RuntimeError(
                "mcjax.registry.verify: float64 needs jax_enable_x64; call "
                "jax.config.update('jax_enable_x64', True) first, or verify float32 only"
            )
    rng = np.random.default_rng(seed)
    jobs = []
    for rule in registry.select(pattern):
        batch = [(dict(case), dtype) for case in shape_cases(rule, cases) for dtype in dtypes
                 for _ in range(points)]
        jobs.append((rule.name, batch, int(rng.integers(2**63))))  # each rule its own stream
    if processes > 1 and own and len(jobs) >= MIN_RULES_PER_POOL:
        return _in_processes(jobs, processes, imports, dtypes)
    return [r for name, batch, s in jobs for r in verify_points(registry.get(name), batch, s)]


def _validate(registry, pattern, dtypes, cases, seed, points, processes, imports) -> None:
    """``mcjax.registry.verify``'s keywords, or one sentence naming the one out of range."""
    where = "registry.verify"
    if registry is not None and not isinstance(registry, Registry):
        raise TypeError(f"mcjax.{where}: registry is {describe(registry)}; expected None "
                        "(mcjax's own) or a mcjax.registry.Registry")
    if not isinstance(pattern, str):
        raise TypeError(f"mcjax.{where}: pattern={pattern!r}; expected a glob on rule names "
                        "such as 'neuron*'")
    if isinstance(dtypes, str) or not dtypes or any(d not in DTYPES for d in dtypes):
        raise ValueError(f"mcjax.{where}: dtypes={dtypes!r}; expected a non-empty sequence of "
                         f"{' and '.join(map(repr, DTYPES))}")
    if not cases or not all(isinstance(c, Mapping) for c in cases):
        raise ValueError(f"mcjax.{where}: cases={cases!r}; expected a non-empty sequence of "
                         "dicts of dimension sizes, e.g. [{'m': 3, 'n': 4}]")
    count(where, "seed", seed, minimum=0)
    count(where, "points", points)
    count(where, "processes", processes)
    if isinstance(imports, str) or not all(isinstance(m, str) for m in imports):
        raise TypeError(f"mcjax.{where}: imports={imports!r}; expected a sequence of module "
                        "names or .py paths, e.g. ['my_rules.py']")


MIN_RULES_PER_POOL = 8
"""Fewer rules than this are checked in this process: starting workers would cost more."""


def _in_processes(jobs: list, processes: int, imports: Sequence[str], dtypes) -> list:
    """This process and ``processes - 1`` workers take the rules from one queue, the
    costliest (most arguments and cases) first, so that none is left last.  This process
    starts at once, while the workers import JAX."""
    order = sorted(range(len(jobs)), key=lambda i: -len(jobs[i][1]) * (
        len(REGISTRY.get(jobs[i][0]).wrt) + len(REGISTRY.get(jobs[i][0]).hessian)))
    queue, lock, results, errors = collections.deque(order), threading.Lock(), {}, []

    def take():
        with lock:
            return queue.popleft() if queue else None

    context = multiprocessing.get_context("spawn")  # JAX's threads do not survive a fork
    with ProcessPoolExecutor(processes - 1, mp_context=context, initializer=_worker,
                             initargs=(tuple(imports), tuple(dtypes))) as pool:
        def feed():  # one worker's turn: a rule at a time, while the queue lasts
            while (i := take()) is not None:
                try:
                    results[i] = pool.submit(_verify_rule, *jobs[i]).result()
                except BrokenProcessPool:  # e.g. a __main__ the worker cannot import (a
                    # script on stdin): this process takes the rest
                    with lock:
                        queue.appendleft(i)
                    return
                except BaseException as e:  # noqa: BLE001 - raised below, in this thread
                    errors.append(e)
                    return

        feeders = [threading.Thread(target=feed, daemon=True) for _ in range(processes - 1)]
        for thread in feeders:
            thread.start()
        while (i := take()) is not None:
            results[i] = _verify_rule(*jobs[i])
        for thread in feeders:
            thread.join()
    if errors:
        raise errors[0]
    return [r for i in range(len(jobs)) for r in results[i]]


def _worker(imports: tuple, dtypes: tuple) -> None:
    """A worker process: x64 as the parent has it, and the modules whose rules it verifies."""
    if "float64" in dtypes:
        jax.config.update("jax_enable_x64", True)
    for spec in imports:
        import_user_module(spec, "mcjax verify: --import")


def _verify_rule(name: str, batch: list, seed: int) -> list[RuleResult]:
    return verify_points(REGISTRY.get(name), batch, seed)
