"""One epoch loop for training and search: a pluggable step and hooks around it.

    trainer = Trainer(step, loader, epochs=cfg.SOLVER.EPOCHS, hooks=[...])
    trainer.train(start_epoch)          # before_train, per epoch: before_epoch,
                                        # per batch: before_step, step(batch), after_step;
                                        # after_epoch; after_train

The step (:class:`StepBase`) does the work on one batch: a plain training step, or a
search step that trains the weights and then alpha. Everything around it is a hook
(:class:`HookBase`): learning-rate schedule, EMA, BatchNorm buffer sync, evaluation,
metrics, checkpointing, and for a search the temperature, derivation, arch-def files
and plots. Hooks talk through the trainer: ``trainer.epoch``, ``trainer.iter`` (the
batch index in the epoch), ``trainer.global_step`` and ``trainer.record``, the epoch's
metrics dict that hooks fill and the metrics hook writes.

Every hook lives in :mod:`mobile_cv.engine.hooks`, the steps in :mod:`mobile_cv.engine.steps`;
:func:`mobile_cv.engine.train` and :func:`mobile_cv.engine.run_search` wire them, and take
extra hooks of the caller's (``hooks=``), e.g. a test's fault injection.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence

import torch
from torch import nn

from .. import comm
from ..errors import UserError
from .logger import progress


class NonFiniteLossError(UserError, FloatingPointError):
    """The training loss became NaN or infinite; the run stops before saving anything."""


def check_finite(loss: torch.Tensor, where: str) -> float:
    """The loss averaged over ranks; :class:`NonFiniteLossError` on every rank if any rank's is NaN/inf.

    Args:
        where: for the message, e.g. ``"epoch 3/10, iteration 17"``.
    """
    value = float(comm.all_reduce_mean(loss.detach()))
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"the training loss is {value} at {where}; stopping without saving. "
            f"Lower the learning rate or add warm-up epochs"
        )
    return value


class HookBase:
    """Called by :class:`Trainer` around the loop; override what you need. ``self.trainer`` is set on registration."""

    trainer: "Trainer"

    def before_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def after_train(self) -> None:
        pass


class StepBase:
    """One update on one batch. ``__call__(batch)`` runs it; ``results()`` returns the epoch's
    means (e.g. ``{"train_loss": .., "train_acc1": ..}``) over all ranks and resets them.
    ``self.trainer`` is set by the :class:`Trainer` (``self.trainer.where`` names the step)."""

    trainer: "Trainer"

    def __call__(self, batch: Any) -> None:  # pragma: no cover
        raise NotImplementedError

    def start_epoch(self) -> None:
        """Right before the epoch's first batch is fetched (after the ``before_epoch`` hooks)."""

    def end_epoch(self) -> None:
        """Work after the epoch's batches, before its results are taken (e.g. FBNet's alpha pass)."""

    def results(self) -> Dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def postfix(self) -> Dict[str, str]:
        """What the progress bar shows after each step."""
        return {}


class Trainer:
    """The epoch loop. ``describe_failure`` (e.g. the checkpointer's last good file) is appended
    to a non-finite-loss error, so the message says what is intact and how to resume."""

    def __init__(
        self,
        step: StepBase,
        loader,
        *,
        epochs: int,
        hooks: Sequence[HookBase] = (),
        desc: str = "epoch",
        describe_failure=None,
    ) -> None:
        self.step, self.loader, self.epochs, self.desc = step, loader, epochs, desc
        step.trainer = self
        self.describe_failure = describe_failure
        self.hooks: List[HookBase] = []
        self.register_hooks(hooks)
        self.epoch = self.iter = self.global_step = self.start_epoch = 0
        self.record: Dict[str, Any] = {}

    def register_hooks(self, hooks: Iterable[Optional[HookBase]]) -> None:
        for h in hooks:
            if h is not None:
                h.trainer = self
                self.hooks.append(h)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def train(self, start_epoch: int = 0, interrupted: Optional[Dict[str, Any]] = None) -> None:
        """Epochs ``start_epoch`` .. ``epochs - 1``.

        Args:
            interrupted: the record of epoch ``start_epoch - 1`` as its checkpoint saved it, when the
                run was stopped after that checkpoint but before the epoch's evaluation and metrics:
                the hooks after the checkpoint (evaluation, metrics, ...) run for it first, so a
                resumed run has every epoch's record.
        """
        self.start_epoch = start_epoch
        self._call("before_train")
        if interrupted is not None:
            self.epoch, self.record = int(interrupted["epoch"]), dict(interrupted)
            after = [i for i, h in enumerate(self.hooks) if getattr(h, "saves_checkpoint", False)]
            for h in self.hooks[after[0] + 1 :] if after else ():
                h.after_epoch()
        for epoch in range(start_epoch, self.epochs):
            self.epoch = epoch
            self.record = {"epoch": epoch}
            self._call("before_epoch")
            try:
                self.step.start_epoch()
                self._run_epoch()
                self.step.end_epoch()
            except NonFiniteLossError as e:
                tail = f". {self.describe_failure()}" if self.describe_failure else ""
                raise NonFiniteLossError(f"{e}{tail}") from None
            self.record.update(self.step.results())
            self._call("after_epoch")
        self._call("after_train")

    @property
    def where(self) -> str:
        """The current step, for error messages ("epoch 3/10, iteration 17/62")."""
        return f"{self.desc} {self.epoch + 1}/{self.epochs}, iteration {self.iter + 1}/{self.steps_per_epoch}"

    def _run_epoch(self) -> None:
        bar = progress(self.loader, desc=f"{self.desc} {self.epoch + 1}/{self.epochs}", total=self.steps_per_epoch)
        for i, batch in enumerate(bar):
            self.iter = i
            self.global_step = self.epoch * self.steps_per_epoch + self.iter
            self._call("before_step")
            self.step(batch)
            self._call("after_step")
            bar.set_postfix(**self.step.postfix(), refresh=False)

    def _call(self, method: str) -> None:
        for h in self.hooks:
            getattr(h, method)()


def create_ddp_model(
    model: nn.Module,
    device: torch.device,
    find_unused_parameters: bool = False,
    ignored_parameters: Sequence[str] = (),
) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when more than one process runs, else ``model``.

    Args:
        ignored_parameters: names of parameters DDP neither broadcasts nor reduces (the caller
            reduces their gradients itself, e.g. the supernet's architecture logits).
    """
    if comm.get_world_size() == 1:
        return model
    if ignored_parameters:
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, list(ignored_parameters))
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )
