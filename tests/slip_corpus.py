"""A corpus of the slips researchers make in hand-written backward passes.

Each function is a realistic layer with a scalar loss ``sum(c * layer(...))`` (``c`` a fixed
upstream gradient) and a correct hand-written gradient; each slip is that gradient with one
mistake, tagged with the kinds (``mcjax.Slip.kind``) the diagnosis must name first.
``tests/test_slip_corpus.py`` counts how many are caught, named right, named wrongly, and the
false alarms on the correct gradients.

``CORPUS``: name -> ``Layer(f, correct, args(dtype), argnums, slips)``, ``slips``: name ->
``(wrong gradient, kinds)``.  ``FAST``: the same for fast mode (at least 200k parameters),
to be filled where fast mode names slips.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf


class Layer(NamedTuple):
    f: Callable
    correct: Callable
    args: Callable[[Any], tuple]  # dtype -> the point
    argnums: int
    slips: dict


rng = np.random.default_rng(20)
N, D, T, C, K = 4, 3, 6, 2, 3


def _c(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


def cast(a, like):
    return jnp.asarray(a, jnp.result_type(like))


def pt(*shapes, seed=0, positive=()):
    """The point: standard normal arrays of ``shapes`` (absolute value at ``positive``)."""
    r = np.random.default_rng(seed)
    values = [r.standard_normal(s) for s in shapes]
    values = [np.abs(v) + 0.5 if i in positive else v for i, v in enumerate(values)]
    return lambda dtype: tuple(jnp.asarray(v, dtype) for v in values)


# -- batch norm over the batch axis: y = gamma x_hat + beta -----------------------------------
CY = _c((N, D), 1)
GAMMA = np.array([[1.5, -0.7, 2.0]])
EPS = 1e-5


def batch_norm(x):
    mu = jnp.mean(x, axis=0, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=0, keepdims=True)
    xhat = (x - mu) / jnp.sqrt(var + EPS)
    return jnp.sum(cast(CY, x) * (cast(GAMMA, x) * xhat))


def _bn_parts(x, ddof=0):
    mu = jnp.mean(x, axis=0, keepdims=True)
    var = jnp.sum((x - mu) ** 2, axis=0, keepdims=True) / (x.shape[0] - ddof)
    s = jnp.sqrt(var + EPS)
    return (x - mu) / s, s


def d_batch_norm(x, gamma=True, ddof=0, mean_term=True):
    """The staged backward pass (cs231n's): x_hat, then the variance, then the mean."""
    n = x.shape[0]
    xmu = x - jnp.mean(x, axis=0, keepdims=True)
    s = jnp.sqrt(jnp.mean(xmu**2, axis=0, keepdims=True) + EPS)
    dxhat = cast(CY, x) * (cast(GAMMA, x) if gamma else 1.0)
    dvar = jnp.sum(dxhat * xmu, axis=0, keepdims=True) * -0.5 / s**3
    dmu = -jnp.sum(dxhat, axis=0, keepdims=True) / s if mean_term else 0.0
    return dxhat / s + dvar * 2 * xmu / (n - ddof) + dmu / n


BATCH_NORM = Layer(batch_norm, d_batch_norm, pt((N, D)), 0, {
    "gamma left out": (lambda x: d_batch_norm(x, gamma=False), {"missing-factor"}),
    "N - 1 in the variance": (lambda x: d_batch_norm(x, ddof=1), {"count-off-by-one"}),
    "mean term dropped": (lambda x: d_batch_norm(x, mean_term=False), {"missing-term"}),
    "sign flipped": (lambda x: -d_batch_norm(x), {"sign"}),
    "1/N twice": (lambda x: d_batch_norm(x) / N, {"factor"}),
})


# -- batch norm's parameters: d / d gamma, beta -----------------------------------------------
XB = _c((N, D), 2)


def batch_norm_params(p):
    x = cast(XB, p["gamma"])
    mu = jnp.mean(x, axis=0, keepdims=True)
    xhat = (x - mu) / jnp.sqrt(jnp.mean((x - mu) ** 2, axis=0, keepdims=True) + EPS)
    return jnp.sum(cast(CY, x) * (p["gamma"][None] * xhat + p["beta"][None]))


def d_batch_norm_params(p, use_x=False, beta_factor=1.0, gamma_sign=1.0):
    x = cast(XB, p["gamma"])
    xhat, _ = _bn_parts(x)
    dy = cast(CY, x)
    return {"gamma": gamma_sign * jnp.sum(dy * (x if use_x else xhat), axis=0),
            "beta": beta_factor * jnp.sum(dy, axis=0)}


def _bn_params_point(dtype):
    return ({"gamma": jnp.asarray(GAMMA[0], dtype), "beta": jnp.asarray([0.1, 0.2, -0.3], dtype)},)


BATCH_NORM_PARAMS = Layer(batch_norm_params, d_batch_norm_params, _bn_params_point, 0, {
    "x for x_hat": (lambda p: d_batch_norm_params(p, use_x=True), {"before-transform"}),
    "beta averaged": (lambda p: d_batch_norm_params(p, beta_factor=1 / N), {"leaf-factor"}),
    "gamma's sign": (lambda p: d_batch_norm_params(p, gamma_sign=-1.0), {"leaf-sign"}),
})


# -- conv1d, channels first, padding 1: y[o, t] = sum_c,k w[o, c, k] x[c, t + k - 1] ------------
W_CONV = _c((C, C, K), 3)
CY_CONV = _c((C, T), 4)


def conv1d(x):
    y = jax.lax.conv_general_dilated(x[None], cast(W_CONV, x), (1,), [(1, 1)],
                                     dimension_numbers=("NCH", "OIH", "NCH"))[0]
    return jnp.sum(cast(CY_CONV, x) * y) / T


def d_conv1d(x, flip=False, shift=0, taps=K, swap_channels=False, mean=True):
    w, dy = cast(W_CONV, x), cast(CY_CONV, x)
    dx = jnp.zeros((C, T + 2), x.dtype)
    for k in range(taps):
        tap = w[:, :, K - 1 - k] if flip else w[:, :, k]
        contribution = (tap if swap_channels else tap.T) @ dy  # (c, t) at x index t + k
        dx = dx.at[:, k:k + T].add(contribution)
    dx = jnp.roll(dx, shift, axis=1)
    return dx[:, 1:T + 1] / (T if mean else 1)


CONV1D = Layer(conv1d, d_conv1d, pt((C, T), seed=5), 0, {
    "kernel not flipped": (lambda x: d_conv1d(x, flip=True), {"kernel-not-flipped"}),
    "padding off by one": (lambda x: d_conv1d(x, shift=1), {"padding-off"}),
    "a tap missing": (lambda x: d_conv1d(x, taps=K - 1), {"tap-missing"}),
    "1/T left out": (lambda x: d_conv1d(x, mean=False), {"factor"}),
    "sign": (lambda x: -d_conv1d(x), {"sign"}),
})


# -- attention: softmax(Q K^T / sqrt(d)) V, d / d K -----------------------------------------
S_ATT, D_ATT = 3, 4
Q_ATT, V_ATT, CY_ATT = _c((S_ATT, D_ATT), 6), _c((S_ATT, D_ATT), 7), _c((S_ATT, D_ATT), 8)


def attention(k):
    q, v = cast(Q_ATT, k), cast(V_ATT, k)
    p = jax.nn.softmax(q @ k.T / jnp.sqrt(float(D_ATT)), axis=-1)
    return jnp.sum(cast(CY_ATT, k) * (p @ v))


def d_attention(k, transpose=True, scale=True, softmax_term=True, sign=1.0):
    q, v, dy = cast(Q_ATT, k), cast(V_ATT, k), cast(CY_ATT, k)
    p = jax.nn.softmax(q @ k.T / jnp.sqrt(float(D_ATT)), axis=-1)
    dp = dy @ v.T
    ds = p * dp - (p * jnp.sum(p * dp, axis=-1, keepdims=True) if softmax_term else 0.0)
    ds = ds / (jnp.sqrt(float(D_ATT)) if scale else 1.0)
    return sign * ((ds.T if transpose else ds) @ q)


ATTENTION = Layer(attention, d_attention, pt((S_ATT, D_ATT), seed=9), 0, {
    "dS not transposed": (lambda k: d_attention(k, transpose=False), {"not-transposed"}),
    "1/sqrt(d) left out": (lambda k: d_attention(k, scale=False), {"factor"}),
    "softmax's -p p^T term": (lambda k: d_attention(k, softmax_term=False), {"missing-term"}),
    "sign": (lambda k: d_attention(k, sign=-1.0), {"sign"}),
})


# -- RMSNorm: y = g x / sqrt(mean(x^2) + eps) per row -----------------------------------------
G_RMS = np.array([[0.5, 1.5, -1.0, 2.0]])
CY_RMS = _c((3, 4), 10)


def rms_norm(x):
    r = jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + EPS)
    return jnp.sum(cast(CY_RMS, x) * (x / r * cast(G_RMS, x)))


