"""Cost-aware search losses (the alpha step's objective).

``cost`` is the differentiable effective cost of the sampled architecture, in millions.

* ``target`` (scale-free): ``L = CE + w * |log(cost / target)|``. The penalty is in units of
  the budget, so a 0.3-MFLOP digit search and a 300-MFLOP ImageNet search see the same
  gradients for the same relative miss; it pulls from both sides (TuNAS's absolute
  reward), so alpha spends the budget where cross-entropy gains most.
* ``relative`` (scale-free, no budget): ``L = CE * (cost / reference) ** beta``; changing the
  cost unit (or ``reference``) rescales the loss but not the direction of its gradient.
* ``fbnet``: ``L = CE * a * log(cost) ** b`` (FBNet; a=0.2, b=0.6), cost in MFLOPs. Tuned for
  ImageNet-sized costs (log(300) ~ 5.7); below e MFLOPs the log is clamped, so use it at
  paper scale only.
"""

from __future__ import annotations

import torch


class CostLoss:
    """Combine cross-entropy with a differentiable cost (in millions).

    Args:
        form: "target", "relative" or "fbnet".
        target: the budget (form "target"), or the reference cost (form "relative";
            only scales the loss).
        weight: ``w`` of the target form.
        beta: the exponent of the relative form.
        alpha, fbnet_beta: FBNet's a and b.
    """

    FORMS = ("target", "relative", "fbnet")

    def __init__(
        self,
        form: str = "target",
        target: float = 0.0,
        weight: float = 1.0,
        beta: float = 0.1,
        alpha: float = 0.2,
        fbnet_beta: float = 0.6,
    ) -> None:
        if form not in self.FORMS:
            raise ValueError(f"cost loss form must be one of {self.FORMS}, got {form!r}")
        if form in ("target", "relative") and not target > 0:
            raise ValueError(f"the {form} form needs a positive target (in millions of FLOPs or params)")
        self.form, self.target, self.weight, self.beta = form, float(target), weight, beta
        self.alpha, self.fbnet_beta = alpha, fbnet_beta

    def penalty(self, cost: torch.Tensor) -> torch.Tensor:
        """The cost term alone (for logs): what multiplies or is added to CE."""
        if self.form == "target":
            return self.weight * torch.log(cost / self.target).abs()
        if self.form == "relative":
            return (cost / self.target) ** self.beta
        return self.alpha * torch.log(cost.clamp_min(1.0 + 1e-6)) ** self.fbnet_beta

    def __call__(self, ce: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
        if self.form == "target":
            return ce + self.penalty(cost)
        return ce * self.penalty(cost)
