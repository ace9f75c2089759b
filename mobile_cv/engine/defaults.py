"""What every tool does first: parse arguments, build the config, set up the run.

args = default_argument_parser("train a model").parse_args()
cfg = setup_cfg(args.config_file, args.opts)
device = default_setup(cfg, resume=args.resume)   # torchrun, output guard, logs, seeds, config.yaml
"""

from __future__ import annotations

import argparse
import atexit
import glob
import hashlib
import json
import logging
import os
import random
import signal
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from .. import comm
from ..arch_def import to_jsonable, unify
from ..arch_registry import is_arch_file, resolve_arch_def
from ..builder import build_model
from ..config import CfgNode, ConfigError, check_config, get_cfg
from ..data import ClassificationDataset, DatasetError, build_dataset, dataset_kwargs, require_dataset_packages
from ..errors import UserError
from ..extras import require
from ..latency.table import LatencyTable
from ..search import build_supernet
from ..search.choices import KnownMixing
from .checkpoint import CHECKPOINT_FILE, CheckpointError, atomic_write_text, load_file
from .logger import setup_logger
from .memory import check_memory, estimate_step_memory
from .run_lock import RunLock

logger = logging.getLogger("mobile_cv.engine")

# Exit status of every tool for an error the user can fix (a bug keeps Python's traceback and 1;
# argparse's usage errors are 2 too).
USER_ERROR_EXIT = 2
# Exit status of a tool that ran but whose own check failed (tools/export.py's comparison with eager).
CHECK_FAILED_EXIT = 3

# Files whose presence means the folder holds a run (another one, unless resuming it).
RUN_FILES = (CHECKPOINT_FILE, "metrics.jsonl", "model_final.pth", "model_final.safetensors")


class OutputDirError(UserError, RuntimeError):
    """The output folder holds another run's outputs."""


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


def setup_cfg(config_file: str = "", opts: Sequence[str] = (), arch_key: str = "MODEL.ARCH") -> CfgNode:
    """Defaults, then ``config_file``, then ``opts``; checked and frozen.

    DATA.INPUT_SIZE 0 becomes the ``input_size`` of the arch def named by ``arch_key``
    (``"SEARCH.SPACE"`` for a search); a size below the network's total stride is refused.
    """
    flags = [o for o in opts if str(o).startswith("--")]
    if flags:
        raise ConfigError(
            f"{flags[0]} comes after the KEY VALUE overrides; put flags first, e.g. "
            f"tools/train.py --config-file F {flags[0]} SOLVER.EPOCHS 3"
        )
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    check_config(cfg)
    _resolve_input_size(cfg, arch_key)
    cfg.freeze()
    return cfg


def _resolve_input_size(cfg: CfgNode, arch_key: str) -> None:
    name = cfg.MODEL.ARCH if arch_key == "MODEL.ARCH" else cfg.SEARCH.SPACE
    if is_arch_file(name) and not os.path.isfile(name):
        return  # e.g. a search's arch_def.json not written yet: building the model says so
    arch_def = resolve_arch_def(name)[0]
    if arch_key == "MODEL.ARCH" and isinstance(arch_def, dict) and "search" in arch_def:
        raise ConfigError(
            f"MODEL.ARCH {name} is a search space, not a model: search it with tools/search.py SEARCH.SPACE {name}, "
            f"then train the arch_def.json it writes (MODEL.ARCH <search OUTPUT_DIR>/arch_def.json)"
        )
    if cfg.DATA.INPUT_SIZE == 0:
        cfg.DATA.INPUT_SIZE = int(arch_def.get("input_size", 224))
    stride = 1
    for spec in unify(arch_def, name, plain=arch_key == "MODEL.ARCH"):
        stride *= spec.stride if isinstance(spec.stride, int) else max(spec.stride)
    if cfg.DATA.INPUT_SIZE < stride:
        raise ConfigError(
            f"DATA.INPUT_SIZE {cfg.DATA.INPUT_SIZE} is below the total stride {stride} of {arch_key} {name}: "
            f"the last feature map would be empty; use DATA.INPUT_SIZE >= {stride} (0: the arch's own input_size)"
        )


