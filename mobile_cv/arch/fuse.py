"""BatchNorm folding for inference: conv + BN -> one conv with bias.

    folded = mobile_cv.fuse_for_inference(model)   # an eval-mode copy; ``model`` is untouched

Every :class:`~mobile_cv.arch.layers.ConvBNAct` (and subclass that keeps its forward: conv,
then BN, then activation) gets ``conv`` replaced by a conv with the BN folded into its
weight and bias (``W' = W * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta``)
and ``bn`` replaced by :class:`torch.nn.Identity`. The module tree keeps its names, so the
result scripts, traces and exports like the original; in eval mode its outputs equal the
original's up to float rounding (checked to 1e-5 on every registered model in the tests).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .layers import ConvBNAct


def _foldable(module: nn.Module) -> bool:
    return (
        isinstance(module, ConvBNAct)
        and type(module).forward is ConvBNAct.forward  # conv feeds bn directly, nothing in between
        and isinstance(module.conv, nn.Conv2d)
        and isinstance(module.bn, nn.BatchNorm2d)
        and module.bn.track_running_stats
        and module.bn.running_mean is not None
    )


@torch.no_grad()
def fuse_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy of ``model`` with every conv+BN of its ConvBNAct layers folded.

    Folding uses the BN running statistics, so the copy is for inference only (training it
    would no longer normalise by batch statistics). Returns the copy; ``model`` is unchanged.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if _foldable(module):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
    return fused


def count_batchnorms(model: nn.Module) -> int:
    """How many BatchNorm layers ``model`` still holds (0 after folding a plain FBNet)."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


__all__ = ["count_batchnorms", "fuse_for_inference"]
