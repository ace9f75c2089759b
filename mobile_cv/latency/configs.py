"""Block configurations: everything that changes a block's computation, and the block built from one.

A :class:`BlockConfig` is a derived block as the latency table times it: the op (kernel, SE and
activation come with its name), input / hidden / output widths, stride, input resolution, and
the two structural facts the widths decide (a residual add when input width == output width at
stride 1; the 1x1 expansion conv, absent when hidden width == input width). The model head
(global pool + classifier) is the config of op ``"head"``.

:func:`item_configs` maps the supernet's candidate blocks and option assignments (what the
budgeted search's :class:`~mobile_cv.search.budget.BudgetTable` enumerates) to configs, as
numbers: a table is built from and looked up by the same enumeration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..arch.blocks import ConvBlock, IRBlock, IRPoolBlock, SkipBlock
from ..arch.builder import ClsConvHead
from ..arch.layers import ConvBNAct
from ..arch.ops import OPS, OpSpec
from ..search.masked import Spatial

HEAD = "head"
# kwargs of a derived row that do not change what runs once BatchNorm is folded
IGNORED_KWARGS = ("bias", "zero_last_bn_gamma", "expansion", "less_se_channels")


@dataclass(frozen=True)
class BlockConfig:
    """One block configuration (see the module docstring). ``hidden`` is 0 for blocks without one;
    for the head, ``c_out`` is the number of classes."""

    op: str
    c_in: int
    hidden: int
    c_out: int
    stride: int
    size: int  # input side length in pixels
    residual: bool = False
    expand: bool = False
    divisor: int = 1  # width_divisor: the squeeze-excite bottleneck width rounds to it
    extra: str = ""  # JSON of the kwargs of a user's op

    @property
    def key(self) -> str:
        """The table key, e.g. ``ir_k3_hs|16>64>24|s2|32px|e|d8``."""
        flags = ("r" if self.residual else "") + ("e" if self.expand else "")
        tail = f"|{self.extra}" if self.extra else ""
        widths = f"{self.c_in}>{self.hidden}>{self.c_out}"
        return f"{self.op}|{widths}|s{self.stride}|{self.size}px|{flags}|d{self.divisor}{tail}"

    @property
    def identity(self) -> bool:
        """A ``skip`` that changes nothing: nothing runs, it costs 0."""
        return self.op == "skip" and self.c_in == self.c_out and self.stride == 1

    def natural(self) -> "BlockConfig":
        """The structure the widths give (a grid point may force another, see :func:`build_module`)."""
        return replace(self, **structure(self.op, self.c_in, self.hidden, self.c_out, self.stride))

    def example(self) -> torch.Tensor:
        return torch.randn(1, self.c_in, self.size, self.size, generator=torch.Generator().manual_seed(0))


def block_class(op: str) -> Optional[type]:
    """The plain block class of a registered op (None for a user's function or the head)."""
    if op == HEAD:
        return None
    builder = OPS.get(op)
    return builder.block if isinstance(builder, OpSpec) else None


def structure(op: str, c_in: int, hidden: int, c_out: int, stride: int) -> Dict[str, bool]:
    """``residual`` and ``expand`` as the plain block decides them from its widths."""
    cls = block_class(op)
    return {
        "residual": cls is IRBlock and c_in == c_out and stride == 1,
        "expand": cls in (IRBlock, IRPoolBlock) and hidden != c_in,
    }


def build_module(config: BlockConfig) -> nn.Module:
    """The block ``config`` describes, with its structure as ``config`` says (a grid point may ask
    for a residual-free block of equal widths, or an expansion conv to an equal width: physically
    meaningful blocks the interpolation needs, though no derived model has them)."""
    if config.op == HEAD:
        return ClsConvHead(config.c_in, config.c_out)
    builder = OPS.get(config.op)
    cls = block_class(config.op)
    kwargs = json.loads(config.extra) if config.extra else {}
    if cls in (IRBlock, IRPoolBlock):
        module = builder(
            config.c_in,
            config.c_out,
            config.stride,
            width_divisor=config.divisor,
            hidden_channels=config.hidden,
            expansion_conv=config.expand,
        )
        if cls is IRBlock:
            module.use_residual = config.residual  # only ever forced off (a residual needs equal widths)
        return module
    if cls is SkipBlock:
        return ConvBNAct(config.c_in, config.c_out, 1, config.stride, act="relu")  # a skip's projection
    if cls is ConvBlock:
        return builder(config.c_in, config.c_out, config.stride, **kwargs)
    return builder(config.c_in, config.c_out, config.stride, **kwargs)


# ---- from the supernet's candidates -------------------------------------------------------------
@dataclass
class ItemConfigs:
    """The configs of ``N`` option assignments of one candidate (or the head), at ``R`` input sizes,
    as numbers: ``c_in``, ``hidden``, ``c_out`` are ``(N,)`` tensors, ``sizes`` the ``R`` sides."""

    base: BlockConfig  # op, stride, divisor, extra (widths and size are placeholders)
    c_in: torch.Tensor
    hidden: torch.Tensor
    c_out: torch.Tensor
    sizes: Tuple[int, ...]

    def config(self, n: int, r: int) -> BlockConfig:
        c_in, hidden, c_out = int(self.c_in[n]), int(self.hidden[n]), int(self.c_out[n])
        return replace(self.base, c_in=c_in, hidden=hidden, c_out=c_out, size=self.sizes[r]).natural()

    def distinct(self) -> List[BlockConfig]:
        """Every distinct config (identity skips, which cost nothing, left out)."""
        rows = torch.unique(torch.stack([self.c_in, self.hidden, self.c_out], 1), dim=0).tolist()
        out = []
        for c_in, hidden, c_out in rows:
            for size in self.sizes:
                c = replace(self.base, c_in=c_in, hidden=hidden, c_out=c_out, size=size).natural()
                if not c.identity:
                    out.append(c)
        return out


def _widths(space, index: Dict[str, torch.Tensor], n: int) -> torch.Tensor:
    if space is None:
        return torch.zeros(n, dtype=torch.long)
    if space.label is None:
        return torch.full((n,), space.widths[0], dtype=torch.long)
    return torch.tensor(space.widths, dtype=torch.long)[index[space.label]]


def _extra(cand) -> str:
    kwargs = {k: v for k, v in getattr(cand, "extra", {}).items() if k not in IGNORED_KWARGS}
    if block_class(cand.op) in (IRBlock, IRPoolBlock, SkipBlock):
        kwargs = {}
    return json.dumps(kwargs, sort_keys=True) if kwargs else ""


def item_configs(net, cand, spatial: Spatial, index: Dict[str, torch.Tensor]) -> ItemConfigs:
    """The configs of candidate ``cand`` (None: the supernet's head) for the option assignments
    ``index`` (label -> ``(N,)`` options) at each of ``spatial``'s input sizes."""
    n = len(next(iter(index.values()))) if index else 1
    if cand is None:
        c_in = _widths(net.out_space, index, n)
        base = BlockConfig(HEAD, 0, 0, int(net.num_classes), 1, 0)
        return ItemConfigs(
            base, c_in, torch.zeros(n, dtype=torch.long), torch.full((n,), net.num_classes), spatial.sizes
        )
    hidden_space = getattr(cand, "hidden_space", None)
    divisor = int(getattr(cand, "width_divisor", net.basic_args.get("width_divisor", 1)))
    base = BlockConfig(cand.op, 0, 0, 0, int(getattr(cand, "stride", 1)), 0, divisor=divisor, extra=_extra(cand))
    return ItemConfigs(
        base,
        _widths(cand.in_space, index, n),
        _widths(hidden_space, index, n),
        _widths(cand.out_space, index, n),
        spatial.sizes,
    )


def block_configs(net) -> List[Tuple[str, BlockConfig]]:
    """``(block position, config)`` for every distinct config of every block of a supernet's space
    (``"head"`` for the head; identity skips left out), by the budgeted search's own enumeration."""
    from ..search.budget import BudgetTable  # the budget table enumerates; it imports nothing of this package
    from ..search.cost_kinds import LATENCY

    owner = {id(c): name for name, b in net.search_blocks().items() for c in b.candidates.values()}
    found: Dict[Tuple[str, str], BlockConfig] = {}

    def collect(cand, spatial, index):
        configs = item_configs(net, cand, spatial, index)
        block = HEAD if cand is None else owner[id(cand)]
        for c in configs.distinct():
            found.setdefault((block, c.key), c)
        return torch.zeros(len(configs.c_in), len(spatial.sizes), dtype=torch.float64)

    BudgetTable(net, LATENCY, item_cost=collect)
    return [(block, c) for (block, _), c in found.items()]


def space_configs(net) -> List[BlockConfig]:
    """Every distinct block configuration (and head) of a supernet's space, identity skips left out."""
    return list({c.key: c for _, c in block_configs(net)}.values())


def config_from_key(key: str) -> BlockConfig:
    """The inverse of :attr:`BlockConfig.key`."""
    op, widths, stride, size, flags, divisor, *extra = key.split("|", 6)
    c_in, hidden, c_out = (int(w) for w in widths.split(">"))
    return BlockConfig(
        op,
        c_in,
        hidden,
        c_out,
        int(stride[1:]),
        int(size[:-2]),
        "r" in flags,
        "e" in flags,
        int(divisor[1:]),
        extra[0] if extra else "",
    )


def describe(config: BlockConfig) -> str:
    """A config for messages: ``ir_k3_hs 16->64->24 stride 2 at 32x32``."""
    widths = f"{config.c_in}->{config.hidden}->{config.c_out}" if config.hidden else f"{config.c_in}->{config.c_out}"
    return f"{config.op} {widths} stride {config.stride} at {config.size}x{config.size}"


__all__ = [
    "BlockConfig",
    "ItemConfigs",
    "block_configs",
    "build_module",
    "config_from_key",
    "item_configs",
    "space_configs",
]


def architecture_configs(net, index: Dict[str, int]) -> List[Tuple[str, BlockConfig]]:
    """``(block position, config)`` of every block (and the head) of one architecture of the space,
    ``index`` its options, in model order, identity skips left out: what the table adds up for it."""
    from ..search.budget import BudgetTable
    from ..search.cost_kinds import LATENCY

    calls: List[ItemConfigs] = []

    def record(cand, spatial, idx):
        configs = item_configs(net, cand, spatial, idx)
        calls.append(configs)
        return torch.zeros(len(configs.c_in), len(spatial.sizes), dtype=torch.float64)

    table = BudgetTable(net, LATENCY, item_cost=record)
    mixing = net.one_hot(index)
    r = int(index.get("resolution", 0))
    out, call = [], 0
    for name, t in zip([*net.search_blocks(), HEAD], table.terms):
        n_calls = len(net.search_blocks()[name].candidates) if name != HEAD else 1
        items = [(c, n) for c in calls[call : call + n_calls] for n in range(len(c.c_in))]
        call += n_calls
        k = int(torch.argmax(t.item_probability(mixing)))
        configs, n = items[k]
        # the head and blocks after a stride see their own input size: the spatial of the call
        config = configs.config(n, r if len(configs.sizes) > 1 else 0)
        if not config.identity:
            out.append((name, config))
    return out
