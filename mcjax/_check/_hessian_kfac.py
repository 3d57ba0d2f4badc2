r"""``mcjax.check_hessian(loss, factors, params, batch, kind="kfac")``: a user's K-FAC factors
judged against the exact ones of the loss (``mcjax.kfac_factors``: $A = E[\bar a \bar a^\top]$,
$G = E[g g^\top]$ of each dense layer, found from the function), as a ``mcjax.Report``: the
comparison and its diagnosis are ``mcjax.kfac_factor_problems``'s, one sentence per layer."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from mcjax._check._compare import Threshold
from mcjax._check._report import Report
from mcjax._check._report_parts import Slip
from mcjax._core._errors import ShapeError
from mcjax._derive._kfac_check import exact_and_problems


def kfac_report(loss: Callable, factors, args: tuple, *, rtol: float | None,
                atol: float | None, name: str) -> Report:
    """The report of ``factors`` (``{weight path: (A, G)}``) for ``loss(params, batch)``."""
    if rtol is not None or atol is not None:
        raise ValueError("mcjax.check_hessian: kind='kfac' judges each factor by the tolerance "
                         "policy for its own size (B examples times its rows); rtol and atol "
                         "are not taken")
    if len(args) != 2:
        raise ShapeError(f"mcjax.check_hessian: kind='kfac' takes the point as (params, batch), "
                         f"the arguments of loss(params, batch); got {len(args)} arguments")
    if not hasattr(factors, "items"):
        raise TypeError(f"mcjax.check_hessian: kind='kfac' takes H as {{weight path: (A, G)}}, "
                        f"as mcjax.kfac_factors keys them; got {type(factors).__name__}")
    params, batch = args
    exact, problems = exact_and_problems(loss, params, batch, dict(factors))
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params)).name
    examples = jax.tree_util.tree_leaves(batch)[0].shape[0]
    # the largest factor's threshold (each is judged by its own: B times its rows terms)
    rows = max((max(f.A.shape[0], f.G.shape[0]) for f in exact.values()), default=1)
    threshold = Threshold.of(dtype, examples * rows, "mcjax.kfac_factors (A = E[a a^T], "
                             "G = E[g g^T] of each dense layer, by autodiff)")
    layers = ", ".join(f"{path} A {tuple(f.A.shape)} G {tuple(f.G.shape)}"
                       for path, f in exact.items())
    return Report(
        ok=not problems, function=name, derivative="K-FAC factors", wrt="params",
        shapes=f"{len(exact)} dense layer{'s' if len(exact) != 1 else ''}: {layers}",
        dtype=dtype, mode="full", points=1, threshold=threshold,
        diagnosis=tuple(problems), slips=tuple(Slip("kfac-factor", p) for p in problems),
        notes=(f"each factor against the exact one over the batch of {examples} examples, "
               "relative to its largest entry (mcjax.kfac_factor_problems)",))
