r"""Kinks read from ``f`` itself: where it switches, and its one-sided derivatives there.

A function built from JAX primitives is non-smooth only where a *switch* changes branch:
``max``/``min`` (so ``jax.nn.relu``, ``clip``), ``abs``, ``sign``, ``floor``/``ceil``/``round``,
``select_n`` fed by a comparison (``jnp.where(x > 0, ...)``), ``reduce_max``/``argmax`` and
``sort`` at ties.  This module interprets ``f``'s jaxpr, equation by equation, and at each
switch asks whether the *switching quantity* (``a - b`` of ``max(a, b)`` or of the comparison,
``x`` of ``abs(x)``) is at the switch: exactly, or within the rounding error it carries (a
bound propagated through the jaxpr, zero for ``f``'s own arguments; see
:data:`~mcjax._core._tolerance.SWITCH_ROUNDING`).

Two things come out:

- **one-sided derivatives**: ``f``'s directional derivative ``f'(x; v)`` is evaluated in
  forward mode with each switch at its switch taking the branch the direction moves it into
  (``max(a, b)`` at a tie has derivative ``max(a', b')`` along ``v``; ``abs`` at 0 ``|x'|``; a
  ``where`` whose predicate flips takes the new branch's tangent, or an infinite one where
  the branches disagree: a jump).  Directional derivatives compose by the chain rule, so
  ``right_j = f'(x; e_j)`` and ``left_j = -f'(x; -e_j)`` are exact.  An entry is *at a kink*
  when the two differ; everywhere else ``f`` is differentiable and the exact references
  (``jax.jacfwd``, ``jax.jacrev``) judge it;
- **switch sides**: the branch every switch takes, so that a finite-difference stencil or a
  Taylor step that lands on another branch (it *crosses* a kink) is recognised and left out.

Inside ``custom_jvp``/``custom_vjp`` functions (``jax.nn.relu``) the function's own
computation is read (JAX's value at the kink, from the custom rule, is always accepted by the
checker).  Inside ``lax.cond``, ``scan`` and ``while`` loops switches are not read: JAX's
derivative is taken there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import SimpleNamespace
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core

from mcjax._core._tolerance import SWITCH_ROUNDING
from mcjax._program._inspect import equation_terms as _terms
from mcjax._program._walk import CALLS, CUSTOM_RULES, Interpreter, bind, equations, needed
from mcjax._program._walk import sub_jaxprs as _sub_jaxprs

SWITCHES = frozenset({
    "max", "min", "abs", "sign", "floor", "ceil", "round", "clamp", "select_n",
    "reduce_max", "reduce_min", "argmax", "argmin", "sort", "gt", "ge", "lt", "le", "eq", "ne",
})
# primitives whose result is exact (no rounding of their own)
_EXACT = frozenset({
    "neg", "abs", "sign", "max", "min", "clamp", "select_n", "reshape", "transpose", "squeeze",
    "expand_dims", "broadcast_in_dim", "slice", "dynamic_slice", "dynamic_update_slice",
    "gather", "concatenate", "pad", "rev", "copy", "copy_p", "reduce_max", "reduce_min",
    "sort", "stop_gradient", "floor", "ceil", "round", "convert_element_type", "real", "imag",
    "iota", "scatter",
})
_SUMS = frozenset({"reduce_sum", "cumsum"})


def has_switches(jaxpr: core.Jaxpr) -> bool:
    """Whether ``jaxpr`` (or a sub-jaxpr) holds a switch primitive."""
    return any(eqn.primitive.name in SWITCHES for eqn in equations(jaxpr))


class V(NamedTuple):
    """A value of the interpretation: primal, rounding bound, tangent, directional value.

    ``e`` and ``t`` are None where known to be zero; ``d`` (booleans and integers only) is the
    value just after moving along the direction, None where it equals ``p``.
    """

    p: jax.Array
    e: jax.Array | None = None
    t: jax.Array | None = None
    d: jax.Array | None = None


def _bind(eqn, *values) -> list:
    return bind(eqn, list(values))


def _floating(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _eps(x):
    return jnp.asarray(jnp.finfo(jnp.result_type(x)).eps, jnp.result_type(x))


def _zero_if_none(a, like):
    return jnp.zeros_like(like) if a is None else a


def _jvp(eqn, primals, tangents):
    """``(outs, output tangents)`` of one equation by JAX's own rule; None tangents are zero."""
    floating = [i for i, (p, t) in enumerate(zip(primals, tangents)) if t is not None]
    if not floating:
        return _bind(eqn, *primals), None

    def of(*xs):
        args = list(primals)
        for i, x in zip(floating, xs):
            args[i] = x
        return _bind(eqn, *args)

    outs, tans = jax.jvp(of, [primals[i] for i in floating], [tangents[i] for i in floating])
    return outs, [t if _floating(o) else None for o, t in zip(outs, tans)]