def check_output_dir(output_dir: str, resume: bool, run_files: Sequence[str] = RUN_FILES) -> None:
    """Refuse a folder holding another run's outputs unless ``resume``."""
    found = [f for f in run_files if os.path.exists(os.path.join(output_dir, f))]
    if found and not resume:
        raise OutputDirError(
            f"output folder {output_dir!r} already holds a run ({', '.join(found)}); pass --resume to continue "
            f"that run, or choose another OUTPUT_DIR (e.g. append OUTPUT_DIR <new folder> to the command)"
        )


def check_model_fits_data(cfg: CfgNode, dataset: ClassificationDataset) -> None:
    """MODEL.NUM_CLASSES and MODEL.IN_CHANS must match the dataset."""
    if cfg.MODEL.NUM_CLASSES != dataset.num_classes:
        raise DatasetError(
            f"MODEL.NUM_CLASSES is {cfg.MODEL.NUM_CLASSES} but {dataset.name} has {dataset.num_classes} classes; "
            f"set MODEL.NUM_CLASSES {dataset.num_classes}"
        )
    if cfg.MODEL.IN_CHANS != dataset.in_chans:
        raise DatasetError(
            f"MODEL.IN_CHANS is {cfg.MODEL.IN_CHANS} but {dataset.name} has {dataset.in_chans}-channel images; "
            f"set MODEL.IN_CHANS {dataset.in_chans}"
        )


# The splits each tool reads, checked non-empty before anything is written.
TOOL_SPLITS = {"train": ("train", "val", "test"), "search": ("search_weights", "search_alpha", "val")}


def check_data(cfg: CfgNode, tool: str) -> None:
    """Every split ``tool`` reads exists, is non-empty and has MODEL.NUM_CLASSES classes of
    MODEL.IN_CHANS-channel images: a missing test split fails now, not after the training."""
    kwargs = dataset_kwargs(cfg)
    for split in TOOL_SPLITS[tool]:
        dataset = build_dataset(cfg.DATA.NAME, split, weight_split=cfg.SEARCH.WEIGHT_SPLIT, **kwargs)
        check_model_fits_data(cfg, dataset)


def check_output_dir_path(output_dir: str) -> None:
    """Refuse an OUTPUT_DIR that is empty (the current folder), the file-system root, or a file."""
    if not output_dir.strip():
        raise OutputDirError(
            "OUTPUT_DIR is empty, which would write the run's files into the current folder; "
            "set OUTPUT_DIR <folder>, e.g. OUTPUT_DIR output/run"
        )
    path = os.path.abspath(output_dir)
    if os.path.dirname(path) == path:
        raise OutputDirError(f"OUTPUT_DIR {output_dir!r} is the file-system root; set OUTPUT_DIR <folder>")
    existing = path  # the folder itself or the nearest existing folder above it must be a folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = f"OUTPUT_DIR {output_dir!r}" + ("" if existing == path else f": {existing!r}")
        raise OutputDirError(f"{what} is a file, not a folder; choose another OUTPUT_DIR")


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


def config_changes(old_config_file: str, cfg: CfgNode) -> List[str]:
    """``["KEY: old -> new", ...]`` between a written config.yaml and ``cfg``."""
    old = get_cfg()
    try:
        old.merge_from_file(old_config_file)
    except ConfigError as e:
        return [f"cannot compare with {old_config_file} ({e})"]
    new_values = dict(cfg.flat_items())
    return [f"{k}: {v!r} -> {new_values[k]!r}" for k, v in old.flat_items() if new_values.get(k) != v]


