"""How every tool starts and exits: its argument parser and :func:`run_main`, which turns what a
user can fix into one line on stderr and an exit status (docs/architecture.md#how-a-tool-exits).

    args = default_argument_parser("train a model").parse_args()
    sys.exit(run_main(body))
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any, Callable, Optional, Sequence

from tqdm import tqdm

from .. import comm
from ..errors import UserError
from .run_lock import held_run_locks, release_run_locks

# Exit status of every tool for an error the user can fix (a bug keeps Python's traceback and 1;
# argparse's usage errors are 2 too).
USER_ERROR_EXIT = 2

# Exit status of a tool that ran but whose own check failed (tools/export.py's comparison with eager).
CHECK_FAILED_EXIT = 3


def default_argument_parser(description: str, resume: bool = True) -> argparse.ArgumentParser:
    """``--config-file F [--resume] [KEY VALUE ...]``; tools add their own flags.

    Args:
        resume: offer ``--resume`` (tools that write a run).
    """
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default="", metavar="FILE", help="YAML config (default: the built-in defaults)")
    if resume:
        p.add_argument(
            "--resume",
            action="store_true",
            help="continue the run in OUTPUT_DIR from its checkpoint (start fresh if it has none)",
        )
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides, e.g. SOLVER.EPOCHS 3 DATA.LIMIT 64",
    )
    return p


def _say(message: str) -> None:
    for bar in list(getattr(tqdm, "_instances", ())):  # an interrupted progress bar ends its line first
        try:
            bar.close()
        except Exception:  # a bar the signal interrupted inside its own constructor: half made, skip it
            pass
    prefix = f"[rank {comm.get_rank()}] " if comm.get_world_size() > 1 else ""
    print(f"{prefix}{message}", file=sys.stderr, flush=True)


def _one_line(message: str) -> str:
    """A DataLoader worker's error arrives as "Caught X in DataLoader worker process 0." and the
    worker's traceback; the user needs its last line, the error itself."""
    if "Original Traceback" not in message:
        return message
    last = [line for line in message.splitlines() if line.strip()][-1]
    return f"{last.split(': ', 1)[-1]} (in a data loader worker process)"


# Exit status after SIGTERM (what schedulers and ``kill`` send), as a shell reports a process it ended: 128 + 15.
TERMINATED_EXIT = 128 + signal.SIGTERM

INTERRUPTED_EXIT = 128 + signal.SIGINT


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so it unwinds as after Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _file_in_the_way(path: str) -> Optional[str]:
    """The first existing non-folder on the way to ``path`` (a NotADirectoryError's cause)."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts)):
        prefix = os.sep.join(parts[:i])
        if os.path.exists(prefix) and not os.path.isdir(prefix):
            return prefix
    return None


def _describe_os_error(e: OSError) -> str:
    if isinstance(e, NotADirectoryError) and e.filename:
        blocker = _file_in_the_way(str(e.filename))
        if blocker:
            return f"{str(e.filename)!r} cannot be created: {blocker!r} is a file, not a folder"
    if isinstance(e, FileExistsError) and e.filename and os.path.isfile(str(e.filename)):
        return f"{str(e.filename)!r} is a file where a folder is needed; choose another path"
    where = f" {e.filename!r}" if e.filename else ""
    return f"{type(e).__name__}{where}: {e.strerror or e}"


def _is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    return isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e))


def run_main(fn: Callable[[], Any], stopped: str = "") -> int:
    """The one entry of every tool: run its body; what a user can fix is one line on stderr, no traceback:

    * a :class:`~mobile_cv.errors.UserError`: ``error: <message>``, exit :data:`USER_ERROR_EXIT` (2);
    * an OSError (a file or folder that cannot be read or written, a full disk): the path
      and the reason (in a training run or a search: and that every checkpoint already written is
      intact), exit 2;
    * running out of memory (CPU or GPU): the batch and resolution keys to lower, exit 2;
    * Ctrl-C (SIGINT) or SIGTERM: ``stopped``, exit 130 / 143 (``stopped`` replaces the default line,
      which tells how to resume a training run or a search).

    ``fn`` returns the exit status (None: 0), e.g. :data:`CHECK_FAILED_EXIT` (3) when a tool ran
    but a check it makes failed. Anything else is a bug and raises (Python's traceback, exit 1). Run
    locks are released and the process group is left in all cases.
    """
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        return fn() or 0
    except UserError as e:
        _say(f"error: {_one_line(str(e))}")
        return USER_ERROR_EXIT
    except OSError as e:
        intact = (
            "; files are written atomically, so every checkpoint already written is intact (rerun with --resume "
            "after fixing this)"
            if held_run_locks()
            else ""
        )
        _say(f"error: {_describe_os_error(e)}{intact}")
        return USER_ERROR_EXIT
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "stopped"
        _say(stopped or f"{how}; the last checkpoint is intact: rerun the same command with --resume to continue")
        return TERMINATED_EXIT if isinstance(e, Terminated) else INTERRUPTED_EXIT
    except (MemoryError, RuntimeError) as e:
        if not _is_out_of_memory(e):
            raise
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        _say(
            f"error: out of memory ({first[:160]}); lower SOLVER.BATCH_SIZE / SEARCH.BATCH_SIZE or DATA.INPUT_SIZE"
            + ("; the last checkpoint is intact" if held_run_locks() else "")
        )
        return USER_ERROR_EXIT
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        release_run_locks()
        comm.shutdown()


def launch_run(run_class, description: str, argv: Optional[Sequence[str]] = None, hooks: Sequence[Any] = ()) -> int:
    """A run tool's whole ``main``: ``--config-file F [--resume] [KEY VALUE ...]`` parsed, the run
    (``run_class``, a :class:`~mobile_cv.engine.runs.Run`) built, set up and run with ``hooks``
    after its own, through :func:`run_main`; returns the exit status."""
    args = default_argument_parser(description).parse_args(argv)

    def body() -> None:
        run = run_class.from_config(args.config_file, args.opts)
        run.setup(resume=args.resume)
        run.run(hooks)

    return run_main(body)
