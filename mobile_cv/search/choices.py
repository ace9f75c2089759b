"""Choice points, channel spaces and the Gumbel-softmax mixing weights that mix them.

A *choice* is a label with ``n`` options and one logit vector ``alpha`` (kept by the
supernet). Each forward pass draws one weight vector per label
(``g = softmax((alpha + gumbel) / T)``); every module that depends on the label
uses that same vector, so a channel choice shared by a row's blocks is one choice.

A :class:`ChannelSpace` maps a choice's options to channel counts. Several spaces
can hang off one label: the hidden widths of an inverted-residual block and the
widths of its squeeze-excite bottleneck both follow the block's expansion choice.
A space without a label is a fixed width.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..arch.arch_def import ArchDefError

# label -> mixing weights over its options; costs also take a leading batch dim (N, options):
# N architectures (e.g. one-hot rows) costed in one vectorised pass
Mixing = Dict[str, torch.Tensor]


class KnownMixing(dict):
    """Mixing weights whose hard choices are known without reading a tensor: ``chosen`` maps a
    label to the one option that runs. :meth:`Supernet.sample_mixing` returns these (``chosen``:
    the hard-sampled labels, empty without hard samples), so the blocks skip unchosen options
    without a device sync per option and ``torch.compile`` sees no data-dependent branch;
    meta-device tensors hold no values, so the memory estimate (:mod:`mobile_cv.engine.memory`)
    runs the supernet with these too.
    ``chosen=None`` (a copy made by code that knows only dicts, e.g. DDP moving inputs between
    devices) falls back to reading the weights."""

    def __init__(self, weights: Mixing, chosen: Optional[Dict[str, int]] = None) -> None:
        super().__init__(weights)
        self.chosen = dict(chosen) if chosen is not None else None


def detach_mixing(mixing: Mixing) -> Mixing:
    """``mixing`` with every weight detached (what is known about hard choices kept)."""
    out = {label: w.detach() for label, w in mixing.items()}
    chosen = getattr(mixing, "chosen", None)
    return KnownMixing(out, chosen) if chosen is not None else out


@dataclass(frozen=True)
class Choice:
    """One architecture decision: ``label`` picks one of ``options`` (printable values)."""

    label: str
    options: Tuple
    kind: str  # "channels" | "expansion" | "op" | "resolution"
    distinct: int = 0  # options giving different networks (expansions can round to one width); 0: all

    @property
    def size(self) -> int:
        return len(self.options)


@dataclass(frozen=True)
class ChannelSpace:
    """Channel count per option of ``label`` (a fixed width when ``label`` is None)."""

    widths: Tuple[int, ...]
    label: Optional[str] = None

    def __post_init__(self) -> None:
        if self.label is None and len(self.widths) != 1:
            raise ValueError("a fixed ChannelSpace has exactly one width")

    @staticmethod
    def fixed(width: int) -> "ChannelSpace":
        return ChannelSpace((int(width),), None)

    @property
    def max(self) -> int:
        return max(self.widths)

    @property
    def is_fixed(self) -> bool:
        return self.label is None

    def eff(self, mixing: Mixing) -> Union[float, torch.Tensor]:
        """Effective width: sum_i g_i * c_i (a differentiable scalar; a float when fixed)."""
        if self.label is None:
            return float(self.widths[0])
        g = mixing[self.label]
        return (g * constant_tensor(self.widths, g.device, g.dtype)).sum(-1)

    def mask(self, mixing: Mixing) -> Optional[torch.Tensor]:
        """M = sum_i g_i * 1_i over ``max`` channels (1_i: ones in the first c_i entries).

        ``None`` for a fixed width: nothing to mask.
        """
        if self.label is None:
            return None
        g = mixing[self.label]
        return g @ _prefix_ones(self.widths, g.device, g.dtype)

    def chosen(self, index: Dict[str, int]) -> int:
        return self.widths[0] if self.label is None else self.widths[index[self.label]]

    def map(self, fn) -> "ChannelSpace":
        """A dependent space: the same label, widths ``fn(c)``."""
        return ChannelSpace(tuple(int(fn(c)) for c in self.widths), self.label)


_CONSTANTS: Dict[tuple, torch.Tensor] = {}


def _cached(key: tuple, make) -> torch.Tensor:
    """``make()`` made once per key (under torch.compile: traced, the graph holds the constant)."""
    if torch.compiler.is_compiling():
        return make()
    t = _CONSTANTS.get(key)
    if t is None:
        if len(_CONSTANTS) >= 4096:  # many spaces in one process: start over rather than grow
            _CONSTANTS.clear()
        t = _CONSTANTS[key] = make()
    return t


def constant_tensor(values: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``torch.tensor(values)`` made once per device and dtype (the forward and the cost use the same
    small constants every step; making them anew is a host-to-device copy each time on a GPU)."""
    return _cached(("tensor", values, device, dtype), lambda: torch.tensor(values, dtype=dtype, device=device))


