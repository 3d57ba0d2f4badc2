"""JAX's persistent compilation cache, so that a second process starts warm.

XLA compiles each jitted function once per process; with the persistent cache on, the
compiled executable is also written to disk, keyed by the program, the compiler options and
the device, and a later process with the same program loads it instead of compiling.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

CACHE_ENV = "MCJAX_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$MCJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/mcjax/xla`` (``~/.cache/mcjax/xla``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mcjax" / "xla"


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> Path:
    """Turn on JAX's persistent compilation cache in ``directory`` for this process.

    Every compiled program is cached, however small or quick to compile (JAX's defaults skip
    programs that compile in under a second, which is every program of a small model).

    Args:
      directory: where to keep compiled programs (default: :func:`default_cache_dir`).

    Returns:
      The cache folder.
    """
    path = Path(directory) if directory is not None else default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
