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

The verdicts make one ``mcjax.Report``, whose ``parts`` hold each direction's own report
and whose diagnosis starts by saying which direction departs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check import _full, _rule_probes
from mcjax._check._api import _options, check
from mcjax._check._compare import Threshold
from mcjax._check._flat import FlatSpec
from mcjax._check._problem import _is_array, _traced, name_of, prepare
from mcjax._check._report import Later, Report
from mcjax._check._rule_free import CustomRule, rule_free, user_rules
from mcjax._core._arguments import (
    argnums_spec,
    count,
    describe,
    numbers_as_array,
    positions,
    require_callable,
)
from mcjax._core._conventions import is_floating, standard_promotion
from mcjax._core._errors import DerivativeError, ShapeError, TraceError, require_floating
from mcjax._core._tolerance import (
    FAST_DIRECTIONS,
    FULL_MODE_MAX_ENTRIES,
    FULL_MODE_MAX_INPUTS,
)
from mcjax._program._inspect import lowest_precision, max_terms
from mcjax._program._trace import digest

WHERE = "mcjax.check_rule"


@dataclass(frozen=True)
class RulePlan:
    """One rule to check: ``f`` and its point, the references and both directions."""

    f: Callable
    name: str
    args: tuple
    argnums: int
    rules: tuple[CustomRule, ...]
    reference: Callable  # the rule-free f, or the surrogate
    surrogate: Callable | None
    jvp: Callable | None  # args -> jax.jacfwd of f (None where JAX has no forward mode)
    vjp: Callable | None  # args -> u -> u^T J by jax.vjp of f
    problems: tuple[str, ...]  # a direction that could not be computed, in words
    notes: tuple[str, ...]
    treedef: object
    leaves: tuple  # every leaf of args (the arrays are replaced when rebuilt)
    dynamic_positions: tuple[int, ...]
    x_positions: tuple[int, ...]  # which dynamic leaves are args[argnums]'s
    x_spec: FlatSpec
    out_spec: FlatSpec
    precision: str  # what f computes in at float64 arguments
    terms: int

    @property
    def dynamic(self) -> list:
        return [self.leaves[i] for i in self.dynamic_positions]

    @property
    def other_tangents(self) -> bool:
        """Whether an array argument other than ``args[argnums]`` exists (its tangent is a
        symbolic zero in the JVP along ``args[argnums]``)."""
        return len(self.dynamic_positions) > len(self.x_positions)

    def rebuild(self, dynamic: list) -> tuple:
        leaves = list(self.leaves)
        for i, value in zip(self.dynamic_positions, dynamic):
            leaves[i] = value
        return jax.tree_util.tree_unflatten(self.treedef, leaves)  # type: ignore[arg-type]

    def directions(self, fast: bool) -> list[tuple[str, Callable]]:
        """``(label, derivative)`` of each direction ``mcjax.check`` judges."""
        out = []
        if self.jvp is not None and not fast:
            out.append(("JVP", self.jvp))
        if self.vjp is not None:
            out.append(("VJP", self.vjp))
        return out

    def fast(self, mode: str) -> bool:
        if mode != "auto":
            return mode == "fast"
        n, m = self.x_spec.size, self.out_spec.size
        return not (n <= FULL_MODE_MAX_INPUTS and n * m <= FULL_MODE_MAX_ENTRIES)


def _rules_words(rules, written: bool = False) -> str:
    """``the custom_jvp rule of softplus`` (and the others, joined); ``written``: with where
    the rule's functions are (``softplus_jvp (losses.py:12)``)."""
    return ", ".join(r.words() + (f" ({', '.join(r.functions)})" if written and r.functions
                                  else "") for r in rules)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _named(fn, name: str):
    fn.__name__ = fn.__qualname__ = name
    return fn


