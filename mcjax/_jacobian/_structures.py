r"""Structured Jacobian values.

Parr & Howard's central observation (§4.2-§4.4) is that the Jacobians of deep learning are
structured: element-wise operators give diagonal matrices, scalar expansion a column of
ones, sum reduction a row of ones, the affine map with respect to ``W`` a Kronecker-shaped
tensor.  A rule returns its derivative as one of the classes below, which

- apply themselves to a tangent (``jvp``, $J v$) or a cotangent (``vjp``, $u^\top J$)
  without ever building the dense array,
- compose by the vector chain rule (``outer @ inner``, §4.5.3) and add by the total-derivative
  rule (``a + b``, §4.5.2), simplifying where the structure allows (diagonal times diagonal is
  diagonal),
- turn into the dense Jacobian in numerator layout on request: ``J.dense()`` has shape
  ``J.out_shape + J.in_shape``.

Every class is a JAX pytree (its arrays are leaves, its shapes static), so Jacobians pass
through ``jax.jit``, ``jax.vmap`` and ``lax.scan`` like arrays do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mcjax._core._errors import ShapeError, shape_str

Shape = tuple[int, ...]

__all__ = [
    "Jacobian",
    "Dense",
    "Diagonal",
    "ScaledIdentity",
    "Fill",
    "Broadcast",
    "Kronecker",
    "BlockDiagonal",
    "Composed",
    "Sum",
    "Zero",
    "Permutation",
    "Reshape",
    "Slice",
    "Embed",
    "Expand",
    "SumAlong",
    "Contraction",
    "Opaque",
    "densify",
]


def _eye_tensor(shape: Shape, dtype) -> jax.Array:
    """The identity on arrays of ``shape``, as a tensor of shape ``shape + shape``."""
    size = math.prod(shape)
    return jnp.eye(size, dtype=dtype).reshape(shape + shape)


class Jacobian:
    """A linear map from arrays of ``in_shape`` to arrays of ``out_shape``: a derivative.

    Subclasses store only what their structure needs and implement :meth:`jvp`,
    :meth:`vjp`, :meth:`dense` and :meth:`scaled`.
    """

    kind: str = "jacobian"
    """A short name of the structure, used in error messages (``"diagonal"``, ...)."""
    out_shape: Shape
    """The shape of the function's output: the leading axes of :meth:`dense`."""
    in_shape: Shape
    """The shape of the argument: the trailing axes of :meth:`dense`."""

    # -- what every structured form provides -------------------------------------------
    def jvp(self, v):
        """$J v$: push a tangent of shape ``in_shape`` forward to shape ``out_shape``."""
        raise NotImplementedError

    def vjp(self, u):
        """$u^\\top J$: pull a cotangent of shape ``out_shape`` back to shape ``in_shape``."""
        raise NotImplementedError

    def dense(self) -> jax.Array:
        """The dense Jacobian in numerator layout, shape ``out_shape + in_shape``."""
        raise NotImplementedError

    def scaled(self, c) -> "Jacobian":
        """$c J$ for a scalar ``c``, keeping the structure."""
        raise NotImplementedError

    @property
    def dtype(self):
        """The dtype of the stored arrays (float32 if there are none)."""
        leaves = jax.tree_util.tree_leaves(self)
        return jnp.result_type(*leaves) if leaves else jnp.float32

    # -- derived behaviour --------------------------------------------------------------
    @property
    def shape(self) -> Shape:
        """``out_shape + in_shape``: the shape of :meth:`dense`."""
        return tuple(self.out_shape) + tuple(self.in_shape)

    def __matmul__(self, inner: "Jacobian") -> "Jacobian":
        """The vector chain rule (§4.5.3): ``(self @ inner)`` is $J_f J_g$ for $f(g(x))$."""
        if not isinstance(inner, Jacobian):
            return NotImplemented
        if tuple(self.in_shape) != tuple(inner.out_shape):
            raise ShapeError(
                f"mcjax.Jacobian: cannot compose a {self.kind} Jacobian taking "
                f"{shape_str(self.in_shape)} with a {inner.kind} Jacobian giving "
                f"{shape_str(inner.out_shape)}; expected the inner output shape "
                f"{shape_str(self.in_shape)}"
            )
        return _compose(self, inner)

    def __add__(self, other: "Jacobian") -> "Jacobian":
        """Sum of two Jacobians of one shape (the total-derivative rule, §4.5.2)."""
        if not isinstance(other, Jacobian):
            return NotImplemented
        if self.shape != other.shape:
            raise ShapeError(
                f"mcjax.Jacobian: cannot add a {self.kind} Jacobian of shape "
                f"{shape_str(self.shape)} to a {other.kind} Jacobian of shape "
                f"{shape_str(other.shape)}"
            )
        if isinstance(self, Diagonal) and isinstance(other, Diagonal):
            return Diagonal(self.diagonal + other.diagonal)
        terms = (self.terms if isinstance(self, Sum) else (self,)) + (
            other.terms if isinstance(other, Sum) else (other,)
        )
        return Sum(terms)

    def __neg__(self) -> "Jacobian":
        return self.scaled(-1)

    def __sub__(self, other: "Jacobian") -> "Jacobian":
        return self + (-other)

    def __mul__(self, c) -> "Jacobian":
        return self.scaled(c)

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(out_shape={shape_str(self.out_shape)}, "
            f"in_shape={shape_str(self.in_shape)})"
        )

    # -- the formula ------------------------------------------------------------------------
    symbols: tuple | None = None
    """What each stored array stands for, as expressions (set by :func:`mcjax.derive`, which
    prints them in :meth:`formula`); ``None`` for a Jacobian built by hand."""

    def formula(self) -> str:
        """The Jacobian in the paper's notation, e.g. ``diag(1[z > 0]) (I_8 ⊗ xᵀ), z = W x + b``.

        Sub-expressions used more than once, or long, are named and defined after a comma.
        A Jacobian built by hand (not by :func:`mcjax.derive`) prints its structure with
        placeholder names (``diag(d)``).
        """
        from mcjax._jacobian._formula import formula  # the printer lives with derive

        return formula(self, latex=False)

    def latex(self) -> str:
        """:meth:`formula` in LaTeX, e.g. ``\\operatorname{diag}(\\mathbb{1}[z > 0])\\,(I_{8} \\otimes \\mathbf{x}^\\top)``."""
        from mcjax._jacobian._formula import formula

        return formula(self, latex=True)

    # -- pytree plumbing: subclasses list their array fields and static fields ------------
    _arrays: tuple[str, ...] = ()
    _static: tuple[str, ...] = ()

    def tree_flatten(self):
        """JAX pytree protocol: the arrays are leaves; shapes and symbols static auxiliary data."""
        return (
            tuple(getattr(self, a) for a in self._arrays),
            (tuple(getattr(self, s) for s in self._static), self.symbols),
        )

    @classmethod
    def tree_unflatten(cls, aux, arrays):
        """JAX pytree protocol: rebuild from :meth:`tree_flatten`'s output, without checks."""
        static, symbols = aux
        obj = object.__new__(cls)
        for name, value in zip(cls._arrays, arrays):
            setattr(obj, name, value)
        for name, value in zip(cls._static, static):
            setattr(obj, name, value)
        if symbols is not None:
            obj.symbols = symbols
        return obj

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node_class(cls)


