"""From a search-space dict to the supernet's blocks and choices.

A search space is an arch def whose rows may be search ops (and which may have a
``"search"`` key); it is expanded by the same :func:`~mobile_cv.arch.arch_def.unify` as a plain
arch def (one :class:`~mobile_cv.arch.arch_def.BlockSpec` per block), and each search row's
options become choices:

* ``["masked-channel", C, s, n, {"op": OP, "channels": opts, "expansion": opts}]``: one
  ``OP`` block at the maximum widths, its output (and hidden) channels masked;
* ``["choice", C, s, n, {"ops": [...], "channels": opts, "expansion": opts}]``: also a
  mixture over the block types ``ops``;
* a plain row: a fixed block (its input may still be a masked width).

Field 1 (``C``) is the row's maximum width; ``channels`` options are an int, a ``(min, max,
step)`` tuple (``{"min": .., "max": .., "step": ..}`` in JSON) or a list. A row's channel
choice is shared by its repeated blocks (one choice, named after the row's first block);
block type and expansion are chosen per block. Expansion options are relative to the
block's maximum input width.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

from torch import nn

from ..arch.arch_def import ArchDefError, BlockSpec, unify
from ..arch.blocks import IRBlock, IRPoolBlock
from ..arch.layers import round_channels
from ..arch.ops import OPS, OpSpec, accepted_kwargs
from ..registry import RegistryError, did_you_mean
from .choices import ChannelSpace, parse_float_options, parse_int_options
from .masked import CandidateSpec, SearchBlock, build_masked_candidate
from .mixed import MixedBlock, SubsampledRes, check_resolution_options

SEARCH_OPS = ("masked-channel", "choice", "subsampled-res")
MODES = ("dmasking", "conventional")
SEARCH_KEYS = ("resolution",)

AddChoice = Callable[..., str]  # (label, options, kind, distinct=0) -> label


def _uses_expansion(builder: Any) -> bool:
    return isinstance(builder, OpSpec) and builder.block in (IRBlock, IRPoolBlock)


# ---- the search ops in OPS -------------------------------------------------------------------
class _SearchOp:
    """Registry entry of a search op: it builds supernet pieces from channel spaces, so it is
    usable through build_supernet only."""

    def __init__(self, name: str, builder: Callable) -> None:
        self.name, self.builder = name, builder

    def __call__(self, in_channels, out_channels, stride, **kwargs):
        if isinstance(in_channels, ChannelSpace):
            return self.builder(in_channels, out_channels, stride, **kwargs)
        raise ArchDefError(
            "search ops (masked-channel, choice, subsampled-res) build supernets: declare them in a search space "
            "and call mobile_cv.search.build_supernet(space), not build_model()"
        )

    def accepted_kwargs(self):
        return None


def _masked_channel(in_space, out_space, stride, op="", hidden_space=None, where="", **kwargs) -> SearchBlock:
    builder = OPS.get(op)
    fixed = builder.fixed if isinstance(builder, OpSpec) else {}
    return build_masked_candidate(CandidateSpec(op, in_space, out_space, stride, fixed, kwargs, hidden_space, where))


def _choice(in_space, out_space, stride, candidates=None, factors=None) -> MixedBlock:
    return MixedBlock(candidates, factors, in_space, out_space, stride)


def _subsampled_res(in_space, out_space, stride, blocks=None, sizes=(), input_size=0, label="resolution"):
    return SubsampledRes(blocks, sizes, input_size, label)


for _name, _builder in (("masked-channel", _masked_channel), ("choice", _choice), ("subsampled-res", _subsampled_res)):
    if _name not in OPS:
        OPS.register(_name, _SearchOp(_name, _builder))


# ---- rows -------------------------------------------------------------------------------------
def _candidate_ops(op: str, kwargs: Dict[str, Any], where: str) -> List[str]:
    """The candidate op names of a ``masked-channel`` ("op") or ``choice`` ("ops") row, popped from kwargs."""
    if op == "masked-channel":
        if "ops" in kwargs:
            raise ArchDefError(f'{where}: "masked-channel" takes one "op"; use a "choice" row for "ops"')
        if "op" not in kwargs:
            raise ArchDefError(f'{where}: "masked-channel" needs an "op" kwarg naming the masked op')
        return [kwargs.pop("op")]
    if "op" in kwargs:
        raise ArchDefError(f'{where}: "choice" takes a list "ops" of candidate ops, not "op"')
    ops = kwargs.pop("ops", None)
    if not isinstance(ops, (list, tuple)) or not ops:
        raise ArchDefError(f'{where}: "choice" needs "ops": a non-empty list of candidate op names')
    if len(set(ops)) != len(ops):
        raise ArchDefError(f"{where}: candidate ops {list(ops)} repeat a name")
    return list(ops)


def _check_candidates(ops: List[str], where: str) -> None:
    for cand in ops:
        if not isinstance(cand, str) or cand not in OPS:
            raise ArchDefError(
                f'{where}: unknown candidate op "{cand}"{did_you_mean(str(cand), OPS.names())} '
                f"(see mobile_cv.OPS.names())"
            )
        if cand in SEARCH_OPS:
            raise ArchDefError(f'{where}: "{cand}" is a search op and cannot be a candidate')


class SpaceBuilder:
    """Builds a search space's blocks (one :class:`MixedBlock` each), registering choices with
    ``add_choice(label, options, kind, distinct=0)``.

    Args:
        mode: "dmasking" (one masked candidate per block type) or "conventional" (one
            candidate per block type x channel option x expansion option).
    """

    def __init__(
        self, space: Dict[str, Any], name: Optional[str], mode: str, in_chans: int, add_choice: AddChoice
    ) -> None:
        if mode not in MODES:
            raise ArchDefError(f"mode must be one of {MODES}, got {mode!r}")
        self.space, self.name, self.mode, self.in_chans = space, name, mode, in_chans
        self.add_choice = add_choice
        self.basic_args = dict(space.get("basic_args", {}))

    def build_blocks(self) -> Tuple["nn.ModuleDict", Dict[str, Tuple[int, int]]]:
        """The blocks in order, and each block's (stage, row)."""
        blocks: "OrderedDict[str, MixedBlock]" = OrderedDict()
        rows: Dict[str, Tuple[int, int]] = {}
        in_space = ChannelSpace.fixed(self.in_chans)
        row = None
        for spec in unify(self.space, self.name, plain=False):
            if spec.repeat == 0:  # a row's options are parsed once; its repeats share its channel choice
                row = self._parse_row(spec)
            where = f"{spec.where(self.name)}"
            blocks[spec.name] = self._build_block(spec, row, in_space, where)
            rows[spec.name] = (spec.stage, spec.row)
            in_space = row[1]
        return nn.ModuleDict(blocks), rows

    def _parse_row(self, spec: BlockSpec):
        """``(candidate ops, output channel space, expansion declaration, other kwargs)`` of a row."""
        where = spec.where(self.name).split(" (block")[0]
        kwargs = dict(spec.kwargs)
        if spec.op in ("masked-channel", "choice"):
            out_space = self._row_channels(kwargs.pop("channels", spec.out_channels), spec.out_channels, where, spec)
            ops = _candidate_ops(spec.op, kwargs, where)
        else:
            if not (isinstance(spec.out_channels, int) and spec.out_channels > 0):
                raise ArchDefError(f"{where}: field 1 (out_channels) must be a positive int, got {spec.out_channels!r}")
            if "channels" in kwargs or "ops" in kwargs:
                raise ArchDefError(
                    f'{where}: "channels"/"ops" options need a "masked-channel" or "choice" row, not "{spec.op}"'
                )
            out_space, ops = ChannelSpace.fixed(spec.out_channels), [spec.op]
        _check_candidates(ops, where)
        exp_decl = kwargs.pop("expansion", None)
        if exp_decl is not None and not any(_uses_expansion(OPS.get(c)) for c in ops):
            if not all(OPS.get(c) is OPS.get("skip") for c in ops):
                raise ArchDefError(f"{where}: 'expansion' given but no candidate op {ops} takes one")
        return ops, out_space, exp_decl, kwargs

    def _row_channels(self, decl: Any, c_max: Any, where: str, spec: BlockSpec) -> ChannelSpace:
        """The output channel space of a search row (a choice when it has several options)."""
        if not (isinstance(c_max, int) and c_max > 0):
            raise ArchDefError(f"{where}: field 1 (out_channels) must be a positive int, got {c_max!r}")
        options = parse_int_options(decl, "channels", where)
        above = [c for c in options if c > c_max]
        if above:
            raise ArchDefError(
                f"{where}: channels option {above[0]} is above the row's maximum {c_max} (field 1); "
                f"raise field 1 or drop the option"
            )
        if len(options) == 1:
            return ChannelSpace.fixed(options[0])
        return ChannelSpace(tuple(options), self.add_choice(f"{spec.name}.channels", tuple(options), "channels"))

    def _candidate_kwargs(self, op: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
        accepted = accepted_kwargs(OPS.get(op))
        merged = {k: v for k, v in self.basic_args.items() if accepted is None or k in accepted}
        merged.update({k: v for k, v in kwargs.items() if accepted is None or k in accepted})
        return merged

    def _check_kwargs(self, ops: List[str], kwargs: Dict[str, Any], where: str) -> None:
        for k in kwargs:
            if not any(accepted_kwargs(OPS.get(op)) is None or k in accepted_kwargs(OPS.get(op)) for op in ops):
                accepted = sorted(set().union(*(accepted_kwargs(OPS.get(op)) or set() for op in ops)))
                raise ArchDefError(
                    f"{where}: no candidate op {ops} accepts kwarg {k!r}{did_you_mean(k, accepted)} "
                    f"(they accept: {accepted})"
                )

    def _expansion_choice(self, name: str, ops, exp_decl, in_space, kwargs, where):
        """The block's expansion options and their choice label (None when there is no choice)."""
        if exp_decl is None:
            return None, None
        options = parse_float_options(exp_decl, "expansion", where)
        if len(options) > 1 and any(_uses_expansion(OPS.get(op)) for op in ops):
            divisor = int({**self.basic_args, **kwargs}.get("width_divisor", 1))
            distinct = len({round_channels(in_space.max * e, divisor) for e in options})
            return options, self.add_choice(f"{name}.expansion", tuple(options), "expansion", distinct)
        return options, None

    def _build_block(self, spec: BlockSpec, row, in_space: ChannelSpace, where: str) -> MixedBlock:
        ops, out_space, exp_decl, kwargs = row
        self._check_kwargs(ops, kwargs, where)
        op_label = self.add_choice(f"{spec.name}.op", tuple(ops), "op") if len(ops) > 1 else None
        exp_options, exp_label = self._expansion_choice(spec.name, ops, exp_decl, in_space, kwargs, where)
        candidates: Dict[str, SearchBlock] = {}
        factors: Dict[str, List[Tuple[str, int]]] = {}
        for k, op in enumerate(ops):
            cand_kwargs = self._candidate_kwargs(op, kwargs)
            divisor = int(cand_kwargs.get("width_divisor", 1))
            uses_exp = _uses_expansion(OPS.get(op))
            exps = exp_options if (exp_options and uses_exp) else ([6.0] if uses_exp else [None])
            op_factor = [(op_label, k)] if op_label else []
            make = _Maker(op, in_space, spec.stride, cand_kwargs, where)
            if self.mode == "dmasking" or (out_space.is_fixed and len(exps) == 1):
                hidden = None
                if uses_exp:
                    widths = tuple(round_channels(in_space.max * e, divisor) for e in exps)
                    hidden = ChannelSpace(widths, exp_label) if exp_label else ChannelSpace.fixed(widths[0])
                candidates[op], factors[op] = make(out_space, hidden), op_factor
                continue
            # conventional DNAS: one separate block per (channel option, expansion option)
            for (i, c), (j, e) in itertools.product(enumerate(out_space.widths), enumerate(exps)):
                hidden = ChannelSpace.fixed(round_channels(in_space.max * e, divisor)) if uses_exp else None
                key = f"{op}__c{c}" + (f"__e{j}" if exp_label and uses_exp else "")
                candidates[key] = make(ChannelSpace.fixed(c), hidden)
                factors[key] = (
                    op_factor
                    + ([(out_space.label, i)] if out_space.label else [])
                    + ([(exp_label, j)] if exp_label and uses_exp else [])
                )
        return OPS.get("choice")(in_space, out_space, spec.stride, candidates=candidates, factors=factors)

    def build_body(self, blocks: "nn.ModuleDict", input_size: int) -> Tuple[Optional[nn.Module], Optional[List[int]]]:
        """The resolution search around ``blocks`` (None without one) and the resolution options."""
        label = f"search space '{self.name}'" if self.name else "search space"
        search = self.space.get("search", {}) or {}
        if not isinstance(search, dict):
            raise ArchDefError(f"{label}: 'search' must be a dict like {{'resolution': [...]}}")
        unknown = sorted(set(search) - set(SEARCH_KEYS))
        if unknown:
            raise ArchDefError(
                f"{label}: unknown 'search' key {unknown[0]!r}{did_you_mean(unknown[0], SEARCH_KEYS)} "
                f"(valid: {list(SEARCH_KEYS)})"
            )
        if "resolution" not in search:
            return None, None
        stride = 1
        for b in blocks.values():
            stride *= b.stride if isinstance(b.stride, int) else 1
        sizes = check_resolution_options(search["resolution"], input_size, stride, f"{label}: search.resolution")
        if len(sizes) == 1:
            return None, sizes
        self.add_choice("resolution", tuple(sizes), "resolution")
        last = blocks[list(blocks)[-1]].out_space
        body = OPS.get("subsampled-res")(
            ChannelSpace.fixed(self.in_chans),
            last,
            1,
            blocks=blocks,
            sizes=sizes,
            input_size=input_size,
            label="resolution",
        )
        return body, sizes


class _Maker:
    """Builds the masked candidates of one op in one block, naming the row in any failure."""

    def __init__(self, op: str, in_space: ChannelSpace, stride: int, kwargs: Dict[str, Any], where: str) -> None:
        self.op, self.in_space, self.stride, self.kwargs, self.where = op, in_space, stride, kwargs, where

    def __call__(self, out_space: ChannelSpace, hidden: Optional[ChannelSpace]) -> SearchBlock:
        try:
            return OPS.get("masked-channel")(
                self.in_space, out_space, self.stride, op=self.op, hidden_space=hidden, where=self.where, **self.kwargs
            )
        except ArchDefError:
            raise
        except (TypeError, ValueError, RuntimeError, RegistryError) as e:
            raise ArchDefError(f'{self.where}: building candidate "{self.op}" failed: {e}') from e
