"""One call of ``mcjax.check_rule`` as the checks need it: the rule's plan.

``plan`` validates the call (one sentence for a wrong one), splits the arguments as
``mcjax.check`` does (arrays are traced, everything else is static), finds the user's custom
rules in ``f``'s jaxpr, and builds the references (the rule-free ``f``, or the surrogate) and
both directions of the rule: its JVP as ``jax.jacfwd`` of ``f`` (none for a ``custom_vjp``:
JAX has no forward mode for it) and its VJP as ``u -> u^T J`` by ``jax.vjp``.  A direction
that cannot be computed (a JVP rule JAX cannot transpose) becomes a sentence of the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check._flat import FlatSpec
from mcjax._check._problem import _is_array, _traced, argument_spec, name_of
from mcjax._check._returned import vjp as pullback
from mcjax._check._rule_free import CustomRule, rule_free, user_rules
from mcjax._core._arguments import argnums_spec, numbers_as_array, positions, require_callable
from mcjax._core._compat import enable_x64
from mcjax._core._conventions import is_floating, standard_promotion
from mcjax._core._errors import ShapeError, TraceError, require_floating
from mcjax._core._tolerance import FULL_MODE_MAX_ENTRIES, FULL_MODE_MAX_INPUTS
from mcjax._program._inspect import lowest_precision, max_terms

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


def rules_words(rules, written: bool = False) -> str:
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
    trace = as_check_rule(lambda: _traced("f", lambda *d: f(*rebuild(d)), *structs(),
                                 differentiated=False))
    rules = tuple(user_rules(trace.closed.jaxpr))
    if not rules:
        raise ValueError(f"{WHERE}: {name} calls no jax.custom_jvp or jax.custom_vjp function; "
                         "expected a function with a custom derivative rule (mcjax.check checks "
                         "a derivative you pass it)")
    out_spec = FlatSpec.of(trace.out_shape)
    x_spec = argument_spec(f, args[argnums], argnums)
    if surrogate is not None:
        _same_outputs(surrogate, trace.out_shape, lambda *d: surrogate(*rebuild(d)), structs())

    def jvp(*a):  # the rule's JVP as a Jacobian, in jax.jacfwd's structure
        return jax.jacfwd(f, argnums=argnums)(*a)

    def vjp(*a):  # the rule's VJP as a function u -> u^T J
        _, back = jax.vjp(lambda x: f(*a[:argnums], x, *a[argnums + 1:]), a[argnums])
        return pullback(lambda u: back(u)[0])

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
                     f"taken out ({rules_words(rules)}), finite differences and the Taylor test")
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
    with enable_x64(True), standard_promotion():
        for program in programs:
            try:
                found.append(lowest_precision(jax.make_jaxpr(program)(*structs).jaxpr))
            except Exception:  # noqa: BLE001 - the rule's own refusal of float64
                found.extend(d for d in native if jnp.issubdtype(d, jnp.floating))
    return max(filter(None, found), key=lambda d: float(jnp.finfo(d).eps), default="float64")


def as_check_rule(trace):
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
