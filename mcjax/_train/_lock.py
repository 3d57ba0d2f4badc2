"""One writer per checkpoint folder: a lock file that names its owner.

``run.lock`` holds the owner's pid, host and start time (for the message a second writer
gets), and the owner holds an exclusive ``flock`` on it for as long as it writes.  The kernel
releases a ``flock`` when its process dies, however it dies, so a lock left by a dead process
is simply taken over; there is nothing to clean up and no window in which two processes both
believe they hold it.  (The owner unlinks the file when it is done; a process that opened the
file just before that checks, once it holds the lock, that the path still names the file it
locked, and starts again if not.)

A lock file removed by hand (a user's reflex for a "stale lock") would let a second writer
in, since it creates and locks a new file: the owner checks before each save that the path
still names the file it holds (:meth:`Lock.held`) and stops if not, and it removes the file
when done only if it is still its own.

Some cluster file systems refuse ``flock`` (Lustre mounted without ``-o flock``).  There the
file itself is the lock: it is created exclusively (``O_EXCL``), and one whose owner is a dead
process on this host is renamed away (only one taker's rename succeeds) and recreated.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from mcjax._core._errors import CheckpointError

LOCK_FILE = "run.lock"
_UNSUPPORTED = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


def _owner_text(path: Path) -> str:
    try:
        owner = json.loads(path.read_text())
        return f"process {owner['pid']} on {owner['host']} (since {owner['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _in_use(directory: Path, path: Path) -> CheckpointError:
    return CheckpointError(
        f"mcjax.train: {directory} is in use: {_owner_text(path)} holds its lock {path.name}; "
        "expected one writer per checkpoint folder: wait for that run to end (or stop it), or "
        "use another checkpoint_dir (--checkpoint-dir)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class Lock:
    """The lock of ``directory``, held from construction until :meth:`release`.

    Raises:
      CheckpointError: another live process holds it (the message names its pid and host).
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        self._fd = self._acquire()
        try:
            os.ftruncate(self._fd, 0)
            os.write(self._fd, self._owner.encode())
            os.fsync(self._fd)
        except OSError:  # a full disk: let go, and say why
            self.release()
            raise

    def _acquire(self) -> int:
        for _ in range(5):
            try:
                fd, created = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                try:
                    fd, created = os.open(self.path, os.O_RDWR), False
                except FileNotFoundError:
                    continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise _in_use(self.directory, self.path) from None
            except OSError as error:
                if error.errno not in _UNSUPPORTED:
                    os.close(fd)
                    raise
                if created:  # no flock here: the file we created exclusively is the lock
                    return fd
                os.close(fd)
                self._take_if_stale()
                continue
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)  # its owner removed the file meanwhile: lock the new one
        raise _in_use(self.directory, self.path)

    def _take_if_stale(self) -> None:
        """Without flock: remove the lock file of a dead process on this host, else refuse."""
        try:
            text = self.path.read_text()
            owner = json.loads(text)
            stale = owner["host"] == socket.gethostname() and not _alive(int(owner["pid"]))
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError):
            stale = False
        if not stale:
            raise _in_use(self.directory, self.path)
        taken = self.path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
        try:
            os.rename(self.path, taken)  # only one taker finds the file to rename
        except FileNotFoundError:
            return
        if taken.read_text() != text:  # another taker's fresh lock: give it back
            os.rename(taken, self.path)
            raise _in_use(self.directory, self.path)
        taken.unlink()

    def held(self) -> bool:
        """Whether ``run.lock`` is still the file this lock holds (not removed or replaced)."""
        if self._fd is None:
            return False
        try:
            now, mine = os.stat(self.path), os.fstat(self._fd)
        except FileNotFoundError:
            return False
        return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        """Remove the lock file (if it is still this lock's) and let go of it (safe to call
        twice)."""
        if self._fd is None:
            return
        if self.held():  # else it is another writer's: leave it
            self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing releases the flock
        self._fd = None
