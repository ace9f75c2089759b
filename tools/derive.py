#!/usr/bin/env python
"""Derive a family of architectures from one finished search: at each budget, the most probable
architecture (under the search's learned alpha) whose exact cost is within --tolerance of it.

    python tools/derive.py output/search_embedded_mnist --budgets 0.15 0.3 0.6
    python tools/derive.py output/search_f --budgets 3 4 5 --kind latency \\
        --table configs/latency/fbnetv2_f_space_executorch.json       # another cost kind, given its table
    python tools/derive.py output/search_f_latency --budgets 3 4 5 --verify retarget   # each model timed
                                                     # here, derived again until it meets its budget

Writes to --out (default SEARCH_DIR/family): arch_def_<budget>.json per budget, family.json (the
rows printed) and family.png. The cost unit is the search's (SEARCH.COST.KIND) unless --kind says
otherwise: MFLOPs, M params or ms. A budget outside the space's range, or a folder without a
finished search, is refused in one line (exit 2). --verify retarget (latency budgets) adds to each
row measured_ms (the table's milliseconds: measured / drift), drift and measured_error; run it
alone, on the machine the table describes.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tabulate import tabulate  # noqa: E402

from mobile_cv import engine  # noqa: E402
from mobile_cv.config import flag_type  # noqa: E402
from mobile_cv.engine.derive import derive_family  # noqa: E402
from mobile_cv.search.cost_kinds import COST_KINDS  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("search_dir", help="the OUTPUT_DIR of a finished tools/search.py run")
    p.add_argument("--budgets", type=flag_type("--budgets"), nargs="+", required=True, help="in the cost's unit")
    p.add_argument("--kind", choices=COST_KINDS.names(), help="cost kind (default: the search's)")
    p.add_argument("--table", help="--kind latency: the latency table (default: the search's)")
    p.add_argument("--tolerance", type=flag_type("--tolerance"), default=0.05)
    p.add_argument(
        "--verify",
        choices=("off", "retarget"),
        default="off",
        help="retarget (--kind latency): each derived model timed whole here, derived again until it meets its "
        "budget (the search's SEARCH.COST.LATENCY_VERIFY keys: _STEPS, _TOLERANCE, _ROUNDS, _REFERENCES)",
    )
    p.add_argument("--out", help="output folder (default: SEARCH_DIR/family)")
    args = p.parse_args(argv)

    def body() -> None:
        out = args.out or os.path.join(args.search_dir, "family")
        rows = derive_family(args.search_dir, args.budgets, out, args.kind, args.tolerance, args.table, args.verify)
        print(tabulate(rows, headers="keys", floatfmt="g"))
        print(f"{out}: {len(rows)} arch defs, family.json, family.png")

    return engine.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
