r"""Indexing: gathers (embedding lookups, ``take_along_axis``, a label's logit), scatters
(``x.at[i].add(v)``, a one-hot), dynamic slices and updates.

A gather is linear in its operand: its Jacobian is the gather itself, $(\cdot)[i]$, holding
the indices.  A scatter-add is the identity on its operand and the scatter of the tangent on
its updates; an overwriting scatter keeps the operand where no update lands and passes each
surviving update (JAX's: where indices repeat, the one its scatter keeps).  ``scatter-mul``,
``scatter-min`` and ``scatter-max`` are diagonal in the operand, and in the updates a scatter
of weighted tangents, the weights JAX's own (ties sharing).  All are exact: indices are
integers, and the indices have no derivative.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from mcjax._jacobian import _build as B
from mcjax._jacobian import _expr as E
from mcjax._jacobian._sym import Sym
from mcjax._primitives._linear import linear, picked, traced, weights
from mcjax._primitives._table import Eqn, register

FAMILY = "indexing"

def _zero_fill(params: dict) -> dict:
    """Out of bounds, a gather's tangent is 0 (its value may be NaN: ``fill_value=None``)."""
    return {**params, "fill_value": 0} if "fill_value" in params else params


register("gather", FAMILY, jacobian=linear("gather", shown=(1,), tangent_params=_zero_fill),
         rounding="exact",
         expr=lambda a, s, p: E.Expr("index", (a[0],), ("[" + "gather" + "]", "_{gather}"), s))
register("dynamic_slice", FAMILY, jacobian=linear("dynamic_slice", shown=()), rounding="exact")
register("dynamic_update_slice", FAMILY,
         jacobian=linear("dynamic_update_slice", affine=(0, 1), shown=()), rounding="exact")


def _scatter_add(sign: float):
    """``scatter-add`` (``scatter-sub``): the identity on the operand, the scatter of the
    tangent (its negative) on the updates."""

    def rule(e: Eqn) -> dict:
        out = {}
        if 0 in e.active:
            out[0] = B.identity(e.out.shape, e.out.dtype)
        if 2 in e.active:
            out[2] = linear("scatter-add" if sign > 0 else "scatter-sub", affine=(0,),
                            shown=(1,))(e)[2]
        return out

    return rule


register("scatter-add", FAMILY, jacobian=_scatter_add(1.0), rounding="sum")
register("scatter-sub", FAMILY, jacobian=_scatter_add(-1.0), rounding="sum")


def _scatter(e: Eqn) -> dict | None:
    """Overwriting scatter: the operand survives where no update lands; each output entry an
    update lands on takes that update's derivative (JAX's winner where indices repeat)."""
    out = {}
    if 0 in e.active:
        kept = picked(e, 0)  # -1 where an update overwrote the operand
        if kept is None:
            return None
        mask = Sym((kept >= 0).astype(e.out.dtype), E.call("kept", e.ins[1].expr))
        out[0] = B.diagonal(mask, e.out.shape, e.out.dtype)
    if 2 in e.active:
        out[2] = B.take(picked(e, 2), e.ins[2].shape, e.out.dtype, e.ins[1].expr)
    return out


register("scatter", FAMILY, jacobian=_scatter, rounding="exact")


def _scatter_weighted(e: Eqn) -> dict:
    """``scatter-mul``, ``scatter-min``, ``scatter-max``: a diagonal on the operand, a scatter
    of weighted tangents on the updates; the weights are JAX's (VJP of ones)."""
    out = {}
    if 0 in e.active:
        out[0] = B.diagonal(weights(e, 0), e.out.shape, e.out.dtype)
    if 2 in e.active:
        p = e.params
        operand, indices, updates = (op.value for op in e.ins)
        adding = traced(lambda o, u: lax.scatter_add(
            o, indices, u, p["dimension_numbers"], indices_are_sorted=p["indices_are_sorted"],
            unique_indices=p["unique_indices"], mode=p["mode"]), operand, updates)
        scatter = B.applied(adding, [jnp.zeros_like(operand), indices, None], 2, updates.shape,
                            e.out.shape, e.out.dtype, (e.ins[1].expr,))
        out[2] = B.compose(scatter, B.diagonal(weights(e, 2), updates.shape, e.out.dtype))
    return out


for _name in ("scatter-mul", "scatter-min", "scatter-max"):
    register(_name, FAMILY, jacobian=_scatter_weighted,
             behaviour="kink" if _name != "scatter-mul" else "smooth",
             rounding="exact" if _name != "scatter-mul" else "elementary")
