"""A progress bar for long runs, updated once per epoch so that it costs the compiled loop
nothing (rich, on stderr).

The bar stays when the run ends, at its last epoch (``epoch 30/30``): in a terminal, in a log
file or a pipe (rich prints the final state once, when the bar stops) and in a notebook (where
rich draws the bar in a widget that is redrawn only by its refresh thread, so the last epoch is
drawn explicitly before the bar stops).
"""

from __future__ import annotations

import sys
from typing import Any


def wanted(progress: bool | None) -> bool:
    """``progress``, or for None: whether stderr is a terminal or a notebook's."""
    if progress is not None:
        return bool(progress)
    if sys.stderr is not None and sys.stderr.isatty():
        return True
    from rich.console import Console

    return Console(stderr=True).is_jupyter


class EpochProgress:
    """``with EpochProgress(enabled, start, total) as bar: bar.update(epoch, history)``.

    ``enabled`` is a bool or None (see :func:`wanted`); when it resolves to False every call
    does nothing.
    """

    def __init__(self, enabled: bool | None, start: int, total: int):
        self.enabled = wanted(enabled)
        self.start, self.total = start, total
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self):
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("epoch"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,  # the last line stays
        )
        self._progress.__enter__()
        self._task = self._progress.add_task("train", total=self.total, completed=self.start,
                                             metrics="")
        return self

    def update(self, epoch: int, history: dict[str, list[float]]) -> None:
        if self._progress is None:
            return
        metrics = "  ".join(f"{k} {v[-1]:.4g}" for k, v in history.items() if v)
        self._progress.update(self._task, completed=epoch, metrics=metrics)

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.refresh()  # draw the last epoch (a notebook's widget would not)
            self._progress.__exit__(*exc)
        return False
