r"""Vector reductions: sums and dot products (Parr & Howard §4.4, §8.4).

Summing the elements of $\mathbf{f}(\mathbf{x})$ gives a scalar, so the Jacobian is a row of
shape ``x.shape``: the gradient.  For $y = \operatorname{sum}(\mathbf{x})$ it is
$\mathbf{1}^\top$; for $y = \operatorname{sum}(\mathbf{x} \otimes \mathbf{z})$ it is
$\mathbf{z}^\top$.
"""

from __future__ import annotations

import jax.numpy as jnp

from mcjax._core._errors import Problems
from mcjax._jacobian import Dense, Fill
from mcjax._registry import Derivative, rule
from mcjax.rules._common import check_same_shape

__all__ = ["sum_reduction", "sum_product", "sum_scalar_product", "dot"]


@rule(
    "sum_reduction",
    section="4.4",
    shapes="x: n",
    wrt={
        "x": Derivative(
            lambda x: Fill(jnp.ones((), x.dtype), (), x.shape), "1^T (row of ones)",
            r"\mathbf{1}^\top",
        )
    },
)
def sum_reduction(x):
    """$\\sum_i x_i$. x: shape s -> scalar ()."""
    return jnp.sum(x)


@rule(
    "sum_product",
    section="4.4",
    shapes="x: n, z: n",
    wrt={
        "x": Derivative(lambda x, z: Dense(z, in_ndim=z.ndim), "z^T", r"\mathbf{z}^\top"),
        "z": Derivative(lambda x, z: Dense(x, in_ndim=x.ndim), "x^T", r"\mathbf{x}^\top"),
    },
)
def sum_product(x, z):
    """$\\operatorname{sum}(\\mathbf{x} \\otimes \\mathbf{z})$: x, z of shape s -> scalar ()."""
    check_same_shape("sum_product", ("x", "z"), x, z)
    return jnp.sum(x * z)


@rule(
    "sum_scalar_product",
    section="4.4",
    shapes="x: n, z:",
    wrt={
        "x": Derivative(
            lambda x, z: Fill(z, (), x.shape), "z 1^T", r"z\,\mathbf{1}^\top"
        ),
        "z": Derivative(lambda x, z: Dense(jnp.sum(x), in_ndim=0), "sum(x)", r"\sum_i x_i"),
    },
)
def sum_scalar_product(x, z):
    """$\\operatorname{sum}(\\mathbf{x} z)$ with scalar z: x of shape s, z () -> scalar ()."""
    problems = Problems("sum_scalar_product")
    problems.expect_ndim("z", z, 0)
    problems.raise_if_any()
    return jnp.sum(x * z)


@rule(
    "dot",
    section="8.4",
    shapes="w: n, x: n",
    wrt={
        "w": Derivative(lambda w, x: Dense(x, in_ndim=1), "x^T", r"\mathbf{x}^\top"),
        "x": Derivative(lambda w, x: Dense(w, in_ndim=1), "w^T", r"\mathbf{w}^\top"),
    },
)
def dot(w, x):
    """$\\mathbf{w} \\cdot \\mathbf{x} = \\mathbf{w}^\\top \\mathbf{x}$: w, x of shape (n,) -> scalar ()."""
    problems = Problems("dot")
    if problems.expect_ndim("w", w, 1) & problems.expect_ndim("x", x, 1):
        problems.expect_same_shape(("w", "x"), (w, x))
    problems.expect_same_float_dtype(("w", "x"), (w, x))
    problems.raise_if_any()
    return jnp.dot(w, x)
