"""What every tool does first: parse arguments, build the config, set up the run.

args = default_argument_parser("train a model").parse_args()
cfg = setup_cfg(args.config_file, args.opts)
device = default_setup(cfg, resume=args.resume)   # torchrun, output guard, logs, seeds, config.yaml
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import torch

from .. import comm as dist
from ..arch_def import ArchDefError, load_arch_def_file
from ..builder import build_model
from ..config import CfgNode, ConfigError, check_config, get_cfg
from ..errors import UserError
from .checkpoint import CHECKPOINT_FILE, atomic_write_text
from .logger import setup_logger

logger = logging.getLogger("mobile_cv.engine")

# Files whose presence means the folder holds a run (another one, unless resuming it).
RUN_FILES = (CHECKPOINT_FILE, "metrics.jsonl", "model_final.pth")


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


def setup_cfg(config_file: str = "", opts: Sequence[str] = ()) -> CfgNode:
    """Defaults, then ``config_file``, then ``opts``; checked and frozen."""
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
    cfg.freeze()
    return cfg


def check_output_dir(output_dir: str, resume: bool, run_files: Sequence[str] = RUN_FILES) -> None:
    """Refuse a folder holding another run's outputs unless ``resume``."""
    found = [f for f in run_files if os.path.exists(os.path.join(output_dir, f))]
    if found and not resume:
        raise OutputDirError(
            f"output folder {output_dir!r} already holds a run ({', '.join(found)}); pass --resume to continue "
            f"that run, or choose another OUTPUT_DIR (e.g. append OUTPUT_DIR <new folder> to the command)"
        )


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
            raise RuntimeError("DEVICE is 'cuda' but torch finds no CUDA device; use DEVICE cpu or auto")
        return torch.device("cuda", dist.get_local_rank())
    return torch.device("cpu")


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_setup(
    cfg: CfgNode, *, resume: bool = False, run_files: Sequence[str] = RUN_FILES, write_outputs: bool = True
) -> torch.device:
    """Set up a run; returns this rank's device.

    Joins the torchrun job (if any), refuses an output folder holding another run
    (unless ``resume``), sets up logging (rank 0 logs to stdout and OUTPUT_DIR/log.txt),
    seeds every RNG with ``SEED + rank`` and writes the final config to
    OUTPUT_DIR/config.yaml (rank 0). ``write_outputs=False`` (evaluation) skips
    everything that touches OUTPUT_DIR.
    """
    device = resolve_device(cfg.DEVICE)
    dist.init_distributed(device.type == "cuda")
    if write_outputs:
        # every rank checks before any rank writes, so nobody sees a file of this run
        check_output_dir(cfg.OUTPUT_DIR, resume, run_files)
        dist.barrier()
    setup_logger(cfg.OUTPUT_DIR if write_outputs else None)
    if write_outputs and dist.is_main_process():
        path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
        if resume and os.path.isfile(path):
            changed = config_changes(path, cfg)
            if changed:
                logger.warning("resuming with a changed config: %s", "; ".join(changed))
        atomic_write_text(path, cfg.dump())
    logger.info(
        "world size %d, device %s, torch %s, %d CPU thread(s)%s",
        dist.get_world_size(),
        device,
        torch.__version__,
        torch.get_num_threads(),
        f"; config written to {os.path.join(cfg.OUTPUT_DIR, 'config.yaml')}" if write_outputs else "",
    )
    seed_all(cfg.SEED + dist.get_rank())
    return device


def run_main(fn: Callable[[], Any]) -> int:
    """Run a tool's body; a :class:`~mobile_cv.errors.UserError` prints ``error: <message>`` and
    returns 1 (no traceback). Anything else is a bug and raises. The process group is left in all cases.
    """
    try:
        fn()
        return 0
    except UserError as e:
        prefix = f"[rank {dist.get_rank()}] " if dist.get_world_size() > 1 else ""
        print(f"{prefix}error: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        dist.shutdown()


def resolve_arch(arch: str) -> Any:
    """MODEL.ARCH as :func:`mobile_cv.build_model` takes it: a dict read from a .json/.py file, or the name."""
    if arch.endswith((".json", ".py")) or os.sep in arch:
        if not os.path.isfile(arch):
            raise ArchDefError(
                f"MODEL.ARCH {arch!r}: no such arch-def file; give a registered name (arch_defs.names('model')) "
                f"or an existing .json/.py file (a search writes OUTPUT_DIR/arch_def.json)"
            )
        return load_arch_def_file(arch)
    return arch


def build_model_from_cfg(cfg: CfgNode, num_classes: Optional[int] = None):
    """The plain model MODEL.* describes, at DATA.INPUT_SIZE."""
    return build_model(
        resolve_arch(cfg.MODEL.ARCH),
        num_classes=cfg.MODEL.NUM_CLASSES if num_classes is None else num_classes,
        in_chans=cfg.MODEL.IN_CHANS,
        drop_rate=cfg.MODEL.DROP_RATE,
        input_size=cfg.DATA.INPUT_SIZE,
    )
