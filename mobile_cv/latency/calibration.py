"""From a sum of blocks to a whole model: a correction fitted on whole models timed with the blocks.

A block timed alone, call after call, keeps its weights in the CPU's caches and pays nothing for
its neighbours; inside a whole model the weights of every block stream through the caches on each
call. So the plain sum of a table's blocks falls short of the whole model, by an amount that grows
with the model's weights (docs/dmaskingnas.md#latency-as-a-search-cost). A table therefore times,
in the same interleaved rounds as its blocks, a *calibration set* of random whole architectures of
its space (every resolution) and fits

    model ms = call cost + a + b * (sum of the model's block latencies) + c * (model's M params)
               + d * (model's M params) * small + e * (M params of its blocks whose weights fit the L2) * small,
    small = 1 - (input size / the table's largest input size)^2

by least squares, choosing among the forms below the one with the lowest leave-one-out error on
the calibration set (coefficients must be >= 0, so that no option gets a negative cost). ``d``,
fitted only when the calibration models have several input sizes: the weights' traffic that a
smaller input's compute does not hide. Measured on the F space, one ``c`` for every resolution
over-predicted the high-parameter models at 128 px and under-predicted the rest; with ``d`` the
same M params cost 0.06-0.07 ms more per million at 128 px than at 224 px (docs/dmaskingnas.md).
``e``, fitted only where the table knows its machine's L2 size: the same traffic, counted only for
the blocks whose weights fit the L2, the ones timed alone with their weights there (a block larger
than the L2 read its weights from farther when timed alone too; prefix models of the F space showed
the excess inside a model in the 0.2-2 MB blocks, none in the 9-12 MB one). ``f``, a hinge:

    + f * (1 - small) * max(0, (model's M params) - knot)

the weights past what the machine's caches keep between calls, paid again on every call, the more
the larger the input (whose activations share the caches with them; ``1 - small`` = (size /
largest)^2, 1 for a table of one input size). Measured on the F space, 2026-12-07: the leave-one-out
choice on the shipped table's 64 calibration models (2.47% against 2.79% for the best linear form,
knot 5.5 M params, 22 MB of fp32 weights) and on those of four later benchmark runs, better there
than one slope for every size (docs/dmaskingnas.md). The knot is chosen with the form,
among the calibration models' M params quantiles (:data:`KNOT_QUANTILES`), so that models lie on both
sides of it, and the hinge only where it beats the forms without it by :data:`HINGE_MIN_GAIN`. Every
other term is a sum over blocks (a block's latency, a block's parameters at the architecture's input
size) or a constant, so it stays a per-block table; the hinge is not, and the
search's expected latency takes it in expectation over the distribution of the model's parameters
(:class:`~mobile_cv.search.budget.ParamsHinge`, a sum-product DP over the chain of blocks, exact at a
one-hot alpha).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch

# the candidate forms: which of (a, b, c, d) are fitted (b, the blocks' scale, always); the forms
# with d only where the calibration models have more than one input size (else d is c)
FORMS = (
    ("scale",),
    ("scale", "per_mparam"),
    ("constant", "scale"),
    ("constant", "scale", "per_mparam"),
    ("scale", "per_mparam_small"),
    ("scale", "per_mparam", "per_mparam_small"),
    ("constant", "scale", "per_mparam", "per_mparam_small"),
    ("scale", "per_l2_mparam_small"),
    ("scale", "per_mparam", "per_l2_mparam_small"),
    ("scale", "per_mparam_over"),
    ("scale", "per_mparam", "per_mparam_over"),
    ("scale", "per_mparam_small", "per_mparam_over"),
)
SMALL_TERM = "per_mparam_small"
L2_TERM = "per_l2_mparam_small"  # needs several input sizes and the L2-resident parameters (the table's L2 size)
OVER_TERM = "per_mparam_over"  # the hinge: M params past ``mparam_knot``, x (size / largest)^2
KNOT_QUANTILES = tuple(q / 10 for q in range(1, 10))  # the hinge's knots tried: these quantiles of the models' M params
MIN_SIDE = 3  # the fewest calibration models a knot must leave on each side
# the hinge is taken only where it beats every form without it by this many points of leave-one-out
# error: its knot is chosen among up to 9, a freedom the other forms lack (on the digits table's 64
# models the best hinge gained 0.04 points, a knot at its smallest models: noise, not a cache)
HINGE_MIN_GAIN = 0.1


def parse_cache_size(text: str) -> Optional[int]:
    """Bytes of a cache size as Linux writes it (``2048K``, ``2M``, ``512``); None when unreadable."""
    text = str(text).strip().upper()
    scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
    try:
        return int(float(text.rstrip("KMG")) * scale)
    except ValueError:
        return None


def l2_bytes(data: Dict[str, Any]) -> Optional[int]:
    """The L2 size (bytes, per core) of the machine a table was timed on; None where it is not recorded."""
    size = data.get("machine", {}).get("caches", {}).get("L2")
    return parse_cache_size(size) if size else None


def table_l2_params(data: Dict[str, Any], params_table):
    """:func:`l2_params_table` for the machine a table was timed on (its L2, fp32 or int8 weights);
    None where the table does not record its L2."""
    l2 = l2_bytes(data)
    return l2_params_table(params_table, l2, 1 if data["int8"] else 4) if l2 else None


def l2_params_table(params_table, l2: int, bytes_per_param: int):
    """The budget table of kind "params" with every item whose weights (M params x 1e6 x
    ``bytes_per_param``) exceed ``l2`` bytes set to 0: per item, the M params that fit the L2."""
    import copy

    out = copy.copy(params_table)
    out.terms = [copy.copy(t) for t in params_table.terms]
    for t in out.terms:
        t.cost = t.cost * (t.cost * 1e6 * bytes_per_param <= l2)
    return out


def smallness(size: int, largest: int) -> float:
    """``1 - (size / largest)^2``: the factor of the ``per_mparam_small`` term (0 at the largest size)."""
    return 1.0 - (size / largest) ** 2


@dataclass
class Correction:
    """``model ms = call cost + constant + scale * blocks + (per_mparam + per_mparam_small * small) *
    M params + per_mparam_over * (1 - small) * max(0, M params - mparam_knot)`` (see the module
    docstring; ``small`` from :func:`smallness`)."""

    constant: float = 0.0
    scale: float = 1.0
    per_mparam: float = 0.0
    form: Sequence[str] = ()  # the fitted terms; () for a table without calibration (the plain sum)
    loo_mape: float = float("nan")  # leave-one-out mean abs error on the calibration set, %
    loo_max: float = float("nan")
    models: int = 0
    per_mparam_small: float = 0.0  # last: tables written before it have none (0, the term absent)
    per_l2_mparam_small: float = 0.0  # likewise
    per_mparam_over: float = 0.0  # likewise: ms per M params past the knot, at the largest input
    mparam_knot: float = 0.0

    def predict(
        self, call_ms: float, blocks_ms: float, mparams: float, small: float = 0.0, mparams_l2: float = 0.0
    ) -> float:
        """A model's latency from its blocks' sum, its M params, its input's :func:`smallness` and
        the M params of its blocks whose weights fit the L2."""
        return (
            call_ms
            + self.constant
            + self.scale * blocks_ms
            + self.ms_per_mparam(small) * mparams
            + self.per_l2_mparam_small * small * mparams_l2
            + self.over_knot_ms(mparams, small)
        )

    def over_knot_ms(self, mparams: float, small: float = 0.0) -> float:
        """The hinge: ``per_mparam_over * (1 - small) * max(0, mparams - mparam_knot)`` (0 without it)."""
        return self.over_slope(small) * max(0.0, mparams - self.mparam_knot)

    def over_slope(self, small: float) -> float:
        """The hinge's ms per M params past the knot at an input of :func:`smallness` ``small``."""
        return self.per_mparam_over * (1.0 - small)

    def ms_per_mparam(self, small: float) -> float:
        """The weights' cost per million parameters at an input of :func:`smallness` ``small``."""
        return self.per_mparam + self.per_mparam_small * small

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["form"] = list(self.form)
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Correction":
        return cls(**{**d, "form": tuple(d.get("form", ()))})


