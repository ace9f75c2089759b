"""The four block classes every registered plain op maps to.

* :class:`ConvBlock`      conv_k1, conv_k3, conv_k3_hs, ...
* :class:`IRBlock`        ir_k3, ir_k5_sehsig_hs, ir_k3_g2, ... (inverted residual)
* :class:`IRPoolBlock`    ir_pool, ir_pool_hs (the FBNetV2 last stage)
* :class:`SkipBlock`      skip (identity, or 1x1 conv+BN+ReLU when the shape changes)

The op names fix some constructor arguments (kernel, activation, SE gate; see
:mod:`mobile_cv.arch.ops`); arch-def rows supply the rest as keyword arguments. The
constructors take explicit keyword arguments only, so an unknown kwarg in an arch
def is an error, never silently dropped.

Semantics match the reference FBNet implementation (and so its checkpoints):
hidden width of an inverted residual = round_channels(in * expansion), no 1x1
expansion conv when that equals the input width, SE hidden width =
round_channels(int(hidden / 4)), residual add when the shape is unchanged.
"""

from typing import Optional

import torch
from torch import nn

from .arch_def import ArchDefError
from .layers import ChannelShuffle, ConvBNAct, SqueezeExcite, build_activation, round_channels


class ConvBlock(ConvBNAct):
    """k x k conv (with bias, as in the reference models) + BN + activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        act: str = "relu",
        bias: bool = True,
        groups: int = 1,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias, act=act)
        self.out_channels = out_channels


def _check_positive(**values: float) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ArchDefError(f"{name} must be a positive number, got {v!r}")


def ir_hidden_channels(in_channels: int, expansion: float, width_divisor: int) -> int:
    """Hidden (expanded) width of an inverted-residual block."""
    return round_channels(in_channels * expansion, width_divisor)


def se_mid_channels(hidden: int, expansion: float, less_se_channels: bool, width_divisor: int) -> int:
    """Hidden width of the squeeze-excite bottleneck of an IR block."""
    ratio = 0.25 / expansion if less_se_channels else 0.25
    return round_channels(int(hidden * ratio), width_divisor)


class IRBlock(nn.Module):
    """Inverted residual: [1x1 expand] -> [shuffle] -> kxk depthwise -> [SE] -> 1x1 project (+x).

    Args:
        expansion: hidden width = round_channels(in_channels * expansion, width_divisor).
        width_divisor: rounding of computed widths; 1 (plain int) unless the arch def's
            basic_args say otherwise, as in the reference builder (FBNetV2 defs use 8).
        kernel_size, act, se: fixed by the op name (ir_k5_sehsig_hs: 5, "hswish", "hsigmoid").
        se: gate of the squeeze-excite ("sigmoid" | "hsigmoid"), or None for no SE.
        bias: biases on the three convs (fbnet_a/b/c were trained with them).
        pw_groups: groups of the 1x1 expansion; > 1 also shuffles channels after it.
        pwl_groups: groups of the 1x1 projection.
        less_se_channels: SE bottleneck = hidden / 4 / expansion instead of hidden / 4.
        zero_last_bn_gamma: start the projection BN at gamma 0 when there is a residual.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        expansion: float = 6,
        act: str = "relu",
        se: Optional[str] = None,
        bias: bool = False,
        width_divisor: int = 1,
        pw_groups: int = 1,
        pwl_groups: int = 1,
        less_se_channels: bool = False,
        zero_last_bn_gamma: bool = False,
        *,
        hidden_channels: Optional[int] = None,
        se_channels: Optional[int] = None,
        expansion_conv: Optional[bool] = None,
    ) -> None:
        """Keyword-only, for explicit widths (a searched block builds its maximum widths so):
        ``hidden_channels`` replaces ``expansion``, ``se_channels`` the SE bottleneck rule, and
        ``expansion_conv`` whether the 1x1 expansion exists (default: hidden != in_channels)."""
        super().__init__()
        _check_positive(expansion=expansion, width_divisor=width_divisor, pw_groups=pw_groups, pwl_groups=pwl_groups)
        hidden = hidden_channels or ir_hidden_channels(in_channels, expansion, width_divisor)
        if se is None:
            se_mid = 0
        else:
            se_mid = se_channels or se_mid_channels(hidden, expansion, less_se_channels, width_divisor)
        residual = in_channels == out_channels and stride == 1
        with_pw = hidden != in_channels if expansion_conv is None else expansion_conv
        self.pw = ConvBNAct(in_channels, hidden, 1, groups=pw_groups, bias=bias, act=act) if with_pw else None
        self.shuffle = ChannelShuffle(pw_groups) if pw_groups > 1 else None
        self.dw = ConvBNAct(hidden, hidden, kernel_size, stride, groups=hidden, bias=bias, act=act)
        self.se = SqueezeExcite(hidden, se_mid, act, se) if se is not None else None
        self.pwl = ConvBNAct(
            hidden, out_channels, 1, groups=pwl_groups, bias=bias, act=None, zero_gamma=zero_last_bn_gamma and residual
        )
        self.in_channels, self.hidden_channels, self.out_channels = in_channels, hidden, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.use_residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.pw is not None:
            y = self.pw(y)
        if self.shuffle is not None:
            y = self.shuffle(y)
        y = self.dw(y)
        if self.se is not None:
            y = self.se(y)
        y = self.pwl(y)
        if self.use_residual:
            y = y + x
        return y


class IRPoolBlock(nn.Module):
    """FBNetV2 last stage: 1x1 expand + BN + act -> global average pool -> 1x1 conv + act (no BN).

    The pooled output is 1x1, so unlike :class:`IRBlock` there is never a residual add.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expansion: float = 6,
        act: str = "relu",
        bias: bool = False,
        width_divisor: int = 1,
        *,
        hidden_channels: Optional[int] = None,
        expansion_conv: Optional[bool] = None,
    ) -> None:
        """Keyword-only, for explicit widths: as :class:`IRBlock`'s."""
        super().__init__()
        _check_positive(expansion=expansion, width_divisor=width_divisor)
        hidden = hidden_channels or ir_hidden_channels(in_channels, expansion, width_divisor)
        with_pw = hidden != in_channels if expansion_conv is None else expansion_conv
        self.pw = ConvBNAct(in_channels, hidden, 1, bias=bias, act=act) if with_pw else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.pwl = ConvBNAct(hidden, out_channels, 1, bias=bias, bn=False, act=act)
        self.in_channels, self.hidden_channels, self.out_channels = in_channels, hidden, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pw is not None:
            x = self.pw(x)
        return self.pwl(self.pool(x))


class SkipBlock(nn.Module):
    """Identity when the shape is unchanged, else 1x1 conv (no bias) + BN + ReLU.

    ``skip`` stands in for an inverted-residual block in searched architectures, so
    it accepts the IR settings such rows carry (expansion, bias, ...). They do not
    change a skip (as in the reference implementation); any other kwarg is an error.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expansion: Optional[float] = None,
        bias: Optional[bool] = None,
        width_divisor: Optional[int] = None,
        less_se_channels: Optional[bool] = None,
        zero_last_bn_gamma: Optional[bool] = None,
        pwl_groups: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.conv = (
            ConvBNAct(in_channels, out_channels, 1, stride, act="relu")
            if in_channels != out_channels or stride != 1
            else None
        )
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            return self.conv(x)
        return x


__all__ = [
    "ConvBlock",
    "IRBlock",
    "IRPoolBlock",
    "SkipBlock",
    "ir_hidden_channels",
    "se_mid_channels",
    "build_activation",
]
