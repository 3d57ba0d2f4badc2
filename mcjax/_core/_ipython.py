"""mcjax in IPython and Jupyter: a cell named as IPython names it, and mcjax's errors shown
at the user's line.

IPython compiles each cell into a file of its own (``/tmp/ipykernel_123/2862798733.py``) and
names it in tracebacks by its input number, ``Cell In[11], line 2``
(``get_ipython().compile.format_code_name``); a message that quotes the user's line names the
cell the same way (``code_location``).

A traceback of one of mcjax's errors stops at the user's call, as mcjax's pytest plugin makes
it do under pytest: the frames inside mcjax (the checker's, the trainer's) are left out, and
the message, which names the user's line where it matters, follows.  IPython asks an
exception for its own traceback through ``_render_traceback_`` (the hook IPython's
``showtraceback`` documents for exception classes that customise theirs); mcjax's error
classes answer with IPython's own rendering of the shortened traceback.  ``%xmode Verbose``
shows every frame, and ``%debug`` walks the whole stack as always.

Nothing here imports IPython: it is used only where IPython is already running.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # mcjax/


def _shell():
    """The running IPython shell, or None (IPython not imported, or no shell running)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    try:
        return ipython.get_ipython()
    except Exception:  # noqa: BLE001 - an IPython we cannot ask is no IPython to us
        return None


def cell_location(filename: str, lineno: int | None) -> str | None:
    """``Cell In[11], line 2`` where ``filename`` is an IPython cell's, else None."""
    shell = _shell()
    if shell is None:
        return None
    try:
        named = shell.compile.format_code_name(filename)
    except Exception:  # noqa: BLE001 - an older or stranger shell: the file's name will do
        return None
    if not named:
        return None
    label, name = named
    return f"{label} {name}, line {lineno}"


def code_location(filename: str, lineno: int | None) -> str:
    """Where a line of the user's code is: ``Cell In[11], line 2`` in IPython, as its
    tracebacks say, else ``my_model.py:12``."""
    return cell_location(filename, lineno) or f"{os.path.basename(filename)}:{lineno}"


def _inside_mcjax(tb: types.TracebackType) -> bool:
    try:
        return PACKAGE in Path(tb.tb_frame.f_code.co_filename).resolve().parents
    except (OSError, ValueError):
        return False


def until_mcjax(tb: types.TracebackType | None) -> types.TracebackType | None:
    """A copy of the traceback ``tb`` that ends at the last frame before mcjax's first (the
    user's call); None when no frame of ``tb`` is mcjax's, or the first one is."""
    kept = []
    while tb is not None and not _inside_mcjax(tb):
        kept.append(tb)
        tb = tb.tb_next
    if tb is None or not kept:
        return None
    copy = None
    for link in reversed(kept):  # the original chain is left whole, for %debug
        copy = types.TracebackType(copy, link.tb_frame, link.tb_lasti, link.tb_lineno)
    return copy


class ShownAtTheCall:
    """Mixed into mcjax's error classes: in IPython, a traceback that stops at the user's call
    of mcjax (see the module's docstring)."""

    @property
    def _render_traceback_(self):
        """IPython's hook; an AttributeError (no hook) outside IPython, in ``%xmode Verbose``,
        or when the error did not pass through mcjax."""
        shell = _shell()
        tb = until_mcjax(getattr(self, "__traceback__", None)) if shell is not None else None
        formatter = getattr(shell, "InteractiveTB", None)
        if tb is None or formatter is None or getattr(formatter, "mode", "") == "Verbose":
            raise AttributeError("_render_traceback_")
        error = self

        def render() -> list[str]:
            return formatter.structured_traceback(type(error), error, tb)

        return render
