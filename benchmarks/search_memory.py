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

Table 3 ("fbnetv2_f_space"): one search step of the paper-scale FBNetV2-F space at 224 px
(9 block types, 4 resolutions, 10^55.7 architectures) with the full mixture, with
sampled (hard, straight-through) resolutions and block types, and with activation
checkpointing per block; peak memory per image at ``--f-batch`` and whether a batch-8
step fits in 12 GB.

    python benchmarks/search_memory.py [--json] [--device cpu|cuda] [--steps 5] [--tables f]

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
        rows.append(
            [
                [
                    "masked-channel",
                    c,
                    1 if i == 0 else 2,
                    2,
                    {"op": "ir_k3_hs", "channels": channels(c) if options > 1 else c, "expansion": 4},
                ]
            ]
        )
    # a two-option head width in every row: the 1-option rows have nothing else to search, and a supernet
    # needs a choice (pooled 1x1 convs: negligible beside the rows above)
    rows.append([["masked-channel", 256, 1, 1, {"op": "ir_pool_hs", "channels": [248, 256], "expansion": 4}]])
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
        w = net.sample_mixing()
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
    return {
        "mode": mode,
        "options": options if resolutions == 1 else resolutions,
        "peak_mb": round(peak, 1),
        "step_ms": round(statistics.median(times), 2),
        "saved_mb": round(sum(saved.values()) / 2**20, 1),
        "params_m": round(sum(p.numel() for p in net.weight_parameters()) / 1e6, 3),
    }


F_ROWS = (  # (sampled choice kinds, activation checkpointing per block, batch; None: --f-batch)
    ((), False, 2),  # the full mixture keeps ~4.4 GB per image: batch 8 would not fit in 24 GB
    (("resolution",), False, 2),
    (("op", "resolution"), False, None),
    ((), True, None),
    (("resolution",), True, None),
    (("op", "resolution"), True, None),
)


def run_f(sampled: tuple, checkpoint: bool, device: str, steps: int, batch: int) -> dict:
    """One FBNetV2-F search step (CE + target cost loss) at 224 px, measured in this process."""
    import resource

    import torch

    from mobile_cv.search import CostLoss, build_supernet

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    base_mb = _current_rss_mb()
    net = build_supernet("fbnetv2_f_space", num_classes=1000).to(device).train()
    net.recompute_blocks = checkpoint
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    loss_fn = CostLoss("target", target=240.0)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps):
        torch.manual_seed(i)  # every row samples the same Gumbel draws
        t0 = time.perf_counter()
        w = net.sample_mixing(hard=sampled)
        loss = loss_fn(torch.nn.functional.cross_entropy(net(x, w), y), net.expected_cost("flops", w))
        loss.backward()
        net.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_mb
    return {
        "sampled": list(sampled),
        "checkpoint": checkpoint,
        "batch": batch,
        "peak_mb": round(peak, 1),
        "peak_mb_per_image": round(peak / batch, 1),
        "step_s": round(statistics.median(times), 2),
    }


def f_table(args) -> list:
    rows = []
    plan = [(("resolution",), False, b) for b in args.f_batches] if args.f_batches else F_ROWS
    for sampled, ckpt, batch in plan:
        batch = batch or args.f_batch
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--_f",
            ",".join(sampled) or "-",
            str(int(ckpt)),
            "--device",
            args.device,
            "--steps",
            str(args.f_steps),
            "--f-batch",
            str(batch),
        ]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:  # e.g. killed by the kernel for memory
            rows.append(
                {
                    "sampled": list(sampled),
                    "checkpoint": ckpt,
                    "batch": batch,
                    "error": f"exit {p.returncode}: {(p.stderr.strip().splitlines() or ['killed'])[-1][:120]}",
                }
            )
        else:
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(f"  measured F space {rows[-1]}", file=sys.stderr)
    return rows