def resolve_device(name: str) -> torch.device:
    """``"auto"``: this rank's GPU when CUDA is available, else the CPU."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("DEVICE is 'cuda' but torch finds no CUDA device; use DEVICE cpu or auto")
        return torch.device("cuda", comm.get_local_rank())
    return torch.device("cpu")


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_identity(cfg: CfgNode, tool: str) -> Dict[str, str]:
    """What a checkpoint must match to be resumed by ``tool`` ("train" or "search"): the
    architecture (or search space, and its mode) and the classifier's shape, as a digest."""
    name = cfg.MODEL.ARCH if tool == "train" else cfg.SEARCH.SPACE
    what = f"MODEL.ARCH {name}" if tool == "train" else f"SEARCH.SPACE {name} (MODE {cfg.SEARCH.MODE})"
    arch = json.dumps(to_jsonable(resolve_arch_def(name)[0]), sort_keys=True)
    key = f"{tool}|{arch}|{cfg.MODEL.NUM_CLASSES}|{cfg.MODEL.IN_CHANS}|{cfg.SEARCH.MODE if tool == 'search' else ''}"
    return {"tool": tool, "what": what, "digest": hashlib.sha256(key.encode()).hexdigest()[:16]}


_STATE_OF_TOOL = {"train": "model", "search": "supernet"}


def checkpoint_tool(states: Dict[str, Any]) -> Optional[str]:
    """Which tool ("train" or "search") wrote a checkpoint with these states; None: neither."""
    return next((t for t, key in _STATE_OF_TOOL.items() if key in states), None)


def check_resume(cfg: CfgNode, tool: str) -> None:
    """Refuse, before anything is written, a --resume whose checkpoint this run cannot continue:
    another tool's, another architecture's or space's, or one past this run's epochs."""
    path = os.path.join(cfg.OUTPUT_DIR, CHECKPOINT_FILE)
    if not os.path.isfile(path):
        return
    data = load_file(path)
    states, extra = data.get("states", {}) if isinstance(data, dict) else {}, {}
    if isinstance(data, dict) and isinstance(data.get("extra"), dict):
        extra = data["extra"]
    other = checkpoint_tool(states)
    if other is None:
        raise CheckpointError(f"{path} is not a checkpoint of tools/train.py or tools/search.py")
    advice = "choose another OUTPUT_DIR, or resume with the config that wrote it"
    if other != tool:
        raise CheckpointError(f"--resume: {path} is a {other} checkpoint; this is a {tool} run ({advice})")
    mine, theirs = run_identity(cfg, tool), extra.get("run")
    if isinstance(theirs, dict) and theirs.get("digest") != mine["digest"]:
        raise CheckpointError(
            f"--resume: {path} was written for {theirs.get('what')} (classes/channels as then); "
            f"this run has {mine['what']}, MODEL.NUM_CLASSES {cfg.MODEL.NUM_CLASSES}, "
            f"MODEL.IN_CHANS {cfg.MODEL.IN_CHANS} ({advice})"
        )
    key = "SOLVER.EPOCHS" if tool == "train" else "SEARCH.EPOCHS"
    epochs = cfg.SOLVER.EPOCHS if tool == "train" else cfg.SEARCH.EPOCHS
    done = int(extra.get("epoch", -1)) + 1
    if done > epochs:
        raise CheckpointError(
            f"--resume: {path} has already run {done} epochs, more than {key} {epochs}; "
            f"set {key} {done} or more to continue it, or choose another OUTPUT_DIR"
        )


def load_latency_table(cfg: CfgNode, net) -> LatencyTable:
    """SEARCH.COST.LATENCY_TABLE, checked against this search: its space, resolutions, classifier,
    and the runtime, int8 and thread count SEARCH.COST asks for."""
    c = cfg.SEARCH.COST
    table = LatencyTable.load(c.LATENCY_TABLE)
    want = {"runtime": c.LATENCY_RUNTIME, "int8": c.LATENCY_INT8, "threads": c.LATENCY_THREADS}
    table.check(cfg.SEARCH.SPACE, resolve_arch_def(cfg.SEARCH.SPACE)[0], net, want)
    return table


