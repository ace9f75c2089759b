#!/usr/bin/env python
"""Blocks timed warm (call after call, weights left in the caches, as the tables time them) and
cold (the L2 evicted before every call by reading a buffer), side by side in one run.

    python benchmarks/warm_vs_cold.py output/s8/f_h5.json --n 60          # ~2 min with the programs cached

1. A sweep of one block over its hidden width (``--sweep KEY``, every ``--step`` channels): per
   width its weights (MB) and its latency warm and cold, net of the call cost. Shows where the
   latency bends (weights passing the L2) and what the kernels' widths do (multiples of 32).
2. ``--n`` held-out configurations of a grid table and the corners of their grid cells, timed warm
   and cold: the interpolation's error with each (multilinear in the cell, as the table does).
Run it alone (1 thread): it times.
"""

import argparse
import itertools
import os
import random
import statistics
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from mobile_cv.latency import LatencyTable  # noqa: E402
from mobile_cv.latency.configs import block_configs, config_from_key  # noqa: E402
from mobile_cv.latency.measure import TRIVIAL, compile_programs, example_of, table_net  # noqa: E402
from mobile_cv.latency.runtimes import load_runner, set_threads  # noqa: E402

CALLS = 5  # calls per sample, each timed; the sample is their median


def time_warm_and_cold(specs, compiled, rounds: int, evict_mb: float):
    """Per program, per-round samples warm and cold (ms), interleaved rounds, the order rotated."""
    set_threads("executorch", 1)
    runners = {k: load_runner("executorch", compiled[k], example_of(s), 1) for k, s in specs.items()}
    buffer = np.ones(int(evict_mb * 2**20 / 8))
    keys = list(runners)
    warm, cold = {k: [] for k in keys}, {k: [] for k in keys}
    for r in range(rounds + 2):  # two warm-up rounds
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            run, w, c = runners[k], [], []
            for _ in range(CALLS):
                t0 = time.perf_counter()
                run()
                w.append(time.perf_counter() - t0)
            for _ in range(CALLS):
                buffer.sum()  # evicts the L2 (and most of what the program had there)
                t0 = time.perf_counter()
                run()
                c.append(time.perf_counter() - t0)
            if r >= 2:
                warm[k].append(statistics.median(w) * 1e3)
                cold[k].append(statistics.median(c) * 1e3)
    return warm, cold


def q1(samples):
    return float(np.quantile(samples, 0.25))


def weights_mb(c) -> float:
    se = c.hidden * c.hidden // 2 if "se" in c.op else 0  # two squeeze-excite convs of hidden x hidden/4
    return (c.c_in * c.hidden + c.hidden * c.c_out + se) * 4 / 2**20


def cells(table, net, n: int, seed: int):
    """``n`` held-out configurations and, per configuration, the axes' bracketing values and the corners."""
    owner = {}
    for block, c in block_configs(net):
        owner.setdefault(c.key, block)
    held = sorted(table.data["held_out"])
    random.Random(seed).shuffle(held)
    out = {}
    for key in held[:n]:
        c = config_from_key(key)
        grid = table._by_group[(owner[key], c.op, c.residual, c.expand)]
        dims, brackets = list(grid.axes), []
        for d in dims:
            axis, v = grid.axes[d], getattr(c, d)
            i = min(max(int(np.searchsorted(axis, v, side="right")) - 1, 0), max(len(axis) - 2, 0))
            brackets.append((axis[i], axis[min(i + 1, len(axis) - 1)]))
        corners = [grid.point(dict(zip(dims, combo))) for combo in itertools.product(*brackets)]
        out[key] = (c, dims, brackets, corners)
    return out


def interpolation_error(held, samples):
    o, errors = q1(samples[TRIVIAL]), []
    for key, (c, dims, brackets, corners) in held.items():
        predicted = 0.0
        for corner, combo in zip(corners, itertools.product((0, 1), repeat=len(dims))):
            w = 1.0
            for (lo, hi), bit, d in zip(brackets, combo, dims):
                f = (lambda v: v * v) if d == "size" else (lambda v: v)  # sizes in pixels squared, as the table
                x = 0.0 if lo == hi else (f(getattr(c, d)) - f(lo)) / (f(hi) - f(lo))
                w *= x if bit else 1 - x
            predicted += w * (q1(samples[corner.key]) - o)
        measured = q1(samples[key]) - o
        errors.append((predicted - measured) / measured)
    a = np.sort(np.abs(errors))
    return 100 * a.mean(), 100 * a[int(0.9 * (len(a) - 1))], 100 * float(np.mean(errors)), o


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", help="an fp32 ExecuTorch grid table (its held-out configurations and grids)")
    p.add_argument("--n", type=int, default=60, help="held-out configurations (0: the sweep only)")
    p.add_argument("--sweep", default="ir_k5_sehsig_hs|72>200>136|s2|8px|e|d8", help="the block swept over hidden")
    p.add_argument("--step", type=int, default=56, help="hidden width step of the sweep")
    p.add_argument("--up-to", type=int, default=1024, help="largest hidden width of the sweep")
    p.add_argument("--evict-mb", type=float, default=8.0, help="buffer read before every cold call (> the L2)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default="output/program_cache", help="program cache (as the table builds use)")
    args = p.parse_args()
    table = LatencyTable.load(args.table)
    if table.data["runtime"] != "executorch" or table.data["int8"] or table.mode != "grid":
        sys.exit(f"{args.table}: an fp32 ExecuTorch grid table is needed")
    held = cells(table, table_net(table.data, args.table), args.n, args.seed)
    base = config_from_key(args.sweep)
    sweep = [replace(base, hidden=h) for h in range(base.hidden, args.up_to + 1, args.step)]
    specs = {TRIVIAL: None, **{c.key: c for c in sweep}}
    for c, _, _, corners in held.values():
        specs[c.key] = c
        specs.update((k.key, k) for k in corners)
    print(f"{len(sweep)} sweep widths, {len(held)} held-out configurations, {len(specs)} programs", flush=True)
    compiled = compile_programs(specs, "executorch", False, 1, args.cache)
    warm, cold = time_warm_and_cold(specs, compiled, args.rounds, args.evict_mb)
    ow, oc = q1(warm[TRIVIAL]), q1(cold[TRIVIAL])
    print(f"\n{'block':<44} {'weights MB':>10} {'warm ms':>9} {'cold ms':>9}   (net of the call cost)")
    for c in sweep:
        print(f"{c.key:<44} {weights_mb(c):>10.2f} {q1(warm[c.key]) - ow:>9.4f} {q1(cold[c.key]) - oc:>9.4f}")
    if held:
        print(f"\ninterpolation error on {len(held)} held-out configurations (their cells timed in this run):")
        for name, s in (("warm", warm), ("cold", cold)):
            mean, p90, bias, o = interpolation_error(held, s)
            print(f"  {name}: mean {mean:.2f}%  p90 {p90:.2f}%  bias {bias:+.2f}%  (call cost {o:.4f} ms)")
        ratio = [q1(cold[k]) / q1(warm[k]) for k in held]
        print(f"  cold / warm of the held-out blocks: median {np.median(ratio):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
