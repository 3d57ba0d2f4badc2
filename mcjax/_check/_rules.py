r"""``mcjax.check_rule``: is a ``jax.custom_jvp`` or ``jax.custom_vjp`` rule right?

A custom rule is a hand-derived derivative that JAX's autodiff uses in place of
differentiating the function's own computation.  ``check_rule`` checks it as
``mcjax.check`` checks any hand-derived derivative, against the computation the rule
stands for, taken from ``f`` itself:

- the **references** are those of the rule-free computation: ``f``'s program with every
  custom call replaced by its body (``mcjax._check._rule_free.rule_free``), whose autodiff
  (``jax.jacfwd``, ``jax.jacrev``), finite differences and Taylor test ``mcjax.check``
  computes; or, for a rule that implements another function's derivative on purpose (a
  straight-through estimator, a clipped gradient), those of the ``surrogate``;
- the rule is judged in **both directions**, each as the derivative under test of one
  ``mcjax.check``: its JVP (``jax.jacfwd`` of ``f``; JAX has none for a ``custom_vjp``) and
  its VJP (``jax.vjp`` of ``f``: a ``custom_vjp``'s ``bwd``, or JAX's transpose of a
  ``custom_jvp`` rule);
- the **structural tests** of ``mcjax._check._rule_probes``: the primal each rule returns
  against ``f``'s own, linearity, JVP and VJP transposes of each other, symbolic zeros, and
  the rule under ``jax.vmap`` (everything runs under ``jax.jit``).

The call is validated and both directions built by ``mcjax._check._rule_plan``; the verdicts
make one ``mcjax.Report`` here, whose ``parts`` hold each direction's own report and whose
diagnosis starts by saying which direction departs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check import _full, _rule_probes
from mcjax._check._api import _options, check
from mcjax._check._compare import Threshold
from mcjax._check._problem import prepare
from mcjax._check._report import Report
from mcjax._check._report_parts import Later
from mcjax._check._rule_plan import RulePlan, as_check_rule, plan, rules_words
from mcjax._core._arguments import count, describe
from mcjax._core._errors import DerivativeError
from mcjax._core._tolerance import FAST_DIRECTIONS
from mcjax._program._trace import digest


# -- one report ----------------------------------------------------------------------------------
def _header(plan: RulePlan, mode: str, points: int) -> dict:
    """The report's first fields, for a rule no direction of which could be checked."""
    floating = [d for d in plan.x_spec.dtypes + plan.out_spec.dtypes if jnp.issubdtype(d, jnp.floating)]
    dtype = max(floating, key=lambda d: float(jnp.finfo(d).eps), default=plan.x_spec.dtypes[0])
    return {"function": plan.name, "derivative": rules_words(plan.rules),
            "wrt": plan.x_spec.names[-1],
            "shapes": f"f: {plan.x_spec.names[-1]} {plan.x_spec.describe()} -> "
                      f"{plan.out_spec.describe()}",
            "dtype": dtype, "mode": mode, "points": points,
            "threshold": Threshold.of(dtype, plan.terms, "none: no direction could be checked")}


def _which(plan: RulePlan, parts: dict[str, Report]) -> str:
    """The diagnosis's first line: which direction departs from the references."""
    kinds = {r.kind for r in plan.rules}
    rules = rules_words(plan.rules, written=True)
    jvp, vjp = parts.get("JVP"), parts.get("VJP")
    if jvp is not None and not jvp.ok and vjp is not None and not vjp.ok:
        how = (" (JAX transposes the same rule for reverse mode)" if kinds == {"custom_jvp"}
               else "")
        return (f"the JVP (jax.jacfwd of {plan.name}) and the VJP (jax.vjp) both depart from the "
                f"references{how}: {rules} is wrong")
    if jvp is not None and not jvp.ok:
        return (f"the JVP (jax.jacfwd of {plan.name}) departs from the references, the VJP "
                f"passes: {rules} is wrong")
    if vjp is not None and not vjp.ok:
        if jvp is not None and kinds == {"custom_jvp"}:
            return (f"the VJP (jax.vjp of {plan.name}) departs from the references though the "
                    "JVP passes: JAX's transpose of the custom_jvp rule is not the rule (not "
                    "linear in its tangent, or a symbolic zero mishandled?)")
        return (f"the VJP (jax.vjp of {plan.name}) departs from the references: the backward "
                f"pass of {rules} is wrong")
    return ""


