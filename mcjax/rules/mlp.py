r"""Layers and multilayer perceptrons, differentiated by composing the rules (beyond §6).

A dense layer is $\mathbf{a} = \sigma(X W^\top + \mathbf{b})$; its Jacobians are the vector chain
rule applied to the activation's diagonal and the affine map's structured Jacobians.
Backpropagation through a whole MLP (``mcjax.mlp_backprop``) is nothing but the
vector-Jacobian products of those structured Jacobians, layer by layer, from the loss's
gradient backwards: no dense Jacobian is ever built.

Parameters are a list with one ``{"W": (m, n), "b": (m,)}`` dict per layer; row ``i`` of ``W``
holds the weights of unit ``i``, as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._core._errors import Problems, ShapeError, shape_str
from mcjax._jacobian import Dense, densify
from mcjax._registry import REGISTRY, Derivative, as_array, normal, rule
from mcjax.rules.activations import activation_function, activation_jacobian
from mcjax.rules.affine import affine

__all__ = ["dense_layer", "dense_loss", "layer_backward", "mlp_init", "mlp_apply", "mlp_backprop", "mlp_loss"]

Params = list  # [{"W": (m, n), "b": (m,)}, ...]


def _affine_jacobians(W, X, b):
    rule_ = REGISTRY.get("affine_batch")
    return {name: rule_.wrt[name].fn(W, X, b) for name in ("W", "x", "b")}


def _layer_jacobians(W, X, b, activation):
    """{"W", "X", "b"} -> Jacobian of act(X W^T + b): diag(act'(Z)) @ (affine Jacobian)."""
    J = _affine_jacobians(W, X, b)
    gate = activation_jacobian(activation, affine(W, X, b))
    return {"W": gate @ J["W"], "X": gate @ J["x"], "b": gate @ J["b"]}


def _layer_wrt(name):
    def derivative(W, X, b, *, activation="relu"):
        return _layer_jacobians(W, X, b, activation)[name]

    derivative.__name__ = f"dense_layer_wrt_{name}"
    return derivative


@rule(
    "dense_layer",
    section="beyond",
    shapes="W: m n, X: B n, b: m",
    sample=None,
    kinks="X W^T + b = 0 anywhere (for relu)",
    wrt={
        "W": Derivative(_layer_wrt("W"), "diag(act'(Z)) (I_m (x) X)",
                        r"\operatorname{diag}(\sigma'(Z))\,(I_m \otimes X)"),
        "X": Derivative(_layer_wrt("X"), "diag(act'(Z)) (I_B (x) W)",
                        r"\operatorname{diag}(\sigma'(Z))\,(I_B \otimes W)"),
        "b": Derivative(_layer_wrt("b"), "diag(act'(Z)) (1 (x) I)",
                        r"\operatorname{diag}(\sigma'(Z))\,(\mathbf{1} \otimes I)"),
    },
    hyper={"activation": "tanh"},
)
def dense_layer(W, X, b, *, activation="relu"):
    """One layer $\\sigma(X W^\\top + \\mathbf{b})$.

    Args:
      W: weights (m, n).
      X: a batch of inputs (B, n).
      b: bias (m,).
      activation: a registered activation (name or function), or None for no activation.

    Returns:
      Activations, shape (B, m).
    """
    Z = affine(W, X, b)
    return Z if activation is None else activation_function(activation)(Z)


def layer_backward(W, X, b, dY, *, activation: str | Callable | None = "relu"):
    """The backward pass of a batched layer: $(\\partial L/\\partial W, \\partial L/\\partial\\mathbf{b}, \\partial L/\\partial X)$.

    Given $\\bar{Y} = \\partial L / \\partial Y$ for $Y = \\sigma(X W^\\top + \\mathbf{b})$, this is the
    vector-Jacobian product of each of the layer's Jacobians:
    $\\bar{Z} = \\bar{Y} \\otimes \\sigma'(Z)$, $\\bar{W} = \\bar{Z}^\\top X$,
    $\\bar{\\mathbf{b}} = \\mathbf{1}^\\top \\bar{Z}$, $\\bar{X} = \\bar{Z} W$.

    Args:
      W: (m, n); X: (B, n); b: (m,); dY: (B, m).
      activation: a registered activation, or None.

    Returns:
      ``(dW, db, dX)`` of shapes (m, n), (m,), (B, n).
    """
    if activation is None:
        J = _affine_jacobians(W, X, b)
        return J["W"].vjp(dY), J["b"].vjp(dY), J["x"].vjp(dY)
    J = _layer_jacobians(W, X, b, activation)
    return J["W"].vjp(dY), J["b"].vjp(dY), J["X"].vjp(dY)


# -- a dense layer under a loss: its Gauss-Newton block ---------------------------------------
def _loss_curvature(W, X, b, Y, loss):
    """$Z = X W^\\top + \\mathbf{b}$ and the loss rule's Hessian $H_Z$ there, dense (B, m, B, m)."""
    Z, loss_rule = affine(W, X, b), REGISTRY.get(loss)
    name = loss_rule.arg_names[0]
    H = loss_rule.second_derivative(name, name)(Z, Y, **loss_rule.hyper)
    return H.dense() if hasattr(H, "dense") else H


def _dense_loss_gradient(name: str):
    def gradient(W, X, b, Y, *, loss="softmax_cross_entropy"):
        loss_rule = REGISTRY.get(loss)
        dZ = densify(loss_rule.derivative(loss_rule.arg_names[0])(affine(W, X, b), Y,
                                                                   **loss_rule.hyper))
        return Dense(dZ.T @ X if name == "W" else jnp.sum(dZ, axis=0), in_ndim=2 if name == "W" else 1)

    gradient.__name__ = f"dense_loss_wrt_{name}"
    return gradient


def _gauss_newton_block(pair: str):
    """$J^\\top H_Z J$ for the affine map's $J$: entry $(W_{ij}, W_{kl})$ is
    $\\sum_{b,c} (H_Z)_{bi,ck}\\, x_{bj} x_{cl}$, i.e. $\\sum_b H_b \\otimes \\mathbf{x}_b\\mathbf{x}_b^\\top$
    when the loss treats rows independently.  Exact: the layer is affine in W and b."""

    def block(W, X, b, Y, *, loss="softmax_cross_entropy"):
        H = _loss_curvature(W, X, b, Y, loss)
        if pair == "WW":
            return Dense(jnp.einsum("bick,bj,cl->ijkl", H, X, X), in_ndim=2)
        if pair == "Wb":
            return Dense(jnp.einsum("bick,bj->ijk", H, X), in_ndim=1)
        return Dense(jnp.einsum("bick->ik", H), in_ndim=1)

    block.__name__ = f"gauss_newton_block_{pair}"
    return block


def _sample_dense_loss(targets: str):
    def sample(rng, dims, dtype):
        B, n, m = dims["B"], dims["n"], dims["k"]
        W, X, b = normal(rng, (m, n), dtype), normal(rng, (B, n), dtype), normal(rng, (m,), dtype)
        Y = (as_array(rng.integers(0, m, B), np.int32) if targets == "labels"
             else normal(rng, (B, m), dtype))
        return W, X, b, Y

    return sample


_GN_TEXT = "sum_b H_b (x) x_b x_b^T = J^T H_Z J, H_b = d2 loss / dz_b^2 (Gauss-Newton block, exact)"
_GN_LATEX = r"\sum_b H_b \otimes \mathbf{x}_b\mathbf{x}_b^\top = J^\top H_Z J"
_DENSE_WRT = {"W": Derivative(_dense_loss_gradient("W"), "G^T X, G = dL/dZ",
                              r"\bar{Z}^\top X,\ \bar{Z} = \partial L/\partial Z"),
              "b": Derivative(_dense_loss_gradient("b"), "1^T G", r"\mathbf{1}^\top\bar{Z}")}
_DENSE_HESSIAN = {("W", "W"): Derivative(_gauss_newton_block("WW"), _GN_TEXT, _GN_LATEX),
                  ("W", "b"): Derivative(_gauss_newton_block("Wb"), "sum_b H_b (x) x_b",
                                         r"\sum_b H_b \otimes \mathbf{x}_b"),
                  ("b", "b"): Derivative(_gauss_newton_block("bb"), "sum_b H_b", r"\sum_b H_b")}


@rule("dense_mse", shapes="W: k n, X: B n, b: k, Y: B k", sample=_sample_dense_loss("targets"),
      hyper={"loss": "mse"}, section="beyond", wrt=_DENSE_WRT, hessian=_DENSE_HESSIAN)
@rule("dense_softmax_cross_entropy", shapes="W: k n, X: B n, b: k, Y: B",
      sample=_sample_dense_loss("labels"), hyper={"loss": "softmax_cross_entropy"},
      section="beyond", wrt=_DENSE_WRT, hessian=_DENSE_HESSIAN)
def dense_loss(W, X, b, Y, *, loss="softmax_cross_entropy"):
    """A loss of one dense layer's output, $L(X W^\\top + \\mathbf{b}, Y)$, as a network's last layer.

    Its Hessian in $(W, \\mathbf{b})$ is the layer's Gauss-Newton block $J^\\top H_Z J$.

    The layer is affine in its parameters, so the Gauss-Newton block is its exact Hessian:
    $\\partial^2 L/\\partial W^2 = \\sum_b H_b \\otimes \\mathbf{x}_b\\mathbf{x}_b^\\top$ with
    $H_b = \\partial^2 L / \\partial \\mathbf{z}_b^2$ (K-FAC's $G \\otimes A$ before the expectation is
    split; Martens & Grosse 2015).

    Args:
      W: weights (m, n).
      X: inputs (B, n).
      b: bias (m,).
      Y: targets of the loss: integer labels (B,) for ``"softmax_cross_entropy"``, (B, m)
        for ``"mse"``.
      loss: a registered loss of ``(prediction, target)`` with a second derivative.

    Returns:
      A scalar.
    """
    return REGISTRY.get(loss)(affine(W, X, b), Y)


# -- the multilayer perceptron --------------------------------------------------------------
def mlp_init(key: jax.Array, sizes: Sequence[int], *, dtype=jnp.float32) -> Params:
    """Initial parameters of an MLP with layer widths ``sizes``.

    Weights are drawn with He scaling ($\\mathcal{N}(0, 2/n_\\text{in})$, suited to ReLU), biases
    are zero.

    Args:
      key: a ``jax.random`` key.
      sizes: ``(n_in, hidden..., n_out)``, at least two widths.
      dtype: floating dtype of the parameters.

    Returns:
      A list with one ``{"W": (sizes[i+1], sizes[i]), "b": (sizes[i+1],)}`` per layer.
    """
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < 2 or min(sizes) < 1:
        raise ShapeError(
            f"mcjax.mlp_init: sizes {sizes} must list at least two positive widths "
            "(inputs, ..., outputs)"
        )
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {
            "W": jax.random.normal(k, (m, n), dtype) * jnp.sqrt(2.0 / n).astype(dtype),
            "b": jnp.zeros((m,), dtype),
        }
        for k, n, m in zip(keys, sizes[:-1], sizes[1:])
    ]


