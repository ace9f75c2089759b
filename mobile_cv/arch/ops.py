"""``OPS``: the registry of ops that arch-def rows name.

Contract of every entry: ``builder(in_channels, out_channels, stride, **kwargs) -> nn.Module``.
The built module should expose ``out_channels`` (the builder falls back to the
requested ``out_channels`` otherwise).

The published op names (``ir_k5_sehsig_hs`` and friends) are kept for
compatibility with the reference FBNet arch defs, but each is one row of a small
declarative table: a block class plus the fields its name fixes (kernel size,
squeeze-excite gate, activation, groups). Register your own op with::

    import mobile_cv

    @mobile_cv.OPS.register("my_op")
    def build_my_op(in_channels, out_channels, stride, **kwargs):
        return MyModule(in_channels, out_channels, stride, **kwargs)

Search ops (``masked-channel``, ``subsampled-res``, ``choice``) live in the same
registry; :mod:`mobile_cv.search` registers them.
"""

from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Set

from torch import nn

from ..errors import InvalidArgumentTypeError
from ..registry import Registry
from .arch_def import ArchDefError
from .blocks import ConvBlock, IRBlock, IRPoolBlock, SkipBlock

OPS = Registry("OPS", contract="builder(in_channels, out_channels, stride, **kwargs) -> nn.Module")


@dataclass(frozen=True)
class OpSpec:
    """A registered op that is a block class with some constructor arguments fixed by its name."""

    block: type
    fixed: Dict[str, Any] = field(default_factory=dict)

    def __call__(self, in_channels: int, out_channels: int, stride: int, **kwargs: Any) -> nn.Module:
        clash = sorted(set(kwargs) & set(self.fixed))
        if clash:
            raise InvalidArgumentTypeError(f"{clash} fixed by the op name ({self.fixed}); use another op name instead")
        return self.block(in_channels, out_channels, stride=stride, **self.fixed, **kwargs)

    def accepted_kwargs(self) -> Optional[Set[str]]:
        return _signature_kwargs(self.block) - set(self.fixed)


def _signature_kwargs(fn: Callable) -> Optional[Set[str]]:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None  # accepts anything
    return {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - {
        "in_channels",
        "out_channels",
        "stride",
        "self",
    }


def check_kwarg_values(builder: Callable, kwargs: Dict[str, Any], where: str) -> None:
    """Refuse values a block would silently misread: a non-boolean for a boolean setting
    (``"bias": "False"`` is true in Python) and non-finite numbers."""
    block = builder.block if isinstance(builder, OpSpec) else builder
    try:
        params = inspect.signature(block).parameters
    except (TypeError, ValueError):  # a builtin or C callable: nothing to read
        params = {}
    for k, v in kwargs.items():
        p = params.get(k)
        if p is not None and isinstance(p.default, bool) and not isinstance(v, bool):
            raise ArchDefError(f"{where}: kwarg {k!r} must be true or false, got {v!r} ({type(v).__name__})")
        if isinstance(v, float) and not math.isfinite(v):
            raise ArchDefError(f"{where}: kwarg {k!r} must be a finite number, got {v!r}")


def accepted_kwargs(builder: Callable) -> Optional[Set[str]]:
    """Keyword arguments an op builder accepts (``None``: it takes ``**kwargs``, anything goes)."""
    if hasattr(builder, "accepted_kwargs"):
        return builder.accepted_kwargs()
    return _signature_kwargs(builder)


# ---- the declarative table ---------------------------------------------------------
_ACT_SUFFIX = {"": "relu", "_hs": "hswish"}
_SE_SUFFIX = {"": None, "_se": "sigmoid", "_sehsig": "hsigmoid"}
_KERNELS = (3, 5, 7)

_TABLE: Dict[str, OpSpec] = {
    "skip": OpSpec(SkipBlock),
    "ir_pool": OpSpec(IRPoolBlock, {"act": "relu"}),
    "ir_pool_hs": OpSpec(IRPoolBlock, {"act": "hswish"}),
}
for k, (act_sfx, act) in itertools.product((1, 3, 5, 7), _ACT_SUFFIX.items()):
    _TABLE[f"conv_k{k}{act_sfx}"] = OpSpec(ConvBlock, {"kernel_size": k, "act": act})
for k, (se_sfx, gate), (act_sfx, act) in itertools.product(_KERNELS, _SE_SUFFIX.items(), _ACT_SUFFIX.items()):
    _TABLE[f"ir_k{k}{se_sfx}{act_sfx}"] = OpSpec(IRBlock, {"kernel_size": k, "se": gate, "act": act})
for k in _KERNELS:  # grouped 1x1 expansion + channel shuffle (FBNet v1 "g2" ops)
    _TABLE[f"ir_k{k}_g2"] = OpSpec(IRBlock, {"kernel_size": k, "se": None, "act": "relu", "pw_groups": 2})

for _name, _spec in _TABLE.items():
    OPS.register(_name, _spec)
