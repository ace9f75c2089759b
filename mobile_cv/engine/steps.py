"""The steps the epoch loop (:class:`~mobile_cv.engine.loop.Trainer`) runs on each batch.

* :class:`PlainStep`: SGD on the cross-entropy of one batch (training a plain model);
* :class:`SearchStep`: DMaskingNAS's two phases, a weight step (SGD on cross-entropy) and,
  after the warm-up, an alpha step (Adam on the cost-aware loss).
"""

from __future__ import annotations

import itertools
import time
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import comm
from ..config import CfgNode
from ..search import CostLoss, Supernet
from ..search.choices import Mixing, detach_mixing
from ..search.mixed import frozen_bn_statistics
from .evaluation import topk_correct
from .logger import progress
from .loop import StepBase, check_finite
from .precision import MixedPrecision, resolve_channels_last, to_channels_last


class PlainStep(StepBase):
    """SGD on the cross-entropy of one batch; the epoch's mean loss and top-1 as ``train_*``."""

    def __init__(
        self,
        model: nn.Module,
        optimizer,
        criterion: nn.Module,
        device: torch.device,
        precision: Optional[MixedPrecision] = None,
        channels_last: bool = False,
    ) -> None:
        self.model, self.optimizer, self.criterion, self.device = model, optimizer, criterion, device
        self.precision = precision or MixedPrecision("", device)
        self.channels_last = channels_last
        self.sums = torch.zeros(3, dtype=torch.float64)  # loss, correct, images
        self.steps, self.t0 = 0, time.perf_counter()

    def __call__(self, batch) -> None:
        self.model.train()
        images, target = (t.to(self.device, non_blocking=True) for t in batch)
        if self.channels_last:
            images = to_channels_last(images)
        with self.precision.autocast():
            logits = self.model(images)
        loss = self.criterion(logits.float(), target)  # the loss in float32 whatever the autocast
        value = check_finite(loss, self.trainer.where)
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.backward_step(loss, self.optimizer)
        self.steps += 1
        n = target.numel()
        self.sums += torch.tensor([value * n, topk_correct(logits.detach(), target, (1,))[0], n], dtype=torch.float64)

    def start_epoch(self) -> None:
        self.t0 = time.perf_counter()  # train_time: the epoch's own time (set-up and evaluation excluded)

    def postfix(self) -> Dict[str, str]:
        loss, correct, seen = self.sums.tolist()
        return {
            "loss": f"{loss / max(seen, 1):.4f}",
            "acc": f"{100 * correct / max(seen, 1):.1f}",
            "lr": f"{self.optimizer.param_groups[0]['lr']:.2e}",
        }

    def results(self) -> Dict[str, float]:
        t = comm.all_reduce_sum(self.sums)
        out = {
            "train_loss": float(t[0] / max(t[2], 1)),
            "train_acc1": float(100 * t[1] / max(t[2], 1)),
            "train_lr": self.optimizer.param_groups[0]["lr"],
            "train_steps": self.steps,
            "train_time": time.perf_counter() - self.t0,
        }
        self.sums.zero_()
        self.steps, self.t0 = 0, time.perf_counter()
        return out