def d_rms_norm(x, g=True, proj=True, proj_scale=1.0):
    d = x.shape[-1]
    r = jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + EPS)
    dn = cast(CY_RMS, x) * (cast(G_RMS, x) if g else 1.0)
    out = dn / r
    if proj:
        out = out - proj_scale * x * jnp.sum(dn * x, axis=-1, keepdims=True) / (d * r**3)
    return out


RMS_NORM = Layer(rms_norm, d_rms_norm, pt((3, 4), seed=11), 0, {
    "g left out": (lambda x: d_rms_norm(x, g=False), {"missing-factor"}),
    "projection term dropped": (lambda x: d_rms_norm(x, proj=False), {"missing-term"}),
    "projection term's sign": (lambda x: d_rms_norm(x, proj_scale=-1.0), {"sign-in-term"}),
    "factor 2": (lambda x: 2 * d_rms_norm(x), {"factor"}),
})


# -- GELU, exact: x Phi(x) ---------------------------------------------------------------------
SQRT2, SQRT2PI = float(np.sqrt(2.0)), float(np.sqrt(2 * np.pi))
CY_G = _c((6,), 12)


def gelu_exact(x):
    return jnp.sum(cast(CY_G, x) * (x * 0.5 * (1 + erf(x / SQRT2))))


