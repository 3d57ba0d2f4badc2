"""Deliberately wrong rules: each is a slip a person makes when deriving by hand.

``register(registry)`` puts them in ``registry``; the cross-check must catch every one.
"""

import jax.numpy as jnp

import mcjax
from mcjax import Dense, Derivative, Diagonal, ScaledIdentity
from mcjax.rules import activations, affine, elementwise, losses

WRONG = {}


def register(registry):
    def wrong(name, forward, shapes, wrt, slip, **kw):
        WRONG[f"wrong.{name}"] = slip
        return mcjax.rule(f"wrong.{name}", section="8.2", shapes=shapes, registry=registry,
                          wrt={wrt[0]: Derivative(wrt[1], slip, slip)}, **kw)(forward)

    # denominator layout: W^T instead of W (shape differs when non-square, values when square)
    wrong("transposed", affine.matvec, "W: m n, x: n",
          ("x", lambda W, x: Dense(W.T, in_ndim=1)), "transposed Jacobian")
    wrong("transposed_square", affine.matvec, "W: n n, x: n",
          ("x", lambda W, x: Dense(W.T, in_ndim=1)), "transposed Jacobian (square)")
    # d(x^2)/dx = x: the factor 2 forgotten
    wrong("missing_factor_2", elementwise.square, "x: n",
          ("x", lambda x: Diagonal(x)), "missing factor 2")
    # the paper's loss without its 2/N -> 1/N
    wrong("loss_missing_2", losses.neuron_loss, "w: n, b:, X: B n, y: B",
          ("w", lambda w, b, X, y: losses.neuron_loss_wrt_w(w, b, X, y).scaled(0.5)),
          "missing factor 2 in 2/N", sample=_active_units)
    # the neuron's gradient without the ReLU gate 1[z > 0]
    wrong("missing_relu_gate", activations.neuron, "w: n, x: n, b:",
          ("w", lambda w, x, b: Dense(x, in_ndim=1)), "missing ReLU gate",
          sample=lambda rng, dims, dtype: _inactive_neuron(rng, dims, dtype))
    # sign slip: d(x - y)/dy = +I
    wrong("sign", elementwise.subtract, "x: n, y: n",
          ("y", lambda x, y: ScaledIdentity(jnp.ones((), x.dtype), x.shape)), "wrong sign")
    # dense where a diagonal was due: y 1^T instead of diag(y)
    wrong("dense_not_diagonal", elementwise.multiply, "x: n, y: n",
          ("x", lambda x, y: Dense(jnp.outer(y, jnp.ones_like(x)), in_ndim=1)),
          "dense instead of diagonal")
    # a 0.1% slip: caught in float32 too
    wrong("off_by_0.1_percent", elementwise.exp, "x: n",
          ("x", lambda x: Diagonal(1.001 * jnp.exp(x))), "off by 0.1%")


def _inactive_neuron(rng, dims, dtype):
    """A neuron whose unit is off (z < 0), so a missing gate changes the gradient."""
    w, x = rng.standard_normal(dims["n"]), rng.standard_normal(dims["n"])
    return (jnp.asarray(w, dtype), jnp.asarray(x, dtype), jnp.asarray(-1.0 - w @ x, dtype))


def _active_units(rng, dims, dtype):
    """The paper's loss with every unit on (z_i > 0): a zero gradient would hide any factor."""
    N, n = dims["B"], dims["n"]
    w, X = rng.standard_normal(n), rng.standard_normal((N, n))
    b = 1.0 - (X @ w).min()
    return tuple(jnp.asarray(a, dtype) for a in (w, b, X, rng.standard_normal(N)))
