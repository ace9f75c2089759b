"""Running things: the epoch loop with hooks (training and search), checkpoints, logging.

Files, by what they hold:

* ``loop.py``: the :class:`Trainer` (the one epoch loop), :class:`HookBase`, :class:`StepBase`;
* ``steps.py``: the steps it runs (a plain training step, the search's two-phase step);
* ``hooks.py``: every hook (LR schedule, EMA, evaluation, checkpoints, metrics, the search's
  temperature and architecture record);
* ``build.py``: optimizers, schedules, losses, EMA, the search's optimizers and cost loss;
* ``training.py`` / ``search.py``: wire a training run / a search from a config;
* ``evaluation.py``, ``report.py``, ``checkpoint.py``, ``logger.py``, ``defaults.py``
  (what every tool does first: arguments, config, setup, :func:`run_main`);
* ``memory.py``: one step's memory estimated from the meta-device build, checked against what is free;
* ``run_lock.py``: one run per output folder.

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

from .build import (
    build_cost_loss,
    build_criterion,
    build_ema,
    build_lr_scheduler,
    build_search_optimizers,
    build_sgd,
)
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
    CHECK_FAILED_EXIT,
    INTERRUPTED_EXIT,
    RUN_FILES,
    TERMINATED_EXIT,
    USER_ERROR_EXIT,
    OutputDirError,
    build_model_from_cfg,
    check_output_dir,
    default_argument_parser,
    default_setup,
    release_run_locks,
    resolve_device,
    run_main,
    seed_all,
    setup_cfg,
)
from .evaluation import evaluate, topk_correct
from .hooks import (
    EMAUpdate,
    Evaluate,
    LRSchedule,
    RecordArchitecture,
    SaveCheckpoint,
    SetEpoch,
    SyncBuffers,
    Temperature,
    WriteMetrics,
    temperature_at,
)
from .logger import MetricsWriter, progress, read_metrics, setup_logger
from .loop import HookBase, NonFiniteLossError, StepBase, Trainer, check_finite, create_ddp_model
from .memory import MemoryEstimate, OutOfMemoryError, available_memory, check_memory, estimate_step_memory
from .run_lock import RunLock, RunLockError
from .search import run_search
from .steps import FixedMixing, PlainStep, SearchStep
from .training import check_model_fits_data, evaluate_weights, train

__all__ = [
    "CHECKPOINT_FILE",
    "CHECK_FAILED_EXIT",
    "INTERRUPTED_EXIT",
    "RUN_FILES",
    "TERMINATED_EXIT",
    "USER_ERROR_EXIT",
    "CheckpointError",
    "Checkpointer",
    "EMAUpdate",
    "Evaluate",
    "FixedMixing",
    "HookBase",
    "LRSchedule",
    "MemoryEstimate",
    "MetricsWriter",
    "NonFiniteLossError",
    "OutOfMemoryError",
    "OutputDirError",
    "PlainStep",
    "RecordArchitecture",
    "RunLock",
    "RunLockError",
    "SaveCheckpoint",
    "SearchStep",
    "SetEpoch",
    "StepBase",
    "SyncBuffers",
    "Temperature",
    "Trainer",
    "WriteMetrics",
    "atomic_save",
    "atomic_write_text",
    "available_memory",
    "build_cost_loss",
    "build_criterion",
    "build_ema",
    "build_lr_scheduler",
    "build_model_from_cfg",
    "build_search_optimizers",
    "build_sgd",
    "check_finite",
    "check_memory",
    "check_model_fits_data",
    "check_output_dir",
    "create_ddp_model",
    "default_argument_parser",
    "default_setup",
    "evaluate",
    "estimate_step_memory",
    "evaluate_weights",
    "get_rng_state",
    "load_file",
    "progress",
    "read_metrics",
    "release_run_locks",
    "resolve_device",
    "run_main",
    "run_search",
    "seed_all",
    "set_rng_state",
    "setup_cfg",
    "setup_logger",
    "state_digest",
    "temperature_at",
    "topk_correct",
    "train",
    "unwrap",
]
