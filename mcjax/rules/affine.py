r"""Matrix-vector products and the affine map $W\mathbf{x} + \mathbf{b}$ (Parr & Howard §5, §8.1).

The affine map is the first half of a neuron.  Its Jacobians are all structured:

- with respect to $\mathbf{x}$: $W$ (for a batch, $I_B \otimes W$: a ``mcjax.BlockDiagonal``);
- with respect to $W$: $I_m \otimes \mathbf{x}^\top$ (a ``mcjax.Kronecker``), a tensor of
  shape ``(m,) + (m, n)`` whose dense form is never needed to apply it;
- with respect to $\mathbf{b}$: $I$ (for a batch, one copy per row: a ``mcjax.Broadcast``).
"""

from __future__ import annotations

import jax.numpy as jnp

from mcjax._core._errors import Problems, shape_str
from mcjax._jacobian import BlockDiagonal, Broadcast, Dense, Kronecker
from mcjax._registry import Derivative, rule

__all__ = ["matvec", "affine"]


def check_affine(function: str, W, x, b=None) -> None:
    """Shapes of ``W @ x (+ b)``: W (m, n), x (..., n), b (m,); one floating dtype."""
    problems = Problems(function)
    w_ok = problems.expect_ndim("W", W, 2)
    x_ok = problems.expect_ndim("x", x, tuple(range(1, 8)))
    if w_ok and x_ok and jnp.shape(x)[-1] != jnp.shape(W)[1]:
        want = f"(..., {jnp.shape(W)[1]})" if jnp.ndim(x) > 1 else f"({jnp.shape(W)[1]},)"
        problems.shape(
            f"W has shape {shape_str(jnp.shape(W))} but x has shape {shape_str(jnp.shape(x))}; "
            f"expected x of shape {want}"
        )
    if b is not None and w_ok and jnp.shape(b) != (jnp.shape(W)[0],):
        problems.shape(
            f"W has shape {shape_str(jnp.shape(W))} but b has shape {shape_str(jnp.shape(b))}; "
            f"expected b of shape ({jnp.shape(W)[0]},)"
        )
    names = ("W", "x") if b is None else ("W", "x", "b")
    arrays = (W, x) if b is None else (W, x, b)
    problems.expect_same_float_dtype(names, arrays)
    problems.raise_if_any()


@rule(
    "matvec",
    section="8.1",
    shapes="W: m n, x: n",
    wrt={
        "W": Derivative(
            lambda W, x: Kronecker(x, W.shape[0]), "I_m (x) x^T", r"I_m \otimes \mathbf{x}^\top"
        ),
        "x": Derivative(lambda W, x: Dense(W, in_ndim=1), "W", r"W"),
    },
)
def matvec(W, x):
    """$W\\mathbf{x}$: W (m, n), x (n,) -> (m,)."""
    check_affine("matvec", W, x)
    return W @ x


def _wrt_W(W, x, b):
    return Kronecker(x, W.shape[0])


def _wrt_x(W, x, b):
    return BlockDiagonal(W, x.shape[:-1])


def _wrt_b(W, x, b):
    return Broadcast(x.shape[:-1], b.shape, jnp.ones((), b.dtype))


_AFFINE_WRT = {
    "W": Derivative(_wrt_W, "I_m (x) x^T", r"I_m \otimes \mathbf{x}^\top"),
    "x": Derivative(_wrt_x, "W (I_B (x) W for a batch)", r"W"),
    "b": Derivative(_wrt_b, "I (one copy per row for a batch)", r"I"),
}


@rule("affine_batch", section="5", shapes="W: m n, x: B n, b: m", wrt=_AFFINE_WRT)
@rule("affine", section="5", shapes="W: m n, x: n, b: m", wrt=_AFFINE_WRT)
def affine(W, x, b):
    """The affine map $W\\mathbf{x} + \\mathbf{b}$, for one example or a batch.

    Args:
      W: weights, shape (m, n); row i holds neuron i's weights (the paper's $\\mathbf{w}_i^\\top$).
      x: one input of shape (n,), or a batch of shape (B, n) (any leading axes).
      b: bias, shape (m,).

    Returns:
      shape (m,) for one input; (B, m) for a batch: ``x @ W.T + b``.

    Raises:
      ShapeError: W is not a matrix, or x or b does not fit it.
      DtypeError: the arguments mix float32 and float64.
    """
    check_affine("affine", W, x, b)
    # b is broadcast over the batch axes explicitly: no implicit rank promotion
    return x @ W.T + jnp.reshape(b, (1,) * (jnp.ndim(x) - 1) + jnp.shape(b))
