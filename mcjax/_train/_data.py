r"""Data for the paper's experiments: a neuron's synthetic targets and scikit-learn's digits.

Datasets are tuples ``(X, Y)`` of arrays with one example per row, the form
:func:`mcjax.train` takes.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from mcjax.rules.activations import relu


def neuron_data(key: jax.Array, *, n_samples: int, n_features: int, noise: float = 0.0,
                dtype=jnp.float32):
    r"""Inputs and targets of a ReLU neuron with known weights: what the paper's neuron learns.

    $\mathbf{x}_i \sim \mathcal{N}(0, I_n)$, $\mathbf{w}^\star \sim \mathcal{N}(0, I_n)$,
    $b^\star = 0.5$ and $y_i = \max(0, \mathbf{w}^\star\cdot\mathbf{x}_i + b^\star) + \epsilon_i$,
    $\epsilon_i \sim \mathcal{N}(0, \text{noise}^2)$.

    Args:
      key: a ``jax.random`` key.
      n_samples: N.
      n_features: n.
      noise: the standard deviation of the targets' noise.
      dtype: floating dtype of the arrays.

    Returns:
      ``((X, y), {"w": w_true, "b": b_true})`` with X (N, n), y (N,), w_true (n,), b_true ().
    """
    return _neuron_data(key, jnp.asarray(noise, dtype), n_samples=int(n_samples),
                        n_features=int(n_features), dtype=jnp.dtype(dtype))


@partial(jax.jit, static_argnames=("n_samples", "n_features", "dtype"))
def _neuron_data(key, noise, *, n_samples, n_features, dtype):
    # one compiled program rather than one eager operation (and compilation) per line
    k_x, k_w, k_e = jax.random.split(key, 3)
    X = jax.random.normal(k_x, (n_samples, n_features), dtype)
    w = jax.random.normal(k_w, (n_features,), dtype)
    b = jnp.asarray(0.5, dtype)
    y = relu(X @ w + b) + noise * jax.random.normal(k_e, (n_samples,), dtype)
    return (X, y), {"w": w, "b": b}


def digits_data(*, test_fraction: float = 0.25, seed: int = 0, dtype=np.float32):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, no download), split.

    Pixels (0..16) are scaled to [0, 1]; the split is stratified by class and fixed by
    ``seed``.

    Args:
      test_fraction: the share of each class held out for testing.
      seed: the seed of the split.
      dtype: the inputs' dtype.

    Returns:
      ``((X_train, y_train), (X_test, y_test))``: X (N, 64) of ``dtype``, y (N,) int32 labels.

    Raises:
      ImportError: scikit-learn is not installed (``pip install 'mcjax[experiments]'``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "mcjax.digits_data needs scikit-learn: pip install 'mcjax[experiments]'"
        ) from error
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        test[rng.permutation(rows)[: round(test_fraction * len(rows))]] = True
    X = (X / 16.0).astype(dtype)
    y = y.astype(np.int32)
    return (X[~test], y[~test]), (X[test], y[test])
