"""A progress bar for long runs, updated once per epoch so that it costs the compiled loop
nothing (rich, on stderr)."""

from __future__ import annotations

from typing import Any


class EpochProgress:
    """``with EpochProgress(enabled, start, total) as bar: bar.update(epoch, history)``.

    When ``enabled`` is False (or rich is missing) every call does nothing.
    """

    def __init__(self, enabled: bool, start: int, total: int):
        self.enabled = bool(enabled)
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
            self._progress.__exit__(*exc)
        return False