def combine(plan: RulePlan, parts: list[tuple[str, Report]], probes: list, mode: str,
            points: int) -> Report:
    """One report from each direction's and the structural tests'."""
    by_label = dict(parts)
    failing = [(label, r) for label, r in parts if not r.ok]
    focus = failing[0][1] if failing else (parts[0][1] if parts else None)
    header = _header(plan, mode, points)
    if focus is not None:
        header.update({k: getattr(focus, k) for k in ("dtype", "mode", "points", "threshold")})
    comparisons = tuple(dataclasses.replace(c, reference=f"{label} vs {c.reference}")
                        for label, r in parts for c in r.comparisons)
    taylor = next((r.taylor for _, r in failing if r.taylor is not None and not r.taylor.ok),
                  focus.taylor if focus is not None else None)
    kinks = next((r.kinks for _, r in failing if r.kinks is not None and not r.kinks.ok),
                 focus.kinks if focus is not None else None)
    bad_probes = [p for p in probes if not p.ok]
    problems = (list(plan.problems) + [f"{label}: {p}" for label, r in parts for p in r.problems]
                + [p.sentence for p in bad_probes])
    tested = sorted({p.kind for p in probes})
    notes = list(plan.notes)
    if tested:
        notes.append(f"structural tests ({', '.join(tested)}; under jax.jit): "
                     + (f"{len(bad_probes)} of {len(probes)} fail" if bad_probes
                        else f"all {len(probes)} pass"))
    if plan.jvp is not None and "JVP" not in by_label:
        notes.append("fast mode: the JVP is judged through its transpose (jax.vjp) and by the "
                     "linearity and transpose tests, not materialised")
    notes += list(dict.fromkeys(f"{label}: {n}" if label == "JVP" and n not in notes else n
                                for label, r in parts for n in r.notes
                                if not n.startswith("references")))
    notes = list(dict.fromkeys(notes))

    def diagnosis():
        first = _which(plan, by_label)
        said: dict[str, list[str]] = {}  # a slip both directions show is said once
        for label, r in failing:
            for line in r.diagnosis:
                said.setdefault(line, []).append(label)
        lines = ([first] if first else []) + [f"{' and '.join(labels)}: {line}"
                                              for line, labels in said.items()]
        return {"diagnosis": tuple(lines),
                "slips": tuple(s for _, r in failing[:1] for s in r.slips),
                "where": tuple(f"{label}: {w}" for label, r in failing[:1] for w in r.where)}

    ok = not failing and not problems and bool(parts)
    return Report(ok=ok, **header, comparisons=comparisons, taylor=taylor, kinks=kinks,
                  projections=tuple(p for _, r in parts for p in r.projections),
                  worst=focus.worst if failing and focus is not None else (),
                  **Later.fields(diagnosis, "diagnosis", "slips", "where"),
                  problems=tuple(problems), notes=tuple(notes), parts=tuple(parts),
                  matrices=focus.matrices if focus is not None else {})


