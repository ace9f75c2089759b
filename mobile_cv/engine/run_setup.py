"""Setting a run up: the config (defaults, file, ``KEY VALUE`` overrides, checked) and
:func:`default_setup` (torchrun, the checks before any file is written, logs, seeds, config.yaml).

    cfg = setup_cfg(args.config_file, args.opts)
    device = default_setup(cfg, resume=args.resume, run=TrainRun(cfg))
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import comm
from ..arch.arch_def import unify
from ..arch.arch_registry import is_arch_file, resolve_arch_def
from ..arch.builder import build_model
from ..atomic_files import atomic_write_text
from ..config import CfgNode, ConfigError, check_config, get_cfg
from ..search.cost_kinds import check_cost_config
from .allocator import apply_malloc_setting
from .logger import setup_logger
from .run_checks import RUN_FILES, check_before_writing

logger = logging.getLogger("mobile_cv.engine")


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
    check_cost_config(cfg)
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


def get_rng_state() -> Tuple[Any, Any, torch.Tensor]:
    """The CPU-side RNG states seed_all sets (python, numpy, torch's CPU generator)."""
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def set_rng_state(state: Tuple[Any, Any, torch.Tensor]) -> None:
    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.set_rng_state(state[2])


def default_setup(
    cfg: CfgNode,
    *,
    resume: bool = False,
    run_files: Optional[Sequence[str]] = None,
    write_outputs: bool = True,
    run=None,
    tool: Optional[str] = None,
) -> torch.device:
    """Set up a run; returns this rank's device.

    Sets glibc malloc to MALLOC, joins the torchrun job (if any), refuses an output folder holding another run
    (unless ``resume``), sets up logging (rank 0 logs to stdout and OUTPUT_DIR/log.txt),
    seeds every RNG with ``SEED + rank`` and writes the final config to
    OUTPUT_DIR/config.yaml (rank 0). ``write_outputs=False`` (evaluation) skips
    everything that touches OUTPUT_DIR. With ``run`` (a :class:`~mobile_cv.engine.runs.Run`;
    ``tool`` "train" or "search" names one, the older spelling), the model is checked
    (:func:`check_buildable`, with one step's memory), with ``resume`` the checkpoint against this
    run (:func:`check_resume`), and the data splits (:func:`check_data`), before anything is written.
    Rank 0 holds OUTPUT_DIR's run lock from then on: :func:`run_main` releases it, as does
    :func:`release_run_locks` or the end of the process.
    """
    if run is None and tool is not None:
        from .runs import RUN_KINDS

        run = RUN_KINDS[tool](cfg)
    run_files = run_files or (run.run_files if run is not None else RUN_FILES)
    device = resolve_device(cfg.DEVICE)
    apply_malloc_setting(cfg.MALLOC)  # before the model and the data allocate anything large
    comm.init_distributed(device.type == "cuda")
    notes = check_before_writing(cfg, resume, run_files, run, device) if write_outputs else []
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


def build_model_from_cfg(cfg: CfgNode, num_classes: Optional[int] = None):
    """The plain model MODEL.* describes, at DATA.INPUT_SIZE."""
    return build_model(
        cfg.MODEL.ARCH,
        num_classes=cfg.MODEL.NUM_CLASSES if num_classes is None else num_classes,
        in_chans=cfg.MODEL.IN_CHANS,
        drop_rate=cfg.MODEL.DROP_RATE,
        input_size=cfg.DATA.INPUT_SIZE,
    )
