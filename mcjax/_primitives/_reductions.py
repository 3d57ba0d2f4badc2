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
from mcjax._primitives._linear import picked, weights
from mcjax._primitives._shape import on_operand
from mcjax._primitives._switch import bind_values, floating, zero_if_none
from mcjax._primitives._table import Eqn, V, is_float, register

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
    if jnp.issubdtype(jnp.result_type(x.p), jnp.inexact):
        tied = jnp.abs(x.p - best) <= SWITCH_ROUNDING * 2 * zero_if_none(x.e, x.p)
    else:  # integers and booleans (argmax(x > 0.5)) tie exactly, with no rounding
        tied = chosen
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


def _sort(e: Eqn) -> list:
    """Each output of ``sort`` is its operand in the sorted order (JAX's: stable, ties in
    the order they came): a permutation of the entries, the same for every operand."""
    order = None
    parts = []
    for k, out in enumerate(e.outs):
        if k not in e.active or not is_float(out.value):
            parts.append({})
            continue
        if order is None:
            order = picked(e, k, out_index=k)
        parts.append({k: B.take(order, e.ins[k].shape, out.dtype)})
    return parts


register("sort", FAMILY, jacobian=_sort, behaviour="kink", switch=_sort_switch, rounding="exact")


def _top_k(e: Eqn) -> list:
    """``top_k``'s values are the operand's entries at its indices (a selection)."""
    if 0 not in e.active:
        return [{}, {}]
    return [{0: B.take(picked(e, 0), e.ins[0].shape, e.out.dtype)}, {}]


for _name in ("top_k", "approx_top_k"):
    register(_name, FAMILY, jacobian=_top_k, behaviour="kink", rounding="exact")


def _by_weights(e: Eqn):
    """Any reduction (each input entry feeds one output entry): a sum over the reduced axes
    after the diagonal of JAX's partials (a product's: the product of the others, zeros
    included; a variadic ``reduce``'s: whatever its computation gives)."""
    axes = tuple(e.params.get("axes", e.params.get("dimensions", ())))
    parts = []
    for o, out in enumerate(e.outs):
        part = {}
        if is_float(out.value):
            for k in e.active:
                x = e.ins[k]
                if is_float(x.value) and x.shape == e.ins[0].shape:
                    w = weights(e, k, o)
                    part[k] = B.compose(B.sum_along(axes, x.shape, out.dtype),
                                        B.diagonal(w, x.shape, out.dtype))
        parts.append(part)
    return parts if len(e.outs) > 1 else parts[0]


register("reduce_prod", FAMILY, jacobian=_by_weights, expr=_reduce_expr("prod"))
register("reduce", FAMILY, jacobian=_by_weights, behaviour="kink")
for _name in ("reduce_and", "reduce_or", "reduce_xor"):
    register(_name, FAMILY, behaviour="integer", rounding="exact")
