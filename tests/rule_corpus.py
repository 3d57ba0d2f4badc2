"""Custom JAX rules as researchers write them, each right and with slips planted, for
``mcjax.check_rule``.

Every entry is a *builder*: ``build(slip)`` returns the ruled function, right for
``slip=None`` and with one slip planted otherwise.  The slips are the usual ones of a
hand-derived derivative: a factor, a sign, a transpose, a dropped term, a stale residual (the
backward pass reading a value saved for something else), a wrong mask, a symbolic zero
mishandled, a kernel that reads the batch axis.  Each :class:`RuleCase` draws its point with
NumPy in the dtype asked and, where the function has a kink, names a point on it (a correct
rule must pass there too).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero


class RuleCase(NamedTuple):
    name: str
    build: Callable  # slip (None: the right rule) -> the ruled function
    point: Callable  # (rng, dtype) -> args
    slips: tuple[str, ...]
    kink: Callable | None = None  # dtype -> args on a kink, or None
    argnums: int = 0
    surrogate: Callable | None = None


CORPUS: list[RuleCase] = []


def corpus(point, slips, kink=None, argnums=0, surrogate=None):
    def register(build):
        CORPUS.append(RuleCase(build.__name__, build, point, tuple(slips), kink, argnums,
                               surrogate))
        return build
    return register


def normal(*shape, scale=1.0):
    return lambda rng, dtype: (jnp.asarray(scale * rng.standard_normal(shape), dtype),)


def array(*values):
    return lambda dtype: (jnp.asarray(values, dtype),)


# -- element-wise and reductions: custom_jvp ------------------------------------------------------
@corpus(normal(5), ("factor", "sign", "dropped-term"))
def softplus(slip=None):
    @jax.custom_jvp
    def softplus(x):
        return jnp.log1p(jnp.exp(x))

    @softplus.defjvp
    def softplus_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        d = jax.nn.sigmoid(x)
        if slip == "factor":
            d = 2 * d
        if slip == "sign":
            d = jax.nn.sigmoid(-x)  # the derivative of softplus(-x)
        if slip == "dropped-term":
            d = jnp.exp(x)  # sigmoid's denominator dropped
        return softplus(x), t * d

    return softplus


@corpus(normal(4, scale=3.0), ("factor", "sign", "dropped-term"), kink=array(1.0, 1.0, -2.0, 0.5))
def logsumexp(slip=None):
    @jax.custom_jvp
    def logsumexp(x):
        m = jax.lax.stop_gradient(jnp.max(x))
        return m + jnp.log(jnp.sum(jnp.exp(x - m)))

    @logsumexp.defjvp
    def logsumexp_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        y = logsumexp(x)
        weights = jnp.exp(x - y)  # softmax(x)
        if slip == "dropped-term":
            weights = jnp.exp(x - jnp.max(x))  # the normalisation left out
        dy = jnp.sum(weights * t)
        if slip == "factor":
            dy = 2 * dy
        if slip == "sign":
            dy = -dy
        return y, dy

    return logsumexp


@corpus(normal(5), ("sign", "factor", "missing-gate"), kink=array(0.0, 1.0, -1.0, 0.0))
def relu(slip=None):
    @jax.custom_jvp
    def relu(x):
        return jnp.maximum(x, 0)

    @relu.defjvp
    def relu_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        gate = (x > 0) if slip != "sign" else (x < 0)
        d = t * gate.astype(t.dtype) if slip != "missing-gate" else t
        return relu(x), 2 * d if slip == "factor" else d

    return relu


@corpus(lambda rng, dtype: (jnp.asarray(rng.standard_normal(4) + 0.5, dtype),),
        ("factor", "dropped-term", "sign"))
def norm(slip=None):
    @jax.custom_jvp
    def norm(x):
        return jnp.sqrt(jnp.sum(x * x))

    @norm.defjvp
    def norm_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        y = norm(x)
        dy = jnp.sum(x * t)
        if slip != "dropped-term":
            dy = dy / y
        if slip == "factor":
            dy = 2 * dy  # the derivative of the squared norm's 2 kept
        return y, -dy if slip == "sign" else dy

    return norm


@corpus(normal(5, scale=2.0), ("dropped-term", "factor", "sign"))
def gelu(slip=None):
    c = math.sqrt(2 / math.pi)

    @jax.custom_jvp
    def gelu(x):
        return 0.5 * x * (1 + jnp.tanh(c * (x + 0.044715 * x**3)))

    @gelu.defjvp
    def gelu_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        th = jnp.tanh(c * (x + 0.044715 * x**3))
        inner = c * (1 + 3 * 0.044715 * x**2) if slip != "dropped-term" else c
        half = 0.5 if slip != "factor" else 1.0
        sech2 = 1 - th**2 if slip != "sign" else 1 + th**2
        return gelu(x), t * (0.5 * (1 + th) + half * x * sech2 * inner)

    return gelu


@corpus(lambda rng, dtype: (jnp.asarray(rng.uniform(0.5, 4.0, 4), dtype), 30),
        ("factor", "sign", "value-for-derivative"))
def newton_sqrt(slip=None):
    """A square root by Newton's iteration (a loop), differentiated implicitly."""
    @partial(jax.custom_jvp, nondiff_argnums=(1,))
    def newton_sqrt(a, iterations):
        return jax.lax.fori_loop(0, iterations, lambda i, y: 0.5 * (y + a / y), a)

    @newton_sqrt.defjvp
    def newton_sqrt_jvp(iterations, primals, tangents):
        (a,), (t,) = primals, tangents
        y = newton_sqrt(a, iterations)
        d = t / (2 * y)
        if slip == "factor":
            d = t / y
        if slip == "sign":
            d = -d
        if slip == "value-for-derivative":
            d = t * y
        return y, d

    return newton_sqrt


