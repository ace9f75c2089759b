"""Running things: torchrun helpers, checkpoints, logging, the plain training loop.

Pieces the tools (train, eval, search) share::

    from mobile_cv import engine
    args = engine.default_argument_parser("...").parse_args()
    cfg = engine.setup_cfg(args.config_file, args.opts)
    device = engine.default_setup(cfg, resume=args.resume)
    ckpt = engine.Checkpointer(cfg.OUTPUT_DIR, model=model, optimizer=opt)
    extra = ckpt.resume_or_start(args.resume)
    metrics = engine.MetricsWriter(os.path.join(cfg.OUTPUT_DIR, "metrics.jsonl"), start_epoch)
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
from .logger import MetricsWriter, read_metrics, setup_logger
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
    train_one_epoch,
)
from .trainer import check_model_fits_data, evaluate_weights, train

__all__ = [
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
    "train_one_epoch",
    "unwrap",
]
