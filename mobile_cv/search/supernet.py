"""The DMaskingNAS supernet, built from a search-space dict.

A search space is an arch def whose rows may be search ops (and which has a
``"search"`` key)::

    SPACE = {
        "input_size": 224,
        "basic_args": {"width_divisor": 8},
        "search": {"resolution": [128, 160, 192, 224]},     # input-resolution options
        "blocks": [
            [["masked-channel", 16, 2, 1, {"op": "conv_k3_hs", "channels": (8, 16, 4)}]],
            [["choice", 28, 2, 2, {"ops": FBNETV2_OPS, "channels": (16, 28, 4),
                                   "expansion": (0.75, 4.5, 0.75)}]],
            [["ir_pool_hs", 1984, 1, 1, {"expansion": 6}]],  # a plain row: fixed
        ],
    }

Row field 1 is the row's maximum width; ``channels`` lists the options (an int, a
``(min, max, step)`` tuple -- ``{"min": .., "max": .., "step": ..}`` in JSON -- or a list).
``masked-channel`` masks one op's output channels; ``choice`` also picks the block type
among ``ops``. ``expansion`` options
(relative to the row's maximum input width) mask the hidden channels of
inverted-residual candidates. A row's channel choice is shared by its repeated
blocks; block type and expansion are chosen per block.

    net = build_supernet("fbnetv2_f_space", num_classes=1000)
    g = net.sample_weights()               # one Gumbel draw per choice (plain softmax in eval)
    loss = ce(net(x, g), y) ...            # forward with those weights
    flops = net.expected_cost("flops", g)  # differentiable, millions
    arch = net.derive()                    # argmax of every choice -> plain arch def
"""

from __future__ import annotations

import copy
import itertools
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..arch_def import ArchDefError, _row_where, check_top_level, parse_row
from ..blocks import ConvBlock, IRBlock, IRPoolBlock, SkipBlock
from ..builder import ClsConvHead, resolve_arch_def
from ..layers import round_channels
from ..ops import OPS, OpSpec, accepted_kwargs
from ..registry import RegistryError, did_you_mean
from .choices import (
    ChannelSpace,
    Choice,
    Weights,
    gumbel_weights,
    log10_size,
    parse_float_options,
    parse_int_options,
    straight_through,
)
from .masked import (
    Cost,
    MaskedConvBlock,
    MaskedGenericBlock,
    MaskedIRBlock,
    MaskedIRPoolBlock,
    MaskedSkipBlock,
    SearchBlock,
    Spatial,
    slice_into,
)
from .mixed import MixedBlock, SubsampledRes, check_resolution_options, run_blocks

SEARCH_OPS = ("masked-channel", "choice", "subsampled-res")
MODES = ("dmasking", "conventional")
SEARCH_KEYS = ("resolution",)
CHOICE_KINDS = ("op", "resolution", "channels", "expansion")


def _alpha_key(label: str) -> str:
    return label.replace(".", "/")  # ParameterDict keys cannot hold dots


# ---- candidates -------------------------------------------------------------------------------
def _uses_expansion(spec: Any) -> bool:
    return isinstance(spec, OpSpec) and spec.block in (IRBlock, IRPoolBlock)


