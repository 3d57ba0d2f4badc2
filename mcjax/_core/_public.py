"""Public objects named as users import them.

A class or function defined in a private module (``mcjax._check._api.check``) is re-exported by
a public one (``mcjax``); ``publish`` makes its ``__module__`` say so, so that ``help()``,
reprs, pickles and tracebacks name ``mcjax.check``, the name a user types.  What a public
module defines itself (``mcjax.rules.activations.relu``) keeps its own module.
"""

from __future__ import annotations

import inspect


def is_private(module: str) -> bool:
    """Whether a dotted module name has a private part (``mcjax._check._api``)."""
    return any(part.startswith("_") for part in module.split("."))


def publish(module: str, namespace: dict) -> None:
    """Set ``__module__`` to ``module`` on the classes and functions listed in
    ``namespace["__all__"]`` that a private module defines.

    ``mcjax/__init__.py`` calls it for itself first, then for each public submodule: a name
    both export is ``mcjax``'s.
    """
    for name in namespace["__all__"]:
        value = namespace[name]
        if (inspect.isclass(value) or inspect.isroutine(value)) and is_private(
                getattr(value, "__module__", None) or ""):
            value.__module__ = module
