#!/usr/bin/env python
"""Batch-1 CPU inference latency of each deployment path: FBNetV2_F1..F4 (and our fbnet_c) vs
timm models of similar FLOPs, measured interleaved in one run (round-robin over every model
and path, so machine noise hits all alike). Prints per-path medians and ratios to the anchor.

    python benchmarks/latency.py [--rounds 30] [--threads 1] [--models FBNetV2_F1 ...] [--paths eager et_fp32 ...]

Paths (columns): ``eager`` (fp32 PyTorch), ``folded`` (eager, BN folded into the convs),
``torchscript`` and ``onnxruntime`` (of the folded model, as tools/export.py writes them),
``et_fp32`` and ``et_int8`` (ExecuTorch ``.pte`` with XNNPACK, run by ExecuTorch's Python
runtime). The timm anchors get eager and ExecuTorch only. The int8 programs are calibrated on
random noise: this measures their speed, not their accuracy (tools/export.py --int8 with
--calib-data checks accuracy). The ExecuTorch columns need ``pip install executorch torchao``.
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
from mobile_cv import export  # noqa: E402

# label -> (builder, resolution, ours); timm models at their default 224
MODELS = {
    "FBNetV2_F1": (lambda: mobile_cv.build_model("FBNetV2_F1"), 128, True),
    "FBNetV2_F2": (lambda: mobile_cv.build_model("FBNetV2_F2"), 160, True),
    "FBNetV2_F3": (lambda: mobile_cv.build_model("FBNetV2_F3"), 192, True),
    "FBNetV2_F4": (lambda: mobile_cv.build_model("FBNetV2_F4"), 224, True),
    "fbnet_c": (lambda: mobile_cv.build_model("fbnet_c"), 224, True),
    "timm mobilenetv3_small_100": (lambda: timm.create_model("mobilenetv3_small_100"), 224, False),
    "timm mobilenetv3_large_100": (lambda: timm.create_model("mobilenetv3_large_100"), 224, False),
    "timm fbnetc_100": (lambda: timm.create_model("fbnetc_100"), 224, False),
}
# ours -> the anchor of about equal FLOPs (56.4 vs 56.5, 238.4 vs 216.6, 378.2 vs 385.1 MFLOPs; F2 and F3
# have none). fbnet_c and timm's fbnetc_100 share the FBNet-C layout, but timm's keeps the 1x1 expansion
# conv of the three expansion-1 blocks that ours omits (docs/model_zoo.md).
ANCHORS = {
    "FBNetV2_F1": "timm mobilenetv3_small_100",
    "FBNetV2_F4": "timm mobilenetv3_large_100",
    "fbnet_c": "timm fbnetc_100",
}
PATHS = ("eager", "folded", "torchscript", "onnxruntime", "et_fp32", "et_int8")
ANCHOR_PATHS = ("eager", "et_fp32", "et_int8")


# a deployment path -> (its registered runtime, mobile_cv.export.runtimes; int8)
PATH_RUNTIMES = {
    "torchscript": ("torchscript", False),
    "onnxruntime": ("onnxruntime", False),
    "et_fp32": ("executorch", False),
    "et_int8": ("executorch", True),
}


def _available(path: str) -> bool:
    name, int8 = PATH_RUNTIMES.get(path, ("eager", False))
    try:
        export.get_runtime(name).require(int8)
    except export.RuntimeUnavailableError:
        return False
    return True


def _deployed(path, folded, x, threads):
    """The program tools/export.py writes for ``path`` (ExecuTorch: owning its input buffer, int8
    calibrated on noise), loaded in its runtime: a callable of the input."""
    name, int8 = PATH_RUNTIMES[path]
    rt = export.get_runtime(name)
    run = rt.load(rt.compile(folded, x, int8=int8, in_place=False), x, threads)
    return lambda _x: run()


def build_runners(label, paths, threads):
    """``(model info, {path: callable(x)})`` for one model."""
    build, res, ours = MODELS[label]
    model = build().eval()
    flops, params = mobile_cv.count_flops_params(model, res, in_chans=3)
    x = torch.randn(1, 3, res, res)
    folded = mobile_cv.fuse_for_inference(model) if ours else model
    runners = {}
    for path in paths:
        if not ours and path not in ANCHOR_PATHS:
            continue
        if path == "eager":
            runners[path] = model
        elif path == "folded":
            runners[path] = folded
        else:
            runners[path] = _deployed(path, folded, x, threads)
        print(f"  built {label} {path}", flush=True)
    return {"res": res, "flops": flops, "params": params, "x": x}, runners


def measure(models, rounds, warmup):
    """Median ms of every (model, path), round-robin over all of them each round."""
    times = {(label, p): [] for label, (_, runners) in models.items() for p in runners}
    with torch.inference_mode():
        for r in range(warmup + rounds):
            for label, (info, runners) in models.items():
                for p, run in runners.items():
                    t0 = time.perf_counter()
                    run(info["x"])
                    dt = time.perf_counter() - t0
                    if r >= warmup:
                        times[(label, p)].append(dt * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def print_tables(models, med, paths):
    def cell(label, p):
        return f"{med[(label, p)]:>11.2f}" if (label, p) in med else f"{'-':>11}"

    print(f"{'model':<28} {'res':>4} {'MFLOPs':>8} {'Mparams':>8} " + " ".join(f"{p:>11}" for p in paths))
    for label, (info, _) in models.items():
        row = f"{label:<28} {info['res']:>4} {info['flops']:>8.1f} {info['params']:>8.2f} "
        print(row + " ".join(cell(label, p) for p in paths))
    print("\nratio to the anchor of equal FLOPs, same path (< 1: ours is faster):")
    shared = [p for p in paths if p in ANCHOR_PATHS]
    print(f"{'ours / anchor':<58} " + " ".join(f"{p:>9}" for p in shared))
    pairs = [(label, anchor) for label, anchor in ANCHORS.items() if label in models and anchor in models]
    if not pairs:
        print("  (none: --models holds no model together with its anchor)")
    for label, anchor in pairs:
        ratios = [f"{med[(label, p)] / med[(anchor, p)]:>8.2f}x" if (anchor, p) in med else f"{'-':>9}" for p in shared]
        print(f"{label + ' / ' + anchor:<58} " + " ".join(ratios))
    # what a phone user gets against the anchor as most people run it (eager fp32)
    deploy = [(label, anchor, p) for label, anchor in pairs for p in ("et_fp32", "et_int8") if (label, p) in med]
    if deploy and any((a, "eager") in med for _, a, _ in deploy):
        print("\nours deployed / anchor in eager fp32 (same run):")
    for label, anchor, p in deploy:
        if (anchor, "eager") in med:
            print(f"  {label} {p} / {anchor} eager: {med[(label, p)] / med[(anchor, 'eager')]:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    args = p.parse_args()
    paths = list(args.paths)
    missing = [q for q in paths if not _available(q)]
    if missing:
        print(f"not installed: no {', '.join(missing)} columns ({export.EXECUTORCH_PACKAGES}; the onnx extra)")
        paths = [q for q in paths if q not in missing]
    for name in {PATH_RUNTIMES.get(q, ("eager", False))[0] for q in paths}:
        export.get_runtime(name).set_threads(args.threads)

    models = {label: build_runners(label, paths, args.threads) for label in args.models}
    med = measure(models, args.rounds, args.warmup)
    print(
        f"\ntorch {torch.__version__}, {args.threads} thread(s), batch 1, {args.rounds} interleaved rounds; "
        f"median ms per image (et_int8: calibrated on noise, speed only)"
    )
    print_tables(models, med, paths)


if __name__ == "__main__":
    main()
