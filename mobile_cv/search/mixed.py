"""Block-type choice and the resolution wrapper.

:class:`MixedBlock` is every block of a supernet: a weighted sum of candidate
masked blocks. A candidate's weight is the product of the mixing weights of the
choices it stands for, so one class serves

* a plain row (one candidate, weight 1),
* a ``masked-channel`` row (one candidate whose channels are masked),
* a ``choice`` row in DMaskingNAS mode (one masked candidate per block type:
  ``sum_k g_k op_k(x)``, memory grows with the block types only), and
* the conventional DNAS baseline (one separate candidate per block type x channel
  option x expansion option: memory grows with every option).

:class:`SubsampledRes` searches the input resolution (DMaskingNAS section 3):
subsample the input with nearest neighbours, run the wrapped blocks on the small
map, place each output back into a zero map of the full output size at the
positions its inputs came from, and sum the placed maps with the Gumbel mixing weights.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from typing import Dict, Iterator, List, Sequence, Tuple

import torch
import torch.utils.checkpoint
from torch import nn

from ..arch.arch_def import ArchDefError
from .choices import ChannelSpace, Mixing, fit_channels
from .masked import Cost, SearchBlock, Spatial

Factor = Tuple[str, int]  # (label, option index)


@contextmanager
def frozen_bn_statistics(module: nn.Module) -> Iterator[None]:
    """BatchNorm still normalises with batch statistics, but its running statistics stay put."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, v in zip(bns, saved):
            m.momentum = v


def run_blocks(blocks: "nn.ModuleDict", x: torch.Tensor, mixing: Mixing, checkpoint: bool = False) -> torch.Tensor:
    """Run ``blocks`` in order with the mixing weights.

    Args:
        checkpoint: activation checkpointing per block: keep only each block's input for the
            backward pass and recompute the block's activations there (one block's memory
            instead of the whole network's, for ~1/3 more time). The recomputation leaves
            BatchNorm running statistics alone, so they are updated once per step as without it.
    """
    for block in blocks.values():
        if checkpoint and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(
                block,
                x,
                mixing,
                use_reentrant=False,
                context_fn=lambda b=block: (nullcontext(), frozen_bn_statistics(b)),
            )
        else:
            x = block(x, mixing)
    return x


def is_zero(w) -> bool:
    """Whether a mixing weight is exactly zero in the forward pass (a hard sample's unchosen
    option; soft Gumbel mixing weights are never exactly zero)."""
    return isinstance(w, torch.Tensor) and not bool(w.detach().ne(0).any())


def skipped(mixing: Mixing, factors: Sequence[Factor], w) -> bool:
    """Whether the option with mixing weight ``w`` (the product over ``factors``) is not run: a
    hard sample's unchosen option (known from a :class:`KnownMixing` without reading ``w``)."""
    chosen = getattr(mixing, "chosen", None)
    if chosen is not None:
        return any(label in chosen and chosen[label] != i for label, i in factors)
    return is_zero(w)


class MixedBlock(nn.Module):
    """``sum_k w_k * candidate_k(x)`` with ``w_k = prod_{(label, i) in factors_k} g_label[i]``."""

    def __init__(
        self,
        candidates: Dict[str, SearchBlock],
        factors: Dict[str, List[Factor]],
        in_space: ChannelSpace,
        out_space: ChannelSpace,
        stride: int,
    ) -> None:
        super().__init__()
        self.candidates = nn.ModuleDict(candidates)
        self.factors = {k: list(v) for k, v in factors.items()}
        self.in_space, self.out_space, self.stride = in_space, out_space, stride

    def candidate_weight(self, name: str, mixing: Mixing):
        w = 1.0  # a plain row's weight (no factors)
        for k, (label, i) in enumerate(self.factors[name]):
            w = mixing[label][..., i] if k == 0 else w * mixing[label][..., i]
        return w

    def forward(self, x: torch.Tensor, mixing: Mixing) -> torch.Tensor:
        if len(self.candidates) == 1:
            ((name, cand),) = self.candidates.items()
            return fit_channels(cand(x, mixing), self.out_space.max) * self.candidate_weight(name, mixing)
        out = 0
        for name, cand in self.candidates.items():
            w = self.candidate_weight(name, mixing)
            if skipped(mixing, self.factors[name], w):
                continue  # a hard (straight-through) sample: only the chosen candidate runs
            out = out + w * fit_channels(cand(x, mixing), self.out_space.max)
        return out

    def out_spatial(self, spatial: Spatial) -> Spatial:
        return next(iter(self.candidates.values())).out_spatial(spatial)

    def cost(self, spatial: Spatial, mixing: Mixing) -> Tuple[Cost, Spatial]:
        total = Cost()
        out = self.out_spatial(spatial)
        for name, cand in self.candidates.items():
            c, _ = cand.cost(spatial, mixing)
            w = self.candidate_weight(name, mixing)
            total.add(c.flops, c.params, w)
        return total, out

    def chosen(self, index: Dict[str, int]) -> Tuple[str, SearchBlock]:
        """The candidate selected by ``index`` (label -> option)."""
        for name, cand in self.candidates.items():
            if all(index[label] == i for label, i in self.factors[name]):
                return name, cand
        raise RuntimeError(f"no candidate matches {index}")  # every combination has one by construction


