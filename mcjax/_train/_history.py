"""What a run records per epoch, and three ways to see it: a table, a figure, a log file.

A run's ``history`` is ``{"loss": [...], metric: [...]}``, one number per epoch (JSON, so that
checkpoints carry it).  :func:`rows` turns it into one record per epoch, ``{"epoch", "step",
"loss", metric...}``: the rows of :meth:`~mcjax.TrainResult.table`, of the figure's curves and of
the CSV or JSONL log that ``mcjax train --history`` writes as the epochs end.
"""

from __future__ import annotations

import base64
import csv
import html as html_text
import io
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

HISTORY_SUFFIXES = (".csv", ".jsonl")


class EpochRecord(NamedTuple):
    """What the ``callback`` of :func:`mcjax.train` gets after each epoch.

    The epoch is one compiled program, so the record comes once per epoch, between two
    programs: the callback costs the compiled loop nothing, and a run with a callback is the
    same run, bit for bit, as one without (resumed or not).  The per-step losses are in
    ``step_losses``.

    Attributes:
      epoch: the number of the epoch just run, from 1 (a resumed run goes on counting).
      step: the optimizer steps completed, ``epoch * steps_per_epoch``.
      loss: the mean of the epoch's minibatch losses (as in ``history["loss"]``).
      metrics: what ``evaluate`` returned for this epoch (``{}`` without one).
      step_losses: the loss of each step of the epoch, before its update; shape ``(S,)``.
      params: the parameters after the epoch (device arrays).  The next epoch updates their
        buffers in place: copy what you keep (``jax.device_get(record.params)``).
      checkpoint: the checkpoint written after this epoch, or None.
      seconds: wall time of the training loop so far in this call.
    """

    epoch: int
    step: int
    loss: float
    metrics: Mapping[str, float]
    step_losses: np.ndarray
    params: Any
    checkpoint: Path | None
    seconds: float

    def row(self) -> dict[str, Any]:
        """``{"epoch", "step", "loss", metric...}``: JSON, one line of a log."""
        return {"epoch": self.epoch, "step": self.step, "loss": self.loss, **self.metrics}


def rows(history: Mapping[str, list[float]], steps_per_epoch: int) -> list[dict[str, Any]]:
    """One dict per epoch: ``epoch`` (from 1), ``step`` (completed), then every series."""
    n = len(history.get("loss", ()))
    return [{"epoch": i + 1, "step": (i + 1) * steps_per_epoch,
             **{name: values[i] for name, values in history.items() if i < len(values)}}
            for i in range(n)]


def _number(value) -> str:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def _thinned(n: int, max_rows: int | None) -> list[int]:
    """Indices of the rows shown: all, or at most ``max_rows`` (at least 2): the first epoch,
    every epoch that is a multiple of the smallest step that fits, and the last (40 epochs in
    6 rows: 1, 8, 16, 24, 32, 40), so that the rows between the ends are evenly spaced."""
    if max_rows is None or n <= max_rows:
        return list(range(n))
    for step in range(2, n):
        shown = sorted({0, *range(step - 1, n, step), n - 1})
        if len(shown) <= max(max_rows, 2):
            return shown
    return [0, n - 1]


def table(records: list[dict[str, Any]], *, max_rows: int | None = 20) -> str:
    """The rows as a plain-text table (rich renders it; no colour, no terminal needed)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    columns = list(dict.fromkeys(name for record in records for name in record))
    shown = _thinned(len(records), max_rows)
    grid = Table(*columns, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in grid.columns:
        column.justify = "right"
    for i in shown:
        grid.add_row(*(_number(records[i][c]) if c in records[i] else "" for c in columns))
    out = io.StringIO()
    Console(file=out, width=max(80, 12 * len(columns)), color_system=None,
            force_terminal=False, force_jupyter=False, force_interactive=False).print(grid)
    text = "\n".join(line.rstrip() for line in out.getvalue().splitlines()).strip("\n")
    if len(shown) < len(records):
        text += f"\n({len(shown)} of {len(records)} epochs; table(max_rows=None) shows all)"
    return text


def html(summary: str, records: list[dict[str, Any]], *, max_rows: int | None = 20,
         plot: str | None = None) -> str:
    """``summary`` and the rows as HTML, with ``plot`` (a PNG, base64) beside the table: a
    notebook's view of a ``mcjax.TrainResult``."""
    columns = list(dict.fromkeys(name for record in records for name in record))
    shown = _thinned(len(records), max_rows)
    head = "".join(f"<th>{html_text.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_number(records[i][c]) if c in records[i] else ''}</td>"
                         for c in columns) + "</tr>" for i in shown)
    caption = (f"<caption>{len(shown)} of {len(records)} epochs; table(max_rows=None) shows "
               "all</caption>" if len(shown) < len(records) else "")
    table_html = (f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                  if records else "")
    if plot is not None and records:
        image = (f"<img alt='loss per epoch' src='data:image/png;base64,{plot}' "
                 "style='max-width:100%'>")
        table_html = ("<div style='display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start'>"
                      f"<div>{table_html}</div><div>{image}</div></div>")
    return f"<pre>{html_text.escape(summary)}</pre>{table_html}"