def d_gelu_exact(x, pdf_term=True, sign=1.0, cdf_term=True):
    phi_cdf = 0.5 * (1 + erf(x / SQRT2))
    pdf = jnp.exp(-0.5 * x * x) / SQRT2PI
    return cast(CY_G, x) * ((phi_cdf if cdf_term else 0.0)
                            + (sign * x * pdf if pdf_term else 0.0))


GELU_EXACT = Layer(gelu_exact, d_gelu_exact, pt((6,), seed=13), 0, {
    "x phi(x) term dropped": (lambda x: d_gelu_exact(x, pdf_term=False), {"missing-term"}),
    "x phi(x) term's sign": (lambda x: d_gelu_exact(x, sign=-1.0), {"sign-in-term"}),
    "Phi(x) term dropped": (lambda x: d_gelu_exact(x, cdf_term=False), {"missing-term"}),
    "doubled": (lambda x: 2 * d_gelu_exact(x), {"factor"}),
})


# -- GELU, tanh approximation -----------------------------------------------------------------
A_G = float(np.sqrt(2 / np.pi))


def gelu_tanh(x):
    return jnp.sum(cast(CY_G, x) * (0.5 * x * (1 + jnp.tanh(A_G * (x + 0.044715 * x**3)))))


def d_gelu_tanh(x, tanh_prime="right", cubic=True):
    t = jnp.tanh(A_G * (x + 0.044715 * x**3))
    dt = {"right": 1 - t * t, "neighbour": 1 - t}[tanh_prime]
    inner = A_G * (1 + (3 * 0.044715 * x * x if cubic else 0.0))
    return cast(CY_G, x) * (0.5 * (1 + t) + 0.5 * x * dt * inner)


