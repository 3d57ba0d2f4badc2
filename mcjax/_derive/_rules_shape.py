r"""Primitives that move, copy, pick or sum entries: reshapes, transposes, broadcasts, slices,
concatenations and reductions (Parr & Howard §4.3, §4.4).

Their Jacobians hold no numbers worth storing: a permutation for a transpose, a row of ones
$\mathbf{1}^\top$ for a sum (§4.4), a column of ones for scalar expansion (§4.3), the rows of
an identity for a slice.  ``max`` over axes picks its winners (ties share, as in JAX).
"""

from __future__ import annotations

import jax.numpy as jnp

from mcjax._derive._rules import Eqn, register
from mcjax._jacobian import _build as B
from mcjax._jacobian import _expr as E
from mcjax._jacobian import _sym as S
from mcjax._jacobian._algebra import compose
from mcjax._jacobian._print import index_text


def _on_operand(build):
    """A rule for a primitive with one differentiable operand (the first)."""
    def rule(e: Eqn) -> dict:
        x = e.ins[0]
        return {0: build(e, x.shape, x.dtype)} if 0 in e.active else {}

    return rule


def _same(a, shape, params):
    return E.reshaped(a[0], shape)


register("transpose",
         _on_operand(lambda e, s, dt: B.permutation(e.params["permutation"], s, dt)),
         lambda a, shape, p: E.transpose(a[0], p["permutation"]))
for _name in ("reshape", "squeeze", "expand_dims"):
    register(_name, _on_operand(lambda e, s, dt: B.reshape(e.out.shape, s, dt)), _same)
register("broadcast_in_dim",
         _on_operand(lambda e, s, dt: B.expand(e.out.shape, e.params["broadcast_dimensions"],
                                               s, dt)),
         _same)
register("reduce_sum",
         _on_operand(lambda e, s, dt: B.sum_along(e.params["axes"], s, dt)),
         lambda a, shape, p: E.total(a[0], tuple(p["axes"]), shape))


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
    return compose(B.sum_along(axes, shape, dtype), B.diagonal(share, shape, dtype))


def _reduce_expr(name):
    return lambda a, shape, p: E.Expr("reduce", (a[0],), (name, tuple(p["axes"])), shape)


register("reduce_max", _on_operand(_chooser), _reduce_expr("max"))
register("reduce_min", _on_operand(_chooser), _reduce_expr("min"))
for _name in ("argmax", "argmin"):
    register(_name, lambda e: {}, _reduce_expr(_name))


def _concatenate(e: Eqn) -> dict:
    axis, out = e.params["dimension"], e.out.shape
    offsets, at = [], 0
    for x in e.ins:
        offsets.append(at)
        at += x.shape[axis]
    out_j = {}
    for k in e.active:
        start = tuple(offsets[k] if a == axis else 0 for a in range(len(out)))
        out_j[k] = B.embed(start, None, out, e.ins[k].shape, e.ins[k].dtype)
    return out_j


register("concatenate", _concatenate,
         lambda a, shape, p: E.concat(tuple(a), p["dimension"], shape))


def _slice_expr(a, shape, p):
    text, latex = index_text(p["start_indices"], p["limit_indices"], p["strides"], a[0].shape)
    return E.part(a[0], text, latex, shape)


register("slice",
         _on_operand(lambda e, s, dt: B.slice_(e.params["start_indices"],
                                               e.params["limit_indices"], e.params["strides"],
                                               s, dt)),
         _slice_expr)


def _pad(e: Eqn) -> dict:
    config = e.params["padding_config"]
    if 1 in e.active or any(lo < 0 or hi < 0 for lo, hi, _ in config):
        return None  # the padding value, or cropping: left to an opaque block
    x = e.ins[0]
    start = tuple(lo for lo, _, _ in config)
    strides = tuple(interior + 1 for _, _, interior in config)
    return {0: B.embed(start, strides, e.out.shape, x.shape, x.dtype)}


register("pad", _pad, lambda a, shape, p: E.call("pad", a[0], shape=shape))