class FixedMixing(nn.Module):
    """The supernet with fixed mixing weights, as a plain ``model(x)`` for evaluation.

    ``batch_statistics``: BatchNorm normalises with each batch's statistics in eval mode too (its
    running statistics untouched): after single-path weight steps the running statistics average
    the paths drawn, not the path evaluated (SPOS recalibrates them for the same reason).
    """

    def __init__(self, net: nn.Module, mixing: Mixing, batch_statistics: bool = False) -> None:
        super().__init__()
        self.net, self.mixing, self.batch_statistics = net, mixing, batch_statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.batch_statistics or self.training:
            return self.net(x, self.mixing)
        bns = [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for m in bns:
            m.train()
        try:
            with frozen_bn_statistics(self.net):
                return self.net(x, self.mixing)
        finally:
            for m in bns:
                m.eval()


def _cycle(loader) -> Iterator:
    """Batches of ``loader`` over and over (in the same order: the order is f(seed, epoch))."""
    return itertools.chain.from_iterable(itertools.repeat(loader))


class SearchStep(StepBase):
    """A weight step (SGD on cross-entropy) and, after the warm-up, alpha steps (Adam on the
    cost-aware loss), as ``ALPHA.SCHEDULE`` places them: one after every weight step
    ("interleaved", the alpha split cycled as often as needed), one pass of the alpha split per
    epoch spread evenly between the weight steps ("spread"), or that pass after the epoch's weight
    steps ("epoch", FBNet's alternation).

    Both draw fresh Gumbel mixing weights (hard samples for the kinds in ``SAMPLED_CHOICES``);
    every optimizer's gradients are cleared before each backward pass.

    Args:
        model: the weight step's network: ``net`` or its DistributedDataParallel wrapper (compiled
            or not).
        alpha_model: the alpha step's network: ``net`` (default) or its compiled form; never
            DDP-wrapped (alpha's gradients are averaged by the step itself).
        cost: ``(cost loss, cost_fn)``: the alpha step's loss, and mixing weights -> the
            differentiable expected cost (MFLOPs, M params or ms).
        optimizers: ``(weight optimizer, alpha optimizer)``.
    """

    def __init__(
        self,
        cfg: CfgNode,
        net: Supernet,
        model: nn.Module,
        cost: Tuple[CostLoss, Callable[[Mixing], torch.Tensor]],
        optimizers: Sequence[torch.optim.Optimizer],
        alpha_loader,
        precision: Optional[MixedPrecision] = None,
        alpha_model: Optional[nn.Module] = None,
    ) -> None:
        s = cfg.SEARCH
        self.net, self.model, self.alpha_loader = net, model, alpha_loader
        self.alpha_model = alpha_model if alpha_model is not None else net
        self.cost_loss, self.cost_fn = cost
        self.weight_opt, self.alpha_opt = optimizers
        self.kind, self.hard, self.warmup = s.COST.KIND, tuple(s.SAMPLED_CHOICES), s.WARMUP_EPOCHS
        # kinds only the weight step samples (one option at a time: a single-path weight step)
        self.weight_only = tuple(k for k in s.WEIGHTS.SAMPLED_CHOICES if k not in self.hard)
        uniform = s.WEIGHTS.SAMPLING == "uniform"
        # the weight step's sample: (hard kinds, uniformly drawn kinds)
        self.weight_sampling = (self.hard, self.weight_only) if uniform else (self.hard + self.weight_only, ())
        self.schedule = s.ALPHA.SCHEDULE
        self.device = next(net.parameters()).device
        self.precision = precision or MixedPrecision(s.AMP, self.device)
        self.channels_last = resolve_channels_last(s.CHANNELS_LAST, self.device, "search")
        self.ce = nn.CrossEntropyLoss()
        # loss, ce, cost, correct, images per phase
        self.sums = {"weights": torch.zeros(5, dtype=torch.float64), "alpha": torch.zeros(5, dtype=torch.float64)}
        self.t0 = time.perf_counter()
        self._alpha_batches, self._alpha_epoch = None, -1

    def start_epoch(self) -> None:
        self.t0 = time.perf_counter()  # the epoch's time: set-up and evaluation excluded

    @property
    def trains_alpha(self) -> bool:
        return self.trainer.epoch >= self.warmup

    def alpha_steps_after(self, i: int, steps: int) -> int:
        """How many alpha steps follow weight step ``i`` (0-based) of an epoch of ``steps``."""
        if self.schedule == "interleaved":
            return 1
        if self.schedule == "spread":
            # step i ends the i+1-th of `steps` equal slices of the epoch: the alpha batches due by
            # then, so the epoch's n alpha steps are one pass, evenly placed (the last after step
            # `steps` - 1)
            n = len(self.alpha_loader)
            return (i + 1) * n // steps - i * n // steps
        return 0  # "epoch": the pass runs in end_epoch

    def __call__(self, batch) -> None:
        self.weight_step(*batch)
        if not self.trains_alpha:
            return
        for _ in range(self.alpha_steps_after(self.trainer.iter, self.trainer.steps_per_epoch)):
            if self._alpha_epoch != self.trainer.epoch:  # the alpha split's order of this epoch
                self._alpha_batches, self._alpha_epoch = _cycle(self.alpha_loader), self.trainer.epoch
            self.alpha_step(*next(self._alpha_batches), self.trainer.where)

    def end_epoch(self) -> None:
        if self.trains_alpha and self.schedule == "epoch":
            n = len(self.alpha_loader)
            for i, batch in enumerate(progress(self.alpha_loader, desc="alpha", total=n)):
                self.alpha_step(*batch, f"{self.trainer.desc} {self.trainer.epoch + 1}, alpha iteration {i + 1}/{n}")

    # forward_pass and backward_pass are the step's seams: a subclass overrides one to change or
    # time it (benchmarks/search_cost.py, benchmarks/search_profile.py) without copying the steps.
    def forward_pass(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, mixing_grad: bool):
        """``(logits, y, mixing)`` of ``model`` on a batch, with a fresh Gumbel sample of the
        mixing; ``mixing_grad`` False (the weight step) makes the mixing a constant and also samples
        the kinds in ``WEIGHTS.SAMPLED_CHOICES``."""
        self.net.train()
        x, y = x.to(self.device), y.to(self.device)
        if self.channels_last:
            x = to_channels_last(x)
        # in float32: alpha's softmax is not autocast
        hard, uniform = (self.hard, ()) if mixing_grad else self.weight_sampling
        g = self.net.sample_mixing(hard=hard, uniform=uniform)
        if not mixing_grad:
            # the mixing weights enter as constants: autograd then skips every gradient towards
            # alpha (each mask's and each mixture's), which the weight step would throw away
            g = detach_mixing(g)
        with self.precision.autocast():
            logits = model(x, g)
        return logits.float(), y, g

    def backward_pass(self, loss: torch.Tensor, optimizer, where: str, inputs=None, before_step=None) -> float:
        """Backward (to ``inputs`` only, when given) and ``optimizer``'s step; returns the loss.
        A non-finite loss raises, naming ``where``."""
        value = check_finite(loss, where)
        self.weight_opt.zero_grad(set_to_none=True)
        self.alpha_opt.zero_grad(set_to_none=True)
        self.precision.backward_step(loss, optimizer, inputs=inputs, before_step=before_step)
        return value

    def _record(self, phase: str, value: float, ce: float, cost: float, logits, y) -> None:
        n = y.numel()
        correct = topk_correct(logits.detach(), y, (1,))[0]
        self.sums[phase] += torch.tensor([value * n, ce * n, cost * n, correct, n], dtype=torch.float64)

    def weight_step(self, x, y) -> None:
        """SGD on the supernet weights: cross-entropy of the sampled mixture."""
        logits, y, _ = self.forward_pass(self.model, x, y, mixing_grad=False)
        value = self.backward_pass(self.ce(logits, y), self.weight_opt, f"{self.trainer.where} (weights)")
        self._record("weights", value, value, 0.0, logits, y)

    def alpha_step(self, x, y, where: str) -> None:
        """Adam on the architecture logits: the cost-aware loss of the sampled mixture.

        The backward pass computes alpha's gradients only (not the weights', which this step does
        not use: about a third less work), so it runs on the unwrapped supernet and alpha's
        gradients are averaged over ranks here, in one all-reduce, instead of by DDP.
        """
        alphas = self.net.arch_parameters()
        with frozen_bn_statistics(self.net):
            logits, y, g = self.forward_pass(self.alpha_model, x, y, mixing_grad=True)
            ce = self.ce(logits, y)
            cost = self.cost_fn(g)  # the sampled architecture's expected cost
            value = self.backward_pass(
                self.cost_loss(ce, cost),
                self.alpha_opt,
                f"{where} (alpha)",
                inputs=alphas,
                before_step=lambda: comm.all_reduce_grads_mean(alphas),
            )
        self._record("alpha", value, float(ce.detach()), float(cost.detach()), logits, y)

    def postfix(self) -> Dict[str, str]:
        w = self.sums["weights"]
        return {
            "loss": f"{w[0] / max(w[4], 1):.3f}",
            "acc": f"{100 * w[3] / max(w[4], 1):.1f}",
            "T": f"{self.net.temperature:.2f}",
        }

    def results(self) -> Dict[str, float]:
        """Means over all ranks since the last call, as ``weights_*`` and ``alpha_*`` keys, and ``time``."""
        out: Dict[str, float] = {}
        for phase, sums in self.sums.items():
            t = comm.all_reduce_sum(sums)
            if float(t[4]) == 0:
                continue
            n = float(t[4])
            out.update({f"{phase}_loss": float(t[0]) / n, f"{phase}_acc1": 100 * float(t[3]) / n})
            if phase == "alpha":
                out.update({"alpha_ce": float(t[1]) / n, f"alpha_sampled_{self.kind}": float(t[2]) / n})
            sums.zero_()
        out["time"] = time.perf_counter() - self.t0
        self.t0 = time.perf_counter()
        return out
