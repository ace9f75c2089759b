"""Accuracy of a model on a split: top-k counts and the evaluation pass (summed over torchrun ranks,
so every rank returns the same numbers)."""

from __future__ import annotations

from typing import Dict, Iterable, List, Sequence

import torch
from torch import nn

from .. import comm
from .logger import progress


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> List[int]:
    """How many rows have the target among the top-k logits, for each k (k capped at the class count)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top.eq(target.view(-1, 1))
    return [int(hit[:, : min(k, kmax)].any(dim=1).sum()) for k in ks]


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
    sums = comm.all_reduce_sum(sums)
    n = max(float(sums[3]), 1.0)
    return {
        "loss": float(sums[0]) / n,
        "acc1": 100 * float(sums[1]) / n,
        "acc5": 100 * float(sums[2]) / n,
        "images": int(sums[3]),
    }
