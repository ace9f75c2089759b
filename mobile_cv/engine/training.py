"""Training a plain model from scratch, and evaluating saved weights (tools/train.py, tools/eval.py).

Output folder of a training run::

    config.yaml       the final config
    log.txt           the log
    metrics.jsonl     one line per epoch: train loss/acc1, lr, val loss/acc1/acc5, time
    checkpoint.pth    everything needed to --resume (rewritten atomically every epoch)
    arch_def.json     the architecture trained
    model_final.pth   the final weights (the EMA weights when SOLVER.EMA.ENABLED), a plain state dict
    model_final.safetensors  the same weights as safetensors (tools/model_zoo.py save makes a Hub folder of them)
    eval.json         final val and test accuracy, FLOPs, params
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from .. import comm
from ..arch.arch_def import to_jsonable
from ..arch.weights import extract_state_dict, load_state_dict
from ..config import CfgNode
from ..data import build_loader
from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .checkpoint import (
    CheckpointError,
    atomic_save,
    atomic_save_safetensors,
    atomic_write_text,
    load_file,
    state_digest,
)
from .evaluation import evaluate
from .loop import HookBase
from .run_checks import check_model_fits_data
from .run_setup import build_model_from_cfg

logger = logging.getLogger("mobile_cv.engine")

FINAL_WEIGHTS = "model_final.pth"
FINAL_SAFETENSORS = "model_final.safetensors"  # the same weights, for the Hugging Face ecosystem


def train(cfg: CfgNode, *, resume: bool, device: torch.device, hooks: Sequence[HookBase] = ()) -> Dict[str, Any]:
    """Train MODEL.ARCH from scratch on DATA's train split; returns the eval summary.

    Call after :func:`mobile_cv.engine.default_setup`. Every epoch appends to
    metrics.jsonl and rewrites checkpoint.pth; with ``resume`` the run continues
    from the checkpoint and ends with the same weights as an uninterrupted run.
    ``hooks`` run after the built-in ones. The same as ``TrainRun(cfg).start(device, resume, hooks)``
    (:mod:`.runs`).
    """
    from .runs import TrainRun

    return TrainRun(cfg).start(device, resume, hooks)


def finish_training(
    cfg: CfgNode,
    model: nn.Module,
    device: torch.device,
    flops_m: float,
    params_m: float,
    loaders: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Save the final weights and arch def, evaluate on val and test (``loaders``, else built from
    ``cfg``), write eval.json."""
    out = cfg.OUTPUT_DIR
    digests = comm.all_gather_object(state_digest(model))
    if len(set(digests)) > 1:
        logger.warning("the ranks ended with different weights (sha256 %s); rank 0's are saved", digests)
    summary: Dict[str, Any] = {
        "arch": cfg.MODEL.ARCH,
        "input_size": cfg.DATA.INPUT_SIZE,
        "flops_m": flops_m,
        "params_m": params_m,
        "weights": os.path.join(out, FINAL_WEIGHTS),
        "weights_safetensors": os.path.join(out, FINAL_SAFETENSORS),
        "weights_sha256_per_rank": digests,
    }
    for split in ("val", "test"):
        loader = (loaders or {}).get(split) or build_loader(cfg, split)
        summary[split] = evaluate(model, loader, device=device, desc=split)
    if comm.is_main_process():
        atomic_save(model.state_dict(), os.path.join(out, FINAL_WEIGHTS))
        atomic_save_safetensors(model.state_dict(), os.path.join(out, FINAL_SAFETENSORS))
        atomic_write_text(os.path.join(out, "arch_def.json"), json.dumps(to_jsonable(model.arch_def), indent=1) + "\n")
        atomic_write_text(os.path.join(out, "eval.json"), json.dumps(summary, indent=1) + "\n")
    comm.barrier()
    logger.info(
        "final: val top-1 %.2f top-5 %.2f | test top-1 %.2f top-5 %.2f | %.3f MFLOPs %.4f M params | %s",
        summary["val"]["acc1"],
        summary["val"]["acc5"],
        summary["test"]["acc1"],
        summary["test"]["acc5"],
        flops_m,
        params_m,
        summary["weights"],
    )
    return summary


def evaluate_weights(cfg: CfgNode, weights: str, *, split: str, device: torch.device) -> Dict[str, Any]:
    """Top-1/top-5 of MODEL.ARCH with ``weights`` (a state dict or a training checkpoint) on ``split``."""
    obj = load_file(weights)
    model = build_model_from_cfg(cfg)
    loader = build_loader(cfg, split)
    check_model_fits_data(cfg, loader.dataset)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:  # a training checkpoint.pth
        states = obj.get("states", {})
        from .runs import TrainRun, run_kind_of

        if run_kind_of(states) != TrainRun.kind:
            raise CheckpointError(
                f"{weights} is a {run_kind_of(states) or 'non-training'} checkpoint, not trained "
                f"weights: train the searched arch first (tools/train.py MODEL.ARCH <search folder>/arch_def.json) "
                f"and evaluate its model_final.pth"
            )
        obj = states.get("ema") or states["model"]  # EMA keys carry "module.", stripped below
    load_state_dict(model, extract_state_dict(obj, weights), source=weights)
    result = evaluate(model.to(device), loader, device=device, desc=split)
    return {"arch": cfg.MODEL.ARCH, "weights": weights, "split": split, **result}