GELU_TANH = Layer(gelu_tanh, d_gelu_tanh, pt((6,), seed=14), 0, {
    "1 - tanh for 1 - tanh^2": (lambda x: d_gelu_tanh(x, tanh_prime="neighbour"),
                                {"neighbour-derivative"}),
    "cubic's derivative dropped": (lambda x: d_gelu_tanh(x, cubic=False), {"missing-term"}),
    "sign": (lambda x: -d_gelu_tanh(x), {"sign"}),
})


# -- max-pool of width 2 -----------------------------------------------------------------------
CY_P = _c((4,), 15)


def max_pool(x):
    return jnp.sum(cast(CY_P, x) * jnp.maximum(x[0::2], x[1::2]))


def d_max_pool(x, rule="argmax"):
    a, b = x[0::2], x[1::2]
    first = {"argmax": a > b, "first": jnp.ones_like(a, bool), "second": jnp.zeros_like(a, bool)}[rule]
    dy = cast(CY_P, x)
    return jnp.stack([jnp.where(first, dy, 0.0), jnp.where(first, 0.0, dy)], axis=1).ravel()


MAX_POOL = Layer(max_pool, d_max_pool, pt((8,), seed=16), 0, {
    "always the first": (lambda x: d_max_pool(x, "first"), {"other-branch"}),
    "always the second": (lambda x: d_max_pool(x, "second"), {"other-branch"}),
    "sign": (lambda x: -d_max_pool(x), {"sign"}),
})


# -- Huber loss, delta = 1 ---------------------------------------------------------------------
Y_H = np.array([0.0, 1.0, -1.0, 0.5, 2.0, -2.0])
DELTA = 1.0


def huber(p):
    r = p - cast(Y_H, p)
    a = jnp.abs(r)
    return jnp.mean(jnp.where(a <= DELTA, 0.5 * r**2, DELTA * (a - 0.5 * DELTA)))


def d_huber(p, inner="r", outer="sign", branch="both", mean=True):
    r = p - cast(Y_H, p)
    g_in = {"r": r, "2r": 2 * r}[inner]
    g_out = {"sign": DELTA * jnp.sign(r), "none": DELTA * jnp.ones_like(r)}[outer]
    g = {"both": jnp.where(jnp.abs(r) <= DELTA, g_in, g_out), "inner": g_in,
         "outer": g_out}[branch]
    return g / (r.shape[0] if mean else 1)


def _huber_point(dtype):
    return (jnp.asarray(Y_H + np.array([0.3, -2.5, 0.4, 1.9, -0.2, -3.1]), dtype),)


HUBER = Layer(huber, d_huber, _huber_point, 0, {
    "outer branch everywhere": (lambda p: d_huber(p, branch="outer"), {"other-branch"}),
    "no clip (inner branch everywhere)": (lambda p: d_huber(p, branch="inner"),
                                          {"other-branch"}),
    "sign dropped": (lambda p: d_huber(p, outer="none"), {"sign-dropped"}),
    "2r inside": (lambda p: d_huber(p, inner="2r"), {"missing-factor"}),
    "mean's 1/N left out": (lambda p: d_huber(p, mean=False), {"factor"}),
    "sign": (lambda p: -d_huber(p), {"sign"}),
})


# -- cosine similarity, d / d a ----------------------------------------------------------------
B_COS = _c((5,), 17)


def cosine(a):
    b = cast(B_COS, a)
    return jnp.dot(a, b) / (jnp.sqrt(jnp.dot(a, a)) * jnp.sqrt(jnp.dot(b, b)))


def d_cosine(a, projection=True, sign=1.0):
    b = cast(B_COS, a)
    na, nb = jnp.sqrt(jnp.dot(a, a)), jnp.sqrt(jnp.dot(b, b))
    cos = jnp.dot(a, b) / (na * nb)
    return sign * (b / (na * nb) - (cos * a / na**2 if projection else 0.0))


COSINE = Layer(cosine, d_cosine, pt((5,), seed=18), 0, {
    "projection term left out": (lambda a: d_cosine(a, projection=False), {"missing-term"}),
    "sign": (lambda a: d_cosine(a, sign=-1.0), {"sign"}),
})


