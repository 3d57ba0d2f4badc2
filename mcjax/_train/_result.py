"""What :func:`mcjax.train` returns, and how it shows itself: a one-line ``repr`` (shapes,
never parameter values), a table and a figure of the history, an HTML view in a notebook."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._train import _history

if TYPE_CHECKING:
    from mcjax._check._report import Report

SHOWN_LEAVES = 8  # repr(result) names the parameters' shapes up to this many arrays
SHOWN_PARAMS = 160  # characters; a longer tree of shapes (an Equinox module) is counted instead
SHOWN_ROWS = 10  # epochs in a notebook's table (the plot beside it shows them all)


class TrainResult(NamedTuple):
    """What :func:`mcjax.train` returns.

    Attributes:
      params: the trained parameters (device arrays), or the whole model that ``init``
        returns (an Equinox module, an nnx Module, linen variables) with its trained
        parameters and its state after the last step (a ``BatchNorm``'s running statistics).
      opt_state: the optimizer's state.
      history: per-epoch lists: ``"loss"`` (the mean of the epoch's minibatch losses) and
        one list per metric that ``evaluate`` returns.
      epoch: completed epochs.
      step: completed optimizer steps.
      compile_seconds: the time spent compiling the epoch in this call: near 0 when an
        earlier call compiled the same program, or when JAX's persistent compilation cache
        holds it.
      seconds: wall time of the training loop in this call, compilation excluded.
      checkpoint: the last checkpoint written or restored (a folder), or None.
      resumed_from: the checkpoint this run resumed from, or None.
      interrupted: True when a signal (SIGTERM or SIGINT) stopped the run at the end of an
        epoch (a checkpoint was written if ``checkpoint_dir`` was given).
      signal: the name of that signal (``"SIGTERM"``, ``"SIGINT"``), or None.
      backprop_check: with ``grad="analytic"``, the passing report of :func:`mcjax.check` on
        the model's ``backprop`` at the first batch (``print()`` it to read it); else None.

    ``repr(result)`` is one line: epochs, steps, the last epoch's loss and metrics, the
    parameters' shapes (never their values), the times.  :meth:`table` and :meth:`plot` show
    the history; in a notebook the result shows itself as that line, a short table and a
    small plot.

    Example:

        >>> (X, y), _ = mcjax.datasets.neuron_data(jax.random.key(0), n_samples=64,
        ...                                          n_features=4)
        >>> result = mcjax.train(mcjax.neuron_model(4), (X, y), epochs=3, batch_size=16)
        >>> result  # doctest: +ELLIPSIS
        TrainResult(epoch=3, step=12, loss=..., params={'b': float32[], 'w': float32[4]}, ...)
        >>> print(result.table())  # doctest: +ELLIPSIS
        epoch   step   loss
        ...
    """

    params: Any
    opt_state: Any
    history: dict[str, list[float]]
    epoch: int
    step: int
    compile_seconds: float
    seconds: float
    checkpoint: Path | None
    resumed_from: Path | None
    interrupted: bool
    signal: str | None = None
    backprop_check: Report | None = None

    def __repr__(self) -> str:
        last = {name: values[-1] for name, values in self.history.items() if values}
        parts = [f"epoch={self.epoch}", f"step={self.step}",
                 *(f"{name}={value:.6g}" for name, value in last.items()),
                 f"params={_shapes(self.params)}", f"seconds={self.seconds:.3g}",
                 f"compile_seconds={self.compile_seconds:.3g}"]
        parts += [f"{name}={str(value)!r}" for name, value in (
            ("checkpoint", self.checkpoint), ("resumed_from", self.resumed_from),
            ("signal", self.signal)) if value is not None]
        if self.backprop_check is not None:
            parts.append("backprop_check=ok")
        return f"TrainResult({', '.join(parts)})"

    def table(self, *, max_rows: int | None = 20) -> str:
        """The history as a plain-text table, one row per epoch: epoch, step, loss, metrics.

        Plain text (rendered by rich, without colour or terminal codes) so that it reads the
        same printed in a terminal, a notebook, a log file or a docstring.

        Args:
          max_rows: at most this many rows: every k-th epoch for the smallest k that fits,
            the first and the last epoch always among them (None: every epoch).

        Returns:
          The table as a string: ``print(result.table())``.
        """
        return _history.table(self.rows(), max_rows=max_rows)

    def rows(self) -> list[dict[str, Any]]:
        """The history as one dict per epoch: ``{"epoch", "step", "loss", metric...}``
        (JSON; ``pandas.DataFrame(result.rows())`` is the table as a data frame)."""
        return _history.rows(self.history, self.step // self.epoch if self.epoch else 0)

    def plot(self, path: str | os.PathLike | None = None, *, title: str | None = None):
        """The loss per epoch and, beside it, the metrics of ``evaluate``, as a figure.

        The loss axis is logarithmic when the loss spans more than a decade.  The figure is
        made without pyplot (no open figure is left behind, the backend is not changed); a
        notebook shows it when it is a cell's value.

        Args:
          path: where to save it (a PNG, or any format matplotlib knows by the suffix); None
            to only return it.
          title: a title above the plots.

        Returns:
          The ``matplotlib.figure.Figure``.

        Raises:
          ImportError: matplotlib is not installed (``pip install 'mcjax[plot]'``).
        """
        return _history.figure(self.history, title=title, path=path)

    def _repr_html_(self) -> str:
        """A notebook's view: the one-line summary above a short table (at most 10 rows) and,
        beside it, a small plot of the history (when matplotlib is installed)."""
        return _history.html(repr(self), self.rows(), max_rows=SHOWN_ROWS,
                             plot=_history.inline_png(self.history))


def _shape_of(leaf) -> str:
    """An array's dtype and shape as ``float32[256,64]``; another leaf by its type."""
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype") or isinstance(leaf, (int, float)):
        return f"{jnp.result_type(leaf)}[{','.join(str(d) for d in np.shape(leaf))}]"
    return type(leaf).__name__


class _Text:
    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _shapes(params) -> str:
    """The parameters' tree with each array as its dtype and shape, or their count and size
    when that is too long to read in one line."""
    leaves = jax.tree.leaves(params)
    if len(leaves) <= SHOWN_LEAVES:
        text = repr(jax.tree.map(lambda leaf: _Text(_shape_of(leaf)), params))
        if len(text) <= SHOWN_PARAMS:
            return text
    numbers = sum(int(np.size(leaf)) for leaf in leaves if hasattr(leaf, "shape"))
    return f"<{len(leaves)} arrays, {numbers:,} numbers>"
