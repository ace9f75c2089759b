"""Every file the project writes is written here: all or nothing.

A file is written to a temporary file in its own folder (``.NAME.RANDOM.tmp``), flushed, fsync'ed
and renamed over the target, and the folder is fsync'ed so the rename itself survives a crash: a
killed process leaves either the old file or the new one, never half of one, plus at worst a
temporary file that :func:`remove_stale_temporaries` (run by the tools before they write into a
folder) knows by its name. A folder written as a whole (a model folder) is staged the same way
(:func:`staging_folder`). This is the bottom layer: it imports nothing of the project.

The one writer outside it is the bundle's ``run_bundle.py``, which must run without the project
installed; it follows the same temporary-name pattern.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import tempfile
import threading
from typing import Any, BinaryIO, Callable, Iterator, List, TextIO, Union

# .NAME.RANDOM.tmp beside the target: hidden, and matched by TEMPORARY_GLOB
TEMPORARY_SUFFIX = ".tmp"
TEMPORARY_GLOB = ".*" + TEMPORARY_SUFFIX
DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # held while a file is written (_signals_deferred)


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass  # not every filesystem lets a folder be fsync'ed


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM held until the block ends, then delivered to the handlers they had.
    A KeyboardInterrupt raised inside ``torch.save`` left its zip writer half closed, and the error its
    exit raised replaced the interrupt (a traceback instead of "stopped"): a file being written is
    finished first. Main thread only (the only one signal handlers can be set from)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: List[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(pending):  # each once, in the order they came
            signal.raise_signal(sig)


def atomic_write(path: str, write: Callable[[Union[BinaryIO, TextIO]], None], mode: str = "wb") -> None:
    """Call ``write(f)`` on a temporary file opened with ``mode`` ("wb" or "w") and move it onto
    ``path`` once written and fsync'ed; on any error the temporary file is removed and ``path``
    keeps what it held. Ctrl-C or SIGTERM during the write takes effect once it is done."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with _signals_deferred():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=TEMPORARY_SUFFIX)
        try:
            os.fchmod(fd, _umask_mode())  # mkstemp makes 0600; outputs get the usual permissions
            with os.fdopen(fd, mode) as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        _fsync_folder(folder)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path``, all or nothing."""
    atomic_write(path, lambda f: f.write(data), "wb")


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path``, all or nothing."""
    atomic_write(path, lambda f: f.write(text), "w")


def atomic_write_json(path: str, data: Any) -> None:
    """``data`` as indented JSON (one trailing newline) at ``path``, all or nothing."""
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def atomic_copy(src: str, dst: str) -> None:
    """Copy the file ``src`` to ``dst``, all or nothing."""
    with open(src, "rb") as f:
        atomic_write(dst, lambda out: shutil.copyfileobj(f, out), "wb")


def staging_folder(out_dir: str) -> str:
    """A new empty folder beside ``out_dir`` to build a folder in before one ``os.replace`` moves it
    into place (named like a temporary file, so the same clean-up knows it)."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", suffix=TEMPORARY_SUFFIX, dir=parent)


def remove_stale_temporaries(folder: str) -> List[str]:
    """Delete the temporary files and staging folders that killed writers left in ``folder``."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), TEMPORARY_GLOB)):
        try:
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed
