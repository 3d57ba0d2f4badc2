r"""Diagonals and constant blocks: element-wise operators (§4.2), scalar expansion (§4.3), sum
reduction (§4.4) and the bias of a batched affine map.

- ``mcjax.Diagonal``, $\operatorname{diag}(\mathbf{d})$: the Jacobian of an element-wise operation;
- ``mcjax.Fill``, every entry one number $c$: the column $c\mathbf{1}$ of scalar expansion, the
  row $\mathbf{1}^\top$ of a sum;
- ``mcjax.Broadcast``, $c(\mathbf{1} \otimes I)$: one vector copied across a batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from mcjax._jacobian import _expr as E
from mcjax._jacobian import _formula as F
from mcjax._jacobian import _lineax as L
from mcjax._jacobian._algebra import (
    Jacobian,
    ScaledIdentity,
    Shape,
    _eye_tensor,
    as_scalar,
    cast_to,
    dtype_of,
    merges,
    number_of_symbol,
    number_out,
    pulls,
    pushes,
    scale,
    scaled_identity,
    simplifies,
    sym,
)
from mcjax._jacobian._print import ATOM
from mcjax._jacobian._products import Dense, column_pushed, dense, row_pulled
from mcjax._jacobian._sym import Sym, lift


class Diagonal(Jacobian):
    """$\\operatorname{diag}(d)$: the Jacobian of an element-wise operation (§4.2).

    Args:
      diagonal: shape ``s``; the Jacobian maps shape ``s`` to shape ``s`` and
        ``J[i..., i...] = diagonal[i...]``.
    """

    diagonal: jax.Array

    kind = "diagonal"
    placeholder = "d"
    holds_scalar = True
    _arrays = ("diagonal",)

    def __init__(self, diagonal, *, symbols=None):
        self._init(symbols, diagonal=jnp.asarray(diagonal))

    @property
    def out_shape(self) -> Shape:
        return tuple(self.diagonal.shape)

    @property
    def in_shape(self) -> Shape:
        return tuple(self.diagonal.shape)

    def jvp(self, v):
        return self.diagonal * v

    def leading_batch(self) -> int:
        return self.diagonal.ndim

    def vjp(self, u):
        return self.diagonal * u

    def _dense(self):
        return jnp.diag(self.diagonal.reshape(-1)).reshape(self.shape)


@L.as_operator.register
def _(J: Diagonal, lx):
    return lx.DiagonalLinearOperator(J.diagonal)


@L.established.register
def _(J: Diagonal):
    return frozenset({"diagonal", "symmetric"}) | L.sign_tags(J)


def diagonal(d: Sym, shape, dtype) -> Jacobian:
    """$\\operatorname{diag}(d)$ on arrays of ``shape``; a scalar ``d`` gives $d I$."""
    d = lift(d)
    if jnp.ndim(d.value) == 0 and tuple(shape) != ():
        return scaled_identity(d, shape, dtype)
    value = jnp.broadcast_to(jnp.asarray(d.value, dtype), shape)
    return Diagonal(value, symbols=(E.reshaped(d.expr, shape),))


@scale.register
def _(J: Diagonal, c):
    return diagonal(c * sym(J, "diagonal"), J.out_shape, J.dtype)


@as_scalar.register
def _(J: Diagonal):
    if J.diagonal.size != 1:
        return None
    d = sym(J, "diagonal")  # a diagonal of one entry: c I_1
    return Sym(d.value.reshape(()), E.reshaped(d.expr, ()))


@pulls(Diagonal)
def _(J: Diagonal, v):
    return v * sym(J, "diagonal")


@pushes(Diagonal)
def _(J: Diagonal, v):
    return sym(J, "diagonal") * v


@simplifies(Diagonal, Diagonal)
def _(outer, inner):
    d = sym(outer, "diagonal") * sym(inner, "diagonal")
    return diagonal(d, outer.out_shape, dtype_of(outer, inner))


@simplifies(Diagonal, Dense)
def _(outer: Diagonal, inner: Dense):
    """$\\operatorname{diag}(d) A$: the rows of ``A`` scaled, still one array (a hand-built
    rule's ``diag(σ'(z)) @ Dense(x)``), unless ``A`` carries a formula to keep apart."""
    if inner.symbols is not None or outer.symbols is not None:
        return None
    d = outer.diagonal.reshape(outer.diagonal.shape + (1,) * inner.in_ndim)
    return Dense(d * inner.array, in_ndim=inner.in_ndim)


def _as_diagonal(J: Jacobian) -> Sym:
    return sym(J, "diagonal" if isinstance(J, Diagonal) else "scale")


for _a, _b in ((Diagonal, Diagonal), (Diagonal, ScaledIdentity), (ScaledIdentity, ScaledIdentity)):
    merges(_a, _b)(lambda a, b: diagonal(_as_diagonal(a) + _as_diagonal(b), a.out_shape,
                                         dtype_of(a, b)))


@F.write.register
def _(J: Diagonal, p):
    (d,) = F.symbols_of(J)
    if J.diagonal.ndim == 0:
        return p.write(d)
    head = r"\operatorname{diag}" if p.latex else "diag"
    return f"{head}({p(d)})", ATOM


class Fill(Jacobian):
    """Every entry equals one scalar ``value``.

    With ``in_shape=()`` it is the column $c\\,\\mathbf{1}$ of scalar expansion (§4.3); with
    ``out_shape=()`` the row $\\mathbf{1}^\\top$ of sum reduction (§4.4).
    """

    value: jax.Array
    out_shape: Shape
    in_shape: Shape

    kind = "fill"
    placeholder = "c"
    holds_scalar = True
    _arrays = ("value",)
    _static = ("out_shape", "in_shape")

    def __init__(self, value, out_shape: Sequence[int], in_shape: Sequence[int], *,
                 symbols=None):
        self._init(symbols, value=jnp.asarray(value), out_shape=tuple(out_shape),
                   in_shape=tuple(in_shape))

    def jvp(self, v):
        return jnp.broadcast_to(self.value * jnp.sum(v), self.out_shape)

    def vjp(self, u):
        return jnp.broadcast_to(self.value * jnp.sum(u), self.in_shape)

    def _dense(self):
        return jnp.broadcast_to(self.value, self.shape)


@L.established.register
def _(J: Fill):
    """$c\\,\\mathbf{1}\\mathbf{1}^\\top$ on one shape: symmetric, of the sign of $c$."""
    return frozenset({"symmetric"}) | L.sign_tags(J)


def fill(c: Sym, out_shape, in_shape, dtype) -> Jacobian:
    """Every entry ``c``: the column $c\\mathbf{1}$, the row $c\\mathbf{1}^\\top$."""
    c = lift(c)
    return Fill(jnp.asarray(c.value, dtype), out_shape, in_shape, symbols=(c.expr,))


def ones_like_fill(J: Jacobian, factor, out_shape, in_shape, *others: Jacobian) -> Jacobian:
    """``J``'s number times ``factor`` on other shapes: moving the entries of $c\\,\\mathbf{1}
    \\mathbf{1}^\\top$ changes none, copying or summing them multiplies by a count."""
    c = sym(J, "value")
    return fill(c * factor if factor != 1 else c, out_shape, in_shape, dtype_of(J, *others))


@scale.register
def _(J: Fill, c):
    return fill(c * sym(J, "value"), J.out_shape, J.in_shape, J.dtype)


@as_scalar.register
def _(J: Fill):
    return sym(J, "value") if J.out_shape == () and J.in_shape == () else None


@simplifies(Fill, Jacobian)
def _(outer: Fill, inner):
    """The row $c\\mathbf{1}^\\top$ (the derivative of a sum) pulled through anything."""
    if outer.out_shape != ():
        return None
    c = sym(outer, "value")
    row = Sym(jnp.broadcast_to(c.value, outer.in_shape), E.reshaped(c.expr, outer.in_shape))
    return row_pulled(row, outer, inner)


@simplifies(Jacobian, Fill)
def _(outer, inner: Fill):
    """Anything times the column $c\\mathbf{1}$ (scalar expansion): pushed forward."""
    if inner.in_shape != () or inner.out_shape == ():
        return None
    c = sym(inner, "value")
    column = Sym(jnp.broadcast_to(c.value, inner.out_shape), E.reshaped(c.expr, inner.out_shape))
    return column_pushed(outer, column, inner)


@pulls(Fill)
def _(J: Fill, v):
    total = Sym(jnp.sum(v.value), E.total(v.expr, tuple(range(len(v.shape))), ()))
    s = sym(J, "value") * total
    return Sym(jnp.broadcast_to(s.value, J.in_shape), E.reshaped(s.expr, J.in_shape))


@pushes(Fill)
def _(J: Fill, v):
    s = sym(J, "value") * Sym(jnp.sum(v.value), E.total(v.expr, tuple(range(len(v.shape))), ()))
    return Sym(jnp.broadcast_to(s.value, J.out_shape), E.reshaped(s.expr, J.out_shape))


@simplifies(Fill, Fill)
def _(outer, inner):
    count = math.prod(outer.in_shape)
    c = sym(outer, "value") * sym(inner, "value") * count
    return fill(c, outer.out_shape, inner.in_shape, dtype_of(outer, inner))


@merges(Fill, Fill)
def _(a, b):
    return fill(sym(a, "value") + sym(b, "value"), a.out_shape, a.in_shape, dtype_of(a, b))


@merges(Dense, Fill)
def _(x: Dense, y: Fill):
    if x.in_shape != ():  # two columns add into one
        return None
    return dense(sym(x, "array") + sym(y, "value"), 0, dtype_of(x, y))


number_out.register(Fill, number_of_symbol)


@F.write.register
def _(J: Fill, p):
    (c,) = F.symbols_of(J)
    if J.out_shape == ():
        body = p._transposed(F.ones(p))
    elif J.in_shape == () or len(J.in_shape) == sum(J.in_shape):
        body = F.ones(p)
    else:
        body = F.ones(p) + (r"\,\mathbf{1}^\top" if p.latex else " 1ᵀ")
    return F.scaled(c, body, p, ATOM)


class Broadcast(Jacobian):
    """Copies an input of shape ``s`` across leading ``batch_shape``: $J = c\\,(\\mathbf{1} \\otimes I)$.

    The Jacobian of a batched affine map with respect to its bias: ``out_shape`` is
    ``batch_shape + s`` and ``J[b..., i..., j...] = value * delta(i, j)``.
    """

    value: jax.Array
    batch_shape: Shape
    in_shape: Shape

    kind = "broadcast"
    placeholder = "c"
    _arrays = ("value",)
    _static = ("batch_shape", "in_shape")

    def __init__(self, batch_shape: Sequence[int], shape: Sequence[int], value: Any = 1.0, *,
                 symbols=None):
        self._init(symbols, value=jnp.asarray(value), batch_shape=tuple(batch_shape),
                   in_shape=tuple(shape))

    @property
    def out_shape(self) -> Shape:
        return self.batch_shape + self.in_shape

    def jvp(self, v):
        return jnp.broadcast_to(self.value * v, self.out_shape)

    def vjp(self, u):
        return self.value * jnp.sum(u, axis=tuple(range(len(self.batch_shape))))

    def _dense(self):
        eye = _eye_tensor(self.in_shape, self.value.dtype)
        return jnp.broadcast_to(self.value * eye, self.batch_shape + eye.shape)


@pulls(Broadcast)
def _(J: Broadcast, v):
    axes = tuple(range(len(J.batch_shape)))
    return Sym(J.vjp(cast_to(v, J).value),
               E.total(v.expr, axes, J.in_shape))


@pushes(Broadcast)
def _(J: Broadcast, v):
    return Sym(J.jvp(cast_to(v, J).value),
               E.reshaped(v.expr, J.out_shape))


@F.write.register
def _(J: Broadcast, p):
    (c,) = F.symbols_of(J)
    body = r"(\mathbf{1} \otimes I)" if p.latex else "(1 ⊗ I)"
    return F.scaled(c, body, p, ATOM)