def _rounding(eqn, ins: list[V], outs) -> list:
    """A bound on each output's rounding error: the inputs' bounds carried through (each input
    on its own, so that signs cannot cancel) plus the equation's own rounding, which for a
    sum of ``T`` terms is ``sqrt(T) eps`` times the sum of their magnitudes (the checker's
    own model of rounding, see :func:`~mcjax._core._tolerance.check_rtol`)."""
    name = eqn.primitive.name
    if name in ("dot_general", "mul", "conv_general_dilated"):  # bilinear: |a| e_b + e_a |b|
        a, b = ins
        magnitude = _bind(eqn, jnp.abs(a.p), jnp.abs(b.p))[0]
        carried = 0.0
        if a.e is not None:
            carried = carried + _bind(eqn, a.e, jnp.abs(b.p))[0]
        if b.e is not None:
            carried = carried + _bind(eqn, jnp.abs(a.p), b.e)[0]
        return [(carried + np.sqrt(_terms(eqn)) * _eps(outs[0]) * magnitude).astype(outs[0].dtype)]
    carried = [0.0] * len(outs)
    primals = [v.p for v in ins]
    for i, v in enumerate(ins):
        if v.e is None or not _floating(v.p):
            continue
        tangents = [None] * len(ins)
        tangents[i] = v.e
        _, tans = _jvp(eqn, primals, tangents)
        carried = [c + (0.0 if t is None else jnp.abs(t)) for c, t in zip(carried, tans)]
    if name in _EXACT:
        own = [0.0] * len(outs)
    elif name in _SUMS:
        own = [np.sqrt(_terms(eqn)) * _eps(outs[0]) * _bind(eqn, jnp.abs(primals[0]))[0]]
    else:  # an elementary function: a few units in the last place
        own = [4 * _eps(o) * jnp.abs(o) if _floating(o) else 0.0 for o in outs]
    return [None if not _floating(o) or (isinstance(c, float) and isinstance(r, float))
            else jnp.broadcast_to(c + r, o.shape).astype(o.dtype)
            for c, r, o in zip(carried, own, outs)]


def _broadcast(v: V, shape) -> V:
    """``v`` with every part broadcast to ``shape`` (lax ops allow scalar operands; jnp under
    strict rank promotion does not)."""
    grow = lambda a: None if a is None else jnp.broadcast_to(a, shape)  # noqa: E731
    return V(grow(v.p), grow(v.e), grow(v.t), grow(v.d))


def _at_switch(a: V, b: V | None = None):
    """Where ``a - b`` (or ``a``) is at its switch: within the rounding both carry."""
    diff = a.p if b is None else a.p - b.p
    slack = _zero_if_none(a.e, a.p) + (0 if b is None or b.e is None else b.e)
    return jnp.abs(diff) <= SWITCH_ROUNDING * slack


def _jump(new, old, slack):
    """The directional derivative of a jump from ``old`` to ``new``: infinite, with its sign."""
    step = new - old
    return jnp.where(jnp.abs(step) <= SWITCH_ROUNDING * slack, 0.0, jnp.inf * jnp.sign(step))


# -- the switch rules --------------------------------------------------------------------------
_RULES: dict[str, Callable] = {}