# -- the API -----------------------------------------------------------------------------------
def check_rule(f: Callable[..., Any], *args: Any, argnums: int = 0,
               surrogate: Callable[..., Any] | None = None, mode: str = "auto",
               points: int | None = None, directions: int = FAST_DIRECTIONS,
               kink_convention: str | None = None, seed: int = 0, rtol: float | None = None,
               atol: float | None = None) -> Report:
    r"""Check the ``jax.custom_jvp``/``jax.custom_vjp`` rules of ``f`` (or of the functions it
    calls) with respect to ``args[argnums]``.

    The references are those of ``f``'s own computation: its program with every custom call
    replaced by the function's body, differentiated by ``jax.jacfwd`` and ``jax.jacrev``, by
    finite differences and by the Taylor test, with kinks read from the body as
    ``mcjax.check`` reads them.  The rule is judged in both directions, ``jax.jacfwd`` of
    ``f`` (its JVP; a ``custom_vjp`` has none) and ``jax.vjp`` of ``f`` (its VJP), each as the
    derivative under test of ``mcjax.check``; and by structural tests: the primal the rule
    returns equals ``f``'s computation, the JVP is linear in its tangent and the VJP in its
    cotangent, JVP and VJP are transposes (``<u, J v> = <u^T J, v>``), symbolic zero
    tangents and cotangents give what explicit zeros give, and under ``jax.vmap`` a batch of
    points gives what each point gives.

    Args:
      f: a function that is, or calls, a ``jax.custom_jvp`` or ``jax.custom_vjp`` function.
      *args: the point.  Arguments not differentiated may be integer or boolean arrays (their
        tangents are ``float0``), Python values (``nondiff_argnums``), pytrees.
      argnums: which argument (an int).
      surrogate: a function of the same arguments whose derivative the rule implements on
        purpose in place of ``f``'s own (a straight-through estimator's ``lambda x: x``, a
        clipped gradient's ``jnp.clip``): the references are then the surrogate's, while the
        primal is still checked against ``f``'s computation.
      mode: as for ``mcjax.check``.  In fast mode (large arguments) the JVP is judged
        through its transpose and by the linearity and transpose tests.
      points: as for ``mcjax.check``.
      directions: as for ``mcjax.check`` (fast mode).
      kink_convention: as for ``mcjax.check``.
      seed: as for ``mcjax.check``; it also seeds the structural tests' draws.
      rtol: as for ``mcjax.check``: overrides the policy's relative threshold of the
        comparisons with the references (the structural tests keep the policy's).
      atol: as for ``mcjax.check``.

    Returns:
      A ``mcjax.Report``: ``ok``, the comparisons of each direction (``"JVP vs
      jax.jacrev"``, ``"VJP vs finite differences"``, ...), a diagnosis whose first line says
      which direction departs, the structural tests' failures under ``problems``, and each
      direction's own report in ``parts``.

    Raises:
      ValueError: ``f`` calls no custom rule, or an option is out of range.
      ShapeError: the surrogate's outputs are not ``f``'s.
      DtypeError: the argument is not floating point.
      TypeError: ``f`` or the surrogate is not a function, or an option has the wrong type.
      TraceError: ``f`` cannot be traced.

    Example:

        >>> import jax, jax.numpy as jnp, mcjax
        >>> @jax.custom_jvp
        ... def softplus(x):
        ...     return jnp.log1p(jnp.exp(x))
        >>> @softplus.defjvp
        ... def softplus_jvp(primals, tangents):
        ...     (x,), (t,) = primals, tangents
        ...     return softplus(x), t * jax.nn.sigmoid(x)
        >>> mcjax.check_rule(softplus, jnp.array([-1.0, 0.0, 2.0])).ok
        True
    """
    tolerances = _options("check_rule", mode=mode, kink_convention=kink_convention, seed=seed,
                          rtol=rtol, atol=atol)
    if points is not None:
        count("check_rule", "points", points)
    count("check_rule", "directions", directions)
    p = plan(f, args, argnums, surrogate)
    fast = p.fast(mode)
    if fast:  # mcjax.check's fast mode, one direction at a time
        parts = [(label, as_check_rule(lambda d=derivative: check(
            p.reference, d, *p.args, argnums=p.argnums, mode="fast", points=points,
            directions=directions, seed=seed, rtol=rtol, atol=atol)))
            for label, derivative in p.directions(True)]
    else:  # both directions judged against one set of references, in one program
        parts = _full_mode([p], seed, kink_convention, tolerances, points or 1)[0]
    probes = _rule_probes.run([p], seed)[0]
    used = parts[0][1].points if parts else (points or 1)
    return combine(p, parts, probes, "fast" if fast else "full", used)