class Dense(Jacobian):
    """A Jacobian with no structure to exploit, stored as its numerator-layout array.

    Args:
      array: shape ``out_shape + in_shape``.
      in_ndim: how many trailing axes of ``array`` belong to the input.
    """

    kind = "dense"
    _arrays = ("array",)
    _static = ("in_ndim",)

    def __init__(self, array, *, in_ndim: int):
        array = jnp.asarray(array)
        if not 0 <= in_ndim <= array.ndim:
            raise ShapeError(
                f"mcjax.Dense: in_ndim={in_ndim} does not fit an array of shape "
                f"{shape_str(array.shape)}; expected 0 <= in_ndim <= {array.ndim}"
            )
        self.array = array
        self.in_ndim = in_ndim

    @property
    def out_shape(self) -> Shape:
        return tuple(self.array.shape[: self.array.ndim - self.in_ndim])

    @property
    def in_shape(self) -> Shape:
        return tuple(self.array.shape[self.array.ndim - self.in_ndim :])

    def jvp(self, v):
        return jnp.tensordot(self.array, v, axes=self.in_ndim)

    def vjp(self, u):
        return jnp.tensordot(u, self.array, axes=self.array.ndim - self.in_ndim)

    def dense(self):
        return self.array

    def scaled(self, c):
        return Dense(c * self.array, in_ndim=self.in_ndim)


