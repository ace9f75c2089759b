"""Builders of what a training run and a search are made of, as public functions.

Training (explicit arguments, no config): :func:`build_sgd`, :func:`build_lr_scheduler`,
:func:`build_criterion`, :func:`build_ema`. Search (from the SEARCH config section):
:func:`build_search_optimizers` (SGD + schedule for the weights, Adam for alpha) and
:func:`build_cost_loss` (the alpha step's cost-aware loss, with the budget checked).
"""

from __future__ import annotations

import logging
import math
from typing import Iterable, Tuple

import torch
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import param_groups_weight_decay
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn

from ..config import CfgNode, ConfigError, check_value
from ..search import CostLoss, Supernet
from ..search.budget import BudgetError, BudgetTable, log_probs

logger = logging.getLogger("mobile_cv.search")


def build_sgd(
    model: nn.Module,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    skip: Iterable[nn.Parameter] = (),
    keys: str = "SOLVER",
) -> torch.optim.SGD:
    """SGD over ``model``'s parameters, with weight decay on conv/linear weights only (timm's
    param groups: no decay on BatchNorm and biases, the usual recipe for small mobile models).

    Args:
        skip: parameters to leave out, e.g. a supernet's architecture parameters.
        keys: the config group the values come from, named if torch refuses one.
    """
    check_value(f"{keys}.{'BASE_LR' if keys == 'SOLVER' else 'LR'}", lr)
    check_value(f"{keys}.MOMENTUM", momentum)
    check_value(f"{keys}.WEIGHT_DECAY", weight_decay)
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


def build_search_optimizers(cfg: CfgNode, net: Supernet, steps_per_epoch: int):
    """``(weight optimizer, alpha optimizer, weight LR schedule)`` of a search, from ``cfg.SEARCH``:
    SGD with the cosine (or other) schedule over SEARCH.EPOCHS for the supernet weights, Adam at a
    constant rate for the architecture logits."""
    s = cfg.SEARCH
    weight_opt = build_sgd(
        net,
        lr=s.WEIGHTS.LR,
        momentum=s.WEIGHTS.MOMENTUM,
        weight_decay=s.WEIGHTS.WEIGHT_DECAY,
        skip=net.arch_parameters(),
        keys="SEARCH.WEIGHTS",
    )
    check_value("SEARCH.ALPHA.LR", s.ALPHA.LR)
    check_value("SEARCH.ALPHA.WEIGHT_DECAY", s.ALPHA.WEIGHT_DECAY)
    # beta1 0.5 (DARTS' choice for architecture parameters): less momentum, alpha follows the
    # current supernet rather than its past
    alpha_opt = torch.optim.Adam(
        net.arch_parameters(), lr=s.ALPHA.LR, betas=(0.5, 0.999), weight_decay=s.ALPHA.WEIGHT_DECAY
    )
    scheduler = build_lr_scheduler(
        weight_opt, name=s.WEIGHTS.LR_SCHEDULER, epochs=s.EPOCHS, warmup_epochs=0, updates_per_epoch=steps_per_epoch
    )
    return weight_opt, alpha_opt, scheduler


def build_cost_loss(cfg: CfgNode, table: BudgetTable) -> Tuple[CostLoss, Tuple[float, float]]:
    """The alpha step's loss of SEARCH.COST and the space's exact cost range; a budget no
    architecture meets is refused here, before the search starts."""
    c = cfg.SEARCH.COST
    lo, hi = table.extremes()
    logger.info("%s: the space's architectures cost %.4g-%.4g %s", cfg.SEARCH.SPACE, lo, hi, table.unit)
    if c.FORM == "target" and not c.TARGET > 0:
        raise ConfigError(f"SEARCH.COST.FORM is 'target' but SEARCH.COST.TARGET is 0; set the budget in {table.unit}")
    if c.TARGET > 0:  # whether any architecture meets the budget does not depend on alpha: check it now
        try:
            table.most_probable_within(c.TARGET, c.TOLERANCE, log_probs(table.net))
        except BudgetError as e:
            raise ConfigError(f"SEARCH.COST.TARGET {c.TARGET:g} with TOLERANCE {c.TOLERANCE:g}: {e}") from None
    if c.FORM == "target":
        return CostLoss(c.FORM, target=c.TARGET, weight=c.TARGET_WEIGHT), (lo, hi)
    if c.FORM == "relative":
        return CostLoss("relative", target=math.sqrt(lo * hi), beta=c.EXPONENT), (lo, hi)
    if hi <= 1.0:  # log(cost) clamped at 1 for every architecture: no gradient at all
        raise ConfigError(
            f"SEARCH.COST.FORM fbnet takes log(cost), but every architecture of {cfg.SEARCH.SPACE} costs at most "
            f"{hi:.4g} {table.unit} (<= 1), where the log is clamped; use FORM target or relative"
        )
    return CostLoss("fbnet", fbnet_scale=c.FBNET_SCALE, fbnet_exponent=c.FBNET_EXPONENT), (lo, hi)
