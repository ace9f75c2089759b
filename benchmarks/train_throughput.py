#!/usr/bin/env python
"""Training throughput: our loop (tools/train.py's engine.train) vs a bare loop over the same model,
data and optimizer, with each speed option on and off, measured side by side in one run.

    python benchmarks/train_throughput.py                                   # F1, F4, the MNIST model
    python benchmarks/train_throughput.py --models FBNetV2_F1 --resolution 224 --images 512 --rounds 3
    python benchmarks/train_throughput.py --options none amp=bf16 channels_last compile

Each round runs, for every model and option set, one training epoch through ``engine.train`` and one
through the bare loop (forward, loss, backward, step, nothing else) on the same synthetic images
(a registered in-memory dataset, so both read through the same DataLoader); rounds interleave, and
the medians of the rounds after the warm-up round(s) are printed with their spread; the order of the two
paths alternates from round to round. Our epoch time is the loop's own ``train_time`` (set-up,
evaluation and saving excluded); ``ours/bare`` is the loop's overhead; ``option/none`` whether an
option pays on this machine. With ``compile`` the first epoch (compilation) is not timed: each
compiled run trains 2 epochs and the second is measured. Run it alone: it times the machine.

A search epoch against a training epoch of the largest subnet, per SEARCH.SAMPLED_CHOICES setting (and
compiled), is benchmarks/search_cost.py.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mobile_cv import engine  # noqa: E402
from mobile_cv.data import DATASETS, ClassificationDataset, build_loader  # noqa: E402
from mobile_cv.engine.precision import MixedPrecision, resolve_channels_last, to_channels_last  # noqa: E402

MODELS = {  # name -> (arch, input channels)
    "FBNetV2_F1": ("FBNetV2_F1", 3),
    "FBNetV2_F4": ("FBNetV2_F4", 3),
    "mnist_dmasking_1p5m": (os.path.join(ROOT, "model_zoo", "weights", "mnist_dmasking_1p5m.json"), 1),
}
OLD_DEFAULTS = ["SOLVER.CHANNELS_LAST", "False"]  # the defaults before issue 29 ("auto" since)
OPTIONS = {  # name -> SOLVER overrides; each option on top of the old defaults but "defaults"
    "none": OLD_DEFAULTS,
    "defaults": [],  # this version's defaults, as a config without overrides runs
    "amp=bf16": OLD_DEFAULTS + ["SOLVER.AMP", "bf16"],
    "amp=fp16": OLD_DEFAULTS + ["SOLVER.AMP", "fp16"],
    "channels_last": ["SOLVER.CHANNELS_LAST", "True"],
    "compile": OLD_DEFAULTS + ["SOLVER.COMPILE", "True"],
}
IMAGES = {"n": 256}  # set by --images; read by the dataset builder


@DATASETS.register("synthetic_benchmark")
def build_synthetic(split: str, *, input_size: int) -> ClassificationDataset:
    """Random images, 10 classes, the same every call (in memory: no decoding cost in either loop)."""
    n = IMAGES["n"] if split == "train" else 32
    chans = IMAGES.get("chans", 3)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, chans, input_size, input_size, generator=g)
    targets = (np.arange(n) % 10).tolist()
    return ClassificationDataset(
        lambda i: images[i], targets, np.arange(n), [str(c) for c in range(10)], chans, f"synthetic/{split}"
    )


def config(arch: str, chans: int, args, option: str, out: str):
    opts = ["MODEL.ARCH", arch, "MODEL.IN_CHANS", str(chans), "DATA.NAME", "synthetic_benchmark"]
    opts += ["DATA.INPUT_SIZE", str(args.resolution), "SOLVER.BATCH_SIZE", str(args.batch), "SOLVER.EVAL_PERIOD", "0"]
    opts += ["DEVICE", args.device, "OUTPUT_DIR", out, "SOLVER.EPOCHS", "2" if option == "compile" else "1"]
    return engine.setup_cfg("", opts + OPTIONS[option])


def ours(cfg) -> float:
    """Seconds of the last training epoch through engine.train."""
    device = engine.default_setup(cfg, tool="train")
    try:
        engine.train(cfg, resume=False, device=device)
    finally:
        engine.release_run_locks()
    return engine.read_metrics(os.path.join(cfg.OUTPUT_DIR, "metrics.jsonl"))[-1]["train_time"]


def bare(cfg) -> float:
    """Seconds of one epoch of forward, loss, backward, step over the same loader and optimizer."""
    s = cfg.SOLVER
    device = torch.device(cfg.DEVICE)
    channels_last = resolve_channels_last(s.CHANNELS_LAST, device, "train")
    engine.seed_all(cfg.SEED)
    model = engine.build_model_from_cfg(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = engine.build_sgd(model, lr=s.BASE_LR, momentum=s.MOMENTUM, weight_decay=s.WEIGHT_DECAY)
    criterion = engine.build_criterion(s.LABEL_SMOOTHING)
    precision = MixedPrecision(s.AMP, device)
    step_model = torch.compile(model) if s.COMPILE else model
    loader = build_loader(cfg, "train")
    model.train()

    def epoch() -> float:
        t0 = time.perf_counter()
        for images, target in loader:
            images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
            if channels_last:
                images = to_channels_last(images)
            with precision.autocast():
                logits = step_model(images)
            loss = criterion(logits.float(), target)
            opt.zero_grad(set_to_none=True)
            precision.backward_step(loss, opt)
        if device.type == "cuda":
            torch.cuda.synchronize()  # (our loop reads each step's loss: it ends synchronized too)
        return time.perf_counter() - t0

    if s.COMPILE:
        epoch()  # compilation, untimed (as our second epoch)
    return epoch()


def report(times, args) -> None:
    """The table: medians, spread, ours/bare, and each option against none."""

    def med(k):
        return statistics.median(times[k])

    def spread(k):
        v = times[k]
        return f"{min(v):.2f}-{max(v):.2f}"

    counted = args.rounds - args.warmup_rounds
    print(
        f"{args.device}, {args.images} images/epoch, batch {args.batch}, {args.threads} thread(s), {counted} counted "
        f"rounds, torch {torch.__version__}"
    )
    print(f"{'model':<22} {'option':<14} {'ours img/s':>10} {'bare img/s':>10} {'ours/bare':>9}  {'ours s':>11}")
    for model in args.models:
        for option in args.options:
            o, b = med((model, option, "ours")), med((model, option, "bare"))
            print(
                f"{model:<22} {option:<14} {args.images / o:>10.1f} {args.images / b:>10.1f} {b / o:>9.3f}  "
                f"{spread((model, option, 'ours')):>11}"
            )
        base = med((model, "none", "ours")) if "none" in args.options else None
        for option in args.options:
            if base and option != "none":
                print(f"{model:<22} {option:<14} speed-up vs none (ours): {base / med((model, option, 'ours')):.3f}x")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--options", nargs="+", default=["none", "defaults", "amp=bf16"], choices=list(OPTIONS))
    p.add_argument("--resolution", type=int, default=96, help="input size (the MNIST model: 32 whatever this says)")
    p.add_argument("--images", type=int, default=256, help="training images per epoch")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds, the warm-up ones included")
    p.add_argument("--warmup-rounds", type=int, default=1, help="leading rounds not counted (one-time costs)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = p.parse_args(argv)
    if not 0 <= args.warmup_rounds < args.rounds:
        p.error(f"--warmup-rounds must be in [0, --rounds), got {args.warmup_rounds}")
    torch.set_num_threads(args.threads)
    IMAGES["n"] = args.images
    times = {}  # (model, option, path) -> [seconds]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for model in args.models:
                arch, chans = MODELS[model]
                IMAGES["chans"] = chans
                res = 32 if chans == 1 else args.resolution
                for option in args.options:
                    a = argparse.Namespace(**{**vars(args), "resolution": res})
                    cfg = config(arch, chans, a, option, os.path.join(tmp, f"{model}-{option}-{r}"))
                    # alternate which path goes first: neither always meets the other's warm caches
                    for path in ("ours", "bare") if r % 2 == 0 else ("bare", "ours"):
                        seconds = ours(cfg) if path == "ours" else bare(cfg)
                        if r >= args.warmup_rounds:
                            times.setdefault((model, option, path), []).append(seconds)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    report(times, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
