r"""A hand-derived gradient is checked before it trains: :func:`mcjax.check` at the first batch.

With ``grad="analytic"`` every step follows the model's ``backprop``; a slip in it (a factor
of 2, a transposed matrix, a missing term) would train silently, towards the wrong parameters
or nowhere.  So :func:`mcjax.train` first runs :func:`mcjax.check` on ``backprop`` against the
loss, at the parameters the run starts from and on the minibatch its first step will see (with
that step's key, for a loss that draws one): against ``jax.jacfwd``, ``jax.jacrev`` and finite
differences on a small model, against random projections of ``jax.vjp`` on a large one.  A
wrong gradient stops the run before anything is compiled for it, with the check's report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import numpy as np

from mcjax._core._errors import DerivativeError
from mcjax._train._models import Model, takes_key
from mcjax._train._step import first_batch

if TYPE_CHECKING:
    from mcjax._check._report import Report


def _local(tree):
    """One device's copy of every array (the check runs on one device, not on the mesh)."""
    return jax.tree.map(lambda a: np.asarray(a.addressable_data(0))
                        if isinstance(a, jax.Array) else a, tree)


def check_backprop(model: Model, params, data, epoch_key, *, epoch: int, batch_size: int,
                   shuffle: bool) -> Report:
    """Check ``model.backprop`` at ``params`` on the first minibatch of epoch ``epoch`` (from 0).

    Returns:
      The passing :class:`~mcjax.Report`.

    Raises:
      DerivativeError: ``backprop`` is not the gradient of ``model.loss`` there; the message
        says where it was found and holds the report.
    """
    from mcjax._check._api import check

    backprop = model.backprop
    assert backprop is not None  # checked only where there is one
    batch, step_key = first_batch(data, epoch_key, batch_size=batch_size, shuffle=shuffle)
    loss_key, backprop_key = takes_key(model.loss), takes_key(backprop)

    def with_key(fn, wants):  # the key travels as raw bits: the checker differentiates arrays
        def call(params, batch, bits):
            extra = {"key": jax.random.wrap_key_data(bits)} if wants else {}
            return fn(params, batch, **extra)

        call.__name__ = getattr(fn, "__name__", "backprop")  # the report names the user's
        call.__qualname__ = getattr(fn, "__qualname__", call.__name__)  # functions
        return call

    bits = np.asarray(jax.random.key_data(step_key))
    report = check(with_key(model.loss, loss_key), with_key(backprop, backprop_key),
                   _local(params), _local(batch), bits)
    if not report.ok:
        why = f" ({report.diagnosis[0]})" if report.diagnosis else ""
        raise DerivativeError(report, (
            f"mcjax.train: the backprop of model {model.name!r} is not the gradient of its "
            f"loss{why} at the start of epoch {epoch + 1}, on the {batch_size} rows of its first "
            "step; "
            "expected backprop(params, batch) = jax.grad(loss)(params, batch). Fix backprop or "
            "train with grad='autodiff' (check_backprop=False skips this check). "
            f"mcjax.check's report:\n{report}"))
    return report