INLINE_PLOT_INCHES = (3.6, 2.4)  # per panel, at 80 dpi: a notebook's small plot


def inline_png(history: Mapping[str, list[float]]) -> str | None:
    """The history's figure, small, as a base64 PNG for an HTML page; None without matplotlib
    (the view is then the table alone)."""
    try:
        fig = figure(history)
    except ImportError:
        return None
    width, height = INLINE_PLOT_INCHES
    fig.set_size_inches(width * len(fig.axes), height)
    for ax in fig.axes:
        ax.title.set_fontsize(9)
        ax.xaxis.label.set_fontsize(8)
        ax.yaxis.label.set_fontsize(8)
        ax.tick_params(labelsize=7)
    fig.axes[0].set_ylabel("loss")
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=80)
    return base64.b64encode(out.getvalue()).decode("ascii")


def notify(callback: Callable[[EpochRecord], Any], record: EpochRecord,
           last_checkpoint: Path | None) -> None:
    """Call ``callback(record)``; what it raises goes on, with a note that says where the run
    stopped (the exception keeps its type: a callback may raise its own to stop a run)."""
    try:
        callback(record)
    except Exception as error:
        add_note = getattr(error, "add_note", None)  # Python 3.11+: printed with the traceback
        if add_note is not None:
            name = getattr(callback, "__qualname__", type(callback).__qualname__)
            add_note(f"mcjax.train: raised by callback={name} after epoch {record.epoch} "
                     f"(step {record.step}); the run stopped there"
                     + (f", its last checkpoint is {last_checkpoint}" if last_checkpoint
                        else ""))
        raise


def figure(history: Mapping[str, list[float]], *, title: str | None = None, path=None):
    """The loss per epoch (log scale when it spans a decade), and the metrics beside it.

    A ``matplotlib.figure.Figure`` made without pyplot: no global figure is left open, the
    backend is not touched, and a notebook shows it when it is a cell's value.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("mcjax.TrainResult.plot needs matplotlib: pip install 'mcjax[plot]'"
                          ) from error
    loss = np.asarray(history.get("loss", ()), dtype=float)
    metrics = {name: values for name, values in history.items() if name != "loss"}
    fig = Figure(figsize=(5.2 * (1 + bool(metrics)), 3.6), layout="constrained")
    axes = fig.subplots(1, 1 + bool(metrics), squeeze=False)[0]
    marker = "." if len(loss) <= 60 else None
    axes[0].plot(np.arange(1, len(loss) + 1), loss, marker=marker)
    finite = loss[np.isfinite(loss)]
    if finite.size and finite.min() > 0 and finite.max() > 10 * finite.min():
        axes[0].set_yscale("log")
    axes[0].set(xlabel="epoch", ylabel="loss (mean over the epoch's steps)", title="loss")
    if metrics:
        for name, values in metrics.items():
            axes[1].plot(np.arange(1, len(values) + 1), values, marker=marker, label=name)
        axes[1].set(xlabel="epoch", title="evaluate")
        axes[1].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


class HistoryWriter:
    """A ``callback`` that appends each epoch's row to ``path`` (``.csv`` or ``.jsonl``) and
    flushes it, so that a log of a run killed mid-way holds every epoch it finished.

    :meth:`start` first writes the rows of the run so far (those a resumed run restored).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.jsonl = self.path.suffix.lower() == ".jsonl"
        self._file: Any = None
        self._csv: Any = None

    def start(self, records: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", newline="")  # noqa: SIM115 - closed by close()
        for record in records:
            self._write(record)

    def __call__(self, record: EpochRecord) -> None:
        self._write(record.row())

    def _write(self, row: dict[str, Any]) -> None:
        if self.jsonl:
            self._file.write(json.dumps(row) + "\n")
        else:
            if self._csv is None:  # the columns of the first row; a later extra is left out
                self._csv = csv.DictWriter(self._file, fieldnames=list(row),
                                           extrasaction="ignore")
                self._csv.writeheader()
            self._csv.writerow(row)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