def plan(f, args: tuple, argnums: int = 0, surrogate=None) -> RulePlan:
    """Validate one call of ``check_rule`` and build what its checks need."""
    require_callable("check_rule", "f", f, "a function f(*args)")
    if surrogate is not None:
        require_callable("check_rule", "surrogate", surrogate,
                         "a function of f's arguments whose derivative the rule implements")
    args, argnums, leaves, treedef, dynamic_positions, x_positions = _split(args, argnums)
    dynamic = [leaves[i] for i in dynamic_positions]

    def rebuild(values):
        new = list(leaves)
        for i, v in zip(dynamic_positions, values):
            new[i] = v
        return jax.tree_util.tree_unflatten(treedef, new)

    def structs(dtype=None):
        return [jax.ShapeDtypeStruct(np.shape(d), dtype if dtype is not None and is_floating(d)
                                     else jnp.result_type(d)) for d in dynamic]

    name = name_of(f)
    trace = _say(lambda: _traced("f", lambda *d: f(*rebuild(d)), *structs(),
                                 differentiated=False))
    rules = tuple(user_rules(trace.closed.jaxpr))
    if not rules:
        raise ValueError(f"{WHERE}: {name} calls no jax.custom_jvp or jax.custom_vjp function; "
                         "expected a function with a custom derivative rule (mcjax.check checks "
                         "a derivative you pass it)")
    out_spec, x_spec = FlatSpec.of(trace.out_shape), FlatSpec.of(args[argnums])
    if surrogate is not None:
        _same_outputs(surrogate, trace.out_shape, lambda *d: surrogate(*rebuild(d)), structs())

    def jvp(*a):  # the rule's JVP as a Jacobian, in jax.jacfwd's structure
        return jax.jacfwd(f, argnums=argnums)(*a)

    def vjp(*a):  # the rule's VJP as a function u -> u^T J
        _, back = jax.vjp(lambda x: f(*a[:argnums], x, *a[argnums + 1:]), a[argnums])
        return lambda u: back(u)[0]

    def zero_cotangent():
        return out_spec.treedef.unflatten([jnp.zeros(s, t) for s, t in
                                           zip(out_spec.shapes, out_spec.dtypes)])

    kinds = {r.kind for r in rules}
    problems, notes = [], []
    jvp_fn, why = _available(lambda *d: jvp(*rebuild(d)), structs())
    if why is not None and "custom_vjp" in why and "custom_vjp" in kinds:
        notes.append("f calls a custom_vjp function, which has no forward mode in JAX: there is "
                     "no JVP to check, only the VJP")
    elif why is not None:
        problems.append(f"the JVP cannot be computed: jax.jvp of {name} raised {why}")
    vjp_fn, why = _available(lambda *d: vjp(*rebuild(d))(zero_cotangent()), structs())
    if why is not None:
        problems.append(f"the VJP cannot be computed: jax.vjp of {name} raised {why}" + (
            ": JAX transposes a custom_jvp rule for reverse mode, and a rule that is not linear "
            "in its tangent (or uses an operation JAX cannot transpose) has no transpose"
            if kinds == {"custom_jvp"} else ""))
    precision = _precision([fn for fn in (lambda *d: f(*rebuild(d)), jvp_fn, vjp_fn)
                            if fn is not None], structs(jnp.float64),
                           x_spec.dtypes + out_spec.dtypes)
    if surrogate is None:
        reference = rule_free(f, f"{name} without its rules")
        notes.append(f"references: autodiff of f's own computation with its custom rules "
                     f"taken out ({_rules_words(rules)}), finite differences and the Taylor test")
    else:
        reference = surrogate
        notes.append(f"references: the derivative of the surrogate {name_of(surrogate)}, which "
                     "the rule implements in place of f's own; the primal is checked against "
                     "f's own computation")
    return RulePlan(f, name, args, argnums, rules, reference, surrogate,
                    _named(jvp, f"jax.jacfwd({name})") if jvp_fn is not None else None,
                    _named(vjp, f"jax.vjp({name})") if vjp_fn is not None else None,
                    tuple(problems), tuple(notes), treedef, tuple(leaves), dynamic_positions,
                    x_positions, x_spec, out_spec, precision,
                    max(max_terms(trace.closed.jaxpr), x_spec.size, out_spec.size))


