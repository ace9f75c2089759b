#!/usr/bin/env python
"""Batch-1 CPU inference latency: FBNetV2_F1..F4 (and our fbnet_c) vs timm models of
similar FLOPs, measured interleaved in one run (round-robin, so machine noise hits
every model alike). Prints per-model medians and ratios.

    python benchmarks/latency.py [--rounds 30] [--threads 1]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import timm  # noqa: E402
import torch  # noqa: E402

import mobile_cv  # noqa: E402

# (label, builder, resolution); timm models at their default 224
MODELS = [
    ("ours FBNetV2_F1", lambda: mobile_cv.build_model("FBNetV2_F1"), 128),
    ("timm mobilenetv3_small_100", lambda: timm.create_model("mobilenetv3_small_100"), 224),
    ("ours FBNetV2_F2", lambda: mobile_cv.build_model("FBNetV2_F2"), 160),
    ("ours FBNetV2_F3", lambda: mobile_cv.build_model("FBNetV2_F3"), 192),
    ("ours FBNetV2_F4", lambda: mobile_cv.build_model("FBNetV2_F4"), 224),
    ("timm mobilenetv3_large_100", lambda: timm.create_model("mobilenetv3_large_100"), 224),
    ("ours fbnet_c", lambda: mobile_cv.build_model("fbnet_c"), 224),
    ("timm fbnetc_100", lambda: timm.create_model("fbnetc_100"), 224),
]
# pairs whose ratio the table reports (similar FLOPs, or the same FBNet-C layout: ours omits the 1x1
# expansion conv of the three expansion-1 blocks that timm's fbnetc_100 keeps, docs/model_zoo.md)
PAIRS = [
    ("ours FBNetV2_F1", "timm mobilenetv3_small_100"),
    ("ours FBNetV2_F4", "timm mobilenetv3_large_100"),
    ("ours fbnet_c", "timm fbnetc_100"),
]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    models = []
    for label, build, res in MODELS:
        m = build().eval()
        flops, params = mobile_cv.count_flops_params(m, res, in_chans=3)
        models.append((label, m, torch.randn(1, 3, res, res), flops, params))
    times = {label: [] for label, *_ in models}
    with torch.inference_mode():
        for r in range(args.warmup + args.rounds):
            for label, m, x, *_ in models:
                t0 = time.perf_counter()
                m(x)
                dt = time.perf_counter() - t0
                if r >= args.warmup:
                    times[label].append(dt * 1e3)

    med = {k: statistics.median(v) for k, v in times.items()}
    base = "timm mobilenetv3_small_100"
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch 1, {args.rounds} interleaved rounds")
    print(f"{'model':<28} {'res':>4} {'MFLOPs':>8} {'Mparams':>8} {'median ms':>10} {'vs mnv3_small':>14}")
    for label, _, x, flops, params in models:
        print(
            f"{label:<28} {x.shape[-1]:>4} {flops:>8.1f} {params:>8.2f} {med[label]:>10.2f} "
            f"{med[label] / med[base]:>13.2f}x"
        )
    print("\npairs (ratio = first / second):")
    for a, b in PAIRS:
        print(f"  {a} / {b}: {med[a] / med[b]:.2f}x")


if __name__ == "__main__":
    main()
