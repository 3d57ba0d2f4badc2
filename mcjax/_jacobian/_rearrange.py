r"""Rearrangements: Jacobians with no arrays, that move, copy, pick, sum or drop entries
(reshapes, transposes, broadcasts, slices, concatenations and sums, §4.3, §4.4).

- ``mcjax.Permutation``, $P$: the axes in another order (a transpose);
- ``mcjax.Reshape``: the same entries in another shape (an identity matrix);
- ``mcjax.Slice``, $S$, and ``mcjax.Embed``, $S^\top$: a part picked, a part put in place;
- ``mcjax.Expand``: copies along new or length-1 axes (broadcasting);
- ``mcjax.SumAlong``: a sum over some axes.

Their constructors (``reshape``, ``expand``, ...) return the simplest class that is
the map: an expansion from a scalar is a column of ones, a sum over every axis a row of ones,
a permutation that moves nothing the identity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mcjax._core._errors import ShapeError, shape_str
from mcjax._jacobian import _expr as E
from mcjax._jacobian import _formula as F
from mcjax._jacobian._algebra import (
    Jacobian,
    Shape,
    cast_to,
    common_prefix,
    dtype_of,
    expr_pull,
    identity,
    pulls,
    pushes,
    simplifies,
    zero,
)
from mcjax._jacobian._elementwise import Broadcast, Fill, fill, ones_like_fill
from mcjax._jacobian._print import ATOM, POSTFIX, index_text
from mcjax._jacobian._sym import Sym


class Rearrangement(Jacobian):
    """A Jacobian with no arrays: it moves, copies, sums or drops entries.  Scaling puts a
    factor $cI$ in front."""

    dtype_name: str

    def _set(self, dtype, **fields) -> None:
        self._init(None, dtype_name=jnp.dtype(dtype).name, **fields)


class Permutation(Rearrangement):
    """$P$: the axes of the input in another order, ``out = jnp.transpose(v, perm)``.

    The Jacobian of a transpose ($X^\\top$ for a matrix).  Maps shape ``in_shape`` to
    ``tuple(in_shape[p] for p in perm)``.
    """

    perm: tuple[int, ...]
    in_shape: Shape

    kind = "permutation"
    _static = ("perm", "in_shape", "dtype_name")

    def __init__(self, perm: Sequence[int], in_shape: Sequence[int], dtype=jnp.float32):
        self._set(dtype, perm=tuple(int(p) for p in perm), in_shape=tuple(in_shape))

    @property
    def out_shape(self) -> Shape:
        return tuple(self.in_shape[p] for p in self.perm)

    def leading_batch(self) -> int:
        t = 0
        while t < len(self.perm) and self.perm[t] == t:
            t += 1
        return t

    def inverse(self) -> tuple[int, ...]:
        """The permutation that undoes this one (the transpose's axes)."""
        return tuple(sorted(range(len(self.perm)), key=self.perm.__getitem__))

    def jvp(self, v):
        return jnp.transpose(v, self.perm)

    def vjp(self, u):
        return jnp.transpose(u, self.inverse())


def permutation(perm, in_shape, dtype) -> Jacobian:
    perm = tuple(perm)
    if perm == tuple(range(len(perm))):
        return identity(in_shape, dtype)
    return Permutation(perm, in_shape, dtype)


@pulls(Permutation)
def _(J: Permutation, v):
    return Sym(J.vjp(cast_to(v, J).value), E.transpose(v.expr, J.inverse()))


@simplifies(Permutation, Permutation)
def _(outer, inner):
    return permutation(tuple(inner.perm[p] for p in outer.perm), inner.in_shape, inner.dtype)


@F.write.register
def _(J: Permutation, p):
    if J.perm == (1, 0):  # vec(X^T) = K vec(X): the commutation matrix
        return "K", ATOM
    perm = ",".join(map(str, J.perm))
    return (f"P_{{({perm})}}" if p.latex else f"P({perm})"), ATOM


class Reshape(Rearrangement):
    """The same entries in another shape (``reshape``, ``squeeze``): an identity matrix."""

    out_shape: Shape
    in_shape: Shape

    kind = "reshape"
    _static = ("out_shape", "in_shape", "dtype_name")

    def __init__(self, out_shape: Sequence[int], in_shape: Sequence[int], dtype=jnp.float32):
        if math.prod(out_shape) != math.prod(in_shape):
            raise ShapeError(f"mcjax.Reshape: cannot reshape {shape_str(in_shape)} to "
                             f"{shape_str(out_shape)}; expected the same number of entries")
        self._set(dtype, out_shape=tuple(out_shape), in_shape=tuple(in_shape))

    def is_unit_factor(self) -> bool:
        return True

    def leading_batch(self) -> int:  # row-major: a kept prefix keeps its indices
        return common_prefix(self.out_shape, self.in_shape)

    def jvp(self, v):
        return jnp.reshape(v, self.out_shape)

    def vjp(self, u):
        return jnp.reshape(u, self.in_shape)


def reshape(out_shape, in_shape, dtype) -> Jacobian:
    """The same entries in another shape: unit axes added are an ``mcjax.Expand``."""
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


@simplifies(Reshape, Reshape)
def _(outer, inner):
    return reshape(outer.out_shape, inner.in_shape, dtype_of(outer, inner))


@F.write.register
def _(J: Reshape, p):
    return F.identity(p), ATOM


class Slice(Rearrangement):
    """$S$: picks ``v[start:limit:strides]`` (the rows of the identity that indexing keeps).

    The Jacobian of ``x[1:3]`` or ``X[:, 0]`` (before the squeeze).
    """

    start: tuple[int, ...]
    limit: tuple[int, ...]
    strides: tuple[int, ...]
    in_shape: Shape

    kind = "slice"
    _static = ("start", "limit", "strides", "in_shape", "dtype_name")

    def __init__(self, start, limit, strides, in_shape: Sequence[int], dtype=jnp.float32):
        strides = tuple(strides) if strides is not None else (1,) * len(tuple(start))
        self._set(dtype, start=tuple(start), limit=tuple(limit), strides=strides,
                  in_shape=tuple(in_shape))

    @property
    def out_shape(self) -> Shape:
        return tuple(max(0, -(-(hi - lo) // st))
                     for lo, hi, st in zip(self.start, self.limit, self.strides))

    def padding(self):
        """``lax.pad``'s (low, high, interior) that puts a slice back in place."""
        return [(lo, n - lo - (k - 1) * st - 1, st - 1) if k else (n, 0, 0)
                for lo, st, n, k in zip(self.start, self.strides, self.in_shape, self.out_shape)]

    def jvp(self, v):
        return jax.lax.slice(v, self.start, self.limit, self.strides)

    def leading_batch(self) -> int:  # the leading axes taken whole
        t = 0
        while (t < len(self.start) and self.start[t] == 0 and self.strides[t] == 1
               and self.out_shape[t] == self.in_shape[t]):
            t += 1
        return t

    def vjp(self, u):
        return jax.lax.pad(u, jnp.zeros((), u.dtype), self.padding())


def slice_(start, limit, strides, in_shape, dtype) -> Jacobian:
    J = Slice(start, limit, strides, in_shape, dtype)
    return identity(in_shape, dtype) if J.out_shape == tuple(in_shape) else J


@pulls(Slice)
def _(J: Slice, v):
    return Sym(J.vjp(cast_to(v, J).value), expr_pull(v.expr, J))


@F.write.register
def _(J: Slice, p):
    text, latex = index_text(J.start, J.limit, J.strides, J.in_shape)
    return ("S" + latex if p.latex else "S" + text), ATOM


class Embed(Rearrangement):
    """$S^\\top$: places the input at ``start`` (step ``strides``) in zeros of ``out_shape``.

    The Jacobian of ``jnp.concatenate`` with respect to one part; the transpose of ``mcjax.Slice``.
    """

    start: tuple[int, ...]
    strides: tuple[int, ...]
    out_shape: Shape
    in_shape: Shape

    kind = "embedding"
    _static = ("start", "strides", "out_shape", "in_shape", "dtype_name")

    def __init__(self, start, strides, out_shape, in_shape, dtype=jnp.float32):
        strides = tuple(strides) if strides is not None else (1,) * len(tuple(start))
        self._set(dtype, start=tuple(start), strides=strides, out_shape=tuple(out_shape),
                  in_shape=tuple(in_shape))

    def as_slice(self) -> Slice:
        """The ``mcjax.Slice`` this embedding is the transpose of."""
        limit = tuple(lo + (k - 1) * st + 1 if k else lo
                      for lo, st, k in zip(self.start, self.strides, self.in_shape))
        return Slice(self.start, limit, self.strides, self.out_shape, self.dtype_name)

    def jvp(self, v):
        return self.as_slice().vjp(v)

    def leading_batch(self) -> int:
        return self.as_slice().leading_batch()

    def vjp(self, u):
        return self.as_slice().jvp(u)


def embed(start, strides, out_shape, in_shape, dtype) -> Jacobian:
    if tuple(out_shape) == tuple(in_shape):
        return identity(in_shape, dtype)
    return Embed(start, strides, out_shape, in_shape, dtype)


@pulls(Embed)
def _(J: Embed, v):
    return Sym(J.vjp(cast_to(v, J).value), expr_pull(v.expr, J))


@simplifies(Slice, Embed)
def _(outer, inner):
    """Picking out of a concatenation: the part itself, or nothing of it."""
    if outer.strides != (1,) * len(outer.strides) or inner.strides != outer.strides:
        return None
    lo, hi = inner.start, tuple(s + n for s, n in zip(inner.start, inner.in_shape))
    if outer.start == lo and outer.limit == hi:
        return identity(inner.in_shape, dtype_of(outer, inner))
    if any(a >= d or b <= c for a, b, c, d in zip(outer.start, outer.limit, lo, hi)):
        return zero(outer.out_shape, inner.in_shape, dtype_of(outer, inner))
    return None


@F.write.register
def _(J: Embed, p):
    return p._transposed(F.write(J.as_slice(), p)[0]), POSTFIX


class Expand(Rearrangement):
    """Copies entries along new or length-1 axes: ``lax.broadcast_in_dim(v, out_shape, dims)``.

    The Jacobian of broadcasting (``x + b`` with ``b`` of shape ``(1, n)``); input axis ``i``
    becomes output axis ``dims[i]``.  Scalar expansion (``mcjax.Fill``) and a batch copy
    (``mcjax.Broadcast``) are its special cases.
    """

    out_shape: Shape
    dims: tuple[int, ...]
    in_shape: Shape

    kind = "expansion"
    _static = ("out_shape", "dims", "in_shape", "dtype_name")

    def __init__(self, out_shape, dims, in_shape, dtype=jnp.float32):
        self._set(dtype, out_shape=tuple(out_shape), dims=tuple(dims), in_shape=tuple(in_shape))

    def jvp(self, v):
        return jax.lax.broadcast_in_dim(v, self.out_shape, self.dims)

    def leading_batch(self) -> int:
        t = 0
        while (t < len(self.dims) and self.dims[t] == t
               and self.in_shape[t] == self.out_shape[t]):
            t += 1
        return t

    def vjp(self, u):
        new = tuple(a for a in range(len(self.out_shape)) if a not in self.dims)
        stretched = tuple(d for i, d in enumerate(self.dims)
                          if self.in_shape[i] == 1 and self.out_shape[d] != 1)
        summed = jnp.sum(u, axis=tuple(sorted(new + stretched)), keepdims=True)
        return summed.reshape(self.in_shape)


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
        return Broadcast(out_shape[:lead], in_shape, jnp.asarray(1, dtype), symbols=(E.ONE,))
    return Expand(out_shape, dims, in_shape, dtype)


@pulls(Expand)
def _(J: Expand, v):
    summed = tuple(a for a in range(len(J.out_shape)) if a not in J.dims)
    return Sym(J.vjp(cast_to(v, J).value), E.total(v.expr, summed, J.in_shape))


@simplifies(Expand, Expand)
def _(outer, inner):
    dims = tuple(outer.dims[d] for d in inner.dims)
    return expand(outer.out_shape, dims, inner.in_shape, dtype_of(outer, inner))


@F.write.register
def _(J: Expand, p):
    n, k = len(J.out_shape), len(J.dims)
    if J.dims == tuple(range(n - k, n)):  # copies along leading axes
        return f"({F.ones(p)}{F.kron(p)}I)", ATOM
    if J.dims == tuple(range(k)):  # along trailing axes
        return f"(I{F.kron(p)}{F.ones(p)})", ATOM
    dims = ",".join(map(str, J.dims))
    return (f"E_{{({dims})}}" if p.latex else f"E[{dims}]"), ATOM


class SumAlong(Rearrangement):
    """Sums over some axes: ``jnp.sum(v, axes)``.  Over all axes it is $\\mathbf{1}^\\top$
    (``mcjax.Fill``); over the last axis of a matrix, $I \\otimes \\mathbf{1}^\\top$."""

    axes: tuple[int, ...]
    in_shape: Shape

    kind = "partial sum"
    _static = ("axes", "in_shape", "dtype_name")

    def __init__(self, axes: Sequence[int], in_shape: Sequence[int], dtype=jnp.float32):
        self._set(dtype, axes=tuple(sorted(axes)), in_shape=tuple(in_shape))

    @property
    def out_shape(self) -> Shape:
        return tuple(n for a, n in enumerate(self.in_shape) if a not in self.axes)

    def jvp(self, v):
        return jnp.sum(v, axis=self.axes)

    def leading_batch(self) -> int:
        return self.axes[0]

    def vjp(self, u):
        return jnp.broadcast_to(jnp.expand_dims(u, self.axes), self.in_shape)


def sum_along(axes, in_shape, dtype) -> Jacobian:
    """``jnp.sum(v, axes)``: the row $\\mathbf{1}^\\top$ over every axis."""
    axes = tuple(sorted(axes))
    if not axes:
        return identity(in_shape, dtype)
    if len(axes) == len(in_shape):
        return fill(Sym(1, E.ONE), (), in_shape, dtype)
    return SumAlong(axes, in_shape, dtype)


@pulls(SumAlong)
def _(J: SumAlong, v):
    return Sym(J.vjp(cast_to(v, J).value), E.reshaped(v.expr, J.in_shape))


@pushes(SumAlong)
def _(J: SumAlong, v):
    return Sym(J.jvp(cast_to(v, J).value), E.total(v.expr, J.axes, J.out_shape))


for _cls in (Expand, Reshape):  # copies of v's entries: written as v
    pushes(_cls)(lambda J, v: Sym(J.jvp(cast_to(v, J).value), E.reshaped(v.expr, J.out_shape)))
pulls(Reshape)(lambda J, v: Sym(J.vjp(cast_to(v, J).value), E.reshaped(v.expr, J.in_shape)))


@F.write.register
def _(J: SumAlong, p):
    n = len(J.in_shape)
    ones = p._transposed(F.ones(p))
    if J.axes == tuple(range(n - len(J.axes), n)):
        return f"(I{F.kron(p)}{ones})", ATOM
    if J.axes == tuple(range(len(J.axes))):
        return f"({ones}{F.kron(p)}I)", ATOM
    axes = ",".join(map(str, J.axes))
    return (f"\\Sigma_{{{axes}}}" if p.latex else f"Σ[axes {axes}]"), ATOM


# Every entry of c 1 1^T is the same number: moving entries around changes no entry, copying
# (an expansion) or summing entries into one multiplies it by how many there were.
for _cls in (Reshape, Permutation, Expand, Broadcast):
    simplifies(_cls, Fill)(lambda o, i: ones_like_fill(i, 1, o.out_shape, i.in_shape, o))
for _cls in (Reshape, Permutation):
    simplifies(Fill, _cls)(lambda o, i: ones_like_fill(o, 1, o.out_shape, i.in_shape, i))
for _cls in (Expand, Broadcast):
    simplifies(Fill, _cls)(lambda o, i: ones_like_fill(
        o, math.prod(i.out_shape) // max(math.prod(i.in_shape), 1), o.out_shape, i.in_shape, i))
simplifies(Fill, SumAlong)(lambda o, i: ones_like_fill(o, 1, o.out_shape, i.in_shape, i))
simplifies(SumAlong, Fill)(lambda o, i: ones_like_fill(
    i, math.prod(o.in_shape) // max(math.prod(o.out_shape), 1), o.out_shape, i.in_shape, o))