def print_f_table(rows, args) -> None:
    print(
        f"\nfbnetv2_f_space at 224 px, median of {args.f_steps} steps (CE + target cost loss); peak memory "
        f"of the step over the process before the supernet was built"
    )
    print(
        f"{'sampled choices':<20} {'ckpt':>5} {'batch':>5} {'peak MB':>9} {'MB/image':>9} {'batch 8 GB':>11} "
        f"{'step s':>7} {'s/image':>8}"
    )
    for r in rows:
        name = "+".join(r["sampled"]) or "none (mixture)"
        if "error" in r:
            print(f"{name:<20} {str(r['checkpoint']):>5} {r['error']}")
            continue
        est = r["peak_mb"] / 1024 if r["batch"] == 8 else 8 * r["peak_mb_per_image"] / 1024
        fits = "" if r["batch"] == 8 else "~"
        print(
            f"{name:<20} {str(r['checkpoint']):>5} {r['batch']:>5} {r['peak_mb']:>9.0f} "
            f"{r['peak_mb_per_image']:>9.0f} "
            f"{fits:>1}{est:>6.1f} {'ok' if est <= 12 else '>12':>3} {r['step_s']:>7.2f} "
            f"{r['step_s'] / r['batch']:>8.2f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON list of rows instead of tables")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-options", type=int, default=32, help="stop the channel table here (e.g. 8 for a quick run)")
    p.add_argument(
        "--tables",
        nargs="+",
        default=["channels", "resolution", "f"],
        choices=["channels", "resolution", "f"],
        help="which tables to measure",
    )
    p.add_argument("--f-batch", type=int, default=8, help="batch of the FBNetV2-F rows")
    p.add_argument("--f-steps", type=int, default=2)
    p.add_argument(
        "--f-batches",
        nargs="+",
        type=int,
        help="instead of the six F rows: the default setting (sampled resolution, no checkpointing) at each batch",
    )
    p.add_argument("--_one", nargs=3, metavar=("MODE", "OPTIONS", "RESOLUTIONS"), help=argparse.SUPPRESS)
    p.add_argument("--_f", nargs=2, metavar=("SAMPLED", "CHECKPOINT"), help=argparse.SUPPRESS)
    args = p.parse_args()

    if args._f:  # child process: one FBNetV2-F row
        sampled = tuple(k for k in args._f[0].split(",") if k and k != "-")
        print(json.dumps(run_f(sampled, args._f[1] == "1", args.device, args.steps, args.f_batch)))
        return

    if args._one:  # child process: measure one row, print it as JSON
        mode, options, res = args._one[0], int(args._one[1]), int(args._one[2])
        print(json.dumps(run_one(mode, options, res, args.device, args.steps, args.batch)))
        return

    plan = (
        [
            ("channels", mode, n, 1)
            for mode in ("dmasking", "conventional")
            for n in CHANNEL_OPTIONS
            if n <= args.max_options
        ]
        if "channels" in args.tables
        else []
    )
    if "resolution" in args.tables:
        plan += [("resolution", "dmasking", 1, r) for r in range(1, len(RESOLUTIONS) + 1)]
    rows = []
    for table, mode, n, r in plan:
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--_one",
            mode,
            str(n),
            str(r),
            "--device",
            args.device,
            "--steps",
            str(args.steps),
            "--batch",
            str(args.batch),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        row = {"table": table, **json.loads(out)}
        rows.append(row)
        if not args.json:
            print(
                f"  measured {table} {mode} {row['options']}: {row['peak_mb']} MB, {row['step_ms']} ms", file=sys.stderr
            )

    f_rows = f_table(args) if "f" in args.tables else []
    if args.json:
        print(
            json.dumps(
                [{k: r[k] for k in ("table", "mode", "options", "peak_mb", "step_ms")} for r in rows]
                + [{"table": "fbnetv2_f_space", **r} for r in f_rows]
            )
        )
        return
    import torch

    print(
        f"device {args.device}, torch {torch.__version__}, batch {args.batch}, input {RESOLUTIONS[0]}px, "
        f"median of {args.steps} steps; ratios to the 1-option row of the same mode"
    )
    for table, title in (("channels", "channel options per choice"), ("resolution", "resolution options")):
        if table not in args.tables:
            continue
        print(f"\n{title}:")
        print(
            f"{'mode':<13} {'options':>7} {'weights M':>9} {'peak MB':>9} {'x1-opt':>7} {'saved MB':>9} "
            f"{'x1-opt':>7} {'step ms':>9} {'x1-opt':>7}"
        )
        for r in rows:
            if r["table"] != table:
                continue
            base = next(b for b in rows if b["table"] == table and b["mode"] == r["mode"] and b["options"] == 1)
            print(
                f"{r['mode']:<13} {r['options']:>7} {r['params_m']:>9.3f} {r['peak_mb']:>9.1f} "
                f"{r['peak_mb'] / base['peak_mb']:>6.2f}x {r['saved_mb']:>9.1f} "
                f"{r['saved_mb'] / base['saved_mb']:>6.2f}x "
                f"{r['step_ms']:>9.2f} {r['step_ms'] / base['step_ms']:>6.2f}x"
            )
    if f_rows:
        print_f_table(f_rows, args)


if __name__ == "__main__":
    main()
