#!/usr/bin/env python
"""Memory and time of one DMaskingNAS search step as the number of options grows.

Table 1 ("channels"): a fixed space, batch and resolution; every channel choice has
1, 2, 4, 8, 16 or 32 options; dmasking (one masked max-width block per choice) vs
conventional DNAS (one block per option). Table 2 ("resolution"): 1-4 input
resolution options. Each row runs in a fresh process (so peak memory is that
row's alone) and times forward + backward of the search loss (CE * cost term) over
several steps after warm-up. "saved MB" is what autograd keeps for the backward pass
(the activations, measured exactly with saved-tensor hooks, deterministic). Peak
memory is what the search adds to the process
(weights, activations, gradients): on CPU the process's peak resident set size
minus its size just before the supernet is built (torch itself is ~1 GB here), on
CUDA ``torch.cuda.max_memory_allocated``.

    python benchmarks/search_memory.py [--json] [--device cpu|cuda] [--steps 5]

Goal (paper): dmasking within 1.25x of its 1-option memory and 1.3x of its time at
32 options, while conventional grows several-fold.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CHANNEL_OPTIONS = (1, 2, 4, 8, 16, 32)
RESOLUTIONS = (64, 48, 32, 16)  # 1-4 options take the first n
MAX_WIDTHS = (32, 64, 96, 128)  # the max width of each searched row


def bench_space(options: int, resolutions: int) -> dict:
    """Stem, four masked inverted-residual rows (2 blocks each), pooled head."""

    def channels(c_max: int):
        step = c_max // 32  # 32 options spaced evenly up to c_max; fewer options take the widest
        return sorted(c_max - i * step for i in range(options))

    rows = [[["conv_k3_hs", 16, 2, 1]]]
    for i, c in enumerate(MAX_WIDTHS):
        rows.append([["masked-channel", c, 1 if i == 0 else 2, 2,
                      {"op": "ir_k3_hs", "channels": channels(c) if options > 1 else c, "expansion": 4}]])
    rows.append([["ir_pool_hs", 256, 1, 1, {"expansion": 4}]])
    space = {"input_size": RESOLUTIONS[0], "basic_args": {"width_divisor": 1}, "blocks": rows}
    if resolutions > 1:
        space["search"] = {"resolution": sorted(RESOLUTIONS[:resolutions])}
    return space


def _current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_one(mode: str, options: int, resolutions: int, device: str, steps: int, batch: int) -> dict:
    """One row, measured in this process."""
    import resource

    import torch

    from mobile_cv.search import CostLoss, build_supernet

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    base_mb = _current_rss_mb()
    net = build_supernet(bench_space(options, resolutions), num_classes=10, mode=mode).to(device).train()
    x = torch.randn(batch, 3, RESOLUTIONS[0], RESOLUTIONS[0], device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = CostLoss("fbnet")

    saved = {}

    def pack(t):  # every tensor autograd keeps for the backward pass, counted once per storage
        if t.device.type == device:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    def step():
        w = net.sample_weights()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            ce = torch.nn.functional.cross_entropy(net(x, w), y)
            loss = loss_fn(ce, net.expected_cost("flops", w))
        loss.backward()
        net.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_mb  # ru_maxrss: KiB on Linux
    saved.clear()
    step()
    return {"mode": mode, "options": options if resolutions == 1 else resolutions,
            "peak_mb": round(peak, 1), "step_ms": round(statistics.median(times), 2),
            "saved_mb": round(sum(saved.values()) / 2**20, 1),
            "params_m": round(sum(p.numel() for p in net.weight_parameters()) / 1e6, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON list of rows instead of tables")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-options", type=int, default=32, help="stop the channel table here (e.g. 8 for a quick run)")
    p.add_argument("--_one", nargs=3, metavar=("MODE", "OPTIONS", "RESOLUTIONS"), help=argparse.SUPPRESS)
    args = p.parse_args()

    if args._one:  # child process: measure one row, print it as JSON
        mode, options, res = args._one[0], int(args._one[1]), int(args._one[2])
        print(json.dumps(run_one(mode, options, res, args.device, args.steps, args.batch)))
        return

    plan = [("channels", mode, n, 1) for mode in ("dmasking", "conventional")
            for n in CHANNEL_OPTIONS if n <= args.max_options]
    plan += [("resolution", "dmasking", 1, r) for r in range(1, len(RESOLUTIONS) + 1)]
    rows = []
    for table, mode, n, r in plan:
        cmd = [sys.executable, os.path.abspath(__file__), "--_one", mode, str(n), str(r),
               "--device", args.device, "--steps", str(args.steps), "--batch", str(args.batch)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        row = {"table": table, **json.loads(out)}
        rows.append(row)
        if not args.json:
            print(f"  measured {table} {mode} {row['options']}: {row['peak_mb']} MB, {row['step_ms']} ms", file=sys.stderr)

    if args.json:
        print(json.dumps([{k: r[k] for k in ("table", "mode", "options", "peak_mb", "step_ms")} for r in rows]))
        return
    import torch

    print(f"device {args.device}, torch {torch.__version__}, batch {args.batch}, input {RESOLUTIONS[0]}px, "
          f"median of {args.steps} steps; ratios to the 1-option row of the same mode")
    for table, title in (("channels", "channel options per choice"), ("resolution", "resolution options")):
        print(f"\n{title}:")
        print(f"{'mode':<13} {'options':>7} {'weights M':>9} {'peak MB':>9} {'x1-opt':>7} {'saved MB':>9} "
              f"{'x1-opt':>7} {'step ms':>9} {'x1-opt':>7}")
        for r in rows:
            if r["table"] != table:
                continue
            base = next(b for b in rows if b["table"] == table and b["mode"] == r["mode"] and b["options"] == 1)
            print(f"{r['mode']:<13} {r['options']:>7} {r['params_m']:>9.3f} {r['peak_mb']:>9.1f} "
                  f"{r['peak_mb'] / base['peak_mb']:>6.2f}x {r['saved_mb']:>9.1f} {r['saved_mb'] / base['saved_mb']:>6.2f}x "
                  f"{r['step_ms']:>9.2f} {r['step_ms'] / base['step_ms']:>6.2f}x")


if __name__ == "__main__":
    main()