# -- an MLP with a softmax cross-entropy, d / d params ----------------------------------------
B_MLP, I_MLP, H_MLP = 5, 4, 3
X_MLP = _c((B_MLP, I_MLP), 19)
Y_MLP = np.eye(H_MLP)[np.array([0, 2, 1, 1, 0])]


def mlp(params):
    x = cast(X_MLP, params["W1"])
    a1 = jax.nn.relu(x @ params["W1"] + params["b1"][None])
    logits = a1 @ params["W2"] + params["b2"][None]
    return -jnp.mean(jnp.sum(cast(Y_MLP, x) * jax.nn.log_softmax(logits), axis=-1))


def d_mlp(params, transpose=True, b2_mean=True, gate=True, w1_sign=1.0, z_for_a=False):
    x, y = cast(X_MLP, params["W1"]), cast(Y_MLP, params["W1"])
    z1 = x @ params["W1"] + params["b1"][None]
    a1 = jax.nn.relu(z1)
    logits = a1 @ params["W2"] + params["b2"][None]
    dlogits = (jax.nn.softmax(logits) - y) / B_MLP
    da1 = dlogits @ (params["W2"].T if transpose else params["W2"])
    dz1 = jnp.where(z1 > 0, da1, 0.0) if gate else da1
    return {"W1": w1_sign * x.T @ dz1, "b1": jnp.sum(dz1, axis=0),
            "W2": (z1 if z_for_a else a1).T @ dlogits,
            "b2": jnp.sum(dlogits, axis=0) * (1 if b2_mean else B_MLP)}


def _mlp_point(dtype):
    r = np.random.default_rng(21)
    return ({"W1": jnp.asarray(r.standard_normal((I_MLP, H_MLP)), dtype),
             "b1": jnp.asarray(r.standard_normal(H_MLP) * 0.5, dtype),
             "W2": jnp.asarray(r.standard_normal((H_MLP, H_MLP)), dtype),
             "b2": jnp.asarray(r.standard_normal(H_MLP) * 0.5, dtype)},)


MLP = Layer(mlp, d_mlp, _mlp_point, 0, {
    "W2 not transposed": (lambda p: d_mlp(p, transpose=False), {"not-transposed"}),
    "b2 summed, not averaged": (lambda p: d_mlp(p, b2_mean=False), {"leaf-factor"}),
    "relu's gate forgotten": (lambda p: d_mlp(p, gate=False), {"missing-gate"}),
    "W1's sign": (lambda p: d_mlp(p, w1_sign=-1.0), {"leaf-sign"}),
    "z1 for relu(z1) in dW2": (lambda p: d_mlp(p, z_for_a=True), {"before-transform"}),
})


# -- layer norm over the last axis (no affine) ------------------------------------------------
CY_LN = _c((2, 5), 22)


def layer_norm(x):
    mu = jnp.mean(x, axis=-1, keepdims=True)
    xc = x - mu
    s = jnp.sqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + EPS)
    return jnp.sum(cast(CY_LN, x) * (xc / s))


def d_layer_norm(x, mean_term=True, proj_term=True, ddof=0, factor=1.0):
    d = x.shape[-1]
    xc = x - jnp.mean(x, axis=-1, keepdims=True)
    s = jnp.sqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + EPS)
    dy = cast(CY_LN, x)
    dvar = jnp.sum(dy * xc, axis=-1, keepdims=True) * -0.5 / s**3 if proj_term else 0.0
    dmu = -jnp.sum(dy, axis=-1, keepdims=True) / s if mean_term else 0.0
    return factor * (dy / s + dvar * 2 * xc / (d - ddof) + dmu / d)


LAYER_NORM = Layer(layer_norm, d_layer_norm, pt((2, 5), seed=23), 0, {
    "mean term dropped": (lambda x: d_layer_norm(x, mean_term=False), {"missing-term"}),
    "variance term dropped": (lambda x: d_layer_norm(x, proj_term=False), {"missing-term"}),
    "sign": (lambda x: -d_layer_norm(x), {"sign"}),
    "N - 1": (lambda x: d_layer_norm(x, ddof=1), {"count-off-by-one"}),
    "1/D twice": (lambda x: d_layer_norm(x, factor=1 / 5), {"factor"}),
})


