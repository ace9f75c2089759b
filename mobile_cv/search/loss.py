"""Cost-aware search losses (the alpha step's objective).

``cost`` is the differentiable expected cost of the sampled architecture (MFLOPs, M params or ms).

* ``target`` (scale-free): ``L = CE + w * |log(cost / target)|``. The penalty is in units of
  the budget, so a 0.3-MFLOP digit search and a 300-MFLOP ImageNet search see the same
  gradients for the same relative miss; it pulls from both sides (TuNAS's absolute
  reward), so alpha spends the budget where cross-entropy gains most.
* ``relative`` (scale-free, no budget): ``L = CE * (cost / reference) ** beta``; changing the
  cost unit (or ``reference``) rescales the loss but not the direction of its gradient.
* ``fbnet``: ``L = CE * a * log(cost) ** b`` (FBNet's alpha and beta, here ``fbnet_scale`` a=0.2 and
  ``fbnet_exponent`` b=0.6; renamed so "alpha" means only the architecture logits), cost in MFLOPs. Tuned for
  ImageNet-sized costs (log(300) ~ 5.7); below e MFLOPs the log is clamped, so use it at
  paper scale only.
"""

from __future__ import annotations

import torch

from ..errors import InvalidArgumentError


class CostLoss:
    """Combine cross-entropy with a differentiable cost (MFLOPs, M params or ms).

    Args:
        form: "target", "relative" or "fbnet".
        target: the budget (form "target"), or the reference cost (form "relative";
            only scales the loss).
        weight: ``w`` of the target form.
        beta: the exponent of the relative form.
        fbnet_scale, fbnet_exponent: FBNet's a and b (its paper's alpha and beta).
    """

    FORMS = ("target", "relative", "fbnet")

    def __init__(
        self,
        form: str = "target",
        target: float = 0.0,
        weight: float = 1.0,
        beta: float = 0.1,
        fbnet_scale: float = 0.2,
        fbnet_exponent: float = 0.6,
    ) -> None:
        if form not in self.FORMS:
            raise InvalidArgumentError(f"cost loss form must be one of {self.FORMS}, got {form!r}")
        if form in ("target", "relative") and not target > 0:
            raise InvalidArgumentError(f"the {form} form needs a positive target (MFLOPs, M params or ms)")
        self.form, self.target, self.weight, self.beta = form, float(target), weight, beta
        self.fbnet_scale, self.fbnet_exponent = fbnet_scale, fbnet_exponent

    def penalty(self, cost: torch.Tensor) -> torch.Tensor:
        """The cost term alone (for logs): what multiplies or is added to CE."""
        if self.form == "target":
            return self.weight * torch.log(cost / self.target).abs()
        if self.form == "relative":
            return (cost / self.target) ** self.beta
        return self.fbnet_scale * torch.log(cost.clamp_min(1.0 + 1e-6)) ** self.fbnet_exponent

    def __call__(self, ce: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
        if self.form == "target":
            return ce + self.penalty(cost)
        return ce * self.penalty(cost)
