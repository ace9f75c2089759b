"""Architectures and search spaces as data.

    import arch_defs
    arch_defs.names()                      # every registered arch def
    arch_defs.get("FBNetV2_F1")            # a deep copy of its dict
    arch_defs.register("my_net", my_def)   # then build_model("my_net") works

Each module here holds plain dicts (``ARCH_DEFS`` maps names to them). Search
spaces register in the same table; ``kind(name)`` tells models from spaces.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List

from mobile_cv.arch_def import ArchDefError, check_top_level
from mobile_cv.registry import RegistryError, did_you_mean

from . import fbnet, fbnetv2, spaces

_ARCH_DEFS: Dict[str, Dict[str, Any]] = {}


def register(name: str, arch_def: Dict[str, Any]) -> None:
    """Register ``arch_def`` under ``name``; a name can be registered once."""
    if not isinstance(name, str) or not name:
        raise ArchDefError(f"an arch def name must be a non-empty string, got {name!r}")
    if name in _ARCH_DEFS:
        raise RegistryError(f'arch def "{name}" is already registered; pick another name')
    check_top_level(arch_def, name, extra_keys=("search",))
    _ARCH_DEFS[name] = copy.deepcopy(arch_def)


def get(name: str) -> Dict[str, Any]:
    """A deep copy of the arch def registered under ``name``."""
    if name not in _ARCH_DEFS:
        raise RegistryError(
            f'no arch def named "{name}"{did_you_mean(name, _ARCH_DEFS)} (registered: {", ".join(names())})'
        )
    return copy.deepcopy(_ARCH_DEFS[name])


def names(kind: str = "all") -> List[str]:
    """Registered names; ``kind`` is "all", "model" or "space" (a dict with a "search" key)."""
    if kind not in ("all", "model", "space"):
        raise ValueError(f"kind must be 'all', 'model' or 'space', got {kind!r}")
    return sorted(n for n, d in _ARCH_DEFS.items() if kind == "all" or (("search" in d) == (kind == "space")))


for _module in (fbnetv2, fbnet, spaces):
    for _name, _def in _module.ARCH_DEFS.items():
        register(_name, _def)
