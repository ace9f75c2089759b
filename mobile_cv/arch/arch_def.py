"""Arch defs: architectures (and search spaces) as plain Python dicts.

Format (the reference FBNet format)::

    {
        "input_size": 224,                      # default resolution
        "basic_args": {"width_divisor": 8},     # defaults for every block that accepts them
        "blocks": [                             # a list of stages
            [["conv_k3_hs", 16, 2, 1]],         # a stage is a list of rows
            [["ir_k5_hs", 24, 2, 2, {"expansion": 4}, {"zero_last_bn_gamma": True}]],
        ],
    }

A row is ``[op, out_channels, stride, repeats, {kwargs}, ...]``. The trailing dicts
merge left to right. :func:`unify` expands ``repeats`` into that many blocks; only
the first keeps the row's stride, the rest use stride 1. Blocks are named
``xif{stage}_{block}`` by position in the expanded stage (the published checkpoint
layout).

``basic_args`` give defaults: a block takes each key its op accepts (a row's own
kwargs win); a ``basic_args`` key that no block in the model accepts is an error.
``width_divisor`` (default 1, as in the reference builder) rounds computed widths.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import os
import runpy
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional

from ..errors import UserError
from ..registry import did_you_mean
from .layers import round_channels

TOP_LEVEL_KEYS = ("input_size", "basic_args", "blocks")


class ArchDefError(UserError, ValueError):
    """An arch def (or search space) is malformed; the message names the place and the fix."""


@dataclass
class BlockSpec:
    """One block of a unified arch def."""

    stage: int
    index: int  # position in the expanded stage -> module name xif{stage}_{index}
    op: str
    out_channels: Any  # int for plain models; search rows may hold channel options
    stride: int
    kwargs: Dict[str, Any] = field(default_factory=dict)
    row: int = 0  # row of the stage it came from (for error messages)
    repeat: int = 0  # which repeat of that row (0 = the first)

    @property
    def name(self) -> str:
        return f"xif{self.stage}_{self.index}"

    def where(self, arch_name: Optional[str] = None) -> str:
        prefix = f"arch def '{arch_name}': " if arch_name else ""
        rep = f", repeat {self.repeat}" if self.repeat else ""
        return f'{prefix}stage {self.stage}, row {self.row}{rep} (block {self.name}, op "{self.op}")'


def _row_where(arch_name: Optional[str], stage: int, row: int) -> str:
    prefix = f"arch def '{arch_name}': " if arch_name else ""
    return f"{prefix}stage {stage}, row {row}"


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_top_level(arch_def: Any, arch_name: Optional[str] = None, extra_keys: Iterable[str] = ()) -> None:
    """Check the outer dict: its keys, ``input_size``, ``basic_args`` and the stage lists."""
    label = f"arch def '{arch_name}'" if arch_name else "arch def"
    if not isinstance(arch_def, dict):
        raise ArchDefError(f"{label}: expected a dict with keys {list(TOP_LEVEL_KEYS)}, got {type(arch_def).__name__}")
    valid = set(TOP_LEVEL_KEYS) | set(extra_keys)
    unknown = sorted(set(arch_def) - valid)
    if unknown:
        raise ArchDefError(
            f"{label}: unknown key {unknown[0]!r}{did_you_mean(unknown[0], valid)} (valid keys: {sorted(valid)})"
        )
    if "blocks" not in arch_def:
        raise ArchDefError(f"{label}: missing the 'blocks' key (a list of stages, each a list of rows)")
    if "input_size" in arch_def and not (_is_int(arch_def["input_size"]) and arch_def["input_size"] > 0):
        raise ArchDefError(f"{label}: 'input_size' must be a positive int, got {arch_def['input_size']!r}")
    if not isinstance(arch_def.get("basic_args", {}), dict):
        raise ArchDefError(f"{label}: 'basic_args' must be a dict, got {type(arch_def['basic_args']).__name__}")
    stages = arch_def["blocks"]
    if not isinstance(stages, (list, tuple)) or not stages:
        raise ArchDefError(f"{label}: 'blocks' must be a non-empty list of stages")
    for s, stage in enumerate(stages):
        if not isinstance(stage, (list, tuple)) or not stage:
            raise ArchDefError(
                f"{label}: stage {s} must be a non-empty list of rows "
                f"[op, out_channels, stride, repeats, {{kwargs}}...], "
                f"got {stage!r}"
            )


def parse_row(row: Any, where: str, plain: bool = True) -> tuple:
    """Validate one row; return ``(op, out_channels, stride, repeats, kwargs)``.

    With ``plain=False`` (search spaces) ``out_channels`` is passed through for the
    search op to validate.
    """
    fmt = "rows are [op, out_channels, stride, repeats, {kwargs}...]"
    if not isinstance(row, (list, tuple)):
        raise ArchDefError(f"{where}: a row must be a list; {fmt}; got {row!r}")
    if len(row) < 4:
        raise ArchDefError(f"{where}: row {list(row)!r} has {len(row)} fields, needs at least 4; {fmt}")
    op, out_channels, stride, repeats, *extra = row
    if not isinstance(op, str):
        raise ArchDefError(f"{where}: field 0 (op) must be an op name string, got {op!r}; {fmt}")
    if plain and not (_is_int(out_channels) and out_channels > 0):
        raise ArchDefError(f"{where}: field 1 (out_channels) must be a positive int, got {out_channels!r}")
    if not (_is_int(stride) and stride > 0):
        raise ArchDefError(f"{where}: field 2 (stride) must be a positive int, got {stride!r}")
    if not (_is_int(repeats) and repeats > 0):
        raise ArchDefError(f"{where}: field 3 (repeats) must be a positive int, got {repeats!r}")
    kwargs: Dict[str, Any] = {}
    for i, d in enumerate(extra, start=4):
        if not isinstance(d, dict):
            raise ArchDefError(f"{where}: field {i} must be a dict of block kwargs, got {d!r}; {fmt}")
        for k in d:
            if not isinstance(k, str):
                raise ArchDefError(f"{where}: field {i} has a non-string key {k!r}")
        kwargs.update(copy.deepcopy(d))
    return op, out_channels, int(stride), int(repeats), kwargs


def unify(arch_def: Dict[str, Any], arch_name: Optional[str] = None, plain: bool = True) -> List[BlockSpec]:
    """Validate ``arch_def`` and expand it into one :class:`BlockSpec` per block."""
    check_top_level(arch_def, arch_name, extra_keys=() if plain else ("search",))
    out: List[BlockSpec] = []
    for s, stage in enumerate(arch_def["blocks"]):
        index = 0
        for r, row in enumerate(stage):
            op, c, stride, repeats, kwargs = parse_row(row, _row_where(arch_name, s, r), plain)
            for rep in range(repeats):
                out.append(BlockSpec(s, index, op, c, stride if rep == 0 else 1, copy.deepcopy(kwargs), r, rep))
                index += 1
    return out


def scale_arch_def(arch_def: Dict[str, Any], width_mult: float = 1.0, depth_mult: float = 1.0) -> Dict[str, Any]:
    """A copy of a plain arch def with widths and depths scaled.

    Widths: every row's ``out_channels`` becomes ``round_channels(c * width_mult, d)``
    with ``d = max(8, basic_args.width_divisor)``. Depths: each stage keeps
    ``max(1, ceil(n * depth_mult))`` of its ``n`` blocks; extra blocks repeat the
    stage's last row with stride 1, dropped blocks come off the end of the stage.
    """
    for key, value in (("width_mult", width_mult), ("depth_mult", depth_mult)):
        if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value < math.inf):
            raise ArchDefError(f"{key} must be a positive finite number, got {value!r}")
    ret = copy.deepcopy(arch_def)
    if width_mult == 1.0 and depth_mult == 1.0:
        return ret
    unify(ret)  # validate rows before taking them apart
    divisor = max(8, int(ret.get("basic_args", {}).get("width_divisor", 1)))
    new_stages = []
    for stage in ret["blocks"]:
        rows = []
        for row in stage:  # expand repeats so depth scaling works per block
            op, c, stride, n, *extra = row
            rows.append([op, c, stride, 1, *extra])
            rows.extend([op, c, 1, 1, *copy.deepcopy(extra)] for _ in range(n - 1))
        target = max(1, math.ceil(len(rows) * depth_mult))
        while len(rows) < target:
            op, c, _, _, *extra = rows[-1]
            rows.append([op, c, 1, 1, *copy.deepcopy(extra)])
        rows = rows[:target]
        for row in rows:
            row[1] = round_channels(row[1] * width_mult, divisor)
        new_stages.append(rows)
    ret["blocks"] = new_stages
    return ret


def to_jsonable(arch_def: Dict[str, Any]) -> Dict[str, Any]:
    """Tuples -> lists so an arch def compares equal to its JSON round trip."""

    def conv(x: Any) -> Any:
        if isinstance(x, (list, tuple)):
            return [conv(v) for v in x]
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        return x

    return conv(arch_def)


def format_arch_def_py(arch_def: Dict[str, Any], var_name: str = "ARCH_DEF") -> str:
    """Python source for an arch def: one row per line, importable as ``var_name``."""
    lines = [f"{var_name} = {{"]
    for key in arch_def:
        if key == "blocks":
            continue
        lines.append(f"    {key!r}: {arch_def[key]!r},")
    lines.append("    'blocks': [")
    for s, stage in enumerate(arch_def["blocks"]):
        lines.append(f"        # stage {s}")
        lines.append("        [")
        for row in stage:
            lines.append(f"            {list(row)!r},")
        lines.append("        ],")
    lines.append("    ],")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _refuse_non_finite(path: str):
    def parse_constant(name: str):  # json reads NaN and Infinity by default
        raise ArchDefError(f"arch def file {path!r} holds {name}: every number must be finite")

    return parse_constant


def load_arch_def_file(path: str) -> Dict[str, Any]:
    """Read an arch def from a ``.json`` file or a ``.py`` file defining ``ARCH_DEF``."""
    if not os.path.isfile(path):
        raise ArchDefError(f"arch def file {path!r} does not exist")
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                arch_def = json.load(f, parse_constant=_refuse_non_finite(path))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArchDefError(f"arch def file {path!r} is not valid UTF-8 JSON: {e}") from e
    elif path.endswith(".py"):
        try:
            namespace = runpy.run_path(path)
        except (SyntaxError, UnicodeDecodeError) as e:
            raise ArchDefError(f"arch def file {path!r} is not valid Python: {type(e).__name__}: {e}") from e
        except Exception as e:  # the file's own code failed: name the file, not our frames
            raise ArchDefError(f"arch def file {path!r} raised {type(e).__name__} when run: {e}") from e
        if "ARCH_DEF" not in namespace:
            raise ArchDefError(f"arch def file {path!r} defines no ARCH_DEF variable")
        arch_def = namespace["ARCH_DEF"]
    else:
        raise ArchDefError(f"arch def file {path!r}: expected a .json or .py file")
    check_top_level(arch_def, os.path.basename(path), extra_keys=("search",))
    return arch_def
