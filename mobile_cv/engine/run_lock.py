"""One run per output folder: a lock file held for the whole run.

``OUTPUT_DIR/.run.lock`` is a ``filelock.FileLock`` (an exclusive ``flock`` where the file system
has one, the library's own marker file where it does not) holding the owner's pid, host and start
time. The kernel drops the flock of a process that dies, however it dies, so the lock of a dead
run is taken over (and said so); a live run's lock refuses the second run in one line naming it.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import time
from typing import Any, Dict, List, Optional

from filelock import FileLock, Timeout

from ..errors import UserError

LOCK_FILE = ".run.lock"


class RunLockError(UserError, RuntimeError):
    """Another live run holds the output folder."""


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
        self._lock: Optional[FileLock] = None
        self._made_folder = False
        self.stale_owner: Optional[Dict[str, Any]] = None

    def _refuse(self, owner: Dict[str, Any]) -> RunLockError:
        since = owner.get("started", "")
        who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}" + (f", started {since}" if since else "")
        return RunLockError(
            f"{self.what} is in use by another run ({who}); wait for it to finish, or choose "
            f"another {self.what.split()[0]} (if no such run exists, delete {self.path})"
        )

    @staticmethod
    def _write_owner(fd: int) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)

    def acquire(self) -> "RunLock":
        if not os.path.isdir(self.folder):
            os.makedirs(self.folder, exist_ok=True)
            self._made_folder = True
        before = _read(self.path)  # the last owner: a dead run's, if the lock is free
        lock = FileLock(self.path, blocking=False, thread_local=False, on_acquired=self._write_owner)
        try:
            lock.acquire()
        except Timeout:
            owner = _read(self.path) or before
            if not owner.get("pid"):  # a file system without flock: filelock's own marker names the holder
                try:
                    owner = {"pid": lock.pid} if lock.pid is not None else owner
                except AttributeError:  # a native (flock) lock has no marker
                    pass
            self._remove_made_folder()
            raise self._refuse(owner) from None
        pid = before.get("pid")
        self.stale_owner = before if pid and pid != os.getpid() else None  # a dead run's lock, taken over
        self._lock = lock
        return self

    def _remove_made_folder(self) -> None:
        if self._made_folder:
            try:
                os.rmdir(self.folder)  # only if nothing was written into it
            except OSError:
                pass

    def release(self) -> None:
        if self._lock is None:
            return
        try:
            os.unlink(self.path)  # before the flock goes: no other run sees a lock file of ours unlocked
        except OSError:
            pass
        self._lock.release()
        self._lock = None
        self._remove_made_folder()

    @property
    def held(self) -> bool:
        return self._lock is not None

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
