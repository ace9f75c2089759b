"""Config-free training pieces: optimizer, LR schedule, loss, EMA (timm's), the NaN guard, evaluation.

All metrics are summed over torchrun ranks, so every rank returns the same numbers.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import param_groups_weight_decay
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from tqdm import tqdm

from .. import comm as dist
from ..errors import UserError


class NonFiniteLossError(UserError, FloatingPointError):
    """The training loss became NaN or infinite; the run stops before saving anything."""


def build_sgd(
    model: nn.Module, *, lr: float, momentum: float, weight_decay: float, skip: Iterable[nn.Parameter] = ()
) -> torch.optim.SGD:
    """SGD over ``model``'s parameters, with weight decay on conv/linear weights only (timm's
    param groups: no decay on BatchNorm and biases, the usual recipe for small mobile models).

    Args:
        skip: parameters to leave out, e.g. a supernet's architecture parameters.
    """
    skipped = {id(p) for p in skip}
    groups = []
    for group in param_groups_weight_decay(model, weight_decay):
        params = [p for p in group["params"] if id(p) not in skipped]
        if params:
            groups.append({**group, "params": params})
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    name: str,
    epochs: int,
    warmup_epochs: int,
    updates_per_epoch: int,
):
    """A timm scheduler stepped every optimizer update (``scheduler.step_update(n)``).

    Linear warm-up from 1/100 of each group's lr over ``warmup_epochs``, then ``name``
    ("cosine", "tanh" or "constant") over the remaining epochs down to 0.

    timm schedulers hold no state but their settings: the lr is a function of the update
    count. So checkpoints do not restore them; a resumed run rebuilds the schedule from its
    config (a lower SOLVER.BASE_LR after a NaN takes effect) and continues at the update
    count of the resumed epoch.
    """
    base_lr = optimizer.param_groups[0]["lr"]
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=name,
        num_epochs=epochs,
        warmup_epochs=warmup_epochs,
        warmup_lr=base_lr / 100,
        min_lr=0.0,
        step_on_epochs=False,  # per update: smooth curves even for runs of a few epochs
        updates_per_epoch=updates_per_epoch,
    )
    return scheduler


def build_criterion(label_smoothing: float) -> nn.Module:
    """timm's label-smoothing cross-entropy, or plain cross-entropy for ``label_smoothing == 0``."""
    return LabelSmoothingCrossEntropy(label_smoothing) if label_smoothing > 0 else nn.CrossEntropyLoss()


def build_ema(model: nn.Module, decay: float) -> nn.Module:
    """timm's ModelEmaV3 with its decay warm-up (short runs are not stuck near the init)."""
    return ModelEmaV3(model, decay=decay, use_warmup=True)


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> List[int]:
    """How many rows have the target among the top-k logits, for each k (k capped at the class count)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top.eq(target.view(-1, 1))
    return [int(hit[:, : min(k, kmax)].any(dim=1).sum()) for k in ks]


def check_finite(loss: torch.Tensor, where: str) -> float:
    """The loss averaged over ranks; :class:`NonFiniteLossError` on every rank if any rank's is NaN/inf.

    Args:
        where: for the message, e.g. ``"epoch 3/10, iteration 17"``.
    """
    value = float(dist.all_reduce_mean(loss.detach()))
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"the training loss is {value} at {where}; stopping without saving. "
            f"Lower the learning rate or add warm-up epochs"
        )
    return value


def progress(iterable: Iterable, *, desc: str, total: Optional[int] = None):
    """A tqdm bar on rank 0 (a plain iterator on the other ranks)."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        disable=not dist.is_main_process(),
        dynamic_ncols=True,
        mininterval=0.5,
        leave=True,
    )


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, *, device: torch.device, desc: str = "eval") -> Dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean cross-entropy over the whole split (all ranks' shards)."""
    was_training = model.training
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    sums = torch.zeros(4, dtype=torch.float64)  # loss, top1, top5, images
    for images, target in progress(loader, desc=desc, total=len(loader)):
        images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
        logits = model(images)
        c1, c5 = topk_correct(logits, target, (1, 5))
        sums += torch.tensor([float(loss_fn(logits, target)), c1, c5, target.numel()], dtype=torch.float64)
    model.train(was_training)
    sums = dist.all_reduce_sum(sums)
    n = max(float(sums[3]), 1.0)
    return {
        "loss": float(sums[0]) / n,
        "acc1": 100 * float(sums[1]) / n,
        "acc5": 100 * float(sums[2]) / n,
        "images": int(sums[3]),
    }
