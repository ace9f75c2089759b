#!/usr/bin/env python
"""What a denser grid would buy, per axis, measured: a sample of a space's grids built with more
points than a table has, and configurations off those grids, all exported and timed in one
interleaved pass as a table's entries are; then the interpolation error on those configurations
with every sub-grid (fewer hidden-width points, fewer output-width points), from the same timings.

    python benchmarks/grid_density.py --table configs/latency/fbnetv2_f_space_executorch.json \\
        --hidden 9 --c-out 3 --grids 10 --per-grid 8 --cache output/program_cache

The table gives the space, resolutions, runtime, threads and statistic (nothing of its timings is
used). Grids are drawn in proportion to how many of the space's configurations they hold, so the
sample weighs the axes as a table's held-out set does. Printed per variant: the interpolation's mean
and p90 error, the number of grid points a whole table of that variant would time
(:func:`mobile_cv.latency.measure.plan`) and its export time at this run's seconds per program.
Run it alone: 1 thread, nothing else running.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from mobile_cv.latency import LatencyTable  # noqa: E402
from mobile_cv.latency.configs import block_configs  # noqa: E402
from mobile_cv.latency.measure import TRIVIAL, LatencySettings, compile_programs, plan, table_net, time_programs  # noqa: E402
from mobile_cv.latency.measure import summarize_samples as summary  # noqa: E402
from mobile_cv.latency.table import PADDED_FP32, PLAIN, Grid, _axis_coordinate, interpolate  # noqa: E402


def spread_indices(n, k):
    """The indices :func:`~mobile_cv.latency.measure._spread` keeps of ``n`` sorted values for ``k``."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def sub_grid(grid, keep):
    """``grid`` with each axis in ``keep`` ({dim: k}) thinned to ``k`` of its values by rank."""
    axes = {}
    for dim, values in grid.axes.items():
        k = keep.get(dim)
        axes[dim] = [values[i] for i in spread_indices(len(values), k)] if k else values
    return Grid(grid.block, grid.base, axes)


def predict(grid, config, ms, interpolation=PLAIN):
    dims = list(grid.axes)
    axes = [_axis_coordinate(d, torch.tensor(grid.axes[d]), interpolation) for d in dims]
    values = torch.tensor([ms[p.key] for p in grid.points()], dtype=torch.float64)
    values = values.reshape([len(grid.axes[d]) for d in dims])
    point = torch.stack([_axis_coordinate(d, torch.tensor([getattr(config, d)]), interpolation) for d in dims], 1)
    return float(interpolate(axes, values, point)[0])