@corpus(normal(4, scale=2.5), ("factor", "sign", "dropped-term"),
        kink=array(0.5, 1.5, -0.5, 2.0), surrogate=lambda x: x)
def straight_through_round(slip=None):
    """Rounding whose gradient is the identity's (a straight-through estimator)."""
    @jax.custom_jvp
    def straight_through_round(x):
        return jnp.round(x)

    @straight_through_round.defjvp
    def ste_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        d = 2 * t if slip == "factor" else -t if slip == "sign" else t
        return jnp.round(x), jnp.zeros_like(t) if slip == "dropped-term" else d

    return straight_through_round


# -- several arguments, pytrees, integers, booleans, symbolic zeros ---------------------------------
@corpus(lambda rng, dtype: ({"W": jnp.asarray(rng.standard_normal((3, 3)), dtype),
                             "b": jnp.asarray(rng.standard_normal(3), dtype)},
                            jnp.asarray(rng.standard_normal(3), dtype)),
        ("transpose", "dropped-term", "sign"))
def affine(slip=None):
    """An affine layer whose parameters are a pytree (differentiated: argnums=0)."""
    @jax.custom_jvp
    def affine(params, x):
        return params["W"] @ x + params["b"]

    @affine.defjvp
    def affine_jvp(primals, tangents):
        (params, x), (dp, dx) = primals, tangents
        dW = dp["W"].T if slip == "transpose" else dp["W"]
        db = jnp.zeros_like(dp["b"]) if slip == "dropped-term" else dp["b"]
        dy = dW @ x + db + params["W"] @ dx
        return affine(params, x), -dy if slip == "sign" else dy

    return affine


@corpus(lambda rng, dtype: (jnp.asarray(rng.standard_normal(2) + 1.0, dtype),),
        ("sign", "dropped-term", "transpose"))
def polar(slip=None):
    """Cartesian to polar coordinates: a dict of two outputs."""
    @jax.custom_jvp
    def polar(v):
        return {"r": jnp.sqrt(v[0] ** 2 + v[1] ** 2), "theta": jnp.arctan2(v[1], v[0])}

    @polar.defjvp
    def polar_jvp(primals, tangents):
        (v,), (t,) = primals, tangents
        x, y, dx, dy = v[0], v[1], t[0], t[1]
        if slip == "transpose":
            dx, dy = dy, dx
        out = polar(v)
        r = out["r"]
        dr = (x * dx + y * dy) / r if slip != "dropped-term" else x * dx / r
        dtheta = (x * dy - y * dx) / r**2 if slip != "sign" else (y * dx - x * dy) / r**2
        return out, {"r": dr, "theta": dtheta}

    return polar


@corpus(lambda rng, dtype: (jnp.asarray(rng.standard_normal(6), dtype),
                            jnp.asarray([True, False, True, True, False, True])),
        ("inverted-mask", "factor", "dropped-term"))
