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

The rows' format is in :mod:`mobile_cv.search.space`.

    net = build_supernet("fbnetv2_f_space", num_classes=1000)
    g = net.sample_mixing()               # one Gumbel draw per choice (plain softmax in eval)
    loss = ce(net(x, g), y) ...            # forward with those mixing weights
    flops = net.expected_cost("flops", g)  # differentiable, millions
    arch = net.derive_arch()                    # argmax of every choice -> plain arch def
    # the most probable architecture within 5% of 60 MFLOPs: mobile_cv.search.budget.budgeted_search
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..arch.arch_def import ArchDefError, check_top_level
from ..arch.arch_registry import arch_def_names
from ..arch.builder import ClsConvHead, resolve_arch_def
from ..errors import InvalidArgumentError
from .choices import Choice, KnownMixing, Mixing, gumbel_softmax, log10_size, straight_through
from .encode import copy_to, derive_arch, encode
from .masked import Cost, Spatial
from .mixed import run_blocks
from .space import MODES, SEARCH_OPS, SpaceBuilder

__all__ = ["CHOICE_KINDS", "MODES", "SEARCH_OPS", "Supernet", "build_supernet"]

CHOICE_KINDS = ("op", "resolution", "channels", "expansion")


def _alpha_key(label: str) -> str:
    return label.replace(".", "/")  # ParameterDict keys cannot hold dots