# -- logistic regression, d / d w -------------------------------------------------------------
X_LR = _c((6, 3), 24)
Y_LR = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])


def logistic(w):
    x, y = cast(X_LR, w), cast(Y_LR, w)
    p = jax.nn.sigmoid(x @ w)
    return -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log(1 - p))


def d_logistic(w, mean=True, sign=1.0):
    x, y = cast(X_LR, w), cast(Y_LR, w)
    p = jax.nn.sigmoid(x @ w)
    return sign * x.T @ (p - y) / (x.shape[0] if mean else 1)


LOGISTIC = Layer(logistic, d_logistic, pt((3,), seed=25), 0, {
    "mean's 1/N left out": (lambda w: d_logistic(w, mean=False), {"factor"}),
    "sign": (lambda w: d_logistic(w, sign=-1.0), {"sign"}),
})


# -- softmax cross-entropy, d / d logits -------------------------------------------------------
Y_CE = np.array([0.0, 1.0, 0.0, 0.0])


def softmax_ce(z):
    return -jnp.sum(cast(Y_CE, z) * jax.nn.log_softmax(z))


def d_softmax_ce(z, softmax_term=True, sign=1.0):
    y = cast(Y_CE, z)
    return sign * ((jax.nn.softmax(z) if softmax_term else 0.0) - y)


SOFTMAX_CE = Layer(softmax_ce, d_softmax_ce, pt((4,), seed=26), 0, {
    "softmax term left out": (lambda z: d_softmax_ce(z, softmax_term=False), {"missing-term"}),
    "sign": (lambda z: d_softmax_ce(z, sign=-1.0), {"sign"}),
})


# -- a residual block with jax.nn.relu: x + W relu(x) ----------------------------------------
W_RES = _c((4, 4), 27)
CY_RES = _c((4,), 28)


def residual(x):
    return jnp.sum(cast(CY_RES, x) * (x + cast(W_RES, x) @ jax.nn.relu(x)))


def d_residual(x, skip=True, gate=True, transpose=True):
    w, dy = cast(W_RES, x), cast(CY_RES, x)
    back = (w.T if transpose else w) @ dy
    return (dy if skip else 0.0) + (jnp.where(x > 0, back, 0.0) if gate else back)


RESIDUAL = Layer(residual, d_residual, pt((4,), seed=29), 0, {
    "skip connection dropped": (lambda x: d_residual(x, skip=False), {"missing-term"}),
    "relu's gate forgotten": (lambda x: d_residual(x, gate=False), {"missing-gate"}),
    "W not transposed": (lambda x: d_residual(x, transpose=False), {"not-transposed"}),
    "sign": (lambda x: -d_residual(x), {"sign"}),
})


# -- a Gaussian negative log-likelihood, scale by softplus ------------------------------------
Y_NLL, MU_NLL = _c((5,), 30), _c((5,), 31)


def gaussian_nll(raw):
    sigma = jax.nn.softplus(raw)
    r = (cast(Y_NLL, raw) - cast(MU_NLL, raw)) / sigma
    return jnp.sum(0.5 * r * r + jnp.log(sigma))


def d_gaussian_nll(raw, dsoftplus="sigmoid", log_term=True):
    sigma = jax.nn.softplus(raw)
    r2 = ((cast(Y_NLL, raw) - cast(MU_NLL, raw)) / sigma) ** 2
    dsigma = -r2 / sigma + (1 / sigma if log_term else 0.0)
    slope = {"sigmoid": jax.nn.sigmoid(raw), "value": sigma}[dsoftplus]
    return dsigma * slope


GAUSSIAN_NLL = Layer(gaussian_nll, d_gaussian_nll, pt((5,), seed=32), 0, {
    "softplus for its derivative": (lambda r: d_gaussian_nll(r, dsoftplus="value"),
                                    {"value-for-derivative"}),
    "log sigma's term dropped": (lambda r: d_gaussian_nll(r, log_term=False), {"missing-term"}),
    "sign": (lambda r: -d_gaussian_nll(r), {"sign"}),
})


