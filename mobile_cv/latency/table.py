"""A latency table: measured milliseconds per block configuration of a search space, and lookups.

The file (JSON, written by ``tools/latency_table.py``) records what was measured and how:

    format, space, space_digest, resolutions, num_classes, in_chans   what it is for
    runtime, int8, threads, versions, cpu, machine, method, date,
    settings, build_seconds                                           how it was measured
    mode        "exact": every configuration timed; "grid": a grid of them, the rest interpolated
    entries     {config key: {"ms", "q1", "q3", "min"}}: the median of the interleaved rounds and
                its spread (quartiles, fastest round), per call, the runtime's call cost included
    overhead_ms the call cost itself (a trivial program in the same runtime), with its spread
    grids       (mode "grid") per block position, op and structure: the grid's axes
    held_out    (mode "grid") configurations timed off the grid, and the interpolation's error on them
    interpolation (mode "grid") how the grid is read between its points (hidden widths padded toward
                a tile, :data:`PLAIN` where absent)
    calibration whole random architectures timed in the same rounds: index, arch, timing, features
    correction  the whole-model terms fitted on them (:mod:`.calibration`) and their leave-one-out error
    probes      programs timed in the same rounds, re-timed by ``--check`` (:mod:`.probes`)
    rescaled    (a copy written by ``--check --rescale``) the factor, source table, date
    recalibrated (a copy written by ``--check --recalibrate``) the calibration models' and probes'
                timings and the correction it replaced, the source table, date, machine
    refitted    (a copy written by ``--refit``) the correction and reading it replaced
    complete    false while a build is in progress (the file is then ``TABLE.partial``)

A block inside a model pays no call cost, so a block's latency is its entry minus the call cost
(never below 0). A model's predicted latency is ``call cost + a + b * (its blocks' sum) + (c + d * small) * (its
M params) + f * (1 - small) * max(0, its M params - knot)`` with the table's correction, ``small`` =
1 - (its input size / the table's largest)^2 (format 1 tables: ``a = c = d = 0, b = 1``, the plain sum);
:meth:`LatencyTable.budget_table` hands it to the budgeted search's table as per-block items and a
constant, so its expected latency and derivation are in these terms.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..arch.arch_def import to_jsonable
from ..arch.blocks import IRBlock, IRPoolBlock
from ..atomic_files import atomic_write_text
from ..errors import UserError
from ..search.masked import Spatial
from .calibration import Correction, smallness, table_l2_params
from .configs import HEAD, BlockConfig, block_class, config_from_key, describe, item_configs

FORMAT = "mobile_cv.latency_table/2"
OLD_FORMATS = ("mobile_cv.latency_table/1",)  # blocks only: read, with a line asking for a rebuild
DIMS = ("c_in", "hidden", "c_out", "size")
# the header fields a table must match to serve a search (the rest only describe the measurement)
# which summary of an entry's per-round samples the lookups use ("ms" is always the median): on a
# noisy machine the first quartile predicts whole models better (docs/dmaskingnas.md)
STATISTICS = {"median": "ms", "q1": "q1", "min": "min"}
IDENTITY = ("space_digest", "resolutions", "num_classes", "in_chans", "runtime", "int8", "threads")


class LatencyTableError(UserError, ValueError):
    """A latency table that cannot serve this space or search: missing, corrupt, built for other
    settings, or lacking an entry; the message says which and how to build the right one."""


def space_digest(space_def: Dict[str, Any]) -> str:
    """A short digest of a search space's definition (a table is tied to the space it was built for)."""
    return hashlib.sha256(json.dumps(to_jsonable(space_def), sort_keys=True).encode()).hexdigest()[:16]


def build_command(
    space: str,
    runtime: str,
    int8: bool,
    threads: int,
    resolutions: Sequence[int],
    out: str,
    num_classes: int = 1000,
    in_chans: int = 3,
) -> str:
    """The tools/latency_table.py command that builds the table these settings need."""
    model = (f" --num-classes {num_classes}" if num_classes != 1000 else "") + (
        f" --in-chans {in_chans}" if in_chans != 3 else ""
    )
    return (
        f"python tools/latency_table.py {space}{model} --runtime {runtime}{' --int8' if int8 else ''} "
        f"--threads {threads} --resolutions {' '.join(str(r) for r in resolutions)} --out {out}"
    )


