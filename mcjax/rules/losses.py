r"""Losses and their gradients (Parr & Howard §6).

The paper trains its neuron on
$C(\mathbf{w}, b, X, \mathbf{y}) = \frac{1}{N}\sum_{i=1}^{N}\left(y_i - \max(0, \mathbf{w}\cdot\mathbf{x}_i + b)\right)^2$,
whose gradient (§6.1, §6.2) is $\frac{2}{N}\sum_{i:\,z_i>0} e_i\,\mathbf{x}_i^\top$ with
$e_i = \mathbf{w}\cdot\mathbf{x}_i + b - y_i$: only active units contribute.  The other losses
here are the ones a network is trained with.  Every loss is a scalar, so every derivative is
a gradient with the argument's shape.

Each loss also carries its hand-derived second derivatives (``hessian=``), of shape
``a.shape + b.shape``: $\frac{2}{N} I$ for MSE, $\frac{1}{B}\operatorname{diag}(\sigma(1-\sigma))$
for the logistic loss, $\frac{1}{B}(\operatorname{diag}(\mathbf{p}_b) - \mathbf{p}_b\mathbf{p}_b^\top)$
per row for softmax cross-entropy, $\frac{2}{N} X^\top \operatorname{diag}(\mathbb{1}[\mathbf{z} > 0]) X$
for the paper's loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._core._errors import DtypeError, Problems, shape_str
from mcjax._jacobian import Dense, Diagonal, ScaledIdentity, Zero
from mcjax._registry import Derivative, as_array, away_from_zero_numpy, normal, rule
from mcjax.rules._common import check_same_shape
from mcjax.rules.activations import relu, relu_gate

__all__ = ["neuron_loss", "mse", "softmax", "softmax_cross_entropy", "logistic_loss"]


# -- the paper's loss ---------------------------------------------------------------------
def _check_neuron_loss(w, b, X, y):
    problems = Problems("neuron_loss")
    w_ok = problems.expect_ndim("w", w, 1)
    problems.expect_ndim("b", b, 0)
    X_ok = problems.expect_ndim("X", X, 2)
    y_ok = problems.expect_ndim("y", y, 1)
    if w_ok and X_ok and X.shape[1] != w.shape[0]:
        problems.shape(
            f"w has shape {shape_str(w.shape)} but X has shape {shape_str(X.shape)}; "
            f"expected X of shape (N, {w.shape[0]})"
        )
    if X_ok and y_ok and y.shape[0] != X.shape[0]:
        problems.shape(
            f"X has shape {shape_str(X.shape)} but y has shape {shape_str(y.shape)}; "
            f"expected y of shape ({X.shape[0]},)"
        )
    problems.expect_same_float_dtype(("w", "b", "X", "y"), (w, b, X, y))
    problems.raise_if_any()


def _neuron_errors(w, b, X, y):
    """$z_i = \\mathbf{w}\\cdot\\mathbf{x}_i + b$, the gate $\\mathbb{1}[z_i > 0]$ and $e_i = z_i - y_i$."""
    z = X @ w + b
    return relu_gate(z) * (relu(z) - y)


def neuron_loss_wrt_w(w, b, X, y):
    """$\\frac{2}{N}\\sum_{i:\\,z_i>0} e_i\\,\\mathbf{x}_i^\\top$ (§6.1). Shape (n,)."""
    N = X.shape[0]
    return Dense((2.0 / N) * (_neuron_errors(w, b, X, y) @ X), in_ndim=1)


def neuron_loss_wrt_b(w, b, X, y):
    """$\\frac{2}{N}\\sum_{i:\\,z_i>0} e_i$ (§6.2). Shape ()."""
    N = X.shape[0]
    return Dense((2.0 / N) * jnp.sum(_neuron_errors(w, b, X, y)), in_ndim=0)


def _neuron_loss_second(pair: str):
    """$\\frac{2}{N}\\sum_i g_i\\,\\mathbf{u}_i\\mathbf{v}_i^\\top$, $g_i = \\mathbb{1}[z_i > 0]$, with
    $\\mathbf{u}_i, \\mathbf{v}_i$ each $\\mathbf{x}_i$ (for w) or 1 (for b): $e_i$'s derivative is
    $g_i\\,\\mathbf{x}_i$, and the gate's own derivative is 0 off the kink."""

    def second(w, b, X, y):
        g = (2.0 / X.shape[0]) * relu_gate(X @ w + b)
        if pair == "ww":
            return Dense(X.T @ (g[:, None] * X), in_ndim=1)
        if pair == "wb":
            return Dense(g @ X, in_ndim=0)
        return Dense(jnp.sum(g), in_ndim=0)

    second.__name__ = f"neuron_loss_second_{pair}"
    return second