def describe_correction(c: Correction) -> str:
    """The correction as a formula, e.g. ``model = call + 0.31 + 1.02 x blocks + 0.182 ms x M params``."""
    if not c.form:
        return "model = call cost + blocks (the plain sum: no calibration)"
    parts = [f"{c.constant:.4g} ms"] if "constant" in c.form else []
    parts.append(f"{c.scale:.4g} x blocks")
    if "per_mparam" in c.form:
        parts.append(f"{c.per_mparam:.4g} ms x M params")
    if SMALL_TERM in c.form:
        parts.append(f"{c.per_mparam_small:.4g} ms x M params x (1 - (size / largest size)^2)")
    if L2_TERM in c.form:
        l2 = f"{c.per_l2_mparam_small:.4g} ms x M params of the blocks within the L2"
        parts.append(l2 + " x (1 - (size / largest size)^2)")
    if OVER_TERM in c.form:
        parts.append(f"{c.per_mparam_over:.4g} ms x (size / largest size)^2 x max(0, M params - {c.mparam_knot:.4g})")
    return "model = call cost + " + " + ".join(parts)


def _features(
    form: Sequence[str],
    blocks: torch.Tensor,
    mparams: torch.Tensor,
    small: torch.Tensor,
    mparams_l2: torch.Tensor,
    knot: float = 0.0,
) -> torch.Tensor:
    cols = {
        "constant": torch.ones_like(blocks),
        "scale": blocks,
        "per_mparam": mparams,
        SMALL_TERM: mparams * small,
        L2_TERM: mparams_l2 * small,
        OVER_TERM: (mparams - knot).clamp_min(0) * (1 - small),
    }
    return torch.stack([cols[name] for name in form], 1)


