"""What a run checks before it writes a file (docs/architecture.md#what-a-run-checks-before-it-writes-a-file):
the output folder, the model or supernet built on the meta device and one step's memory, a resumed
checkpoint, the data splits, then the run lock. Each check takes the run (:mod:`.runs`), which
says what differs between a training run and a search.
"""

from __future__ import annotations

import logging
import os
from typing import List, Optional, Sequence, Tuple

import torch

from .. import comm
from ..atomic_files import remove_stale_temporaries
from ..config import CfgNode
from ..data import ClassificationDataset, DatasetError, build_dataset, dataset_kwargs, require_dataset_packages
from ..errors import UserError
from ..extras import require
from .checkpoint import CHECKPOINT_FILE, CheckpointError, load_file
from .memory import check_memory, with_allocator
from .run_lock import lock_output_dir, release_run_locks

# Files whose presence means the folder holds a run (another one, unless resuming it).
RUN_FILES = (CHECKPOINT_FILE, "metrics.jsonl", "model_final.pth", "model_final.safetensors")


class OutputDirError(UserError, RuntimeError):
    """The output folder holds another run's outputs."""


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


def check_data(cfg: CfgNode, run) -> None:
    """Every split ``run`` reads exists, is non-empty and has MODEL.NUM_CLASSES classes of
    MODEL.IN_CHANS-channel images: a missing test split fails now, not after the training."""
    kwargs = dataset_kwargs(cfg)
    for split in run.splits:
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


def check_resume(cfg: CfgNode, run) -> None:
    """Refuse, before anything is written, a --resume whose checkpoint this run cannot continue:
    another kind's, another architecture's or space's, or one past this run's epochs."""
    from .runs import run_kind_of

    path = os.path.join(cfg.OUTPUT_DIR, CHECKPOINT_FILE)
    if not os.path.isfile(path):
        return
    data = load_file(path)
    states, extra = data.get("states", {}) if isinstance(data, dict) else {}, {}
    if isinstance(data, dict) and isinstance(data.get("extra"), dict):
        extra = data["extra"]
    other = run_kind_of(states)
    if other is None:
        raise CheckpointError(f"{path} is not a checkpoint of tools/train.py or tools/search.py")
    advice = "choose another OUTPUT_DIR, or resume with the config that wrote it"
    if other != run.kind:
        raise CheckpointError(f"--resume: {path} is a {other} checkpoint; this is a {run.kind} run ({advice})")
    mine, theirs = run.identity(), extra.get("run")
    if isinstance(theirs, dict) and theirs.get("digest") != mine["digest"]:
        raise CheckpointError(
            f"--resume: {path} was written for {theirs.get('what')} (classes/channels as then); "
            f"this run has {mine['what']}, MODEL.NUM_CLASSES {cfg.MODEL.NUM_CLASSES}, "
            f"MODEL.IN_CHANS {cfg.MODEL.IN_CHANS} ({advice})"
        )
    key, epochs = run.epochs_key, run.epochs
    done = int(extra.get("epoch", -1)) + 1
    if done > epochs:
        raise CheckpointError(
            f"--resume: {path} has already run {done} epochs, more than {key} {epochs}; "
            f"set {key} {done} or more to continue it, or choose another OUTPUT_DIR"
        )


def check_buildable(cfg: CfgNode, run, device: Optional[torch.device] = None) -> Optional[Tuple[int, str]]:
    """Build the run's model or supernet (the one build of the run: :meth:`Run.build_model_once`)
    and what it needs besides (a search's latency table), so a bad row or table fails before
    anything is written to OUTPUT_DIR. With ``device``, one step's memory is estimated on a
    meta-device twin of it and checked against what ``device`` has free (:mod:`.memory`, config
    key MEMORY_CHECK); returns the ``(logging level, line)`` saying so, or None."""
    model = run.build_checked_model()
    run.prepare(model)
    return check_step_memory(cfg, run, model, device) if device is not None else None


def check_step_memory(cfg: CfgNode, run, model: torch.nn.Module, device: torch.device) -> Optional[Tuple[int, str]]:
    """Refuse (MEMORY_CHECK "refuse") a run whose step would not fit in ``device``'s free memory;
    returns the ``(logging level, line)`` to log."""
    batch, size = run.per_rank_batch(), cfg.DATA.INPUT_SIZE
    shape = (batch, cfg.MODEL.IN_CHANS, size, size)
    try:
        estimate = run.estimate_memory(model, shape)
    except UserError:
        raise
    except Exception as e:  # an op without a meta kernel: no estimate, the run goes on
        return logging.INFO, f"memory: no estimate ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})"
    estimate = with_allocator(estimate, cfg.MALLOC if device.type == "cpu" else None)
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1
    return check_memory(
        estimate,
        device,
        f"{run.label} at {size}px, batch {batch} per process",
        processes=processes,
        refuse=cfg.MEMORY_CHECK == "refuse",
    )


def check_before_writing(
    cfg: CfgNode, resume: bool, run_files: Sequence[str], run, device: torch.device
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
        if run is not None:
            memory = check_buildable(cfg, run, device)
            notes += [memory] if memory else []
            if resume:
                check_resume(cfg, run)
            check_data(cfg, run)
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
