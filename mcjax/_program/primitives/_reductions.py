r"""Reductions over axes, and ordering: sums (a row of ones, §4.4), maxima (the winners),
sorting.

``max`` over axes picks its winners (ties share, as in JAX); for the checker a tie is a kink,
read along a direction: the tied entry that moves up wins.  ``sort`` is a permutation of its
operands; at ties, a kink.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from mcjax._core._tolerance import SWITCH_ROUNDING
from mcjax._jacobian import _build as B
from mcjax._jacobian import _expr as E
from mcjax._jacobian import _sym as S
from mcjax._program.primitives._shape import on_operand
from mcjax._program.primitives._switch import bind_values, floating, zero_if_none
from mcjax._program.primitives._table import Eqn, V, register

FAMILY = "reductions"

register("reduce_sum", FAMILY,
         jacobian=on_operand(lambda e, s, dt: B.sum_along(e.params["axes"], s, dt)),
         expr=lambda a, shape, p: E.total(a[0], tuple(p["axes"]), shape), rounding="sum")


def _chooser(e: Eqn, shape, dtype):
    """JAX's derivative of max (min) over axes: the winners' indicator, ties sharing it."""
    x, axes = e.ins[0].sym, tuple(e.params["axes"])
    best = S.Sym(jnp.expand_dims(e.out.value, axes), E.reshaped(e.out.expr, shape))
    best = S.Sym(jnp.broadcast_to(best.value, shape), best.expr)
    wins = S.indicator(x.equals(best), dtype)
    count = S.Sym(jnp.sum(wins.value, axis=axes, keepdims=True),
                  E.total(wins.expr, axes, tuple(1 if a in axes else n
                                                 for a, n in enumerate(shape))))
    share = S.Sym(wins.value / count.value, E.div(wins.expr, count.expr))
    return B.compose(B.sum_along(axes, shape, dtype), B.diagonal(share, shape, dtype))


def _reduce_expr(name):
    return lambda a, shape, p: E.Expr("reduce", (a[0],), (name, tuple(p["axes"])), shape)


def _reduce_choice_switch(eqn, ins, directional):
    """``max`` over axes: the side is which entries win; at a tie the tangent of the tied
    entry that moves up most (the directional derivative of a maximum)."""
    (x,) = ins
    axes = tuple(eqn.params["axes"])
    bigger = eqn.primitive.name in ("reduce_max", "argmax")
    best = jnp.max(x.p, axis=axes, keepdims=True) if bigger else jnp.min(x.p, axis=axes,
                                                                         keepdims=True)
    chosen = x.p == best
    p = bind_values(eqn, x.p)[0]
    tied = jnp.abs(x.p - best) <= SWITCH_ROUNDING * 2 * zero_if_none(x.e, x.p)
    fill = -jnp.inf if bigger else jnp.inf
    if eqn.primitive.name in ("argmax", "argmin"):
        if not directional or x.t is None:
            return [V(p)], [chosen]
        inner = jnp.where(tied, x.t, fill)
        return [V(p, d=bind_values(eqn, inner)[0])], [chosen]
    e = None if x.e is None else jnp.max(x.e, axis=axes)
    if not directional or x.t is None:
        return [V(p, e)], [chosen]
    pick = jnp.max if bigger else jnp.min
    return [V(p, e, pick(jnp.where(tied, x.t, fill), axis=axes))], [chosen]


for _name in ("reduce_max", "reduce_min"):
    register(_name, FAMILY, jacobian=on_operand(_chooser), expr=_reduce_expr(_name[7:]),
             behaviour="kink", switch=_reduce_choice_switch, rounding="exact")
for _name in ("argmax", "argmin"):
    register(_name, FAMILY, expr=_reduce_expr(_name), behaviour="integer",
             switch=_reduce_choice_switch, rounding="exact")


def _sort_switch(eqn, ins, directional):
    """The order ``sort`` puts its operands in; at a tie of keys, the order the direction
    moves them to (the tangents as secondary keys)."""
    keys, dimension = eqn.params["num_keys"], eqn.params["dimension"]
    ps = [v.p for v in ins]
    iota = lax.broadcasted_iota(jnp.int32, ps[0].shape, dimension)
    tangents = [zero_if_none(v.t, v.p) if floating(v.p) else jnp.zeros(v.p.shape)
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


register("sort", FAMILY, fallback="a permutation found at the point (to come)",
         behaviour="kink", switch=_sort_switch, rounding="exact")
