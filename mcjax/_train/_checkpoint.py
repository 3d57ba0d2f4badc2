"""Checkpoints on orbax: one folder per saved epoch, checked on the way out and back in.

The storage layer is orbax-checkpoint's ``CheckpointManager``, the JAX ecosystem's: it writes
each checkpoint into a temporary folder and renames it into place when complete (a process
killed at any moment leaves the previous checkpoints and perhaps a temporary folder, never a
torn checkpoint), it saves and restores sharded arrays from every process of a multi-host run
onto any mesh, and it never unpickles anything.  The checkpoint of epoch ``e`` is the folder
``epoch_0000000e``::

    state/         {"params": ..., "opt_state": ...} (and "state": a model's running
                   statistics, RNG counts): arrays in tensorstore's OCDBT format
    meta/metadata  JSON: epoch, step, history, the run's id and configuration
    digests.json   a blake2b digest of every file above, written once orbax has committed them
    _CHECKPOINT_METADATA, commit_success.txt   orbax's own

What orbax does not do is done here.  Before a save every array is checked finite: only a
state worth resuming is kept.  Before a checkpoint is read, every file's digest is compared
with ``digests.json``, so that a damaged checkpoint (a flipped bit, a truncated or missing
file, a stranger's file posing as a checkpoint) is recognised as :class:`Damaged` before orbax
or tensorstore parse a byte of it.  Then the stored arrays' own shapes and dtypes (read from
tensorstore, not from a record of ours) are compared with the state to restore, leaf by leaf,
and every difference is listed: orbax would silently cast a dtype.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mcjax._core._errors import CheckpointError, shape_str

STEP_PREFIX = "epoch"
DIGESTS = "digests.json"
STEP_DIGITS = 8
FORMAT = "mcjax-checkpoint/1"


class Damaged(Exception):
    """A checkpoint that cannot be read back as it was written (the message says why)."""


class WriteError(OSError):
    """A checkpoint, or a run's record, could not be written: the disk is full, the folder
    read-only, ... (``errno`` says which, where known).  Its message is one sentence."""

    def __init__(self, code: int | None, message: str):
        super().__init__(code or errno.EIO, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def os_reason(error: BaseException) -> tuple[int | None, str]:
    """``(errno, reason)`` of a failed write: an ``OSError``'s own, or the operating system's
    error that orbax and tensorstore report inside their messages (``RESOURCE_EXHAUSTED: ...
    [os_error_code='28']``: no space left on device); else the message's first line."""
    if isinstance(error, OSError) and error.errno:
        return error.errno, error.strerror or os.strerror(error.errno)
    found = re.search(r"os_error_code\W*(\d+)", str(error))
    if found:
        return int(found.group(1)), os.strerror(int(found.group(1)))
    text = str(error).strip()
    return None, (text.splitlines()[0][:200] if text else type(error).__name__)


def _ocp():
    # imported on first use: orbax brings tensorstore and asyncio machinery that a process
    # which never writes a checkpoint (``mcjax verify``) need not load
    import orbax.checkpoint as ocp

    return ocp


def step_name(epoch: int) -> str:
    return f"{STEP_PREFIX}_{epoch:0{STEP_DIGITS}d}"


def parse_step(name: str) -> int | None:
    """The epoch a checkpoint folder's name holds (the inverse of :func:`step_name`), or None
    for any other name."""
    prefix, _, digits = name.partition("_")
    return int(digits) if prefix == STEP_PREFIX and digits.isdigit() else None


def leaf_names(tree) -> dict[str, Any]:
    """``{"params.0.W": leaf, ...}``: each leaf by its path, the way orbax names it."""
    def part(key):
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                return str(getattr(key, attr))
        return str(key)

    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {".".join(part(k) for k in path): leaf for path, leaf in flat}


