"""A checkpoint folder belongs to one run: its record, its lock, its checkpoints.

Layout of a folder (``checkpoint_dir``)::

    run.json              the run: its id, when and where it started, its configuration,
                          the fingerprints of its traced programs (see _programs.py)
    run.lock              while a process writes: its pid and host (see _lock.py)
    epoch_00000002/       one orbax checkpoint per saved epoch (see _checkpoint.py)
    epoch_00000004/
    damaged/epoch_00000006/   a damaged checkpoint that a resumed run stepped over

A fresh run takes a new or empty folder and writes ``run.json``.  It refuses a folder that
holds another run (naming the folder and the ways out: resume it, choose another folder, or
overwrite it explicitly) and one that holds anything that is not an mcjax run's, so it never
deletes another run's files; ``overwrite`` replaces an mcjax run, and only its files.  A
resumed run compares its configuration and what it computes (its traced loss and optimizer)
with ``run.json`` and its state with the stored arrays, and refuses with every difference
listed; it continues from the newest intact checkpoint,
stepping over damaged ones with a warning that names them.  Pruning (orbax's ``max_to_keep``)
only ever sees this run's checkpoints.

In a multi-process run, process 0 holds the lock and writes ``run.json``; every process takes
part in orbax's saves and restores.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mcjax._core._errors import CheckpointError
from mcjax._train._checkpoint import (
    STEP_PREFIX,
    Damaged,
    Store,
    WriteError,
    leaf_names,
    mismatches,
    os_reason,
    parse_step,
)
from mcjax._train._describe import as_json, differences
from mcjax._train._lock import LOCK_FILE, Lock
from mcjax._train._optim import described
from mcjax._train._programs import as_record, program_differences

RUN_FILE = "run.json"
DAMAGED = "damaged"
FORMAT = "mcjax-run/1"
TMP_SUFFIX = ".orbax-checkpoint-tmp"
WAYS_OUT = ("resume it (resume=True, --resume), choose another folder, or replace it "
            "(overwrite=True, --overwrite)")


def _is_step(name: str) -> bool:
    return parse_step(name) is not None


def _ours(name: str) -> bool:
    return (name in (RUN_FILE, LOCK_FILE, DAMAGED) or name.startswith(f"{LOCK_FILE}.stale-")
            or _is_step(name) or TMP_SUFFIX in name)


def _unwritable(path: Path) -> str | None:
    """Why this process cannot write in the folder ``path`` (None: it can)."""
    if os.access(path, os.W_OK | os.X_OK):
        return None
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return f"{path} is on a read-only file system" if read_only else f"{path} is not writable"


def read_record(directory) -> dict:
    """The run's record (``run.json``), checked to be one.

    Raises:
      CheckpointError: it cannot be read, is empty, is not JSON or not an mcjax run's; the
        message names the file and the ways out.
    """
    path = Path(directory) / RUN_FILE
    try:
        text = path.read_text()
        record = json.loads(text)
    except OSError as error:
        why = f"cannot be read ({error.strerror or type(error).__name__})"
    except ValueError as error:  # not JSON, or not UTF-8
        why = "is empty" if not path.read_bytes().strip() else \
            f"is not JSON ({str(error).splitlines()[0][:80]})"
    else:
        if isinstance(record, dict) and isinstance(record.get("run_id"), str) \
                and isinstance(record.get("config"), dict):
            return record
        why = "is not an mcjax run's record (it has no run_id and config)"
    raise CheckpointError(
        f"mcjax.train: {path} {why}; expected the record the run wrote there. The run cannot "
        "be resumed without it: start afresh in that folder (overwrite=True, --overwrite), "
        "remove the folder, or use another checkpoint_dir (--checkpoint-dir)")


def preflight(directory, *, resume: bool, overwrite: bool) -> list[str]:
    """What is wrong with ``directory`` for this run, seen without any work (empty: nothing)."""
    if directory is None:
        return ["resume=True needs a checkpoint_dir"] * bool(resume) + \
               ["overwrite=True needs a checkpoint_dir"] * bool(overwrite)
    path = Path(directory)
    if resume and overwrite:
        return ["resume=True and overwrite=True contradict each other; expected one of them"]
    if path.exists() and not path.is_dir():
        return [f"checkpoint_dir {path} is a file; expected a folder (new, or a run's)"]
    if resume:
        if not path.is_dir():
            return [f"resume=True but {path} does not exist; expected the folder of the run to "
                    "continue (check its spelling), or resume=False to start a new run"]
        if not (path / RUN_FILE).is_file() or not any(_is_step(p.name) for p in path.iterdir()):
            return [f"resume=True but {path} holds no checkpoint of an mcjax run (no {RUN_FILE} "
                    f"and {STEP_PREFIX}_* folders); expected the folder of the run to continue"]
        why = _unwritable(path)
        if why is not None:
            return [f"resume=True but checkpoint_dir {path} cannot be written ({why}); expected "
                    "a folder the run can lock and write its checkpoints to: copy it to a "
                    "writable place and resume there"]
        try:
            read_record(path)
        except CheckpointError as error:
            return [str(error).removeprefix("mcjax.train: ")]
        return []
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return [f"checkpoint_dir {path} cannot be made: {existing} is a file; expected a folder, "
                "or a path where one can be made"]
    why = _unwritable(existing)
    if why is not None:
        return [f"checkpoint_dir {path} cannot be written ({why})"]
    if not path.is_dir():
        return []
    foreign = sorted(p.name + "/" * p.is_dir() for p in path.iterdir() if not _ours(p.name))
    if foreign:
        listed = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        return [f"checkpoint_dir {path} holds files that are not an mcjax run's ({listed}); "
                "expected a new or empty folder, or one that an mcjax run wrote"]
    taken = (path / RUN_FILE).exists() or any(_is_step(p.name) for p in path.iterdir())
    if taken and not overwrite:
        try:
            read_record(path)
            ways_out = WAYS_OUT
        except CheckpointError:  # it cannot be resumed
            ways_out = WAYS_OUT.removeprefix("resume it (resume=True, --resume), ")
        return [f"{path} holds the checkpoints of another run ({_describe_run(path)}); a new run "
                f"would mix with them: {ways_out}"]
    return []


def _describe_run(path: Path) -> str:
    try:
        record = json.loads((path / RUN_FILE).read_text())
        name = f"run {record['run_id']}, started {record['created']}"
    except (OSError, ValueError, KeyError, TypeError):
        name = f"no readable {RUN_FILE}"
    steps = sorted(e for p in path.iterdir() if (e := parse_step(p.name)) is not None)
    return f"{name}; epochs {', '.join(map(str, steps[-4:]))}" if steps else name


def _on_process_zero(fn) -> Any:
    """Run ``fn`` on process 0; every process raises if it failed there."""
    if jax.process_count() == 1:
        return fn()
    from jax.experimental import multihost_utils

    failed, result = 0, None
    try:
        if jax.process_index() == 0:
            result = fn()
    except BaseException:
        failed = 1
        multihost_utils.broadcast_one_to_all(np.int32(failed))
        raise
    if int(multihost_utils.broadcast_one_to_all(np.int32(failed))):
        raise CheckpointError("mcjax.train: process 0 could not use the checkpoint folder; "
                              "its error says why")
    return result


class RunFolder:
    """The checkpoint folder of one run, locked while open.

    Args:
      directory: the folder.
      identity: the run's configuration (JSON), compared on resume.
      programs: the fingerprints of what the run computes (``_programs``), compared on resume.
      resume: continue the run in ``directory`` (else start one).
      overwrite: replace the mcjax run in ``directory`` (its files only).
      keep: keep the newest ``keep`` checkpoints (None: all).
      checkpoint_every: how often the run checkpoints; recorded with ``keep`` in ``run.json``
        (a resumed run's record is updated when they change), so that ``mcjax train
        --resume`` keeps them.

    Raises:
      CheckpointError: the folder cannot serve this run (see :func:`preflight`), or it cannot
        be locked or its record written (a full disk, a read-only folder).
    """

    def __init__(self, directory, *, identity: dict, resume: bool, overwrite: bool,
                 keep: int | None, checkpoint_every: int = 1, programs: dict | None = None):
        self.directory = Path(directory)
        self.identity = as_json(identity)
        self.programs = programs or {}
        self.checkpointing = {"checkpoint_every": checkpoint_every, "keep_checkpoints": keep}
        self.lock: Any = None
        self.store: Any = None  # the Store, once the folder is claimed
        self.run_id = _on_process_zero(lambda: self._claim(resume, overwrite))
        if self.run_id is None or resume:  # other processes read the record process 0 checked
            self.run_id = read_record(self.directory)["run_id"]
        self.store = Store(self.directory, keep=keep)

    def _claim(self, resume: bool, overwrite: bool) -> str | None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.lock = Lock(self.directory)
        except OSError as error:
            raise CheckpointError(f"mcjax.train: cannot lock {self.directory}: "
                                  f"{os_reason(error)[1]}") from None
        try:
            problems = preflight(self.directory, resume=resume, overwrite=overwrite)
            if problems:
                raise CheckpointError(f"mcjax.train: {problems[0]}")
            if resume:
                record = read_record(self.directory)
                if record.get("checkpointing") != self.checkpointing:
                    self._write_record({**record, "checkpointing": self.checkpointing})
                return None
            if overwrite:
                self._clear()
            run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
            self._write_record({"format": FORMAT, "run_id": run_id,
                                "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                                "host": socket.gethostname(), "pid": os.getpid(),
                                "config": self.identity, "checkpointing": self.checkpointing,
                                **({"programs": as_record(self.programs)} if self.programs
                                   else {})})
            return run_id
        except BaseException:
            self.lock.release()
            raise

    def _write_record(self, record: dict) -> None:
        """Write ``run.json`` whole or not at all (a full disk leaves the old one)."""
        tmp = self.directory / f".{RUN_FILE}.tmp"
        try:
            tmp.write_text(json.dumps(record, indent=1))
            os.replace(tmp, self.directory / RUN_FILE)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            code, reason = os_reason(error)
            hint = "free some space, then start again" if code in (errno.ENOSPC, errno.EDQUOT) \
                else "expected a folder this process can write"
            raise WriteError(code, f"mcjax.train: cannot write {self.directory / RUN_FILE}: "
                             f"{reason}; {hint}") from None

    def _clear(self) -> None:
        """Remove the previous run's files (overwrite=True): its record and checkpoints only."""
        for p in self.directory.iterdir():
            if p.name in (RUN_FILE, DAMAGED) or _is_step(p.name) or TMP_SUFFIX in p.name:
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        if self.lock is not None:
            self.lock.release()

    def save(self, epoch: int, state, meta: dict) -> Path:
        """Checkpoint ``state`` (checked finite) as epoch ``epoch`` of this run.

        Raises:
          CheckpointError: ``run.lock`` is no longer the lock this run holds (someone removed
            it, so another process may be writing here): nothing is saved.
          WriteError: the checkpoint could not be written (the earlier ones are intact).
        """
        _on_process_zero(lambda: self._check_lock(epoch))
        return self.store.save(epoch, state, {**meta, "run_id": self.run_id,
                                              "config": self.identity})

    def _check_lock(self, epoch: int) -> None:
        if self.lock is None or self.lock.held():
            return
        epochs = self.store.epochs()
        last = f"the last checkpoint is {self.store.path(epochs[-1])}" if epochs \
            else "no checkpoint had been written"
        raise CheckpointError(
            f"mcjax.train: {self.lock.path} is no longer the lock this run holds (it was "
            f"removed or replaced), so another process may be writing to {self.directory}; "
            f"stopped without saving epoch {epoch} ({last}). A live run's lock is never stale "
            "(it ends with its process): leave run.lock alone, and resume (resume=True, "
            "--resume) once no other process writes there")

    def resume_state(self, like) -> tuple[int, Any, dict]:
        """``(epoch, state, meta)`` of the newest intact checkpoint, in ``like``'s structure.

        Damaged newer checkpoints are stepped over with a warning and moved to ``damaged/``.

        Raises:
          CheckpointError: the run's configuration or arrays differ (every difference is
            listed), a checkpoint belongs to another run, or none is intact.
        """
        record = read_record(self.directory)
        there = record["config"]
        if isinstance(there.get("optimizer"), dict):  # a default left out is the default
            there = {**there, "optimizer": described(there["optimizer"])}
        problems = differences(there, self.identity) + program_differences(
            record.get("programs"), self.programs)
        damaged: list[tuple[int, str]] = []
        epochs = self.store.epochs()
        for epoch in epochs:
            self._check_owner(epoch, record["run_id"])
        for epoch in reversed(epochs):
            try:
                problems += mismatches(self.store.stored_arrays(epoch), leaf_names(like))
                if problems:
                    raise CheckpointError(
                        f"mcjax.train: cannot resume the run in {self.directory} (run "
                        f"{record['run_id']}): {'; '.join(problems)}; expected the settings, "
                        f"data and model it was started with, or a new run: {WAYS_OUT}")
                state, meta = self.store.restore(epoch, like)
            except Damaged as damage:
                damaged.append((epoch, str(damage)))
                continue
            self._set_aside(damaged, epoch)
            if "programs" not in record and self.programs:  # a run recorded before they were
                _on_process_zero(lambda: self._write_record(
                    {**read_record(self.directory), "programs": as_record(self.programs)}))
            return epoch, state, meta
        listed = "; ".join(f"{self.store.path(e)}: {why}" for e, why in damaged)
        raise CheckpointError(f"mcjax.train: {self.directory} holds no intact checkpoint to "
                              f"resume ({listed or 'none left'}); start afresh with "
                              "overwrite=True (--overwrite)")

    def _check_owner(self, epoch: int, run_id: str) -> None:
        """Refuse a checkpoint of another run (pruning would delete it); damage is for later
        (only the checkpoint resumed from is hashed: the older ones are not read whole)."""
        try:
            owner = self.store.meta(epoch, verify=False).get("run_id")
        except Damaged:
            return
        if owner != run_id:
            raise CheckpointError(
                f"mcjax.train: {self.store.path(epoch)} belongs to run {owner}, not to the run "
                f"of {self.directory} ({run_id}); expected only this run's checkpoints there: "
                "move it out")

    def _set_aside(self, damaged: list[tuple[int, str]], resumed: int) -> None:
        if damaged and jax.process_count() > 1:  # every process has chosen before any move
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("mcjax: a checkpoint to resume chosen")
        for epoch, why in damaged:
            source = self.store.path(epoch)
            target = self.directory / DAMAGED / source.name
            if jax.process_index() == 0:
                target.parent.mkdir(exist_ok=True)
                if target.exists():
                    target = target.with_name(f"{source.name}-{time.strftime('%Y%m%d-%H%M%S')}")
                source.rename(target)
            warnings.warn(f"mcjax.train: skipped the damaged checkpoint {source} ({why}); moved "
                          f"it to {target}; resuming from {self.store.path(resumed)}",
                          RuntimeWarning, stacklevel=4)
        if damaged and jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("mcjax: damaged checkpoints set aside")
