"""The one table of valid ranges: every numeric config key and every numeric flag of the tools.

A value outside its range is refused before anything is written, with the range in the
message; NaN and infinity are refused everywhere. ``0`` means "default" or "none" only where
the range says so (:attr:`Range.zero`), and then it means the same in the config, on the
command line and in the Python API.

    check_ranges(cfg)                                      # every key of CONFIG_RANGES
    p.add_argument("--batch", type=flag_type("--batch"))   # argparse refuses "0" or "two" in one line
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from .errors import ConfigError

INT_MAX = 2**31 - 1  # counts and sizes: far above anything sensible, far below overflow


@dataclass(frozen=True)
class Range:
    """``lo <= value <= hi`` (``<`` at an open end) for an int or a float.

    ``zero``: what ``0`` means where it is allowed and special ("the arch's own input_size").
    """

    kind: type
    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    zero: str = ""

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not float(value).is_integer():
            return False
        if not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def describe(self) -> str:
        """``an int in [1, 2147483647]`` / ``a float in (0, 1)``, and what 0 means."""
        what = "an int" if self.kind is int else "a finite float"
        lo, hi = _fmt(self.lo), _fmt(self.hi)
        text = f"{what} in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        return text + (f" (0: {self.zero})" if self.zero else "")

    def message(self, name: str, value: Any) -> str:
        return f"{name} must be {self.describe()}, got {value!r}"


def _fmt(x: float) -> str:
    if x == math.inf:
        return "inf"
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _int(lo: int, hi: int = INT_MAX, zero: str = "") -> Range:
    return Range(int, lo, hi, zero=zero)


def _float(lo: float, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False, zero: str = "") -> Range:
    return Range(float, lo, hi, lo_open, hi_open or hi == math.inf, zero)


_FRACTION = _float(0.0, 1.0, hi_open=True)  # a share: 0 allowed, 1 (all of it) not
_MOMENTUM = _float(0.0, 1.0, hi_open=True)
_DECAY = _float(0.0, 1.0, hi_open=True)  # an L2 coefficient of 1 or more wipes the weights every step
_LR = _float(0.0, lo_open=True)
_SIZE = _int(1, 8192)  # pixels; the memory check refuses what does not fit long before
_BATCH = _int(1, 1 << 20)
_EPOCHS = _int(1, 1_000_000)
_CLASSES = _int(1, 1_000_000)
_CHANS = _int(1, 4096)

# Every int or float key of mobile_cv/config/defaults.py (tests/config/test_ranges.py checks none is missing).
CONFIG_RANGES: Dict[str, Range] = {
    "MODEL.NUM_CLASSES": _CLASSES,
    "MODEL.IN_CHANS": _CHANS,
    "MODEL.DROP_RATE": _FRACTION,
    "DATA.INPUT_SIZE": _int(0, 8192, zero="the arch def's input_size"),
    "DATA.VAL_FRACTION": _FRACTION,
    "DATA.TEST_FRACTION": _FRACTION,
    "DATA.NUM_WORKERS": _int(0, 256, zero="load in the main process"),
    "DATA.LIMIT": _int(0, zero="all images"),
    "SOLVER.EPOCHS": _EPOCHS,
    "SOLVER.BATCH_SIZE": _BATCH,
    "SOLVER.BASE_LR": _LR,
    "SOLVER.MOMENTUM": _MOMENTUM,
    "SOLVER.WEIGHT_DECAY": _DECAY,
    "SOLVER.WARMUP_EPOCHS": _int(0, 1_000_000),
    "SOLVER.LABEL_SMOOTHING": _FRACTION,
    "SOLVER.EVAL_PERIOD": _int(0, 1_000_000, zero="only at the end"),
    "SOLVER.EMA.DECAY": _FRACTION,
    "SEARCH.EPOCHS": _EPOCHS,
    "SEARCH.WARMUP_EPOCHS": _int(0, 1_000_000),
    "SEARCH.BATCH_SIZE": _BATCH,
    "SEARCH.WEIGHT_SPLIT": _float(0.0, 1.0, lo_open=True, hi_open=True),
    "SEARCH.TEMPERATURE.INIT": _float(0.0, lo_open=True),
    "SEARCH.TEMPERATURE.FINAL": _float(0.0, lo_open=True),
    "SEARCH.ALPHA.LR": _LR,
    "SEARCH.ALPHA.WEIGHT_DECAY": _DECAY,
    "SEARCH.WEIGHTS.MOMENTUM": _MOMENTUM,
    "SEARCH.WEIGHTS.LR": _LR,
    "SEARCH.WEIGHTS.WEIGHT_DECAY": _DECAY,
    "SEARCH.COST.LATENCY_THREADS": _int(1, 1024),
    "SEARCH.COST.TARGET_WEIGHT": _float(0.0),
    "SEARCH.COST.EXPONENT": _float(0.0, 100.0),
    "SEARCH.COST.FBNET_SCALE": _float(0.0),
    "SEARCH.COST.FBNET_EXPONENT": _float(0.0, 100.0),
    "SEARCH.COST.TARGET": _float(0.0, zero="no budget"),
    # a tolerance below 1e-6 asks the budget DP for more precision than float costs have
    "SEARCH.COST.TOLERANCE": _float(1e-6, 1.0, hi_open=True),
    "SEARCH.COST.LATENCY_VERIFY_STEPS": _int(1, 100),
    "SEARCH.COST.LATENCY_VERIFY_TOLERANCE": _float(0.0, 1.0, lo_open=True, hi_open=True),
    "SEARCH.COST.LATENCY_VERIFY_ROUNDS": _int(1, 10_000),
    "SEARCH.COST.LATENCY_VERIFY_REFERENCES": _int(0, 64),
    "SEED": _int(0, 2**32 - 1),
}

# Every numeric flag of tools/*.py, by name: a flag means the same in every tool that has it
# (tests/config/test_ranges.py checks every int/float flag of every tool uses flag_type).
FLAG_RANGES: Dict[str, Range] = {
    "--resolution": _SIZE,
    "--resolutions": _SIZE,
    "--num-classes": _CLASSES,
    "--in-chans": _CHANS,
    "--batch": _int(1, 4096),
    "--opset": _int(17, 30),  # ONNX_MIN_OPSET .. a release far ahead of onnx's
    "--atol": _float(0.0, lo_open=True),
    "--calib-images": _int(1, 1_000_000),
    "--max-int8-loss": _float(0.0, 100.0),
    "--threads": _int(1, 1024),
    "--rounds": _int(1, 100_000),
    "--warmup": _int(0, 100_000),
    "--settle-calls": _int(0, 100_000),
    "--max-configs": _int(1, 10_000_000),
    "--grid-points": _int(2, 64),
    "--held-out": _int(0, 100_000),
    "--calibration-models": _int(0, 10_000),
    "--corner-models": _int(0, 1_000),  # per input size
    "--jobs": _int(0, 256, zero="one per CPU core"),
    "--chunk": _int(1, 100_000),
    "--target-mflops": _float(0.0, lo_open=True),
    "--search-epochs": _int(2, 1_000_000),  # one warm-up epoch, then at least one that trains alpha
    "--train-epochs": _EPOCHS,
    "--budgets": _float(0.0, lo_open=True),
    "--tolerance": _float(1e-6, 1.0, hi_open=True),  # as SEARCH.COST.TOLERANCE
}


class RangeError(ConfigError):
    """A number outside its range (NaN and infinity included)."""


def check_value(name: str, value: Any, table: Optional[Dict[str, Range]] = None) -> Any:
    """``value`` if it is in ``name``'s range (CONFIG_RANGES, else FLAG_RANGES), else :class:`RangeError`."""
    r = (table or {**FLAG_RANGES, **CONFIG_RANGES})[name]
    if not r.contains(value):
        raise RangeError(r.message(f"config key {name}" if name in CONFIG_RANGES else name, value))
    return value


def check_ranges(cfg: Any) -> None:
    """Every key of :data:`CONFIG_RANGES` in ``cfg`` (a CfgNode) within its range."""
    for key, r in CONFIG_RANGES.items():
        value = cfg
        for part in key.split("."):
            value = value[part]
        if not r.contains(value):
            raise RangeError(r.message(f"config key {key}", value))


def flag_type(flag: str) -> Callable[[str], Any]:
    """An argparse ``type=`` for ``flag``: parses its kind and checks FLAG_RANGES[flag]; argparse
    prints the refusal as one ``error: argument FLAG: ...`` line (exit 2)."""
    r = FLAG_RANGES[flag]

    def parse(text: str) -> Any:
        try:
            value = r.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {r.describe()}, got {text!r}") from None
        if not r.contains(value):
            raise argparse.ArgumentTypeError(f"must be {r.describe()}, got {text!r}")
        return value

    parse.__name__ = r.kind.__name__  # argparse names the type in its own messages
    parse.flag_range = r  # type: ignore[attr-defined]
    return parse
