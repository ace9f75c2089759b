"""The registry of named arch defs and search spaces (plain dicts).

The library owns it; definition packages register into it at import (``arch_defs/``
registers the published FBNet/FBNetV2 models and this project's search spaces), and
:func:`mobile_cv.build_model` / :func:`mobile_cv.search.build_supernet` resolve names here::

    from mobile_cv.arch.arch_registry import register_arch_def, get_arch_def, arch_def_names
    register_arch_def("my_net", my_def)   # then build_model("my_net") works

:func:`resolve_arch_def` is the one answer to "is this a registered name or a file?": every
tool, the zoo and export pass what the user typed through it.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, List, Optional, Tuple, Union

from ..errors import InvalidArgumentError
from ..registry import Registry, RegistryError, did_you_mean
from .arch_def import ArchDefError, check_top_level, load_arch_def_file

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
        raise InvalidArgumentError(f"kind must be 'all', 'model' or 'space', got {kind!r}")
    return [n for n in ARCH_DEFS.names() if kind == "all" or (("search" in ARCH_DEFS.get(n)) == (kind == "space"))]


ARCH_FILE_SUFFIXES = (".json", ".py")


def is_arch_file(value: str) -> bool:
    """Whether ``value`` names an arch-def file (``.json``/``.py``, or any path) rather than a registered name."""
    return value.endswith(ARCH_FILE_SUFFIXES) or os.sep in value


def resolve_arch_def(spec: Union[str, Dict[str, Any]]) -> Tuple[Dict[str, Any], Optional[str]]:
    """``(arch_def, name)`` from an arch-def dict, a registered name or a ``.json``/``.py`` file.

    The dict is always a copy. ``name`` is the registered name, the file's path, or None for
    a dict; error messages about the arch def name it.
    """
    if isinstance(spec, dict):
        return copy.deepcopy(spec), None
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise ArchDefError(
            f"expected an arch def dict, a registered arch name or an arch-def file, got {type(spec).__name__}"
        )
    if is_arch_file(spec):
        if os.path.isdir(spec):
            raise ArchDefError(f"{spec!r} is a folder, not an arch-def file; give its arch_def.json (or a .py file)")
        if not os.path.isfile(spec):
            raise ArchDefError(
                f"{spec!r}: no such arch-def file; give a registered name (arch_defs.names()) or an existing "
                f".json/.py file (a search writes OUTPUT_DIR/arch_def.json)"
            )
        return load_arch_def_file(spec), spec
    return get_arch_def(spec), spec