def _rule(*names):
    def register(fn):
        for name in names:
            _RULES[name] = fn
        return fn

    return register


@_rule("max", "min")
def _max_min(eqn, ins, directional):
    bigger = eqn.primitive.name == "max"
    p = _bind(eqn, ins[0].p, ins[1].p)[0]
    a, b = (_broadcast(v, p.shape) for v in ins)
    e = None if a.e is None and b.e is None else jnp.maximum(
        _zero_if_none(a.e, p), _zero_if_none(b.e, p))
    side = a.p > b.p if bigger else a.p < b.p
    if not directional or (a.t is None and b.t is None):
        return [V(p, e)], [side]
    ta, tb = _zero_if_none(a.t, p), _zero_if_none(b.t, p)
    tied = jnp.maximum(ta, tb) if bigger else jnp.minimum(ta, tb)
    t = jnp.where(_at_switch(a, b), tied, jnp.where(side, ta, tb))
    return [V(p, e, t)], [side]


@_rule("clamp")
def _clamp(eqn, ins, directional):
    lo, x, hi = ins
    outs, sides = _max_min(_Eqn(lax.max_p), [x, lo], directional)
    outs2, sides2 = _max_min(_Eqn(lax.min_p), [outs[0], hi], directional)
    return outs2, sides + sides2


class _Eqn(NamedTuple):
    """A stand-in equation for composing rules (``clamp`` as ``min(max(x, lo), hi)``)."""

    primitive: object
    params: dict = {}
    ctx: object = SimpleNamespace(manager=contextlib.nullcontext())


@_rule("abs")
def _abs(eqn, ins, directional):
    (x,) = ins
    p = jnp.abs(x.p)
    side = jnp.sign(x.p)
    if not directional or x.t is None:
        return [V(p, x.e)], [side]
    t = jnp.where(_at_switch(x), jnp.abs(x.t), side * x.t)
    return [V(p, x.e, t)], [side]


@_rule("sign", "floor", "ceil", "round")
def _steps(eqn, ins, directional):
    """Step functions: derivative 0, but a jump where the argument sits on a step's edge."""
    (x,) = ins
    p = _bind(eqn, x.p)[0]
    if not directional or x.t is None:
        return [V(p)], [p]
    name = eqn.primitive.name
    edge = (jnp.zeros_like(x.p) if name == "sign" else
            jnp.floor(x.p) + 0.5 if name == "round" else jnp.round(x.p))
    on_edge = jnp.abs(x.p - edge) <= SWITCH_ROUNDING * _zero_if_none(x.e, x.p)
    moved = _bind(eqn, edge + 0.25 * jnp.sign(x.t))[0]  # the value just past the edge
    t = jnp.where(on_edge & (x.t != 0), _jump(moved, p, jnp.zeros_like(p)), 0.0)
    return [V(p, None, t)], [p]


@_rule("gt", "ge", "lt", "le", "eq", "ne")
def _compare(eqn, ins, directional):
    p = _bind(eqn, ins[0].p, ins[1].p)[0]
    a, b = (_broadcast(v, p.shape) for v in ins)
    if not (_floating(a.p) and _floating(b.p)):
        return [V(p, d=_directional_bind(eqn, ins))], [p]
    if not directional or (a.t is None and b.t is None):
        return [V(p)], [p]
    delta = _zero_if_none(a.t, a.p) - _zero_if_none(b.t, b.p)
    moving = {"gt": delta > 0, "ge": delta > 0, "lt": delta < 0, "le": delta < 0,
              "eq": jnp.zeros_like(p), "ne": jnp.ones_like(p)}[eqn.primitive.name]
    d = jnp.where(_at_switch(a, b) & (delta != 0), moving, p)
    return [V(p, d=d)], [p]


def _directional_bind(eqn, ins):
    """The directional value of an equation on booleans and integers."""
    if all(v.d is None for v in ins):
        return None
    return _bind(eqn, *[v.p if v.d is None else v.d for v in ins])[0]


