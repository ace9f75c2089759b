"""yacs config with errors that name the key and the closest real keys.

yacs reports an unknown key as a bare ``KeyError`` (from a file) or an
``AssertionError`` (from the command line), and refuses an int where a float is
expected. :class:`CfgNode` checks every incoming key against the defaults first,
suggests the closest real keys, and coerces the obvious cases (``1`` -> ``1.0``,
the YAML string ``"1e-4"`` -> ``1e-4``).
"""

from __future__ import annotations

import ast
import difflib
import logging
import os
from typing import Any, Iterable, List, Sequence, Tuple

import yaml
from yacs.config import CfgNode as _YacsNode

from ..registry import did_you_mean
from .defaults import BOOL_OR_AUTO_KEYS, CHOICES, DEFAULTS, LIST_CHOICES, RENAMED_KEYS
from .errors import ConfigError, UnknownConfigKeyError
from .ranges import check_ranges

logger = logging.getLogger("mobile_cv")


def _flatten(node: Any, prefix: str = "") -> List[Tuple[str, Any]]:
    """``[(full_key, value)]`` of every leaf of a (nested) dict."""
    out: List[Tuple[str, Any]] = []
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


def _closest_keys(key: str, keys: Sequence[str]) -> List[str]:
    """Real keys close to ``key``, by full name and by last component."""
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    leaf = key.rsplit(".", 1)[-1]
    leaves = {k: k.rsplit(".", 1)[-1] for k in keys}
    for hit in difflib.get_close_matches(leaf, set(leaves.values()), n=3, cutoff=0.75):
        close.extend(k for k, v in leaves.items() if v == hit and k not in close)
    return close[:3]


def _coerce(value: Any, default: Any, key: str, source: str) -> Any:
    """``value`` converted to the type of ``default``, or a :class:`ConfigError`."""
    if default is None or value is None or type(value) is type(default):
        return value
    if key in BOOL_OR_AUTO_KEYS and (isinstance(value, bool) or value == "auto"):
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
        # PyYAML reads "1e-4" (no dot) as a string
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = None
        if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
            return _coerce(parsed, default, key, source)
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    raise ConfigError(
        f"config key {key} {source}: expected type {type(default).__name__} (current value {default!r}), "
        f"got {type(value).__name__} {value!r}"
    )


class CfgNode(_YacsNode):
    """A yacs ``CfgNode`` whose merges check keys and types against the defaults."""

    def flat_items(self) -> List[Tuple[str, Any]]:
        """``[(dotted key, value)]`` of every leaf, e.g. ``("SOLVER.BASE_LR", 0.1)``."""
        return _flatten(self)

    def all_keys(self) -> List[str]:
        """Every leaf key as a dotted name."""
        return [k for k, _ in _flatten(self)]

    def _set_checked(self, pairs: Iterable[Tuple[str, Any]], source: str) -> None:
        keys = self.all_keys()
        nodes = {k.rsplit(".", 1)[0] for k in keys if "." in k}
        for full_key, value in pairs:
            if full_key in RENAMED_KEYS:
                new = RENAMED_KEYS[full_key]
                logger.warning(
                    "config key %s %s is renamed %s; the old name works until the next release", full_key, source, new
                )
                full_key = new
            if full_key not in keys:
                what = "is a group of keys, not a key" if full_key in nodes else "does not exist"
                close = _closest_keys(full_key, keys)
                hint = ("; did you mean " + " or ".join(f'"{c}"' for c in close) + "?") if close else ""
                raise UnknownConfigKeyError(
                    f'config key "{full_key}" {source} {what}{hint} '
                    f"(every key is listed, with comments, in mobile_cv/config/defaults.py)"
                )
            *parents, leaf = full_key.split(".")
            node = self
            for p in parents:
                node = node[p]
            if full_key == "VERSION" and value != node[leaf]:
                raise ConfigError(
                    f"config {source} has VERSION {value!r} but this code reads VERSION {node[leaf]!r}; "
                    f"update the file to the current defaults (mobile_cv/config/defaults.py)"
                )
            node[leaf] = _coerce(value, node[leaf], full_key, source)

    def merge_from_file(self, cfg_filename: str, _chain: Sequence[str] = ()) -> None:
        """Merge a YAML file; unknown keys and wrong types raise :class:`ConfigError`. A file with
        ``_BASE_: other.yaml`` (a path relative to the file) holds only what differs from that
        file: the base is merged first, then the file (detectron2's convention)."""
        if os.path.isdir(cfg_filename):
            raise ConfigError(f"config file {cfg_filename!r} is a folder; give a YAML file (e.g. configs/*.yaml)")
        if not os.path.isfile(cfg_filename):
            raise ConfigError(f"config file {cfg_filename!r} does not exist")
        try:
            with open(cfg_filename, encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {cfg_filename!r} is not valid UTF-8 YAML: {e}") from e
        except OSError as e:
            raise ConfigError(f"config file {cfg_filename!r} cannot be read: {e.strerror}") from e
        if loaded is None:
            return
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {cfg_filename!r} must hold a mapping of keys, got {type(loaded).__name__}")
        base = loaded.pop("_BASE_", None)
        if base is not None:
            if not isinstance(base, str) or not base:
                raise ConfigError(f"config file {cfg_filename!r}: _BASE_ must be the path of a YAML file, got {base!r}")
            path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(cfg_filename)), base))
            chain = [*_chain, os.path.abspath(cfg_filename)]
            if path in chain:
                raise ConfigError(
                    f"config file {cfg_filename!r}: _BASE_ {base!r} leads back to itself ({' -> '.join(chain)})"
                )
            if not os.path.isfile(path):
                raise ConfigError(f"config file {cfg_filename!r}: its _BASE_ {base!r} does not exist ({path})")
            self.merge_from_file(path, chain)
        self._set_checked(_flatten(loaded), f"in {cfg_filename}")

    def merge_from_list(self, cfg_list: Sequence[Any]) -> None:
        """Merge ``[KEY, VALUE, KEY, VALUE, ...]`` (command-line strings are literal-eval'ed)."""
        if len(cfg_list) % 2:
            raise ConfigError(f"overrides must be KEY VALUE pairs; got an odd number of items: {list(cfg_list)}")
        pairs = [(str(k), self._decode_cfg_value(v)) for k, v in zip(cfg_list[0::2], cfg_list[1::2])]
        self._set_checked(pairs, "(command line)")

    def merge_from_other_cfg(self, cfg_other: Any) -> None:
        """Merge another CfgNode or nested dict with the same checks."""
        self._set_checked(_flatten(cfg_other), "(merged config)")


