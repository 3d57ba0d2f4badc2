"""A block without structure: the linear map JAX linearizes one primitive to, marked with its
name (correct, but unstructured: what ``mcjax.derive`` falls back to, and says so)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from mcjax._jacobian import _formula as F
from mcjax._jacobian._algebra import Jacobian, Shape, transpose_apply
from mcjax._jacobian._print import ATOM, upright


class Opaque(Jacobian):
    """A block mcjax has no structured rule for: ``jax.linearize``'s linear map of one
    primitive, correct but unstructured, marked with the primitive's ``name``.

    Args:
      linear: a ``jax.tree_util.Partial`` taking a tangent of ``in_shape``; its residual
        arrays are this Jacobian's leaves.
      name: what the block is (the primitive's name), for the formula and the tree.
      out_index: which of the primitive's outputs (``None`` when it has one).
    """

    linear: Any
    name: str
    out_index: int | None
    out_shape: Shape
    in_shape: Shape
    dtype_name: str

    kind = "opaque"
    by_value = False  # the linear map is a function made by each jax.linearize
    _arrays = ("linear",)
    _static = ("name", "out_index", "out_shape", "in_shape", "dtype_name")

    def __init__(self, linear, name: str, out_shape, in_shape, dtype, out_index=None):
        self._init(None, linear=linear, name=str(name), out_index=out_index,
                   out_shape=tuple(out_shape), in_shape=tuple(in_shape),
                   dtype_name=jnp.dtype(dtype).name)

    def label(self) -> str:
        return f"Opaque[{self.name}]"

    def jvp(self, v):
        out = self.linear(v)
        return out if self.out_index is None else out[self.out_index]

    def vjp(self, u):
        return transpose_apply(self, u)


@F.roots.register
def _(J: Opaque):
    return []


@F.write.register
def _(J: Opaque, p):
    return (f"J_{{{upright(J.name)}}}" if p.latex else f"J[{J.name}]"), ATOM
