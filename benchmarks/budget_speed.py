#!/usr/bin/env python
"""How long the exact cost range and the budgeted search take, per search space.

For each space: building the :class:`~mobile_cv.search.budget.BudgetTable` (every block's exact
cost for every option combination, one vectorised pass per candidate), the exact cost range
(``cost_range``), and the budgeted search (the most probable architecture within 5% of a
target) at three targets under random alphas; each beside the time of ONE one-hot cost
evaluation (``Supernet.expected_cost``), the unit a greedy or sampling derivation pays per
candidate architecture. Goal for the FBNetV2-F space (10^55.7 architectures): range and
derivation within 10 s on 2 CPU cores.

    python benchmarks/budget_speed.py [--spaces fbnetv2_f_space mnist_small_space] [--threads 2]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from mobile_cv.search import build_supernet  # noqa: E402
from mobile_cv.search.budget import BudgetTable, log_probs  # noqa: E402

SPACES = ("fbnetv2_f_space", "fbnetv2_p_space", "fbnetv2_l_space", "mnist_small_space")


def timed(fn, repeat=1):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spaces", nargs="+", default=list(SPACES))
    p.add_argument("--kind", default="flops", choices=["flops", "params"])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{args.threads} threads, torch {torch.__version__}; times in seconds; 'x one-hot' = the time over one "
        f"one-hot expected_cost evaluation of the same supernet"
    )
    print(
        f"{'space':<20} {'log10 #':>7} {'one-hot':>8} {'table':>7} {'range':>7} {'search':>7} "
        f"{'table+range+search':>19} {'x one-hot':>10}  range / found costs"
    )
    for name in args.spaces:
        mnist = name.startswith("mnist")
        net = build_supernet(name, num_classes=10 if mnist else 1000, in_chans=1 if mnist else 3)
        with torch.no_grad():
            t_one, _ = timed(lambda n=net: n.expected_cost(args.kind, n.one_hot(n.argmax())), repeat=5)
        t_table, table = timed(lambda n=net: BudgetTable(n, args.kind))
        t_range, (lo, hi) = timed(table.extremes)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for a in net.arch_parameters():
                a.copy_(torch.randn(a.shape, generator=g))
        logp = log_probs(net)
        search_times, costs = [], []
        for frac in (0.2, 0.4, 0.6):
            target = lo + frac * (hi - lo)
            t, (_, cost, _) = timed(lambda t=target, tb=table, lp=logp: tb.most_probable_within(t, 0.05, lp))
            search_times.append(t)
            costs.append(f"{cost / target - 1:+.1%}")
        t_search = statistics.median(search_times)
        total = t_table + t_range + t_search
        print(
            f"{name:<20} {net.log10_size():>7.1f} {t_one:>8.3f} {t_table:>7.2f} {t_range:>7.3f} {t_search:>7.2f} "
            f"{total:>19.2f} {total / t_one:>9.0f}x  {lo:.4g}-{hi:.4g}, off target by {' '.join(costs)}"
        )


if __name__ == "__main__":
    main()