def _get(cfg: CfgNode, key: str) -> Any:
    value = cfg
    for part in key.split("."):
        value = value[part]
    return value


def _check_choices(cfg: CfgNode) -> None:
    for key, choices in CHOICES.items():
        value = _get(cfg, key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value not in choices or (key in BOOL_OR_AUTO_KEYS and number):  # 1 == True, but 1 is no answer
            close = did_you_mean(str(value), [str(c) for c in choices])
            raise ConfigError(f"config key {key} must be one of {list(choices)}, got {value!r}{close}")
    for key, choices in LIST_CHOICES.items():
        for item in _get(cfg, key):
            if item not in choices:
                raise ConfigError(
                    f"config key {key}: {item!r} is not one of {list(choices)}{did_you_mean(str(item), choices)}"
                )


def check_config(cfg: CfgNode) -> None:
    """Check values that have a fixed set of choices or a range; raise :class:`ConfigError`."""
    _check_choices(cfg)
    check_ranges(cfg)
    if cfg.DATA.VAL_FRACTION + cfg.DATA.TEST_FRACTION >= 1.0:
        raise ConfigError("DATA.VAL_FRACTION + DATA.TEST_FRACTION must leave some images for training (< 1)")
    per_step = sorted(set(cfg.SEARCH.SAMPLED_CHOICES) - {"resolution"})
    if cfg.SEARCH.COMPILE and per_step:
        raise ConfigError(
            f"SEARCH.COMPILE cannot be used with SEARCH.SAMPLED_CHOICES {list(cfg.SEARCH.SAMPLED_CHOICES)}: a sampled "
            f"{per_step[0]!r} choice runs a different network each step, and each would be compiled anew; compile "
            f"with SAMPLED_CHOICES ['resolution'] or [], or set SEARCH.COMPILE False"
        )
    if cfg.SEARCH.WARMUP_EPOCHS >= cfg.SEARCH.EPOCHS:
        raise ConfigError(
            f"SEARCH.WARMUP_EPOCHS ({cfg.SEARCH.WARMUP_EPOCHS}) must be below SEARCH.EPOCHS ({cfg.SEARCH.EPOCHS}): "
            f"alpha trains only after the warm-up"
        )
    c = cfg.SEARCH.COST
    if c.LATENCY_VERIFY != "off" and (c.KIND != "latency" or c.TARGET <= 0):
        raise ConfigError(
            f"SEARCH.COST.LATENCY_VERIFY {c.LATENCY_VERIFY} measures the derived model against a latency budget: it "
            f"needs SEARCH.COST.KIND latency (is {c.KIND!r}) and a SEARCH.COST.TARGET > 0 (is {c.TARGET}); "
            f"or set LATENCY_VERIFY off"
        )


def get_cfg() -> CfgNode:
    """A fresh, mutable copy of the defaults (mobile_cv/config/defaults.py)."""
    return CfgNode(DEFAULTS.clone())