def masked_mean(slip=None):
    """A mean over the entries a boolean mask keeps (its tangent is float0)."""
    @jax.custom_jvp
    def masked_mean(x, mask):
        count = jnp.maximum(jnp.sum(mask), 1).astype(x.dtype)
        return jnp.sum(jnp.where(mask, x, 0)) / count

    @masked_mean.defjvp
    def masked_mean_jvp(primals, tangents):
        (x, mask), (t, _) = primals, tangents
        count = jnp.maximum(jnp.sum(mask), 1).astype(x.dtype)
        keep = ~mask if slip == "inverted-mask" else mask
        kept = jnp.where(keep, t, 0) if slip != "dropped-term" else t
        return masked_mean(x, mask), jnp.sum(kept) / (x.size if slip == "factor" else count)

    return masked_mean


@corpus(lambda rng, dtype: (jnp.asarray(rng.standard_normal(4), dtype),
                            jnp.asarray(rng.standard_normal(4), dtype)),
        ("symbolic-zero", "factor", "transpose"))
def product(slip=None):
    """x * y with a rule that takes symbolic zero tangents (``symbolic_zeros=True``)."""
    @jax.custom_jvp
    def product(x, y):
        return x * y

    def product_jvp(primals, tangents):
        (x, y), (tx, ty) = primals, tangents
        out = x * y
        if slip == "symbolic-zero" and isinstance(ty, SymbolicZero):
            return out, jnp.zeros_like(out)  # "nothing moves": but x does
        dt = jnp.zeros_like(out)
        if not isinstance(tx, SymbolicZero):
            dt = dt + tx * (x if slip == "transpose" else y)  # the wrong factor
        if not isinstance(ty, SymbolicZero):
            dt = dt + x * ty
        return out, 2 * dt if slip == "factor" else dt

    product.defjvp(product_jvp, symbolic_zeros=True)
    return product


@corpus(normal(3, 4), ("factor", "dropped-term", "sign"))
def row_norms(slip=None):
    """The norm rule used under jax.vmap, row by row."""
    return jax.vmap(norm(slip))


@corpus(normal(4), ("factor", "sign", "dropped-term"))
def running_softplus(slip=None):
    """The softplus rule inside a lax.scan: running sums."""
    rule = softplus(slip)

    def running_softplus(x):
        def step(total, xi):
            total = total + rule(xi)
            return total, total
        return jax.lax.scan(step, jnp.zeros((), x.dtype), x)[1]

    return running_softplus


# -- custom_vjp: backward passes and their residuals -----------------------------------------------
@corpus(normal(4), ("stale-residual", "factor", "sign", "dropped-term"))
def sigmoid(slip=None):
    @jax.custom_vjp
    def sigmoid(x):
        return jax.nn.sigmoid(x)

    def fwd(x):
        y = sigmoid(x)
        return y, (x if slip == "stale-residual" else y)  # bwd expects the output

    def bwd(y, g):
        d = y * (1 - y) if slip != "dropped-term" else y
        d = -d if slip == "sign" else d
        return (g * d * (2 if slip == "factor" else 1),)

    sigmoid.defvjp(fwd, bwd)
    return sigmoid


@corpus(lambda rng, dtype: (jnp.asarray(rng.standard_normal(5), dtype),
                            jnp.asarray(rng.uniform(0.1, 1.0, 5), dtype)),
        ("sign", "dropped-term", "stale-residual", "factor"))
def softmax_cross_entropy(slip=None):
    """A fused softmax-cross-entropy; its residual is a dict."""
    @jax.custom_vjp
    def softmax_cross_entropy(logits, labels):
        return -jnp.sum(labels * jax.nn.log_softmax(logits))

    def fwd(logits, labels):
        log_probs = jax.nn.log_softmax(logits)
        probs = jnp.exp(log_probs) if slip != "stale-residual" else jnp.exp(logits)
        residual = {"probs": probs, "log_probs": log_probs, "labels": labels}
        return -jnp.sum(labels * log_probs), residual

    def bwd(res, g):
        p, y = res["probs"], res["labels"]
        d = p * jnp.sum(y) - y if slip != "dropped-term" else p * jnp.sum(y)
        d = -d if slip == "sign" else d
        return g * d * (2 if slip == "factor" else 1), -g * res["log_probs"]

    softmax_cross_entropy.defvjp(fwd, bwd)
    return softmax_cross_entropy


@corpus(lambda rng, dtype: (jnp.asarray(rng.standard_normal(5), dtype),
                            jnp.asarray(rng.uniform(0.0, 1.0, 5), dtype)),
        ("sign", "dropped-term", "stale-residual", "factor"))
