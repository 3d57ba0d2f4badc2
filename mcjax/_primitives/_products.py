r"""``dot_general``: dot products, matrix-vector and matrix-matrix products (Parr & Howard §5, §8.1).

The derivative of a product with respect to one factor is the product with the other factor
held fixed.  Where that is one of the paper's structures it is returned as such:

- $\mathbf{w}\cdot\mathbf{x}$ with respect to $\mathbf{w}$: the row $\mathbf{x}^\top$ (§4.4);
- $W\mathbf{x}$ with respect to $\mathbf{x}$: $W$; for a batch $X W^\top$: $I_B \otimes W$;
- $W\mathbf{x}$ (or $X W^\top$) with respect to $W$: $I_m \otimes \mathbf{x}^\top$ (§5);
- $X\mathbf{w}$ with respect to $X$: $I_B \otimes \mathbf{w}^\top$.

A factor that reaches the product through a transpose (``x @ W.T`` traces as ``transpose`` then
``dot_general``) is differentiated through it: the derivative is taken with respect to ``W``
itself.  Any other contraction (batched, several contracted axes) is a
``mcjax.Contraction``: structured, never densified.
"""

from __future__ import annotations

from mcjax._jacobian import _build as B
from mcjax._jacobian import _expr as E
from mcjax._jacobian._sym import Sym
from mcjax._primitives._linear import linear
from mcjax._primitives._table import Eqn, Operand, Slips, register


def _t(op: Operand) -> Sym:
    """The transpose of a matrix operand, reading through a transpose that produced it."""
    if op.transposed is not None and op.transposed[1] == (1, 0):
        return op.transposed[0].sym
    return Sym(op.value.T, E.transpose(op.expr))


def paper_structure(x_shape, cx: int, other: Operand, co: int, side: int):
    """The Jacobian of ``dot_general`` with respect to the operand of shape ``x_shape``
    (contracted on axis ``cx``, no batch axes), if it is one of the paper's; else None."""
    nx, no = len(x_shape), len(other.shape)
    if nx == 1 and no == 1:  # w . x
        return B.dense(other.sym, 1)
    if nx == 1 and no == 2:  # W x, or x^T W
        return B.dense(other.sym if co == 1 else _t(other), 1)
    if nx == 2 and no == 1 and cx == 1:  # W x with respect to W (or X w w.r.t. X)
        return B.kronecker(other.sym, x_shape[0])
    if nx == 2 and no == 2 and cx == 1:
        if side == 1 and co == 1:  # X W^T with respect to W
            return B.kronecker(other.sym, x_shape[0])
        if side == 0:  # X W^T (or X M) with respect to X
            return B.block_diagonal(other.sym if co == 1 else _t(other), x_shape[:1])
    return None


def _dot_general(e: Eqn) -> dict:
    (lc, rc), (lb, rb) = e.params["dimension_numbers"]
    out = {}
    for side in e.active:
        x, other = e.ins[side], e.ins[1 - side]
        cx, co = (lc, rc) if side == 0 else (rc, lc)
        J = None
        if len(cx) == 1 and not lb:
            J = paper_structure(x.shape, cx[0], other, co[0], side)
            source = x.transposed
            if J is None and source is not None and source[1] == (1, 0) and len(x.shape) == 2:
                J = paper_structure(source[0].shape, 1 - cx[0], other, co[0], side)
                if J is not None:  # differentiate through the transpose: with respect to W
                    out["source", side] = J
                    continue
        if J is None:
            J = B.contraction(other.sym, ((lc, rc), (lb, rb)), side, x.shape)
        out[side] = J
    return out


def product_expr(a: tuple[E.Expr, E.Expr], shape, params) -> E.Expr:
    """``w·x``, ``W x``, ``x Wᵀ``, ``A B``: the product as a person writes it."""
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    lhs, rhs = a
    nl, nr = len(lhs.shape), len(rhs.shape)
    contracted = (tuple(lc), tuple(rc))
    if lb or rb:
        nb = len(lb)
        if tuple(lb) == tuple(range(nb)) == tuple(rb) and contracted == ((nl - 1,), (nb,)):
            return E.matmul(lhs, rhs, shape)  # a batch of matrix products
        return E.call("dot_general", lhs, rhs, shape=shape)
    if nl == nr == 1 and contracted == ((0,), (0,)):
        return E.dot(lhs, rhs)
    if nl == 2 and contracted[0] == (1,) and nr in (1, 2) and contracted[1] == (0,):
        return E.matmul(lhs, rhs, shape)
    if nl == 1 and nr == 2 and contracted == ((0,), (0,)):
        return E.matmul(E.transpose(rhs), lhs, shape)  # x^T M is M^T x
    if nl == 1 and nr == 2 and contracted == ((0,), (1,)):
        return E.matmul(rhs, lhs, shape)
    if nl == 2 and nr == 2 and contracted == ((1,), (1,)):
        return E.matmul(lhs, E.transpose(rhs), shape)
    if nl == 2 and nr == 2 and contracted == ((0,), (0,)):
        return E.matmul(E.transpose(lhs), rhs, shape)
    if nl > 2 and nr == 2 and contracted == ((nl - 1,), (0,)):
        return E.matmul(lhs, rhs, shape)
    return E.call("dot_general", lhs, rhs, shape=shape)


register("dot_general", "products", jacobian=_dot_general, expr=product_expr, hint="z",
         rounding="bilinear",
         slips=Slips(terms=("matrix product", ("the left operand", "the right operand")),
                     transposes=True))


register("conv_general_dilated", "products", jacobian=linear("conv"), rounding="bilinear",
         expr=lambda a, s, p: E.call("conv", *a, shape=s),
         slips=Slips(terms=("convolution", ("the input", "the kernel")), window=True))
register("ragged_dot_general", "products", jacobian=linear("ragged_dot"), rounding="bilinear")
