#!/usr/bin/env python
"""Build the latency table of a search space: every block configuration it can produce, timed alone
on the runtime you deploy to (batch 1, warm-up, interleaved rounds, medians with their spread).

    python tools/latency_table.py mnist_small_space --num-classes 10 --in-chans 1 \
        --out configs/latency/mnist_small_space_executorch.json          # every configuration timed
    python tools/latency_table.py fbnetv2_f_space --runtime executorch --threads 1 \\
        --out configs/latency/fbnetv2_f_space_executorch.json           # a grid + interpolation (> --max-configs)
    python tools/latency_table.py my_space.py --runtime onnxruntime --resolutions 160 192 --out T.json
    python tools/latency_table.py mnist_small_space --num-classes 10 --in-chans 1 --runtime eager --out T.json

Search with it: ``tools/search.py ... SEARCH.COST.KIND latency SEARCH.COST.LATENCY_TABLE T.json
SEARCH.COST.TARGET <ms>``. The runtime defaults to ExecuTorch (XNNPACK) where installed; ``--int8``
times PT2E int8 programs (ExecuTorch only). Run it with nothing else running: the table is only as
good as the machine is quiet. An interrupted build resumes where it stopped (the programs exported so far are kept in
``TABLE.partial/``);
a finished table for the same settings is reused. The last line is the space's latency range by
the table (``range: MIN..MAX ms``, fastest and slowest architecture): the budgets that exist.
"""

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mobile_cv import engine  # noqa: E402
from mobile_cv.config import flag_type  # noqa: E402
from mobile_cv.engine.run_lock import RunLock  # noqa: E402
from mobile_cv.latency import RUNTIMES, LatencySettings, TableBuilder, default_runtime, table_range  # noqa: E402
from mobile_cv.latency.table import LatencyTableError  # noqa: E402

DEFAULTS = LatencySettings()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("space", help="a registered search space (arch_defs.names('space')) or a .json/.py space file")
    p.add_argument("--out", required=True, metavar="TABLE", help="the table file to write (JSON)")
    p.add_argument("--runtime", choices=RUNTIMES, help="where to time (default: executorch where installed)")
    p.add_argument("--int8", action="store_true", help="time int8 programs (PT2E, XNNPACK; ExecuTorch only)")
    p.add_argument(
        "--threads", type=flag_type("--threads"), default=DEFAULTS.threads, help="runtime threads (default: 1)"
    )
    p.add_argument(
        "--resolutions", type=flag_type("--resolutions"), nargs="+", help="input sizes (default: the space's)"
    )
    p.add_argument(
        "--num-classes",
        type=flag_type("--num-classes"),
        default=1000,
        help="classifier outputs (default 1000; the embedded digits: 10): the search's MODEL.NUM_CLASSES",
    )
    p.add_argument(
        "--in-chans",
        type=flag_type("--in-chans"),
        default=3,
        help="input channels (default 3; the embedded digits: 1): the search's MODEL.IN_CHANS",
    )
    p.add_argument("--rounds", type=flag_type("--rounds"), default=DEFAULTS.rounds, help="interleaved timing rounds")
    p.add_argument("--warmup", type=flag_type("--warmup"), default=DEFAULTS.warmup, help="untimed rounds first (>= 0)")
    p.add_argument(
        "--max-configs",
        type=flag_type("--max-configs"),
        default=DEFAULTS.max_configs,
        help="time every configuration up to this many, else a grid and interpolation",
    )
    p.add_argument(
        "--grid-points",
        type=flag_type("--grid-points"),
        nargs=4,
        default=list(DEFAULTS.grid_points),
        metavar=("C_IN", "HIDDEN", "C_OUT", "SIZE"),
        help="grid values per axis (>= 2 each; default 2 3 2 2)",
    )
    p.add_argument(
        "--held-out",
        type=flag_type("--held-out"),
        default=DEFAULTS.held_out,
        help="grid mode: configurations off the grid timed to measure the interpolation error (>= 0)",
    )
    p.add_argument(
        "--jobs", type=flag_type("--jobs"), default=0, help="export worker processes (default 0: one per CPU core)"
    )
    p.add_argument(
        "--chunk", type=flag_type("--chunk"), default=DEFAULTS.chunk, help="configurations exported, then timed"
    )
    args = p.parse_args(argv)
    return args


def build_table(args, settings: LatencySettings) -> None:
    """Build (or finish) the table, with progress bars; print its summary."""
    builder = TableBuilder(args.space, args.out, settings)
    bars = {}

    def progress(phase: str, done: int, total: int) -> None:
        if phase not in bars:
            for bar in bars.values():
                bar.close()
            desc = "exporting programs" if phase == "export" else "timing rounds"
            bars[phase] = engine.progress(None, desc=desc, total=total)
        bars[phase].update(done - bars[phase].n)

    table = builder.build(progress)
    for bar in bars.values():
        bar.close()
    d = table.data
    print(f"{args.out}: {table.describe()}; call cost {table.overhead_ms:.4f} ms; built in {d['build_seconds']:.0f} s")
    if "interpolation_error" in d and d["interpolation_error"]:
        e = d["interpolation_error"]
        print(
            f"interpolation error on {e['configs']} held-out configurations: mean {e['mape_block']:.1f}% "
            f"(p90 {e['p90_block']:.1f}%, max {e['max_block']:.1f}%) of the block's latency"
        )
    lo, hi = table_range(table, builder.net)
    print(f"range: {lo:.4g}..{hi:.4g} ms")


def main(argv=None) -> int:
    args = parse_args(argv)

    def body() -> None:
        settings = LatencySettings(
            runtime=args.runtime or default_runtime(),
            int8=args.int8,
            threads=args.threads,
            resolutions=args.resolutions,
            num_classes=args.num_classes,
            in_chans=args.in_chans,
            rounds=args.rounds,
            warmup=args.warmup,
            max_configs=args.max_configs,
            grid_points=tuple(args.grid_points),
            held_out=args.held_out,
            jobs=args.jobs,
            chunk=args.chunk,
        )
        if os.path.isdir(args.out):
            raise LatencyTableError(f"--out {args.out!r} is a folder; give the table's file name")
        folder = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(folder, exist_ok=True)
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        # one build per table: two would time each other and share TABLE.partial/
        with RunLock(folder, f".{os.path.basename(args.out)}.lock", what=f"--out {args.out!r}"):
            build_table(args, settings)

    return engine.run_main(
        body,
        stopped="stopped; the programs exported so far are kept in TABLE.partial/: rerun the command to continue",
    )


if __name__ == "__main__":
    sys.exit(main())
