"""Researchers' own derivations, outside the registry: each function with its hand-derived
Jacobian (numerator layout), shared by the checker's and the diagnosis's tests."""

import jax
import jax.numpy as jnp


def softmax(x):
    return jax.nn.softmax(x)


def d_softmax(x):  # diag(s) - s s^T
    s = softmax(x)
    return jnp.diag(s) - jnp.outer(s, s)


def d_softmax_wrong(x):  # the -s s^T term forgotten
    return jnp.diag(softmax(x))


EPS = 1e-5


def layer_norm(x):
    mu = jnp.mean(x)
    return (x - mu) / jnp.sqrt(jnp.mean((x - mu) ** 2) + EPS)


def d_layer_norm(x):  # (I - 11^T/n - y y^T/n) / sigma
    n = x.shape[0]
    y = layer_norm(x)
    sigma = jnp.sqrt(jnp.mean((x - jnp.mean(x)) ** 2) + EPS)
    return (jnp.eye(n, dtype=x.dtype) - 1.0 / n - jnp.outer(y, y) / n) / sigma


def d_layer_norm_wrong(x):  # the mean's dependence on x forgotten
    n = x.shape[0]
    y = layer_norm(x)
    sigma = jnp.sqrt(jnp.mean((x - jnp.mean(x)) ** 2) + EPS)
    return (jnp.eye(n, dtype=x.dtype) - jnp.outer(y, y) / n) / sigma


def frobenius(W, X, Y):
    return jnp.sum((W @ X - Y) ** 2)


def d_frobenius(W, X, Y):
    return 2 * (W @ X - Y) @ X.T


def d_frobenius_wrong(W, X, Y):  # the 2 of the square forgotten
    return (W @ X - Y) @ X.T


def gru(h, x, P):
    """A GRU cell's new state, with update gate z, reset gate r and candidate n."""
    z = jax.nn.sigmoid(P["Wz"] @ x + P["Uz"] @ h)
    r = jax.nn.sigmoid(P["Wr"] @ x + P["Ur"] @ h)
    n = jnp.tanh(P["Wn"] @ x + r * (P["Un"] @ h))
    return (1 - z) * h + z * n


def _gru_parts(h, x, P):
    z = jax.nn.sigmoid(P["Wz"] @ x + P["Uz"] @ h)
    r = jax.nn.sigmoid(P["Wr"] @ x + P["Ur"] @ h)
    n = jnp.tanh(P["Wn"] @ x + r * (P["Un"] @ h))
    dz = (z * (1 - z))[:, None] * P["Uz"]
    dr = (r * (1 - r))[:, None] * P["Ur"]
    return z, r, n, dz, dr


def d_gru(h, x, P):  # dh'/dh = diag(1 - z) + diag(n - h) dz + diag(z) dn
    z, r, n, dz, dr = _gru_parts(h, x, P)
    dn = (1 - n**2)[:, None] * ((P["Un"] @ h)[:, None] * dr + r[:, None] * P["Un"])
    return jnp.diag(1 - z) + (n - h)[:, None] * dz + z[:, None] * dn


def d_gru_wrong(h, x, P):  # the reset gate's dependence on h forgotten
    z, r, n, dz, _ = _gru_parts(h, x, P)
    dn = (1 - n**2)[:, None] * (r[:, None] * P["Un"])
    return jnp.diag(1 - z) + (n - h)[:, None] * dz + z[:, None] * dn


def attention(Q, K, V):
    return jax.nn.softmax(Q @ K.T / jnp.sqrt(Q.shape[1]), axis=1) @ V


def _d_attention(Q, K, V, scale):
    P = jax.nn.softmax(Q @ K.T / jnp.sqrt(Q.shape[1]), axis=1)  # (t, s)
    # row i of the output depends on row i of Q only: V^T (diag(p) - p p^T) K scale
    blocks = jnp.einsum("sv,ts,sd->tvd", V, P, K) - jnp.einsum("sv,ts,tr,rd->tvd", V, P, P, K)
    eye = jnp.eye(Q.shape[0], dtype=Q.dtype)
    return scale * jnp.einsum("tvd,tu->tvud", blocks, eye)


def d_attention(Q, K, V):
    return _d_attention(Q, K, V, 1 / jnp.sqrt(Q.shape[1]))


def d_attention_wrong(Q, K, V):  # the 1/sqrt(d) forgotten
    return _d_attention(Q, K, V, 1.0)


def logsumexp(x):
    return jax.nn.logsumexp(x)


def d_logsumexp(x):
    return jax.nn.softmax(x)


def d_logsumexp_wrong(x):  # the largest entry's share dropped
    s = jax.nn.softmax(x)
    return s.at[jnp.argmax(x)].set(0.0)


def _points(name, rng, dtype):
    a = lambda *shape, scale=1.0: jnp.asarray(scale * rng.standard_normal(shape), dtype)  # noqa: E731
    if name == "softmax":
        return (a(5, scale=3.0),)
    if name == "layer norm":
        return (a(6, scale=2.0),)
    if name == "frobenius":
        return (a(3, 4), a(4, 5), a(3, 5))
    if name == "gru":
        P = {k: a(4, 4 if k[0] == "U" else 3, scale=0.7) for k in ("Wz", "Uz", "Wr", "Ur", "Wn", "Un")}
        return (a(4), a(3), P)
    if name == "attention":
        return (a(3, 4), a(5, 4), a(5, 2))
    if name == "logsumexp +1000":
        return (1000.0 + a(5),)
    return (-1000.0 + a(5),)  # logsumexp -1000
