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
from ..arch_def import to_jsonable
from ..checkpoint import extract_state_dict, load_state_dict
from ..config import CfgNode
from ..data import build_loader
from ..flops import count_flops_params
from .build import build_criterion, build_ema, build_lr_scheduler, build_sgd
from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .checkpoint import (
    Checkpointer,
    CheckpointError,
    atomic_save,
    atomic_save_safetensors,
    atomic_write_text,
    load_file,
    state_digest,
)
from .defaults import build_model_from_cfg, check_model_fits_data, checkpoint_tool, run_identity
from .evaluation import evaluate
from .hooks import (
    EMAUpdate,
    Evaluate,
    LRSchedule,
    SaveCheckpoint,
    SetEpoch,
    SyncBuffers,
    WriteMetrics,
    WriteTensorBoard,
    interrupted_record,
)
from .loop import HookBase, Trainer, create_ddp_model
from .precision import MixedPrecision
from .steps import PlainStep

logger = logging.getLogger("mobile_cv.engine")

FINAL_WEIGHTS = "model_final.pth"
FINAL_SAFETENSORS = "model_final.safetensors"  # the same weights, for the Hugging Face ecosystem


def train(cfg: CfgNode, *, resume: bool, device: torch.device, hooks: Sequence[HookBase] = ()) -> Dict[str, Any]:
    """Train MODEL.ARCH from scratch on DATA's train split; returns the eval summary.

    Call after :func:`mobile_cv.engine.default_setup`. Every epoch appends to
    metrics.jsonl and rewrites checkpoint.pth; with ``resume`` the run continues
    from the checkpoint and ends with the same weights as an uninterrupted run.
    ``hooks`` run after the built-in ones.
    """
    out = cfg.OUTPUT_DIR
    model = build_model_from_cfg(cfg).to(device)  # first: a bad arch fails before a long folder scan
    if cfg.SOLVER.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
    train_loader = build_loader(cfg, "train")
    val_loader = build_loader(cfg, "val")
    test_loader = build_loader(cfg, "test")  # now: an empty or missing test split fails before the training
    check_model_fits_data(cfg, train_loader.dataset)
    flops_m, params_m = count_flops_params(model, cfg.DATA.INPUT_SIZE)
    logger.info(
        "model %s: %.3f MFLOPs, %.4f M params at %dx%d; %d train / %d val images",
        cfg.MODEL.ARCH,
        flops_m,
        params_m,
        cfg.DATA.INPUT_SIZE,
        cfg.DATA.INPUT_SIZE,
        len(train_loader.dataset),
        len(val_loader.dataset),
    )
    s = cfg.SOLVER
    optimizer = build_sgd(model, lr=s.BASE_LR, momentum=s.MOMENTUM, weight_decay=s.WEIGHT_DECAY)
    scheduler = build_lr_scheduler(
        optimizer,
        name=s.LR_SCHEDULER,
        epochs=s.EPOCHS,
        warmup_epochs=s.WARMUP_EPOCHS,
        updates_per_epoch=len(train_loader),
    )
    ema = build_ema(model, s.EMA.DECAY) if s.EMA.ENABLED else None
    # no scheduler: timm's are functions of the update count (see build_lr_scheduler)
    precision = MixedPrecision(s.AMP, device)
    checkpointer = Checkpointer(
        out, model=model, optimizer=optimizer, ema=ema, precision=precision if precision.scaler else None
    )
    extra = checkpointer.resume_or_start(resume)
    start_epoch = extra.get("epoch", -1) + 1
    interrupted = interrupted_record(os.path.join(out, "metrics.jsonl"), extra)  # before WriteMetrics rewrites it
    eval_model = ema.module if ema is not None else model
    step_model = create_ddp_model(model, device)
    if s.COMPILE:
        step_model = torch.compile(step_model)
    step = PlainStep(
        step_model, optimizer, build_criterion(s.LABEL_SMOOTHING), device, precision, channels_last=s.CHANNELS_LAST
    )
    trainer = Trainer(
        step,
        train_loader,
        epochs=s.EPOCHS,
        describe_failure=checkpointer.describe_last,
        hooks=[
            SetEpoch(train_loader),
            LRSchedule(scheduler),
            EMAUpdate(ema, model) if ema is not None else None,
            SyncBuffers(*([model] + ([ema.module] if ema is not None else []))),
            SaveCheckpoint(checkpointer, run=run_identity(cfg, "train")),
            Evaluate(eval_model, val_loader, device, period=s.EVAL_PERIOD),
            WriteMetrics(os.path.join(out, "metrics.jsonl"), start_epoch),
            WriteTensorBoard(out, start_epoch) if cfg.TENSORBOARD else None,
            *hooks,
        ],
    )
    if interrupted is not None:
        logger.info(
            "epoch %d was checkpointed but its evaluation and metrics were interrupted: completing them", start_epoch
        )
    trainer.train(start_epoch, interrupted)
    return finish_training(cfg, eval_model, device, flops_m, params_m, {"val": val_loader, "test": test_loader})


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
        if checkpoint_tool(states) != "train":
            raise CheckpointError(
                f"{weights} is a {checkpoint_tool(states) or 'non-training'} checkpoint, not trained "
                f"weights: train the searched arch first (tools/train.py MODEL.ARCH <search folder>/arch_def.json) "
                f"and evaluate its model_final.pth"
            )
        obj = states.get("ema") or states["model"]  # EMA keys carry "module.", stripped below
    load_state_dict(model, extract_state_dict(obj, weights), source=weights)
    result = evaluate(model.to(device), loader, device=device, desc=split)
    return {"arch": cfg.MODEL.ARCH, "weights": weights, "split": split, **result}
