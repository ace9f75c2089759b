"""The generic builder: arch def (dict or registered name) -> classification network.

    model = mobile_cv.build_model("FBNetV2_F1", num_classes=1000)
    model = mobile_cv.build_model(my_arch_def, num_classes=10, in_chans=1, width_mult=0.5)

The module tree is the published FBNet checkpoint layout:
``backbone.stages.xif{stage}_{block}.*`` then ``head.conv`` (a 1x1 conv with bias
after global average pooling), so ``model.load_state_dict(published_sd)`` works
with ``strict=True``.
"""

import copy
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Set, Union

import torch
from torch import nn

from ..errors import InvalidArgumentError, InvalidArgumentTypeError
from ..registry import RegistryError, did_you_mean
from .arch_def import ArchDefError, BlockSpec, scale_arch_def, unify
from .arch_registry import resolve_arch_def
from .ops import OPS, OpSpec, accepted_kwargs, check_kwarg_values


def build_block(
    spec: BlockSpec,
    in_channels: int,
    basic_args: Dict[str, Any],
    arch_name: Optional[str] = None,
    used_basic_args: Optional[Set[str]] = None,
) -> nn.Module:
    """Build one block through :data:`OPS`, turning every failure into an :class:`ArchDefError`."""
    where = spec.where(arch_name)
    try:
        builder = OPS.get(spec.op)
    except RegistryError:
        raise ArchDefError(
            f'{where}: unknown op "{spec.op}"{did_you_mean(spec.op, OPS.names())} '
            f"(see mobile_cv.OPS.names() for all {len(OPS)} ops)"
        ) from None
    accepted = accepted_kwargs(builder)
    if accepted is not None:
        bad = sorted(set(spec.kwargs) - accepted)
        fixed = getattr(builder, "fixed", {})
        if bad and bad[0] in fixed:
            raise ArchDefError(
                f'{where}: kwarg {bad[0]!r} is fixed by the op name "{spec.op}" ({bad[0]}={fixed[bad[0]]!r}); '
                f"use the op name that encodes the value you want instead"
            )
        if bad:
            raise ArchDefError(
                f'{where}: op "{spec.op}" does not accept kwarg {bad[0]!r}{did_you_mean(bad[0], accepted)} '
                f"(it accepts: {sorted(accepted)})"
            )
        kwargs = {k: v for k, v in basic_args.items() if k in accepted}
    else:
        kwargs = dict(basic_args)
    if used_basic_args is not None:
        used_basic_args.update(kwargs)
    kwargs.update(spec.kwargs)
    check_kwarg_values(builder, kwargs, where)
    # a user's op may raise anything for a bad row; the built-in blocks raise these three
    caught = (TypeError, ValueError, RuntimeError) if isinstance(builder, OpSpec) else Exception
    try:
        module = builder(in_channels, spec.out_channels, spec.stride, **copy.deepcopy(kwargs))
    except caught as e:
        raise ArchDefError(
            f'{where}: building op "{spec.op}" from {in_channels} input channels failed: {type(e).__name__}: {e}'
        ) from e
    if not isinstance(module, nn.Module):
        raise ArchDefError(f'{where}: the builder of op "{spec.op}" returned {type(module).__name__}, not an nn.Module')
    return module


class FBNetBackbone(nn.Module):
    """All stages of an arch def as one ``nn.Sequential`` named ``stages``."""

    def __init__(self, arch_def: Dict[str, Any], in_chans: int = 3, arch_name: Optional[str] = None) -> None:
        super().__init__()
        specs = unify(arch_def, arch_name)
        basic_args = dict(arch_def.get("basic_args", {}))
        used: Set[str] = set()
        blocks: "OrderedDict[str, nn.Module]" = OrderedDict()
        channels, reduction = in_chans, 1
        self.stage_info: List[Dict[str, Any]] = []
        for spec in specs:
            block = build_block(spec, channels, basic_args, arch_name, used)
            blocks[spec.name] = block
            channels = int(getattr(block, "out_channels", spec.out_channels))
            reduction *= spec.stride
            info = {"stage": spec.stage, "num_chs": channels, "reduction": reduction, "module": f"stages.{spec.name}"}
            if self.stage_info and self.stage_info[-1]["stage"] == spec.stage:
                self.stage_info[-1] = info
            else:
                self.stage_info.append(info)
        unused = sorted(set(basic_args) - used)
        if unused:
            raise ArchDefError(
                f"arch def{f' {arch_name!r}' if arch_name else ''}: basic_args key {unused[0]!r} is accepted by "
                f"no block of this model; remove it or fix its name"
            )
        self.stages = nn.Sequential(blocks)
        self.in_chans, self.out_channels = in_chans, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


GLOBAL_POOLS = ("avg", "")  # timm's global_pool values: average pooling, or none