def _split(args: tuple, argnums) -> tuple:
    """``(args, argnums, leaves, treedef, dynamic positions, x positions)``: the arguments as
    ``mcjax.check`` takes them (lists of numbers as arrays, the differentiated argument's
    leaves as floating arrays), their leaves, which of them are arrays (traced), and which of
    those are ``args[argnums]``'s."""
    args = tuple(numbers_as_array(a) for a in args)
    if not isinstance(argnums_spec("check_rule", argnums), int):
        raise TypeError(f"{WHERE}: argnums={argnums!r}; expected an int (a rule is checked "
                        "with respect to one argument at a time)")
    (argnums,) = positions("check_rule", argnums, len(args))
    x = jax.tree_util.tree_map(lambda a: a if _is_array(a) else jnp.asarray(a), args[argnums])
    for leaf in jax.tree_util.tree_leaves(x):
        require_floating("check_rule", f"args[{argnums}]", leaf)
    args = args[:argnums] + (x,) + args[argnums + 1:]
    leaves, treedef = jax.tree_util.tree_flatten(args)
    dynamic_positions = tuple(i for i, leaf in enumerate(leaves) if _is_array(leaf))
    start = len(jax.tree_util.tree_leaves(args[:argnums]))
    inside = range(start, start + len(jax.tree_util.tree_leaves(x)))
    x_positions = tuple(k for k, i in enumerate(dynamic_positions) if i in inside)
    return args, argnums, leaves, treedef, dynamic_positions, x_positions


def _available(program, structs) -> tuple[Callable | None, str | None]:
    """``(program, None)`` when it traces, else ``(None, the error in words)``."""
    try:
        jax.eval_shape(program, *structs)
    except Exception as e:  # noqa: BLE001 - JAX's refusal or the rule's own error, in words
        return None, f"{type(e).__name__}: {_first_line(e)}"
    return program, None


def _precision(programs, structs, native: tuple[str, ...]) -> str:
    """The least precise dtype ``f`` or its rules compute in on float64 arguments (a
    backward kernel may compute in float32 whatever it is given); one that cannot take
    float64 arguments computes in the arguments' and outputs' own dtypes."""
    found = []
    with jax.enable_x64(True), standard_promotion():
        for program in programs:
            try:
                found.append(lowest_precision(jax.make_jaxpr(program)(*structs).jaxpr))
            except Exception:  # noqa: BLE001 - the rule's own refusal of float64
                found.extend(d for d in native if jnp.issubdtype(d, jnp.floating))
    return max(filter(None, found), key=lambda d: float(jnp.finfo(d).eps), default="float64")


def _say(trace):
    """Run a trace of mcjax.check's, its sentence under check_rule's name."""
    try:
        return trace()
    except (TraceError, ShapeError) as e:
        raise type(e)(str(e).replace("mcjax.check:", f"{WHERE}:", 1)) from None


def _same_outputs(surrogate, out_shape, flat, structs) -> None:
    try:
        got = jax.eval_shape(flat, *structs)
    except Exception as e:  # noqa: BLE001 - the user's surrogate raised
        raise TraceError(f"{WHERE}: calling the surrogate {name_of(surrogate)} raised "
                         f"{type(e).__name__}: {_first_line(e)}") from None
    want, have = FlatSpec.of(out_shape), FlatSpec.of(got)
    if want.treedef != have.treedef or want.shapes != have.shapes:
        raise ShapeError(f"{WHERE}: the surrogate {name_of(surrogate)} returns "
                         f"{have.describe()} but f returns {want.describe()}; expected the same "
                         "outputs (the surrogate stands for f in the references)")


# -- one report ----------------------------------------------------------------------------------
def _header(plan: RulePlan, mode: str, points: int) -> dict:
    """The report's first fields, for a rule no direction of which could be checked."""
    floating = [d for d in plan.x_spec.dtypes + plan.out_spec.dtypes if jnp.issubdtype(d, jnp.floating)]
    dtype = max(floating, key=lambda d: float(jnp.finfo(d).eps), default=plan.x_spec.dtypes[0])
    return {"function": plan.name, "derivative": _rules_words(plan.rules),
            "wrt": f"args[{plan.argnums}]",
            "shapes": f"f: args[{plan.argnums}] {plan.x_spec.describe()} -> "
                      f"{plan.out_spec.describe()}",
            "dtype": dtype, "mode": mode, "points": points,
            "threshold": Threshold.of(dtype, plan.terms, "none: no direction could be checked")}


def _which(plan: RulePlan, parts: dict[str, Report]) -> str:
    """The diagnosis's first line: which direction departs from the references."""
    kinds = {r.kind for r in plan.rules}
    rules = _rules_words(plan.rules, written=True)
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
        parts = [(label, _say(lambda d=derivative: check(
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
        prepared = tuple(_say(lambda d=d: prepare(
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