class Supernet(nn.Module):
    """Weights and architecture logits of a search space; see the module docstring.

    Built by :class:`~mobile_cv.search.space.SpaceBuilder`; derivation and encoding are in
    :mod:`mobile_cv.search.encode`, the budgeted search in :mod:`mobile_cv.search.budget`.
    """

    def __init__(
        self,
        space: Dict[str, Any],
        num_classes: int = 1000,
        mode: str = "dmasking",
        in_chans: int = 3,
        name: Optional[str] = None,
    ) -> None:
        super().__init__()
        check_top_level(space, name, extra_keys=("search",))
        self.space, self.name, self.mode = copy.deepcopy(space), name, mode
        self.input_size = int(space.get("input_size", 224))
        self.in_chans, self.num_classes = in_chans, num_classes
        self.temperature = 5.0
        self.choices: "OrderedDict[str, Choice]" = OrderedDict()
        self.alphas = nn.ParameterDict()
        builder = SpaceBuilder(self.space, name, mode, in_chans, self._add_choice)
        self.basic_args = builder.basic_args
        blocks, self.block_rows = builder.build_blocks()
        self.body, self.res_sizes = builder.build_body(blocks, self.input_size)
        if not self.choices:
            rows = [r for stage in self.space.get("blocks", []) for r in stage if isinstance(r, (list, tuple)) and r]
            if "search" in self.space or any(r[0] in SEARCH_OPS for r in rows):
                raise ArchDefError(
                    f"{name or 'this search space'} has nothing to search: every search row and the resolution "
                    f"search have a single option; give some of them two or more"
                )
            raise ArchDefError(
                f"{name or 'this arch def'} has nothing to search: no row is a search op (masked-channel, choice, "
                f'...) and it has no "search" key; a plain model is built with build_model. Search spaces: '
                f"{', '.join(arch_def_names('space'))}"
            )
        if self.res_sizes is not None and len(self.res_sizes) == 1:
            self.input_size = self.res_sizes[0]
        if self.body is None:
            self.blocks = blocks
        self.out_space = blocks[list(blocks)[-1]].out_space
        self.head = ClsConvHead(self.out_space.max, num_classes)
        self.recompute_blocks = False

    def _add_choice(self, label: str, options: tuple, kind: str, distinct: int = 0) -> str:
        self.choices[label] = Choice(label, tuple(options), kind, distinct)
        self.alphas[_alpha_key(label)] = nn.Parameter(torch.zeros(len(options)))
        return label

    # -- parameters ----------------------------------------------------------------------------
    def arch_parameters(self) -> List[nn.Parameter]:
        """The architecture logits alpha (one vector per choice)."""
        return list(self.alphas.values())

    def arch_parameter_names(self) -> List[str]:
        """The names of :meth:`arch_parameters` in ``named_parameters()``."""
        return [f"alphas.{key}" for key in self.alphas]

    def weight_parameters(self) -> List[nn.Parameter]:
        """Every other parameter (the network weights)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def set_temperature(self, temperature: float) -> None:
        if not temperature > 0:
            raise InvalidArgumentError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def alpha(self, label: str) -> nn.Parameter:
        return self.alphas[_alpha_key(label)]

    # -- mixing weights --------------------------------------------------------------------------
    def sample_mixing(
        self, noise: Optional[bool] = None, hard: Sequence[str] = (), uniform: Sequence[str] = ()
    ) -> Mixing:
        """One mixing-weight vector per choice: Gumbel-softmax in train mode, softmax(alpha/T) in eval.

        Args:
            hard: kinds of choices ("op", "resolution", "channels", "expansion") whose mixing weights
                are the one-hot of the sample in the forward pass with the soft sample's gradient
                (straight-through Gumbel-softmax, as GDAS): only the sampled block type of a
                block, or the sampled resolution, runs.
            uniform: kinds of choices whose option is drawn uniformly (not from alpha) and runs alone:
                a one-hot with no gradient (a single-path weight step, as SPOS trains supernets).
        """
        unknown = sorted((set(hard) | set(uniform)) - set(CHOICE_KINDS))
        if unknown:
            raise InvalidArgumentError(f"unknown choice kind {unknown[0]!r}; valid: {list(CHOICE_KINDS)}")
        noise = self.training if noise is None else noise
        out, chosen = {}, {}
        for label, choice in self.choices.items():
            alpha = self.alpha(label)
            if choice.kind in uniform:
                chosen[label] = torch.randint(alpha.shape[-1], (), device=alpha.device)
                out[label] = F.one_hot(chosen[label], alpha.shape[-1]).to(alpha.dtype)
                continue
            g = gumbel_softmax(alpha, self.temperature, noise)
            if choice.kind in hard:
                chosen[label] = g.detach().argmax(-1)
                g = straight_through(g, chosen[label])
            out[label] = g
        # one read of every sampled index (one device sync), so no block reads a weight to skip an
        # option (soft weights are never zero: nothing is skipped without hard samples)
        index = torch.stack(list(chosen.values())).tolist() if chosen else []
        return KnownMixing(out, dict(zip(chosen, index)))

    def probabilities(self) -> Dict[str, torch.Tensor]:
        """softmax(alpha) per choice, detached: the distribution the Gumbel samples are drawn from
        (argmax(alpha + Gumbel noise) has exactly these probabilities; T only relaxes the sample)."""
        return {label: torch.softmax(self.alpha(label).detach(), -1) for label in self.choices}

    def one_hot(self, index: Dict[str, int]) -> Mixing:
        """Mixing weights selecting option ``index[label]`` of every choice (others: argmax of alpha)."""
        full = {**self.argmax(), **index}
        dev = next(iter(self.alphas.values())).device if len(self.alphas) else torch.device("cpu")
        return {
            label: nn.functional.one_hot(torch.tensor(full[label]), c.size).float().to(dev)
            for label, c in self.choices.items()
        }

    def argmax(self, mixing: Optional[Mixing] = None) -> Dict[str, int]:
        if mixing is None:
            return {label: int(self.alpha(label).argmax()) for label in self.choices}
        return {label: int(mixing[label].argmax()) for label in self.choices}

    # -- forward and cost -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, mixing: Optional[Mixing] = None) -> torch.Tensor:
        if mixing is None:
            mixing = self.sample_mixing()
        if self.body is not None:
            x = self.body(x, mixing)
        else:
            x = run_blocks(self.blocks, x, mixing, self.recompute_blocks)
        return self.head(x)

    @property
    def recompute_blocks(self) -> bool:
        """Activation checkpointing per block (see :func:`~mobile_cv.search.mixed.run_blocks`)."""
        return self._recompute_blocks

    @recompute_blocks.setter
    def recompute_blocks(self, value: bool) -> None:
        self._recompute_blocks = bool(value)
        if self.body is not None:
            self.body.recompute_blocks = bool(value)

    def search_blocks(self) -> "nn.ModuleDict":
        """The supernet's blocks in order (inside the resolution search when there is one)."""
        return self.body.blocks if self.body is not None else self.blocks

    def expected_cost(self, kind: str = "flops", mixing: Optional[Mixing] = None) -> torch.Tensor:
        """Differentiable cost in millions by effective shape propagation (published convention).

        ``mixing`` defaults to softmax(alpha / T) (no noise); pass the mixing weights of the
        forward pass to cost exactly the sampled mixture.
        """
        if kind not in ("flops", "params"):
            raise InvalidArgumentError(f'kind must be "flops" or "params", got {kind!r}')
        if mixing is None:
            mixing = self.sample_mixing(noise=False)
        total = Cost()
        if self.body is not None:
            c, sp = self.body.cost(Spatial((self.input_size,)), mixing)
            total.add(c.flops, c.params)
        else:
            sp = Spatial((self.input_size,))
            for block in self.blocks.values():
                c, sp = block.cost(sp, mixing)
                total.add(c.flops, c.params)
        head = self.head_cost(sp, mixing)
        total.add(head.flops, head.params)
        value = total.flops if kind == "flops" else total.params
        value = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        return value / 1e6

    def head_cost(self, spatial: Spatial, mixing: Mixing) -> Cost:
        """Global pool and 1x1 classifier on the last block's output (``spatial`` its size)."""
        c_last = self.out_space.eff(mixing)
        cost = Cost()
        cost.add(c_last * spatial.area(mixing), 0.0)
        if self.num_classes:
            cost.add(c_last * self.num_classes, c_last * self.num_classes)
        return cost

    # -- derivation ------------------------------------------------------------------------------
    def derive_arch(self, mixing: Optional[Mixing] = None) -> Dict[str, Any]:
        """The plain arch def of the argmax of every choice (of ``mixing`` if given, else of alpha)."""
        return derive_arch(self, self.argmax(mixing))

    def encode(self, arch_def: Dict[str, Any]) -> Dict[str, int]:
        """The choice indices that derive ``arch_def`` (see :func:`mobile_cv.search.encode.encode`)."""
        return encode(self, arch_def)

    def copy_to(self, model: nn.Module, mixing: Optional[Mixing] = None) -> None:
        """Copy the shared weights of the chosen path into ``model = build_model(self.derive_arch(mixing))``."""
        copy_to(self, model, self.argmax(mixing))

    def log10_size(self) -> float:
        """log10 of the number of architectures in the space."""
        return log10_size(list(self.choices.values()))


