"""The functions ``mcjax.derive`` is checked on: every registered forward function with
respect to each argument, and the layers of deep learning the paper's rules build.

Each :class:`Case` draws its arguments with NumPy (a fixed seed) in the dtype asked, away
from kinks where the function has one (the kink tests put points on them on purpose).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import mcjax
from mcjax.registry import away_from_zero

DIMS = {"n": 3, "m": 4, "B": 2, "k": 3}


class Case(NamedTuple):
    name: str
    f: Callable
    sample: Callable  # (rng, dtype) -> args
    argnums: int = 0


def _normal(rng, shape, dtype, scale=1.0):
    return jnp.asarray(scale * rng.standard_normal(shape), dtype)


def registry_cases() -> list[Case]:
    """Every registered rule, with respect to each argument it has a derivative for."""
    cases = []
    for rule in mcjax.registry.REGISTRY:
        f = functools.partial(rule.forward, **rule.hyper) if rule.hyper else rule.forward
        for wrt in rule.wrt:
            sample = functools.partial(_rule_sample, rule)
            cases.append(Case(f"{rule.name}/{wrt}", f, sample, rule.arg_index(wrt)))
    return cases


def _rule_sample(rule, rng, dtype):
    return rule.example(rng, DIMS, jnp.dtype(dtype))


# -- the layers of deep learning -------------------------------------------------------------
def layer_norm(x, gamma, beta):
    mu = jnp.mean(x)
    d = x - mu
    var = jnp.mean(d * d)
    return gamma * d * jax.lax.rsqrt(var + 1e-5) + beta


def attention(Q, K, V):
    scores = Q @ K.T / jnp.sqrt(jnp.asarray(Q.shape[-1], Q.dtype))
    return jax.nn.softmax(scores, axis=-1) @ V


def gru_gate(W, U, b, x, h):
    """The update gate and candidate of a GRU cell: (1 - z) h + z tanh(W x + U (r h) + b)."""
    z = jax.nn.sigmoid(W @ x + U @ h + b)
    r = jax.nn.sigmoid(U @ x + W @ h)
    candidate = jnp.tanh(W @ x + U @ (r * h) + b)
    return (1 - z) * h + z * candidate


def mlp(W1, b1, W2, b2, x):
    return W2 @ jax.nn.relu(W1 @ x + b1) + b2


def mlp_params(params, x):
    h = jax.nn.relu(params["W1"] @ x + params["b1"])
    return params["W2"] @ h + params["b2"]


def two_outputs(x, y):
    return {"sum": jnp.sum(x * y), "scaled": (jnp.tanh(x) * 2.0, y[:2] - x[1:])}


@jax.custom_vjp
def clipped_sin(x):
    return jnp.sin(x)


clipped_sin.defvjp(lambda x: (jnp.sin(x), jnp.cos(x)), lambda c, u: (c * u,))


def _mlp_args(rng, dtype):
    n, h, m = 3, 4, 2
    W1, b1 = _normal(rng, (h, n), dtype), _normal(rng, (h,), dtype)
    x = _normal(rng, (n,), dtype)
    # keep the hidden pre-activations off the ReLU kink
    z = np.asarray(W1 @ x + b1, np.float64)
    b1 = b1 + jnp.asarray(np.where(np.abs(z) < 0.2, 0.5, 0.0), dtype)
    return W1, b1, _normal(rng, (m, h), dtype), _normal(rng, (m,), dtype), x


def _relu_args(rng, dtype):
    return (away_from_zero(rng, (4,), jnp.dtype(dtype)),)


def extra_cases() -> list[Case]:
    n = lambda *shape: lambda rng, dt: tuple(_normal(rng, s, dt) for s in shape)  # noqa: E731
    cases = [
        Case("softmax", jax.nn.softmax, n((5,))),
        Case("log_softmax", jax.nn.log_softmax, n((5,))),
        Case("layer_norm/x", layer_norm, n((5,), (5,), (5,)), 0),
        Case("layer_norm/gamma", layer_norm, n((5,), (5,), (5,)), 1),
        Case("logsumexp", jax.nn.logsumexp, n((5,))),
        Case("logsumexp_rows", lambda X: jax.nn.logsumexp(X, axis=1), n((2, 3))),
        Case("attention/Q", attention, n((2, 3), (4, 3), (4, 2)), 0),
        Case("attention/K", attention, n((2, 3), (4, 3), (4, 2)), 1),
        Case("gru_gate/W", gru_gate, n((3, 3), (3, 3), (3,), (3,), (3,)), 0),
        Case("gru_gate/h", gru_gate, n((3, 3), (3, 3), (3,), (3,), (3,)), 4),
    ]
    cases += [Case(f"mlp/{name}", mlp, _mlp_args, i)
              for i, name in enumerate(("W1", "b1", "W2", "b2", "x"))]
    cases += [
        Case("mlp_params (dict)", mlp_params,
             lambda rng, dt: ({"W1": _normal(rng, (4, 3), dt), "b1": _normal(rng, (4,), dt),
                               "W2": _normal(rng, (2, 4), dt), "b2": _normal(rng, (2,), dt)},
                              _normal(rng, (3,), dt))),
        Case("two_outputs (pytree out)", two_outputs, n((3,), (3,)), 0),
        Case("relu via where", lambda x: jnp.where(x > 0, x, 0.0), _relu_args),
        Case("relu via maximum", lambda x: jnp.maximum(x, 0.0), _relu_args),
        Case("jax.nn.relu", jax.nn.relu, _relu_args),
        Case("softplus", jax.nn.softplus, n((4,))),
        Case("elementwise mix", lambda x: jnp.tanh(x) * x + jnp.sin(x) / (1 + x**2), n((4,))),
        Case("unary zoo", lambda x: jnp.exp(-x) + jnp.log1p(x**2) + jnp.expm1(x)
             + jnp.cos(x) * jnp.sqrt(1 + x**2) + jax.lax.rsqrt(2 + x**2) + x**3
             + jnp.abs(x) ** 1.5 + jnp.sign(x) + jax.nn.sigmoid(x), _relu_args),
        Case("pow x^y wrt y", lambda x, y: x**y, lambda rng, dt: (
            jnp.asarray(rng.uniform(0.5, 2.0, 4), dt), _normal(rng, (4,), dt)), 1),
        Case("min and max", lambda x, y: jnp.minimum(x, y) * jnp.max(x) + jnp.min(y), n((4,), (4,))),
        Case("slices and indexing", lambda X: X[1:3, 0] * X[0, :2] + X[:, 1].sum() + X[0, 0],
             n((3, 4))),
        Case("strided slice", lambda x: x[::2] * x[1::2], n((6,))),
        Case("concatenate", lambda x, y: jnp.concatenate([x * 2, y, jnp.sin(x)]), n((3,), (2,))),
        Case("transpose and reshape", lambda X: (X.T @ X).reshape(-1) + X.reshape(-1)[::-1][:9],
             n((3, 3))),
        Case("expand_dims and squeeze", lambda x: jnp.squeeze(jnp.expand_dims(x, 0) * x[:, None]),
             n((3,))),
        Case("broadcasting", lambda X, b: X * b[None, :] + b[None, :], n((2, 3), (3,)), 1),
        Case("batched matmul", lambda A, B: jnp.einsum("bij,bjk->bik", A, B),
             n((2, 3, 4), (2, 4, 2)), 0),
        Case("matrix product wrt left", lambda W, X: W @ X, n((3, 4), (4, 2)), 0),
        Case("sum over an axis", lambda X: jnp.sum(X**2, axis=1) + jnp.max(X, axis=0).sum(),
             n((3, 4))),
        Case("nested jit", jax.jit(lambda x: jnp.tanh(jax.jit(jnp.sin)(x)) * x), n((4,))),
        Case("stop_gradient", lambda x: x * jax.lax.stop_gradient(x) + x, n((4,))),
        Case("convert_element_type", lambda x: (x.astype(jnp.float32) * 2).astype(x.dtype),
             n((4,))),
        Case("custom_vjp (opaque)", lambda x: clipped_sin(x) * x, n((4,))),
        Case("cumsum (opaque)", lambda x: jnp.cumsum(x) * x, n((4,))),
        Case("scalar argument", lambda a, x: jnp.tanh(a * x) + a**2, lambda rng, dt: (
            jnp.asarray(0.7, dt), _normal(rng, (3,), dt)), 0),
    ]
    return cases


CASES = registry_cases() + extra_cases()