def build_masked_candidate(
    in_space: ChannelSpace,
    out_space: ChannelSpace,
    stride: int,
    op: str,
    hidden_space: Optional[ChannelSpace] = None,
    where: str = "",
    **kwargs: Any,
) -> SearchBlock:
    """A masked block for registered op ``op`` between two channel spaces.

    The registered-op contract, with channel spaces in place of ints: this is the
    builder of the ``masked-channel`` op.
    """
    spec = OPS.get(op)
    if isinstance(spec, OpSpec):
        fixed, block = spec.fixed, spec.block
        if block is ConvBlock:
            if kwargs.get("groups", 1) != 1:
                raise ArchDefError(f'{where}: grouped "{op}" cannot be searched')
            return MaskedConvBlock(
                in_space, out_space, stride, op, fixed["kernel_size"], fixed["act"], kwargs.get("bias", True)
            )
        if block is IRBlock:
            if fixed.get("pw_groups", 1) != 1 or kwargs.get("pwl_groups", 1) != 1:
                raise ArchDefError(
                    f'{where}: op "{op}" uses grouped convs and channel shuffle, which break prefix channel masks; '
                    f"it cannot be used in a search space"
                )
            if kwargs.get("less_se_channels"):
                raise ArchDefError(f"{where}: less_se_channels=True is not supported in search spaces")
            # settings the derived row repeats (width_divisor travels in the derived basic_args)
            extra = {k: v for k, v in kwargs.items() if k in ("bias", "zero_last_bn_gamma", "less_se_channels")}
            return MaskedIRBlock(
                in_space,
                out_space,
                hidden_space,
                stride,
                op,
                fixed["kernel_size"],
                fixed["act"],
                fixed["se"],
                kwargs.get("bias", False),
                kwargs.get("width_divisor", 1),
                kwargs.get("zero_last_bn_gamma", False),
                extra,
            )
        if block is IRPoolBlock:
            return MaskedIRPoolBlock(
                in_space,
                out_space,
                hidden_space,
                stride,
                op,
                fixed["act"],
                kwargs.get("bias", False),
                kwargs.get("width_divisor", 1),
            )
        if block is SkipBlock:
            return MaskedSkipBlock(in_space, out_space, stride, op)
    module = spec(in_space.max, out_space.max, stride, **kwargs)
    if not isinstance(module, nn.Module):
        raise ArchDefError(f'{where}: the builder of op "{op}" returned {type(module).__name__}, not an nn.Module')
    return MaskedGenericBlock(in_space, out_space, stride, op, module, kwargs)


def _refuse_direct_call(*args: Any, **kwargs: Any) -> nn.Module:
    raise ArchDefError(
        "search ops (masked-channel, choice, subsampled-res) build supernets: declare them in a search space and "
        "call mobile_cv.search.build_supernet(space), not build_model()"
    )


class _SearchOp:
    """Registry entry of a search op: usable through build_supernet only."""

    def __init__(self, name: str, builder) -> None:
        self.name, self.builder = name, builder

    def __call__(self, in_channels, out_channels, stride, **kwargs):
        if isinstance(in_channels, ChannelSpace):
            return self.builder(in_channels, out_channels, stride, **kwargs)
        return _refuse_direct_call()

    def accepted_kwargs(self):
        return None


def _build_subsampled_res(in_channels, out_channels, stride, blocks=None, sizes=(), input_size=0, label="resolution"):
    return SubsampledRes(blocks, sizes, input_size, label)


def _build_choice(in_channels, out_channels, stride, candidates=None, factors=None):
    return MixedBlock(candidates, factors, in_channels, out_channels, stride)


for _name, _builder in (
    ("masked-channel", build_masked_candidate),
    ("choice", _build_choice),
    ("subsampled-res", _build_subsampled_res),
):
    if _name not in OPS:
        OPS.register(_name, _SearchOp(_name, _builder))


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


