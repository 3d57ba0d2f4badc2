"""Checkpoints: plain host arrays in one ``.npz`` file, written atomically.

A checkpoint holds a pytree of arrays (the parameters and the optimizer state) and a JSON
metadata record (epoch, step, history, the run's configuration).  The format is NumPy's
``.npz`` read with ``allow_pickle=False``: loading it cannot execute code, any NumPy can
read it, and the arrays are plain host arrays, independent of the device (or the number of
devices) that wrote them.  The tree structure is not stored as code either: restoring takes
a template pytree (``like``) and checks every leaf's path, shape and dtype against it.

A write goes to a temporary file in the same folder, is flushed to disk (``fsync``) and then
renamed over its final name (``os.replace``, atomic on POSIX): a process killed at any moment
leaves either the previous checkpoints or a complete new one, never a torn file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

_NAME = "ckpt-{epoch:08d}.npz"
_PATTERN = re.compile(r"^ckpt-(\d{8})\.npz$")
_META = "__metadata__"
_TMP_PREFIX = ".tmp-ckpt-"


def _leaf_paths(tree) -> tuple[list[str], list[Any]]:
    leaves_with_paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [jax.tree_util.keystr(p) for p, _ in leaves_with_paths], [v for _, v in leaves_with_paths]


def save_checkpoint(directory: str | os.PathLike, state, *, epoch: int,
                    metadata: dict | None = None, keep: int | None = 3) -> Path:
    """Write ``state`` (a pytree of arrays) as checkpoint ``epoch`` in ``directory``, atomically.

    Args:
      directory: the checkpoint folder (created if missing).
      state: a pytree of arrays, e.g. ``(params, opt_state)``; device arrays are copied to
        the host.
      epoch: the number of completed epochs; names the file ``ckpt-EEEEEEEE.npz``.
      metadata: JSON-serialisable extras (step, history, configuration).
      keep: how many of the newest checkpoints to keep (older ones are deleted); None keeps all.

    Returns:
      The path of the checkpoint.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths, leaves = _leaf_paths(state)
    arrays, described = {}, []
    for i, leaf in enumerate(jax.device_get(leaves)):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            raise TypeError(
                f"mcjax.save_checkpoint: leaf {paths[i]} is a PRNG key; store "
                "jax.random.key_data(key) instead"
            )
        array = np.asarray(leaf)
        described.append({"path": paths[i], "shape": list(array.shape), "dtype": array.dtype.name})
        if array.dtype.kind not in "biufc":
            # bfloat16 and friends (ml_dtypes) are stored as their bits; the name restores them
            array = array.view(f"uint{8 * array.dtype.itemsize}")
        arrays[f"leaf{i:06d}"] = array
    meta = {"epoch": int(epoch), "leaves": described, **(metadata or {})}
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    final = directory / _NAME.format(epoch=int(epoch))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=_TMP_PREFIX, suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(directory)
    if keep is not None:
        for old in checkpoints(directory)[:-keep]:
            old.unlink(missing_ok=True)
    return final


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; some platforms cannot open a folder, which is harmless."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def checkpoints(directory: str | os.PathLike) -> list[Path]:
    """The complete checkpoints in ``directory``, oldest first (temporary files are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _PATTERN.match(p.name)]
    return sorted(found, key=lambda p: int(_PATTERN.match(p.name).group(1)))


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in ``directory``, or None."""
    found = checkpoints(directory)
    return found[-1] if found else None


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Delete temporary files left by a process killed while writing a checkpoint."""
    directory = Path(directory)
    if directory.is_dir():
        for p in directory.glob(f"{_TMP_PREFIX}*"):
            p.unlink(missing_ok=True)


def _as_saved(array: np.ndarray, dtype: str) -> np.ndarray:
    return array if array.dtype.name == dtype else array.view(jax.numpy.dtype(dtype))


def read_metadata(path: str | os.PathLike) -> dict:
    """The JSON metadata of the checkpoint at ``path`` (epoch, step, history, ...)."""
    with np.load(path, allow_pickle=False) as f:
        return json.loads(f[_META].tobytes().decode())


def restore_checkpoint(path: str | os.PathLike, like) -> tuple[Any, dict]:
    """Read the checkpoint at ``path`` into the structure of ``like``.

    Args:
      path: a checkpoint file (see :func:`latest_checkpoint`).
      like: a pytree with the structure, shapes and dtypes of the saved state (e.g. freshly
        initialised ``(params, opt_state)``); only its structure and leaf shapes are read.

    Returns:
      ``(state, metadata)``: ``state`` has ``like``'s structure with NumPy host arrays as
      leaves (``jax.device_put`` them, with a sharding if you like); ``metadata`` is the dict
      saved with it.

    Raises:
      ValueError: the checkpoint's leaves do not match ``like`` (different model or
        optimizer); the message lists the first differences.
    """
    paths, template = _leaf_paths(like)
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(f[_META].tobytes().decode())
        saved = meta["leaves"]
        problems = []
        if [s["path"] for s in saved] != paths:
            problems.append(
                f"it holds {len(saved)} arrays at {[s['path'] for s in saved][:4]}... but the "
                f"state to restore has {len(paths)} at {paths[:4]}..."
            )
        else:
            for p, s, t in zip(paths, saved, template):
                want = (list(np.shape(t)), np.dtype(getattr(t, "dtype", np.asarray(t).dtype)).name)
                if (s["shape"], s["dtype"]) != want:
                    problems.append(
                        f"{p} has shape {tuple(s['shape'])} and dtype {s['dtype']} but expected "
                        f"shape {tuple(want[0])} and dtype {want[1]}"
                    )
        if problems:
            raise ValueError(
                f"mcjax.restore_checkpoint: {path} does not fit the state to restore: "
                + "; ".join(problems[:3])
            )
        leaves = [_as_saved(f[f"leaf{i:06d}"], s["dtype"]) for i, s in enumerate(saved)]
    treedef = jax.tree_util.tree_structure(like)
    return jax.tree_util.tree_unflatten(treedef, leaves), meta
