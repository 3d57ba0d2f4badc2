"""A progress bar for long runs, updated once per epoch so that it costs the compiled loop
nothing (rich, on stderr).

The bar stays when the run ends, at its last epoch (``epoch 30/30``): in a terminal, in a log
file or a pipe (rich prints the final state once, when the bar stops), and in a notebook.
There rich's live display needs ipywidgets and is redrawn only by its refresh thread, so a
saved notebook kept whichever frame that thread drew last (``epoch 0/30`` after a finished
run) or, without ipywidgets, no bar at all.  In a notebook the bar is therefore one output
that each epoch replaces (IPython's ``display(..., display_id=True)`` and ``update``: an
``update_display_data`` message, which the front end and the saved notebook apply in place),
its last frame drawn when the run ends.
"""

from __future__ import annotations

import io
import sys
import time
from typing import Any

NOTEBOOK_FRAMES_PER_SECOND = 10  # at most: a run of many short epochs sends few messages
_PRE = ("<pre style=\"white-space:pre;overflow-x:auto;line-height:normal;font-family:Menlo,"
        "'DejaVu Sans Mono',consolas,'Courier New',monospace\">{code}</pre>")


def wanted(progress: bool | None) -> bool:
    """``progress``, or for None: whether stderr is a terminal or a notebook's."""
    if progress is not None:
        return bool(progress)
    if sys.stderr is not None and sys.stderr.isatty():
        return True
    from rich.console import Console

    return Console(stderr=True).is_jupyter


def _columns():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return (TextColumn("epoch"), MofNCompleteColumn(), BarColumn(),
            TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn())


class _NotebookBar:
    """The bar as one notebook output, replaced by each frame (no thread, no ipywidgets)."""

    def __init__(self, progress):
        from IPython.display import display

        self.progress = progress
        self.last = 0.0
        handle = display(self.frame(), raw=True, display_id=True)
        assert handle is not None  # display_id=True returns one
        self.handle = handle

    def frame(self) -> dict[str, str]:
        """The bar as it is now: plain text and HTML (rich's colours), one output."""
        from rich.console import Console

        console = Console(file=io.StringIO(), record=True, width=100, color_system="truecolor",
                          force_terminal=True, force_jupyter=False)
        console.print(self.progress.get_renderable())
        text = console.export_text(clear=False).rstrip("\n")
        return {"text/plain": text,
                "text/html": console.export_html(inline_styles=True, code_format=_PRE)}

    def draw(self, last: bool = False) -> None:
        now = time.monotonic()
        if last or now - self.last >= 1 / NOTEBOOK_FRAMES_PER_SECOND:
            self.handle.update(self.frame(), raw=True)
            self.last = now


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
        self._notebook: _NotebookBar | None = None

    def __enter__(self):
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import Progress

        console = Console(stderr=True)
        if console.is_jupyter:  # drawn by us, frame by frame (see the module's docstring)
            self._progress = Progress(*_columns(), auto_refresh=False,
                                      console=Console(file=io.StringIO()))
        else:
            self._progress = Progress(*_columns(), console=console,
                                      transient=False)  # the last line stays
            self._progress.__enter__()
        self._task = self._progress.add_task("train", total=self.total, completed=self.start,
                                             metrics="")
        if console.is_jupyter:
            self._notebook = _NotebookBar(self._progress)
        return self

    def update(self, epoch: int, history: dict[str, list[float]]) -> None:
        if self._progress is None:
            return
        metrics = "  ".join(f"{k} {v[-1]:.4g}" for k, v in history.items() if v)
        self._progress.update(self._task, completed=epoch, metrics=metrics)
        if self._notebook is not None:
            self._notebook.draw()

    def __exit__(self, *exc):
        if self._notebook is not None:
            self._notebook.draw(last=True)  # the frame the saved notebook keeps
        elif self._progress is not None:
            self._progress.refresh()
            self._progress.__exit__(*exc)
        return False
