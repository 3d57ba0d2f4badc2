"""``_derive._affine.split``: f = g(z(v)) with z affine, so that ∇²f = Jᵀ ∇²g J exactly.

Checked with JAX alone (``jax.jacfwd`` of z, ``jax.hessian`` of g and of f), so a primitive
wrongly read as affine — a product of two values that depend on v, a quotient by one, a
branch chosen by one, a custom rule's body — shows as a Hessian that misses a term."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcjax._derive import _affine

rng = np.random.default_rng(7)
X = jnp.asarray(rng.standard_normal((8, 3)))
c = jnp.asarray(rng.standard_normal(3))
y = jnp.asarray(rng.random(8) > 0.5, jnp.float64)


@jax.custom_jvp
def doubled(x):
    return jnp.maximum(x, 0.0) * x


doubled.defjvp(lambda p, t: (doubled(p[0]), 4.0 * t[0] * jnp.maximum(p[0], 0.0)))


def _wb(v):
    return v[:3], v[3]


SPLIT = {  # a non-linear part after an affine map: split
    "logistic": lambda v: jnp.mean(jax.nn.softplus(X @ _wb(v)[0] + _wb(v)[1])
                                   - y * (X @ _wb(v)[0] + _wb(v)[1])),
    "product": lambda v: jnp.sum(jnp.sin(X @ _wb(v)[0])) * (c @ _wb(v)[0] + _wb(v)[1]),
    "quotient": lambda v: jnp.sum((X @ _wb(v)[0]) / (_wb(v)[1] + 3.0)),
    "product of two affine": lambda v: jnp.sum(jnp.exp((X @ _wb(v)[0] + _wb(v)[1])
                                                       * (X @ _wb(v)[0]) / 4.0)),
    "by an affine": lambda v: jnp.sum(jnp.exp(X[:, 0] / (_wb(v)[1] + 3.0) + X @ _wb(v)[0])),
    "branch": lambda v: jnp.sum(jnp.where(X @ _wb(v)[0] > _wb(v)[1], X @ _wb(v)[0],
                                          2.0 * (X @ _wb(v)[0]) ** 2)),
    "custom rule": lambda v: jnp.sum(doubled(X @ _wb(v)[0] + _wb(v)[1])),
    "square of a sum": lambda v: jnp.sum((X @ _wb(v)[0] + _wb(v)[1] * X[:, 0]) ** 2),
    "regularised": lambda v: jnp.sum(jnp.exp(X @ _wb(v)[0] / 3.0)) + _wb(v)[1] * (v @ v),
}
NOT_SPLIT = {  # nothing affine mixes entries of v before the non-linear part
    "element-wise": lambda v: jnp.sum(jnp.sin(v) * v),
    "scan": lambda v: jax.lax.scan(lambda s, x: (s + jnp.tanh(x @ v[:3] + v[3]), None), 0.0,
                                   X)[0],
    "affine": lambda v: X[0] @ v[:3] + 2.0 * v[3],
}


@pytest.mark.parametrize("name", list(SPLIT))
def test_the_split_is_exact(name):
    f = SPLIT[name]
    v = jnp.asarray(rng.standard_normal(4))
    parts = _affine.split(f, v)
    assert parts is not None
    u = parts.z(v)
    np.testing.assert_allclose(parts.g(u), f(v), rtol=1e-12)
    u2 = parts.z(2.0 * v) - 2.0 * u + parts.z(jnp.zeros_like(v))  # z affine: z(2v) - 2z(v) + z(0) = 0
    np.testing.assert_allclose(u2, jnp.zeros_like(u2), atol=1e-12)
    J = jax.jacfwd(parts.z)(v).reshape(parts.size, 4)
    Hg = jax.hessian(parts.g)(u).reshape(parts.size, parts.size)
    np.testing.assert_allclose(J.T @ Hg @ J, jax.hessian(f)(v), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(NOT_SPLIT))
def test_nothing_to_split(name):
    assert _affine.split(NOT_SPLIT[name], jnp.asarray(rng.standard_normal(4))) is None