def check_buildable(cfg: CfgNode, tool: str, device: Optional[torch.device] = None) -> Optional[Tuple[int, str]]:
    """Build the run's model (``tool`` "train") or supernet ("search") on the meta device (no
    memory, no weights), and load a search's latency table, so a bad row or table fails before
    anything is written to OUTPUT_DIR. With ``device``, one step's memory is estimated from that
    build and checked against what ``device`` has free (:mod:`.memory`, config key MEMORY_CHECK);
    returns the ``(logging level, line)`` saying so, or None."""
    with torch.device("meta"):
        try:
            if tool == "train":
                model = build_model_from_cfg(cfg)
            else:
                s = cfg.SEARCH
                model = build_supernet(s.SPACE, cfg.MODEL.NUM_CLASSES, s.MODE, cfg.MODEL.IN_CHANS)
                if s.COST.KIND == "latency":  # a wrong or broken table fails here, not after the data scan
                    load_latency_table(cfg, model)
        except UserError:
            raise
        except Exception:  # an op that cannot be built on the meta device: the real build reports it
            return None
    return check_step_memory(cfg, tool, model, device) if device is not None else None


def _per_rank_batch(cfg: CfgNode, tool: str) -> int:
    batch = cfg.SOLVER.BATCH_SIZE if tool == "train" else cfg.SEARCH.BATCH_SIZE
    return max(batch // comm.get_world_size(), 1)


def check_step_memory(
    cfg: CfgNode, tool: str, model: torch.nn.Module, device: torch.device
) -> Optional[Tuple[int, str]]:
    """Refuse (MEMORY_CHECK "refuse") a run whose step would not fit in ``device``'s free memory;
    returns the ``(logging level, line)`` to log."""
    batch, size = _per_rank_batch(cfg, tool), cfg.DATA.INPUT_SIZE
    shape = (batch, cfg.MODEL.IN_CHANS, size, size)
    try:
        if tool == "train":
            estimate = estimate_step_memory(model, shape)
        else:
            estimate = estimate_step_memory(
                model,
                shape,
                forward=lambda net, x: net(x, worst_case_mixing(net, cfg.SEARCH.SAMPLED_CHOICES)),
                checkpointed=list(model.search_blocks().values()) if cfg.SEARCH.CHECKPOINT_BLOCKS else None,
            )
    except UserError:
        raise
    except Exception as e:  # an op without a meta kernel: no estimate, the run goes on
        return logging.INFO, f"memory: no estimate ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})"
    name = cfg.MODEL.ARCH if tool == "train" else f"search space {cfg.SEARCH.SPACE}"
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1
    return check_memory(
        estimate,
        device,
        f"{name} at {size}px, batch {batch} per process",
        processes=processes,
        refuse=cfg.MEMORY_CHECK == "refuse",
    )


def worst_case_mixing(net, sampled: Sequence[str]) -> KnownMixing:
    """Mixing weights of the supernet's largest step: every option of a mixed choice runs; a sampled
    ("hard") resolution runs its largest option; a sampled op, width or expansion runs every option
    (an upper bound: which one costs most depends on the block)."""
    dev = next(iter(net.alphas.values())).device if len(net.alphas) else torch.device("cpu")
    weights, chosen = {}, {}
    for label, c in net.choices.items():
        weights[label] = torch.full((c.size,), 1.0 / c.size, device=dev)
        if c.kind == "resolution" and "resolution" in sampled:
            chosen[label] = max(range(c.size), key=lambda i: c.options[i])
    return KnownMixing(weights, chosen)


def remove_stale_temporaries(folder: str) -> List[str]:
    """Delete the temporary files of atomic writes a killed process left behind."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), ".*.tmp")):
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def _check_before_writing(
    cfg: CfgNode, resume: bool, run_files: Sequence[str], tool: Optional[str], device: torch.device
) -> List[Tuple[int, str]]:
    """Everything default_setup checks before a file is written, and the run lock (rank 0); returns
    the ``(logging level, line)`` notes to log once the logger writes to OUTPUT_DIR."""
    notes = []
    check_output_dir_path(cfg.OUTPUT_DIR)
    # the lock first (rank 0): a second run into the folder is told it is in use, not what the first wrote
    lock = lock_output_dir(cfg.OUTPUT_DIR) if comm.is_main_process() else None
    try:
        # every rank checks before any rank writes, so nobody sees a file of this run
        check_output_dir(cfg.OUTPUT_DIR, resume, run_files)
        if cfg.TENSORBOARD:
            require("tensorboard", "TENSORBOARD True")
        require_dataset_packages(cfg.DATA.NAME)
        if tool is not None:
            memory = check_buildable(cfg, tool, device)
            notes += [memory] if memory else []
            if resume:
                check_resume(cfg, tool)
            check_data(cfg, tool)
    except BaseException:
        release_run_locks()  # and the folder, if the lock made it
        raise
    if lock is not None and lock.stale_owner:
        owner = lock.stale_owner
        notes.append(
            (
                logging.INFO,
                f"took over the run lock of pid {owner.get('pid')} ({owner.get('host', '?')}): that run is gone",
            )
        )
    comm.barrier()
    if comm.is_main_process():
        for path in remove_stale_temporaries(cfg.OUTPUT_DIR):
            notes.append((logging.INFO, f"removed {path}, left by an interrupted write"))
    return notes


def default_setup(
    cfg: CfgNode,
    *,
    resume: bool = False,
    run_files: Sequence[str] = RUN_FILES,
    write_outputs: bool = True,
    tool: Optional[str] = None,
) -> torch.device:
    """Set up a run; returns this rank's device.

    Joins the torchrun job (if any), refuses an output folder holding another run
    (unless ``resume``), sets up logging (rank 0 logs to stdout and OUTPUT_DIR/log.txt),
    seeds every RNG with ``SEED + rank`` and writes the final config to
    OUTPUT_DIR/config.yaml (rank 0). ``write_outputs=False`` (evaluation) skips
    everything that touches OUTPUT_DIR. With ``tool`` ("train" or "search"), the model is
    checked (:func:`check_buildable`, with one step's memory), with ``resume`` the checkpoint
    against this run (:func:`check_resume`), and the data splits (:func:`check_data`), before
    anything is written. Rank 0 holds OUTPUT_DIR's run lock from then on: :func:`run_main` releases
    it, as does :func:`release_run_locks` or the end of the process.
    """
    device = resolve_device(cfg.DEVICE)
    comm.init_distributed(device.type == "cuda")
    notes = _check_before_writing(cfg, resume, run_files, tool, device) if write_outputs else []
    setup_logger(cfg.OUTPUT_DIR if write_outputs else None)
    for level, line in notes:
        logger.log(level, line)
    if write_outputs and comm.is_main_process():
        path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
        if resume and os.path.isfile(path):
            changed = config_changes(path, cfg)
            if changed:
                logger.warning("resuming with a changed config: %s", "; ".join(changed))
        atomic_write_text(path, cfg.dump())
    logger.info(
        "world size %d, device %s, torch %s, %d CPU thread(s)%s",
        comm.get_world_size(),
        device,
        torch.__version__,
        torch.get_num_threads(),
        f"; config written to {os.path.join(cfg.OUTPUT_DIR, 'config.yaml')}" if write_outputs else "",
    )
    seed_all(cfg.SEED + comm.get_rank())
    return device


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
            if _RUN_LOCKS
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
            + ("; the last checkpoint is intact" if _RUN_LOCKS else "")
        )
        return USER_ERROR_EXIT
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        release_run_locks()
        comm.shutdown()


def build_model_from_cfg(cfg: CfgNode, num_classes: Optional[int] = None):
    """The plain model MODEL.* describes, at DATA.INPUT_SIZE."""
    return build_model(
        cfg.MODEL.ARCH,
        num_classes=cfg.MODEL.NUM_CLASSES if num_classes is None else num_classes,
        in_chans=cfg.MODEL.IN_CHANS,
        drop_rate=cfg.MODEL.DROP_RATE,
        input_size=cfg.DATA.INPUT_SIZE,
    )
