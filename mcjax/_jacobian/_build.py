"""Structured Jacobians with their formulas attached.

Each constructor takes :class:`~mcjax._jacobian._sym.Sym` values (array and expression) and
returns one of :mod:`mcjax._jacobian`'s classes with ``symbols`` set, so that
``J.formula()`` can print what the arrays stand for.  Where a structure is a special case of a
simpler one (an expansion from a scalar is a column of ones, a sum over every axis a row of
ones, a permutation that moves nothing the identity), the simpler one is returned.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mcjax._jacobian import (
    BlockDiagonal,
    Broadcast,
    Composed,
    Contraction,
    Dense,
    Diagonal,
    Embed,
    Expand,
    Fill,
    Jacobian,
    Kronecker,
    Opaque,
    Permutation,
    Reshape,
    ScaledIdentity,
    Slice,
    Sum,
    SumAlong,
    Zero,
)
from mcjax._jacobian import _expr as E
from mcjax._jacobian._sym import Sym, lift


def _array(value, dtype):
    return jnp.asarray(value, dtype)


def _with(J: Jacobian, *exprs: E.Expr) -> Jacobian:
    J.symbols = tuple(exprs)
    return J


def symbol(J: Jacobian, index: int = 0, placeholder: str = "A") -> E.Expr:
    """The expression of ``J``'s ``index``-th array, or a placeholder name for a hand-built J."""
    if J.symbols is not None:
        return J.symbols[index]
    return E.arg(placeholder, placeholder, ())


def sym(J: Jacobian, field: str, index: int = 0, placeholder: str = "A") -> Sym:
    """The ``field`` array of ``J`` with its expression."""
    return Sym(getattr(J, field), symbol(J, index, placeholder))


# -- element-wise ------------------------------------------------------------------------------
def identity(shape, dtype) -> Jacobian:
    """$I$ on arrays of ``shape``."""
    return _with(ScaledIdentity(_array(1, dtype), shape), E.ONE)


def is_identity(J: Jacobian) -> bool:
    return isinstance(J, ScaledIdentity) and J.symbols is not None and \
        J.symbols[0].op == "num" and J.symbols[0].param == 1.0


def scaled_identity(c: Sym, shape, dtype) -> Jacobian:
    """$c I$ for a scalar ``c``."""
    c = lift(c)
    return _with(ScaledIdentity(_array(c.value, dtype), shape), c.expr)


def diagonal(d: Sym, shape, dtype) -> Jacobian:
    """$\\operatorname{diag}(d)$ on arrays of ``shape``; a scalar ``d`` gives $d I$."""
    d = lift(d)
    if jnp.ndim(d.value) == 0 and tuple(shape) != ():
        return scaled_identity(d, shape, dtype)
    value = jnp.broadcast_to(_array(d.value, dtype), shape)
    return _with(Diagonal(value), E.reshaped(d.expr, shape))


def as_dtype(J: Jacobian, dtype) -> Jacobian:
    """``J`` computing in ``dtype`` (a function that rounds to float32 inside still has the
    Jacobian of its output's dtype, as ``jax.jacfwd``'s)."""
    dtype = jnp.dtype(dtype)
    if jnp.dtype(J.dtype) == dtype:
        return J
    if isinstance(J, Composed):
        return Composed(as_dtype(J.outer, dtype), as_dtype(J.inner, dtype))
    if isinstance(J, Sum):
        return Sum(tuple(as_dtype(t, dtype) for t in J.terms))
    leaves, treedef = jax.tree_util.tree_flatten(J)
    J = jax.tree_util.tree_unflatten(treedef, [
        leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.inexact) else leaf
        for leaf in leaves])
    if hasattr(J, "dtype_name"):
        J.dtype_name = dtype.name
    return J


def zero(out_shape, in_shape, dtype) -> Jacobian:
    return Zero(out_shape, in_shape, dtype)


# -- rows, columns and matrices ------------------------------------------------------------
def dense(a: Sym, in_ndim: int, dtype=None) -> Jacobian:
    """The array ``a`` (numerator layout) as a Jacobian; a row $\\mathbf{a}^\\top$ when the
    output is a scalar, a column when the input is."""
    value = jnp.asarray(a.value) if dtype is None else _array(a.value, dtype)
    return _with(Dense(value, in_ndim=in_ndim), E.reshaped(a.expr, value.shape))


