"""Measuring a latency table: every block configuration of a space timed alone in a runtime.

    table = measure_latency_table("mnist_small_space", "output/mnist.json", LatencySettings(runtime="eager"))

1. The space's distinct block configurations (and the head) come from the same enumeration the
   budgeted search uses (:func:`~mobile_cv.latency.configs.space_configs`). Up to ``max_configs``
   of them, every one is timed ("exact" table). Above that, each block position's configs are
   covered by a grid (per op and structure; ``grid_points`` values per axis, the axes' extremes
   included, input sizes in pixels squared) and the rest is interpolated multilinearly; ``held_out``
   configurations off the grid are timed too, and the interpolation's error on them is recorded.
2. Every configuration is exported and lowered (in ``jobs`` worker processes, ``chunk`` at a time:
   the slow part, while nothing is timed), each program written to ``TABLE.partial/`` as it is done,
   so an interrupted build resumes with what it finished.
3. Then all the programs are loaded and timed alone in this process, together: ``warmup`` rounds,
   then ``rounds`` interleaved rounds over every configuration (each once per round, the order
   rotated), batch 1, ``threads`` threads; a configuration's sample in a round is ``settle_calls``
   untimed calls (a program runs slower for its first calls after another ran; a deployed model runs
   call after call), then the median of the calls that fit in ~1 ms (at least 3). A slow spell of the
   machine then falls on every
   configuration alike. The median over rounds and the spread (quartiles, fastest round) are kept,
   and the runtime's call cost (a trivial program timed in the same rounds) with them.
4. The finished table is written atomically and ``TABLE.partial/`` removed; a finished table with
   the same settings is reused, not rebuilt; one with other settings is refused (nothing changed).
"""

from __future__ import annotations

import concurrent.futures
import copy
import datetime
import hashlib
import json
import logging
import multiprocessing
import os
import random
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..arch.arch_registry import resolve_arch_def
from ..arch.builder import build_model
from ..atomic_files import atomic_copy, atomic_write_bytes
from ..search import build_supernet
from ..search.budget import BudgetTable
from .calibration import (
    Correction,
    calibration_indices,
    corner_indices,
    describe_correction,
    fit_correction,
    model_terms,
    table_l2_params,
    unique,
)
from .configs import HEAD, BlockConfig, ItemConfigs, block_configs, build_module
from .probes import choose_probes
from .runtimes import check_runtime, compile_module, cpu_model, load_runner, machine, set_threads, versions
from .table import (
    FORMAT,
    IDENTITY,
    PLAIN,
    STATISTICS,
    Grid,
    LatencyTable,
    LatencyTableError,
    _config,
    build_command,
    check_table_data,
    command_of,
    grid_dims,
    interpolation_for,
    quantiles,
    save_table,
    space_digest,
)

logger = logging.getLogger("mobile_cv.latency")

MIN_SAMPLE_S = 0.001  # a timing sample: the median of the calls that fit in this long (at least 3)
# Untimed calls before each sample: a program runs slower for its first calls after another program
# ran (an F model at 128 px: 3.8 ms on its first call, 2.7 ms from about the eighth on; a block too), and
# a deployed model runs call after call. Tables built before 2026-12-06 record no value: they settled 0.
SETTLE_CALLS = 8
MEASUREMENT_SETTINGS = (
    "rounds",
    "settle_calls",
    "warmup",
    "max_configs",
    "grid_points",
    "held_out",
    "calibration_models",
    "statistic",
    "seed",
)
MODEL = "model:"  # the key prefix of a calibration model's program
METHOD = (
    "blocks timed alone (warm), interleaved rounds, each sample after settle_calls untimed calls, medians; "
    "whole-model correction fitted on calibration models "
    "timed in the same rounds (mobile_cv/latency/calibration.py); probes (mobile_cv/latency/probes.py)"
)


@dataclass
class LatencySettings:
    """How a table is measured (the first four must match the search that uses it)."""

    runtime: str = "executorch"
    int8: bool = False
    threads: int = 1
    resolutions: Optional[List[int]] = None  # None: the space's own
    num_classes: int = 1000
    in_chans: int = 3
    rounds: int = 90  # 15 before 2026-12-06: the F grid's held-out error 6.1% at 15 rounds, 4.7% at 45, 3.7% at 90
    settle_calls: int = SETTLE_CALLS  # untimed calls of a program before each of its samples
    warmup: int = 3
    max_configs: int = 3000  # more distinct configs than this: a grid and interpolation
    grid_points: Tuple[int, int, int, int] = (2, 5, 3, 2)  # values per axis: c_in, hidden, c_out, size
    held_out: int = 200  # grid mode: configs off the grid timed to measure the interpolation's error
    calibration_models: int = 64  # whole random architectures timed with the blocks (the correction's fit)
    statistic: str = "q1"  # the summary of the rounds the lookups use: "q1" (first quartile), "median", "min"
    jobs: int = 0  # export worker processes (0: one per CPU core)
    chunk: int = 48  # configs exported together (an interrupted build loses at most one chunk's work)
    seed: int = 0


def space_with_resolutions(space_def: Dict[str, Any], resolutions: Optional[Sequence[int]]) -> Dict[str, Any]:
    """The space with its resolution options replaced (a space without resolution search: its input size)."""
    if not resolutions:
        return space_def
    space = copy.deepcopy(space_def)
    sizes = sorted(int(r) for r in resolutions)
    if len(sizes) == 1 and "resolution" not in space.get("search", {}):
        space["input_size"] = sizes[0]
        return space
    space["input_size"] = max(sizes[-1], int(space.get("input_size", sizes[-1])))
    space.setdefault("search", {})["resolution"] = sizes
    return space


