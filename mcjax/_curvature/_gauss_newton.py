r"""The Gauss-Newton matrix $J^\top H_L J$, held as its two factors.

$J$ is the model's structured Jacobian (a ``mcjax.Jacobian`` per parameter leaf: for a dense
layer $I \otimes h^\top$, which holds the activations $h$ only) and $H_L$ the loss's
``Curvature`` on the output.  A product with a vector is $J^\top (H_L (J v))$ through the
structures, at the cost of the model's own forward and backward products; ``dense``,
``solve``, ``diagonal`` and ``slogdet`` go through the matrix form ``as_matrix_form()``: a
Gram form where $H_L$ is diagonal, else $0 + J^\top H_L J$ as a diagonal plus low rank of rank
$m$ (the output's size) where $m < n$, else dense.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mcjax._curvature import _structures as S
from mcjax._curvature._operator import (
    Curvature,
    describe,
    diagonal,
    mv,
    shape_text,
    slogdet,
    solve,
)
from mcjax._curvature._operator import dense as dense_of


class GaussNewton(Curvature):
    """$J^\\top H_L J$: the Gauss-Newton matrix of ``loss(f(params))`` (``mcjax.gauss_newton``).

    Args:
      J: one ``mcjax.Jacobian`` per parameter leaf (output shape ``z.shape``, input the
        leaf's shape), in ``jax.tree_util`` leaf order.
      HL: the loss's Hessian with respect to the output, a ``Curvature`` of size $m$.
    """

    kind = "gauss-newton"
    template = "Jᵀ H_L J"
    _arrays = ("J", "HL")
    J: tuple
    HL: Curvature

    def __init__(self, J, HL: Curvature):
        self._init(J=tuple(J), HL=HL)

    @property
    def size(self) -> int:
        return sum(math.prod(j.in_shape) for j in self.J)

    @property
    def dtype(self):
        return self.HL.dtype

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The model's output shape."""
        return tuple(self.J[0].out_shape)

    def jacobian_matrix(self) -> jax.Array:
        """$J$ as a dense ``(m, n)`` matrix."""
        m = math.prod(self.out_shape)
        return jnp.concatenate([j.dense().reshape(m, -1) for j in self.J], axis=1)

    def as_matrix_form(self) -> Curvature:
        """$G$ as a ``Gram``, ``DiagonalPlusLowRank`` or ``Dense`` operator (holding $J$
        dense)."""
        Jm = self.jacobian_matrix().astype(self.dtype)
        m, n = Jm.shape
        if isinstance(self.HL, (S.Diagonal, S.ScaledIdentity)):
            return S.Gram(Jm, self.HL.diagonal())
        if m < n:
            HL = dense_of(self.HL)
            return S.DiagonalPlusLowRank(jnp.zeros(n, Jm.dtype), Jm.T, (HL + HL.T) / 2)
        # H_L applied to J's n columns (through its structure: never an m x m matrix)
        HJ = jax.vmap(lambda column: mv(self.HL, column), in_axes=1, out_axes=1)(Jm)
        G = Jm.T @ HJ
        return S.Dense((G + G.T) / 2)


@mv.register
def _(op: GaussNewton, v):
    pieces, at = [], 0
    for j in op.J:
        size = math.prod(j.in_shape)
        pieces.append(v[at: at + size].reshape(j.in_shape))
        at += size
    Jv = op.J[0].jvp(pieces[0])
    for j, p in zip(op.J[1:], pieces[1:]):
        Jv = Jv + j.jvp(p)
    u = mv(op.HL, Jv.reshape(-1).astype(op.HL.dtype)).reshape(op.out_shape)
    return jnp.concatenate([j.vjp(u).reshape(-1) for j in op.J]).astype(op.dtype)


@dense_of.register
def _(op: GaussNewton):
    return dense_of(op.as_matrix_form())


@diagonal.register
def _(op: GaussNewton):
    return diagonal(op.as_matrix_form())


@solve.register
def _(op: GaussNewton, b, damping):
    return solve(op.as_matrix_form(), b, damping)


@slogdet.register
def _(op: GaussNewton):
    return slogdet(op.as_matrix_form())


@describe.register
def _(op: GaussNewton):
    m = math.prod(op.out_shape)
    parts = ", ".join(type(j).__name__ for j in op.J)
    return (f"{op.kind}: {op.template}, J {shape_text(m, op.size)} ({parts}), "
            f"H_L {describe(op.HL)}")


class ThroughAffine(GaussNewton):
    r"""$J^\top \nabla^2 g\, J$: the exact Hessian of $f = g \circ z$ where $z$ is affine in
    the variables (``mcjax.hessian`` of a linear model's loss in $(w, b)$: $z = Xw + b$, $J =
    [X, 1]$, $\nabla^2 g$ a diagonal).  The second derivative of an affine $z$ vanishes, so
    the Gauss-Newton form is the Hessian itself; its operations are ``GaussNewton``'s.

    Args:
      J: a one-element tuple, the ``mcjax.Jacobian`` of $z$ (flattened, size $m$) with
        respect to the flattened variables (size $n$).
      HL: $\nabla^2 g$, a ``Curvature`` of size $m$.
    """

    kind = "through an affine map"
    template = "Jᵀ ∇²g J"


@describe.register
def _(op: ThroughAffine):
    m = math.prod(op.out_shape)
    return (f"{op.kind}: {op.template}, J {shape_text(m, op.size)} "
            f"({type(op.J[0]).__name__}), ∇²g {describe(op.HL)}")
