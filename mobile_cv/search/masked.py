"""Channel-masked blocks: one max-width block whose channels are masked per choice.

Each masked block subclasses the plain block it stands for, built at the maximum
widths of its channel spaces, so its parameter names are the plain block's and a
derived block's weights are a leading slice of the masked block's
(:func:`slice_into`). The forward multiplies outputs by ``M = sum_i g_i 1_i``
(after BN and activation) and returns the same tensor a derived block returns
whenever the mixing weights are one-hot:

* a residual add, and the "no expansion conv when hidden == input width" rule,
  depend on two widths being equal; those paths are weighted by the probability
  of equality (:func:`~mobile_cv.search.choices.p_equal`), 1 or 0 for one-hot;
* dependent widths (squeeze-excite bottleneck of the hidden width) share the
  hidden width's choice.

Every masked block also computes its cost by effective shape propagation
(``cost``): FLOPs/params of each conv from effective channel counts
(sum_i g_i c_i) and effective spatial sizes, in the published counting convention.

The masked form of a plain block class is registered with it (:data:`MASKED_BLOCKS`,
:func:`register_masked_block`): a new block type brings its own masked form, and
:func:`build_masked_candidate` (the ``masked-channel`` op) looks it up; ops without one
become a :class:`MaskedGenericBlock`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from ..arch.arch_def import ArchDefError
from ..arch.blocks import ConvBlock, IRBlock, IRPoolBlock, SkipBlock, ir_hidden_channels, se_mid_channels
from ..arch.flops import count_flops_params
from ..arch.layers import ConvBNAct
from ..arch.ops import OPS, OpSpec
from ..registry import Registry
from .choices import ChannelSpace, Mixing, always_equal, can_be_equal, constant_tensor, fit_channels, p_equal

Scalar = Union[float, torch.Tensor]


@dataclass(frozen=True)
class Spatial:
    """Feature-map side length per resolution option (one entry without resolution search)."""

    sizes: Tuple[int, ...]
    label: Optional[str] = None

    def eff(self, mixing: Mixing) -> Scalar:
        if self.label is None:
            return float(self.sizes[0])
        g = mixing[self.label]
        return (g * constant_tensor(tuple(float(s) for s in self.sizes), g.device, g.dtype)).sum(-1)

    def area(self, mixing: Mixing) -> Scalar:
        e = self.eff(mixing)
        return e * e

    def strided(self, stride: int) -> "Spatial":
        return Spatial(tuple(math.ceil(s / stride) for s in self.sizes), self.label)

    def pooled(self) -> "Spatial":
        return Spatial(tuple(1 for _ in self.sizes), self.label)


@dataclass
class Cost:
    flops: Scalar = 0.0
    params: Scalar = 0.0

    def add(self, flops: Scalar, params: Scalar, weight: Scalar = 1.0) -> None:
        self.flops = self.flops + weight * flops
        self.params = self.params + weight * params


@dataclass(frozen=True)
class CandidateSpec:
    """What a masked candidate block is built from.

    Attributes:
        op: the registered op name (e.g. ``"ir_k3_hs"``).
        in_space, out_space: its input and output channel spaces.
        stride: its stride.
        fixed: the constructor arguments the op name fixes (kernel size, activation, SE gate).
        kwargs: the row's other settings (``bias``, ``width_divisor``, ...).
        hidden_space: the hidden (expanded) channel space of blocks with an expansion.
        where: the row, for error messages.
    """

    op: str
    in_space: ChannelSpace
    out_space: ChannelSpace
    stride: int
    fixed: Dict[str, Any] = field(default_factory=dict)
    kwargs: Dict[str, Any] = field(default_factory=dict)
    hidden_space: Optional[ChannelSpace] = None
    where: str = ""


MASKED_BLOCKS = Registry(
    "MASKED_BLOCKS", contract="builder(CandidateSpec) -> SearchBlock, keyed by a plain block class"
)


def _class_key(block_cls: type) -> str:
    return f"{block_cls.__module__}.{block_cls.__qualname__}"


def register_masked_block(block_cls: type):
    """Decorator: register the masked form of plain block class ``block_cls``::

    @register_masked_block(MyBlock)
    class MaskedMyBlock(MyBlock, SearchBlock):
        def __init__(self, spec: CandidateSpec): ...
    """

    def deco(builder):
        MASKED_BLOCKS.register(_class_key(block_cls), builder)
        return builder

    return deco


def soft_identity(x: torch.Tensor, y: torch.Tensor, a: ChannelSpace, b: ChannelSpace, mixing: Mixing) -> torch.Tensor:
    """``x`` (fitted to ``b``'s width) with probability P(width a == width b), else ``y``: the
    derived block is an identity exactly when the two widths are equal."""
    p = p_equal(a, b, mixing)
    return p * fit_channels(x, b.max) + (1 - p) * y


def apply_mask(y: torch.Tensor, space: ChannelSpace, mixing: Mixing) -> torch.Tensor:
    m = space.mask(mixing)
    return y if m is None else y * m.view(1, -1, 1, 1)


def slice_into(dst: nn.Module, src: nn.Module) -> None:
    """Copy the leading slice of every ``src`` tensor into the same-named ``dst`` tensor.

    Masks keep the first c channels, so a derived block's weights (and BN statistics)
    are exactly the leading entries of the masked block's.
    """
    src_sd = src.state_dict()
    with torch.no_grad():
        for name, t in dst.state_dict().items():
            if name not in src_sd:
                raise KeyError(f"derived block has {name!r}, the supernet block {type(src).__name__} has not")
            s = src_sd[name]
            if t.dim() == 0:
                t.copy_(s)
                continue
            t.copy_(s[tuple(slice(0, n) for n in t.shape)])


class SearchBlock(nn.Module):
    """Interface of the supernet's blocks: forward and cost with mixing weights, the derived row."""

    in_space: ChannelSpace
    out_space: ChannelSpace

    def forward(self, x: torch.Tensor, mixing: Mixing) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def out_spatial(self, spatial: Spatial) -> Spatial:
        return spatial.strided(self.stride)

    def cost(self, spatial: Spatial, mixing: Mixing) -> Tuple[Cost, Spatial]:  # pragma: no cover
        raise NotImplementedError

    def weight_source(self) -> nn.Module:
        """The module whose state-dict names match the derived plain block."""
        return self

    def derive_kwargs(self, index: Dict[str, int], c_in: int) -> Dict[str, Any]:  # pragma: no cover
        raise NotImplementedError


def _conv_cost(
    cost: Cost, k: int, cin: Scalar, cout: Scalar, area: Scalar, groups_eff: Scalar = 1.0, weight: Scalar = 1.0
) -> None:
    """k x k conv: FLOPs = k*k * H*W * cin * cout / groups; params = k*k * cin * cout / groups."""
    params = k * k * cin * cout / groups_eff
    cost.add(params * area, params, weight)


# ---- conv_kN ------------------------------------------------------------------------------
@register_masked_block(ConvBlock)
class MaskedConvBlock(ConvBlock, SearchBlock):
    def __init__(self, spec: CandidateSpec) -> None:
        if spec.kwargs.get("groups", 1) != 1:
            raise ArchDefError(f'{spec.where}: grouped "{spec.op}" cannot be searched')
        bias = spec.kwargs.get("bias", True)
        ConvBlock.__init__(
            self, spec.in_space.max, spec.out_space.max, spec.stride, spec.fixed["kernel_size"], spec.fixed["act"], bias
        )
        self.in_space, self.out_space, self.op, self.stride = spec.in_space, spec.out_space, spec.op, spec.stride
        self.extra: Dict[str, Any] = {} if bias else {"bias": False}

    def forward(self, x: torch.Tensor, mixing: Mixing) -> torch.Tensor:
        return apply_mask(ConvBlock.forward(self, x), self.out_space, mixing)

    def cost(self, spatial: Spatial, mixing: Mixing) -> Tuple[Cost, Spatial]:
        out = spatial.strided(self.stride)
        c = Cost()
        k = self.conv.kernel_size[0]
        _conv_cost(c, k, self.in_space.eff(mixing), self.out_space.eff(mixing), out.area(mixing))
        return c, out

    def derive_kwargs(self, index: Dict[str, int], c_in: int) -> Dict[str, Any]:
        return dict(self.extra)


# ---- ir_kN_* ------------------------------------------------------------------------------
def _expand(block: nn.Module, x: torch.Tensor, mixing: Mixing) -> torch.Tensor:
    """The masked 1x1 expansion of an IR / IR-pool block, an identity with probability
    P(hidden width == input width) (the derived block drops the conv then)."""
    if block.pw is None:
        return x
    y = apply_mask(block.pw(x), block.hidden_space, mixing)
    return soft_identity(x, y, block.in_space, block.hidden_space, mixing) if block.pw_maybe_identity else y


def _expand_cost(block: nn.Module, cost: Cost, cin: Scalar, ch: Scalar, area: Scalar, mixing: Mixing) -> None:
    if block.pw is not None:
        keep = 1 - p_equal(block.in_space, block.hidden_space, mixing) if block.pw_maybe_identity else 1.0
        _conv_cost(cost, 1, cin, ch, area, weight=keep)


@register_masked_block(IRBlock)
class MaskedIRBlock(IRBlock, SearchBlock):
    """Inverted residual with masked output and hidden (expansion) channels."""

    def __init__(self, spec: CandidateSpec) -> None:
        f, kw = spec.fixed, spec.kwargs
        if f.get("pw_groups", 1) != 1 or kw.get("pwl_groups", 1) != 1:
            raise ArchDefError(
                f'{spec.where}: op "{spec.op}" uses grouped convs and channel shuffle, which break prefix channel '
                f"masks; it cannot be used in a search space"
            )
        if kw.get("less_se_channels"):
            raise ArchDefError(f"{spec.where}: less_se_channels=True is not supported in search spaces")
        in_space, out_space, hidden_space = spec.in_space, spec.out_space, spec.hidden_space
        divisor = kw.get("width_divisor", 1)
        self.se_space = hidden_space.map(lambda h: se_mid_channels(h, 1.0, False, divisor))
        IRBlock.__init__(
            self,
            in_space.max,
            out_space.max,
            spec.stride,
            f["kernel_size"],
            act=f["act"],
            se=f["se"],
            bias=kw.get("bias", False),
            # gamma 0 silences the branch at init: only safe where every derived block keeps the
            # residual (otherwise the branch is the block's only output and the network starts dead)
            zero_last_bn_gamma=kw.get("zero_last_bn_gamma", False) and always_equal(in_space, out_space),
            hidden_channels=hidden_space.max,
            se_channels=self.se_space.max,
            expansion_conv=not always_equal(in_space, hidden_space),
        )
        self.in_space, self.out_space, self.hidden_space, self.op = in_space, out_space, hidden_space, spec.op
        # expansion conv of the derived block disappears when hidden == input width
        self.pw_maybe_identity = can_be_equal(in_space, hidden_space)
        self.residual_possible = spec.stride == 1 and can_be_equal(in_space, out_space)
        self.width_divisor = divisor
        # settings the derived row repeats (width_divisor travels in the derived basic_args)
        self.extra = {k: v for k, v in kw.items() if k in ("bias", "zero_last_bn_gamma", "less_se_channels")}

    def forward(self, x: torch.Tensor, mixing: Mixing) -> torch.Tensor:
        y = apply_mask(self.dw(_expand(self, x, mixing)), self.hidden_space, mixing)
        if self.se is not None:
            y = self.se.masked(y, self.se_space.mask(mixing))
        y = apply_mask(self.pwl(y), self.out_space, mixing)
        if self.residual_possible:
            y = y + p_equal(self.in_space, self.out_space, mixing) * fit_channels(x, self.out_space.max)
        return y

    def cost(self, spatial: Spatial, mixing: Mixing) -> Tuple[Cost, Spatial]:
        out = spatial.strided(self.stride)
        cin, ch, cout = self.in_space.eff(mixing), self.hidden_space.eff(mixing), self.out_space.eff(mixing)
        a_in, a_out = spatial.area(mixing), out.area(mixing)
        c = Cost()
        _expand_cost(self, c, cin, ch, a_in, mixing)
        _conv_cost(c, self.kernel_size, 1, ch, a_out)  # depthwise: cin/groups = 1
        if self.se is not None:
            cm = self.se_space.eff(mixing)
            c.add(ch * a_out, 0.0)  # global pool
            _conv_cost(c, 1, ch, cm, 1.0)
            _conv_cost(c, 1, cm, ch, 1.0)
        _conv_cost(c, 1, ch, cout, a_out)
        return c, out

    def derive_kwargs(self, index: Dict[str, int], c_in: int) -> Dict[str, Any]:
        return expansion_kwargs(self, index, c_in)


def expansion_kwargs(block: SearchBlock, index: Dict[str, int], c_in: int) -> Dict[str, Any]:
    """The derived row's kwargs of a block with a hidden width: its expansion relative to the real
    input width ``c_in`` and the settings the row repeats (IR and IR-pool blocks alike)."""
    hidden = block.hidden_space.chosen(index)
    return {"expansion": expansion_for(c_in, hidden, block.width_divisor), **block.extra}


def expansion_for(c_in: int, hidden: int, divisor: int) -> float:
    """An expansion ratio (4 decimals, like the released defs) that rebuilds ``hidden`` from ``c_in``."""
    base = round(hidden / c_in, 4)
    for delta in (0.0, 1e-4, -1e-4, 2e-4, -2e-4):
        e = round(base + delta, 4)
        if e > 0 and ir_hidden_channels(c_in, e, divisor) == hidden:
            return e
    raise ValueError(f"no 4-decimal expansion turns {c_in} input channels into {hidden} hidden (divisor {divisor})")


# ---- ir_pool --------------------------------------------------------------------------------
@register_masked_block(IRPoolBlock)
class MaskedIRPoolBlock(IRPoolBlock, SearchBlock):
    def __init__(self, spec: CandidateSpec) -> None:
        in_space, out_space, hidden_space = spec.in_space, spec.out_space, spec.hidden_space
        bias = spec.kwargs.get("bias", False)
        IRPoolBlock.__init__(
            self,
            in_space.max,
            out_space.max,
            act=spec.fixed["act"],
            bias=bias,
            hidden_channels=hidden_space.max,
            expansion_conv=not always_equal(in_space, hidden_space),
        )
        self.in_space, self.out_space, self.hidden_space, self.op = in_space, out_space, hidden_space, spec.op
        self.pw_maybe_identity = can_be_equal(in_space, hidden_space)
        self.width_divisor = spec.kwargs.get("width_divisor", 1)
        self.extra: Dict[str, Any] = {"bias": True} if bias else {}

    def forward(self, x: torch.Tensor, mixing: Mixing) -> torch.Tensor:
        return apply_mask(self.pwl(self.pool(_expand(self, x, mixing))), self.out_space, mixing)

    def out_spatial(self, spatial: Spatial) -> Spatial:
        return spatial.pooled()

    def cost(self, spatial: Spatial, mixing: Mixing) -> Tuple[Cost, Spatial]:
        cin, ch, cout = self.in_space.eff(mixing), self.hidden_space.eff(mixing), self.out_space.eff(mixing)
        a = spatial.area(mixing)
        c = Cost()
        _expand_cost(self, c, cin, ch, a, mixing)
        c.add(ch * a, 0.0)  # global pool
        _conv_cost(c, 1, ch, cout, 1.0)
        return c, spatial.pooled()

    def derive_kwargs(self, index: Dict[str, int], c_in: int) -> Dict[str, Any]:
        return expansion_kwargs(self, index, c_in)


# ---- skip -----------------------------------------------------------------------------------
@register_masked_block(SkipBlock)
class MaskedSkipBlock(SkipBlock, SearchBlock):
    """Identity when input and output widths are equal (stride 1), else 1x1 conv + BN + ReLU."""

    def __init__(self, spec: CandidateSpec) -> None:
        nn.Module.__init__(self)  # SkipBlock decides identity from the max widths; here it is a choice
        in_space, out_space, stride = spec.in_space, spec.out_space, spec.stride
        self.in_space, self.out_space, self.op, self.stride = in_space, out_space, spec.op, stride
        self.identity_possible = stride == 1 and can_be_equal(in_space, out_space)
        self.conv = (
            None
            if stride == 1 and always_equal(in_space, out_space)
            else ConvBNAct(in_space.max, out_space.max, 1, stride, act="relu")
        )
        self.in_channels, self.out_channels = in_space.max, out_space.max

    def forward(self, x: torch.Tensor, mixing: Mixing) -> torch.Tensor:
        if self.conv is None:
            return x
        y = apply_mask(self.conv(x), self.out_space, mixing)
        return soft_identity(x, y, self.in_space, self.out_space, mixing) if self.identity_possible else y

    def cost(self, spatial: Spatial, mixing: Mixing) -> Tuple[Cost, Spatial]:
        out = spatial.strided(self.stride)
        c = Cost()
        if self.conv is not None:
            keep = 1 - p_equal(self.in_space, self.out_space, mixing) if self.identity_possible else 1.0
            _conv_cost(c, 1, self.in_space.eff(mixing), self.out_space.eff(mixing), out.area(mixing), weight=keep)
        return c, out

    def derive_kwargs(self, index: Dict[str, int], c_in: int) -> Dict[str, Any]:
        return {}


# ---- any other registered op ----------------------------------------------------------------
class MaskedGenericBlock(SearchBlock):
    """A user-registered op inside a search space: built at max widths, output masked.

    Its cost is counted by running the op on a dummy input at each resolution option
    (exact for fixed widths); with masked widths the count is scaled by
    ``(cin_eff / cin_max) * (cout_eff / cout_max)`` (exact for dense convs).
    Weights of a derived block are the leading slice of the max-width op's, which is
    exact for conv-like ops; equivalence is guaranteed only with a fixed input width.
    """

    def __init__(self, spec: CandidateSpec, module: nn.Module) -> None:
        super().__init__()
        self.in_space, self.out_space, self.op, self.stride = spec.in_space, spec.out_space, spec.op, spec.stride
        self.module = module
        self.extra = dict(spec.kwargs)
        self._counted: Dict[int, Tuple[float, float, int]] = {}

    def forward(self, x: torch.Tensor, mixing: Mixing) -> torch.Tensor:
        return apply_mask(self.module(x), self.out_space, mixing)

    def _count(self, size: int) -> Tuple[float, float, int]:
        if size not in self._counted:
            probe = {}

            def hook(m, inp, out):
                probe["out"] = out.shape[-1]

            h = self.module.register_forward_hook(hook)
            try:
                flops, params = count_flops_params(self.module, size, in_chans=self.in_space.max)
            finally:
                h.remove()
            self._counted[size] = (flops * 1e6, params * 1e6, int(probe["out"]))
        return self._counted[size]

    def weight_source(self) -> nn.Module:
        return self.module

    def out_spatial(self, spatial: Spatial) -> Spatial:
        return Spatial(tuple(self._count(s)[2] for s in spatial.sizes), spatial.label)

    def cost(self, spatial: Spatial, mixing: Mixing) -> Tuple[Cost, Spatial]:
        counts = [self._count(s) for s in spatial.sizes]
        out = self.out_spatial(spatial)
        scale = (self.in_space.eff(mixing) / self.in_space.max) * (self.out_space.eff(mixing) / self.out_space.max)
        if spatial.label is None:
            flops, params = counts[0][0], counts[0][1]
        else:
            g = mixing[spatial.label]
            flops = (g * torch.tensor([f for f, _, _ in counts], dtype=g.dtype, device=g.device)).sum(-1)
            params = counts[0][1]
        c = Cost()
        c.add(flops * scale, params * scale)
        return c, out

    def derive_kwargs(self, index: Dict[str, int], c_in: int) -> Dict[str, Any]:
        return dict(self.extra)


def build_masked_candidate(spec: CandidateSpec) -> SearchBlock:
    """The masked block of ``spec.op``: the masked form registered for its block class, or a
    :class:`MaskedGenericBlock` around the op built at the maximum widths."""
    builder = OPS.get(spec.op)
    if isinstance(builder, OpSpec) and _class_key(builder.block) in MASKED_BLOCKS:
        return MASKED_BLOCKS.get(_class_key(builder.block))(spec)
    module = builder(spec.in_space.max, spec.out_space.max, spec.stride, **spec.kwargs)
    if not isinstance(module, nn.Module):
        raise ArchDefError(
            f'{spec.where}: the builder of op "{spec.op}" returned {type(module).__name__}, not an nn.Module'
        )
    return MaskedGenericBlock(spec, module)