def _host(leaf) -> np.ndarray:
    """One whole copy of ``leaf`` on the host (a replicated array's first local shard)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        leaf = leaf.addressable_data(0)
    return np.asarray(leaf)


def _check_finite(state, *, epoch: int) -> None:
    bad = []
    for name, leaf in leaf_names(state).items():
        host = _host(leaf)
        if host.dtype.kind in "fc" and not np.isfinite(host).all():
            bad.append(f"{name} ({int(np.size(host) - np.isfinite(host).sum())} NaN or Inf)")
    if bad:
        raise FloatingPointError(f"mcjax.train: the state of epoch {epoch} is not finite: "
                                 f"{', '.join(bad)}; only a finite state is saved")


def _file_digest(path: Path) -> str:
    """blake2b (16 bytes) of a file, read a megabyte at a time (array files can be large)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _file_digest(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != DIGESTS}


class Store:
    """The orbax checkpoints of one folder: list, save, restore.

    Args:
      directory: the folder (it must exist).
      keep: keep only the newest ``keep`` checkpoints (None: all); pruning is orbax's.
      writer: this process holds the folder's lock and may write; otherwise the store is
        only read (nothing is removed: orbax's read-only mode would say so on stderr).
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int | None = None,
                 writer: bool = True):
        ocp = _ocp()
        self.directory = Path(directory)
        self._verified: set[int] = set()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep if writer else None, step_prefix=STEP_PREFIX,
            step_format_fixed_length=STEP_DIGITS, create=False,
            enable_async_checkpointing=False,
            # a writer killed mid-save leaves a temporary folder; the writer holds the
            # folder's lock, so no other writer's temporary folder can be removed
            cleanup_tmp_directories=writer)
        self._manager = ocp.CheckpointManager(
            self.directory.absolute(), options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()})

    def close(self) -> None:
        self._manager.close()

    def epochs(self) -> list[int]:
        """The epochs that have a complete checkpoint, oldest first."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def path(self, epoch: int) -> Path:
        return self.directory / step_name(epoch)

    def save(self, epoch: int, state, meta: dict) -> Path:
        """Write ``state`` (a pytree of arrays) and ``meta`` (JSON) as epoch ``epoch``.

        Raises:
          FloatingPointError: an array of ``state`` holds NaN or Inf (nothing is written).
          CheckpointError: the folder already holds this epoch or a later one (orbax would
            skip the save without a word).
          WriteError: the checkpoint could not be written (a full disk, a read-only folder);
            what was written of it is removed, and the earlier checkpoints are intact.
        """
        ocp = _ocp()
        _check_finite(state, epoch=epoch)
        before = self.epochs()
        later = [e for e in before if e >= epoch]
        path = self.path(epoch)
        try:
            saved = not later and self._manager.save(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave({"format": FORMAT, **meta, "epoch": epoch})))
            if saved and jax.process_index() == 0:  # every process's files are in place
                tmp = path / f".{DIGESTS}.tmp"
                tmp.write_text(json.dumps(_file_digests(path), indent=0))
                os.replace(tmp, path / DIGESTS)
        except Exception as error:  # noqa: BLE001 - orbax's ValueError("RESOURCE_EXHAUSTED...")
            self._remove_partial(epoch)
            code, reason = os_reason(error)
            last = f"the last checkpoint, {self.path(before[-1])}, is intact" if before \
                else "no checkpoint had been written before"
            hint = "free some space, then resume" if code in (errno.ENOSPC, errno.EDQUOT) \
                else "once it can be written, resume"
            raise WriteError(code, f"mcjax.train: cannot write the checkpoint of epoch {epoch} "
                             f"in {self.directory}: {reason}; {last}: {hint} (resume=True, "
                             "--resume)") from error
        if not saved:
            raise CheckpointError(
                f"mcjax.train: cannot save epoch {epoch} in {self.directory}: it holds "
                f"{', '.join(step_name(e) for e in later) or 'a newer checkpoint'}; expected "
                "only earlier epochs of this run")
        return path

    def _partials(self, epoch: int) -> list[Path]:
        """What a failed save of epoch ``epoch`` left: orbax's temporary folder, or a
        checkpoint without its digests."""
        path = self.path(epoch)
        return [*self.directory.glob(f"{path.name}.*"),
                *([path] if path.is_dir() and not (path / DIGESTS).exists() else [])]

    def _remove_partial(self, epoch: int, *, quiet: float = 1.0, within: float = 15.0) -> None:
        """Remove what a failed save left of epoch ``epoch``, to free the space it holds.

        When one of orbax's writes fails, the save raises while its other writes (tensorstore's
        threads, the metadata) may still be running, and they create folders and empty files
        in the temporary folder even on a full disk (a file costs an inode, not a block).  So
        the partial folder is removed until it has stayed absent for ``quiet`` seconds (at
        most ``within`` seconds in all; best effort)."""
        if jax.process_index() != 0:
            return
        start = time.monotonic()
        absent_since = None
        while time.monotonic() - start < within:
            partials = self._partials(epoch)
            for partial in partials:
                shutil.rmtree(partial, ignore_errors=True)
            if partials or self._partials(epoch):
                absent_since = None
            elif absent_since is None:
                absent_since = time.monotonic()
            elif time.monotonic() - absent_since >= quiet:
                return
            time.sleep(0.02)

    def verify(self, epoch: int) -> None:
        """Raise :class:`Damaged` unless every file of the checkpoint is as it was written."""
        if epoch in self._verified:
            return
        path = self.path(epoch)
        try:
            want = json.loads((path / DIGESTS).read_text())
        except (OSError, ValueError) as error:
            raise Damaged(f"its {DIGESTS} cannot be read ({type(error).__name__})") from None
        try:
            got = _file_digests(path)
        except OSError as error:
            raise Damaged(f"its files cannot be read ({type(error).__name__})") from None
        wrong = sorted(n for n in set(want) | set(got) if want.get(n) != got.get(n))
        if wrong:
            raise Damaged(f"{len(wrong)} of its files differ from what was written: "
                          f"{', '.join(wrong[:3])}{', ...' if len(wrong) > 3 else ''}")
        self._verified.add(epoch)

    def meta(self, epoch: int, *, verify: bool = True) -> dict:
        """The JSON record of epoch ``epoch``'s checkpoint (``verify=False``: without hashing
        every file of it first; a record that cannot be read is still :class:`Damaged`)."""
        ocp = _ocp()
        if verify:
            self.verify(epoch)
        try:
            meta = self._manager.restore(epoch, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore()))["meta"]
        except Exception as error:  # noqa: BLE001 - any failure to read is damage
            raise Damaged(f"its record cannot be read ({type(error).__name__}: "
                          f"{str(error)[:200]})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise Damaged("its record is not an mcjax checkpoint's")
        return meta

    def stored_arrays(self, epoch: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """``{name: (shape, dtype)}`` of the arrays as tensorstore holds them."""
        self.verify(epoch)
        try:
            tree = self._manager.item_metadata(epoch)["state"]
            tree = getattr(tree, "tree", tree)
            return {name: (tuple(m.shape), np.dtype(m.dtype).name)
                    for name, m in leaf_names(tree).items()}
        except Exception as error:  # noqa: BLE001 - any failure to read is damage
            raise Damaged(f"its arrays cannot be read ({type(error).__name__}: "
                          f"{str(error)[:200]})") from None

    def restore(self, epoch: int, like) -> tuple[Any, dict]:
        """Epoch ``epoch``'s state, in the structure (and on the shardings) of ``like``.

        Args:
          like: a pytree of arrays or ``jax.ShapeDtypeStruct``s (with shardings: the restored
            arrays get them) or NumPy arrays (the restored arrays are NumPy arrays).

        Raises:
          Damaged: a file of the checkpoint is not as it was written, or cannot be read.
          CheckpointError: it is intact but holds other arrays (names, shapes, dtypes) than
            ``like``; the message lists every difference.
        """
        meta = self.meta(epoch)
        problems = mismatches(self.stored_arrays(epoch), leaf_names(like))
        if problems:
            raise CheckpointError(f"mcjax.train: {self.path(epoch)} holds other arrays than "
                                  f"this run's state: {'; '.join(problems)}")
        ocp = _ocp()
        try:
            state = self._manager.restore(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(like)))["state"]
        except Exception as error:  # noqa: BLE001 - any failure to read is damage
            raise Damaged(f"its arrays cannot be read ({type(error).__name__}: "
                          f"{str(error)[:200]})") from None
        return state, meta


def mismatches(stored: dict, wanted: dict) -> list[str]:
    """Every difference between stored arrays and the leaves of the state to restore."""
    problems = []
    for name in sorted(set(stored) | set(wanted)):
        if name not in wanted:
            problems.append(f"{name} is stored but this run's state has no such array")
        elif name not in stored:
            problems.append(f"{name} is not stored")
        else:
            leaf = wanted[name]
            want = (tuple(np.shape(leaf)), np.dtype(leaf.dtype).name)
            if stored[name] != want:
                problems.append(f"{name} is stored as {stored[name][1]}{shape_str(stored[name][0])}"
                                f" but this run's is {want[1]}{shape_str(want[0])}")
    return problems


# -- reading a checkpoint outside a run ----------------------------------------------------------
def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder in ``directory`` (``epoch_EEEEEEEE``), or None.

    A folder that does not exist, or holds no checkpoint, gives None.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    store = Store(directory, writer=False)
    try:
        epochs = store.epochs()
        return store.path(epochs[-1]) if epochs else None
    finally:
        store.close()


def restore_checkpoint(path: str | os.PathLike, like) -> tuple[Any, dict]:
    """Read the checkpoint at ``path`` into the structure of ``like``, as NumPy arrays.

    Args:
      path: a checkpoint folder, e.g. ``latest_checkpoint(directory)`` or
        ``runs/ckpt/epoch_00000040``.
      like: a pytree with the structure, shapes and dtypes of the saved state: ``(params,
        opt_state)`` (freshly initialised will do), or ``{"params": ..., "opt_state": ...}``
        (with ``"state": ...`` for a model whose running statistics or RNG counts
        :func:`mcjax.train` carried).

    Returns:
      ``(state, metadata)``: ``state`` has ``like``'s structure with NumPy arrays as leaves
      (``jax.device_put`` them, with a sharding if you like); ``metadata`` is the checkpoint's
      JSON record (``epoch``, ``step``, ``history``, ``run_id``, ``config``).

    Raises:
      CheckpointError: ``path`` is not a checkpoint, it is damaged, or its arrays differ from
        ``like`` (every difference is listed).
    """
    path = Path(path)
    epoch = _epoch_of(path)
    as_saved = {"params": like[0], "opt_state": like[1]} if isinstance(like, tuple) else like
    template = jax.tree.map(lambda a: np.empty(np.shape(a), a.dtype), as_saved)
    store = Store(path.parent, writer=False)
    try:
        state, meta = store.restore(epoch, template)
    except Damaged as damage:
        raise CheckpointError(f"mcjax.checkpoints.restore_checkpoint: {path} is damaged: {damage}") from None
    except CheckpointError as error:
        raise CheckpointError(str(error).replace("mcjax.train:", "mcjax.checkpoints.restore_checkpoint:")
                              ) from None
    finally:
        store.close()
    if isinstance(like, tuple):
        state = (state["params"], state["opt_state"])
    return state, meta


def _epoch_of(path: Path) -> int:
    epoch = parse_step(path.name)
    if epoch is None or not path.is_dir():
        raise CheckpointError(
            f"mcjax.checkpoints.restore_checkpoint: {path} is not a checkpoint; expected a folder named "
            f"{step_name(3)} (or another epoch) in a checkpoint folder, such as "
            "mcjax.checkpoints.latest_checkpoint(directory) returns")
    return epoch