class Diagonal(Jacobian):
    """$\\operatorname{diag}(d)$: the Jacobian of an element-wise operation (§4.2).

    Args:
      diagonal: shape ``s``; the Jacobian maps shape ``s`` to shape ``s`` and
        ``J[i..., i...] = diagonal[i...]``.
    """

    kind = "diagonal"
    _arrays = ("diagonal",)

    def __init__(self, diagonal):
        self.diagonal = jnp.asarray(diagonal)

    @property
    def out_shape(self) -> Shape:
        return tuple(self.diagonal.shape)

    in_shape = out_shape

    def jvp(self, v):
        return self.diagonal * v

    def vjp(self, u):
        return self.diagonal * u

    def dense(self):
        flat = self.diagonal.reshape(-1)
        return jnp.diag(flat).reshape(self.shape)

    def scaled(self, c):
        return Diagonal(c * self.diagonal)


class ScaledIdentity(Jacobian):
    """$c I$: the Jacobian of ``x + y`` (``c = 1``) or ``x * z`` for scalar ``z`` (``c = z``).

    Args:
      scale: a scalar.
      shape: the shape of input and output.
    """

    kind = "scaled identity"
    _arrays = ("scale",)
    _static = ("in_shape",)

    def __init__(self, scale, shape: Sequence[int]):
        self.scale = jnp.asarray(scale)
        self.in_shape = tuple(shape)

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    def jvp(self, v):
        return self.scale * v

    def vjp(self, u):
        return self.scale * u

    def dense(self):
        return self.scale * _eye_tensor(self.in_shape, self.scale.dtype)

    def scaled(self, c):
        return ScaledIdentity(c * self.scale, self.in_shape)


class Fill(Jacobian):
    """Every entry equals one scalar ``value``.

    With ``in_shape=()`` it is the column $c\\,\\mathbf{1}$ of scalar expansion (§4.3); with
    ``out_shape=()`` the row $\\mathbf{1}^\\top$ of sum reduction (§4.4).
    """

    kind = "fill"
    _arrays = ("value",)
    _static = ("out_shape", "in_shape")

    def __init__(self, value, out_shape: Sequence[int], in_shape: Sequence[int]):
        self.value = jnp.asarray(value)
        self.out_shape = tuple(out_shape)
        self.in_shape = tuple(in_shape)

    def jvp(self, v):
        return jnp.broadcast_to(self.value * jnp.sum(v), self.out_shape)

    def vjp(self, u):
        return jnp.broadcast_to(self.value * jnp.sum(u), self.in_shape)

    def dense(self):
        return jnp.broadcast_to(self.value, self.shape)

    def scaled(self, c):
        return Fill(c * self.value, self.out_shape, self.in_shape)