def command_of(data: Dict[str, Any], out: str) -> str:
    """The command that builds a table like ``data`` (its space, classifier, runtime, settings) at ``out``."""
    return build_command(
        data["space"],
        data["runtime"],
        data["int8"],
        data["threads"],
        data["resolutions"],
        out,
        data["num_classes"],
        data["in_chans"],
    )


@dataclass
class Grid:
    """The grid of one block position, op and structure: axis values per free dimension."""

    block: str
    base: BlockConfig  # op, stride, structure, divisor, extra (widths and size are the axes')
    axes: Dict[str, List[int]]  # free dims in DIMS order; tied dims follow c_in (see grid_dims)

    def point(self, values: Dict[str, int]) -> BlockConfig:
        """The config at axis values ``values`` (tied dims filled in)."""
        c_in = values["c_in"]
        hidden = values.get("hidden", c_in if self.base.hidden else 0)
        c_out = values.get("c_out", c_in if self.base.op != HEAD else self.base.c_out)
        return BlockConfig(
            self.base.op,
            c_in,
            hidden,
            c_out,
            self.base.stride,
            values["size"],
            self.base.residual,
            self.base.expand,
            self.base.divisor,
            self.base.extra,
        )

    def points(self) -> List[BlockConfig]:
        dims = list(self.axes)
        return [self.point(dict(zip(dims, combo))) for combo in itertools.product(*self.axes.values())]


def grid_dims(config: BlockConfig) -> List[str]:
    """The free dimensions of a config's structure: a residual ties the output width to the input's,
    a block without expansion conv its hidden width to the input's; the head's output is the classes."""
    dims = ["c_in"]
    if config.hidden and config.expand:
        dims.append("hidden")
    if config.op != HEAD and not config.residual:
        dims.append("c_out")
    return dims + ["size"]