def _full_mode(plans: list[RulePlan], seed: int, kink_convention, tolerances: tuple,
               points: int = 1) -> list[list[tuple[str, Report]]]:
    """Full mode for every rule's directions: per rule, ``(label, report)`` of each.  Rules
    whose references are the same program (a rule at several points) share a group, whose
    points are vmapped."""
    traces: dict = {}
    groups: dict = {}
    for k, pl in enumerate(plans):
        directions = pl.directions(fast=False)
        if not directions:
            continue
        prepared = tuple(as_check_rule(lambda d=d: prepare(
            pl.reference, d, pl.args, pl.argnums, "numerator", traces, "check_rule"
        )._replace(tolerance=tolerances)) for _, d in directions)
        first = prepared[0]
        dynamics = [first.dynamic] + [_full.perturbed(first, seed, q) for q in range(1, points)]
        key = (tuple(q.static for q in prepared), first.x_spec, first.out_spec,
               tuple((np.shape(d), jnp.result_type(d)) for d in first.dynamic),
               tuple(digest(c) for q in prepared
                     for c in jax.tree_util.tree_leaves(q.static.consts())))
        if points > 1:
            key = (k,)  # merged over its own points: a group of its own
        entry = groups.setdefault(key, (prepared, [], []))
        entry[1].extend(dynamics)
        entry[2].append((k, [label for label, _ in directions]))
    results: list[list[tuple[str, Report]]] = [[] for _ in plans]
    merge = points > 1
    for (prepared, dynamics, owners), reports in zip(groups.values(), _full.several(
            [(prepared, dynamics) for prepared, dynamics, _ in groups.values()], seed,
            kink_convention, merge=merge)):
        for i, (k, labels) in enumerate(owners):
            results[k] = [(label, r if merge else r[i]) for label, r in zip(labels, reports)]
    return results


def check_rules(cases: Sequence[tuple[Any, ...]], *, kink_convention: str | None = None,
                seed: int = 0, rtol: float | None = None,
                atol: float | None = None) -> list[Report]:
    """``mcjax.check_rule`` of many rules in full mode at one point each, compiled as one
    program.

    Args:
      cases: ``(f, args)``, ``(f, args, argnums)`` or ``(f, args, argnums, surrogate)`` tuples.
      kink_convention: as for ``mcjax.check_rule``.
      seed: as for ``mcjax.check_rule``.
      rtol: as for ``mcjax.check_rule``.
      atol: as for ``mcjax.check_rule``.

    Returns:
      One report per case, in order.
    """
    tolerances = _options("check_rules", kink_convention=kink_convention, seed=seed,
                          rtol=rtol, atol=atol)
    plans = [plan(*_case(k, c)) for k, c in enumerate(cases)]
    parts = _full_mode(plans, seed, kink_convention, tolerances)
    probes = _rule_probes.run(plans, seed)
    return [combine(p, pr, pb, "full", 1) for p, pr, pb in zip(plans, parts, probes)]


def _case(k: int, case) -> tuple:
    """``(f, args, argnums, surrogate)`` from one case of ``check_rules``, or one sentence."""
    if not isinstance(case, (tuple, list)) or not 2 <= len(case) <= 4:
        raise TypeError(f"mcjax.check_rules: cases[{k}] is {describe(case)}; expected a tuple "
                        "(f, args), (f, args, argnums) or (f, args, argnums, surrogate)")
    if not isinstance(case[1], (tuple, list)):
        raise TypeError(f"mcjax.check_rules: the args of cases[{k}] are {describe(case[1])}; "
                        "expected a tuple of f's arguments, e.g. (x,) for one argument")
    f, args, *rest = case
    return f, tuple(args), rest[0] if rest else 0, rest[1] if len(rest) > 1 else None


def assert_rule(f: Callable[..., Any], *args: Any, **options: Any) -> Report:
    """``mcjax.check_rule``, raising ``mcjax.DerivativeError`` (an ``AssertionError``) on
    failure; takes the same arguments and returns the passing report."""
    __tracebackhide__ = True  # pytest shows the report under the user's line, not ours
    report = check_rule(f, *args, **options)
    if not report.ok:
        raise DerivativeError(report)
    return report
