"""Cost-aware search losses.

* ``fbnet``:  ``L = CE * a * log(cost) ** b`` (FBNet; a=0.2, b=0.6), cost in millions.
* ``target``: ``L = CE + w * (cost / target - 1) ** 2``, pulling the expected cost to a
  requested budget ("search a 60 MFLOP model") from both sides.
"""

from __future__ import annotations

import torch


class CostLoss:
    """Combine cross-entropy with a differentiable cost (in millions).

    Args:
        form: "fbnet" or "target".
        alpha, beta: the FBNet form's a and b.
        target: the budget in millions for the target form.
        target_weight: strength of the target term.
    """

    FORMS = ("fbnet", "target")

    def __init__(self, form: str = "fbnet", alpha: float = 0.2, beta: float = 0.6, target: float = 0.0,
                 target_weight: float = 1.0) -> None:
        if form not in self.FORMS:
            raise ValueError(f"cost loss form must be one of {self.FORMS}, got {form!r}")
        if form == "target" and not target > 0:
            raise ValueError("the target form needs a positive target (in millions of FLOPs or params)")
        self.form, self.alpha, self.beta, self.target, self.target_weight = form, alpha, beta, target, target_weight

    def __call__(self, ce: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
        if self.form == "fbnet":
            # log(cost) must stay positive for the power: costs here are > e million
            return ce * self.alpha * torch.log(cost.clamp_min(1.0 + 1e-6)) ** self.beta
        return ce + self.target_weight * (cost / self.target - 1.0) ** 2
