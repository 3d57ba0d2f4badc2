"""The check of a user's K-FAC factors against the exact ones (``mcjax.kfac_factor_problems``):
a comparison by the checker's tolerance policy, and a diagnosis of a failing factor in a
sentence (a wrong shape, A and G swapped, not symmetric, a constant times the exact one)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._core._tolerance import check_rtol
from mcjax._derive._kfac import layers_and_factors


def _agrees(given: np.ndarray, exact: np.ndarray, rtol: float) -> tuple[bool, float]:
    scale = float(np.max(np.abs(exact))) or 1.0
    error = float(np.max(np.abs(given - exact))) / scale
    return error <= rtol, error


def _factor_problem(name: str, given, exact: np.ndarray, *, rtol: float, batch: int,
                    bias: bool) -> str | None:
    """What is wrong with one given factor (a phrase), or None when it agrees."""
    given = np.asarray(given, np.float64)
    if given.shape != exact.shape:
        if name == "A" and bias and given.shape == (exact.shape[0] - 1,) * 2:
            return (f"A has shape {given.shape} but the layer has a bias: expected "
                    f"{exact.shape}, the inputs with a 1 appended")
        return f"{name} has shape {given.shape}; expected {exact.shape}"
    if not np.allclose(given, given.T, rtol=rtol, atol=0.0):
        return f"{name} is not symmetric"
    ok, error = _agrees(given, exact, rtol)
    if ok:
        return None
    c = float(np.sum(given * exact) / np.sum(exact * exact))
    if abs(c - 1) > rtol and _agrees(given, c * exact, rtol)[0]:
        hint = (f" (= 1/B, B = {batch}: a mean over the batch taken twice, as kfac-jax's "
                "fisher_empirical normalises G)" if np.isclose(c, 1 / batch, rtol=1e-3)
                else f" (= B = {batch}: a sum over the examples, not a mean)"
                if np.isclose(c, batch, rtol=1e-3) else "")
        return f"{name} is {c:.4g} times the exact one{hint}"
    return f"{name} differs from the exact one by {error:.3g} of its largest entry " \
           f"(threshold {rtol:.2g})"


def kfac_factor_problems(loss: Callable, params, batch, factors, *,
                         estimator: str = "ggn") -> list[str]:
    r"""What is wrong with ``factors``, a user's K-FAC factors of ``loss``, against the exact
    ones (``mcjax.kfac_factors``); an empty list when all agree.

    Each factor passes when $\max|F - F_\text{exact}| \le \text{rtol}\cdot\max|F_\text{exact}|$
    with mcjax's tolerance policy, ``mcjax.conventions.check_rtol(dtype, B * n)`` (n the
    factor's size: each entry sums B products through the network).  A failing factor is
    diagnosed where it can be: a missing or extra layer, a wrong shape (A without the bias's
    row), A and G swapped, a factor that is not symmetric, one that is a constant times the
    exact one (1/B: normalised twice; B: a sum over the batch), or the largest difference.

    Args:
      loss: ``loss(params, batch) -> scalar``, as for ``mcjax.kfac_factors``.
      params: the parameters (a pytree).
      batch: a pytree of arrays with a leading axis of B examples.
      factors: ``{path: (A, G)}`` keyed as ``mcjax.kfac_factors`` keys them.
      estimator: ``"ggn"`` or ``"empirical"``, the definition ``factors`` follow
        (``"fisher"``'s draws have no exact value: compare their mean with ``"ggn"``).

    Returns:
      One sentence per problem, each naming the layer's weight leaf.

    Raises:
      ValueError: ``estimator="fisher"``.
    """
    return exact_and_problems(loss, params, batch, factors, estimator)[1]


def exact_and_problems(loss: Callable, params, batch, factors, estimator: str = "ggn"
                       ) -> tuple[dict, list[str]]:
    """``mcjax.kfac_factors`` and ``kfac_factor_problems`` from one trace of the loss."""
    if estimator == "fisher":
        raise ValueError("mcjax.kfac_factor_problems: estimator='fisher' draws random labels, "
                         "so its factors have no exact value to compare with; expected 'ggn' "
                         "(the fisher estimator's expectation) or 'empirical'")
    found, exact = layers_and_factors(loss, params, batch, estimator)
    layers = {layer.path: layer for layer in found}
    n = jax.tree.leaves(batch)[0].shape[0]
    problems = [f"layer {path}: no factors given; expected A and G" for path in exact
                if path not in factors]
    problems += [f"layer {path}: no dense layer of the loss has this weight; the layers are "
                 f"{', '.join(exact)}" for path in factors if path not in exact]
    for path, (A, G) in ((p, f) for p, f in factors.items() if p in exact):
        want = exact[path]
        dtype = jnp.result_type(want.A)
        if (np.shape(A), np.shape(G)) == (want.G.shape, want.A.shape) != \
                (want.A.shape, want.G.shape):
            problems.append(f"layer {path}: A and G are swapped (A is n_in [+1] square, G "
                            "n_out square)")
            continue
        for name, given, ref in (("A", A, want.A), ("G", G, want.G)):
            rtol = check_rtol(dtype, n * ref.shape[0])
            why = _factor_problem(name, given, np.asarray(ref, np.float64), rtol=rtol,
                                  batch=n, bias=layers[path].bias is not None)
            if why is not None:
                problems.append(f"layer {path}: {why}")
    return exact, problems

