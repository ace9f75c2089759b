"""Every hook of the epoch loop (see :mod:`mobile_cv.engine.loop`): training's and the search's.

Order matters within a phase; the tools register them as: set the loaders' epoch, (search:
the temperature), learning-rate schedule, EMA, then after each epoch: sync BatchNorm buffers,
save the checkpoint (first, so a failing evaluation loses nothing), evaluate, (search: record
the architecture it would return now), write metrics.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from .. import comm
from ..arch.arch_def import to_jsonable
from ..atomic_files import atomic_write_text
from ..data import set_epoch
from ..extras import require
from ..search import Supernet
from ..search.budget import BudgetTable, select_architecture
from ..search.choices import Mixing
from .checkpoint import Checkpointer
from .evaluation import evaluate
from .logger import MetricsWriter, read_metrics
from .loop import HookBase
from .report import compact_arch, count_arch

logger = logging.getLogger("mobile_cv.engine")


class SetEpoch(HookBase):
    """Before each epoch: the loaders' order (and worker seeds) become a function of (seed, epoch)."""

    def __init__(self, *loaders) -> None:
        self.loaders = loaders

    def before_epoch(self) -> None:
        for loader in self.loaders:
            set_epoch(loader, self.trainer.epoch)


class LRSchedule(HookBase):
    """A timm scheduler stepped on the update count: at each epoch start and after each update.

    timm schedulers are pure functions of the count, so a resumed run continues exactly
    (and a changed config takes effect) without restoring scheduler state.
    """

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler

    def before_epoch(self) -> None:
        self.scheduler.step_update(self.trainer.epoch * self.trainer.steps_per_epoch)

    def after_step(self) -> None:
        self.scheduler.step_update(self.trainer.global_step + 1)


class EMAUpdate(HookBase):
    """After each update: the exponential moving average of ``model``'s weights (timm ModelEmaV3)."""

    def __init__(self, ema, model: nn.Module) -> None:
        self.ema, self.model = ema, model

    def after_step(self) -> None:
        self.ema.update(self.model, step=self.trainer.global_step + 1)


class SyncBuffers(HookBase):
    """After each epoch: every rank takes rank 0's BatchNorm statistics (each saw only its shard)."""

    def __init__(self, *modules: nn.Module) -> None:
        self.modules = modules

    def after_epoch(self) -> None:
        for m in self.modules:
            comm.sync_buffers(m)


class Evaluate(HookBase):
    """After every ``period``-th epoch and the last: top-1/top-5 and loss on ``loader`` as ``val_*``.

    Args:
        model: the module to evaluate, or a function returning it (evaluated then).
        period: epochs between evaluations (0: the last epoch only).
    """

    def __init__(self, model, loader, device, period: int = 1, keys=("acc1", "acc5", "loss")) -> None:
        self.model, self.loader, self.device, self.period, self.keys = model, loader, device, period, keys

    def after_epoch(self) -> None:
        t = self.trainer
        if not (t.epoch == t.epochs - 1 or (self.period and (t.epoch + 1) % self.period == 0)):
            return
        model = self.model() if callable(self.model) and not isinstance(self.model, nn.Module) else self.model
        val = evaluate(model, self.loader, device=self.device, desc="val")
        t.record.update({f"val_{k}": val[k] for k in self.keys})


class WriteMetrics(HookBase):
    """After each epoch: one log line and one metrics.jsonl record (rank 0).

    Args:
        fmt: ``record -> str`` for the log line (default: every number in the record).
    """

    def __init__(self, path: str, start_epoch: int, fmt: Optional[Callable[[Dict[str, Any]], str]] = None) -> None:
        self.writer = MetricsWriter(path, start_epoch)
        self.fmt = fmt

    def after_epoch(self) -> None:
        t = self.trainer
        r = t.record
        line = (
            self.fmt(r)
            if self.fmt
            else "  ".join(f"{k} {v:.4g}" for k, v in r.items() if k != "epoch" and isinstance(v, (int, float)))
        )
        logger.info("epoch %d/%d  %s", t.epoch + 1, t.epochs, line)
        self.writer.write(r)


class WriteTensorBoard(HookBase):
    """After each epoch (rank 0): the epoch's record as TensorBoard scalars, in event files in ``log_dir``.

    Every number of the record under its metrics.jsonl name (``weights_loss``, ``val_acc1``,
    ``train_lr``, ``temperature``, ``expected_flops``, ``derived_flops_m``, ...), each choice's
    probabilities as ``probs/<choice>/<option>`` and the derived architecture as text. A resumed run
    drops events after its start epoch (``purge_step``), so curves never double back.

    Args:
        options: choice label -> its options' printable values (names the ``<option>`` tags).
    """

    def __init__(self, log_dir: str, start_epoch: int, options: Optional[Dict[str, tuple]] = None) -> None:
        require("tensorboard", "TENSORBOARD True")
        from torch.utils.tensorboard import SummaryWriter  # deferred: optional, and slow to import

        self.options = options or {}
        self.writer = SummaryWriter(log_dir, purge_step=start_epoch) if comm.is_main_process() else None

    def after_epoch(self) -> None:
        if self.writer is None:
            return
        r, step = self.trainer.record, self.trainer.epoch
        for key, value in r.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self.writer.add_scalar(key, value, step)
        for label, probs in r.get("probs", {}).items():
            names = self.options.get(label) or range(len(probs))
            for name, p in zip(names, probs):
                self.writer.add_scalar(f"probs/{label}/{name}", p, step)
        if "derived_arch" in r:
            self.writer.add_text("derived_arch", "  \n".join(r["derived_arch"]), step)
        self.writer.flush()

    def after_train(self) -> None:
        if self.writer is not None:
            self.writer.close()