class Broadcast(Jacobian):
    """Copies an input of shape ``s`` across leading ``batch_shape``: $J = c\\,(\\mathbf{1} \\otimes I)$.

    The Jacobian of a batched affine map with respect to its bias: ``out_shape`` is
    ``batch_shape + s`` and ``J[b..., i..., j...] = value * delta(i, j)``.
    """

    kind = "broadcast"
    _arrays = ("value",)
    _static = ("batch_shape", "in_shape")

    def __init__(self, batch_shape: Sequence[int], shape: Sequence[int], value=1.0):
        self.value = jnp.asarray(value)
        self.batch_shape = tuple(batch_shape)
        self.in_shape = tuple(shape)

    @property
    def out_shape(self) -> Shape:
        return self.batch_shape + self.in_shape

    def jvp(self, v):
        return jnp.broadcast_to(self.value * v, self.out_shape)

    def vjp(self, u):
        return self.value * jnp.sum(u, axis=tuple(range(len(self.batch_shape))))

    def dense(self):
        eye = _eye_tensor(self.in_shape, self.value.dtype)
        return jnp.broadcast_to(self.value * eye, self.batch_shape + eye.shape)

    def scaled(self, c):
        return Broadcast(self.batch_shape, self.in_shape, c * self.value)


class Kronecker(Jacobian):
    """$I_m \\otimes x^\\top$: the Jacobian of ``W @ x`` (or ``X @ W.T``) with respect to ``W``.

    Args:
      x: shape ``batch + (n,)``, the input the weights multiply.
      m: the number of rows of ``W``.

    The map takes ``W``-shaped tangents ``(m, n)`` to outputs ``batch + (m,)`` with
    ``J[b..., i, j, k] = delta(i, j) * x[b..., k]``.  The dense form has
    ``prod(batch) * m * m * n`` entries; ``jvp`` and ``vjp`` cost one matrix product.
    """

    kind = "kronecker"
    _arrays = ("x",)
    _static = ("m",)

    def __init__(self, x, m: int):
        self.x = jnp.asarray(x)
        self.m = int(m)

    @property
    def out_shape(self) -> Shape:
        return tuple(self.x.shape[:-1]) + (self.m,)

    @property
    def in_shape(self) -> Shape:
        return (self.m, self.x.shape[-1])

    def jvp(self, v):
        return self.x @ v.T

    def vjp(self, u):
        batch = "abcdefgh"[: self.x.ndim - 1]
        return jnp.einsum(f"{batch}i,{batch}k->ik", u, self.x)

    def dense(self):
        return jnp.einsum("ij,...k->...ijk", jnp.eye(self.m, dtype=self.x.dtype), self.x)

    def scaled(self, c):
        return Kronecker(c * self.x, self.m)


class BlockDiagonal(Jacobian):
    """$I_B \\otimes W$: one matrix applied to every row of a batch.

    The Jacobian of ``X @ W.T`` with respect to ``X`` (shape ``batch + (n,)``):
    ``J[b..., i, c..., k] = delta(b, c) * W[i, k]``.  With ``batch_shape=()`` it is ``W``.
    """

    kind = "block diagonal"
    _arrays = ("block",)
    _static = ("batch_shape",)

    def __init__(self, block, batch_shape: Sequence[int] = ()):
        self.block = jnp.asarray(block)
        self.batch_shape = tuple(batch_shape)

    @property
    def out_shape(self) -> Shape:
        return self.batch_shape + (self.block.shape[0],)

    @property
    def in_shape(self) -> Shape:
        return self.batch_shape + (self.block.shape[1],)

    def jvp(self, v):
        return v @ self.block.T

    def vjp(self, u):
        return u @ self.block

    def dense(self):
        if not self.batch_shape:
            return self.block
        nb = len(self.batch_shape)
        eye = _eye_tensor(self.batch_shape, self.block.dtype)  # batch + batch
        # (b..., c..., i, k) -> (b..., i, c..., k)
        full = eye[..., None, None] * self.block.reshape((1,) * (2 * nb) + self.block.shape)
        perm = (
            tuple(range(nb))
            + (2 * nb,)
            + tuple(range(nb, 2 * nb))
            + (2 * nb + 1,)
        )
        return jnp.transpose(full, perm)

    def scaled(self, c):
        return BlockDiagonal(c * self.block, self.batch_shape)


