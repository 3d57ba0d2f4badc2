r"""The paper's two models as :class:`~mcjax.Model`\ s, their gradients from the registry.

:func:`neuron_model` takes the formulas of §6.1 and §6.2 from the ``neuron_loss`` rule;
:func:`mlp_model` takes backpropagation from the ``mlp_*`` rules (:func:`mcjax.mlp_backprop`).
Nothing here derives a gradient.  Each model's ``check`` refuses data that does not fit it
(shapes, and labels outside the MLP's classes) before anything is compiled.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._core._errors import Problems, shape_str
from mcjax._registry import REGISTRY, derivative
from mcjax._train._models import Model, count_problem
from mcjax.rules.activations import relu
from mcjax.rules.losses import neuron_loss
from mcjax.rules.mlp import check_params_fit, mlp_apply, mlp_init, mlp_loss


def _pair(function: str, batch, what: str):
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        problems = Problems(function)
        problems.shape(f"the batch is a {type(batch).__name__}; expected {what}")
        problems.raise_if_any()
    return batch


# -- the paper's neuron ------------------------------------------------------------------------
def neuron_model(n_features: int, *, dtype=jnp.float32) -> Model:
    r"""The paper's neuron $\max(0, \mathbf{w}\cdot\mathbf{x} + b)$ with its loss (§5, §6).

    Parameters are ``{"w": (n,), "b": ()}``; a batch is ``(X, y)``: X (B, n) with targets y (B,).
    The loss is $C = \frac{1}{B}\sum_i (y_i - \max(0, \mathbf{w}\cdot\mathbf{x}_i + b))^2$
    (:func:`mcjax.neuron_loss`) and ``backprop`` is its registered gradient
    $\frac{2}{B}\sum_{i:\,z_i>0} (z_i - y_i)\,\mathbf{x}_i^\top$ and
    $\frac{2}{B}\sum_{i:\,z_i>0} (z_i - y_i)$ (§6.1, §6.2).

    Args:
      n_features: n, the length of w and of each input.
      dtype: the parameters' floating dtype.

    Raises:
      ValueError: ``n_features`` is not an integer >= 1.
    """
    problem = count_problem(n_features, "n_features")
    if problem is not None:
        raise ValueError(f"mcjax.neuron_model: {problem}")
    n = int(n_features)
    d_w = derivative(neuron_loss, "w")
    d_b = derivative(neuron_loss, "b")

    def init(key):
        # w ~ N(0, 1/n) and a small positive bias: about half the inputs start active,
        # so the unit is not born dead (a dead ReLU has zero gradient).
        w = jax.random.normal(key, (n,), dtype) / jnp.sqrt(jnp.asarray(n, dtype))
        return {"w": w, "b": jnp.asarray(0.1, dtype)}

    def loss(params, batch):
        X, y = batch
        return neuron_loss(params["w"], params["b"], X, y)

    def backprop(params, batch):
        (w, b), (X, y) = (params["w"], params["b"]), batch
        return {"w": d_w(w, b, X, y).dense(), "b": d_b(w, b, X, y).dense()}

    def apply(params, X):
        return relu(X @ params["w"] + params["b"])

    def check(function, params, batch):
        X, y = _pair(function, batch, "(X, y)")
        problems = Problems(function)
        want = params["w"].shape[0]
        if jnp.ndim(X) != 2 or jnp.shape(X)[1] != want:
            problems.shape(
                f"X has shape {shape_str(jnp.shape(X))} but the neuron's w has shape "
                f"{shape_str(params['w'].shape)}; expected X of shape (N, {want})"
            )
        if jnp.ndim(y) != 1:
            problems.shape(f"y has shape {shape_str(jnp.shape(y))}; expected targets of shape (N,)")
        problems.raise_if_any()

    return Model(init, loss, backprop, apply, check,
                 {"model": "neuron", "n_features": n, "dtype": jnp.dtype(dtype).name}, "neuron")


# -- the multilayer perceptron -----------------------------------------------------------------
def _loss_rule(loss: str):
    try:
        rule_ = REGISTRY.get(loss)
    except KeyError as error:
        raise ValueError(f"mcjax.mlp_model: {error.args[0]}") from None
    if not rule_.wrt or rule_.arg_names[0] not in rule_.wrt:
        raise ValueError(
            f"mcjax.mlp_model: loss {loss!r} has no registered derivative with respect to its "
            f"first argument (the prediction); expected a loss such as 'mse' or "
            f"'softmax_cross_entropy'"
        )
    return rule_


def _check_labels(problems: Problems, Y, n_out: int) -> None:
    """Integer labels must name one of the model's classes (read only from concrete data)."""
    if isinstance(Y, jax.core.Tracer) or not np.size(Y):  # pyright: ignore[reportAttributeAccessIssue]
        return
    labels = np.asarray(Y)
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= n_out:
        outside = int(np.sum((labels < 0) | (labels >= n_out)))
        problems.shape(f"Y holds labels from {low} to {high} ({outside} outside the classes) but "
                       f"the last layer has {n_out} outputs; expected labels 0 to {n_out - 1}")