def plan(net, settings: LatencySettings) -> Tuple[str, List[BlockConfig], List[Grid], List[BlockConfig], int]:
    """``(mode, configs to time, grids, held-out configs, distinct configs of the space)``."""
    groups: Dict[Tuple, Dict[str, BlockConfig]] = {}
    distinct: Dict[str, BlockConfig] = {}
    for block, c in block_configs(net):
        distinct.setdefault(c.key, c)
        groups.setdefault((block, c.op, c.residual, c.expand), {})[c.key] = c
    if len(distinct) <= settings.max_configs:
        return "exact", list(distinct.values()), [], [], len(distinct)
    grids, points = [], {}
    per_axis = dict(zip(("c_in", "hidden", "c_out", "size"), settings.grid_points))
    for (block, _, _, _), members in groups.items():
        members = list(members.values())
        first = members[0]
        # widths and size come from the axes; base.hidden only says whether there is a hidden width
        base = replace(
            first, c_in=0, hidden=1 if first.hidden else 0, c_out=first.c_out if first.op == HEAD else 0, size=0
        )
        axes = {d: _spread(sorted({getattr(c, d) for c in members}), per_axis[d]) for d in grid_dims(first)}
        grid = Grid(block, base, axes)
        grids.append(grid)
        for p in grid.points():
            points.setdefault(p.key, p)
    rng = random.Random(settings.seed)
    off_grid = [c for k, c in distinct.items() if k not in points]
    held_out = rng.sample(off_grid, min(settings.held_out, len(off_grid)))
    return "grid", list(points.values()), grids, held_out, len(distinct)


def _spread(values: List[int], k: int) -> List[int]:
    """``k`` of the sorted ``values``, evenly spaced by rank, both ends included (all when fewer)."""
    if len(values) <= k:
        return values
    if k == 1:
        return [values[0]]
    return sorted({values[round(i * (len(values) - 1) / (k - 1))] for i in range(k)})


