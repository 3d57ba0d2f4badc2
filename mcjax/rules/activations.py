r"""Activation functions and the paper's neuron (Parr & Howard §5).

An activation is an element-wise unary function, so its Jacobian is diagonal:
$\partial\,\sigma(\mathbf{z}) / \partial \mathbf{z} = \operatorname{diag}(\sigma'(\mathbf{z}))$.
The neuron $\operatorname{activation}(\mathbf{w} \cdot \mathbf{x} + b)$ is differentiated by the
vector chain rule (§4.5.3) from the activation's rule and the dot product's rule; for ReLU the
factor $\sigma'(z) = \mathbb{1}[z > 0]$ is the *gate* that zeroes the gradient of an inactive unit.

The neuron's second derivatives (for the piecewise-linear ReLU and leaky ReLU, whose
$\sigma'' = 0$ away from the kink) are 0 but one: $\partial^2 / \partial\mathbf{w}\,\partial\mathbf{x}
= \sigma'(z)\,I$, since $\partial(\sigma'(z)\,\mathbf{x})/\partial\mathbf{x} = \sigma'(z)\,I +
\sigma''(z)\,\mathbf{x}\mathbf{w}^\top$.  At the kink $z = 0$ the gradient jumps: no second
derivative exists there.

Kinks follow ``mcjax._core._conventions``: ``relu'(0) = 0``, ``leaky_relu'(0) = 1``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from mcjax._core._conventions import LEAKY_RELU_GRAD_AT_ZERO, RELU_GRAD_AT_ZERO
from mcjax._core._errors import Problems, shape_str
from mcjax._jacobian import Dense, Jacobian, ScaledIdentity, Zero
from mcjax._registry import (
    REGISTRY,
    Derivative,
    as_array,
    away_from_zero,
    away_from_zero_numpy,
    rule,
)
from mcjax.rules._common import diagonal

__all__ = ["relu", "leaky_relu", "sigmoid", "tanh", "softplus", "neuron"]


def _sample_off_kink(rng, dims, dtype):
    return (away_from_zero(rng, (dims["n"],), dtype),)


def relu_gate(z):
    """$\\mathbb{1}[z > 0]$ in z's dtype, with ``relu'(0) = 0``. z: any shape -> same shape."""
    return jnp.where(z > 0, 1.0, jnp.where(z == 0, RELU_GRAD_AT_ZERO, 0.0)).astype(z.dtype)


@rule("relu", section="5", shapes="x: n", sample=_sample_off_kink,
      kinks="x = 0 (derivative 0 there, as jax.nn.relu)",
      wrt=diagonal(relu_gate, "diag(1[x > 0])", r"\operatorname{diag}(\mathbb{1}[\mathbf{x} > 0])"))
def relu(x):
    """$\\max(0, \\mathbf{x})$ element-wise. x: shape s -> shape s."""
    return jax.nn.relu(x)  # its custom JVP gives relu'(0) = 0, our convention


def _leaky_gate(x, *, slope=0.01):
    at_zero = LEAKY_RELU_GRAD_AT_ZERO
    return jnp.where(x > 0, 1.0, jnp.where(x == 0, at_zero, slope)).astype(x.dtype)


@rule("leaky_relu", section="5", shapes="x: n", sample=_sample_off_kink,
      kinks="x = 0 (derivative 1 there, as jax.nn.leaky_relu)",
      wrt=diagonal(_leaky_gate, "diag(1[x > 0] + slope 1[x < 0])",
                   r"\operatorname{diag}(\mathbb{1}[\mathbf{x}>0] + \alpha\,\mathbb{1}[\mathbf{x}<0])"))
def leaky_relu(x, *, slope=0.01):
    """$\\max(\\alpha \\mathbf{x}, \\mathbf{x})$ element-wise, $\\alpha$ = ``slope``. x: shape s -> shape s."""
    return jnp.where(x >= 0, x, slope * x)


@rule("sigmoid", section="5", shapes="x: n",
      wrt=diagonal(lambda x: jax.nn.sigmoid(x) * (1 - jax.nn.sigmoid(x)),
                   "diag(sigmoid(x) (1 - sigmoid(x)))",
                   r"\operatorname{diag}(\sigma(\mathbf{x})(1-\sigma(\mathbf{x})))"))
def sigmoid(x):
    """$\\sigma(\\mathbf{x}) = 1/(1 + e^{-\\mathbf{x}})$ element-wise. x: shape s -> shape s."""
    return jax.nn.sigmoid(x)


@rule("tanh", section="5", shapes="x: n",
      wrt=diagonal(lambda x: 1 - jnp.tanh(x) ** 2, "diag(1 - tanh(x)^2)",
                   r"\operatorname{diag}(1 - \tanh^2\mathbf{x})"))
def tanh(x):
    """$\\tanh \\mathbf{x}$ element-wise. x: shape s -> shape s."""
    return jnp.tanh(x)


@rule("softplus", section="5", shapes="x: n",
      wrt=diagonal(jax.nn.sigmoid, "diag(sigmoid(x))", r"\operatorname{diag}(\sigma(\mathbf{x}))"))
def softplus(x):
    """$\\ln(1 + e^{\\mathbf{x}})$ element-wise, computed stably. x: shape s -> shape s."""
    return jnp.logaddexp(x, jnp.zeros((), jnp.result_type(x)))


def activation_function(activation: str | Callable) -> Callable:
    """The forward function of a registered element-wise activation (by name or function)."""
    return REGISTRY.get(activation).forward


def activation_jacobian(activation: str | Callable, z) -> Jacobian:
    """$\\operatorname{diag}(\\sigma'(z))$ from the activation's registered rule. z: any shape."""
    return REGISTRY.get(activation).wrt["x"].fn(z)


# -- the neuron -------------------------------------------------------------------------
def _check_neuron(w, x, b):
    problems = Problems("neuron")
    if problems.expect_ndim("w", w, 1) & problems.expect_ndim("x", x, 1):
        if w.shape != x.shape:
            problems.shape(
                f"w has shape {shape_str(w.shape)} but x has shape {shape_str(x.shape)}; "
                f"expected x of shape {shape_str(w.shape)}"
            )
    problems.expect_ndim("b", b, 0)
    problems.expect_same_float_dtype(("w", "x", "b"), (w, x, b))
    problems.raise_if_any()


def _sample_neuron(rng, dims, dtype):
    w = rng.standard_normal(dims["n"])
    x = rng.standard_normal(dims["n"])
    # choose b so that z = w.x + b sits away from the ReLU kink at 0
    z = away_from_zero_numpy(rng, ())
    return as_array(w, dtype), as_array(x, dtype), as_array(z - w @ x, dtype)


def _neuron_gate(w, x, b, activation) -> Jacobian:
    return activation_jacobian(activation, jnp.dot(w, x) + b)


def neuron_wrt_w(w, x, b, *, activation="relu"):
    """$\\partial\\,\\text{activation}(\\mathbf{w}\\cdot\\mathbf{x}+b)/\\partial\\mathbf{w} = \\sigma'(z)\\,\\mathbf{x}^\\top$.

    The vector chain rule: the activation's (scalar) diagonal times the dot product's
    Jacobian $\\mathbf{x}^\\top$.  For ReLU, $\\sigma'(z) = \\mathbb{1}[z > 0]$ (§5).
    """
    return _neuron_gate(w, x, b, activation) @ Dense(x, in_ndim=1)


def neuron_wrt_x(w, x, b, *, activation="relu"):
    """$\\sigma'(z)\\,\\mathbf{w}^\\top$, by the same chain rule."""
    return _neuron_gate(w, x, b, activation) @ Dense(w, in_ndim=1)


def neuron_wrt_b(w, x, b, *, activation="relu"):
    """$\\sigma'(z)$: $\\partial z / \\partial b = 1$."""
    return _neuron_gate(w, x, b, activation) @ ScaledIdentity(jnp.ones((), b.dtype), ())


def _piecewise_linear_gate(activation) -> Callable:
    """$\\sigma'$ of a piecewise-linear activation (whose $\\sigma'' = 0$ off its kink)."""
    forward = activation_function(activation)
    gates = {relu: relu_gate, leaky_relu: _leaky_gate}
    if forward not in gates:
        raise ValueError(
            f"mcjax.neuron: the hand-derived second derivative is registered for activation "
            f"'relu' or 'leaky_relu' (sigma'' = 0 off the kink); got activation={activation!r}"
        )
    return gates[forward]


def _neuron_second(pair: str):
    """The neuron's second derivative for ``pair``: $\\sigma'(z) I$ for (w, x), else 0."""

    def second(w, x, b, *, activation="relu"):
        gate = _piecewise_linear_gate(activation)
        if pair == "wx":
            return ScaledIdentity(gate(jnp.dot(w, x) + b), w.shape)
        out_shape, in_shape = {"ww": (w.shape, w.shape), "xx": (x.shape, x.shape),
                               "wb": (w.shape, ()), "bb": ((), ())}[pair]
        return Zero(out_shape, in_shape, jnp.result_type(w))

    second.__name__ = f"neuron_second_{pair}"
    return second


_ZERO_AE = "0 (a.e.; undefined at z = 0)"


@rule(
    "neuron",
    section="5",
    shapes="w: n, x: n, b:",
    sample=_sample_neuron,
    kinks="w.x + b = 0 (the ReLU gate is 0 there)",
    wrt={
        "w": Derivative(neuron_wrt_w, "1[z > 0] x^T, z = w.x + b",
                        r"\mathbb{1}[z > 0]\,\mathbf{x}^\top"),
        "x": Derivative(neuron_wrt_x, "1[z > 0] w^T", r"\mathbb{1}[z > 0]\,\mathbf{w}^\top"),
        "b": Derivative(neuron_wrt_b, "1[z > 0]", r"\mathbb{1}[z > 0]"),
    },
    hessian={
        ("w", "w"): Derivative(_neuron_second("ww"), _ZERO_AE, r"0"),
        ("w", "x"): Derivative(_neuron_second("wx"), "1[z > 0] I (a.e.)",
                               r"\mathbb{1}[z > 0]\,I"),
        ("x", "x"): Derivative(_neuron_second("xx"), _ZERO_AE, r"0"),
        ("w", "b"): Derivative(_neuron_second("wb"), _ZERO_AE, r"0"),
        ("b", "b"): Derivative(_neuron_second("bb"), _ZERO_AE, r"0"),
    },
)
def neuron(w, x, b, *, activation="relu"):
    """The paper's artificial neuron $\\text{activation}(\\mathbf{w} \\cdot \\mathbf{x} + b)$ (§5).

    Args:
      w: weights, shape (n,).
      x: input, shape (n,).
      b: bias, a scalar (shape ()).
      activation: the name (or forward function) of a registered activation; the paper's
        is ``"relu"``: $\\max(0, \\mathbf{w}\\cdot\\mathbf{x} + b)$.

    Returns:
      A scalar (shape ()).  Use ``jax.vmap`` over x for a batch.
    """
    _check_neuron(w, x, b)
    return activation_function(activation)(jnp.dot(w, x) + b)
