"""Compiling the epoch once, and never serving a stale program; JAX's persistent cache.

:func:`mcjax.train` compiles its epoch ahead of time (to report the compile time apart from the
training time).  The epoch is traced afresh on every call and reused only when the traced
program is the same (:func:`mcjax._program._trace.compile_keyed`): a second ``train`` with the same model
and settings (another seed, a resumed run, a notebook cell run again) compiles nothing, and a
loss that reads a global the user has since changed compiles anew.  No cache here is keyed on
an object's identity.

With JAX's persistent compilation cache on (:func:`enable_compilation_cache`), the compiled
executable is also written to disk, keyed by the program, the compiler options and the device,
and a later process with the same program loads it instead of compiling.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from mcjax._program._compile import compile_keyed
from mcjax._train import _sharding
from mcjax._train._step import compiler_options, train_epoch

CACHE_ENV = "MCJAX_CACHE_DIR"


def compiled_epoch(loss: Callable, optimizer, args, *, batch_size: int, shuffle: bool,
                   mesh=None) -> Callable:
    """Epoch ``e`` as one program ``(params, opt_state, data, key, e) -> (params, opt_state,
    metrics)``, compiled for ``args`` (the first four); it runs
    :func:`mcjax.steps.train_epoch` with the key ``fold_in(key, e)`` (folded inside the program:
    no eager operation per epoch).  ``params`` and ``opt_state`` are donated.

    On a mesh the minibatches are split along ``"data"`` inside the program and every output
    is replicated, as in :func:`mcjax.steps.make_train_epoch`.
    """
    if mesh is not None:
        loss = _sharding.constrain_batch(loss, mesh, function="train")
    epoch = train_epoch(loss, optimizer, batch_size=batch_size, shuffle=shuffle,
                        check_finite=True)

    def numbered_epoch(params, opt_state, data, key, number):
        return epoch(params, opt_state, data, jax.random.fold_in(key, number))

    placement = {} if mesh is None else {"out_shardings": _sharding.replicated(mesh)}
    return compile_keyed(numbered_epoch, *args, np.int32(0), donate_argnums=(0, 1),
                         compiler_options=compiler_options(jax.default_backend()), **placement)


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

    Raises:
      NotADirectoryError: ``directory`` (or a folder above it) is a file.
    """
    path = Path(directory) if directory is not None else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(
            f"mcjax.compilation.enable_compilation_cache: {path} is a file (or lies under one); expected a "
            "folder for compiled programs") from None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
