"""A run is an object: :class:`TrainRun` (tools/train.py) and :class:`SearchRun` (tools/search.py)
on one :class:`Run` base, the shape of detectron2's ``DefaultTrainer``.

    run = SearchRun.from_config("configs/search_embedded_mnist.yaml", ["SEARCH.EPOCHS", "3"])
    run.setup(resume=False)          # torchrun, the checks before any file is written, logs, seeds
    summary = run.run(hooks=[...])   # the epochs, then finish(): search.json / eval.json

A run resolves its architecture or search space once and owns what differs between the kinds:
the config key naming what it builds, the data splits it reads, its per-rank batch, what a
checkpoint must match to be resumed (:meth:`Run.identity`), the model its memory is estimated on,
the files that mark its folder, the states it checkpoints, and its builders: :meth:`Run.build`,
:meth:`Run.build_step`, :meth:`Run.build_hooks`, :meth:`Run.finish`. :meth:`Run.run` is the
skeleton both share. Override one builder in a subclass to change one thing::

    class MyTrainRun(TrainRun):
        def build_hooks(self, checkpointer, start_epoch):
            return super().build_hooks(checkpointer, start_epoch) + [MyHook()]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import comm
from ..arch.arch_def import to_jsonable
from ..arch.arch_registry import resolve_arch_def
from ..arch.flops import count_flops_params
from ..config import CfgNode
from ..data import build_loader
from ..search import build_supernet
from ..search.choices import detach_mixing
from ..search.cost_kinds import cost_kind
from ..search.mixed import frozen_bn_statistics
from ..search.supernet import worst_case_mixing
from . import hooks as builtin  # the built-in hooks
from .build import build_cost_loss, build_criterion, build_ema, build_lr_scheduler, build_search_optimizers, build_sgd
from .checkpoint import Checkpointer
from .loop import HookBase, Trainer, create_ddp_model
from .memory import MemoryEstimate, StepPhase, estimate_step_memory, meta_twin
from .precision import MixedPrecision, resolve_channels_last
from .report import search_log_line
from .run_checks import RUN_FILES, check_model_fits_data
from .run_setup import build_model_from_cfg, default_setup, get_rng_state, seed_all, set_rng_state, setup_cfg
from .steps import FixedMixing, PlainStep, SearchStep

logger = logging.getLogger("mobile_cv.engine")


class Run:
    """One run of a tool. Subclasses set the class attributes and the builders."""

    kind = ""  # written into its checkpoints ("train", "search"): what a --resume must be
    arch_key = ""  # the config key naming what it builds
    state = ""  # the checkpointed state that marks a checkpoint of this kind
    splits: Tuple[str, ...] = ()  # the data splits it reads, checked before anything is written
    run_files: Tuple[str, ...] = RUN_FILES  # files whose presence means OUTPUT_DIR holds a run of it
    desc = "epoch"  # the progress bar's and error messages' word for an epoch ("epoch 3/10, iteration 17")

    def __init__(self, cfg: CfgNode) -> None:
        self.cfg = cfg
        self.arch_def = resolve_arch_def(self.name)[0]  # resolved once, here
        self.device: Optional[torch.device] = None
        self.resume = False
        self._built: Optional[Tuple[nn.Module, Any]] = None  # (model, RNG state after it): build_model_once

    @classmethod
    def setup_cfg(cls, config_file: str = "", opts: Sequence[str] = ()) -> CfgNode:
        """The frozen config: defaults, ``config_file``, ``KEY VALUE`` overrides, checked."""
        return setup_cfg(config_file, opts, arch_key=cls.arch_key)

    @classmethod
    def from_config(cls, config_file: str = "", opts: Sequence[str] = ()) -> "Run":
        return cls(cls.setup_cfg(config_file, opts))

    # -- what this run is ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The architecture or search space, as the config names it."""
        node, key = self.arch_key.split(".")
        return getattr(getattr(self.cfg, node), key)

    @property
    def channels_last(self) -> bool:
        """SOLVER/SEARCH.CHANNELS_LAST resolved for this run's device ("auto": where measured faster)."""
        node = self.cfg.SOLVER if self.kind == "train" else self.cfg.SEARCH
        return resolve_channels_last(node.CHANNELS_LAST, self.device or torch.device("cpu"), self.kind)

    def log_memory_format(self) -> None:
        key = "SOLVER" if self.kind == "train" else "SEARCH"
        value = getattr(self.cfg, key).CHANNELS_LAST
        logger.info(
            "memory format: %s (%s.CHANNELS_LAST %s on %s)",
            "channels_last" if self.channels_last else "contiguous",
            key,
            value,
            (self.device or torch.device("cpu")).type,
        )

    @property
    def what(self) -> str:
        """What the run is, as its checkpoint records it."""
        return f"{self.arch_key} {self.name}"

    @property
    def label(self) -> str:
        """What the run builds, in messages ("FBNetV2_F1", "search space fbnetv2_f_space")."""
        return self.name

    @property
    def epochs_key(self) -> str:
        raise NotImplementedError

    @property
    def batch_key(self) -> str:
        raise NotImplementedError

    def _value(self, key: str):
        node, name = key.split(".")
        return getattr(getattr(self.cfg, node), name)

    @property
    def epochs(self) -> int:
        return self._value(self.epochs_key)

    def per_rank_batch(self) -> int:
        from .. import comm

        return max(self._value(self.batch_key) // comm.get_world_size(), 1)

    def identity_key(self) -> str:
        arch = json.dumps(to_jsonable(self.arch_def), sort_keys=True)
        return f"{self.kind}|{arch}|{self.cfg.MODEL.NUM_CLASSES}|{self.cfg.MODEL.IN_CHANS}|"

    def identity(self) -> Dict[str, str]:
        """What a checkpoint must match to be resumed by this run: the kind, the architecture (or
        space and mode) and the classifier's shape, as a digest."""
        digest = hashlib.sha256(self.identity_key().encode()).hexdigest()[:16]
        return {"tool": self.kind, "what": self.what, "digest": digest}

    def build_model(self) -> nn.Module:
        """What the run trains or searches (the plain model, the supernet), on the CPU; under
        ``torch.device("meta")`` its shapes only. A run builds it once: :meth:`build_model_once`."""
        raise NotImplementedError

    def build_model_once(self) -> nn.Module:
        """:meth:`build_model` as this run's seed draws it, built by the checks before anything is
        written (:func:`~mobile_cv.engine.run_checks.check_buildable`) and handed to :meth:`build`
        here, or built now when nothing was checked.

        The checks run before default_setup seeds, so they seed as it will, build, keep the RNG
        state the build left and restore the one they found; taking the model restores the kept
        state: the weights and everything drawn after them are those of a build made at this point
        (checkpoints as before the model was built once)."""
        if self._built is None:
            return self.build_model()
        model, rng = self._built
        self._built = None
        set_rng_state(rng)
        return model

    def build_checked_model(self) -> nn.Module:
        """Build the model for :meth:`build_model_once` (the checks call it, before default_setup)."""
        found = get_rng_state()
        seed_all(self.cfg.SEED + comm.get_rank())  # as default_setup will seed
        model = self.build_model()
        self._built = (model, get_rng_state())
        set_rng_state(found)
        return model

    def prepare(self, model: nn.Module) -> None:
        """Load and check against the model what the run needs besides its data (a latency table)."""

    def estimate_memory(self, model: nn.Module, shape: Tuple[int, ...]) -> MemoryEstimate:
        """One step's memory, followed on a meta-device twin of ``model`` (no storage)."""
        return estimate_step_memory(meta_twin(model), shape)

    # -- the run ------------------------------------------------------------------------------
    def setup(self, resume: bool = False) -> torch.device:
        """:func:`~mobile_cv.engine.default_setup` for this run; returns this rank's device."""
        self.resume = resume
        self.device = default_setup(self.cfg, resume=resume, run=self)
        return self.device

    def run(self, hooks: Sequence[HookBase] = ()) -> Dict[str, Any]:
        """The epochs (resumed from the checkpoint with ``setup(resume=True)``), then :meth:`finish`.
        ``hooks`` run after the built-in ones."""
        if self.device is None:
            raise RuntimeError(f"{type(self).__name__}.run() before setup(): call run.setup(resume=...) first")
        self.build()
        out = self.cfg.OUTPUT_DIR
        checkpointer = Checkpointer(out, **self.checkpointed())
        extra = checkpointer.resume_or_start(self.resume)
        start_epoch = extra.get("epoch", -1) + 1
        interrupted = builtin.interrupted_record(
            os.path.join(out, "metrics.jsonl"), extra
        )  # before WriteMetrics rewrites
        step = self.build_step()
        trainer = Trainer(
            step,
            self.main_loader,
            epochs=self.epochs,
            desc=self.desc,
            describe_failure=checkpointer.describe_last,
            hooks=[*self.build_hooks(checkpointer, start_epoch), *hooks],
        )
        if interrupted is not None:
            logger.info(
                "epoch %d was checkpointed but its evaluation and metrics were interrupted: completing them",
                start_epoch,
            )
        trainer.train(start_epoch, interrupted)
        return self.finish()

    def start(self, device: torch.device, resume: bool, hooks: Sequence[HookBase] = ()) -> Dict[str, Any]:
        """:meth:`run` after a :func:`~mobile_cv.engine.default_setup` made elsewhere."""
        self.device, self.resume = device, resume
        return self.run(hooks)

    def build(self) -> None:
        """The model(s), loaders, optimizers; sets ``main_loader`` (the epochs' loader)."""
        raise NotImplementedError

    def checkpointed(self) -> Dict[str, Any]:
        """The named states the checkpoint holds (objects with ``state_dict``)."""
        raise NotImplementedError

    def build_step(self):
        raise NotImplementedError

    def build_hooks(self, checkpointer: Checkpointer, start_epoch: int) -> List[Optional[HookBase]]:
        raise NotImplementedError

    def finish(self) -> Dict[str, Any]:
        raise NotImplementedError


class TrainRun(Run):
    """Train MODEL.ARCH from scratch on DATA's train split (tools/train.py); :meth:`finish` saves the
    final weights and evaluates on val and test (eval.json)."""

    kind, arch_key, state = "train", "MODEL.ARCH", "model"
    splits = ("train", "val", "test")
    epochs_key, batch_key = "SOLVER.EPOCHS", "SOLVER.BATCH_SIZE"

    def build_model(self) -> nn.Module:
        return build_model_from_cfg(self.cfg)

    def build(self) -> None:
        cfg, s = self.cfg, self.cfg.SOLVER
        self.model = self.build_model_once().to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.log_memory_format()
        self.loaders = {split: build_loader(cfg, split) for split in self.splits}  # a missing test split fails now
        self.main_loader = self.loaders["train"]
        check_model_fits_data(cfg, self.main_loader.dataset)
        self.flops_m, self.params_m = count_flops_params(self.model, cfg.DATA.INPUT_SIZE)
        logger.info(
            "model %s: %.3f MFLOPs, %.4f M params at %dx%d; %d train / %d val images",
            cfg.MODEL.ARCH,
            self.flops_m,
            self.params_m,
            cfg.DATA.INPUT_SIZE,
            cfg.DATA.INPUT_SIZE,
            len(self.main_loader.dataset),
            len(self.loaders["val"].dataset),
        )
        self.optimizer = build_sgd(self.model, lr=s.BASE_LR, momentum=s.MOMENTUM, weight_decay=s.WEIGHT_DECAY)
        self.scheduler = build_lr_scheduler(
            self.optimizer,
            name=s.LR_SCHEDULER,
            epochs=s.EPOCHS,
            warmup_epochs=s.WARMUP_EPOCHS,
            updates_per_epoch=len(self.main_loader),
        )
        self.ema = build_ema(self.model, s.EMA.DECAY) if s.EMA.ENABLED else None
        self.precision = MixedPrecision(s.AMP, self.device)
        self.eval_model = self.ema.module if self.ema is not None else self.model

    def checkpointed(self) -> Dict[str, Any]:
        # no scheduler: timm's are functions of the update count (see build_lr_scheduler)
        scaler = self.precision if self.precision.scaler else None
        return {"model": self.model, "optimizer": self.optimizer, "ema": self.ema, "precision": scaler}

    def build_step(self):
        s = self.cfg.SOLVER
        step_model = create_ddp_model(self.model, self.device)
        if s.COMPILE:
            step_model = torch.compile(step_model)
        criterion = build_criterion(s.LABEL_SMOOTHING)
        return PlainStep(
            step_model, self.optimizer, criterion, self.device, self.precision, channels_last=self.channels_last
        )

    def build_hooks(self, checkpointer: Checkpointer, start_epoch: int) -> List[Optional[HookBase]]:
        cfg, out, ema = self.cfg, self.cfg.OUTPUT_DIR, self.ema
        return [
            builtin.SetEpoch(self.main_loader),
            builtin.LRSchedule(self.scheduler),
            builtin.EMAUpdate(ema, self.model) if ema is not None else None,
            builtin.SyncBuffers(*([self.model] + ([ema.module] if ema is not None else []))),
            builtin.SaveCheckpoint(checkpointer, run=self.identity()),
            builtin.Evaluate(self.eval_model, self.loaders["val"], self.device, period=cfg.SOLVER.EVAL_PERIOD),
            builtin.WriteMetrics(os.path.join(out, "metrics.jsonl"), start_epoch),
            builtin.WriteTensorBoard(out, start_epoch) if cfg.TENSORBOARD else None,
        ]

    def finish(self) -> Dict[str, Any]:
        from .training import finish_training

        loaders = {split: self.loaders[split] for split in ("val", "test")}
        return finish_training(self.cfg, self.eval_model, self.device, self.flops_m, self.params_m, loaders)


class SearchRun(Run):
    """DMaskingNAS search of SEARCH.SPACE (tools/search.py); :meth:`finish` writes the derived
    architecture (arch_def.json/.py), the plots and search.json."""

    kind, arch_key, state = "search", "SEARCH.SPACE", "supernet"
    splits = ("search_weights", "search_alpha", "val")
    run_files = RUN_FILES + ("arch_def.json", "search.json")
    desc = "search"
    epochs_key, batch_key = "SEARCH.EPOCHS", "SEARCH.BATCH_SIZE"

    def __init__(self, cfg: CfgNode) -> None:
        super().__init__(cfg)
        self.cost_kind = cost_kind(cfg.SEARCH.COST.KIND)  # one instance: a latency table is loaded once
        self.record: Optional[builtin.RecordArchitecture] = None

    @property
    def what(self) -> str:
        return f"SEARCH.SPACE {self.name} (MODE {self.cfg.SEARCH.MODE})"

    @property
    def label(self) -> str:
        return f"search space {self.name}"

    def identity_key(self) -> str:
        return super().identity_key() + self.cfg.SEARCH.MODE

    def build_model(self) -> nn.Module:
        s = self.cfg.SEARCH
        return build_supernet(s.SPACE, self.cfg.MODEL.NUM_CLASSES, s.MODE, self.cfg.MODEL.IN_CHANS)

    def prepare(self, model: nn.Module) -> None:
        self.cost_kind.prepare(self.cfg, model)  # a wrong or broken table fails here, not after the data scan

    def estimate_memory(self, model: nn.Module, shape: Tuple[int, ...]) -> MemoryEstimate:
        s = self.cfg.SEARCH
        model = meta_twin(model)
        mixing = worst_case_mixing(model, s.SAMPLED_CHOICES)
        model.recompute_blocks = s.RECOMPUTE_BLOCKS
        return estimate_step_memory(
            model,
            shape,
            phases=[  # as SearchStep: the weights' pass (mixing as constants), then alpha's
                StepPhase(lambda net, x: net(x, detach_mixing(mixing))),
                StepPhase(  # mixing that depends on alpha: the backward pass to alpha crosses the network
                    lambda net, x: net(x, worst_case_mixing(net, s.SAMPLED_CHOICES, differentiable=True)),
                    inputs=lambda net: net.arch_parameters(),
                    context=frozen_bn_statistics,
                ),
            ],
        )

    def build(self) -> None:
        from .search import check_input_size

        cfg, s = self.cfg, self.cfg.SEARCH
        split = s.WEIGHT_SPLIT
        self.main_loader = build_loader(cfg, "search_weights", batch_size=s.BATCH_SIZE, weight_split=split)
        self.alpha_loader = build_loader(cfg, "search_alpha", batch_size=s.BATCH_SIZE, weight_split=split)
        self.val_loader = build_loader(cfg, "val", batch_size=s.BATCH_SIZE)
        check_model_fits_data(cfg, self.main_loader.dataset)
        net = self.build_model_once()
        self.net = net
        check_input_size(cfg, net)
        net.recompute_blocks = s.RECOMPUTE_BLOCKS
        self.table, self.cost_fn = self.cost_kind.cost_model(cfg, net)
        self.cost_loss, _ = build_cost_loss(cfg, self.table)
        net.to(self.device)
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        self.log_memory_format()
        self.precision = MixedPrecision(s.AMP, self.device)
        logging.getLogger("mobile_cv.search").info(
            "search space %s (%s, sampled choices %s): %d choices, 10^%.1f architectures, %.2f M supernet "
            "weights; %d weight / %d alpha / %d val images",
            s.SPACE,
            s.MODE,
            list(s.SAMPLED_CHOICES),
            len(net.choices),
            net.log10_size(),
            sum(p.numel() for p in net.weight_parameters()) / 1e6,
            len(self.main_loader.dataset),
            len(self.alpha_loader.dataset),
            len(self.val_loader.dataset),
        )
        self.weight_opt, self.alpha_opt, self.scheduler = build_search_optimizers(cfg, net, len(self.main_loader))

    def checkpointed(self) -> Dict[str, Any]:
        return {
            "supernet": self.net,
            "weight_optimizer": self.weight_opt,
            "alpha_optimizer": self.alpha_opt,
            "precision": self.precision if self.precision.scaler else None,
        }

    def build_step(self):
        from .search import compile_supernet

        s, net = self.cfg.SEARCH, self.net
        # DDP reduces the weights' gradients; the alpha step averages alpha's itself (SearchStep.alpha_step).
        # A sampled resolution runs every weight; a sampled block type (or, in conventional mode, width)
        # leaves the unchosen candidates' weights out of the step: DDP must look for them.
        model = create_ddp_model(
            net,
            self.device,
            find_unused_parameters=bool((set(s.SAMPLED_CHOICES) | set(s.WEIGHTS.SAMPLED_CHOICES)) - {"resolution"}),
            ignored_parameters=net.arch_parameter_names(),
        )
        alpha_model = net
        if s.COMPILE:
            # a block type sampled per weight step runs a different network each step, which would
            # be compiled anew each time: only the alpha step (the mixture) is compiled then
            per_step = sorted(set(s.WEIGHTS.SAMPLED_CHOICES) - {"resolution"})
            if per_step:
                logger.info(
                    "SEARCH.COMPILE: the alpha step is compiled; the weight step runs eager (SEARCH.WEIGHTS."
                    "SAMPLED_CHOICES %s samples a different network each step)",
                    list(s.WEIGHTS.SAMPLED_CHOICES),
                )
            model, alpha_model = compile_supernet(model, net, weight_step=not per_step)
        self.step = SearchStep(
            self.cfg,
            net,
            model,
            (self.cost_loss, self.cost_fn),
            (self.weight_opt, self.alpha_opt),
            self.alpha_loader,
            self.precision,
            alpha_model,
        )
        return self.step

    def build_hooks(self, checkpointer: Checkpointer, start_epoch: int) -> List[Optional[HookBase]]:
        cfg, s, net, out = self.cfg, self.cfg.SEARCH, self.net, self.cfg.OUTPUT_DIR

        # the supernet with the deterministic mixing weights of its sampling; kinds the weight step
        # samples (one block type per block) run their most probable option, as the weights were
        # trained one option at a time (their mixture is a network no step trained), with batch
        # statistics (the running ones average the paths drawn)
        eval_hard, single_path = self.step.hard + self.step.weight_only, bool(self.step.weight_only)

        def eval_model() -> nn.Module:
            return FixedMixing(net, net.sample_mixing(noise=False, hard=eval_hard), batch_statistics=single_path)

        self.record = builtin.RecordArchitecture(
            net,
            self.table,
            self.cost_fn,
            (s.COST.TARGET, s.COST.TOLERANCE),
            (cfg.MODEL.NUM_CLASSES, cfg.MODEL.IN_CHANS),
            out,
        )
        return [
            builtin.SetEpoch(self.main_loader, self.alpha_loader),
            builtin.Temperature(net, s.TEMPERATURE.INIT, s.TEMPERATURE.FINAL),
            builtin.LRSchedule(self.scheduler),
            builtin.SyncBuffers(net),
            builtin.SaveCheckpoint(checkpointer, run=self.identity()),
            builtin.Evaluate(eval_model, self.val_loader, self.device, keys=("acc1", "loss")),
            self.record,
            builtin.WriteMetrics(os.path.join(out, "metrics.jsonl"), start_epoch, fmt=search_log_line(s.COST.KIND)),
            builtin.WriteTensorBoard(out, start_epoch, {k: c.options for k, c in net.choices.items()})
            if cfg.TENSORBOARD
            else None,
        ]

    def finish(self) -> Dict[str, Any]:
        from .search import finish_search

        return finish_search(self.cfg, self.net, self.table, self.record.last if self.record else None)


# run kind -> class: which kind wrote a checkpoint (by its states), and the older tool="..." arguments
RUN_KINDS = {cls.kind: cls for cls in (TrainRun, SearchRun)}


def run_kind_of(states: Dict[str, Any]) -> Optional[str]:
    """Which run kind ("train", "search") wrote a checkpoint with these states; None: neither."""
    return next((kind for kind, cls in RUN_KINDS.items() if cls.state in states), None)
