"""Small layers the blocks are made of: conv+BN+activation, squeeze-excite,
channel shuffle, and the channel-rounding rule of the published models.

Attribute names (``conv``, ``bn``, ``se.se.0.conv``...) are part of the published
checkpoint layout; do not rename them.
"""

import math
from typing import Optional

import torch
from torch import nn

from ..errors import InvalidArgumentError

ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "hswish": lambda: nn.Hardswish(),  # x * relu6(x + 3) / 6
    "sigmoid": lambda: nn.Sigmoid(),
    "hsigmoid": lambda: nn.Hardsigmoid(),  # relu6(x + 3) / 6
}


def build_activation(name: Optional[str]) -> Optional[nn.Module]:
    """``None`` -> no activation; otherwise one of :data:`ACTIVATIONS`."""
    if name is None:
        return None
    if name not in ACTIVATIONS:
        raise InvalidArgumentError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def round_channels(num: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` the way the published
    FBNet models were built: nearest multiple, one step up if that lands under 95%
    of ``num``, never below ``divisor``. ``divisor=1`` truncates to an int.
    """
    ret = int(num)
    if divisor > 0 and num % divisor != 0:
        ret = int((_round_half_up(num / divisor) or 1) * divisor)
        if ret < 0.95 * num:
            ret += divisor
    return max(ret, divisor)


class ConvBNAct(nn.Module):
    """Conv2d, optional BatchNorm, optional activation (padding = kernel // 2)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        bn: bool = True,
        act: Optional[str] = "relu",
        zero_gamma: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=bias,
        )
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        if bias:
            nn.init.zeros_(self.conv.bias)
        self.bn = nn.BatchNorm2d(out_channels) if bn else None
        if self.bn is not None and zero_gamma:
            # residual blocks start as identity (helps deep nets train from scratch)
            nn.init.zeros_(self.bn.weight)
        self.act = build_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
        return x


class SqueezeExcite(nn.Module):
    """Global pool -> 1x1 conv (bias) + act -> 1x1 conv (bias) -> gate -> multiply."""

    def __init__(self, channels: int, mid_channels: int, act: str = "relu", gate: str = "hsigmoid") -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.se = nn.Sequential(
            ConvBNAct(channels, mid_channels, 1, bias=True, bn=False, act=act),
            nn.Conv2d(mid_channels, channels, 1, bias=True),
            build_activation(gate),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.se(self.avg_pool(x))

    def masked(self, x: torch.Tensor, mid_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The forward with the bottleneck's channels multiplied by ``mid_mask`` (a searched width)."""
        s = self.se[0](self.avg_pool(x))
        if mid_mask is not None:
            s = s * mid_mask.view(1, -1, 1, 1)
        return x * self.se[2](self.se[1](s))


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle, written with view/transpose so it exports to ONNX."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2)
        return x.reshape(n, c, h, w)