def logistic_loss(slip=None):
    """Binary cross-entropy with logits."""
    @jax.custom_vjp
    def logistic_loss(z, y):
        return jnp.sum(jnp.log1p(jnp.exp(z)) - y * z)

    def fwd(z, y):
        saved = jax.nn.sigmoid(z) if slip == "stale-residual" else z
        return logistic_loss(z, y), (saved, y)

    def bwd(res, g):
        z, y = res
        d = jax.nn.sigmoid(z) - y if slip != "dropped-term" else jax.nn.sigmoid(z)
        d = -d if slip == "sign" else d
        return g * d * (2 if slip == "factor" else 1), -g * z

    logistic_loss.defvjp(fwd, bwd)
    return logistic_loss


@corpus(normal(6), ("dropped-term", "dropped-mean", "stale-residual", "factor"))
def layer_norm(slip=None):
    """Normalisation with its classic fused backward pass; the residual is a dict."""
    eps = 1e-5

    def forward(x):
        mu = jnp.mean(x)
        rstd = jax.lax.rsqrt(jnp.mean((x - mu) ** 2) + eps)
        return (x - mu) * rstd, rstd

    @jax.custom_vjp
    def layer_norm(x):
        return forward(x)[0]

    def fwd(x):
        xhat, rstd = forward(x)
        return xhat, {"xhat": xhat, "rstd": 1 / rstd if slip == "stale-residual" else rstd}

    def bwd(res, g):
        xhat, rstd = res["xhat"], res["rstd"]
        d = g if slip == "dropped-mean" else g - jnp.mean(g)
        if slip != "dropped-term":
            d = d - xhat * jnp.mean(g * xhat)
        return (rstd * d * (xhat.size if slip == "factor" else 1),)  # a sum for a mean

    layer_norm.defvjp(fwd, bwd)
    return layer_norm


@corpus(lambda rng, dtype: (jnp.asarray(rng.standard_normal((3, 3)), dtype),
                            jnp.asarray(rng.standard_normal((3, 3)), dtype)),
        ("transpose", "stale-residual", "sign", "factor"))
def matmul(slip=None):
    @jax.custom_vjp
    def matmul(a, b):
        return a @ b

    def fwd(a, b):
        return a @ b, (a, a if slip == "stale-residual" else b)

    def bwd(res, g):
        a, b = res
        da = g @ b.T if slip != "transpose" else (g @ b.T).T
        da = -da if slip == "sign" else da
        return da * (2 if slip == "factor" else 1), a.T @ g

    matmul.defvjp(fwd, bwd)
    return matmul


@corpus(lambda rng, dtype: (jnp.asarray(rng.standard_normal(4), dtype),),
        ("swapped-outputs", "sign", "dropped-term"))
def sincos(slip=None):
    """Two outputs from one custom_vjp."""
    @jax.custom_vjp
    def sincos(x):
        return jnp.sin(x), jnp.cos(x)

    def fwd(x):
        return sincos(x), x

    def bwd(x, g):
        gs, gc = g
        if slip == "swapped-outputs":
            gs, gc = gc, gs
        d = gs * jnp.cos(x)
        if slip != "dropped-term":
            d = d + gc * jnp.sin(x) if slip == "sign" else d - gc * jnp.sin(x)
        return (d,)

    sincos.defvjp(fwd, bwd)
    return sincos


@corpus(lambda rng, dtype: (jnp.asarray(rng.standard_normal((4, 3)), dtype),
                            jnp.asarray([0, 2, 2, 1, 3, 2], jnp.int32)),
        ("dropped-term", "wrong-index", "factor"))
def embedding(slip=None):
    """A table lookup by integer ids (repeated): the ids' cotangent is None."""
    @jax.custom_vjp
    def embedding(table, ids):
        return table[ids]

    def fwd(table, ids):
        return table[ids], (jnp.zeros_like(table), ids)

    def bwd(res, g):
        zeros, ids = res
        if slip == "dropped-term":
            return zeros.at[ids].set(g), None  # a repeated id keeps only one of its rows
        if slip == "wrong-index":
            return zeros.at[ids[::-1]].add(g), None
        return zeros.at[ids].add(g * (2 if slip == "factor" else 1)), None

    embedding.defvjp(fwd, bwd)
    return embedding


@corpus(lambda rng, dtype: (jnp.asarray(2.0 * rng.standard_normal(5), dtype), 1.0),
        ("inverted-mask", "stale-residual", "sign", "factor"),
        kink=lambda dtype: (jnp.asarray([1.0, -1.0, 0.5, -2.0, 3.0], dtype), 1.0),
        surrogate=lambda x, bound: jnp.clip(x, -bound, bound))