class ClsConvHead(nn.Module):
    """Global average pool -> [dropout] -> 1x1 conv with bias -> flatten (``num_classes=0``: pooled features).

    ``global_pool=""`` (timm's "no pooling") skips the pool and the flatten: the head returns the
    feature map, or the 1x1 classifier's logits at every position.
    """

    def __init__(self, in_channels: int, num_classes: int, drop_rate: float = 0.0, global_pool: str = "avg") -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else None
        self.conv = nn.Conv2d(in_channels, num_classes, 1) if num_classes > 0 else None
        self.in_channels, self.num_classes = in_channels, num_classes
        self.global_pool = check_global_pool(global_pool)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.avg_pool(x) if self.global_pool == "avg" else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        if self.dropout is not None:
            x = self.dropout(x)
        if self.conv is not None:
            x = self.conv(x)
        return x.flatten(1) if self.global_pool == "avg" else x


def check_global_pool(global_pool: str) -> str:
    if global_pool not in GLOBAL_POOLS:
        raise InvalidArgumentError(
            f"global_pool {global_pool!r}: only 'avg' (average pooling) or '' (none) is supported"
        )
    return global_pool


class FBNet(nn.Module):
    """Backbone + classification head built from an arch def.

    Attributes:
        arch_def: the (scaled) arch def the model was built from, a plain dict.
        input_size: its default resolution.
    """

    def __init__(
        self,
        arch_def: Dict[str, Any],
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        arch_name: Optional[str] = None,
    ) -> None:
        super().__init__()
        if not (isinstance(num_classes, int) and num_classes >= 0):
            raise InvalidArgumentError(f"num_classes must be an int >= 0, got {num_classes!r}")
        if not (isinstance(in_chans, int) and in_chans > 0):
            raise InvalidArgumentError(f"in_chans must be a positive int, got {in_chans!r}")
        self.backbone = FBNetBackbone(arch_def, in_chans, arch_name)
        self.head = ClsConvHead(self.backbone.out_channels, num_classes, drop_rate)
        self.arch_def = copy.deepcopy(arch_def)
        self.arch_name = arch_name
        self.input_size = int(arch_def.get("input_size", 224))
        self.num_classes, self.in_chans = num_classes, in_chans
        # timm's contract: features out of forward_features, and into the classifier (no hidden head layer)
        self.num_features = self.head_hidden_size = self.backbone.out_channels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The head on ``forward_features``' output; ``pre_logits``: the pooled features
        (``head_hidden_size`` of them) without the classifier (timm's contract)."""
        if pre_logits:
            x = self.head.pool(x)
            return x.flatten(1) if self.head.global_pool == "avg" else x
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def get_classifier(self) -> Optional[nn.Module]:
        return self.head.conv

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``0`` removes it; the model then returns pooled features).

        ``global_pool`` (timm's API): ``"avg"``, ``""`` (no pooling: feature maps or per-position
        logits) or None (keep the current one).
        """
        if global_pool is not None:
            self.head.global_pool = check_global_pool(global_pool)
        self.head.conv = nn.Conv2d(self.num_features, num_classes, 1) if num_classes > 0 else None
        self.head.num_classes = self.num_classes = num_classes


_OVERRIDES = ("in_chans", "width_mult", "depth_mult", "input_size", "basic_args", "drop_rate")


def build_model(arch_def_or_name: Union[str, Dict[str, Any]], num_classes: int = 1000, **overrides: Any) -> FBNet:
    """Build a classification model from an arch def dict or a registered arch name.

    Args:
        arch_def_or_name: a dict in the arch-def format, a registered name (``arch_defs.names()``) or
            the path of a ``.json``/``.py`` arch-def file.
        num_classes: classifier outputs (0: no classifier, the model returns pooled features).
        **overrides: ``in_chans`` (3), ``width_mult`` / ``depth_mult`` (1.0, see
            :func:`mobile_cv.arch.arch_def.scale_arch_def`), ``input_size`` (the def's default
            resolution), ``basic_args`` (merged over the def's), ``drop_rate`` (dropout before
            the classifier, 0).
    """
    unknown = sorted(set(overrides) - set(_OVERRIDES))
    if unknown:
        raise InvalidArgumentTypeError(
            f"build_model() got an unknown override {unknown[0]!r}{did_you_mean(unknown[0], _OVERRIDES)} "
            f"(valid: {list(_OVERRIDES)})"
        )
    arch_def, name = resolve_arch_def(arch_def_or_name)
    if isinstance(arch_def, dict) and "search" in arch_def:
        label = f"'{name}'" if name else "this arch def"
        raise ArchDefError(
            f"{label} is a search space (it has a 'search' key): build its supernet with "
            f"mobile_cv.search.build_supernet, or search it with tools/search.py SEARCH.SPACE ..."
        )
    if "basic_args" in overrides:
        arch_def["basic_args"] = {**arch_def.get("basic_args", {}), **overrides["basic_args"]}
    if "input_size" in overrides:
        arch_def["input_size"] = overrides["input_size"]
    arch_def = scale_arch_def(arch_def, overrides.get("width_mult", 1.0), overrides.get("depth_mult", 1.0))
    return FBNet(
        arch_def,
        num_classes=num_classes,
        in_chans=overrides.get("in_chans", 3),
        drop_rate=overrides.get("drop_rate", 0.0),
        arch_name=name,
    )