def check_params_fit(function: str, params: Params, X) -> None:
    """The first layer must take X's features, and each layer the previous one's outputs."""
    problems = Problems(function)
    if not params:
        problems.shape("params is empty; expected one {'W', 'b'} dict per layer")
        problems.raise_if_any()
    n_in = params[0]["W"].shape[1]
    if jnp.ndim(X) < 1 or jnp.shape(X)[-1] != n_in:
        problems.shape(
            f"X has shape {shape_str(jnp.shape(X))} but the first layer's W has shape "
            f"{shape_str(params[0]['W'].shape)}; expected X of shape (B, {n_in})"
        )
    for i in range(1, len(params)):
        prev, W = params[i - 1]["W"], params[i]["W"]
        if W.shape[1] != prev.shape[0]:
            problems.shape(
                f"layer {i - 1} has W of shape {shape_str(prev.shape)} but layer {i} has W of "
                f"shape {shape_str(W.shape)}; expected layer {i}'s W of shape (m, {prev.shape[0]})"
            )
    problems.raise_if_any()


def mlp_apply(params: Params, X, *, activation: str | Callable = "relu"):
    """The MLP's output (logits): hidden layers with ``activation``, a linear last layer.

    Args:
      params: from ``mcjax.mlp_init``.
      X: inputs (B, n_in), or one input (n_in,).
      activation: a registered activation (name or function).

    Returns:
      shape (B, n_out) (or (n_out,)).
    """
    check_params_fit("mlp_apply", params, X)
    act = activation_function(activation)
    for layer in params[:-1]:
        X = act(affine(layer["W"], X, layer["b"]))
    return affine(params[-1]["W"], X, params[-1]["b"])