def _sample_neuron_loss(rng, dims, dtype):
    N, n = dims["B"], dims["n"]
    w, b, X = rng.standard_normal(n), rng.standard_normal(), rng.standard_normal((N, n))
    # move each x_i along w so that z_i = w.x_i + b keeps away from the kink at 0
    target = away_from_zero_numpy(rng, (N,))
    X = X + ((target - X @ w - b) / (w @ w))[:, None] * w[None, :]
    return (*(as_array(a, dtype) for a in (w, b, X)), normal(rng, (N,), dtype))


@rule(
    "neuron_loss",
    section="6",
    shapes="w: n, b:, X: B n, y: B",
    sample=_sample_neuron_loss,
    kinks="w.x_i + b = 0 for some i (the unit's gate is 0 there)",
    wrt={
        "w": Derivative(neuron_loss_wrt_w, "2/N sum_{i: z_i > 0} (w.x_i + b - y_i) x_i^T",
                        r"\frac{2}{N}\sum_{i:\,z_i>0} (\mathbf{w}\cdot\mathbf{x}_i+b-y_i)\,\mathbf{x}_i^\top"),
        "b": Derivative(neuron_loss_wrt_b, "2/N sum_{i: z_i > 0} (w.x_i + b - y_i)",
                        r"\frac{2}{N}\sum_{i:\,z_i>0} (\mathbf{w}\cdot\mathbf{x}_i+b-y_i)"),
    },
    hessian={
        ("w", "w"): Derivative(_neuron_loss_second("ww"), "2/N X^T diag(1[z > 0]) X",
                               r"\frac{2}{N} X^\top \operatorname{diag}(\mathbb{1}[\mathbf{z}>0])\,X"),
        ("w", "b"): Derivative(_neuron_loss_second("wb"), "2/N sum_{i: z_i > 0} x_i",
                               r"\frac{2}{N}\sum_{i:\,z_i>0} \mathbf{x}_i"),
        ("b", "b"): Derivative(_neuron_loss_second("bb"), "2/N #{i: z_i > 0}",
                               r"\frac{2}{N}\,\#\{i : z_i > 0\}"),
    },
)
def neuron_loss(w, b, X, y):
    """The paper's loss $C = \\frac{1}{N}\\sum_i (y_i - \\max(0, \\mathbf{w}\\cdot\\mathbf{x}_i + b))^2$ (§6).

    Args:
      w: weights, shape (n,).
      b: bias, scalar ().
      X: inputs, shape (N, n), one example per row.
      y: targets, shape (N,).

    Returns:
      A scalar.
    """
    _check_neuron_loss(w, b, X, y)
    return jnp.mean((y - relu(X @ w + b)) ** 2)


# -- mean squared error -----------------------------------------------------------------------
def _mse_second(c: float):
    """$\\frac{c}{N} I$ of shape ``s + s``: MSE is a quadratic, its Hessian a constant."""

    def second(y_hat, y):
        return ScaledIdentity(jnp.asarray(c / y.size, jnp.result_type(y_hat)), y.shape)

    second.__name__ = "mse_second"
    return second