def interpolate(axes: Sequence[torch.Tensor], values: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Multilinear interpolation of ``values`` (shape ``[len(a) for a in axes]``) at ``points``
    ``(M, D)``; exact at the grid's own points, linear between them along each axis."""
    index, frac = [], []
    for d, axis in enumerate(axes):
        x = points[:, d]
        if len(axis) == 1:
            index.append(torch.zeros(len(x), dtype=torch.long))
            frac.append(torch.zeros(len(x), dtype=torch.float64))
            continue
        i = (torch.searchsorted(axis, x.contiguous(), right=True) - 1).clamp(0, len(axis) - 2)
        index.append(i)
        frac.append((x - axis[i]) / (axis[i + 1] - axis[i]))
    out = torch.zeros(len(points), dtype=torch.float64)
    for corner in itertools.product((0, 1), repeat=len(axes)):
        weight = torch.ones(len(points), dtype=torch.float64)
        at = []
        for d, bit in enumerate(corner):
            weight = weight * (frac[d] if bit else 1 - frac[d])
            at.append((index[d] + bit).clamp_max(len(axes[d]) - 1))
        out += weight * values[tuple(at)]
    return out


# How a grid is read between its points, recorded in each grid table as ``interpolation``. XNNPACK's
# kernels work in tiles: fp32 on x86 with AVX-512, its GEMM takes 7 rows (pixels) by 16 columns
# (output channels) at a time, so a width or a pixel count just past a multiple of its tile runs
# about as slowly as the next multiple (a hidden width of 32k is 4-5% faster, one of 32k + 8 4-5%
# slower than the straight line between its grid neighbours; a 6 x 6 map, 36 pixels in 6 tiles of 7,
# 7-10% slower than the line between 4 x 4 and 7 x 7). A padded axis is read at
# ``w + share * (ceil(w / tile) * tile - w)`` (``size``: its pixels, ``w = size ** 2``): a coordinate
# that rises steeply just past a multiple of the tile and flatly up to the next one, strictly
# increasing (share < 1). A build chooses the tiles from its own held-out timings
# (:func:`mobile_cv.latency.measure.choose_interpolation`); a table without the key (built before
# 2026-12-06) reads widths as they are: PLAIN.
PLAIN: Dict[str, Any] = {"padded": {}}
PADDED_FP32: Dict[str, Any] = {"padded": {"hidden": {"tile": 32, "share": 0.8}, "c_out": {"tile": 32, "share": 0.5}}}
PADDABLE = ("c_in", "hidden", "c_out", "size")


def interpolation_for(int8: bool) -> Dict[str, Any]:
    """The reading of a table with too few held-out configurations to choose its own
    (:data:`~mobile_cv.latency.measure.MIN_HELD_OUT_TO_CHOOSE`): fp32 hidden and output widths padded
    toward 32 (held-out error 6.1 -> 4.9% on the F table of 2026-12-06), int8 widths as they are."""
    return json.loads(json.dumps(PLAIN if int8 else PADDED_FP32))


def _axis_coordinate(dim: str, values: torch.Tensor, interpolation: Optional[Dict[str, Any]] = None) -> torch.Tensor:
    """Sizes interpolate in pixels (size squared: compute grows with the area), widths linearly; a
    width or a pixel count padded toward its tile where ``interpolation`` says so (see :data:`PLAIN`)."""
    values = values.double()
    if dim == "size":
        values = values * values
    pad = (interpolation or PLAIN)["padded"].get(dim)
    if pad:
        tile = pad["tile"]
        return values + pad["share"] * (torch.ceil(values / tile) * tile - values)
    return values


class LatencyTable:
    """A loaded latency table (see the module docstring); :meth:`load` checks the file."""

    def __init__(self, data: Dict[str, Any], path: str = "") -> None:
        self.data, self.path = data, path
        self.entries: Dict[str, Dict[str, float]] = data["entries"]
        self.statistic = data.get("statistic", "median")  # format 1 tables: the median
        self.stat = STATISTICS[self.statistic]  # the field of an entry the lookups read
        self.overhead_ms = float(data["overhead_ms"][self.stat])
        self.grids = [
            Grid(g["block"], _config(g["base"], path), {d: list(map(int, v)) for d, v in g["axes"].items()})
            for g in data.get("grids", [])
        ]
        self._by_group = {(g.block, g.base.op, g.base.residual, g.base.expand): g for g in self.grids}
        self.correction = Correction.from_dict(data["correction"]) if "correction" in data else Correction()
        self.interpolation = data.get("interpolation", PLAIN)

    @property
    def calibrated(self) -> bool:
        """Whether whole models were timed with the blocks and a correction fitted on them."""
        return bool(self.correction.form)

    def rebuild_line(self) -> str:
        """One line for a table built the old way (blocks only): what it lacks and the command."""
        d = self.data
        cmd = command_of(d, self.path)
        return (
            f"latency table {self.path!r} was built the old way (blocks timed alone, no whole models, no probes): "
            f"it predicts whole models less well (1.7-1.8x low on the F space) and cannot check this machine; "
            f"rebuild it: rm {self.path}; {cmd}"
        )

    @property
    def mode(self) -> str:
        return self.data["mode"]

    # -- reading --------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str) -> "LatencyTable":
        """Read and check a table file; a missing, truncated or corrupt one is a :class:`LatencyTableError`."""
        if os.path.isdir(path):
            raise LatencyTableError(f"latency table {path!r} is a folder, not a table file")
        if not os.path.isfile(path):
            raise LatencyTableError(
                f"latency table {path!r} does not exist; build it with python tools/latency_table.py SPACE --out {path}"
            )
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LatencyTableError(
                f"latency table {path!r} is not valid JSON ({e}); it is truncated or corrupt: build it again "
                f"(python tools/latency_table.py SPACE --out {path})"
            ) from None
        check_table_data(data, path)
        table = cls(data, path)
        if not table.calibrated and data["format"] in OLD_FORMATS:
            logging.getLogger("mobile_cv.latency").warning(table.rebuild_line())
        return table

    def check(self, space: str, space_def: Dict[str, Any], net, want: Dict[str, Any]) -> None:
        """Refuse a table built for another space, resolution, classifier, runtime or thread count.

        Args:
            want: ``runtime``, ``int8``, ``threads`` the search asks for (those left out: any).
        """
        d = self.data
        resolutions = list(net.res_sizes or [net.input_size])
        mine = {
            "space_digest": space_digest(space_def),
            "resolutions": resolutions,
            "num_classes": net.num_classes,
            "in_chans": net.in_chans,
            **want,
        }
        missing = [r for r in resolutions if r not in d["resolutions"]]
        mismatched = [k for k in IDENTITY if k != "resolutions" and k in mine and d.get(k) != mine[k]]
        if not mismatched and not missing:
            return
        what = {
            "space_digest": f"space {d['space']!r} (digest {d['space_digest']}; this search's {space!r} is "
            f"{mine['space_digest']})",
            "num_classes": f"{d['num_classes']} classes (this search: {net.num_classes})",
            "in_chans": f"{d['in_chans']} input channels (this search: {net.in_chans})",
            "runtime": f"runtime {d['runtime']} (this search asks SEARCH.COST.LATENCY_RUNTIME {want['runtime']})",
            "int8": f"int8 {d['int8']} (this search asks SEARCH.COST.LATENCY_INT8 {want['int8']})",
            "threads": f"{d['threads']} thread(s) (this search asks SEARCH.COST.LATENCY_THREADS {want['threads']})",
        }
        reasons = [what[k] for k in mismatched]
        if missing:
            reasons.append(f"resolutions {d['resolutions']}, without {missing} of the space's {resolutions}")
        cmd = build_command(
            space,
            want["runtime"],
            want["int8"],
            want["threads"],
            resolutions,
            "NEW_TABLE.json",
            net.num_classes,
            net.in_chans,
        )
        raise LatencyTableError(
            f"latency table {self.path!r} was built for {'; '.join(reasons)}; build the right one: {cmd}"
        )

    # -- lookups --------------------------------------------------------------------------------
    def block_ms(self, config: BlockConfig) -> float:
        """One config's latency inside a model (its entry minus the call cost); exact mode only."""
        if config.identity:
            return 0.0
        entry = self.entries.get(config.key)
        if entry is None:
            raise self._missing(config)
        return max(float(entry[self.stat]) - self.overhead_ms, 0.0)

    def _missing(self, config: BlockConfig) -> LatencyTableError:
        d = self.data
        cmd = command_of(d, "NEW_TABLE.json")
        return LatencyTableError(
            f"latency table {self.path!r} has no entry for {describe(config)} (key {config.key!r}), which this space "
            f"needs: it was built for another space or from an older definition; build the right one: {cmd}"
        )

    def item_cost(self, net):
        """The budgeted search's ``item_cost(candidate, spatial, index) -> (N, R)`` ms for ``net``."""
        owner = {id(c): name for name, b in net.search_blocks().items() for c in b.candidates.values()}

        def cost(cand, spatial: Spatial, index: Dict[str, torch.Tensor]) -> torch.Tensor:
            configs = item_configs(net, cand, spatial, index)
            block = HEAD if cand is None else owner[id(cand)]
            if self.mode == "exact":
                n, r = len(configs.c_in), len(configs.sizes)
                return torch.tensor(
                    [[self.block_ms(configs.config(i, j)) for j in range(r)] for i in range(n)], dtype=torch.float64
                )
            return self.lookup_grid(block, configs)

        return cost

    def lookup_grid(self, block: str, configs) -> torch.Tensor:
        """Grid mode: each row's structure picks its block's grid, then multilinear interpolation."""
        n, sizes = len(configs.c_in), configs.sizes
        op, stride = configs.base.op, configs.base.stride
        none = torch.zeros(n, dtype=torch.bool)
        residual = ((configs.c_in == configs.c_out) & (stride == 1)) if has_residual(op) else none
        expand = (configs.hidden != configs.c_in) if has_expansion_conv(op) else none
        identity = ((configs.c_in == configs.c_out) & (stride == 1)) if op == "skip" else none
        out = torch.zeros(n, len(sizes), dtype=torch.float64)
        for res_flag, exp_flag in itertools.product((False, True), repeat=2):
            rows = ~identity & (residual == res_flag) & (expand == exp_flag)
            if not rows.any():
                continue
            grid = self._by_group.get((block, op, res_flag, exp_flag))
            if grid is None:
                raise self._missing(configs.config(int(torch.nonzero(rows)[0]), 0))
            dims = list(grid.axes)
            axes = [_axis_coordinate(d, torch.tensor(grid.axes[d]), self.interpolation) for d in dims]
            values = torch.tensor(
                [self.entries[p.key][self.stat] if p.key in self.entries else math.nan for p in grid.points()],
                dtype=torch.float64,
            ).reshape([len(grid.axes[d]) for d in dims])
            if torch.isnan(values).any():
                raise LatencyTableError(f"latency table {self.path!r}: the grid of {block} {op} is incomplete")
            coords = {"c_in": configs.c_in[rows], "hidden": configs.hidden[rows], "c_out": configs.c_out[rows]}
            for j, size in enumerate(sizes):
                coords["size"] = torch.full((int(rows.sum()),), size)
                points = torch.stack([_axis_coordinate(d, coords[d], self.interpolation) for d in dims], 1)
                out[rows, j] = (interpolate(axes, values, points) - self.overhead_ms).clamp_min(0.0)
        return out

    def blocks_table(self, net):
        """The budgeted search's table of the plain sum of ``net``'s blocks (call cost and correction left out)."""
        from ..search.budget import BudgetTable
        from ..search.cost_kinds import LATENCY

        return BudgetTable(net, LATENCY, item_cost=self.item_cost(net))

    def budget_table(self, net):
        """The budgeted search's table of ``net`` in this table's whole-model milliseconds: per item
        ``scale * block ms + (per_mparam + per_mparam_small * small) * block M params`` (plus
        ``per_l2_mparam_small * small * block M params`` for a block whose weights fit the L2) at each
        input size (``small`` its :func:`~.calibration.smallness`), plus the call cost and the constant once
        (:mod:`.calibration`); every term is per block, so its expectation stays exact; with a hinge in
        the model's M params, that one is the table's :class:`~mobile_cv.search.budget.ParamsHinge`."""
        from ..search.budget import BudgetTable

        c = self.correction
        table = self.blocks_table(net)
        params = BudgetTable(net, "params") if c.per_mparam or c.per_mparam_small or c.per_l2_mparam_small else None
        l2_table = table_l2_params(self.data, params) if c.per_l2_mparam_small else None  # fitted only with an L2
        # per resolution (the terms' rows): ms per M params at that input size
        sizes, largest = net.res_sizes or [net.input_size], max(self.data["resolutions"])
        per_mparam = torch.tensor([[c.ms_per_mparam(smallness(s, largest))] for s in sizes], dtype=torch.float64)
        per_l2 = torch.tensor([[c.per_l2_mparam_small * smallness(s, largest)] for s in sizes], dtype=torch.float64)
        for j, t in enumerate(table.terms):
            extra = per_mparam * params.terms[j].cost if params is not None else 0.0
            if l2_table is not None:
                extra = extra + per_l2 * l2_table.terms[j].cost
            t.cost = c.scale * t.cost + extra
        table.terms[-1].cost = table.terms[-1].cost + (self.overhead_ms + c.constant)
        if c.per_mparam_over:  # the hinge: not a sum over blocks, taken over the model's M params
            slopes = [c.over_slope(smallness(s, largest)) for s in sizes]  # per resolution
            table.set_hinge(params or BudgetTable(net, "params"), c.mparam_knot, slopes)
        return table

    def describe(self) -> str:
        d = self.data
        rescaled = f", rescaled x{d['rescaled'][-1]['factor']:g}" if d.get("rescaled") else ""
        if d.get("recalibrated"):
            rescaled += f", recalibrated {d['recalibrated'][-1]['date'][:10]}"
        calibration = f", {self.correction.models} calibration models" if self.calibrated else ", blocks only"
        return (
            f"{d['space']} on {d['runtime']}{' int8' if d['int8'] else ''}, {d['threads']} thread(s), {d['cpu']}, "
            f"{d['date']}: {len(self.entries)} entries ({d['mode']}){calibration}{rescaled}"
        )


def has_residual(op: str) -> bool:
    """Whether the op's block adds its input when the widths allow (an inverted residual)."""
    return block_class(op) is IRBlock


def has_expansion_conv(op: str) -> bool:
    """Whether the op's block has a 1x1 expansion conv that disappears when hidden == input width."""
    return block_class(op) in (IRBlock, IRPoolBlock)


def _config(key: str, path: str) -> BlockConfig:
    try:
        return config_from_key(key)
    except (ValueError, IndexError):
        raise LatencyTableError(f"latency table {path!r}: {key!r} is not a block configuration key") from None


REQUIRED = {
    "format": str,
    "space": str,
    "space_digest": str,
    "resolutions": list,
    "num_classes": int,
    "in_chans": int,
    "runtime": str,
    "int8": bool,
    "threads": int,
    "mode": str,
    "entries": dict,
    "overhead_ms": dict,
    "complete": bool,
}


def check_table_data(data: Any, path: str) -> None:
    """The file's structure: every required field with its type, finite non-negative times."""
    if not isinstance(data, dict):
        raise LatencyTableError(f"latency table {path!r} holds {type(data).__name__}, not a table")
    if data.get("format") != FORMAT and data.get("format") not in OLD_FORMATS:
        raise LatencyTableError(f"latency table {path!r} has format {data.get('format')!r}, expected {FORMAT!r}")
    for key, kind in REQUIRED.items():
        if not isinstance(data.get(key), kind):
            raise LatencyTableError(
                f"latency table {path!r}: field {key!r} is missing or not a {kind.__name__}; the file is corrupt: "
                f"build it again (python tools/latency_table.py {data.get('space', 'SPACE')} --out {path})"
            )
    if not data["complete"]:
        raise LatencyTableError(f"latency table {path!r} is a build in progress; finish it by rerunning its command")
    if data.get("statistic", "median") not in STATISTICS:
        raise LatencyTableError(
            f"latency table {path!r}: statistic {data['statistic']!r} is not one of {list(STATISTICS)}"
        )
    if data["mode"] not in ("exact", "grid"):
        raise LatencyTableError(f"latency table {path!r}: mode {data['mode']!r} is neither 'exact' nor 'grid'")
    check_interpolation(data.get("interpolation", PLAIN), path)
    stat = STATISTICS[data.get("statistic", "median")]
    for key, entry in itertools.chain(data["entries"].items(), [("overhead_ms", data["overhead_ms"])]):
        for field in dict.fromkeys(("ms", stat)):
            ms = entry.get(field) if isinstance(entry, dict) else None
            if not isinstance(ms, (int, float)) or isinstance(ms, bool) or not math.isfinite(ms) or ms < 0:
                raise LatencyTableError(
                    f"latency table {path!r}: entry {key!r} has no finite, non-negative {field!r} ({entry!r})"
                )


def check_interpolation(interpolation: Any, path: str) -> None:
    """``interpolation``: ``{"padded": {axis: {"tile": positive int, "share": in [0, 1)}}}``."""
    padded = interpolation.get("padded") if isinstance(interpolation, dict) else None
    ok = isinstance(padded, dict) and set(padded) <= set(PADDABLE)
    for pad in padded.values() if ok else ():
        tile, share = (pad.get("tile"), pad.get("share")) if isinstance(pad, dict) else (None, None)
        ok = ok and isinstance(tile, int) and not isinstance(tile, bool) and tile > 0
        ok = ok and isinstance(share, (int, float)) and not isinstance(share, bool) and 0 <= share < 1
    if not ok:
        raise LatencyTableError(
            f"latency table {path!r}: interpolation {interpolation!r} is not of the form {PADDED_FP32} (axes "
            f"{', '.join(PADDABLE)}; tile a positive int, share in [0, 1)); the file is corrupt: build it again"
        )


def save_table(data: Dict[str, Any], path: str) -> None:
    """Write ``data`` atomically (a crash leaves the old file or the new one, never half of one)."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def quantiles(samples: List[float]) -> Tuple[float, float, float]:
    """``(q1, median, q3)`` of a list of samples."""
    t = torch.tensor(samples, dtype=torch.float64)
    q = torch.quantile(t, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return float(q[0]), float(q[1]), float(q[2])