class Composed(Jacobian):
    """``outer @ inner``: the vector chain rule $J_{f \\circ g} = J_f J_g$ (§4.5.3), kept lazy."""

    kind = "composed"
    _arrays = ("outer", "inner")

    def __init__(self, outer: Jacobian, inner: Jacobian):
        self.outer = outer
        self.inner = inner

    @property
    def out_shape(self) -> Shape:
        return tuple(self.outer.out_shape)

    @property
    def in_shape(self) -> Shape:
        return tuple(self.inner.in_shape)

    def jvp(self, v):
        return self.outer.jvp(self.inner.jvp(v))

    def vjp(self, u):
        return self.inner.vjp(self.outer.vjp(u))

    def dense(self):
        # the outer factor applied to each column of the inner one: its structure is used
        # (a diagonal or a permutation costs O(size) per column, not a dense matrix product)
        columns = self.inner.dense().reshape(tuple(self.inner.out_shape) + (-1,))
        applied = jax.vmap(self.outer.jvp, in_axes=-1, out_axes=-1)(columns)
        return applied.reshape(self.shape)

    def scaled(self, c):
        return Composed(self.outer.scaled(c), self.inner)


class Sum(Jacobian):
    """$\\sum_k J_k$: the total-derivative chain rule adds the paths (§4.5.2)."""

    kind = "sum"
    _arrays = ("terms",)

    def __init__(self, terms: Sequence[Jacobian]):
        self.terms = tuple(terms)

    @property
    def out_shape(self) -> Shape:
        return tuple(self.terms[0].out_shape)

    @property
    def in_shape(self) -> Shape:
        return tuple(self.terms[0].in_shape)

    def jvp(self, v):
        return sum(t.jvp(v) for t in self.terms[1:]) + self.terms[0].jvp(v)

    def vjp(self, u):
        return sum(t.vjp(u) for t in self.terms[1:]) + self.terms[0].vjp(u)

    def dense(self):
        return sum(t.dense() for t in self.terms[1:]) + self.terms[0].dense()

    def scaled(self, c):
        return Sum(tuple(t.scaled(c) for t in self.terms))


# -- the structures mcjax.derive adds: moving entries around, and the general cases ----------
def _dense_by_columns(J: Jacobian) -> jax.Array:
    """``J.dense()`` from ``J.jvp`` applied to every basis vector (one vmapped call)."""
    n = math.prod(J.in_shape)
    basis = jnp.eye(n, dtype=J.dtype).reshape((n,) + tuple(J.in_shape))
    columns = jax.vmap(J.jvp)(basis)  # (n,) + out_shape
    return jnp.moveaxis(columns.reshape((n, -1)), 0, 1).reshape(J.shape)


def _transpose_of(J: Jacobian, u):
    """$u^\\top J$ for a Jacobian that only knows ``jvp``: JAX transposes the linear map."""
    primal = jax.ShapeDtypeStruct(tuple(J.in_shape), J.dtype)
    (out,) = jax.linear_transpose(J.jvp, primal)(u.astype(J.dtype))
    return out


class _Rearrangement(Jacobian):
    """A Jacobian with no arrays: it moves, copies, sums or drops entries.  Scaling wraps it."""

    _static = ("in_shape", "dtype_name")

    @property
    def dtype(self):
        """The dtype of the differentiated argument."""
        return jnp.dtype(self.dtype_name)

    def dense(self):
        return _dense_by_columns(self)

    def scaled(self, c):
        return Composed(ScaledIdentity(c, self.out_shape), self)


