"""Running things: the epoch loop with hooks (training and search), checkpoints, logging.

Files, by what they hold:

* ``loop.py``: the :class:`Trainer` (the one epoch loop), :class:`HookBase`, :class:`StepBase`;
* ``steps.py``: the steps it runs (a plain training step, the search's two-phase step);
* ``hooks.py``: every hook (LR schedule, EMA, evaluation, checkpoints, metrics, the search's
  temperature and architecture record);
* ``build.py``: optimizers, schedules, losses, EMA, the search's optimizers and cost loss;
* ``runs.py``: the run objects, :class:`TrainRun` and :class:`SearchRun` on one :class:`Run` (what
  differs between the kinds, and the skeleton they share); ``training.py`` / ``search.py``: what
  each finishes with (eval.json / the derived architecture and search.json), and the older entry
  points ``train`` / ``run_search``;
* ``launch.py`` (a tool's arguments and :func:`run_main`, how it exits), ``run_setup.py`` (the config,
  :func:`default_setup`), ``run_checks.py`` (what a run checks before it writes a file);
* ``evaluation.py``, ``report.py``, ``checkpoint.py``, ``logger.py``, ``derive.py``;
* ``memory.py``: one step's memory estimated from the meta-device build, checked against what is free;
* ``run_lock.py``: one run per output folder.

A run, as tools/search.py makes one (``engine.launch_run(SearchRun, __doc__, argv)``)::

    from mobile_cv import engine
    run = engine.SearchRun.from_config("configs/search_embedded_mnist.yaml", ["SEARCH.EPOCHS", "3"])
    run.setup(resume=False)             # torchrun, the checks before writing, logs, seeds, config.yaml
    summary = run.run(hooks=[...])      # the epochs, then search.json

Pieces for a loop of your own::

    ckpt = engine.Checkpointer(cfg.OUTPUT_DIR, model=model, optimizer=opt)
    extra = ckpt.resume_or_start(resume)
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
from .launch import (
    CHECK_FAILED_EXIT,
    INTERRUPTED_EXIT,
    TERMINATED_EXIT,
    USER_ERROR_EXIT,
    default_argument_parser,
    launch_run,
    run_main,
)
from .logger import MetricsWriter, progress, read_metrics, setup_logger
from .loop import HookBase, NonFiniteLossError, StepBase, Trainer, check_finite, create_ddp_model
from .memory import MemoryEstimate, OutOfMemoryError, available_memory, check_memory, estimate_step_memory
from .run_checks import RUN_FILES, OutputDirError, check_output_dir
from .run_lock import RunLock, RunLockError, release_run_locks  # noqa: I001
from .run_setup import build_model_from_cfg, default_setup, resolve_device, seed_all, setup_cfg
from .runs import Run, SearchRun, TrainRun
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
    "Run",
    "RunLock",
    "RunLockError",
    "SaveCheckpoint",
    "SearchRun",
    "SearchStep",
    "SetEpoch",
    "StepBase",
    "SyncBuffers",
    "Temperature",
    "TrainRun",
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
    "launch_run",
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