class _Trivial(torch.nn.Module):
    """The smallest program a runtime runs: its call cost, with nearly no work."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


TRIVIAL = "overhead"


def _compile_one(args) -> Tuple[str, Any]:
    """Worker: ``(key, compiled program)`` of one config, one whole model (a :class:`ModelSpec`), or
    the trivial program (None)."""
    runtime, int8, key, config = args
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if isinstance(config, ModelSpec):
        module = build_model(config.arch, num_classes=config.num_classes, in_chans=config.in_chans)
    else:
        module = _Trivial() if config is None else build_module(config)
    return key, compile_module(runtime, module, example_of(config), int8)


@dataclass(frozen=True)
class ModelSpec:
    """A whole model to time (a calibration model or a probe): a plain arch def and its classifier."""

    arch_json: str
    num_classes: int
    in_chans: int

    @property
    def arch(self) -> Dict[str, Any]:
        return json.loads(self.arch_json)

    @classmethod
    def of(cls, arch: Dict[str, Any], num_classes: int, in_chans: int) -> "ModelSpec":
        return cls(json.dumps(arch, sort_keys=True), num_classes, in_chans)


Program = Optional[Any]  # a BlockConfig, a ModelSpec, or None (the trivial program)


@dataclass
class ProgramPlan:
    """Every program a table times, by key (:meth:`TableMeasurement.plan_programs`)."""

    mode: str  # "exact" or "grid"
    todo: List[BlockConfig]  # the table's entries
    grids: List[Grid]
    held_out: List[BlockConfig]
    n_distinct: int
    calibration: List[Dict[str, int]]  # the calibration models' choice indices
    models: Dict[str, "ModelSpec"]
    configs: Dict[str, Program]  # all of the above and the trivial program


def example_of(config: Program) -> torch.Tensor:
    """The input a program is timed on (random, seeded: the same at build and at a check)."""
    if config is None:
        return torch.zeros(1, 1, 1, 1)
    if isinstance(config, ModelSpec):
        size = config.arch["input_size"]
        return torch.randn(1, config.in_chans, size, size, generator=torch.Generator().manual_seed(0))
    return config.example()


def time_interleaved(
    runners: Dict[str, Callable[[], Any]],
    rounds: int,
    warmup: int,
    each_round: Optional[Callable[[int], None]] = None,
    settle: int = SETTLE_CALLS,
) -> Dict[str, List[float]]:
    """Per-call ms samples of every runner: ``warmup`` rounds, then ``rounds`` interleaved rounds
    (each runner once per round, the order rotated every round). A runner's sample in a round is
    ``settle`` untimed calls (it has settled after the other runners ran), then the median of as many
    calls, each timed, as last :data:`MIN_SAMPLE_S` (at least 3): an interrupt hitting one call does
    not move it."""
    keys = list(runners)
    calls = {}
    for k in keys:  # how many calls make a sample
        t0 = time.perf_counter()
        runners[k]()
        dt = max(time.perf_counter() - t0, 1e-7)
        calls[k] = max(3, min(200, int(MIN_SAMPLE_S / dt)))
    samples: Dict[str, List[float]] = {k: [] for k in keys}
    for r in range(warmup + rounds):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for k in order:
            run, times = runners[k], []
            for _ in range(settle):
                run()
            for _ in range(calls[k]):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            if r >= warmup:
                samples[k].append(statistics.median(times) * 1e3)
        if each_round:
            each_round(r + 1)
    return samples


def summarize_samples(samples: List[float]) -> Dict[str, float]:
    q1, med, q3 = quantiles(samples)
    return {"ms": round(med, 6), "q1": round(q1, 6), "q3": round(q3, 6), "min": round(min(samples), 6)}


class TableMeasurement:
    """Builds one table; see the module docstring.

    ``progress(phase, done, total)`` is called as it goes: phase "export" per chunk of programs
    (done/total programs), phase "timing" per round (done/total rounds).
    """

    def __init__(self, space: str, out: str, settings: LatencySettings, cache_dir: Optional[str] = None) -> None:
        """``cache_dir``: programs exported before (by a build, a bundle or a benchmark) are taken from
        there, and the new ones kept there (:func:`program_cache_path`)."""
        check_runtime(settings.runtime, settings.int8)
        self.cache_dir = cache_dir
        if settings.threads < 1:
            raise LatencyTableError(f"--threads must be >= 1, got {settings.threads}")
        if settings.statistic not in STATISTICS:
            raise LatencyTableError(f"--statistic must be one of {list(STATISTICS)}, got {settings.statistic!r}")
        self.space, self.out, self.settings = space, out, settings
        space_def, _ = resolve_arch_def(space)
        if "search" not in space_def:
            raise LatencyTableError(
                f"{space!r} is not a search space (it has no 'search' key): a latency table covers the blocks a "
                f"search space can produce; tools/latency_table.py takes a space (arch_defs.names('space'))"
            )
        self.space_def = space_def
        self.net = build_supernet(
            space_with_resolutions(space_def, settings.resolutions), settings.num_classes, in_chans=settings.in_chans
        )
        self.header = {
            "format": FORMAT,
            "space": space,
            "space_digest": space_digest(space_def),
            "resolutions": list(self.net.res_sizes or [self.net.input_size]),
            "num_classes": settings.num_classes,
            "in_chans": settings.in_chans,
            "runtime": settings.runtime,
            "int8": settings.int8,
            "threads": settings.threads,
        }

    @classmethod
    def from_identity(cls, space: str, out: str, identity: Dict[str, Any]) -> "TableMeasurement":
        """The measurement of the table a bundle was written for (its header and measured settings, as
        :func:`~.bundle.write_bundle` records them); refused when the space changed since."""
        known = {f.name for f in fields(LatencySettings)}
        given = {**{k: identity[k] for k in IDENTITY if k in known}, **identity["settings"]}
        given["resolutions"] = identity["resolutions"]
        given["grid_points"] = tuple(given["grid_points"])
        measurement = cls(space, out, LatencySettings(**{k: v for k, v in given.items() if k in known}))
        if measurement.header["space_digest"] != identity["space_digest"]:
            raise LatencyTableError(
                f"{space!r} changed since the bundle was written (its definition's digest differs): "
                f"write the bundle again"
            )
        return measurement

    @property
    def partial_dir(self) -> str:
        """Where an unfinished build keeps its exported programs (deleted when the table is written)."""
        return self.out + ".partial"

    def command(self) -> str:
        h = self.header
        return build_command(
            self.space,
            h["runtime"],
            h["int8"],
            h["threads"],
            h["resolutions"],
            self.out,
            h["num_classes"],
            h["in_chans"],
        )

    def _measured_settings(self) -> Dict[str, Any]:
        """The settings that change what a table holds (not jobs or chunk: how fast it is built)."""
        s = asdict(self.settings)
        return json.loads(json.dumps({k: s[k] for k in MEASUREMENT_SETTINGS}))

    def _check_same(self, data: Dict[str, Any], path: str) -> None:
        diff = [(k, data.get(k), self.header[k]) for k in IDENTITY if data.get(k) != self.header[k]]
        theirs = data.get("settings", {})
        diff += [(k, theirs.get(k), v) for k, v in self._measured_settings().items() if theirs.get(k) != v]
        if diff:
            d = ", ".join(f"{k} {old!r} (asked: {new!r})" for k, old, new in diff)
            raise LatencyTableError(
                f"{path} holds a table built for other settings ({d}); nothing was changed. Choose another --out, "
                f"or delete {path} to rebuild it"
            )

    def existing(self) -> Optional[LatencyTable]:
        """The finished table at ``out`` if there is one for these settings (else None; another's: an error)."""
        if not os.path.exists(self.out):
            return None
        table = LatencyTable.load(self.out)
        self._check_same(table.data, self.out)
        return table

    def _open_partial(self) -> float:
        """The partial folder of these settings: created, or an interrupted build's (checked); returns
        the seconds earlier runs spent exporting into it."""
        state = os.path.join(self.partial_dir, "settings.json")
        if os.path.isfile(state):
            try:
                with open(state, encoding="utf-8") as f:
                    data = json.load(f)
            except (ValueError, OSError) as e:
                raise LatencyTableError(
                    f"{state} (an interrupted build's) cannot be read ({e}); delete {self.partial_dir} to start over"
                ) from None
            self._check_same(data, self.partial_dir)
            return float(data.get("export_seconds", 0.0))
        if os.path.exists(self.partial_dir) and os.listdir(self.partial_dir):
            raise LatencyTableError(f"{self.partial_dir} exists and is not an interrupted build's; move it away")
        os.makedirs(os.path.join(self.partial_dir, "programs"), exist_ok=True)
        self._save_state(0.0)
        return 0.0

    def _save_state(self, export_seconds: float) -> None:
        state = {**self.header, "settings": self._measured_settings(), "export_seconds": round(export_seconds, 1)}
        save_table(state, os.path.join(self.partial_dir, "settings.json"))

    def _program_path(self, key: str) -> str:
        return os.path.join(self.partial_dir, "programs", hashlib.sha1(key.encode()).hexdigest() + ".bin")

    def plan_programs(self) -> "ProgramPlan":
        """What a table of these settings times: the blocks (grid points or every configuration), the
        held-out configurations, the calibration models and the call cost's trivial program."""
        s = self.settings
        mode, todo, grids, held_out, n_distinct = plan(self.net, s)
        logger.info(
            "%s: %d distinct block configurations, the head included%s; timing %d%s in %s%s, %d thread(s)",
            self.space,
            n_distinct,
            "" if mode == "exact" else f" (more than --max-configs {s.max_configs}: a grid and interpolation)",
            len(todo),
            f" grid points and {len(held_out)} held-out configurations" if mode == "grid" else "",
            s.runtime,
            " int8" if s.int8 else "",
            s.threads,
        )
        calibration = unique(calibration_indices(self.net, s.calibration_models, s.seed))
        h = self.header
        models = {
            f"{MODEL}{j}": ModelSpec.of(self.net.derive_arch(self.net.one_hot(index)), h["num_classes"], h["in_chans"])
            for j, index in enumerate(calibration)
        }
        configs: Dict[str, Program] = {TRIVIAL: None}
        configs.update((c.key, c) for c in [*todo, *held_out])
        configs.update(models)
        return ProgramPlan(mode, todo, grids, held_out, n_distinct, calibration, models, configs)

    def run(self, progress: Optional[Callable[[str, int, int], None]] = None) -> LatencyTable:
        s = self.settings
        found = self.existing()
        if found is not None:
            logger.info("%s: a finished table for these settings; reused", self.out)
            return found
        t_start = time.perf_counter()
        p = self.plan_programs()
        earlier = 0.0
        if s.runtime != "eager":
            earlier = self._open_partial()
            self._export(p.configs, progress, earlier)
        samples = self._time_all(p.configs, progress)
        measured = {"versions": versions(s.runtime), "cpu": cpu_model(), "machine": machine()}
        seconds = earlier + time.perf_counter() - t_start  # an interrupted export's time too
        data = self.assemble(p, samples, measured, seconds)
        save_table(data, self.out)
        if os.path.isdir(self.partial_dir):
            shutil.rmtree(self.partial_dir)
        logger.info("%s: %d entries in %.0f s", self.out, len(data["entries"]), data["build_seconds"])
        return LatencyTable(data, self.out)

    def assemble(
        self, p: "ProgramPlan", samples: Dict[str, List[float]], measured: Dict[str, Any], seconds: float
    ) -> Dict[str, Any]:
        """The table's data from every program's per-round samples (ms) and where they were measured
        (``measured``: versions, cpu, machine, and for a device's timings how they were taken)."""
        s = self.settings
        data = {
            **self.header,
            **measured,
            "method": METHOD,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "settings": {**self._measured_settings(), "jobs": s.jobs, "chunk": s.chunk},
            "mode": p.mode,
            "statistic": s.statistic,
            "configs_total": p.n_distinct,
            "entries": {c.key: summarize_samples(samples[c.key]) for c in p.todo},
            "overhead_ms": summarize_samples(samples[TRIVIAL]),
            "complete": True,
        }
        if p.mode == "grid":
            data["grids"] = [{"block": g.block, "base": g.base.key, "axes": g.axes} for g in p.grids]
            data["held_out"] = {c.key: summarize_samples(samples[c.key]) for c in p.held_out}
            data["interpolation"], data["interpolation_choice"], data["interpolation_error"] = choose_interpolation(
                data, self.net, p.held_out, self.out, s.seed
            )
        data["calibration"] = {
            "seed": s.seed,
            "models": [
                {"index": index, "arch": spec.arch, **summarize_samples(samples[key])}
                for (key, spec), index in zip(p.models.items(), p.calibration)
            ],
        }
        fit = calibrate(data, self.net, self.out)
        if data["calibration"]["models"]:
            logger.info(
                "whole-model correction from %d calibration models: %s (leave-one-out error %.1f%%, max %.1f%%)",
                fit.models,
                describe_correction(fit),
                fit.loo_mape,
                fit.loo_max,
            )
        data["probes"] = choose_probes(data, p.todo, p.models)
        data["build_seconds"] = round(seconds, 1)
        check_table_data(data, self.out)
        return data

    def _export(self, configs: Dict[str, Program], progress, earlier: float) -> None:
        """Every program not yet in the partial folder, exported in worker processes, chunk by chunk
        (each program written atomically: an interrupted build keeps what it finished)."""
        s = self.settings
        missing = [k for k in configs if not os.path.isfile(self._program_path(k))]
        tag = json.dumps([s.runtime, s.int8, versions(s.runtime)], sort_keys=True)
        cached = {k: program_cache_path(self.cache_dir, s.runtime, tag, configs[k]) for k in missing}
        for k, path in cached.items():
            if path and os.path.isfile(path):
                atomic_copy(path, self._program_path(k))
        missing = [k for k in missing if not os.path.isfile(self._program_path(k))]
        if self.cache_dir:
            os.makedirs(self.cache_dir, exist_ok=True)
        done = len(configs) - len(missing)
        if progress:
            progress("export", done, len(configs))
        if not missing:
            return
        t0 = time.perf_counter()
        workers = s.jobs or os.cpu_count() or 1
        pool = None
        if workers > 1:
            pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            for i in range(0, len(missing), s.chunk):
                args = [(s.runtime, s.int8, k, configs[k]) for k in missing[i : i + s.chunk]]
                for key, program in pool.map(_compile_one, args) if pool else map(_compile_one, args):
                    atomic_write_bytes(self._program_path(key), program)
                    if cached.get(key):
                        atomic_write_bytes(cached[key], program)
                done += len(args)
                self._save_state(earlier + time.perf_counter() - t0)
                if progress:
                    progress("export", done, len(configs))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    def _time_all(self, configs: Dict[str, Program], progress) -> Dict[str, List[float]]:
        """Every program loaded at once and timed in the same interleaved rounds (a slow spell of the
        machine then falls on every configuration alike, not on one chunk of them)."""
        s = self.settings
        set_threads(s.runtime, s.threads)
        runners = {}
        for key, config in configs.items():
            if s.runtime == "eager":
                compiled = _compile_one((s.runtime, s.int8, key, config))[1]
            else:
                with open(self._program_path(key), "rb") as f:
                    compiled = f.read()
            runners[key] = load_runner(s.runtime, compiled, example_of(config), s.threads)
        total = s.warmup + s.rounds

        def each_round(r: int) -> None:
            if progress:
                progress("timing", r, total)

        return time_interleaved(runners, s.rounds, s.warmup, each_round, s.settle_calls)


def calibrate(data: Dict[str, Any], net, path: str = "") -> Correction:
    """Fill in the calibration models' features by the table in ``data`` (its entries read at its
    statistic, uncorrected) and fit the correction on their timings at the same statistic; stores
    both in ``data`` (``calibration.models[*].blocks_ms/mparams``, ``correction``) and returns the fit."""
    table = LatencyTable(data, path)
    blocks, params = table.blocks_table(net), BudgetTable(net, "params")
    l2_table = table_l2_params(data, params)
    rows = data["calibration"]["models"]
    for r in rows:
        r.pop("mparams_l2", None)
        r.update(model_terms(blocks, params, r["index"], max(data["resolutions"]), l2_table))
    o = table.overhead_ms
    fit = fit_correction(
        [r["blocks_ms"] for r in rows],
        [r["mparams"] for r in rows],
        [r[table.stat] - o for r in rows],
        [r["small"] for r in rows],
        [r["mparams_l2"] for r in rows] if l2_table is not None else None,
    )
    data["correction"] = fit.to_dict()
    return fit


def held_out_errors(
    table: LatencyTable, owner_of: Dict[str, str], held_out: List[BlockConfig]
) -> List[Tuple[float, float]]:
    """Per held-out configuration, the relative error of its interpolated entry (with the call cost)
    and of its block's latency net of the call cost; ``owner_of``: a config key's first block."""
    errors = []
    for c in held_out:
        measured = table.data["held_out"][c.key][table.stat]
        predicted = predict_config(table, owner_of[c.key], c)
        net_measured = max(measured - table.overhead_ms, 1e-9)
        entry_error = abs(predicted + table.overhead_ms - measured) / measured
        errors.append((entry_error, abs(predicted - net_measured) / net_measured))
    return errors


def summarize_errors(errors: Sequence[Tuple[float, float]]) -> Dict[str, float]:
    """Mean relative error of the entries and of the blocks, p90 and max of the blocks', in %."""
    if not errors:
        return {}
    q = sorted(e for _, e in errors)
    return {
        "configs": len(errors),
        "mape_entry": round(100 * statistics.mean(e for e, _ in errors), 3),
        "mape_block": round(100 * statistics.mean(q), 3),
        "p90_block": round(100 * q[int(0.9 * (len(q) - 1))], 3),
        "max_block": round(100 * q[-1], 3),
    }


def first_blocks(net) -> Dict[str, str]:
    """Each config key of ``net``'s space and the first block position that has it."""
    owner_of: Dict[str, str] = {}
    for block, c in block_configs(net):
        owner_of.setdefault(c.key, block)
    return owner_of


def interpolation_error(table: LatencyTable, net, held_out: List[BlockConfig]) -> Dict[str, float]:
    """The grid's error on the held-out configurations: interpolated vs measured, both with the
    call cost (relative error of the entry, and of the block's latency net of the call cost)."""
    return summarize_errors(held_out_errors(table, first_blocks(net), held_out))


# The readings a grid table chooses between, per axis (None: as it is; see
# mobile_cv.latency.table.PLAIN). Tiles of the kernels of XNNPACK's targets: output channels in 8, 16
# or 32 (NEON, AVX2, AVX-512 GEMMs and depthwise kernels), pixels in 4 to 8 rows (the GEMMs' mr).
READING_OPTIONS: Dict[str, List[Optional[Dict[str, Any]]]] = {
    "hidden": [None] + [{"tile": t, "share": s} for t in (8, 16, 32) for s in (0.5, 0.8)],
    "c_out": [None] + [{"tile": t, "share": 0.5} for t in (8, 16, 32)],
    "size": [None] + [{"tile": t, "share": 0.95} for t in (4, 5, 6, 7, 8)],
}
MIN_HELD_OUT_TO_CHOOSE = 40  # fewer held-out configurations: the default reading (interpolation_for)


def choose_interpolation(
    data: Dict[str, Any], net, held_out: List[BlockConfig], path: str = "", seed: int = 0
) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, float]]:
    """The reading of a grid table's points that interpolates its held-out configurations best:
    ``(interpolation, how, error)``, ``error`` being its :func:`interpolation_error` (computed once,
    here). A coordinate search over :data:`READING_OPTIONS` (each axis in turn, the others held,
    until nothing changes) from the plain reading, minimizing the mean error of the blocks. The
    error of the chosen reading on the configurations it was chosen on flatters it, so
    ``how["cross_validated"]`` holds the honest figure: the held-out set split in two halves (seeded),
    each half read with the reading chosen on the other. With fewer than
    :data:`MIN_HELD_OUT_TO_CHOOSE` held-out configurations: the default (:func:`interpolation_for`)."""
    owner_of = first_blocks(net)
    if len(held_out) < MIN_HELD_OUT_TO_CHOOSE:
        reading = interpolation_for(data["int8"])
        how = {
            "chosen": False,
            "why": f"{len(held_out)} held-out configurations (fewer than {MIN_HELD_OUT_TO_CHOOSE}): the default",
        }
        table = LatencyTable({**data, "interpolation": reading}, path)
        return reading, how, summarize_errors(held_out_errors(table, owner_of, held_out))
    memo: Dict[str, List[Tuple[float, float]]] = {}

    def errors(reading: Dict[str, Any]) -> List[Tuple[float, float]]:
        key = json.dumps(reading, sort_keys=True)
        if key not in memo:
            memo[key] = held_out_errors(LatencyTable({**data, "interpolation": reading}, path), owner_of, held_out)
        return memo[key]

    def search(rows: Sequence[int]) -> Dict[str, Any]:
        def cost(reading):
            e = errors(reading)
            return statistics.mean(e[i][1] for i in rows)

        best = {"padded": {}}
        for _ in range(4):
            changed = False
            for axis, options in READING_OPTIONS.items():
                trials = []
                for option in options:
                    padded = {a: p for a, p in best["padded"].items() if a != axis}
                    if option is not None:
                        padded[axis] = option
                    reading = {"padded": {a: padded[a] for a in READING_OPTIONS if a in padded}}
                    trials.append((cost(reading), len(trials), reading))
                reading = min(trials, key=lambda t: t[:2])[2]
                changed = changed or reading != best
                best = reading
            if not changed:
                break
        return best

    rows = list(range(len(held_out)))
    order = rows[:]
    random.Random(seed).shuffle(order)
    halves = (order[: len(order) // 2], order[len(order) // 2 :])
    crossed = []
    for fit, score in (halves, halves[::-1]):
        reading = search(fit)
        crossed += [errors(reading)[i] for i in score]
    chosen = search(rows)
    how = {
        "chosen": True,
        "options": READING_OPTIONS,
        "readings_tried": len(memo),
        "cross_validated": summarize_errors(crossed),
        "plain": summarize_errors(errors({"padded": {}})),
    }
    return chosen, how, summarize_errors(errors(chosen))


def predict_config(table: LatencyTable, block: str, config: BlockConfig) -> float:
    """The table's latency of one config at one block position (net of the call cost)."""
    configs = ItemConfigs(
        replace(config, c_in=0, hidden=0, c_out=0, size=0),
        torch.tensor([config.c_in]),
        torch.tensor([config.hidden]),
        torch.tensor([config.c_out]),
        (config.size,),
    )
    return float(table.lookup_grid(block, configs)[0, 0])


def measure_latency_table(
    space: str, out: str, settings: LatencySettings, progress: Optional[Callable[[int, int], None]] = None
) -> LatencyTable:
    """Build (or reuse, or resume) the latency table of ``space`` at ``out``; see the module docstring."""
    return TableMeasurement(space, out, settings).run(progress)


def _compile_arch(args) -> Any:
    """Worker: the compiled whole model of a plain arch def."""
    runtime, int8, arch, num_classes, in_chans = args
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(arch, num_classes=num_classes, in_chans=in_chans)
    return compile_module(runtime, model, torch.zeros(1, in_chans, arch["input_size"], arch["input_size"]), int8)


def time_models(
    archs: Sequence[Dict[str, Any]], table: LatencyTable, rounds: int = 15, warmup: int = 3, jobs: int = 0
) -> List[Dict[str, float]]:
    """Each plain arch def exported whole and timed as ``table`` was measured (its runtime, int8,
    threads, classes, channels; the program reads its input in place): interleaved rounds over all
    the models, batch 1. Returns ``{"ms", "q1", "q3", "min"}`` per arch. Run it alone."""
    d = table.data
    check_runtime(d["runtime"], d["int8"])
    args = [(d["runtime"], d["int8"], arch, d["num_classes"], d["in_chans"]) for arch in archs]
    if d["runtime"] == "eager" or jobs == 1:
        compiled = list(map(_compile_arch, args))
    else:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs or os.cpu_count(), mp_context=ctx) as pool:
            compiled = list(pool.map(_compile_arch, args))
    set_threads(d["runtime"], d["threads"])
    runners = {}
    for j, (arch, program) in enumerate(zip(archs, compiled)):
        size = arch["input_size"]
        example = torch.randn(1, d["in_chans"], size, size, generator=torch.Generator().manual_seed(0))
        runners[j] = load_runner(d["runtime"], program, example, d["threads"])
    samples = time_interleaved(runners, rounds, warmup)
    return [summarize_samples(samples[j]) for j in range(len(archs))]


def program_cache_path(cache_dir: Optional[str], runtime: str, tag: str, spec: Program) -> Optional[str]:
    """Where a compiled program is cached: keyed by what the program is (a block's configuration key,
    a model's arch def, classes and channels) and ``tag`` (runtime, int8, package versions), never by
    its name in a table ("compute", "memory": probes of two spaces share names but not blocks)."""
    if cache_dir is None or runtime == "eager":
        return None
    if isinstance(spec, ModelSpec):
        what = spec.arch_json + f"|{spec.num_classes}|{spec.in_chans}"
    else:
        what = TRIVIAL if spec is None else spec.key
    return os.path.join(cache_dir, hashlib.sha1(f"{tag}|{what}".encode()).hexdigest() + ".bin")


def compile_programs(
    specs: Dict[str, Program], runtime: str, int8: bool, jobs: int = 0, cache_dir: Optional[str] = None
) -> Dict[str, Any]:
    """Every program of ``specs`` (blocks, whole models, the trivial one) compiled for ``runtime``, in
    ``jobs`` worker processes; with ``cache_dir``, programs compiled before (same spec, runtime, int8
    and package versions) are read from there and new ones written there."""
    tag = json.dumps([runtime, int8, versions(runtime)], sort_keys=True)

    def cache_path(key: str, spec: Program) -> Optional[str]:
        return program_cache_path(cache_dir, runtime, tag, spec)

    out: Dict[str, Any] = {}
    todo = []
    for key, spec in specs.items():
        path = cache_path(key, spec)
        if path and os.path.isfile(path):
            with open(path, "rb") as f:
                out[key] = f.read()
        else:
            todo.append((runtime, int8, key, spec))
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
    if runtime == "eager" or jobs == 1 or len(todo) <= 1:
        results = map(_compile_one, todo)
        pool = None
    else:
        ctx = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(jobs or os.cpu_count(), mp_context=ctx)
        results = pool.map(_compile_one, todo)
    try:
        for key, program in results:
            out[key] = program
            path = cache_path(key, specs[key])
            if path:
                atomic_write_bytes(path, program)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return out


def time_programs(
    specs: Dict[str, Program], compiled: Dict[str, Any], runtime: str, threads: int, rounds: int, warmup: int
) -> Dict[str, List[float]]:
    """Per-call ms samples of every program, all timed together as a table's entries are (:func:`measure`)."""
    set_threads(runtime, threads)
    runners = {k: load_runner(runtime, compiled[k], example_of(spec), threads) for k, spec in specs.items()}
    return time_interleaved(runners, rounds, warmup)


def table_net(data: Dict[str, Any], path: str = ""):
    """The supernet a table was built for (its space at its resolutions, classifier and channels);
    a table of a space defined otherwise now is refused with the command that rebuilds it."""
    space_def, _ = resolve_arch_def(data["space"])
    if space_digest(space_def) != data["space_digest"]:
        raise LatencyTableError(
            f"latency table {path!r} was built for another definition of {data['space']!r} (digest "
            f"{data['space_digest']}, now {space_digest(space_def)}); build it again: {command_of(data, path)}"
        )
    return build_supernet(
        space_with_resolutions(space_def, data["resolutions"]), data["num_classes"], in_chans=data["in_chans"]
    )


def require_calibration(data: Dict[str, Any], path: str, what: str) -> List[Dict[str, Any]]:
    """The table's calibration rows; a table without them (built before tables had them) is one error
    naming the command that builds it again (``what``: the operation that needs them)."""
    rows = data.get("calibration", {}).get("models", [])
    if not rows:
        raise LatencyTableError(
            f"latency table {path!r} has no calibration models (built before tables had them): nothing to {what}; "
            f"build it again: {command_of(data, path)}"
        )
    return rows


def refit_table(path: str, out: str) -> Tuple[Correction, Correction]:
    """The whole-model correction of the table at ``path`` fitted again from its stored calibration
    timings (nothing is timed) with the forms this version knows, and a grid table read between its
    points as this version reads it (``interpolation`` chosen again on its held-out timings,
    :func:`choose_interpolation`; its held-out error recomputed), written with the rest of the table
    to ``out`` (a new file); what was replaced is kept under ``refitted``. Returns ``(before, after)``."""
    table = LatencyTable.load(path)
    data = copy.deepcopy(table.data)
    require_calibration(data, path, "refit")
    before = table.correction
    net = table_net(data, path)
    record = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "before": before.to_dict()}
    if data["mode"] == "grid":  # read the grid as this version reads it; the calibration's block sums follow
        record["interpolation_before"] = data.get("interpolation", PLAIN)
        record["interpolation_error_before"] = data.get("interpolation_error", {})
        if "interpolation_choice" in data:
            record["interpolation_choice_before"] = data["interpolation_choice"]
        held_out = [_config(k, path) for k in data.get("held_out", {})]
        seed = data.get("settings", {}).get("seed", 0)
        chosen = choose_interpolation(data, net, held_out, out, seed)
        data["interpolation"], data["interpolation_choice"], data["interpolation_error"] = chosen
    after = calibrate(data, net, out)
    data.setdefault("refitted", []).append(record)
    save_table(data, out)
    return before, after