class SubsampledRes(nn.Module):
    """Resolution search over a sequence of blocks (by default the whole backbone).

    Args:
        blocks: the wrapped blocks (run in order with the mixing weights).
        sizes: resolution options (input side lengths), all <= ``input_size``.
        input_size: side length of the full-size input.
        label: the resolution choice's label.
    """

    def __init__(self, blocks: "nn.ModuleDict", sizes: Sequence[int], input_size: int, label: str) -> None:
        super().__init__()
        self.blocks = blocks
        self.sizes, self.input_size, self.label = tuple(int(s) for s in sizes), int(input_size), label
        full_out = self.body_out_size(self.input_size)
        for i, s in enumerate(self.sizes):
            idx = torch.div(torch.arange(s) * self.input_size, s, rounding_mode="floor")
            self.register_buffer(f"take_{i}", idx, persistent=False)
            o = self.body_out_size(s)
            pos = torch.div(torch.arange(o) * full_out, o, rounding_mode="floor")
            self.register_buffer(f"place_{i}", pos, persistent=False)
        self.full_out = full_out
        self.recompute_blocks = False

    def body_out_size(self, size: int) -> int:
        sp = Spatial((size,))
        for block in self.blocks.values():
            sp = block.out_spatial(sp)
        return sp.sizes[0]

    def run_body(self, x: torch.Tensor, mixing: Mixing) -> torch.Tensor:
        return run_blocks(self.blocks, x, mixing, self.recompute_blocks)

    def forward(self, x: torch.Tensor, mixing: Mixing) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            raise ValueError(
                f"resolution search expects {self.input_size}x{self.input_size} inputs, got {tuple(x.shape[-2:])}"
            )
        g = mixing[self.label]
        out = 0
        for i in range(len(self.sizes)):
            if skipped(mixing, ((self.label, i),), g[..., i]):
                continue  # a hard sample: only the chosen resolution runs
            take, place = getattr(self, f"take_{i}"), getattr(self, f"place_{i}")
            y = self.run_body(x.index_select(2, take).index_select(3, take), mixing)
            o = y.shape[-1]
            if o != self.full_out:
                # interspersed zeros; scaled so a global pool sees the mean over occupied positions
                z = y.new_zeros(y.shape[0], y.shape[1], self.full_out, self.full_out)
                z[:, :, place[:, None], place[None, :]] = y * (self.full_out**2 / o**2)
                y = z
            out = out + g[i] * y
        return out

    def cost(self, spatial: Spatial, mixing: Mixing) -> Tuple[Cost, Spatial]:
        total = Cost()
        sp = Spatial(self.sizes, self.label)
        for block in self.blocks.values():
            c, sp = block.cost(sp, mixing)
            total.add(c.flops, c.params)
        return total, sp


def check_resolution_options(sizes, input_size: int, min_size: int, where: str) -> List[int]:
    """Validate resolution options (ints in [min_size, input_size], no repeats)."""
    if not isinstance(sizes, (list, tuple)) or not sizes:
        raise ArchDefError(f"{where}: resolution options must be a non-empty list of ints, got {sizes!r}")
    out = []
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, (int, float)):
            raise ArchDefError(f"{where}: resolution option {s!r} is not a number")
        if float(s) != math.floor(s):
            raise ArchDefError(
                f"{where}: resolution option {s!r} would put subsampled pixels at non-integer positions; "
                f"use whole pixel sizes"
            )
        s = int(s)
        if s > input_size:
            raise ArchDefError(
                f"{where}: resolution option {s} is larger than the input ({input_size}); subsampling only shrinks, "
                f"so raise input_size or drop the option"
            )
        if s < min_size:
            raise ArchDefError(f"{where}: resolution option {s} is below the network's total stride {min_size}")
        out.append(s)
    if len(set(out)) != len(out):
        raise ArchDefError(f"{where}: resolution options {out} repeat a value")
    return sorted(out)
