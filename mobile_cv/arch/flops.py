"""FLOPs and parameter counts in the published FBNet convention.

* FLOPs: multiply-accumulates of Conv2d and Linear layers for one image, plus one
  operation per input element of each global average pool (AdaptiveAvgPool2d: the
  SE pools, the pool of ``ir_pool`` and the head's). The published counter counts
  those pools; without them every FBNetV2 model comes out ~0.3% under the table.
* params: Conv2d and Linear weights only (no biases, no BatchNorm).

With this convention the arch defs of the released models give the numbers of the
public model table exactly (see ``tests/arch/test_published.py``).
"""

from __future__ import annotations

import numbers
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import InvalidArgumentError


def _hw(input_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(input_size, numbers.Integral):
        h, w = input_size, input_size
    elif isinstance(input_size, (list, tuple)) and len(input_size) == 2:
        h, w = input_size
    else:
        h = w = None  # refused below
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in (h, w)):
        raise InvalidArgumentError(f"input_size must be a positive int or (h, w) of them, got {input_size!r}")
    return int(h), int(w)


def _in_chans(model: nn.Module) -> int:
    if hasattr(model, "in_chans"):
        return int(model.in_chans)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise InvalidArgumentError("cannot tell the model's input channels; pass in_chans=")


@torch.no_grad()
def count_flops_params(
    model: nn.Module, input_size: Union[int, Sequence[int]], in_chans: Optional[int] = None
) -> Tuple[float, float]:
    """``(flops_m, params_m)``: millions of MACs for one image and millions of weights.

    Runs one forward pass on a zero image of ``input_size`` (an int or ``(h, w)``) in
    eval mode; the model's train/eval mode is restored afterwards.
    """
    h, w = _hw(input_size)
    c = in_chans if in_chans is not None else _in_chans(model)
    macs = [0]

    def conv_hook(m: nn.Conv2d, inp, out) -> None:
        kh, kw = m.kernel_size
        macs[0] += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, inp, out) -> None:
        macs[0] += out[0].numel() * m.in_features

    def pool_hook(m: nn.AdaptiveAvgPool2d, inp, out) -> None:
        macs[0] += inp[0][0].numel()

    handles = []
    params = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
            params += m.weight.numel()
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
            params += m.weight.numel()
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            handles.append(m.register_forward_hook(pool_hook))
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        model(torch.zeros(1, c, h, w, device=device))
    finally:
        model.train(was_training)
        for hd in handles:
            hd.remove()
    return macs[0] / 1e6, params / 1e6