def fill(c: Sym, out_shape, in_shape, dtype) -> Jacobian:
    """Every entry ``c``: the column $c\\mathbf{1}$, the row $c\\mathbf{1}^\\top$."""
    c = lift(c)
    return _with(Fill(_array(c.value, dtype), out_shape, in_shape), c.expr)


def kronecker(x: Sym, m: int) -> Jacobian:
    """$I_m \\otimes \\mathbf{x}^\\top$."""
    return _with(Kronecker(x.value, m), x.expr)


def block_diagonal(W: Sym, batch_shape) -> Jacobian:
    """$I_B \\otimes W$ (``W`` itself without a batch)."""
    return _with(BlockDiagonal(W.value, batch_shape), W.expr)


def contraction(other: Sym, dimension_numbers, side: int, in_shape) -> Jacobian:
    return _with(Contraction(other.value, dimension_numbers, side, in_shape), other.expr)


def opaque(linear, name: str, out_shape, in_shape, dtype, out_index=None) -> Jacobian:
    return Opaque(linear, name, out_shape, in_shape, dtype, out_index)


# -- rearrangements --------------------------------------------------------------------------
def expand(out_shape, dims, in_shape, dtype) -> Jacobian:
    """``broadcast_in_dim``'s Jacobian, as the simplest class that is it."""
    out_shape, dims, in_shape = tuple(out_shape), tuple(dims), tuple(in_shape)
    if out_shape == in_shape and dims == tuple(range(len(in_shape))):
        return identity(in_shape, dtype)
    if math.prod(in_shape) == 1 and math.prod(out_shape) > 1:
        return fill(Sym(1, E.ONE), out_shape, in_shape, dtype)  # a column of ones
    if math.prod(in_shape) == math.prod(out_shape):
        return reshape(out_shape, in_shape, dtype)
    lead = len(out_shape) - len(in_shape)
    if dims == tuple(range(lead, len(out_shape))) and out_shape[lead:] == in_shape:
        return _with(Broadcast(out_shape[:lead], in_shape, _array(1, dtype)), E.ONE)
    return Expand(out_shape, dims, in_shape, dtype)


def reshape(out_shape, in_shape, dtype) -> Jacobian:
    """The same entries in another shape: unit axes added are an :class:`Expand`."""
    out_shape, in_shape = tuple(out_shape), tuple(in_shape)
    if out_shape == in_shape:
        return identity(in_shape, dtype)
    dims = _inserted_units(out_shape, in_shape)
    if dims is not None and in_shape and math.prod(in_shape) > 1:
        return Expand(out_shape, dims, in_shape, dtype)
    return Reshape(out_shape, in_shape, dtype)


def _inserted_units(out_shape, in_shape):
    """Where ``in_shape``'s axes sit in ``out_shape`` if the reshape only inserts 1s."""
    dims, j = [], 0
    for i, n in enumerate(out_shape):
        if j < len(in_shape) and n == in_shape[j]:
            dims.append(i)
            j += 1
        elif n != 1:
            return None
    return tuple(dims) if j == len(in_shape) else None


def permutation(perm, in_shape, dtype) -> Jacobian:
    perm = tuple(perm)
    if perm == tuple(range(len(perm))):
        return identity(in_shape, dtype)
    return Permutation(perm, in_shape, dtype)


def sum_along(axes, in_shape, dtype) -> Jacobian:
    """``jnp.sum(v, axes)``: the row $\\mathbf{1}^\\top$ over every axis."""
    axes = tuple(sorted(axes))
    if not axes:
        return identity(in_shape, dtype)
    if len(axes) == len(in_shape):
        return fill(Sym(1, E.ONE), (), in_shape, dtype)
    return SumAlong(axes, in_shape, dtype)


def slice_(start, limit, strides, in_shape, dtype) -> Jacobian:
    J = Slice(start, limit, strides, in_shape, dtype)
    return identity(in_shape, dtype) if J.out_shape == tuple(in_shape) else J


def embed(start, strides, out_shape, in_shape, dtype) -> Jacobian:
    if tuple(out_shape) == tuple(in_shape):
        return identity(in_shape, dtype)
    return Embed(start, strides, out_shape, in_shape, dtype)