class Zero(_Rearrangement):
    """The zero map: the output does not depend on the argument (or only through
    ``stop_gradient``).  ``out_shape + in_shape`` zeros, none stored."""

    kind = "zero"
    _static = ("out_shape", "in_shape", "dtype_name")

    def __init__(self, out_shape: Sequence[int], in_shape: Sequence[int], dtype=jnp.float32):
        self.out_shape, self.in_shape = tuple(out_shape), tuple(in_shape)
        self.dtype_name = jnp.dtype(dtype).name

    def jvp(self, v):
        return jnp.zeros(self.out_shape, jnp.result_type(v))

    def vjp(self, u):
        return jnp.zeros(self.in_shape, jnp.result_type(u))

    def dense(self):
        return jnp.zeros(self.shape, self.dtype)

    def scaled(self, c):
        return self


class Permutation(_Rearrangement):
    """$P$: the axes of the input in another order, ``out = jnp.transpose(v, perm)``.

    The Jacobian of a transpose ($X^\\top$ for a matrix).  Maps shape ``in_shape`` to
    ``tuple(in_shape[p] for p in perm)``.
    """

    kind = "permutation"
    _static = ("perm", "in_shape", "dtype_name")

    def __init__(self, perm: Sequence[int], in_shape: Sequence[int], dtype=jnp.float32):
        self.perm, self.in_shape = tuple(int(p) for p in perm), tuple(in_shape)
        self.dtype_name = jnp.dtype(dtype).name

    @property
    def out_shape(self) -> Shape:
        return tuple(self.in_shape[p] for p in self.perm)

    def jvp(self, v):
        return jnp.transpose(v, self.perm)

    def vjp(self, u):
        inverse = tuple(sorted(range(len(self.perm)), key=self.perm.__getitem__))
        return jnp.transpose(u, inverse)


class Reshape(_Rearrangement):
    """The same entries in another shape (``reshape``, ``squeeze``): an identity matrix."""

    kind = "reshape"
    _static = ("out_shape", "in_shape", "dtype_name")

    def __init__(self, out_shape: Sequence[int], in_shape: Sequence[int], dtype=jnp.float32):
        if math.prod(out_shape) != math.prod(in_shape):
            raise ShapeError(f"mcjax.Reshape: cannot reshape {shape_str(in_shape)} to "
                             f"{shape_str(out_shape)}; expected the same number of entries")
        self.out_shape, self.in_shape = tuple(out_shape), tuple(in_shape)
        self.dtype_name = jnp.dtype(dtype).name

    def jvp(self, v):
        return jnp.reshape(v, self.out_shape)

    def vjp(self, u):
        return jnp.reshape(u, self.in_shape)


class Slice(_Rearrangement):
    """$S$: picks ``v[start:limit:strides]`` (the rows of the identity that indexing keeps).

    The Jacobian of ``x[1:3]`` or ``X[:, 0]`` (before the squeeze).
    """

    kind = "slice"
    _static = ("start", "limit", "strides", "in_shape", "dtype_name")

    def __init__(self, start, limit, strides, in_shape: Sequence[int], dtype=jnp.float32):
        self.start, self.limit = tuple(start), tuple(limit)
        self.strides = tuple(strides) if strides is not None else (1,) * len(self.start)
        self.in_shape, self.dtype_name = tuple(in_shape), jnp.dtype(dtype).name

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

    def vjp(self, u):
        return jax.lax.pad(u, jnp.zeros((), u.dtype), self.padding())