def build_supernet(
    space_def_or_name: Union[str, Dict[str, Any]], num_classes: int = 1000, mode: str = "dmasking", in_chans: int = 3
) -> Supernet:
    """Build the supernet of a search space (a dict or a registered space name).

    Args:
        mode: ``"dmasking"`` (channel masking: one max-width block per choice) or
            ``"conventional"`` (FBNet-style: a separate block per channel option), the
            baseline DMaskingNAS is compared with.
    """
    space, name = resolve_arch_def(space_def_or_name)
    return Supernet(space, num_classes=num_classes, mode=mode, in_chans=in_chans, name=name)


def worst_case_mixing(net, sampled: Sequence[str], differentiable: bool = False) -> KnownMixing:
    """Mixing weights of the supernet's largest step: every option of a mixed choice runs; a sampled
    ("hard") resolution runs its largest option; a sampled op, width or expansion runs every option
    (an upper bound: which one costs most depends on the block).

    ``differentiable``: the weights are softmax(alpha), so a backward pass to alpha runs through the
    network as the alpha step's does (constant weights would leave alpha out of the graph, and
    that backward pass, with its memory, would not happen at all)."""
    dev = next(iter(net.alphas.values())).device if len(net.alphas) else torch.device("cpu")
    weights, chosen = {}, {}
    for label, c in net.choices.items():
        if differentiable:
            weights[label] = torch.softmax(net.alpha(label), -1)
        else:
            weights[label] = torch.full((c.size,), 1.0 / c.size, device=dev)
        if c.kind == "resolution" and "resolution" in sampled:
            chosen[label] = max(range(c.size), key=lambda i: c.options[i])
    return KnownMixing(weights, chosen)