def _solve(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.lstsq(x, y.unsqueeze(1)).solution.squeeze(1)


def fit_correction(
    blocks_ms: Sequence[float],
    mparams: Sequence[float],
    measured_net: Sequence[float],
    small: Optional[Sequence[float]] = None,
    mparams_l2: Optional[Sequence[float]] = None,
) -> Correction:
    """The correction of the lowest leave-one-out error, the hinge only by :data:`HINGE_MIN_GAIN` (see the
    module docstring).

    Args:
        blocks_ms: per calibration model, the sum of its blocks' table latencies (call cost excluded).
        mparams: per model, its parameters in millions.
        measured_net: per model, its measured latency minus the call cost.
        small: per model, its input's :func:`smallness`; None: all 0 (one input size).
        mparams_l2: per model, the M params of its blocks whose weights fit the L2; None: unknown
            (the forms with ``e`` are not tried).
    """
    b = torch.tensor(blocks_ms, dtype=torch.float64)
    w = torch.tensor(mparams, dtype=torch.float64)
    y = torch.tensor(measured_net, dtype=torch.float64)
    a = torch.zeros_like(b) if small is None else torch.tensor(small, dtype=torch.float64)
    w2 = torch.zeros_like(b) if mparams_l2 is None else torch.tensor(mparams_l2, dtype=torch.float64)
    n = len(y)
    several_sizes = bool((a != a[0]).any()) if n else False
    best = {}  # with the hinge (True) and without it (False): the form of the lowest error
    for form in FORMS:
        small_form = SMALL_TERM in form or L2_TERM in form
        if n < len(form) + 2 or (small_form and not several_sizes) or (L2_TERM in form and mparams_l2 is None):
            continue
        for knot in knots(w) if OVER_TERM in form else [0.0]:
            x = _features(form, b, w, a, w2, knot)
            coef = _solve(x, y)
            if (coef < 0).any():  # a negative term would give some option a negative cost
                continue
            errors = []
            for i in range(n):
                keep = torch.arange(n) != i
                c = _solve(x[keep], y[keep])
                errors.append(abs(float(x[i] @ c - y[i])) / float(y[i]))
            mape = 100 * sum(errors) / n
            group = OVER_TERM in form
            if group not in best or mape < best[group][0] - 1e-9:
                best[group] = (mape, 100 * max(errors), form, coef, knot)
    if not best:  # too few models, or no non-negative fit: the plain sum
        return Correction(models=n)
    linear, hinge = best.get(False), best.get(True)
    take_hinge = hinge is not None and (linear is None or hinge[0] < linear[0] - HINGE_MIN_GAIN)
    mape, worst, form, coef, knot = hinge if take_hinge else linear
    values = dict(zip(form, coef.tolist()))
    return Correction(
        constant=values.get("constant", 0.0),
        scale=values.get("scale", 1.0),
        per_mparam=values.get("per_mparam", 0.0),
        per_mparam_small=values.get(SMALL_TERM, 0.0),
        per_l2_mparam_small=values.get(L2_TERM, 0.0),
        per_mparam_over=values.get(OVER_TERM, 0.0),
        mparam_knot=knot if OVER_TERM in form else 0.0,
        form=form,
        loo_mape=mape,
        loo_max=worst,
        models=n,
    )


def knots(mparams: torch.Tensor) -> List[float]:
    """The hinge's candidate knots: the :data:`KNOT_QUANTILES` of the calibration models' M params,
    each leaving at least :data:`MIN_SIDE` models on either side (none for a set too small or too alike)."""
    out = []
    for q in KNOT_QUANTILES:
        k = round(float(torch.quantile(mparams, q)), 4)
        if int((mparams < k).sum()) >= MIN_SIDE and int((mparams > k).sum()) >= MIN_SIDE and k not in out:
            out.append(k)
    return out


def calibration_indices(net, n: int, seed: int) -> List[Dict[str, int]]:
    """``n`` random architectures of the space (uniform per choice), the resolutions taken in turn
    so that every one is covered equally (the size of the compute changes with it, the weights do not:
    what separates the two terms of the fit)."""
    from ..search.budget import sample_uniform

    batch = sample_uniform(net, n, torch.Generator().manual_seed(seed))
    out = []
    for j in range(n):
        index = {label: int(v[j]) for label, v in batch.items()}
        if "resolution" in index:
            index["resolution"] = j % len(net.res_sizes)
        out.append(index)
    return out


WIDTH_CHOICES = (".channels", ".expansion")  # the choices that set a block's widths


def corner_indices(net, per_size: int, seed: int) -> List[Dict[str, int]]:
    """``per_size`` architectures per input size from the corner a latency-budgeted search goes to:
    the most weights a millisecond buys. The width choices of the later half of the blocks (where the
    channels, so the weights, are; the maps there are small, so the compute is not) drawn from the
    top third of their options, every other choice uniform. A uniform calibration set has few such
    models, and a table under-predicts them most (docs/benchmarks.md, "The weight-heavy corner")."""
    gen = torch.Generator().manual_seed(seed)
    labels = [label for label in net.choices if label != "resolution"]
    later = set(labels[len(labels) // 2 :])
    sizes = range(len(net.res_sizes)) if "resolution" in net.choices else [None]
    out = []
    for r in sizes:
        for _ in range(per_size):
            index = {}
            for label, choice in net.choices.items():
                n = choice.size
                low = (2 * n) // 3 if label in later and label.endswith(WIDTH_CHOICES) else 0
                index[label] = low + int(torch.randint(n - low, (1,), generator=gen))
            if r is not None:
                index["resolution"] = r
            out.append(index)
    return out


def input_size(net, index: Dict[str, int]) -> int:
    """The input side length of one architecture of ``net`` (its resolution option, or the space's)."""
    if net.res_sizes and "resolution" in index:
        return int(net.res_sizes[int(index["resolution"])])
    return int(net.input_size)


def model_terms(blocks_table, params_table, index: Dict[str, int], largest: int, l2_table=None) -> Dict[str, float]:
    """The features of one architecture: its blocks' latency sum (call cost excluded; from a latency
    table's :meth:`~mobile_cv.latency.table.LatencyTable.blocks_table`), its parameters in millions
    (from the budget table of kind "params"), its input's :func:`smallness` against ``largest``,
    the table's largest input size, and with ``l2_table`` (:func:`l2_params_table`) the M params of
    its blocks whose weights fit the L2."""
    terms = {
        "blocks_ms": blocks_table.exact(index),
        "mparams": params_table.exact(index),
        "small": round(smallness(input_size(params_table.net, index), largest), 6),
    }
    if l2_table is not None:
        terms["mparams_l2"] = l2_table.exact(index)
    return terms


def unique(items: Sequence[Dict[str, int]]) -> List[Dict[str, int]]:
    """The architectures without repeats (a small space may draw one twice)."""
    seen, out = set(), []
    for index in items:
        key = tuple(sorted(index.items()))
        if key not in seen:
            seen.add(key)
            out.append(index)
    return out


__all__ = [
    "HINGE_MIN_GAIN",
    "KNOT_QUANTILES",
    "L2_TERM",
    "OVER_TERM",
    "SMALL_TERM",
    "l2_bytes",
    "l2_params_table",
    "parse_cache_size",
    "table_l2_params",
    "Correction",
    "input_size",
    "FORMS",
    "knots",
    "calibration_indices",
    "corner_indices",
    "describe_correction",
    "fit_correction",
    "model_terms",
    "smallness",
    "unique",
]
