r"""Scalar expansion: a vector combined with a scalar (Parr & Howard §4.3, §8.3).

$\mathbf{y} = \mathbf{x} \bigcirc z$ is really $\mathbf{f}(\mathbf{x}) \bigcirc \mathbf{g}(z)$ with
$\mathbf{g}(z) = \mathbf{1} z$: the scalar is expanded to a vector.  With respect to $\mathbf{x}$
the Jacobian is diagonal; with respect to $z$ it is a column, shape ``x.shape + ()``.

Every function takes ``x`` of shape ``s`` and a scalar ``z`` (shape ``()``) and returns shape
``s``.
"""

from __future__ import annotations

import jax.numpy as jnp

from mcjax._core._conventions import wider
from mcjax._core._errors import Problems
from mcjax._jacobian import Dense, Fill, ScaledIdentity
from mcjax._registry import Derivative, away_from_zero, normal, rule

__all__ = ["add_scalar", "subtract_scalar", "multiply_scalar", "divide_scalar"]


def _check(function: str, x, z) -> None:
    problems = Problems(function)
    problems.expect_ndim("z", z, 0)
    problems.expect_same_float_dtype(("x", "z"), (x, z))
    problems.raise_if_any()


def _ones_column(x, z):
    return Fill(jnp.ones((), wider(x, z)), jnp.shape(x), ())


@rule(
    "add_scalar",
    section="4.3",
    shapes="x: n, z:",
    wrt={
        "x": Derivative(lambda x, z: ScaledIdentity(jnp.ones((), x.dtype), x.shape), "I", "I"),
        "z": Derivative(_ones_column, "1 (column of ones)", r"\mathbf{1}"),
    },
)
def add_scalar(x, z):
    """$\\mathbf{x} + z$: x of shape s, scalar z -> shape s."""
    _check("add_scalar", x, z)
    return x + z


@rule(
    "subtract_scalar",
    section="8.3",
    shapes="x: n, z:",
    wrt={
        "x": Derivative(lambda x, z: ScaledIdentity(jnp.ones((), x.dtype), x.shape), "I", "I"),
        "z": Derivative(lambda x, z: -_ones_column(x, z), "-1 (column)", r"-\mathbf{1}"),
    },
)
def subtract_scalar(x, z):
    """$\\mathbf{x} - z$: x of shape s, scalar z -> shape s."""
    _check("subtract_scalar", x, z)
    return x - z


@rule(
    "multiply_scalar",
    section="4.3",
    shapes="x: n, z:",
    wrt={
        "x": Derivative(lambda x, z: ScaledIdentity(z, x.shape), "z I", r"zI"),
        "z": Derivative(lambda x, z: Dense(x, in_ndim=0), "x (column)", r"\mathbf{x}"),
    },
)
def multiply_scalar(x, z):
    """$\\mathbf{x} z$: x of shape s, scalar z -> shape s."""
    _check("multiply_scalar", x, z)
    return x * z


def _sample_divide_scalar(rng, dims, dtype):
    return normal(rng, (dims["n"],), dtype), away_from_zero(rng, (), dtype, margin=0.5)


@rule(
    "divide_scalar",
    section="8.3",
    shapes="x: n, z:",
    sample=_sample_divide_scalar,
    kinks="undefined at z = 0",
    wrt={
        "x": Derivative(lambda x, z: ScaledIdentity(1 / z, x.shape), "(1/z) I", r"\frac{1}{z}I"),
        "z": Derivative(
            lambda x, z: Dense(-x / z**2, in_ndim=0), "-x/z^2 (column)", r"-\frac{\mathbf{x}}{z^2}"
        ),
    },
)
def divide_scalar(x, z):
    """$\\mathbf{x} / z$: x of shape s, scalar z -> shape s."""
    _check("divide_scalar", x, z)
    return x / z
