"""What JAX spells differently across the versions mcjax supports, from pyproject.toml's floor
(JAX 0.7) to the newest: one name here for each, so that the rest of mcjax reads as if written
for the newest JAX.

Each entry says which JAX brought the newer spelling; drop it when the floor passes that
version (``.ci/run`` tests the floor: docs/index.md, "Supported JAX versions").
"""

from __future__ import annotations

import importlib
from typing import Any

import jax
from jax.extend import core


def _older(module: str, name: str) -> Any:
    """``module.name`` as an older JAX has it (looked up by name: the newest JAX, the one the
    type checker reads, no longer has it)."""
    return getattr(importlib.import_module(module), name)


# `with enable_x64(flag):` float64 on or off for a block.  JAX >= 0.8: jax.enable_x64 (the
# config state, a context manager when called); 0.7: jax.experimental.enable_x64
enable_x64: Any = (jax.enable_x64 if hasattr(jax, "enable_x64")
                   else _older("jax.experimental", "enable_x64"))

# The discarded output of an equation (``_``).  JAX >= 0.10: jax.extend.core.DropVar; before:
# only jax.core.DropVar (deprecated there since 0.10)
DropVar: Any = core.DropVar if hasattr(core, "DropVar") else _older("jax.core", "DropVar")

# Remove a listener of jax.monitoring.  JAX >= 0.8.1 names them publicly; before, only privately
if hasattr(jax.monitoring, "unregister_event_listener"):
    unregister_event_listener: Any = jax.monitoring.unregister_event_listener
    unregister_event_duration_listener: Any = jax.monitoring.unregister_event_duration_listener
else:
    unregister_event_listener = _older("jax._src.monitoring",
                                       "_unregister_event_listener_by_callback")
    unregister_event_duration_listener = _older(
        "jax._src.monitoring", "_unregister_event_duration_listener_by_callback")

__all__ = ["DropVar", "enable_x64", "unregister_event_duration_listener",
           "unregister_event_listener"]