CALIBRATION_PROGRAM = "calibration {}"  # the name of calibration model i among a recalibration's programs


def calibration_programs(data: Dict[str, Any], added: Sequence[Dict[str, Any]] = ()) -> Dict[str, "ModelSpec"]:
    """Every calibration model of a table, then the rows ``added`` (:func:`corner_rows`), as whole
    programs to time, by :data:`CALIBRATION_PROGRAM` name (their row numbers once appended)."""
    rows = [*data.get("calibration", {}).get("models", []), *added]
    return {
        CALIBRATION_PROGRAM.format(i): ModelSpec.of(r["arch"], data["num_classes"], data["in_chans"])
        for i, r in enumerate(rows)
    }


def corner_rows(data: Dict[str, Any], per_size: int, path: str = "") -> List[Dict[str, Any]]:
    """Calibration rows (``index``, ``arch``, ``"corner": True``; timings to come) of ``per_size``
    weight-heavy architectures per input size (:func:`~mobile_cv.latency.calibration.corner_indices`),
    none already in the table's set."""
    net = table_net(data, path)
    seen = {json.dumps(r["index"], sort_keys=True) for r in data.get("calibration", {}).get("models", [])}
    seed = int(data.get("settings", {}).get("seed", 0)) + 1
    rows = []
    for index in unique(corner_indices(net, per_size, seed)):
        if json.dumps(index, sort_keys=True) not in seen:
            arch = ModelSpec.of(net.derive_arch(net.one_hot(index)), data["num_classes"], data["in_chans"]).arch
            rows.append({"index": index, "arch": arch, "corner": True})
    return rows


