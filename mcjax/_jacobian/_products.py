r"""Matrices: an explicit array, and products with one factor held fixed (the Jacobians of
$W\mathbf{x}$, §5, §8.1, and of ``lax.dot_general`` in general).

- ``mcjax.Dense``: an explicit numerator-layout array (a row $\mathbf{a}^\top$ when the output
  is a scalar: a gradient); a row times any structure is pulled through it (backprop);
- ``mcjax.Kronecker``, $I_m \otimes \mathbf{x}^\top$: $W\mathbf{x}$ (or $XW^\top$) with respect to $W$;
- ``mcjax.BlockDiagonal``, $I_B \otimes W$: one matrix applied to every row of a batch;
- ``mcjax.Contraction``: any ``dot_general`` with respect to one operand, $J v$ the same
  contraction with $v$ in that operand's place.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mcjax._core._conventions import wider
from mcjax._core._errors import ShapeError, shape_str
from mcjax._jacobian import _expr as E
from mcjax._jacobian import _formula as F
from mcjax._jacobian import _lineax as L
from mcjax._jacobian._algebra import (
    Composed,
    Jacobian,
    Shape,
    Sum,
    _eye_tensor,
    as_scalar,
    balanced,
    cast_to,
    dense_by_columns,
    derived,
    dtype_of,
    expr_pull,
    factors_of,
    in_product,
    merges,
    number_of_symbol,
    number_out,
    product_of,
    pull,
    pulls,
    push,
    pushes,
    scale,
    simplifies,
    sym,
    transpose_apply,
)
from mcjax._jacobian._print import ATOM, POSTFIX, PRODUCT, SUM
from mcjax._jacobian._sym import Sym


class Dense(Jacobian):
    """A Jacobian with no structure to exploit, stored as its numerator-layout array.

    Args:
      array: shape ``out_shape + in_shape``.
      in_ndim: how many trailing axes of ``array`` belong to the input.
    """

    array: jax.Array
    in_ndim: int

    kind = "dense"
    holds_scalar = True
    _arrays = ("array",)
    _static = ("in_ndim",)

    def __init__(self, array, *, in_ndim: int, symbols=None):
        array = jnp.asarray(array)
        if not 0 <= in_ndim <= array.ndim:
            raise ShapeError(
                f"mcjax.Dense: in_ndim={in_ndim} does not fit an array of shape "
                f"{shape_str(array.shape)}; expected 0 <= in_ndim <= {array.ndim}")
        self._init(symbols, array=array, in_ndim=int(in_ndim))

    @property
    def out_shape(self) -> Shape:
        return tuple(self.array.shape[: len(self.array.shape) - self.in_ndim])

    @property
    def in_shape(self) -> Shape:
        return tuple(self.array.shape[len(self.array.shape) - self.in_ndim:])

    def jvp(self, v):
        return jnp.tensordot(self.array, v, axes=self.in_ndim)

    def vjp(self, u):
        return jnp.tensordot(u, self.array, axes=self.array.ndim - self.in_ndim)

    def _dense(self):
        return self.array


@L.as_operator.register
def _(J: Dense, lx):
    return lx.PyTreeLinearOperator(J.array, L.structure(J.out_shape, J.array.dtype))


def dense(a: Sym, in_ndim: int, dtype=None) -> Jacobian:
    """The array ``a`` (numerator layout) as a Jacobian; a row $\\mathbf{a}^\\top$ when the
    output is a scalar, a column when the input is."""
    value = jnp.asarray(a.value) if dtype is None else jnp.asarray(a.value, dtype)
    return Dense(value, in_ndim=in_ndim, symbols=(E.reshaped(a.expr, value.shape),))


@scale.register
def _(J: Dense, c):
    return dense(c * sym(J, "array"), J.in_ndim, J.dtype)


@as_scalar.register
def _(J: Dense):
    return sym(J, "array") if J.shape == () else None


@simplifies(Dense, Jacobian)
def _(outer: Dense, inner):
    """A row (the derivative of a scalar) times anything: the row pulled through (backprop)."""
    return row_pulled(sym(outer, "array"), outer, inner) if outer.out_shape == () else None


@simplifies(Jacobian, Dense)
def _(outer, inner: Dense):
    """Anything times a column (the derivative with respect to a scalar): pushed forward."""
    if inner.in_shape != () or inner.out_shape == ():
        return None
    return column_pushed(outer, sym(inner, "array"), inner)


@pulls(Dense)
def _(J: Dense, v):
    a = sym(J, "array")
    value = J.vjp(cast_to(v, J).value)
    if J.in_ndim == 0:  # a column: v^T a = v . a
        if v.expr.op == "num" and v.expr.param == 1.0:
            return Sym(value, E.total(a.expr, tuple(range(len(J.out_shape))), ()))
        return Sym(value, E.dot(v.expr, a.expr))
    return Sym(value, E.vecmat(v.expr, a.expr, J.in_shape))


@pushes(Dense)
def _(J: Dense, v):
    a = sym(J, "array")
    value = J.jvp(cast_to(v, J).value)
    if J.out_shape == ():
        return Sym(value, E.dot(a.expr, v.expr) if len(J.in_shape) == 1 else
                   E.total(E.mul(a.expr, v.expr), tuple(range(len(J.in_shape))), ()))
    return Sym(value, E.matmul(a.expr, v.expr, J.out_shape))


@merges(Dense, Dense)
def _(a: Dense, b: Dense):
    if a.in_ndim != b.in_ndim:
        return None
    return dense(sym(a, "array") + sym(b, "array"), a.in_ndim, dtype_of(a, b))


number_out.register(Dense, number_of_symbol)


@F.write.register
def _(J: Dense, p):
    (a,) = F.symbols_of(J)
    if J.out_shape == () and J.in_ndim == 1:
        return p.row(a), PRODUCT
    return p.write(a)


@in_product.register
def _(J: Dense, p):
    r"""In a chain, a gradient of a matrix $G$ is the row $\operatorname{vec}(G)^\top$, and
    a product written as a column is parenthesized."""
    (a,) = F.symbols_of(J)
    if J.out_shape == () and J.in_ndim >= 2 and E.core(a).op != "pull":
        head = r"\operatorname{vec}" if p.latex else "vec"
        return p._transposed(f"{head}({p(a)})"), POSTFIX
    text, prec = F.write(J, p)
    if J.in_shape == () and prec <= PRODUCT:
        return f"({text})", ATOM
    return text, prec


# -- a gradient is written as one row -------------------------------------------------------
_UNWRITTEN = frozenset({"pull", "push", "scatter", "opaque"})


def as_row(J: Jacobian) -> Jacobian | None:
    r"""The derivative of a scalar as the one row $\mathbf{g}^\top$ a person writes, where
    pulling 1 back through ``J``'s factors writes every step as a value: ``-1 S[1] (I - 1
    softmax(z)ᵀ)`` is ``(softmax(z) - e_1)ᵀ``.  None where some step has no such form, or
    ``J`` is not a derived gradient."""
    if J.out_shape != () or not derived(J) or isinstance(J, Dense):
        return None
    try:
        row = pull(Sym(jnp.ones((), J.dtype), E.num(1.0)), J)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None
    if any(n.op in _UNWRITTEN for n in _distinct_nodes(row.expr)):
        return None
    return dense(row, len(J.in_shape), J.dtype)


def _distinct_nodes(e: E.Expr):
    stack, seen = [e], set()
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            yield node
            stack.extend(node.args)


@F.for_printing.register
def _(J: Composed):
    return as_row(J) or product_of(balanced([F.for_printing(f) for f in factors_of(J)]))


@F.for_printing.register
def _(J: Sum):
    return as_row(J) or Sum(tuple(F.for_printing(t) for t in J.terms))


def row_pulled(row: Sym, outer: Jacobian, inner: Jacobian) -> Jacobian:
    r"""$\mathbf{v}^\top J$ as a row: the product of a row ``outer`` and ``inner``."""
    pulled = pull(row, inner)
    # the precision of both; complex where the row pulled through a complex value is
    # (``imag``'s transpose), never its imaginary part cast away
    return dense(pulled, len(inner.in_shape), wider(pulled.value, dtype_of(outer, inner)))


def column_pushed(outer: Jacobian, column: Sym, inner: Jacobian) -> Jacobian:
    r"""$J\mathbf{v}$ as a column: the product of ``outer`` and a column ``inner``."""
    return dense(push(outer, column), 0, dtype_of(outer, inner))


class Kronecker(Jacobian):
    """$I_m \\otimes x^\\top$: the Jacobian of ``W @ x`` (or ``X @ W.T``) with respect to ``W``.

    Args:
      x: shape ``batch + (n,)``, the input the weights multiply.
      m: the number of rows of ``W``.

    The map takes ``W``-shaped tangents ``(m, n)`` to outputs ``batch + (m,)`` with
    ``J[b..., i, j, k] = delta(i, j) * x[b..., k]``.  The dense form has
    ``prod(batch) * m * m * n`` entries; ``jvp`` and ``vjp`` cost one matrix product.
    """

    x: jax.Array
    m: int

    kind = "kronecker"
    placeholder = "x"
    _arrays = ("x",)
    _static = ("m",)

    def __init__(self, x, m: int, *, symbols=None):
        self._init(symbols, x=jnp.asarray(x), m=int(m))

    @property
    def out_shape(self) -> Shape:
        return tuple(self.x.shape[:-1]) + (self.m,)

    @property
    def in_shape(self) -> Shape:
        return (self.m, self.x.shape[-1])

    def jvp(self, v):
        return self.x @ v.T

    def leading_batch(self) -> int:  # (I_m ⊗ xᵀ) for one x: m rows, one per weight row
        return 1 if self.x.ndim == 1 else 0

    def vjp(self, u):
        batch = "abcdefgh"[: self.x.ndim - 1]
        return jnp.einsum(f"{batch}i,{batch}k->ik", u, self.x)

    def _dense(self):
        return jnp.einsum("ij,...k->...ijk", jnp.eye(self.m, dtype=self.x.dtype), self.x)


def kronecker(x: Sym, m: int) -> Jacobian:
    """$I_m \\otimes \\mathbf{x}^\\top$."""
    return Kronecker(x.value, m, symbols=(x.expr,))


@pulls(Kronecker)
def _(J: Kronecker, v):
    x = sym(J, "x")
    value = J.vjp(cast_to(v, J).value)
    if x.expr.shape and len(x.expr.shape) == 1:
        return Sym(value, E.outer(v.expr, x.expr, J.in_shape))  # v x^T
    return Sym(value, E.matmul(E.transpose(v.expr), x.expr, J.in_shape))  # V^T X


@F.write.register
def _(J: Kronecker, p):
    (x,) = F.symbols_of(J)
    return f"{F.identity(p, str(J.m))}{F.kron(p)}{p.row(x)}", SUM


class BlockDiagonal(Jacobian):
    """$I_B \\otimes W$: one matrix applied to every row of a batch.

    The Jacobian of ``X @ W.T`` with respect to ``X`` (shape ``batch + (n,)``):
    ``J[b..., i, c..., k] = delta(b, c) * W[i, k]``.  With ``batch_shape=()`` it is ``W``.
    """

    block: jax.Array
    batch_shape: Shape

    kind = "block diagonal"
    placeholder = "W"
    _arrays = ("block",)
    _static = ("batch_shape",)

    def __init__(self, block, batch_shape: Sequence[int] = (), *, symbols=None):
        self._init(symbols, block=jnp.asarray(block), batch_shape=tuple(batch_shape))

    @property
    def out_shape(self) -> Shape:
        return self.batch_shape + (self.block.shape[0],)

    @property
    def in_shape(self) -> Shape:
        return self.batch_shape + (self.block.shape[1],)

    def jvp(self, v):
        return v @ self.block.T

    def leading_batch(self) -> int:
        return len(self.batch_shape)

    def vjp(self, u):
        return u @ self.block

    def _dense(self):
        if not self.batch_shape:
            return self.block
        nb = len(self.batch_shape)
        eye = _eye_tensor(self.batch_shape, self.block.dtype)  # batch + batch
        # (b..., c..., i, k) -> (b..., i, c..., k)
        full = eye[..., None, None] * self.block.reshape((1,) * (2 * nb) + self.block.shape)
        perm = tuple(range(nb)) + (2 * nb,) + tuple(range(nb, 2 * nb)) + (2 * nb + 1,)
        return jnp.transpose(full, perm)


@L.as_operator.register
def _(J: BlockDiagonal, lx):
    if J.batch_shape:  # I_B ⊗ W: applied row by row, W never repeated
        return lx.FunctionLinearOperator(J.jvp, L.structure(J.in_shape, J.dtype))
    return lx.MatrixLinearOperator(J.block)


def block_diagonal(W: Sym, batch_shape) -> Jacobian:
    """$I_B \\otimes W$ (``W`` itself without a batch)."""
    return BlockDiagonal(W.value, batch_shape, symbols=(W.expr,))


@pulls(BlockDiagonal)
def _(J: BlockDiagonal, v):
    W = sym(J, "block")
    value = J.vjp(cast_to(v, J).value)
    if not J.batch_shape:
        return Sym(value, E.vecmat(v.expr, W.expr, J.in_shape))  # W^T v, the row v^T W
    return Sym(value, E.matmul(v.expr, W.expr, J.in_shape))  # V W


@pushes(BlockDiagonal)
def _(J: BlockDiagonal, v):
    W = sym(J, "block")
    return Sym(J.jvp(cast_to(v, J).value), E.matmul(W.expr, v.expr, J.out_shape))


@F.write.register
def _(J: BlockDiagonal, p):
    (W,) = F.symbols_of(J)
    if not J.batch_shape:
        return p.write(W)
    size = (r"\times" if p.latex else "×").join(map(str, J.batch_shape))
    return f"{F.identity(p, size)}{F.kron(p)}{p(W, PRODUCT)}", SUM


class Contraction(Jacobian):
    """The Jacobian of ``lax.dot_general`` with respect to one operand: $J v$ is the same
    contraction with $v$ in that operand's place.

    The general case of matrix products (batched ``einsum``, ``W @ X`` with respect to ``W``);
    the paper's special cases come back as ``mcjax.Kronecker``, ``mcjax.BlockDiagonal`` or
    ``mcjax.Dense``.

    Args:
      other: the operand that is held fixed.
      dimension_numbers: ``lax.dot_general``'s.
      side: 0 when the argument is the left operand, 1 when it is the right one.
      in_shape: the argument's shape.
    """

    other: jax.Array
    dimension_numbers: tuple
    side: int
    in_shape: Shape
    out_shape: Shape

    kind = "contraction"
    placeholder = "B"
    _arrays = ("other",)
    _static = ("dimension_numbers", "side", "in_shape", "out_shape")

    def __init__(self, other, dimension_numbers, side: int, in_shape: Sequence[int], *,
                 symbols=None):
        other = jnp.asarray(other)
        (lc, rc), (lb, rb) = dimension_numbers
        numbers = ((tuple(lc), tuple(rc)), (tuple(lb), tuple(rb)))
        in_shape = tuple(in_shape)
        lhs, rhs = (in_shape, other.shape) if side == 0 else (other.shape, in_shape)
        free = [tuple(n for a, n in enumerate(shape) if a not in contract + batch)
                for shape, contract, batch in ((lhs, lc, lb), (rhs, rc, rb))]
        out_shape = tuple(lhs[a] for a in lb) + free[0] + free[1]
        self._init(symbols, other=other, dimension_numbers=numbers, side=int(side),
                   in_shape=in_shape, out_shape=out_shape)

    def jvp(self, v):
        operands = (v, self.other) if self.side == 0 else (self.other, v)
        return jax.lax.dot_general(*operands, self.dimension_numbers)

    def leading_batch(self) -> int:
        """The output is ``dot_general``'s: batch axes, the left operand's free axes, the
        right one's.  The argument's leading batch axes, then its leading free axes where
        they come next (it is the left operand, or the left one has no free axes), keep
        their place and index."""
        (lc, rc), (lb, rb) = self.dimension_numbers
        contract, batch = (lc, lb) if self.side == 0 else (rc, rb)
        t = 0
        while t < len(batch) and batch[t] == t:
            t += 1
        if t < len(batch) or (self.side == 1 and self.other.ndim > len(lc) + len(lb)):
            return t
        while t < len(self.in_shape) and t not in contract:
            t += 1
        return t

    def vjp(self, u):
        return transpose_apply(self, u)

    def _dense(self):
        return dense_by_columns(self)


def contraction(other: Sym, dimension_numbers, side: int, in_shape) -> Jacobian:
    return Contraction(other.value, dimension_numbers, side, in_shape, symbols=(other.expr,))


@F.write.register
def _(J: Contraction, p):
    (other,) = F.symbols_of(J)
    dot = r"\,\cdot\," if p.latex else "·"
    if J.side == 0:
        return f"({dot}{p._space()}{p(other, PRODUCT + 1)})", ATOM
    return f"({p(other, PRODUCT)}{p._space()}{dot})", ATOM


@F.for_printing.register
def _(J: Contraction):
    """A contraction to a number is a gradient: the held operand, its axes in the argument's
    order (``tensordot(A, W, 2)`` with respect to ``A`` is ``W``; paired the other way, ``Wᵀ``)."""
    (lc, rc), (lb, _) = J.dimension_numbers
    if J.out_shape != () or lb:
        return J
    mine, theirs = (lc, rc) if J.side == 0 else (rc, lc)
    (other,) = F.symbols_of(J)
    perm = tuple(theirs[list(mine).index(a)] for a in range(len(J.in_shape)))
    written = other if perm == tuple(range(len(perm))) else E.transpose(other, perm)
    return Dense(jnp.transpose(J.other, perm), in_ndim=len(J.in_shape),
                 symbols=(E.reshaped(written, J.in_shape),))


@pulls(Contraction)
def _(J: Contraction, v):
    """$V^\\top$ pulled through a matrix product: for $Y = A B$, $\\bar A = \\bar Y B^\\top$ and
    $\\bar B = A^\\top \\bar Y$ (either operand possibly transposed in the program)."""
    value = J.vjp(cast_to(v, J).value)
    (lc, rc), (lb, _) = J.dimension_numbers
    (other,) = F.symbols_of(J)
    if not lb and len(lc) == 1 and len(J.in_shape) == 2 and len(J.other.shape) == 1:
        # W x or x W with respect to W: the outer product of v and x, x on the contracted axis
        mine = lc[0] if J.side == 0 else rc[0]
        pair = (other, v.expr) if mine == 0 else (v.expr, other)
        return Sym(value, E.outer(*pair, J.in_shape))
    if lb or len(lc) != 1 or len(J.in_shape) != 2 or len(J.other.shape) != 2:
        return Sym(value, expr_pull(v.expr, J))
    # the program's product as A B: A's contracted axis last, B's first
    a_flipped, b_flipped = lc[0] == 0, rc[0] == 1
    vbar = E.reshaped(v.expr, J.out_shape)
    if J.side == 0:  # the argument is A: Ā = V Bᵀ
        b = E.transpose(other) if b_flipped else other
        grad = E.matmul(vbar, E.transpose(b), (J.in_shape[1 - lc[0]], J.in_shape[lc[0]]))
        grad = E.transpose(grad) if a_flipped else grad
    else:  # the argument is B: B̄ = Aᵀ V
        a = E.transpose(other) if a_flipped else other
        grad = E.matmul(E.transpose(a), vbar, (J.in_shape[rc[0]], J.in_shape[1 - rc[0]]))
        grad = E.transpose(grad) if b_flipped else grad
    return Sym(value, E.reshaped(grad, J.in_shape))
