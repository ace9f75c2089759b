"""Running things: the epoch loop with hooks (training and search), checkpoints, logging.

Pieces the tools (train, eval, search) share::

    from mobile_cv import engine
    args = engine.default_argument_parser("...").parse_args()
    cfg = engine.setup_cfg(args.config_file, args.opts)
    device = engine.default_setup(cfg, resume=args.resume)
    ckpt = engine.Checkpointer(cfg.OUTPUT_DIR, model=model, optimizer=opt)
    extra = ckpt.resume_or_start(args.resume)
    trainer = engine.Trainer(step, loader, epochs=n, hooks=[engine.SetEpoch(loader), ...,
                             engine.SaveCheckpoint(ckpt)])
    trainer.train(start_epoch)
"""

from .checkpoint import (
    CHECKPOINT_FILE,
    Checkpointer,
    CheckpointError,
    atomic_save,
    atomic_write_text,
    get_rng_state,
    load_file,
    set_rng_state,
    state_digest,
    unwrap,
)
from .defaults import (
    RUN_FILES,
    OutputDirError,
    build_model_from_cfg,
    check_output_dir,
    default_argument_parser,
    default_setup,
    resolve_arch,
    resolve_device,
    run_main,
    seed_all,
    setup_cfg,
)
from .hooks import EMAUpdate, Evaluate, LRSchedule, SaveCheckpoint, SetEpoch, SyncBuffers, WriteMetrics
from .logger import MetricsWriter, read_metrics, setup_logger
from .loop import HookBase, StepBase, Trainer, create_ddp_model
from .train_loop import (
    NonFiniteLossError,
    build_criterion,
    build_ema,
    build_lr_scheduler,
    build_sgd,
    check_finite,
    evaluate,
    progress,
    topk_correct,
)
from .trainer import check_model_fits_data, evaluate_weights, train

__all__ = [
    "EMAUpdate",
    "Evaluate",
    "HookBase",
    "LRSchedule",
    "SaveCheckpoint",
    "SetEpoch",
    "StepBase",
    "SyncBuffers",
    "Trainer",
    "WriteMetrics",
    "create_ddp_model",
    "CHECKPOINT_FILE",
    "CheckpointError",
    "Checkpointer",
    "MetricsWriter",
    "NonFiniteLossError",
    "OutputDirError",
    "RUN_FILES",
    "atomic_save",
    "atomic_write_text",
    "build_criterion",
    "build_ema",
    "build_lr_scheduler",
    "build_model_from_cfg",
    "build_sgd",
    "check_finite",
    "check_model_fits_data",
    "check_output_dir",
    "default_argument_parser",
    "default_setup",
    "evaluate",
    "evaluate_weights",
    "get_rng_state",
    "load_file",
    "progress",
    "read_metrics",
    "resolve_arch",
    "resolve_device",
    "run_main",
    "seed_all",
    "set_rng_state",
    "setup_cfg",
    "setup_logger",
    "state_digest",
    "topk_correct",
    "train",
    "unwrap",
]