def recalibrate_table(
    table: LatencyTable, report: Dict[str, Any], out: str, added: Sequence[Dict[str, Any]] = ()
) -> Tuple[Correction, Correction]:
    """A copy of ``table`` for the machine in front of us, from a check that timed its calibration
    models (``report``: :func:`~mobile_cv.latency.probes.check_table` with ``extra`` =
    :func:`calibration_programs`): each calibration model's timings replaced by its timings now, the
    whole-model correction fitted again on them (the form chosen again, as a build chooses it), and
    the probes re-based on their timings now; the rows ``added`` (:func:`corner_rows`, timed in the
    same check) appended to the set. The block entries stay as built: the correction maps
    their sum to whole models as they run here, which moves with the machine more than the blocks do
    (docs/dmaskingnas.md, "Recalibrating a table"). Written atomically to ``out``; what was replaced
    is kept under ``recalibrated``. Returns ``(before, after)``."""
    data = copy.deepcopy(table.data)
    rows = require_calibration(data, table.path, "recalibrate")
    timed = report.get("extra", {})
    n_total = len(rows) + len(added)
    missing = [CALIBRATION_PROGRAM.format(i) for i in range(n_total) if CALIBRATION_PROGRAM.format(i) not in timed]
    if missing:
        raise ValueError(f"the check did not time {len(missing)} calibration models (e.g. {missing[0]!r})")
    stats = ("ms", "q1", "q3", "min")
    record = {
        "date": report.get("date") or datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "source": table.path,
        "rounds": report.get("rounds"),
        "versions": versions(data["runtime"]),
        "cpu": cpu_model(),
        "machine": machine(),
        "drift": round(report["drift"], 4),
        "probes": {n: round(v["ratio"], 4) for n, v in report["probes"].items()},
        "before": table.correction.to_dict(),
        # per calibration model: its timings at build (ms, q1, q3, min), and now over at build
        "calibration_before": [[r[k] for k in stats] for r in rows],
        "calibration_ratio": [
            round(timed[CALIBRATION_PROGRAM.format(i)][table.stat] / r[table.stat], 4) for i, r in enumerate(rows)
        ],
        "probes_before": {n: {k: p[k] for k in stats if k in p} for n, p in data.get("probes", {}).items()},
        "added": len(added),
    }
    rows.extend(copy.deepcopy(list(added)))
    for i, r in enumerate(rows):
        r.update({k: round(timed[CALIBRATION_PROGRAM.format(i)][k], 6) for k in stats})
    for name, p in data.get("probes", {}).items():  # re-based: a check right after reads 1
        now = rows[p["calibration"]] if p["kind"] == "model" else report["probes"][name]["now"]
        p.update({k: round(now[k], 6) for k in stats})
    after = calibrate(data, table_net(data, out), out)
    data.setdefault("recalibrated", []).append(record)
    save_table(data, out)
    return table.correction, after


def table_range(table: LatencyTable, net) -> Tuple[float, float]:
    """The fastest and slowest architecture of the space by the table, in ms."""
    return table.budget_table(net).extremes()


__all__ = [
    "LatencySettings",
    "ModelSpec",
    "TableMeasurement",
    "measure_latency_table",
    "calibration_programs",
    "corner_rows",
    "recalibrate_table",
    "refit_table",
    "require_calibration",
    "table_net",
    "compile_programs",
    "example_of",
    "summarize_samples",
    "table_range",
    "time_interleaved",
    "time_models",
    "time_programs",
]