def clip_gradient(slip=None):
    """The identity whose gradient is clipped's: zero where |x| > bound (nondiff_argnums)."""
    @partial(jax.custom_vjp, nondiff_argnums=(1,))
    def clip_gradient(x, bound):
        return x

    def fwd(x, bound):
        return x, (jnp.clip(x, -bound, bound) if slip == "stale-residual" else x)

    def bwd(bound, x, g):
        inside = jnp.abs(x) <= bound
        inside = ~inside if slip == "inverted-mask" else inside
        d = jnp.where(inside, g, 0)
        return ((-d if slip == "sign" else d) * (2 if slip == "factor" else 1),)

    clip_gradient.defvjp(fwd, bwd)
    return clip_gradient


@corpus(lambda rng, dtype: (jnp.asarray(rng.standard_normal(5), dtype), 0.1),
        ("swapped", "sign", "dropped-term"), kink=lambda dtype: (jnp.asarray(
            [0.0, 1.0, -1.0], dtype), 0.1))
def leaky_relu(slip=None):
    """A custom_vjp with a kink and a slope among its nondiff_argnums."""
    @partial(jax.custom_vjp, nondiff_argnums=(1,))
    def leaky_relu(x, slope):
        return jnp.where(x > 0, x, slope * x)

    def fwd(x, slope):
        return leaky_relu(x, slope), x

    def bwd(slope, x, g):
        inside, outside = (slope, 1.0) if slip == "swapped" else (1.0, slope)
        if slip == "dropped-term":
            outside = 0.0
        d = g * jnp.where(x > 0, inside, outside).astype(g.dtype)
        return (-d if slip == "sign" else d,)

    leaky_relu.defvjp(fwd, bwd)
    return leaky_relu


@corpus(lambda rng, dtype: (jnp.asarray(rng.standard_normal(3), dtype),),
        ("symbolic-zero", "factor", "dropped-term"))
def moments(slip=None):
    """Two outputs (mean, mean of squares); the backward pass takes symbolic zero cotangents."""
    @jax.custom_vjp
    def moments(x):
        return jnp.mean(x), jnp.mean(x * x)

    def fwd(x):
        x = x.value  # symbolic_zeros=True: fwd gets CustomVJPPrimal values
        return moments(x), x

    def bwd(x, g):
        g_mean, g_square = g
        if slip == "symbolic-zero" and isinstance(g_square, SymbolicZero):
            return (jnp.zeros_like(x),)  # as if no output moved
        d = jnp.zeros_like(x)
        n = x.size if slip != "factor" else 1
        if not isinstance(g_mean, SymbolicZero) and slip != "dropped-term":
            d = d + g_mean / n
        if not isinstance(g_square, SymbolicZero):
            d = d + g_square * 2 * x / n
        return (d,)

    moments.defvjp(fwd, bwd, symbolic_zeros=True)
    return moments


def _normalise_kernel(axis_of_batch: bool):
    """A hand-written backward kernel (NumPy, through jax.pure_callback) of y = x / sum(x):
    ``(g - sum(g y)) / sum(x)``; with ``axis_of_batch`` False it sums over every axis, the
    batch axis that ``vmap_method="expand_dims"`` adds included."""
    def kernel(x, y, g):
        if axis_of_batch:
            return ((g - np.sum(g * y, axis=-1, keepdims=True))
                    / np.sum(x, axis=-1, keepdims=True)).astype(g.dtype)
        return ((g - np.sum(g * y)) / np.sum(x)).astype(g.dtype)
    return kernel


@corpus(lambda rng, dtype: (jnp.asarray(rng.uniform(0.5, 2.0, 4), dtype),),
        ("batch-axis", "sign", "dropped-term"))
def normalise(slip=None):
    """x / sum(x), whose backward pass is a NumPy kernel (a pure_callback)."""
    kernel = _normalise_kernel(axis_of_batch=slip != "batch-axis")

    @jax.custom_vjp
    def normalise(x):
        return x / jnp.sum(x)

    def fwd(x):
        return normalise(x), (x, normalise(x))

    def bwd(res, g):
        x, y = res
        if slip == "dropped-term":
            return (g / jnp.sum(x),)
        d = jax.pure_callback(kernel, jax.ShapeDtypeStruct(g.shape, g.dtype), x, y, g,
                              vmap_method="expand_dims")
        return (-d if slip == "sign" else d,)

    normalise.defvjp(fwd, bwd)
    return normalise