# -- squeeze-excite: x * sigmoid(W2 relu(W1 mean_t x)) -----------------------------------------
C_SE, T_SE, R_SE = 3, 4, 2
W1_SE, W2_SE, CY_SE = _c((R_SE, C_SE), 33), _c((C_SE, R_SE), 34), _c((C_SE, T_SE), 35)


def squeeze_excite(x):
    s = jax.nn.sigmoid(cast(W2_SE, x) @ jax.nn.relu(cast(W1_SE, x) @ jnp.mean(x, axis=1)))
    return jnp.sum(cast(CY_SE, x) * (x * s[:, None]))


def d_squeeze_excite(x, gate_path=True, dsig="right", mean=True):
    w1, w2, dy = cast(W1_SE, x), cast(W2_SE, x), cast(CY_SE, x)
    z1 = w1 @ jnp.mean(x, axis=1)
    h = jax.nn.relu(z1)
    s = jax.nn.sigmoid(w2 @ h)
    dx = dy * s[:, None]
    if gate_path:
        ds = jnp.sum(dy * x, axis=1)
        dz2 = ds * {"right": s * (1 - s), "value": s}[dsig]
        dm = w1.T @ jnp.where(z1 > 0, w2.T @ dz2, 0.0)
        dx = dx + dm[:, None] / (T_SE if mean else 1)
    return dx


SQUEEZE_EXCITE = Layer(squeeze_excite, d_squeeze_excite, pt((C_SE, T_SE), seed=37), 0, {
    "gate's path dropped": (lambda x: d_squeeze_excite(x, gate_path=False), {"missing-term"}),
    "sigma for sigma'": (lambda x: d_squeeze_excite(x, dsig="value"), {"value-for-derivative"}),
    "doubled": (lambda x: 2 * d_squeeze_excite(x), {"factor"}),
})


# -- a masked swish: mask * x sigmoid(x) (a padding mask over positions) ---------------------
MASK = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 1.0])


def masked_swish(x):
    return jnp.sum(cast(CY_G, x) * cast(MASK, x) * (x * jax.nn.sigmoid(x)))


def d_masked_swish(x, mask=True, x_term=True, dsig="right"):
    s = jax.nn.sigmoid(x)
    ds = {"right": s * (1 - s), "value": s}[dsig]
    return cast(CY_G, x) * (cast(MASK, x) if mask else 1.0) * (s + (x * ds if x_term else 0.0))


MASKED_SWISH = Layer(masked_swish, d_masked_swish, pt((6,), seed=38), 0, {
    "mask forgotten": (lambda x: d_masked_swish(x, mask=False), {"missing-factor"}),
    "x sigma' term dropped": (lambda x: d_masked_swish(x, x_term=False), {"missing-term"}),
    "sigma for sigma'": (lambda x: d_masked_swish(x, dsig="value"), {"value-for-derivative"}),
})


CORPUS = {
    "batch norm": BATCH_NORM, "batch norm's parameters": BATCH_NORM_PARAMS, "conv1d": CONV1D,
    "attention": ATTENTION, "RMSNorm": RMS_NORM, "GELU (erf)": GELU_EXACT,
    "GELU (tanh)": GELU_TANH, "max-pool": MAX_POOL, "Huber": HUBER, "cosine": COSINE,
    "MLP": MLP, "layer norm": LAYER_NORM, "logistic regression": LOGISTIC,
    "softmax cross-entropy": SOFTMAX_CE, "residual block": RESIDUAL,
    "Gaussian NLL": GAUSSIAN_NLL, "squeeze-excite": SQUEEZE_EXCITE, "masked swish": MASKED_SWISH,
}

def _fast() -> dict[str, Layer]:
    from test_fast_diagnose import corpus  # fast mode's own cases: an MLP, 10 slips

    return {"MLP, fast mode": Layer(*corpus())}


FAST: dict[str, Layer] = _fast()
"""Fast-mode slips (at least 200k parameters), from ``tests/test_fast_diagnose.py``."""
