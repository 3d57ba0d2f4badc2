r"""Element-wise operators and their diagonal Jacobians (Parr & Howard §4.2, §8.2).

For $\mathbf{y} = \mathbf{f}(\mathbf{w}) \bigcirc \mathbf{g}(\mathbf{x})$ with $\bigcirc$ applied
element by element, $\partial y_i / \partial w_j = 0$ for $i \ne j$: the Jacobian is diagonal.
Every function here takes arrays of one shape ``s`` and returns shape ``s``; every derivative
is a ``mcjax.Diagonal`` (or ``mcjax.ScaledIdentity``) mapping ``s`` to ``s``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mcjax._core._conventions import ABS_GRAD_AT_ZERO, MAX_TIE_SHARE, wider
from mcjax._jacobian import Diagonal, ScaledIdentity
from mcjax._registry import Derivative, as_array, away_from_zero, normal, rule
from mcjax.rules._common import check_same_shape, diagonal

# mcjax.rules.elementwise.abs (and mcjax.abs) too: left out, `import *` would shadow abs
__all__ = [
    "add",
    "subtract",
    "multiply",
    "divide",
    "maximum",
    "negative",
    "square",
    "exp",
    "log",
    "sqrt",
    "sin",
    "cos",
]


def _identity(x, y):
    return ScaledIdentity(jnp.ones((), wider(x, y)), jnp.shape(x))


@rule(
    "add",
    section="4.2",
    shapes="x: n, y: n",
    wrt={
        "x": Derivative(_identity, "I", r"I"),
        "y": Derivative(_identity, "I", r"I"),
    },
)
def add(x, y):
    """$\\mathbf{x} + \\mathbf{y}$ element-wise. x, y: shape s -> shape s."""
    check_same_shape("add", ("x", "y"), x, y)
    return x + y


@rule(
    "subtract",
    section="4.2",
    shapes="x: n, y: n",
    wrt={
        "x": Derivative(_identity, "I", r"I"),
        "y": Derivative(lambda x, y: -_identity(x, y), "-I", r"-I"),
    },
)
def subtract(x, y):
    """$\\mathbf{x} - \\mathbf{y}$ element-wise. x, y: shape s -> shape s."""
    check_same_shape("subtract", ("x", "y"), x, y)
    return x - y


@rule(
    "multiply",
    section="4.2",
    shapes="x: n, y: n",
    wrt={
        "x": Derivative(lambda x, y: Diagonal(y), "diag(y)", r"\operatorname{diag}(\mathbf{y})"),
        "y": Derivative(lambda x, y: Diagonal(x), "diag(x)", r"\operatorname{diag}(\mathbf{x})"),
    },
)
def multiply(x, y):
    """$\\mathbf{x} \\otimes \\mathbf{y}$ (Hadamard product). x, y: shape s -> shape s."""
    check_same_shape("multiply", ("x", "y"), x, y)
    return x * y


def _sample_divide(rng, dims, dtype):
    n = (dims["n"],)
    return normal(rng, n, dtype), away_from_zero(rng, n, dtype, margin=0.5)


@rule(
    "divide",
    section="4.2",
    shapes="x: n, y: n",
    sample=_sample_divide,
    kinks="undefined where y = 0",
    wrt={
        "x": Derivative(
            lambda x, y: Diagonal(1 / y), "diag(1/y)", r"\operatorname{diag}(1/\mathbf{y})"
        ),
        "y": Derivative(
            lambda x, y: Diagonal(-x / y**2),
            "diag(-x/y^2)",
            r"\operatorname{diag}(-\mathbf{x}/\mathbf{y}^2)",
        ),
    },
)
def divide(x, y):
    """$\\mathbf{x} \\oslash \\mathbf{y}$ element-wise. x, y: shape s -> shape s."""
    check_same_shape("divide", ("x", "y"), x, y)
    return x / y


def _max_share(a, b):
    """1 where a wins, 0 where it loses, 1/2 at a tie (the convention of jnp.maximum)."""
    return jnp.where(a > b, 1.0, jnp.where(a == b, MAX_TIE_SHARE, 0.0)).astype(
        wider(a, b)
    )


def _sample_maximum(rng, dims, dtype):
    n = (dims["n"],)
    x = normal(rng, n, dtype)
    return x, x + away_from_zero(rng, n, dtype)


@rule(
    "maximum",
    section="4.2",
    shapes="x: n, y: n",
    sample=_sample_maximum,
    kinks="x = y (each argument gets 1/2, as jnp.maximum)",
    wrt={
        "x": Derivative(
            lambda x, y: Diagonal(_max_share(x, y)),
            "diag(1[x > y] + 1/2 1[x = y])",
            r"\operatorname{diag}(\mathbb{1}[\mathbf{x} > \mathbf{y}])",
        ),
        "y": Derivative(
            lambda x, y: Diagonal(_max_share(y, x)),
            "diag(1[y > x] + 1/2 1[x = y])",
            r"\operatorname{diag}(\mathbb{1}[\mathbf{y} > \mathbf{x}])",
        ),
    },
)
def maximum(x, y):
    """$\\max(\\mathbf{x}, \\mathbf{y})$ element-wise. x, y: shape s -> shape s."""
    check_same_shape("maximum", ("x", "y"), x, y)
    return jnp.maximum(x, y)


# -- element-wise unary functions: one scalar derivative each (§2, §8.2) -------------------
@rule("negative", section="8.2", shapes="x: n",
      wrt=diagonal(lambda x: -jnp.ones_like(x), "-I", r"-I"))
def negative(x):
    """$-\\mathbf{x}$. x: shape s -> shape s."""
    return -x


@rule("square", section="8.2", shapes="x: n",
      wrt=diagonal(lambda x: 2 * x, "diag(2x)", r"\operatorname{diag}(2\mathbf{x})"))
def square(x):
    """$\\mathbf{x}^2$ element-wise. x: shape s -> shape s."""
    return x * x


@rule("exp", section="8.2", shapes="x: n",
      wrt=diagonal(jnp.exp, "diag(exp(x))", r"\operatorname{diag}(e^{\mathbf{x}})"))
def exp(x):
    """$e^{\\mathbf{x}}$ element-wise. x: shape s -> shape s."""
    return jnp.exp(x)


def _positive(rng, dims, dtype):
    return (as_array(np.exp(0.5 * rng.standard_normal(dims["n"])), dtype),)


@rule("log", section="8.2", shapes="x: n", sample=_positive, kinks="undefined for x <= 0",
      wrt=diagonal(lambda x: 1 / x, "diag(1/x)", r"\operatorname{diag}(1/\mathbf{x})"))
def log(x):
    """$\\ln \\mathbf{x}$ element-wise (x > 0). x: shape s -> shape s."""
    return jnp.log(x)


@rule("sqrt", section="8.2", shapes="x: n", sample=_positive, kinks="undefined for x <= 0",
      wrt=diagonal(lambda x: 0.5 / jnp.sqrt(x), "diag(1/(2 sqrt(x)))",
                   r"\operatorname{diag}\left(\tfrac{1}{2\sqrt{\mathbf{x}}}\right)"))
def sqrt(x):
    """$\\sqrt{\\mathbf{x}}$ element-wise (x > 0). x: shape s -> shape s."""
    return jnp.sqrt(x)


@rule("sin", section="8.2", shapes="x: n",
      wrt=diagonal(jnp.cos, "diag(cos(x))", r"\operatorname{diag}(\cos\mathbf{x})"))
def sin(x):
    """$\\sin \\mathbf{x}$ element-wise. x: shape s -> shape s."""
    return jnp.sin(x)


@rule("cos", section="8.2", shapes="x: n",
      wrt=diagonal(lambda x: -jnp.sin(x), "diag(-sin(x))", r"\operatorname{diag}(-\sin\mathbf{x})"))
def cos(x):
    """$\\cos \\mathbf{x}$ element-wise. x: shape s -> shape s."""
    return jnp.cos(x)


def _away_from_zero(rng, dims, dtype):
    return (away_from_zero(rng, (dims["n"],), dtype),)


@rule("abs", section="8.2", shapes="x: n", sample=_away_from_zero,
      kinks="x = 0 (derivative 1 there, as jnp.abs)",
      wrt=diagonal(lambda x: jnp.where(x == 0, ABS_GRAD_AT_ZERO, jnp.sign(x)).astype(x.dtype),
                   "diag(sign(x))", r"\operatorname{diag}(\operatorname{sign}\mathbf{x})"))
def abs(x):  # noqa: A001 - the paper's name; reached as mcjax.abs
    """$|\\mathbf{x}|$ element-wise. x: shape s -> shape s."""
    return jnp.abs(x)
