"""Loading a user's own code: a module named on the command line (``my_model.py:loss``), and
calling it with its failures said in one line."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from mcjax._core._errors import UsageError


def import_user_module(spec: str, command: str = "mcjax"):
    """Import ``spec``, a dotted module name or a path to a .py file, and return the module.

    A file's own folder goes first on ``sys.path``, so that it can import its sibling files.
    """
    path = Path(spec)
    try:
        if spec.endswith(".py") or path.exists():
            if not path.exists():
                raise UsageError(f"{command}: {spec}: no such file")
            folder = str(path.resolve().parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            if module_spec is None or module_spec.loader is None:
                raise UsageError(f"{command}: {spec}: not a Python module")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[path.stem] = module
            module_spec.loader.exec_module(module)
            return module
        return importlib.import_module(spec)
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's module failed to import: one line
        raise UsageError(f"{command}: cannot import {spec}: {type(e).__name__}: {e}"
                         f"{_where_raised(e, spec)}") from None


def _where_raised(error: BaseException, spec: str) -> str:
    """`` (my_model.py:3)``: the last line of the user's file in ``error``'s traceback."""
    import traceback

    name = Path(spec).name
    frames = [fr for fr in traceback.extract_tb(error.__traceback__) if fr.filename.endswith(name)]
    if isinstance(error, SyntaxError) or not frames:
        return ""
    return f" ({name}:{frames[-1].lineno})"


def load_object(spec: str, what: str, command: str = "mcjax") -> tuple[Any, Any]:
    """``MODULE:NAME`` -> ``(module, object)``; MODULE is a dotted name or a path to a .py file.

    Raises:
      UsageError: ``spec`` is not ``MODULE:NAME``, the module cannot be imported, or it has
        no ``NAME`` (one line, naming ``what`` was given and how).
    """
    module_name, sep, name = spec.rpartition(":")
    if not sep or not module_name or not name:
        raise UsageError(f"{command}: {what} {spec!r} is not MODULE:NAME (e.g. my_file.py:loss)")
    module = import_user_module(module_name, f"{command}: {what} {spec!r}")
    try:
        return module, getattr(module, name)
    except AttributeError:
        raise UsageError(f"{command}: {what} {spec!r}: module {module_name} has no "
                         f"{name!r}") from None


def call_user(fn, command: str, what: str, **kwargs) -> Any:
    """``fn(**kwargs)``, a user's function called from the command line: what it raises is one
    line (``UsageError``) naming ``what`` was called and the user's line that raised."""
    try:
        return fn(**kwargs)
    except Exception as e:  # noqa: BLE001 - the user's code failed: one line
        file = getattr(getattr(fn, "__code__", None), "co_filename", "")
        raise UsageError(f"{command}: {what} raised {type(e).__name__}: {e}"
                         f"{_where_raised(e, file) if file else ''}") from None