@_rule("select_n")
def _select(eqn, ins, directional):
    p = lax.select_n(ins[0].p, *[c.p for c in ins[1:]])
    which, *cases = (_broadcast(v, p.shape) for v in ins)
    floating = _floating(p)
    e = None
    if floating and any(c.e is not None for c in cases):
        e = lax.select_n(which.p, *[_zero_if_none(c.e, p) for c in cases])
    if not floating:
        d = None if which.d is None and all(c.d is None for c in cases) else lax.select_n(
            which.p if which.d is None else which.d, *[c.p if c.d is None else c.d for c in cases])
        return [V(p, d=d)], [which.p]
    if not directional or all(c.t is None for c in cases):
        return [V(p, e)], [which.p]
    tangents = [_zero_if_none(c.t, p) for c in cases]
    if which.d is None:
        return [V(p, e, lax.select_n(which.p, *tangents))], [which.p]
    new_value = lax.select_n(which.d, *[c.p for c in cases])
    slack = lax.select_n(which.d, *[_zero_if_none(c.e, p) for c in cases]) + _zero_if_none(e, p)
    jump = _jump(new_value, p, slack)
    t = jnp.where(jump == 0, lax.select_n(which.d, *tangents), jump)
    return [V(p, e, t)], [which.p]


@_rule("reduce_max", "reduce_min", "argmax", "argmin")
def _reduce_choice(eqn, ins, directional):
    (x,) = ins
    axes = tuple(eqn.params["axes"])
    bigger = eqn.primitive.name in ("reduce_max", "argmax")
    best = jnp.max(x.p, axis=axes, keepdims=True) if bigger else jnp.min(x.p, axis=axes,
                                                                         keepdims=True)
    chosen = x.p == best
    p = _bind(eqn, x.p)[0]
    tied = jnp.abs(x.p - best) <= SWITCH_ROUNDING * 2 * _zero_if_none(x.e, x.p)
    fill = -jnp.inf if bigger else jnp.inf
    if eqn.primitive.name in ("argmax", "argmin"):
        if not directional or x.t is None:
            return [V(p)], [chosen]
        inner = jnp.where(tied, x.t, fill)
        return [V(p, d=_bind(eqn, inner)[0])], [chosen]
    e = None if x.e is None else jnp.max(x.e, axis=axes)
    if not directional or x.t is None:
        return [V(p, e)], [chosen]
    pick = jnp.max if bigger else jnp.min
    return [V(p, e, pick(jnp.where(tied, x.t, fill), axis=axes))], [chosen]


@_rule("sort")
def _sort(eqn, ins, directional):
    keys, dimension = eqn.params["num_keys"], eqn.params["dimension"]
    ps = [v.p for v in ins]
    iota = lax.broadcasted_iota(jnp.int32, ps[0].shape, dimension)
    tangents = [_zero_if_none(v.t, v.p) if _floating(v.p) else jnp.zeros(v.p.shape)
                for v in ins]
    use_t = directional and any(v.t is not None for v in ins[:keys])
    operands = ps[:keys] + (tangents[:keys] if use_t else []) + ps[keys:] + [iota]
    out = lax.sort(operands, dimension=dimension, is_stable=True,
                   num_keys=keys * (2 if use_t else 1))
    order = out[-1]
    sorted_ps = out[:keys] + out[keys * (2 if use_t else 1):-1]
    take = lambda a: jnp.take_along_axis(a, order, axis=dimension)  # noqa: E731
    outs = []
    for v, p in zip(ins, sorted_ps):
        outs.append(V(p, None if v.e is None else take(v.e),
                      None if not directional or v.t is None else take(v.t)))
    return outs, [order]


# -- the interpreter ---------------------------------------------------------------------------
def _reads_a_switch(eqn) -> bool:
    """Whether ``eqn`` is a switch, or a call whose body holds one."""
    return eqn.primitive.name in SWITCHES or (
        eqn.primitive.name in CALLS | CUSTOM_RULES and any(has_switches(j) for j in _sub_jaxprs(eqn)))


