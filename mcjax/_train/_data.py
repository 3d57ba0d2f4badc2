r"""Data: the paper's experiments' data sets, and the checks every data set passes before training.

A data set is any pytree of arrays with a leading axis of N rows, one example per row:
``(X, Y)``, ``(X, Y, weights)``, a dict.  :func:`check_data` refuses one whose arrays disagree
on N, that is shorter than a batch or that holds NaN or Inf, before anything is compiled;
:func:`fingerprint` describes it (shapes, dtypes, a digest of the bytes) so that a resumed run
can refuse other data than its checkpoints were trained on.  :func:`neuron_data` (a neuron's
synthetic targets) and :func:`digits_data` (scikit-learn's digits) return tuples ``(X, Y)``.
"""

from __future__ import annotations

import math
import numbers
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._core._errors import Problems, shape_str
from mcjax._program._trace import digest
from mcjax._train._models import count_problem
from mcjax.rules.activations import relu


def _named_leaves(data) -> list[tuple[str, Any]]:
    """The data's arrays with the names messages use: X and Y for a pair, else their paths."""
    flat = jax.tree_util.tree_flatten_with_path(data)[0]
    if isinstance(data, (tuple, list)) and len(data) == 2 and len(flat) == 2:
        return [("X", flat[0][1]), ("Y", flat[1][1])]
    return [(f"data{jax.tree_util.keystr(path)}", leaf) for path, leaf in flat]


def check_data(function: str, data) -> int:
    """Refuse data that cannot be trained on; return N, the number of rows.

    Raises:
      ShapeError: no arrays, an array without a leading axis, or arrays that disagree on N
        (every problem is listed).
      ValueError: a floating array holds NaN or Inf (its name, the count and the first row).
    """
    problems = Problems(function)
    leaves = _named_leaves(data)
    if not leaves:
        problems.shape(f"data is {type(data).__name__} {data!r:.40} with no arrays; expected a "
                       "pytree of arrays with a leading batch axis, e.g. (X, Y)")
    kinds = [(name, np.asarray(leaf).dtype) for name, leaf in leaves]
    for name, dtype in kinds:
        if dtype.kind not in "biufc":
            problems.shape(f"{name} has dtype {dtype}; expected arrays of numbers")
    problems.raise_if_any()
    shapes = [(name, np.shape(leaf)) for name, leaf in leaves]
    rows = {shape[0] for _, shape in shapes if shape}
    if any(not shape for _, shape in shapes) or len(rows) != 1:
        listed = " but ".join(f"{name} has shape {shape_str(shape)}" for name, shape in shapes)
        problems.shape(f"{listed}; expected one row of each per example (the same first "
                       "dimension)")
    problems.raise_if_any()
    n = rows.pop()
    for name, leaf in leaves:
        host = np.asarray(leaf)
        if host.dtype.kind in "fc" and not np.isfinite(host).all():
            bad = ~np.isfinite(host.reshape(n, -1)).all(axis=1)
            raise ValueError(f"mcjax.{function}: {name} holds NaN or Inf in {int(bad.sum())} of "
                             f"its {n} rows (the first is row {int(np.argmax(bad))}); expected "
                             "finite data")
    return n


def fingerprint(data) -> dict:
    """What identifies a data set: each array's name, shape, dtype and a digest of its bytes."""
    return {name: {"shape": list(np.shape(leaf)), "dtype": np.asarray(leaf).dtype.name,
                   "digest": digest(leaf)} for name, leaf in _named_leaves(data)}


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

    Raises:
      ValueError: ``n_samples`` or ``n_features`` is not an integer >= 1, or ``noise`` is not
        a finite number >= 0 (every problem is listed).
    """
    problems = [p for p in (count_problem(n_samples, "n_samples"),
                            count_problem(n_features, "n_features")) if p]
    if isinstance(noise, bool) or (isinstance(noise, numbers.Real)
                                   and not (math.isfinite(noise) and noise >= 0)):
        problems.append(f"noise={noise!r}; expected a finite number >= 0")
    if problems:
        raise ValueError(f"mcjax.datasets.neuron_data: {'; and '.join(problems)}")
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


def digits_data(*, test_fraction: float = 0.25, seed: int = 0, dtype: Any = np.float32):
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
      ValueError: ``test_fraction`` is not a number in (0, 1) or ``seed`` not an integer >= 0.
      ImportError: scikit-learn is not installed (``pip install 'mcjax[experiments]'``).
    """
    problems = [p for p in [count_problem(seed, "seed", 0)] if p]
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) \
            or not 0 < test_fraction < 1:
        problems.insert(0, f"test_fraction={test_fraction!r}; expected a number in (0, 1)")
    if problems:
        raise ValueError(f"mcjax.datasets.digits_data: {'; and '.join(problems)}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "mcjax.datasets.digits_data needs scikit-learn: pip install 'mcjax[experiments]'"
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
