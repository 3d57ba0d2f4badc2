"""``mcjax.gauss_newton``: the Gauss-Newton matrix $J^\top H_L J$ of a model and a loss, its
$J$ derived by ``mcjax.derive`` and its $H_L$ by ``mcjax.hessian``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from mcjax._core._arguments import argnums_spec, describe, require_callable
from mcjax._core._errors import ShapeError
from mcjax._core._pytrees import combine
from mcjax._curvature import Curvature
from mcjax._curvature import _gauss_newton as CS
from mcjax._curvature._operator import Layout, with_meta
from mcjax._derive import _variables as V
from mcjax._derive._api import derive
from mcjax._derive._hessian import (
    ProgramOf,
    hashable,
    hessian,
    split_arguments,
    traced_program_key,
)
from mcjax._jacobian._algebra import Jacobian
from mcjax._program._compile import run_compiled
from mcjax._program._trace import function_key, has_tracers


def gauss_newton(f: Callable[..., Any], loss: Callable[..., Any],
                 argnums: int | Sequence[int] = 0) -> Callable[..., Curvature]:
    r"""The Gauss-Newton matrix $J^\top H_L J$ of ``loss(f(*args))`` as a structured operator.

    $J$ is the Jacobian of the model's output $z = f(\ldots)$ (size $m$) with respect to
    argument ``argnums`` (size $n$), derived by ``mcjax.derive`` and held structured (a dense
    layer's is $I \otimes h^\top$: its activations only), $H_L$ the Hessian of ``loss`` with
    respect to $z$ (``mcjax.hessian``: a diagonal for the squared error, one diagonal plus low
    rank block per example for softmax cross-entropy over a batch, ``BatchedLowRank``).  The
    result, a ``mcjax.curvature.GaussNewton``, applies
    $J^\top (H_L (J v))$ through the structures; ``solve``, ``dense``, ``diagonal`` and
    ``slogdet`` use its matrix form (``as_matrix_form()``, $J$ made dense): a ``Gram`` form
    $J^\top \operatorname{diag}(h) J$ where $H_L$ is diagonal, else ``DiagonalPlusLowRank``
    with $U = J^\top$, $C = H_L$ where $m < n$ — a damped Newton step then solves an
    $m \times m$ system by Woodbury's identity — else ``Dense``.

    Args:
      f: the model, a function returning the output $z$ (a floating array, any shape).
      loss: ``loss(z, *loss_args)``, a scalar; ``loss_args``' arrays and Python floats are
        data (traced), its other leaves (a string, a flag, a function) are passed as they are.
      argnums: which positional argument of ``f`` (an int) or arguments (a tuple), as in
        ``mcjax.hessian``: the variables are their floating array leaves, flattened in
        ``argnums``' order; the other leaves are data or static, as there.

    Returns:
      A function ``gn(*args, loss_args=())`` returning a ``mcjax.Curvature`` of shape
      ``(n, n)`` on the flattened variables.

    Raises:
      TypeError, ValueError, ShapeError, DtypeError: as ``mcjax.hessian`` (``loss`` must
        return a scalar).
    """
    require_callable("gauss_newton", "f", f, "a model, a function of arrays")
    require_callable("gauss_newton", "loss", loss, "a scalar loss of the model's output")
    spec = argnums_spec("gauss_newton", argnums)

    def gn(*args, loss_args: tuple = ()) -> Curvature:
        split, traced = split_arguments("gauss_newton", f, spec, args)
        data, static = V.split_data(tuple(loss_args))
        if hashable(split) and hashable(loss) and hashable(static):
            bound = loss if static.empty() else _Bound(loss, static)
            G = _gauss_newton_compiled(split, bound, traced, data)
        else:
            G = _gauss_newton(split, loss, traced, tuple(loss_args))
        return with_meta(G, layout=Layout.of(split.variables(traced)))

    return gn


@dataclass(frozen=True)
class _Bound:
    """``loss`` with the leaves of ``loss_args`` that are no arrays closed over: equal and
    hashed by both, so that the compiled program is keyed by them."""

    loss: Callable[..., Any]
    static: V.Static

    def __call__(self, z, *data):
        return self.loss(z, *combine(data, self.static.tree))


def _gauss_newton(split: V.Split, loss, traced: tuple, loss_args: tuple) -> Curvature:
    z = split.call(split.variables(traced), traced)
    if not isinstance(z, jax.Array) or not jnp.issubdtype(z.dtype, jnp.floating):
        raise TypeError(f"mcjax.gauss_newton: f returned {describe(z)}; expected a floating "
                        "array, the model's output")
    value = jax.eval_shape(loss, z, *loss_args)
    if getattr(value, "shape", None) != ():
        got = (f"an array of shape {value.shape}" if hasattr(value, "shape")
               else describe(value))
        raise ShapeError(f"mcjax.gauss_newton: loss returned {got}; expected a scalar "
                         "(shape ()) of the model's output")
    spec = split.wrt[0] if split.single else split.wrt
    J = derive(split.of_traced(gradient=False), spec)(*traced)
    blocks = jax.tree_util.tree_leaves(J, is_leaf=lambda j: isinstance(j, Jacobian))
    return CS.GaussNewton(blocks, hessian(loss)(z, *loss_args))


def _gauss_newton_compiled(split: V.Split, loss, traced: tuple, loss_args: tuple) -> Curvature:
    """``_gauss_newton`` compiled once per program of ``f`` and of ``loss`` (each traced on
    every call, as ``_compiled``)."""
    if has_tracers((traced, loss_args)):
        return _gauss_newton(split, loss, traced, loss_args)
    key, trace = traced_program_key(split, traced)
    loss_key = function_key(loss, trace.out_shape, *loss_args).key
    static = ProgramOf(split, ("gauss-newton", key, loss_key), loss)
    return run_compiled(_gauss_newton_keyed, static, traced, loss_args, forward_inputs=True)


def _gauss_newton_keyed(static: ProgramOf, traced: tuple, loss_args: tuple) -> Curvature:
    return _gauss_newton(static.split, static.loss, traced, loss_args)