class Embed(_Rearrangement):
    """$S^\\top$: places the input at ``start`` (step ``strides``) in zeros of ``out_shape``.

    The Jacobian of ``jnp.concatenate`` with respect to one part; the transpose of :class:`Slice`.
    """

    kind = "embedding"
    _static = ("start", "strides", "out_shape", "in_shape", "dtype_name")

    def __init__(self, start, strides, out_shape, in_shape, dtype=jnp.float32):
        self.start, self.out_shape, self.in_shape = tuple(start), tuple(out_shape), tuple(in_shape)
        self.strides = tuple(strides) if strides is not None else (1,) * len(self.start)
        self.dtype_name = jnp.dtype(dtype).name

    def _slice(self) -> Slice:
        limit = tuple(lo + (k - 1) * st + 1 if k else lo
                      for lo, st, k in zip(self.start, self.strides, self.in_shape))
        return Slice(self.start, limit, self.strides, self.out_shape, self.dtype_name)

    def jvp(self, v):
        return self._slice().vjp(v)

    def vjp(self, u):
        return self._slice().jvp(u)


class Expand(_Rearrangement):
    """Copies entries along new or length-1 axes: ``lax.broadcast_in_dim(v, out_shape, dims)``.

    The Jacobian of broadcasting (``x + b`` with ``b`` of shape ``(1, n)``); input axis ``i``
    becomes output axis ``dims[i]``.  Scalar expansion (:class:`Fill`) and a batch copy
    (:class:`Broadcast`) are its special cases.
    """

    kind = "expansion"
    _static = ("out_shape", "dims", "in_shape", "dtype_name")

    def __init__(self, out_shape, dims, in_shape, dtype=jnp.float32):
        self.out_shape, self.dims, self.in_shape = tuple(out_shape), tuple(dims), tuple(in_shape)
        self.dtype_name = jnp.dtype(dtype).name

    def jvp(self, v):
        return jax.lax.broadcast_in_dim(v, self.out_shape, self.dims)

    def vjp(self, u):
        new = tuple(a for a in range(len(self.out_shape)) if a not in self.dims)
        stretched = tuple(d for i, d in enumerate(self.dims)
                          if self.in_shape[i] == 1 and self.out_shape[d] != 1)
        summed = jnp.sum(u, axis=tuple(sorted(new + stretched)), keepdims=True)
        return summed.reshape(self.in_shape)


class SumAlong(_Rearrangement):
    """Sums over some axes: ``jnp.sum(v, axes)``.  Over all axes it is $\\mathbf{1}^\\top$
    (:class:`Fill`); over the last axis of a matrix, $I \\otimes \\mathbf{1}^\\top$."""

    kind = "partial sum"
    _static = ("axes", "in_shape", "dtype_name")

    def __init__(self, axes: Sequence[int], in_shape: Sequence[int], dtype=jnp.float32):
        self.axes, self.in_shape = tuple(sorted(axes)), tuple(in_shape)
        self.dtype_name = jnp.dtype(dtype).name

    @property
    def out_shape(self) -> Shape:
        return tuple(n for a, n in enumerate(self.in_shape) if a not in self.axes)

    def jvp(self, v):
        return jnp.sum(v, axis=self.axes)

    def vjp(self, u):
        return jnp.broadcast_to(jnp.expand_dims(u, self.axes), self.in_shape)


class Contraction(Jacobian):
    """The Jacobian of ``lax.dot_general`` with respect to one operand: $J v$ is the same
    contraction with $v$ in that operand's place.

    The general case of matrix products (batched ``einsum``, ``W @ X`` with respect to ``W``);
    the paper's special cases come back as :class:`Kronecker`, :class:`BlockDiagonal` or
    :class:`Dense`.

    Args:
      other: the operand that is held fixed.
      dimension_numbers: ``lax.dot_general``'s.
      side: 0 when the argument is the left operand, 1 when it is the right one.
      in_shape: the argument's shape.
    """

    kind = "contraction"
    _arrays = ("other",)
    _static = ("dimension_numbers", "side", "in_shape", "out_shape")

    def __init__(self, other, dimension_numbers, side: int, in_shape: Sequence[int]):
        self.other = jnp.asarray(other)
        (lc, rc), (lb, rb) = dimension_numbers
        self.dimension_numbers = ((tuple(lc), tuple(rc)), (tuple(lb), tuple(rb)))
        self.side, self.in_shape = int(side), tuple(in_shape)
        lhs, rhs = (self.in_shape, self.other.shape) if side == 0 else (self.other.shape,
                                                                        self.in_shape)
        free = [tuple(n for a, n in enumerate(shape) if a not in contract + batch)
                for shape, contract, batch in ((lhs, lc, lb), (rhs, rc, rb))]
        self.out_shape = tuple(lhs[a] for a in lb) + free[0] + free[1]

    def jvp(self, v):
        operands = (v, self.other) if self.side == 0 else (self.other, v)
        return jax.lax.dot_general(*operands, self.dimension_numbers)

    def vjp(self, u):
        return _transpose_of(self, u)

    def dense(self):
        return _dense_by_columns(self)

    def scaled(self, c):
        return Contraction(c * self.other, self.dimension_numbers, self.side, self.in_shape)