def mlp_backprop(params: Params, X, Y, *, loss="softmax_cross_entropy", activation="relu"):
    """The gradient of ``mcjax.mlp_loss`` with respect to ``params``, by backpropagation.

    The loss rule gives $\\partial L / \\partial \\hat{Y}$; then, from the last layer to the first,
    ``mcjax.layer_backward`` (the vector-Jacobian products of the layer's structured Jacobians)
    gives each layer's $(\\bar{W}, \\bar{\\mathbf{b}})$ and the cotangent of its input.

    Returns:
      A list of ``{"W", "b"}`` gradients with the shapes of ``params``.
    """
    check_params_fit("mlp_backprop", params, X)
    act = activation_function(activation)
    inputs = []
    A = X
    for layer in params[:-1]:
        inputs.append(A)
        A = act(affine(layer["W"], A, layer["b"]))
    inputs.append(A)
    logits = affine(params[-1]["W"], A, params[-1]["b"])

    loss_rule = REGISTRY.get(loss)
    dA = loss_rule.derivative(loss_rule.arg_names[0])(logits, Y).dense()
    grads: list = [None] * len(params)
    for i in reversed(range(len(params))):
        W, b = params[i]["W"], params[i]["b"]
        dW, db, dA = layer_backward(
            W, inputs[i], b, dA, activation=None if i == len(params) - 1 else activation
        )
        grads[i] = {"W": dW, "b": db}
    return grads


