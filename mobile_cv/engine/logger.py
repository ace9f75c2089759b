"""Logging (rank 0 only), progress bars (rank 0 only) and the per-epoch ``metrics.jsonl`` writer."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from typing import Any, Dict, Iterable, List, Optional

from tqdm import tqdm

from .. import comm
from ..atomic_files import atomic_write_text

LOGGER_NAME = "mobile_cv"


class _ConsoleHandler(logging.StreamHandler):
    """A StreamHandler on whatever ``sys.stdout`` (or ``sys.stderr``) is when a record is written,
    not the stream of when it was made: a caller that swaps the stream (pytest's capture, a
    redirect) and closes the old one leaves no handler writing to a closed file."""

    def __init__(self, to_stderr: bool) -> None:
        self.to_stderr = to_stderr
        super().__init__()

    @property
    def stream(self):
        return sys.stderr if self.to_stderr else sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ / setStream: the stream is looked up instead
        pass


def setup_logger(output_dir: Optional[str] = None, name: str = LOGGER_NAME) -> logging.Logger:
    """Configure the ``mobile_cv`` logger: INFO to stdout and ``output_dir/log.txt`` on rank 0,
    warnings and errors only on the other ranks. Idempotent."""
    log = logging.getLogger(name)
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    log.propagate = False
    rank = comm.get_rank()
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    prefix = "" if comm.get_world_size() == 1 else f"[rank {rank}] "
    fmt = logging.Formatter(f"[%(asctime)s] {prefix}%(message)s", datefmt="%m/%d %H:%M:%S")
    console = _ConsoleHandler(to_stderr=rank != 0)
    console.setFormatter(fmt)
    log.addHandler(console)
    if output_dir and rank == 0:
        os.makedirs(output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, "log.txt"))
        fh.setFormatter(fmt)
        log.addHandler(fh)
    return log


def progress(iterable: Iterable, *, desc: str, total: Optional[int] = None):
    """A tqdm bar on rank 0 when stderr is a terminal (else a plain iterator: a log file or a pipe
    gets the log lines, not bar redraws)."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        disable=not (comm.is_main_process() and sys.stderr.isatty()),
        dynamic_ncols=True,
        mininterval=0.5,
        leave=True,
    )


def _jsonable(x: Any) -> Any:
    """Numbers, tensors and containers as JSON values; NaN/inf become strings (JSON has none)."""
    if hasattr(x, "item") and getattr(x, "numel", lambda: 1)() == 1:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


class MetricsWriter:
    """Appends one JSON object per epoch to ``path`` (rank 0 writes; other ranks no-op).

    Args:
        path: the ``metrics.jsonl`` file.
        start_epoch: the first epoch this run will write. Records of that epoch or later
            (left by a run killed after writing them but before its checkpoint), and a
            torn last line, are dropped, so a resumed run leaves exactly one line per epoch.
    """

    def __init__(self, path: str, start_epoch: int = 0) -> None:
        self.path = path
        self.enabled = comm.is_main_process()
        if not self.enabled:
            return
        kept = [r for r in read_metrics(path) if r.get("epoch", -1) < start_epoch] if start_epoch else []
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: Dict[str, Any]) -> None:
        """Append ``record`` as one line, flushed to disk."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(_jsonable(record)) + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_metrics(path: str) -> List[Dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file ([] if absent); an unparsable line is skipped."""
    if not os.path.isfile(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
