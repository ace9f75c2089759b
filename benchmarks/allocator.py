#!/usr/bin/env python
"""glibc malloc settings across training and search steps: time, page faults, peak memory.

Each (model, setting) pair runs in a fresh process, in interleaved rounds (this machine's speed
drifts): the setting is applied with ``mallopt`` at start-up, as the tools apply
``MALLOC`` (:mod:`mobile_cv.engine.allocator`), then a few warm-up steps and timed steps.
"faults/step" are minor page faults (fresh pages the kernel zero-fills: the cost of memory
returned to the system and taken back); "peak GB" is the resident high-water mark's growth over
the process before the model was built.

Settings: ``default`` (glibc's own: the mmap threshold rises with each large block freed, so
freed activations stay in the heap, and the top of the heap is trimmed), ``return`` (a fixed
1 MiB mmap threshold: every large tensor is mapped and unmapped, resident memory follows the
live tensors), ``keep`` (nothing is trimmed or unmapped: the fewest faults, the most memory).

    python benchmarks/allocator.py [--cases search-mnist train-f1 search-f] [--rounds 3] [--steps 4]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.memory_estimate import search_optimizers, search_step, vm_hwm  # noqa: E402

# name: (kind, model or space, batch, input size, input channels, classes)
CASES = {
    "search-mnist": ("search", "mnist_small_space", 256, 32, 1, 10),
    "train-mnist": ("train", os.path.join(ROOT, "model_zoo", "weights", "mnist_dmasking_1p5m.json"), 256, 32, 1, 10),
    "train-f1": ("train", "FBNetV2_F1", 8, 224, 3, 1000),
    "train-f4": ("train", "FBNetV2_F4", 8, 224, 3, 1000),
    "search-f": ("search", "fbnetv2_f_space", 2, 224, 3, 1000),
}


def run_case(case: str, setting: str, warmup: int, steps: int) -> dict:
    import torch

    from mobile_cv.engine.allocator import apply_malloc_setting

    apply_malloc_setting(setting)
    kind, name, batch, size, chans, classes = CASES[case]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = torch.randn(batch, chans, size, size), torch.randint(0, classes, (batch,))
    base = vm_hwm()
    if kind == "train":
        from mobile_cv import build_model

        model = build_model(name, num_classes=classes, in_chans=chans).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    else:
        from mobile_cv.search.supernet import build_supernet

        net = build_supernet(name, classes, "dmasking", chans).train()
        opts = search_optimizers(net)

        def step():  # the default sampled resolution: a fresh sample for each pass
            search_step(net, opts, x, y, lambda: net.sample_mixing(hard=["resolution"]))

    for _ in range(warmup):
        step()
    times, faults = [], []
    for _ in range(steps):
        f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {"time": statistics.median(times), "faults": statistics.median(faults), "peak": vm_hwm() - base}


def main(argv=None) -> int:
    from mobile_cv.engine.allocator import MALLOC_SETTINGS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=["search-mnist", "train-mnist", "train-f1", "train-f4"])
    p.add_argument("--settings", nargs="+", default=list(MALLOC_SETTINGS), choices=list(MALLOC_SETTINGS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # a child: CASE SETTING
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_case(args.one[0], args.one[1], args.warmup, args.steps)))
        return 0
    bad = [c for c in args.cases if c not in CASES]
    if bad:
        p.error(f"unknown case(s) {bad}; known: {sorted(CASES)}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = {(c, s): [] for c in args.cases for s in args.settings}
    for r in range(args.rounds):  # interleaved: every pair once per round
        for c in args.cases:
            for s in args.settings:
                cmd = [sys.executable, os.path.abspath(__file__), "--one", c, s]
                cmd += ["--warmup", str(args.warmup), "--steps", str(args.steps)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode:  # told, and the other pairs go on
                    print(f"{c} {s}: FAILED {proc.stderr.strip().splitlines()[-1:]}", flush=True)
                    continue
                results[c, s].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"1 thread, median of {args.rounds} rounds x {args.steps} steps; speed-up vs default (x >1: faster)")
    print(
        f"{'case':<14} {'setting':<8} {'step s':>8} {'spread':>13} {'x default':>10} {'faults/step':>12} {'peak GB':>8}"
    )
    for c in args.cases:
        defaults = results.get((c, "default"))
        base = statistics.median(v["time"] for v in defaults) if defaults else None
        for s in args.settings:
            rows = results[c, s]
            if not rows:
                continue
            t = statistics.median(v["time"] for v in rows)
            lo, hi = min(v["time"] for v in rows), max(v["time"] for v in rows)
            ratio = f"{base / t:.3f}x" if base else "-"
            faults = statistics.median(v["faults"] for v in rows)
            peak = max(v["peak"] for v in rows) / 1e9
            print(f"{c:<14} {s:<8} {t:>8.3f} {lo:>6.3f}-{hi:<6.3f} {ratio:>10} {faults:>12.0f} {peak:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
