r"""A row pulled back through a Jacobian, a column pushed forward, with their formulas.

:func:`pull` is $\mathbf{v}^\top J$ (the vector-Jacobian product: backpropagation) and
:func:`push` is $J\mathbf{v}$, each returned as a :class:`~mcjax._jacobian._sym.Sym`: the array
from the Jacobian's own ``vjp`` / ``jvp``, and the expression a person writes for it
($\mathbf{v}^\top \operatorname{diag}(\mathbf{d}) = (\mathbf{v} \odot \mathbf{d})^\top$,
$\mathbf{v}^\top (I_m \otimes \mathbf{x}^\top) = \mathbf{v}\mathbf{x}^\top$, ...).  One
function per structure, dispatched on its class.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from mcjax._jacobian import (
    BlockDiagonal,
    Broadcast,
    Composed,
    Dense,
    Diagonal,
    Embed,
    Expand,
    Fill,
    Jacobian,
    Kronecker,
    Permutation,
    Reshape,
    ScaledIdentity,
    Slice,
    Sum,
    SumAlong,
    Zero,
)
from mcjax._jacobian import _build as B
from mcjax._jacobian import _expr as E
from mcjax._jacobian._formula import formula
from mcjax._jacobian._sym import Sym


def _cast(v: Sym, J: Jacobian) -> Sym:
    return Sym(jnp.asarray(v.value).astype(jnp.result_type(v.value, J.dtype)), v.expr)


# -- v^T J -----------------------------------------------------------------------------------
def Expr_pull(v: E.Expr, J: Jacobian) -> E.Expr:  # noqa: N802 - an expression constructor
    """``vᵀ J`` written as such (``1ᵀ S[1:3]``), for a structure without a shorter form."""
    return E.Expr("pull", (v,), _written(J), tuple(J.in_shape))


def _written(J: Jacobian) -> tuple[str, str]:
    return formula(J, latex=False), formula(J, latex=True)


# singledispatch keys on the first argument, so the public pull(v, J) calls _pull(J, v)
@functools.singledispatch
def _pull(J: Jacobian, v: Sym) -> Sym:
    return Sym(J.vjp(_cast(v, J).value), Expr_pull(v.expr, J))


def pull(v: Sym, J: Jacobian) -> Sym:
    """$\\mathbf{v}^\\top J$ (shape ``J.in_shape``), by the structure of ``J``."""
    return _pull(J, v)


@_pull.register
def _(J: Diagonal, v):
    return v * B.sym(J, "diagonal", placeholder="d")


@_pull.register
def _(J: ScaledIdentity, v):
    return v * B.sym(J, "scale", placeholder="c")


@_pull.register
def _(J: Zero, v):
    return Sym(jnp.zeros(J.in_shape, J.dtype), E.num(0.0, J.in_shape))


@_pull.register
def _(J: Fill, v):
    c = B.sym(J, "value", placeholder="c")
    total = Sym(jnp.sum(v.value), E.total(v.expr, tuple(range(len(v.shape))), ()))
    s = c * total
    return Sym(jnp.broadcast_to(s.value, J.in_shape), E.reshaped(s.expr, J.in_shape))


@_pull.register
def _(J: Dense, v):
    a = B.sym(J, "array")
    value = J.vjp(_cast(v, J).value)
    if J.in_ndim == 0:  # a column: v^T a = v . a
        if v.expr.op == "num" and v.expr.param == 1.0:
            return Sym(value, E.total(a.expr, tuple(range(len(J.out_shape))), ()))
        return Sym(value, E.dot(v.expr, a.expr))
    return Sym(value, E.vecmat(v.expr, a.expr, J.in_shape))


@_pull.register
def _(J: Kronecker, v):
    x = B.sym(J, "x", placeholder="x")
    value = J.vjp(_cast(v, J).value)
    if x.expr.shape and len(x.expr.shape) == 1:
        return Sym(value, E.outer(v.expr, x.expr, J.in_shape))  # v x^T
    return Sym(value, E.matmul(E.transpose(v.expr), x.expr, J.in_shape))  # V^T X


@_pull.register
def _(J: BlockDiagonal, v):
    W = B.sym(J, "block", placeholder="W")
    value = J.vjp(_cast(v, J).value)
    if not J.batch_shape:
        return Sym(value, E.vecmat(v.expr, W.expr, J.in_shape))  # W^T v, the row v^T W
    return Sym(value, E.matmul(v.expr, W.expr, J.in_shape))  # V W


@_pull.register
def _(J: Broadcast, v):
    axes = tuple(range(len(J.batch_shape)))
    s = Sym(J.vjp(_cast(v, J).value), E.total(v.expr, axes, J.in_shape))
    return s


@_pull.register
def _(J: Expand, v):
    summed = tuple(a for a in range(len(J.out_shape)) if a not in J.dims)
    return Sym(J.vjp(_cast(v, J).value), E.total(v.expr, summed, J.in_shape))


@_pull.register
def _(J: SumAlong, v):
    return Sym(J.vjp(_cast(v, J).value), E.reshaped(v.expr, J.in_shape))


@_pull.register
def _(J: Reshape, v):
    return Sym(J.vjp(_cast(v, J).value), E.reshaped(v.expr, J.in_shape))


@_pull.register
def _(J: Permutation, v):
    inverse = tuple(sorted(range(len(J.perm)), key=J.perm.__getitem__))
    return Sym(J.vjp(_cast(v, J).value), E.transpose(v.expr, inverse))


@_pull.register
def _(J: Slice, v):
    return Sym(J.vjp(_cast(v, J).value), Expr_pull(v.expr, J))


@_pull.register
def _(J: Embed, v):
    return Sym(J.vjp(_cast(v, J).value), Expr_pull(v.expr, J))


@_pull.register
def _(J: Composed, v):
    return _pull(J.inner, _pull(J.outer, v))


@_pull.register
def _(J: Sum, v):
    parts = [_pull(t, v) for t in J.terms]
    return sum(parts[1:], parts[0])


# -- J v ---------------------------------------------------------------------------------------
@functools.singledispatch
def _push(J: Jacobian, v: Sym) -> Sym:
    return Sym(J.jvp(_cast(v, J).value), E.Expr("push", (v.expr,), _written(J),
                                                 tuple(J.out_shape)))


def push(J: Jacobian, v: Sym) -> Sym:
    """$J\\mathbf{v}$ (shape ``J.out_shape``), by the structure of ``J``."""
    return _push(J, v)


@_push.register
def _(J: Diagonal, v):
    return B.sym(J, "diagonal", placeholder="d") * v


@_push.register
def _(J: ScaledIdentity, v):
    return B.sym(J, "scale", placeholder="c") * v


@_push.register
def _(J: Dense, v):
    a = B.sym(J, "array")
    value = J.jvp(_cast(v, J).value)
    if J.out_shape == ():
        return Sym(value, E.dot(a.expr, v.expr) if len(J.in_shape) == 1 else
                   E.total(E.mul(a.expr, v.expr), tuple(range(len(J.in_shape))), ()))
    return Sym(value, E.matmul(a.expr, v.expr, J.out_shape))


@_push.register
def _(J: BlockDiagonal, v):
    W = B.sym(J, "block", placeholder="W")
    return Sym(J.jvp(_cast(v, J).value), E.matmul(W.expr, v.expr, J.out_shape))


@_push.register
def _(J: Fill, v):
    c = B.sym(J, "value", placeholder="c")
    s = c * Sym(jnp.sum(v.value), E.total(v.expr, tuple(range(len(v.shape))), ()))
    return Sym(jnp.broadcast_to(s.value, J.out_shape), E.reshaped(s.expr, J.out_shape))


@_push.register
def _(J: Composed, v):
    return _push(J.outer, _push(J.inner, v))


@_push.register
def _(J: Sum, v):
    parts = [_push(t, v) for t in J.terms]
    return sum(parts[1:], parts[0])


for _cls in (Expand, Reshape, Broadcast):  # copies of v's entries: written as v
    _push.register(_cls)(lambda J, v: Sym(J.jvp(_cast(v, J).value),
                                          E.reshaped(v.expr, J.out_shape)))


@_push.register
def _(J: SumAlong, v):
    return Sym(J.jvp(_cast(v, J).value), E.total(v.expr, J.axes, J.out_shape))
