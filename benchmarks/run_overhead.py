"""What a run costs around its steps: from the command to the first step (start-up: config, the
checks before writing, the supernet and cost table builds, data) and from the last step to the
process's exit (finish: the derived architecture, plots, search.json), for a search of the
FBNetV2-F space (224 px, a latency table: every start-up cost there is) and a training run of
FBNetV2_F1, each timed for two checkouts side by side in one run (interleaved, medians).

    python benchmarks/run_overhead.py --other /path/to/older/checkout --rounds 3

The other checkout's tools are run with the same config and data; a hook passed through each
tool's ``main(argv, hooks=...)`` (both checkouts have it) writes the wall-clock times of the first
step's start and the last step's end. Run it alone.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DRIVER = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["CHECKOUT"])
sys.argv[0] = os.path.join(os.environ["CHECKOUT"], "tools", os.environ["TOOL"])
from mobile_cv.engine import HookBase
import importlib.util
spec = importlib.util.spec_from_file_location("tool", sys.argv[0])
tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool)
times = {}
class Stamp(HookBase):
    def before_step(self):
        times.setdefault("first_step", time.time())
    def after_step(self):
        times["last_step"] = time.time()
rc = tool.main(sys.argv[1:], hooks=[Stamp()])
with open(os.environ["STAMPS"], "w") as f:
    json.dump(times, f)
sys.exit(rc)
"""


def make_image_folder(root: str, classes: int, per_class: int, size: int) -> str:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = os.path.join(root, split, f"c{c:04d}")
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f"{i}.png"))
    return root


def runs(data: str, out: str):
    """(label, tool, config, KEY VALUE args) of the runs timed."""
    common = ["DATA.ROOT", data, "DATA.NUM_WORKERS", "0", "DATA.LIMIT", "16"]
    search = common + ["SEARCH.EPOCHS", "1", "SEARCH.WARMUP_EPOCHS", "0", "SEARCH.BATCH_SIZE", "8"]
    search += ["SEARCH.COST.LATENCY_CHECK", "off", "SEARCH.COST.TARGET", "5.0", "SEARCH.WEIGHT_SPLIT", "0.5"]
    search += ["SEARCH.COST.TOLERANCE", "0.02"]  # the same budgeted search in both checkouts (their configs differ)
    train = common + [
        "SOLVER.EPOCHS",
        "1",
        "SOLVER.BATCH_SIZE",
        "8",
        "MODEL.ARCH",
        "FBNetV2_F1",
        "DATA.INPUT_SIZE",
        "128",
    ]
    train += ["MODEL.NUM_CLASSES", "1000"]
    return [
        ("search, F space 224 px, latency", "search.py", "configs/search_imagenet_latency.yaml", search),
        ("train, FBNetV2_F1 128 px", "train.py", "configs/train_imagenet.yaml", train),
    ]


def time_one(checkout: str, tool: str, config: str, args, out: str):
    stamps = out + ".stamps.json"
    env = dict(os.environ, CHECKOUT=checkout, TOOL=tool, STAMPS=stamps, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-c", DRIVER, "--config-file", os.path.join(checkout, config), *args, "OUTPUT_DIR", out]
    t0 = time.time()
    p = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    t_exit = time.time()
    if p.returncode != 0:
        raise SystemExit(f"{checkout}: {tool} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    with open(stamps) as f:
        s = json.load(f)
    return s["first_step"] - t0, t_exit - s["last_step"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--other", required=True, help="another checkout of this project (e.g. a git worktree)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", choices=("search", "train"), help="time one of the two runs")
    args = p.parse_args()
    checkouts = {"this": ROOT, "other": os.path.abspath(args.other)}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_image_folder(os.path.join(tmp, "data"), classes=1000, per_class=2, size=32)
        table = {}
        for r in range(args.rounds):
            for label, tool, config, targs in runs(data, tmp):
                if args.only and not tool.startswith(args.only):
                    continue
                for name, checkout in list(checkouts.items()) if r % 2 == 0 else list(checkouts.items())[::-1]:
                    out = os.path.join(tmp, f"{name}_{tool}_{r}")
                    table.setdefault((label, name), []).append(time_one(checkout, tool, config, targs, out))
                    print(
                        f"round {r + 1} {label} {name}: start-up {table[(label, name)][-1][0]:.2f} s, finish "
                        f"{table[(label, name)][-1][1]:.2f} s",
                        flush=True,
                    )
    print(f"\nmedian of {args.rounds} rounds, seconds (this: {checkouts['this']}; other: {checkouts['other']})")
    print(f"{'run':<36} {'start-up this':>14} {'other':>8} {'finish this':>12} {'other':>8}")
    for label, *_ in runs("", ""):
        if (label, "this") not in table:
            continue
        this = table[(label, "this")]
        other = table[(label, "other")]
        med = [statistics.median(x[i] for x in v) for v in (this, other) for i in (0, 1)]
        print(f"{label:<36} {med[0]:>14.2f} {med[2]:>8.2f} {med[1]:>12.2f} {med[3]:>8.2f}")


if __name__ == "__main__":
    main()