class SaveCheckpoint(HookBase):
    """After each epoch: everything needed to resume, written atomically (collective: every rank
    calls it). Registered before evaluation, so a failed evaluation never loses the epoch.

    Args:
        **extra: saved with every checkpoint (e.g. ``run``: what a resume must match).
    """

    saves_checkpoint = True  # the hooks after this one are replayed for an epoch interrupted after it

    def __init__(self, checkpointer: Checkpointer, **extra: Any) -> None:
        self.checkpointer, self.extra = checkpointer, extra

    def after_epoch(self) -> None:
        # the epoch's record so far (training numbers): a run stopped during the evaluation that
        # follows completes the epoch's record when resumed (Trainer.train(interrupted=...))
        record = {k: v for k, v in self.trainer.record.items() if v is None or isinstance(v, (bool, int, float, str))}
        self.checkpointer.save(epoch=self.trainer.epoch, record=record, **self.extra)


def interrupted_record(metrics_path: str, extra: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The checkpointed record of the last epoch when ``metrics_path`` lacks it (the run stopped
    between the checkpoint and the metrics line), else None; the same on every rank (rank 0's view)."""
    record = extra.get("record") if isinstance(extra, dict) else None
    missing = None
    if comm.is_main_process() and isinstance(record, dict) and record.get("epoch") == extra.get("epoch"):
        written = {r.get("epoch") for r in read_metrics(metrics_path)}
        missing = record if record["epoch"] not in written else None
    return comm.broadcast_object(missing)


def temperature_at(init: float, final: float, progress: float) -> float:
    """``T = INIT * (FINAL / INIT) ** progress``; ``progress`` = epochs done / search epochs.

    FBNet's schedule (5.0, times 0.956 every epoch for 90 epochs) is INIT 5.0, FINAL
    5.0 * 0.956 ** 90 = 0.0871: then T = 5.0 * 0.956 ** epoch at the start of every epoch.
    """
    return init * (final / init) ** min(max(progress, 0.0), 1.0)


class Temperature(HookBase):
    """Before each step: the Gumbel temperature of the run's progress (:func:`temperature_at`)."""

    def __init__(self, net: Supernet, init: float, final: float) -> None:
        self.net, self.init, self.final = net, init, final

    def before_train(self) -> None:
        """A resumed search starts where it stopped: at the temperature of the last step done (what
        the evaluation of an interrupted epoch, replayed first, must see)."""
        t = self.trainer
        if t.start_epoch > 0:
            self._set(t.start_epoch - 1, t.steps_per_epoch - 1)

    def before_step(self) -> None:
        self._set(self.trainer.epoch, self.trainer.iter)

    def _set(self, epoch: int, it: int) -> None:
        t = self.trainer
        self.net.set_temperature(temperature_at(self.init, self.final, (epoch + it / t.steps_per_epoch) / t.epochs))


class RecordArchitecture(HookBase):
    """After each epoch: the architecture the search would return now (the budgeted search's pick,
    :func:`~mobile_cv.search.budget.select_architecture`), its exact cost and the learned
    distribution into the record; ``arch_def.json`` rewritten.

    Args:
        cost_fn: mixing weights -> expected cost (the alpha step's), for ``expected_<kind>``.
        output_dir: where ``arch_def.json`` goes.
    """

    def __init__(
        self,
        net: Supernet,
        table: BudgetTable,
        cost_fn: Callable[[Mixing], torch.Tensor],
        budget: "tuple[float, float]",
        model_io: "tuple[int, int]",
        output_dir: str,
    ) -> None:
        self.net, self.table, self.cost_fn, self.output_dir = net, table, cost_fn, output_dir
        (self.target, self.tolerance), (self.num_classes, self.in_chans) = budget, model_io
        self.last: Optional[tuple] = None  # (index, info, arch, flops, params) of the last epoch: finish reuses it

    def after_epoch(self) -> None:
        kind = self.table.kind
        with torch.no_grad():
            expected = float(self.cost_fn(self.net.sample_mixing(noise=False)))
        index, info = select_architecture(self.net, self.table, self.target, self.tolerance)
        arch = self.net.derive_arch(self.net.one_hot(index))
        flops, params = count_arch(arch, self.num_classes, self.in_chans)
        self.last = (index, info, arch, flops, params)
        ck = self.table.cost_kind  # a counted kind's cost is the derived model's count, printed already
        own = {} if ck.counted else {ck.derived_key: self.table.exact(index)}
        self.trainer.record.update(
            {
                "temperature": self.net.temperature,
                f"expected_{kind}": expected,
                "derived_flops_m": flops,
                "derived_params_m": params,
                **own,
                "derived_input_size": arch["input_size"],
                "derived_arch": compact_arch(arch),
                **info,
                "probs": {label: [round(v, 5) for v in p.tolist()] for label, p in self.net.probabilities().items()},
            }
        )
        if comm.is_main_process():
            path = os.path.join(self.output_dir, "arch_def.json")
            atomic_write_text(path, json.dumps(to_jsonable(arch), indent=1) + "\n")