def mlp_model(sizes, *, loss: str = "softmax_cross_entropy", activation: str = "relu",
              dtype=jnp.float32) -> Model:
    r"""An MLP $\sigma(\dots\sigma(X W_1^\top + \mathbf{b}_1)\dots) W_L^\top + \mathbf{b}_L$ and a loss.

    Parameters are :func:`mcjax.mlp_init`'s list of ``{"W": (m, n), "b": (m,)}``.  A batch is
    ``(X, Y)``: X (B, sizes[0]) with Y integer labels (B,) for ``"softmax_cross_entropy"`` or
    targets (B, sizes[-1]) for ``"mse"``.  ``backprop`` is the registry's
    :func:`mcjax.mlp_backprop`: the loss rule's gradient, then each layer's vector-Jacobian
    products from the last layer to the first.

    Args:
      sizes: ``(n_in, hidden..., n_out)``.
      loss: a registered loss of ``(prediction, target)`` with a derivative for the
        prediction, e.g. ``"softmax_cross_entropy"`` or ``"mse"``.
      activation: the hidden layers' registered activation.
      dtype: the parameters' floating dtype.

    Raises:
      ValueError: ``sizes`` is not two or more integers >= 1, or the loss or activation is not
        a registered rule.
    """
    given = sizes
    try:
        sizes = () if isinstance(sizes, str) else tuple(sizes)
    except TypeError:  # not a sequence
        sizes = ()
    if len(sizes) < 2 or any(count_problem(s, "size") for s in sizes):
        raise ValueError(f"mcjax.mlp_model: sizes={given!r}; expected (n_in, hidden..., n_out): "
                         "two or more integers >= 1")
    sizes = tuple(int(s) for s in sizes)
    loss_rule = _loss_rule(loss)
    try:
        REGISTRY.get(activation)
    except KeyError as error:
        raise ValueError(f"mcjax.mlp_model: {error.args[0]}") from None
    d_params = derivative(mlp_loss, "params")
    labels = loss_rule.name == "softmax_cross_entropy"

    def init(key):
        return mlp_init(key, sizes, dtype=dtype)

    def loss_fn(params, batch):
        X, Y = batch
        return mlp_loss(params, X, Y, loss=loss, activation=activation)

    def backprop(params, batch):
        X, Y = batch
        return d_params(params, X, Y, loss=loss, activation=activation)

    def apply(params, X):
        return mlp_apply(params, X, activation=activation)

    def check(function, params, batch):
        X, Y = _pair(function, batch, "(X, Y)")
        check_params_fit(function, params, X)
        problems = Problems(function)
        n_out = params[-1]["W"].shape[0]
        integer = jnp.issubdtype(jnp.result_type(Y), jnp.integer)
        want = (jnp.shape(X)[0],) if labels and integer else (jnp.shape(X)[0], n_out)
        if jnp.shape(Y) != want:
            problems.shape(
                f"X has shape {shape_str(jnp.shape(X))} and the last layer has {n_out} outputs "
                f"but Y has shape {shape_str(jnp.shape(Y))}; expected Y of shape "
                f"{shape_str(want)} for loss {loss!r}"
            )
        elif labels and integer:
            _check_labels(problems, Y, n_out)
        problems.raise_if_any()

    return Model(init, loss_fn, backprop, apply, check,
                 {"model": "mlp", "sizes": list(sizes), "loss": loss, "activation": activation,
                  "dtype": jnp.dtype(dtype).name}, "mlp")
