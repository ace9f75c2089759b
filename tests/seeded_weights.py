"""Deterministic random weights for golden-output tests against the reference implementation.

The same recipe filled a reference (facebookresearch/mobile-vision) model with the
same state-dict keys to make ``tests/data/reference_logits.json`` (see
``tests/data/REFERENCE_LOGITS.md``); filling one of our models and running the
seeded input must reproduce those logits. Conv weights use He scaling so the
input still shapes the logits after 20+ random layers (they reach ~1e4).
"""

from __future__ import annotations

import math
from typing import Dict

import torch


def seeded_state_dict(template: Dict[str, torch.Tensor], seed: int = 0) -> Dict[str, torch.Tensor]:
    """float64 tensors for every key of ``template`` (visited in sorted order)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(template):
        t = template[key]
        shape = tuple(t.shape)
        if not t.is_floating_point():  # num_batches_tracked
            out[key] = t.clone()
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5
        elif key.endswith("running_mean"):
            out[key] = torch.randn(shape, generator=g, dtype=torch.float64) * 0.1
        elif len(shape) > 1:  # conv / linear weight
            fan_in = math.prod(shape[1:])
            out[key] = torch.randn(shape, generator=g, dtype=torch.float64) * math.sqrt(2.0 / fan_in)
        elif key.endswith("bn.weight"):
            out[key] = torch.rand(shape, generator=g, dtype=torch.float64) * 0.5 + 0.75
        else:  # biases (conv and BN)
            out[key] = torch.randn(shape, generator=g, dtype=torch.float64) * 0.1
    return out


def seeded_input(resolution: int, seed: int = 1, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, resolution, resolution, generator=g, dtype=torch.float64)