class Opaque(Jacobian):
    """A block mcjax has no structured rule for: ``jax.linearize``'s linear map of one
    primitive, correct but unstructured, marked with the primitive's ``name``.

    Args:
      linear: a ``jax.tree_util.Partial`` taking a tangent of ``in_shape``; its residual
        arrays are this Jacobian's leaves.
      out_index: which of the primitive's outputs (``None`` when it has one).
    """

    kind = "opaque"
    _arrays = ("linear",)
    _static = ("name", "out_index", "out_shape", "in_shape", "dtype_name")

    def __init__(self, linear, name: str, out_shape, in_shape, dtype, out_index=None):
        self.linear, self.name, self.out_index = linear, str(name), out_index
        self.out_shape, self.in_shape = tuple(out_shape), tuple(in_shape)
        self.dtype_name = jnp.dtype(dtype).name

    @property
    def dtype(self):
        """The dtype of the differentiated argument."""
        return jnp.dtype(self.dtype_name)

    def jvp(self, v):
        out = self.linear(v)
        return out if self.out_index is None else out[self.out_index]

    def vjp(self, u):
        return _transpose_of(self, u)

    def dense(self):
        return _dense_by_columns(self)

    def scaled(self, c):
        return Composed(ScaledIdentity(c, self.out_shape), self)


def _compose(outer: Jacobian, inner: Jacobian) -> Jacobian:
    """Multiply two Jacobians, keeping the cheaper structure where one exists."""
    # A scalar-valued diagonal or a scaled identity is a number: scale the other factor.
    if isinstance(outer, ScaledIdentity):
        return inner.scaled(outer.scale)
    if isinstance(inner, ScaledIdentity):
        return outer.scaled(inner.scale)
    if isinstance(outer, Diagonal) and outer.diagonal.ndim == 0:
        return inner.scaled(outer.diagonal)
    if isinstance(inner, Diagonal) and inner.diagonal.ndim == 0:
        return outer.scaled(inner.diagonal)
    if isinstance(outer, Diagonal) and isinstance(inner, Diagonal):
        return Diagonal(outer.diagonal * inner.diagonal)
    if isinstance(outer, Diagonal) and isinstance(inner, Dense):
        d = outer.diagonal.reshape(outer.diagonal.shape + (1,) * inner.in_ndim)
        return Dense(d * inner.array, in_ndim=inner.in_ndim)
    return Composed(outer, inner)


def densify(derivative):
    """The dense numerator-layout value of a derivative.

    Args:
      derivative: a :class:`Jacobian`, an array, or a pytree of either (for instance the
        gradient of a scalar loss with respect to a parameter pytree).

    Returns:
      The same structure with every :class:`Jacobian` replaced by :meth:`Jacobian.dense`.
    """
    return jax.tree_util.tree_map(
        lambda leaf: leaf.dense() if isinstance(leaf, Jacobian) else jnp.asarray(leaf),
        derivative,
        is_leaf=lambda leaf: isinstance(leaf, Jacobian),
    )