def sample(net, dense_points, n_grids, per_grid, seed):
    """``n_grids`` dense grids with a hidden axis, drawn in proportion to the configurations each
    interpolates, and up to ``per_grid`` of those configurations off each: ``(grids, specs, held)``."""
    _, _, grids, _, _ = plan(net, replace(LatencySettings(), grid_points=dense_points))
    by_group = {(g.block, g.base.op, g.base.residual, g.base.expand): g for g in grids}
    members = {}  # grid -> the space's configs it interpolates (each config at its first block)
    seen = set()
    for block, c in block_configs(net):
        if c.key in seen or c.identity:
            continue
        seen.add(c.key)
        g = by_group.get((block, c.op, c.residual, c.expand))
        if g is not None and "hidden" in g.axes:
            members.setdefault(id(g), (g, []))[1].append(c)
    rng = random.Random(seed)
    pool = sorted(members.values(), key=lambda gm: (gm[0].block, gm[0].base.key))
    chosen = []
    while len(chosen) < min(n_grids, len(pool)):
        g, configs = rng.choices(pool, weights=[len(m) for _, m in pool])[0]
        if all(g is not c for c, _ in chosen):
            chosen.append((g, configs))
    specs, held = {TRIVIAL: None}, []
    for g, configs in chosen:
        points = {q.key for q in g.points()}
        specs.update((q.key, q) for q in g.points())
        off = [c for c in configs if c.key not in points]
        for c in rng.sample(off, min(per_grid, len(off))):
            specs[c.key] = c
            held.append((g, c))
    return [g for g, _ in chosen], specs, held


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", required=True, help="a grid table: its space, runtime, threads, statistic")
    p.add_argument("--hidden", type=int, default=9, help="hidden-width points of the dense grids")
    p.add_argument("--c-out", type=int, default=3, help="output-width points of the dense grids")
    p.add_argument("--grids", type=int, default=10, help="grids sampled")
    p.add_argument("--per-grid", type=int, default=8, help="off-grid configurations timed per grid")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--jobs", type=int, default=0)
    p.add_argument("--cache", help="keep exported programs here for the next run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write every variant and point here")
    args = p.parse_args()
    for flag, value, low in (
        ("--hidden", args.hidden, 2),
        ("--c-out", args.c_out, 2),
        ("--grids", args.grids, 1),
        ("--per-grid", args.per_grid, 1),
        ("--rounds", args.rounds, 1),
        ("--warmup", args.warmup, 0),
    ):
        if not low <= value <= 10000:
            p.error(f"{flag} must be an int in [{low}, 10000], got {value}")
    if not os.path.isfile(args.table):
        p.error(f"--table {args.table} is not a file")

    table = LatencyTable.load(args.table)
    d = table.data
    net = table_net(d, args.table)
    grids, specs, held = sample(net, (2, args.hidden, args.c_out, 2), args.grids, args.per_grid, args.seed)
    if not held:
        sys.exit(
            f"{d['space']} has no grid with a hidden-width axis at these settings (a space small enough to time "
            "every configuration, or no block with a hidden width): nothing is interpolated"
        )
    n_points = sum(len(g.points()) for g in grids)
    print(f"{len(grids)} grids ({n_points} points), {len(held)} configurations off them")
    t0 = time.perf_counter()
    compiled = compile_programs(specs, d["runtime"], d["int8"], args.jobs, args.cache)
    t1 = time.perf_counter()
    samples = time_programs(specs, compiled, d["runtime"], d["threads"], args.rounds, args.warmup)
    t2 = time.perf_counter()
    stat = {k: summary(v)[table.stat] for k, v in samples.items()}
    o = stat.pop(TRIVIAL)
    ms = {k: v - o for k, v in stat.items()}
    fresh = len(specs) - 1
    print(f"export {t1 - t0:.0f} s ({fresh} programs, some perhaps from the cache), timing {t2 - t1:.0f} s")

    variants = []
    for k_hidden in sorted({2, 3, 5, args.hidden} & set(range(2, args.hidden + 1))):
        for k_out in sorted({2, args.c_out}):
            variants.append({"hidden": k_hidden, "c_out": k_out})
    rows = []
    for keep in variants:
        _, todo, _, _, _ = plan(net, replace(LatencySettings(), grid_points=(2, keep["hidden"], keep["c_out"], 2)))
        row = {"grid_points": [2, keep["hidden"], keep["c_out"], 2], "table_points": len(todo)}
        for name, interpolation in (("plain", PLAIN), ("padded", PADDED_FP32)):
            errors = [(predict(sub_grid(g, keep), c, ms, interpolation) - ms[c.key]) / ms[c.key] for g, c in held]
            a = sorted(abs(e) for e in errors)
            row[name] = {
                "mean": 100 * statistics.mean(a),
                "p90": 100 * a[int(0.9 * (len(a) - 1))],
                "bias": 100 * statistics.mean(errors),
            }
        rows.append(row)
    print(f"\n{len(held)} configurations off {len(grids)} grids of {d['space']}, {table.stat} of {args.rounds} rounds")
    print("plain: widths as they are; padded: hidden, output widths toward a multiple of 32 (fp32 tables since 12-06)")
    head = ["--grid-points", "plain mean", "p90", "bias", "padded mean", "p90", "bias", "table points"]
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (14, 11, 7, 7, 12, 7, 7, 13))))
    for r in rows:
        gp = " ".join(map(str, r["grid_points"]))
        cells = " ".join(
            f"{r[k]['mean']:>{w}.2f}% {r[k]['p90']:>6.2f}% {r[k]['bias']:>+6.2f}%"
            for k, w in (("plain", 10), ("padded", 11))
        )
        print(f"{gp:>14} {cells} {r['table_points']:>13}")
    if args.json:
        points = [{"key": c.key, "grid": g.base.key, "block": g.block, "ms": ms[c.key]} for g, c in held]
        with open(args.json, "w") as f:
            json.dump({"variants": rows, "held_out": points, "grid_ms": ms, "call_ms": o}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
