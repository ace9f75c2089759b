"""The registry of named arch defs and search spaces (plain dicts).

The library owns it; definition packages register into it at import (``arch_defs/``
registers the published FBNet/FBNetV2 models and this project's search spaces), and
:func:`mobile_cv.build_model` / :func:`mobile_cv.search.build_supernet` resolve names here::

    from mobile_cv.arch_registry import register_arch_def, get_arch_def, arch_def_names
    register_arch_def("my_net", my_def)   # then build_model("my_net") works
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List

from .arch_def import ArchDefError, check_top_level
from .registry import Registry, RegistryError, did_you_mean

ARCH_DEFS = Registry("ARCH_DEFS", contract='an arch-def dict {"input_size", "basic_args", "blocks"[, "search"]}')


def register_arch_def(name: str, arch_def: Dict[str, Any]) -> None:
    """Register (a deep copy of) ``arch_def`` under ``name``; a name can be registered once."""
    if not isinstance(name, str) or not name:
        raise ArchDefError(f"an arch def name must be a non-empty string, got {name!r}")
    if name in ARCH_DEFS:
        raise RegistryError(f'arch def "{name}" is already registered; pick another name')
    check_top_level(arch_def, name, extra_keys=("search",))
    ARCH_DEFS.register(name, copy.deepcopy(arch_def))


def get_arch_def(name: str) -> Dict[str, Any]:
    """A deep copy of the arch def registered under ``name``."""
    if name not in ARCH_DEFS:
        raise RegistryError(
            f'no arch def named "{name}"{did_you_mean(name, ARCH_DEFS.names())} '
            f"(registered: {', '.join(arch_def_names())})"
        )
    return copy.deepcopy(ARCH_DEFS.get(name))


def arch_def_names(kind: str = "all") -> List[str]:
    """Registered names; ``kind`` is "all", "model" or "space" (a dict with a "search" key)."""
    if kind not in ("all", "model", "space"):
        raise ValueError(f"kind must be 'all', 'model' or 'space', got {kind!r}")
    return [n for n in ARCH_DEFS.names() if kind == "all" or (("search" in ARCH_DEFS.get(n)) == (kind == "space"))]