# ---- the supernet ---------------------------------------------------------------------------
class Supernet(nn.Module):
    """Weights and architecture logits of a search space; see the module docstring."""

    def __init__(
        self,
        space: Dict[str, Any],
        num_classes: int = 1000,
        mode: str = "dmasking",
        in_chans: int = 3,
        name: Optional[str] = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ArchDefError(f"mode must be one of {MODES}, got {mode!r}")
        check_top_level(space, name, extra_keys=("search",))
        self.space, self.name, self.mode = copy.deepcopy(space), name, mode
        self.input_size = int(space.get("input_size", 224))
        self.in_chans, self.num_classes = in_chans, num_classes
        self.temperature = 5.0
        self.choices: "OrderedDict[str, Choice]" = OrderedDict()
        self.alphas = nn.ParameterDict()
        self.basic_args = dict(space.get("basic_args", {}))
        blocks, self.block_rows = self._build_blocks()
        search = space.get("search", {}) or {}
        if not isinstance(search, dict):
            raise ArchDefError(f"{self._label()}: 'search' must be a dict like {{'resolution': [...]}}")
        unknown = sorted(set(search) - set(SEARCH_KEYS))
        if unknown:
            raise ArchDefError(
                f"{self._label()}: unknown 'search' key {unknown[0]!r}{did_you_mean(unknown[0], SEARCH_KEYS)} "
                f"(valid: {list(SEARCH_KEYS)})"
            )
        self.res_sizes: Optional[List[int]] = None
        if "resolution" in search:
            stride = 1
            for b in blocks.values():
                stride *= b.stride if isinstance(b.stride, int) else 1
            sizes = check_resolution_options(
                search["resolution"], self.input_size, stride, f"{self._label()}: search.resolution"
            )
            self.res_sizes = sizes
            if len(sizes) > 1:
                self._add_choice("resolution", tuple(sizes), "resolution")
                self.body = OPS.get("subsampled-res")(
                    ChannelSpace.fixed(in_chans),
                    blocks[list(blocks)[-1]].out_space,
                    1,
                    blocks=blocks,
                    sizes=sizes,
                    input_size=self.input_size,
                    label="resolution",
                )
            else:
                self.input_size = sizes[0]
                self.body = None
        else:
            self.body = None
        if self.body is None:
            self.blocks = blocks
        self.out_space = blocks[list(blocks)[-1]].out_space
        self.head = ClsConvHead(self.out_space.max, num_classes)
        self.checkpoint_blocks = False

    # -- construction ---------------------------------------------------------------------
    def _label(self) -> str:
        return f"search space '{self.name}'" if self.name else "search space"

    def _add_choice(self, label: str, options: tuple, kind: str, distinct: int = 0) -> str:
        self.choices[label] = Choice(label, tuple(options), kind, distinct)
        self.alphas[_alpha_key(label)] = nn.Parameter(torch.zeros(len(options)))
        return label

    def _build_blocks(self) -> Tuple["nn.ModuleDict", Dict[str, Tuple[int, int]]]:
        blocks: "OrderedDict[str, MixedBlock]" = OrderedDict()
        rows: Dict[str, Tuple[int, int]] = {}
        in_space = ChannelSpace.fixed(self.in_chans)
        for s, stage in enumerate(self.space["blocks"]):
            index = 0
            for r, row in enumerate(stage):
                where = _row_where(self.name, s, r)
                op, c_max, stride, repeats, kwargs = parse_row(row, where, plain=True)
                ops, out_space, exp_decl, kwargs = self._parse_search_row(op, c_max, kwargs, where, f"xif{s}_{index}")
                for rep in range(repeats):
                    name = f"xif{s}_{index}"
                    blocks[name] = self._build_block(
                        name,
                        ops,
                        in_space,
                        out_space,
                        stride if rep == 0 else 1,
                        exp_decl,
                        kwargs,
                        f"{where}{f', repeat {rep}' if rep else ''} (block {name})",
                    )
                    rows[name] = (s, r)
                    in_space = out_space
                    index += 1
        return nn.ModuleDict(blocks), rows

    def _parse_search_row(self, op: str, c_max: int, kwargs: Dict[str, Any], where: str, first: str):
        kwargs = dict(kwargs)
        if op in ("masked-channel", "choice"):
            out_space = self._row_channels(kwargs.pop("channels", c_max), c_max, where, first)
            ops = _candidate_ops(op, kwargs, where)
        else:
            if "channels" in kwargs or "ops" in kwargs:
                raise ArchDefError(
                    f'{where}: "channels"/"ops" options need a "masked-channel" or "choice" row, not "{op}"'
                )
            out_space, ops = ChannelSpace.fixed(c_max), [op]
        for cand in ops:
            if not isinstance(cand, str) or cand not in OPS:
                raise ArchDefError(
                    f'{where}: unknown candidate op "{cand}"{did_you_mean(str(cand), OPS.names())} '
                    f"(see mobile_cv.OPS.names())"
                )
            if cand in SEARCH_OPS:
                raise ArchDefError(f'{where}: "{cand}" is a search op and cannot be a candidate')
        exp_decl = kwargs.pop("expansion", None)
        if exp_decl is not None and not any(_uses_expansion(OPS.get(c)) for c in ops):
            if not all(OPS.get(c) is OPS.get("skip") for c in ops):
                raise ArchDefError(f"{where}: 'expansion' given but no candidate op {ops} takes one")
        return ops, out_space, exp_decl, kwargs

    def _row_channels(self, decl: Any, c_max: int, where: str, first: str) -> ChannelSpace:
        """The output channel space of a search row (a choice when it has several options)."""
        options = parse_int_options(decl, "channels", where)
        above = [c for c in options if c > c_max]
        if above:
            raise ArchDefError(
                f"{where}: channels option {above[0]} is above the row's maximum {c_max} (field 1); "
                f"raise field 1 or drop the option"
            )
        if len(options) == 1:
            return ChannelSpace.fixed(options[0])
        return ChannelSpace(tuple(options), self._add_choice(f"{first}.channels", tuple(options), "channels"))

    def _candidate_kwargs(self, op: str, kwargs: Dict[str, Any], where: str) -> Dict[str, Any]:
        builder = OPS.get(op)
        accepted = accepted_kwargs(builder)
        merged = {k: v for k, v in self.basic_args.items() if accepted is None or k in accepted}
        merged.update({k: v for k, v in kwargs.items() if accepted is None or k in accepted})
        return merged

    def _build_block(
        self,
        name: str,
        ops: List[str],
        in_space: ChannelSpace,
        out_space: ChannelSpace,
        stride: int,
        exp_decl: Any,
        kwargs: Dict[str, Any],
        where: str,
    ) -> MixedBlock:
        for k in kwargs:
            if not any(accepted_kwargs(OPS.get(op)) is None or k in accepted_kwargs(OPS.get(op)) for op in ops):
                accepted = sorted(set().union(*(accepted_kwargs(OPS.get(op)) or set() for op in ops)))
                raise ArchDefError(
                    f"{where}: no candidate op {ops} accepts kwarg {k!r}{did_you_mean(k, accepted)} "
                    f"(they accept: {accepted})"
                )
        op_label = self._add_choice(f"{name}.op", tuple(ops), "op") if len(ops) > 1 else None
        exp_options: Optional[List[float]] = None
        exp_label = None
        if exp_decl is not None:
            exp_options = parse_float_options(exp_decl, "expansion", where)
            if len(exp_options) > 1 and any(_uses_expansion(OPS.get(op)) for op in ops):
                divisor = int({**self.basic_args, **kwargs}.get("width_divisor", 1))
                distinct = len({round_channels(in_space.max * e, divisor) for e in exp_options})
                exp_label = self._add_choice(f"{name}.expansion", tuple(exp_options), "expansion", distinct)

        candidates: Dict[str, SearchBlock] = {}
        factors: Dict[str, List[Tuple[str, int]]] = {}
        for k, op in enumerate(ops):
            cand_kwargs = self._candidate_kwargs(op, kwargs, where)
            divisor = int(cand_kwargs.get("width_divisor", 1))
            uses_exp = _uses_expansion(OPS.get(op))
            default_exp = 6.0 if uses_exp else None
            exps = exp_options if (exp_options and uses_exp) else ([default_exp] if uses_exp else [None])
            op_factor = [(op_label, k)] if op_label else []
            if self.mode == "dmasking" or (out_space.is_fixed and len(exps) == 1):
                hidden = None
                if uses_exp:
                    widths = tuple(round_channels(in_space.max * e, divisor) for e in exps)
                    hidden = ChannelSpace(widths, exp_label) if exp_label else ChannelSpace.fixed(widths[0])
                candidates[op] = self._make(op, in_space, out_space, stride, hidden, cand_kwargs, where)
                factors[op] = op_factor
                continue
            # conventional DNAS: one separate block per (channel option, expansion option)
            ch_opts = list(enumerate(out_space.widths))
            for (i, c), (j, e) in itertools.product(ch_opts, list(enumerate(exps))):
                fixed_out = ChannelSpace.fixed(c)
                hidden = ChannelSpace.fixed(round_channels(in_space.max * e, divisor)) if uses_exp else None
                key = f"{op}__c{c}" + (f"__e{j}" if exp_label and uses_exp else "")
                candidates[key] = self._make(op, in_space, fixed_out, stride, hidden, cand_kwargs, where)
                f = list(op_factor)
                if out_space.label:
                    f.append((out_space.label, i))
                if exp_label and uses_exp:
                    f.append((exp_label, j))
                factors[key] = f
        return OPS.get("choice")(in_space, out_space, stride, candidates=candidates, factors=factors)

    def _make(self, op, in_space, out_space, stride, hidden, kwargs, where) -> SearchBlock:
        try:
            return OPS.get("masked-channel")(
                in_space, out_space, stride, op=op, hidden_space=hidden, where=where, **kwargs
            )
        except ArchDefError:
            raise
        except (TypeError, ValueError, RuntimeError, RegistryError) as e:
            raise ArchDefError(f'{where}: building candidate "{op}" failed: {e}') from e

    # -- parameters ----------------------------------------------------------------------------
    def arch_parameters(self) -> List[nn.Parameter]:
        """The architecture logits alpha (one vector per choice)."""
        return list(self.alphas.values())

    def weight_parameters(self) -> List[nn.Parameter]:
        """Every other parameter (the network weights)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def set_temperature(self, temperature: float) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def alpha(self, label: str) -> nn.Parameter:
        return self.alphas[_alpha_key(label)]

    # -- mixing weights --------------------------------------------------------------------------
    def sample_weights(self, noise: Optional[bool] = None, hard: Sequence[str] = ()) -> Weights:
        """One mixing-weight vector per choice: Gumbel-softmax in train mode, softmax(alpha/T) in eval.

        Args:
            hard: kinds of choices ("op", "resolution", "channels", "expansion") whose weights
                are the one-hot of the sample in the forward pass with the soft sample's gradient
                (straight-through Gumbel-softmax, as GDAS): only the sampled block type of a
                block, or the sampled resolution, runs.
        """
        unknown = sorted(set(hard) - set(CHOICE_KINDS))
        if unknown:
            raise ValueError(f"unknown choice kind {unknown[0]!r}; valid: {list(CHOICE_KINDS)}")
        noise = self.training if noise is None else noise
        out = {}
        for label, choice in self.choices.items():
            g = gumbel_weights(self.alpha(label), self.temperature, noise)
            out[label] = straight_through(g) if choice.kind in hard else g
        return out

    def probabilities(self) -> Dict[str, torch.Tensor]:
        """softmax(alpha) per choice, detached: the distribution the Gumbel samples are drawn from
        (argmax(alpha + Gumbel noise) has exactly these probabilities; T only relaxes the sample)."""
        return {label: torch.softmax(self.alpha(label).detach(), -1) for label in self.choices}

    def one_hot(self, index: Dict[str, int]) -> Weights:
        """Mixing weights selecting option ``index[label]`` of every choice (others: argmax of alpha)."""
        full = {**self.argmax(), **index}
        dev = next(iter(self.alphas.values())).device if len(self.alphas) else torch.device("cpu")
        return {
            label: nn.functional.one_hot(torch.tensor(full[label]), c.size).float().to(dev)
            for label, c in self.choices.items()
        }

    def argmax(self, weights: Optional[Weights] = None) -> Dict[str, int]:
        if weights is None:
            return {label: int(self.alpha(label).argmax()) for label in self.choices}
        return {label: int(weights[label].argmax()) for label in self.choices}

    # -- forward and cost -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, weights: Optional[Weights] = None) -> torch.Tensor:
        if weights is None:
            weights = self.sample_weights()
        if self.body is not None:
            x = self.body(x, weights)
        else:
            x = run_blocks(self.blocks, x, weights, self.checkpoint_blocks)
        return self.head(x)

    @property
    def checkpoint_blocks(self) -> bool:
        """Activation checkpointing per block (see :func:`~mobile_cv.search.mixed.run_blocks`)."""
        return self._checkpoint_blocks

    @checkpoint_blocks.setter
    def checkpoint_blocks(self, value: bool) -> None:
        self._checkpoint_blocks = bool(value)
        if self.body is not None:
            self.body.checkpoint_blocks = bool(value)

    def _blocks(self) -> "nn.ModuleDict":
        return self.body.blocks if self.body is not None else self.blocks

    def expected_cost(self, kind: str = "flops", weights: Optional[Weights] = None) -> torch.Tensor:
        """Differentiable cost in millions by effective shape propagation (published convention).

        ``weights`` default to softmax(alpha / T) (no noise); pass the weights of the
        forward pass to cost exactly the sampled mixture.
        """
        if kind not in ("flops", "params"):
            raise ValueError(f'kind must be "flops" or "params", got {kind!r}')
        if weights is None:
            weights = self.sample_weights(noise=False)
        total = Cost()
        if self.body is not None:
            c, sp = self.body.cost(Spatial((self.input_size,)), weights)
            total.add(c.flops, c.params)
        else:
            sp = Spatial((self.input_size,))
            for block in self.blocks.values():
                c, sp = block.cost(sp, weights)
                total.add(c.flops, c.params)
        head = self.head_cost(sp, weights)
        total.add(head.flops, head.params)
        value = total.flops if kind == "flops" else total.params
        value = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        return value / 1e6

    def head_cost(self, spatial: Spatial, weights: Weights) -> Cost:
        """Global pool and 1x1 classifier on the last block's output (``spatial`` its size)."""
        c_last = self.out_space.eff(weights)
        cost = Cost()
        cost.add(c_last * spatial.area(weights), 0.0)
        if self.num_classes:
            cost.add(c_last * self.num_classes, c_last * self.num_classes)
        return cost

    # -- derivation -------------------------------------------------------------------------------
    def derive(self, weights: Optional[Weights] = None) -> Dict[str, Any]:
        """The plain arch def of the argmax of every choice (of ``weights`` if given, else of alpha)."""
        index = self.argmax(weights)
        stages: List[List[list]] = []
        c_in = self.in_chans
        for name, block in self._blocks().items():
            s, _ = self.block_rows[name]
            _, cand = block.chosen(index)
            c_out = block.out_space.chosen(index)
            row: list = [cand.op, c_out, block.stride, 1]
            kwargs = cand.derive_kwargs(index, c_in)
            if kwargs:
                row.append(kwargs)
            while len(stages) <= s:
                stages.append([])
            stages[s].append(row)
            c_in = c_out
        arch: Dict[str, Any] = {"input_size": self.input_size}
        if self.res_sizes is not None and "resolution" in self.choices:
            arch["input_size"] = self.res_sizes[index["resolution"]]
        if self.basic_args:
            arch["basic_args"] = dict(self.basic_args)
        arch["blocks"] = stages
        return arch

    def encode(self, arch_def: Dict[str, Any]) -> Dict[str, int]:
        """The choice indices that derive ``arch_def`` (an architecture inside this space).

        Stage by stage, each space row takes the next run of equal-width blocks of
        ``arch_def`` (up to its repeats); blocks a row has left over become identity
        ``skip`` blocks (same width, stride 1). Raises :class:`ArchDefError` naming the
        first block that does not fit, when the space does not contain the architecture.
        """
        from ..arch_def import unify

        index: Dict[str, int] = {label: 0 for label in self.choices}
        label = "arch def to encode"
        target = unify(arch_def, None)
        if "resolution" in self.choices:
            size = int(arch_def.get("input_size", self.input_size))
            if size not in self.res_sizes:
                raise ArchDefError(f"{label}: input_size {size} is not among the resolution options {self.res_sizes}")
            index["resolution"] = self.res_sizes.index(size)
        by_stage: Dict[int, list] = {}
        for spec in target:
            by_stage.setdefault(spec.stage, []).append(spec)
        rows: "OrderedDict[Tuple[int, int], List[str]]" = OrderedDict()
        for name, (s, r) in self.block_rows.items():
            rows.setdefault((s, r), []).append(name)
        blocks = self._blocks()
        c_cur = self.in_chans
        n_stages = len({s for s, _ in rows})
        if set(by_stage) != set(range(n_stages)):
            raise ArchDefError(f"{label}: it has {len(by_stage)} stages, the space has {n_stages}")
        pos = {s: 0 for s in by_stage}

        def fail(msg: str):
            raise ArchDefError(f"{label}: {msg}; the space does not contain this architecture")

        for (s, r), names in rows.items():
            todo, p = by_stage[s], pos[s]
            width, k = self._encode_row_width(names, todo, p, c_cur, s, r, fail)
            space = blocks[names[0]].out_space
            if space.label:
                index[space.label] = space.widths.index(width)
            for i, name in enumerate(names):
                spec = todo[p + i] if i < k else None
                self._encode_block(index, name, spec, c_cur if i == 0 else width, arch_def, fail)
            pos[s] = p + k
            c_cur = width
        for s, todo in by_stage.items():
            if pos[s] != len(todo):
                fail(f"block {todo[pos[s]].name} is left over after the space's rows of stage {s}")
        return index

    def _encode_row_width(self, names: List[str], todo: list, p: int, c_cur: int, s: int, r: int, fail):
        """The width of a space row and how many of the arch def's next blocks (from ``p``) it takes."""
        blocks = self._blocks()
        space, stride = blocks[names[0]].out_space, blocks[names[0]].stride
        first = todo[p] if p < len(todo) else None
        if first is not None and first.out_channels in space.widths and first.stride == stride:
            k = 1
            while (
                k < len(names)
                and p + k < len(todo)
                and todo[p + k].out_channels == first.out_channels
                and todo[p + k].stride == 1
            ):
                k += 1
            return first.out_channels, k
        if c_cur in space.widths and stride == 1:
            return c_cur, 0  # the whole row is identity skips
        what = f"block {first.name} ({first.op}, {first.out_channels} ch)" if first else "the stage's end"
        fail(f"space row {r} of stage {s} (widths {list(space.widths)}) cannot take {what}")

    def _encode_block(self, index: Dict[str, int], name: str, spec, c_in: int, arch_def: Dict[str, Any], fail):
        """Set the block-type and expansion choices of space block ``name`` to derive ``spec``
        (None: an identity skip)."""
        block = self._blocks()[name]
        op = spec.op if spec else "skip"
        cands = [c for c in block.candidates.values() if c.op == op]
        if not cands:
            fail(f'space block {name} has no candidate "{op}" (for {spec.name if spec else "an identity"})')
        op_label = next(
            (lbl for lbl, _ in block.factors[next(iter(block.candidates))] if self.choices[lbl].kind == "op"), None
        )
        if op_label:
            index[op_label] = list(self.choices[op_label].options).index(op)
        hidden_space = getattr(cands[0], "hidden_space", None)
        if spec is None or hidden_space is None:
            return
        h = _plain_block(spec, c_in, arch_def).hidden_channels
        if h not in hidden_space.widths:
            fail(f"block {spec.name}: hidden width {h} is not among the space's {list(hidden_space.widths)}")
        if hidden_space.label:
            index[hidden_space.label] = hidden_space.widths.index(h)

    def copy_to(self, model: nn.Module, weights: Optional[Weights] = None) -> None:
        """Copy the shared weights of the chosen path into ``model = build_model(self.derive(weights))``."""
        index = self.argmax(weights)
        derived_blocks = model.backbone.stages
        for name, block in self._blocks().items():
            _, cand = block.chosen(index)
            slice_into(getattr(derived_blocks, name), cand.weight_source())
        slice_into(model.head, self.head)

    def describe_choices(self) -> List[Dict[str, Any]]:
        """Per choice: label, kind, options and current probabilities (for logs and plots)."""
        probs = self.probabilities()
        return [
            {"label": c.label, "kind": c.kind, "options": list(c.options), "probs": probs[c.label].tolist()}
            for c in self.choices.values()
        ]

    def log10_size(self) -> float:
        """log10 of the number of architectures in the space."""
        return log10_size(list(self.choices.values()))


def _plain_block(spec, c_in: int, arch_def: Dict[str, Any]) -> nn.Module:
    """Build one block of a plain arch def (to read its hidden width)."""
    from ..builder import build_block

    return build_block(spec, c_in, dict(arch_def.get("basic_args", {})))


def build_supernet(
    space_def_or_name: Union[str, Dict[str, Any]], num_classes: int = 1000, mode: str = "dmasking", in_chans: int = 3
) -> Supernet:
    """Build the supernet of a search space (a dict or a name registered in ``arch_defs``).

    Args:
        mode: ``"dmasking"`` (channel masking: one max-width block per choice) or
            ``"conventional"`` (FBNet-style: a separate block per channel option), the
            baseline DMaskingNAS is compared with.
    """
    space, name = resolve_arch_def(space_def_or_name)
    return Supernet(space, num_classes=num_classes, mode=mode, in_chans=in_chans, name=name)