@rule(
    "mse",
    section="6",
    shapes="y_hat: B m, y: B m",
    wrt={
        "y_hat": Derivative(lambda y_hat, y: Dense(2 * (y_hat - y) / y.size, in_ndim=y.ndim),
                            "2/N (y_hat - y)", r"\frac{2}{N}(\hat{\mathbf{y}} - \mathbf{y})"),
        "y": Derivative(lambda y_hat, y: Dense(2 * (y - y_hat) / y.size, in_ndim=y.ndim),
                        "2/N (y - y_hat)", r"\frac{2}{N}(\mathbf{y} - \hat{\mathbf{y}})"),
    },
    hessian={
        ("y_hat", "y_hat"): Derivative(_mse_second(2.0), "2/N I", r"\frac{2}{N} I"),
        ("y_hat", "y"): Derivative(_mse_second(-2.0), "-2/N I", r"-\frac{2}{N} I"),
        ("y", "y"): Derivative(_mse_second(2.0), "2/N I", r"\frac{2}{N} I"),
    },
)
def mse(y_hat, y):
    """Mean squared error $\\frac{1}{N}\\sum (\\hat{y} - y)^2$ over all N entries.

    Args:
      y_hat: predictions, any shape s.
      y: targets, shape s.

    Returns:
      A scalar.
    """
    check_same_shape("mse", ("y_hat", "y"), y_hat, y)
    return jnp.mean((y_hat - y) ** 2)


# -- softmax and cross-entropy ----------------------------------------------------------------
def _softmax_jacobian(z):
    s = jax.nn.softmax(z)
    return Dense(jnp.diag(s) - jnp.outer(s, s), in_ndim=1)


@rule(
    "softmax",
    section="beyond",
    shapes="z: k",
    wrt={"z": Derivative(_softmax_jacobian, "diag(s) - s s^T, s = softmax(z)",
                         r"\operatorname{diag}(\mathbf{s}) - \mathbf{s}\mathbf{s}^\top")},
)
def softmax(z):
    """$s_i = e^{z_i} / \\sum_j e^{z_j}$ over the last axis, computed stably. z: (..., k) -> (..., k)."""
    return jax.nn.softmax(z, axis=-1)


def _targets(function: str, logits, labels):
    """Integer labels (shape logits.shape[:-1]) or probabilities (shape logits.shape) -> probabilities."""
    problems = Problems(function)
    problems.expect_ndim("logits", logits, tuple(range(1, 8)))
    problems.raise_if_any()
    if jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        if jnp.shape(labels) != jnp.shape(logits)[:-1]:
            problems.shape(
                f"logits has shape {shape_str(jnp.shape(logits))} but integer labels have shape "
                f"{shape_str(jnp.shape(labels))}; expected labels of shape "
                f"{shape_str(jnp.shape(logits)[:-1])}"
            )
        problems.raise_if_any()
        return jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    if not jnp.issubdtype(jnp.result_type(labels), jnp.floating):
        raise DtypeError(
            f"mcjax.{function}: labels have dtype {jnp.result_type(labels)}; expected integer "
            "class indices or floating probabilities"
        )
    if jnp.shape(labels) != jnp.shape(logits):
        problems.shape(
            f"logits has shape {shape_str(jnp.shape(logits))} but probability labels have shape "
            f"{shape_str(jnp.shape(labels))}; expected {shape_str(jnp.shape(logits))} "
            f"(or integer labels of shape {shape_str(jnp.shape(logits)[:-1])})"
        )
    problems.raise_if_any()
    return labels


def _cross_entropy_wrt_logits(logits, labels):
    p = _targets("softmax_cross_entropy", logits, labels)
    count = p.size // p.shape[-1]
    return Dense((jax.nn.softmax(logits, axis=-1) - p) / count, in_ndim=logits.ndim)


def _cross_entropy_second(logits, labels):
    """Per row $b$: $\\frac{1}{B}(\\operatorname{diag}(\\mathbf{p}_b) - \\mathbf{p}_b\\mathbf{p}_b^\\top)$,
    rows independent: shape ``logits.shape + logits.shape``, zero across rows.  The labels
    enter only the linear term, so the Hessian does not depend on them."""
    _targets("softmax_cross_entropy", logits, labels)  # the same argument checks
    k = logits.shape[-1]
    p = jax.nn.softmax(logits, axis=-1).reshape(-1, k)
    rows = p.shape[0]
    blocks = (jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :]) / rows
    H = jnp.einsum("rij,rs->risj", blocks, jnp.eye(rows, dtype=p.dtype))
    return Dense(H.reshape(logits.shape + logits.shape), in_ndim=logits.ndim)


