"""The peers that bench_train.py measures mcjax against, each written the obvious way.

- ``plain_jax_loss``: the MLP's loss in plain JAX, for ``jax.grad`` + optax;
- ``numpy_step``: the same step in NumPy with backpropagation and Adam written by hand;
- ``torch_step``: the same step in PyTorch eager (``torch.optim.Adam``).

Each ``*_step(params, X, y)`` starts from a copy of mcjax's parameters (a list of
``{"W": (m, n), "b": (m,)}``) and returns ``run(n)``, which takes n steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def plain_jax_loss(params, X, y):
    h = X
    for layer in params[:-1]:
        h = jax.nn.relu(h @ layer["W"].T + layer["b"][None, :])
    logits = h @ params[-1]["W"].T + params[-1]["b"][None, :]
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def numpy_step(params, X, y, *, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    Ws = [np.array(p["W"]) for p in params]
    bs = [np.array(p["b"]) for p in params]
    theta = Ws + bs
    m = [np.zeros_like(t) for t in theta]
    v = [np.zeros_like(t) for t in theta]
    onehot = np.eye(Ws[-1].shape[0], dtype=X.dtype)[y]
    count = [0]

    def step():
        acts = [X]
        for W, b in zip(Ws[:-1], bs[:-1]):
            acts.append(np.maximum(acts[-1] @ W.T + b, 0))
        logits = acts[-1] @ Ws[-1].T + bs[-1]
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        dZ = (p - onehot) / len(X)
        grads_W, grads_b = [None] * len(Ws), [None] * len(Ws)
        for i in reversed(range(len(Ws))):
            grads_W[i] = dZ.T @ acts[i]
            grads_b[i] = dZ.sum(axis=0)
            if i > 0:
                dZ = (dZ @ Ws[i]) * (acts[i] > 0)
        count[0] += 1
        t = count[0]
        for theta_k, g, m_k, v_k in zip(theta, grads_W + grads_b, m, v):
            m_k *= b1
            m_k += (1 - b1) * g
            v_k *= b2
            v_k += (1 - b2) * g * g
            theta_k -= (lr / (1 - b1**t)) * m_k / (np.sqrt(v_k / (1 - b2**t)) + eps)

    def run(n):
        for _ in range(n):
            step()

    return run


def torch_step(params, X, y, *, lr=1e-3):
    import torch

    layers = [(torch.tensor(np.array(p["W"]), requires_grad=True),
               torch.tensor(np.array(p["b"]), requires_grad=True)) for p in params]
    opt = torch.optim.Adam([t for layer in layers for t in layer], lr=lr)
    X, y = torch.from_numpy(np.array(X)), torch.from_numpy(np.array(y)).long()

    def step():
        h = X
        for W, b in layers[:-1]:
            h = torch.relu(h @ W.T + b)
        W, b = layers[-1]
        loss = torch.nn.functional.cross_entropy(h @ W.T + b, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def run(n):
        for _ in range(n):
            step()

    return run