class _KinkReader(Interpreter[V]):
    """``f``'s jaxpr evaluated on :class:`V` values; every switch's side appended to ``sides``.

    Only the variables whose rounding bound a switch (or a wanted output) reads carry one:
    each jaxpr's scope annotation is that set (a backward pass, :func:`needed`).
    """

    def __init__(self, directional: bool, sides: list | None):
        super().__init__()
        self.directional, self.sides = directional, sides

    def literal(self, value) -> V:
        return V(value)

    def scope(self, jaxpr, outputs):
        if not self.directional:
            return frozenset()
        return needed(jaxpr, outputs or (False,) * len(jaxpr.outvars), _reads_a_switch)

    def wanted(self, eqn, annotation):
        return tuple(v in annotation for v in eqn.outvars)

    def store(self, var, value: V, annotation) -> V:
        return value if var in annotation or value.e is None else value._replace(e=None)

    def primitive(self, eqn, ins: list[V]) -> list[V]:
        name = eqn.primitive.name
        if name in _RULES:
            outs, switch_sides = _RULES[name](eqn, ins, self.directional)
            if self.sides is not None:
                self.sides.extend(switch_sides)
            return outs
        want = self.wanted(eqn, self.annotation)
        primals = [v.p for v in ins]
        if self.directional:
            outs, tans = _jvp(eqn, primals, [v.t if _floating(v.p) else None for v in ins])
            errors = _rounding(eqn, ins, outs) if any(want) else [None] * len(outs)
        else:
            outs, tans, errors = bind(eqn, primals), None, [None] * len(eqn.outvars)
        directions = _directional_bind(eqn, ins)
        result = []
        for k, o in enumerate(outs):
            t = None if tans is None else tans[k]
            if directions is not None and name == "convert_element_type" and _floating(o):
                t = _jump(bind(eqn, [directions])[0], o, jnp.zeros_like(o))  # a boolean made a number
            d = directions if len(outs) == 1 and not _floating(o) else None
            result.append(V(o, errors[k], t, d))
        return result


def interpret(jaxpr: core.Jaxpr, consts, args: list[V], directional: bool,
              sides: list | None = None, outputs_need_error: tuple[bool, ...] | None = None
              ) -> list[V]:
    """Evaluate ``jaxpr`` on :class:`V` values; append every switch's side to ``sides``."""
    return _KinkReader(directional, sides).run(jaxpr, consts, args, outputs_need_error)


def closed_flat(f_flat, x) -> core.ClosedJaxpr:
    """``f_flat``'s jaxpr at ``x`` (traced now, inside whatever program calls this)."""
    return jax.make_jaxpr(f_flat)(x)


def one_sided(f_flat, x) -> tuple[jax.Array, jax.Array]:
    """``(right, left)``, each ``(m, n)``: ``f``'s one-sided derivatives along each coordinate
    of the flat argument ``x`` (shape ``(n,)``), in ``x``'s dtype."""
    closed = closed_flat(f_flat, x)

    def along(v):
        (out,) = interpret(closed.jaxpr, closed.consts, [V(x, None, v)], True)
        return _zero_if_none(out.t, out.p)

    n = x.shape[0]
    eye = jnp.eye(n, dtype=x.dtype)
    both = jax.vmap(along)(jnp.concatenate([eye, -eye]))  # (2n, m): along +e_j, then -e_j
    return both[:n].T, -both[n:].T


def switch_sides(f_flat, x) -> tuple[jax.Array, list]:
    """``f_flat(x)`` and the side every switch takes there."""
    closed = closed_flat(f_flat, x)
    sides: list = []
    (out,) = interpret(closed.jaxpr, closed.consts, [V(x)], False, sides)
    return out.p, sides


def crosses(sides_here: list, sides_there: list):
    """Whether any switch takes another side (a scalar boolean)."""
    changed = [jnp.any(a != b) for a, b in zip(sides_here, sides_there)]
    return jnp.any(jnp.stack(changed)) if changed else jnp.asarray(False)