def _sample_mlp(targets: str):
    def sample(rng, dims, dtype):
        B, n, m, k = dims["B"], dims["n"], dims["m"], dims["k"]
        params = [
            {"W": normal(rng, (o, i), dtype, scale=(1 / i) ** 0.5), "b": normal(rng, (o,), dtype)}
            for i, o in ((n, m + 1), (m + 1, k))
        ]
        X = normal(rng, (B, n), dtype)
        if targets == "labels":
            Y = as_array(rng.integers(0, k, B), np.int32)
        else:
            Y = normal(rng, (B, k), dtype)
        return params, X, Y

    return sample


_MLP_TEXT = "backprop: vjp of each layer's Jacobians from dL/dlogits backwards"
_MLP_LATEX = r"\bar{W}_l = \bar{Z}_l^\top A_{l-1},\ \bar{\mathbf{b}}_l = \mathbf{1}^\top\bar{Z}_l"


# Hidden layers use tanh in the registered rules: smooth, so random points are kink-free
# (the ReLU gate is verified by the neuron, neuron_loss and relu rules).
@rule("mlp_mse", section="beyond", shapes="params: *, X: B n, Y: B k",
      sample=_sample_mlp("targets"), hyper={"loss": "mse", "activation": "tanh"},
      wrt={"params": Derivative(mlp_backprop, _MLP_TEXT, _MLP_LATEX)})
@rule("mlp_softmax_cross_entropy", section="beyond", shapes="params: *, X: B n, Y: B",
      sample=_sample_mlp("labels"), hyper={"loss": "softmax_cross_entropy", "activation": "tanh"},
      wrt={"params": Derivative(mlp_backprop, _MLP_TEXT, _MLP_LATEX)})
def mlp_loss(params: Params, X, Y, *, loss="softmax_cross_entropy", activation="relu"):
    """The loss of the MLP's output against targets ``Y``.

    Args:
      params: from ``mcjax.mlp_init``.
      X: inputs (B, n_in).
      Y: integer labels (B,) or probabilities (B, n_out) for ``"softmax_cross_entropy"``;
        targets (B, n_out) for ``"mse"``.
      loss: a registered loss of ``(prediction, target)`` (name or function).
      activation: the hidden layers' activation.

    Returns:
      A scalar.
    """
    return REGISTRY.get(loss)(mlp_apply(params, X, activation=activation), Y)
