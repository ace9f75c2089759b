"""One run per output folder: a lock file held for the whole run.

``OUTPUT_DIR/.run.lock`` holds the owner's pid, host and start time, and an exclusive
``flock`` on it is held until the process exits: the kernel drops the flock of a process
that dies, however it dies, so a lock left by a dead run is recognised (its flock is free, or,
on file systems without flock, its pid no longer runs on this host) and taken over.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import socket
import time
from typing import Any, Dict, List, Optional

from ..errors import UserError

LOCK_FILE = ".run.lock"

try:
    import fcntl
except ImportError:  # Windows: the pid check alone
    fcntl = None  # type: ignore[assignment]


class RunLockError(UserError, RuntimeError):
    """Another live run holds the output folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _read(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class RunLock:
    """``with RunLock(folder): ...`` or ``lock = RunLock(folder).acquire(); ...; lock.release()``.

    ``acquire`` creates ``folder`` if needed; ``release`` removes the lock file, and the folder too
    when the lock was all that was in it (a refused run leaves no trace).
    """

    def __init__(self, folder: str, name: str = LOCK_FILE, what: str = "") -> None:
        """``name``: the lock file's name in ``folder``; ``what``: what is locked, for the message
        (default ``OUTPUT_DIR '<folder>'``)."""
        self.folder = folder
        self.path = os.path.join(folder, name)
        self.what = what or f"OUTPUT_DIR {folder!r}"
        self._fd: Optional[int] = None
        self._made_folder = False
        self.stale_owner: Optional[Dict[str, Any]] = None

    def _refuse(self, owner: Dict[str, Any]) -> RunLockError:
        since = owner.get("started", "")
        who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}" + (f", started {since}" if since else "")
        return RunLockError(
            f"{self.what} is in use by another run ({who}); wait for it to finish, or choose "
            f"another {self.what.split()[0]} (if no such run exists, delete {self.path})"
        )

    def acquire(self) -> "RunLock":
        if not os.path.isdir(self.folder):
            os.makedirs(self.folder, exist_ok=True)
            self._made_folder = True
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            owner = _read(self.path)
            try:
                self._lock(fd, owner)
            except BaseException:
                os.close(fd)  # the lock file is the other run's: left as it is
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the owner removed the file between our open and our lock: start again
        pid = owner.get("pid")
        self.stale_owner = owner if pid and pid != os.getpid() else None  # a dead run's lock, taken over
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self._fd = fd
        return self

    def _lock(self, fd: int, owner: Dict[str, Any]) -> None:
        if fcntl is None:
            return self._check_pid(owner)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise self._refuse(owner) from None
            if e.errno != errno.ENOLCK:
                raise
            self._check_pid(owner)  # no flock here (some network file systems): the pid check only

    def _check_pid(self, owner: Dict[str, Any]) -> None:
        pid = owner.get("pid")
        same_host = owner.get("host") == socket.gethostname()
        if isinstance(pid, int) and pid != os.getpid() and (not same_host or _pid_alive(pid)):
            raise self._refuse(owner)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None
        if self._made_folder:
            try:
                os.rmdir(self.folder)  # only if the run wrote nothing
            except OSError:
                pass

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


_RUN_LOCKS: List[RunLock] = []


def lock_output_dir(output_dir: str) -> RunLock:
    """Hold OUTPUT_DIR's run lock until :func:`release_run_locks` (run_main calls it) or exit."""
    lock = RunLock(output_dir).acquire()
    if not _RUN_LOCKS:
        atexit.register(release_run_locks)
    _RUN_LOCKS.append(lock)
    return lock


def release_run_locks() -> None:
    """Release every run lock this process holds."""
    while _RUN_LOCKS:
        _RUN_LOCKS.pop().release()


def held_run_locks() -> bool:
    """Whether this process holds a run lock (it is writing a run: its checkpoints are intact)."""
    return bool(_RUN_LOCKS)