def _prefix_ones(widths: Tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Row i: ones in the first ``widths[i]`` of ``max(widths)`` entries (the masks' basis)."""

    def make() -> torch.Tensor:
        rows = torch.tensor(widths, device=device)[:, None]
        return (torch.arange(max(widths), device=device)[None, :] < rows).to(dtype)

    return _cached(("prefix_ones", widths, device, dtype), make)


def can_be_equal(a: ChannelSpace, b: ChannelSpace) -> bool:
    """Whether some joint choice gives ``a`` and ``b`` the same width."""
    if a.label is not None and a.label == b.label:
        return any(x == y for x, y in zip(a.widths, b.widths))
    return bool(set(a.widths) & set(b.widths))


def always_equal(a: ChannelSpace, b: ChannelSpace) -> bool:
    if a.label is not None and a.label == b.label:
        return all(x == y for x, y in zip(a.widths, b.widths))
    return a.is_fixed and b.is_fixed and a.widths == b.widths


def p_equal(a: ChannelSpace, b: ChannelSpace, mixing: Mixing) -> Union[float, torch.Tensor]:
    """Probability (under the mixing weights) that ``a`` and ``b`` take the same width.

    The derived network adds a residual (or drops an expansion conv) exactly when
    two widths are equal; weighting that path by this probability makes the
    supernet equal the derived network whenever the mixing weights are one-hot.
    """
    if a.label is None and b.label is None:
        return float(a.widths == b.widths)
    if a.label is not None and a.label == b.label:
        g = mixing[a.label]
        same = constant_tensor(tuple(float(x == y) for x, y in zip(a.widths, b.widths)), g.device, g.dtype)
        return (g * same).sum(-1)
    if a.label is None:
        a, b = b, a
    ga = mixing[a.label]
    eq = constant_tensor(tuple(tuple(float(x == y) for y in b.widths) for x in a.widths), ga.device, ga.dtype)
    if b.label is None:
        return (ga * eq[:, 0]).sum(-1)
    return ((ga @ eq) * mixing[b.label]).sum(-1)


def fit_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Zero-pad or truncate dim 1 of ``x`` to ``channels`` (masked channels are zero either way)."""
    c = x.shape[1]
    if c == channels:
        return x
    if c > channels:
        return x[:, :channels]
    return F.pad(x, (0, 0, 0, 0, 0, channels - c))


def straight_through(g: torch.Tensor, index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The one-hot of ``g``'s argmax (or of ``index``) in the forward pass, ``g``'s gradient in the
    backward pass."""
    hard = F.one_hot(g.argmax(-1) if index is None else index, g.shape[-1]).to(g.dtype)
    return hard - g.detach() + g


def gumbel_softmax(alpha: torch.Tensor, temperature: float, noise: bool) -> torch.Tensor:
    """softmax((alpha + Gumbel noise) / T), or plain softmax(alpha / T) without noise."""
    if noise:
        u = torch.rand_like(alpha).clamp_(1e-10, 1.0 - 1e-10)
        alpha = alpha - torch.log(-torch.log(u))
    return torch.softmax(alpha / temperature, dim=-1)


# ---- parsing option declarations --------------------------------------------------------
OptionDecl = Union[int, float, Sequence]


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _range_dict(decl, what: str, where: str):
    """``{"min": a, "max": b, "step": c}``: the JSON spelling of a ``(min, max, step)`` tuple."""
    if isinstance(decl, dict):
        if sorted(decl) != ["max", "min", "step"]:
            raise ArchDefError(
                f'{where}: a {what} range dict needs exactly the keys "min", "max", "step", got {decl!r}'
            )
        return (decl["min"], decl["max"], decl["step"])
    return decl


_JSON_HINT = ' (in JSON a (min, max, step) tuple becomes a list: write {"min": ..., "max": ..., "step": ...})'


def parse_int_options(decl: OptionDecl, what: str, where: str) -> List[int]:
    """Channel options from an int, a ``(min, max, step)`` tuple or a list of ints."""
    decl = _range_dict(decl, what, where)
    if isinstance(decl, numbers.Integral) and not isinstance(decl, bool):
        values = [int(decl)]
    elif isinstance(decl, tuple):
        values = _range_options(decl, what, where, integer=True)
    elif isinstance(decl, list):
        if not decl:
            raise ArchDefError(f"{where}: {what} options: the list is empty; give at least one value")
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in decl):
            raise ArchDefError(f"{where}: {what} options must be ints, got {decl!r}")
        values = [int(v) for v in decl]
    else:
        raise ArchDefError(f"{where}: {what} must be an int, a (min, max, step) tuple or a list of ints, got {decl!r}")
    bad = [v for v in values if v <= 0]
    if bad:
        raise ArchDefError(f"{where}: {what} options must be positive, got {bad[0]}")
    if len(set(values)) != len(values):
        raise ArchDefError(f"{where}: {what} options {values} repeat a value; list each once{_JSON_HINT}")
    return sorted(values)


def parse_float_options(decl: OptionDecl, what: str, where: str) -> List[float]:
    """Expansion options from a number, a ``(min, max, step)`` tuple or a list of numbers."""
    decl = _range_dict(decl, what, where)
    if _is_number(decl):
        values = [float(decl)]
    elif isinstance(decl, tuple):
        values = _range_options(decl, what, where, integer=False)
    elif isinstance(decl, list):
        if not decl or not all(_is_number(v) for v in decl):
            raise ArchDefError(f"{where}: {what} options must be a non-empty list of numbers, got {decl!r}")
        values = [float(v) for v in decl]
    else:
        raise ArchDefError(f"{where}: {what} must be a number, a (min, max, step) tuple or a list, got {decl!r}")
    if any(v <= 0 for v in values):
        raise ArchDefError(f"{where}: {what} options must be positive, got {values}")
    if len(set(values)) != len(values):
        raise ArchDefError(f"{where}: {what} options {values} repeat a value; list each once{_JSON_HINT}")
    return sorted(values)


def _range_options(decl: tuple, what: str, where: str, integer: bool) -> list:
    if len(decl) != 3 or not all(_is_number(v) for v in decl):
        raise ArchDefError(f"{where}: {what} range must be (min, max, step), got {decl!r}")
    lo, hi, step = decl
    if integer and not all(isinstance(v, numbers.Integral) for v in decl):
        raise ArchDefError(f"{where}: {what} range {decl!r} must hold ints")
    if step <= 0:
        raise ArchDefError(f"{where}: {what} range {decl!r}: step must be positive")
    if hi < lo:
        raise ArchDefError(f"{where}: {what} range {decl!r} is inverted (min {lo} > max {hi}); write (min, max, step)")
    n = (hi - lo) / step
    if abs(n - round(n)) > 1e-6:
        raise ArchDefError(
            f"{where}: {what} range {decl!r}: step {step} does not divide max - min = {hi - lo}; "
            f"pick a step that lands on max, or list the options"
        )
    n = int(round(n))
    if integer:
        return [int(lo + i * step) for i in range(n + 1)]
    return [round(lo + i * step, 6) for i in range(n + 1)]


def log10_size(choices: Sequence[Choice]) -> float:
    """log10 of the number of architectures: the product of each choice's distinct options.

    Expansion options that round to the same hidden width count once; an expansion
    choice still counts when its block picks ``skip`` (as FBNet's count does).
    """
    return sum(math.log10(c.distinct or c.size) for c in choices)