def _sample_classification(rng, dims, dtype):
    logits = normal(rng, (dims["B"], dims["k"]), dtype, scale=3.0)
    return logits, as_array(rng.integers(0, dims["k"], dims["B"]), np.int32)


@rule(
    "softmax_cross_entropy",
    section="beyond",
    shapes="logits: B k, labels: B",
    sample=_sample_classification,
    wrt={"logits": Derivative(_cross_entropy_wrt_logits, "(softmax(z) - onehot(y)) / B",
                              r"\frac{1}{B}(\operatorname{softmax}(Z) - \operatorname{onehot}(\mathbf{y}))")},
    hessian={("logits", "logits"): Derivative(
        _cross_entropy_second, "per row b: (diag(p_b) - p_b p_b^T) / B, p = softmax(z)",
        r"\frac{1}{B}\left(\operatorname{diag}(\mathbf{p}_b) - \mathbf{p}_b\mathbf{p}_b^\top\right)"
        r"\ \text{per row}")},
)
def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against labels; finite for logits of ±1e4.

    $\\frac{1}{B}\\sum_b \\left(\\log\\sum_j e^{z_{bj}} - \\sum_j p_{bj} z_{bj}\\right)$, with the
    log-sum-exp taken after subtracting the row maximum.

    Args:
      logits: shape (B, k) (any leading axes).
      labels: integer classes of shape (B,), or probabilities of shape (B, k).

    Returns:
      A scalar, the mean over the B rows.
    """
    p = _targets("softmax_cross_entropy", logits, labels)
    lse = jax.nn.logsumexp(logits, axis=-1)
    return jnp.mean(lse - jnp.sum(p * logits, axis=-1))


def _sample_logistic(rng, dims, dtype):
    z = normal(rng, (dims["B"],), dtype, scale=3.0)
    return z, as_array(rng.integers(0, 2, dims["B"]), dtype)


@rule(
    "logistic_loss",
    section="beyond",
    shapes="logits: B, labels: B",
    sample=_sample_logistic,
    wrt={
        "logits": Derivative(lambda z, y: Dense((jax.nn.sigmoid(z) - y) / z.size, in_ndim=z.ndim),
                             "(sigmoid(z) - y) / B", r"\frac{1}{B}(\sigma(\mathbf{z}) - \mathbf{y})"),
        "labels": Derivative(lambda z, y: Dense(-z / z.size, in_ndim=z.ndim), "-z / B",
                             r"-\frac{1}{B}\mathbf{z}"),
    },
    hessian={
        ("logits", "logits"): Derivative(
            lambda z, y: Diagonal(jax.nn.sigmoid(z) * jax.nn.sigmoid(-z) / z.size),
            "diag(sigmoid(z) (1 - sigmoid(z))) / B",
            r"\frac{1}{B}\operatorname{diag}(\sigma(\mathbf{z})(1 - \sigma(\mathbf{z})))"),
        ("logits", "labels"): Derivative(
            lambda z, y: ScaledIdentity(jnp.asarray(-1.0 / z.size, z.dtype), z.shape),
            "-I / B", r"-\frac{1}{B} I"),
        ("labels", "labels"): Derivative(
            lambda z, y: Zero(y.shape, y.shape, z.dtype), "0", r"0"),
    },
)
def logistic_loss(logits, labels):
    """Mean binary cross-entropy $\\frac{1}{B}\\sum_b \\left(\\ln(1 + e^{z_b}) - y_b z_b\\right)$.

    Args:
      logits: shape (B,) (any shape s).
      labels: targets in [0, 1], shape s.

    Returns:
      A scalar; finite for logits of ±1e4.
    """
    check_same_shape("logistic_loss", ("logits", "labels"), logits, labels)
    zero = jnp.zeros((), jnp.result_type(logits))
    return jnp.mean(jnp.logaddexp(zero, logits) - labels * logits)
