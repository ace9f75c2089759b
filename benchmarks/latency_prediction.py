#!/usr/bin/env python
"""Does the latency table predict the runtime? Random architectures of a space, each exported whole
and timed in the table's runtime, against the table's prediction (and against their FLOPs).

    python benchmarks/latency_prediction.py \\
        --table configs/latency/mnist_small_space_executorch.json --n 30 \\
        --table configs/latency/fbnetv2_f_space_executorch.json --n 10 --resolution 128 \\
        --rounds 15 --plot docs/images/latency_prediction.png

For each ``--table`` (its space, classes, runtime and threads are the table's): ``--n`` architectures
drawn uniformly per choice (``--resolution`` fixes the input size of a resolution-searched space),
derived, built, exported whole as tools/export.py exports them (BatchNorm folded; the program reads
its input in place, as the table's blocks do) and timed together: warm-up, then interleaved rounds
(every model once per round), batch 1, medians. The table predicts each model as the runtime's call
cost once plus its blocks' latencies (each block's entry minus the call cost it paid alone); the
plain sum of the entries (every block's call cost counted) is printed beside it, to show what the
correction removes. Printed: mean absolute percentage error, Spearman rank correlation of predicted
and measured, and the Spearman correlation of FLOPs with measured; a least-squares line
``measured = a + b * predicted`` shows what bias remains, and the gap ``measured - predicted`` beside
the model's weight bytes and the CPU's largest cache shows where it comes from: a block timed alone
keeps its weights in cache, a whole model larger than the cache reads them from memory every call.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import mobile_cv  # noqa: E402
from mobile_cv.latency import LatencyTable  # noqa: E402
from mobile_cv.latency.build import time_models  # noqa: E402
from mobile_cv.latency.runtimes import check_runtime  # noqa: E402
from mobile_cv.search import build_supernet  # noqa: E402
from mobile_cv.search.budget import sample_uniform  # noqa: E402


def programs(arch, table_data) -> int:
    """How many programs the table timed for this model: its blocks but identity skips, and the head."""
    c_in, count = table_data["in_chans"], 1
    for op, c_out, stride, *_ in (row for stage in arch["blocks"] for row in stage):
        count += not (op == "skip" and c_in == c_out and stride == 1)
        c_in = c_out
    return count


def ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0.0] * len(values)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def pearson(a, b):
    ma, mb = statistics.mean(a), statistics.mean(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return cov / ((sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b)) ** 0.5)


def spearman(a, b):
    return pearson(ranks(a), ranks(b))


def line_fit(x, y):
    mx, my = statistics.mean(x), statistics.mean(y)
    b = sum((u - mx) * (v - my) for u, v in zip(x, y)) / sum((u - mx) ** 2 for u in x)
    return my - b * mx, b


def last_level_cache_mb() -> float:
    """The largest CPU cache's size in MB, as Linux reports it (0 where it does not)."""
    sizes = []
    root = "/sys/devices/system/cpu/cpu0/cache"
    for name in os.listdir(root) if os.path.isdir(root) else []:
        try:
            with open(os.path.join(root, name, "size")) as f:
                text = f.read().strip()
        except OSError:
            continue
        scale = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}.get(text[-1:], 1 / 2**20)
        sizes.append(float(text.rstrip("KMG")) * scale)
    return max(sizes, default=0.0)


def evaluate_table(path, n, resolution, rounds, warmup, jobs, seed):
    table = LatencyTable.load(path)
    d = table.data
    check_runtime(d["runtime"], d["int8"])
    net = build_supernet(d["space"], num_classes=d["num_classes"], in_chans=d["in_chans"])
    budget = table.budget_table(net)
    index_batch = sample_uniform(net, n, torch.Generator().manual_seed(seed))
    if resolution:
        if "resolution" not in net.choices:
            sys.exit(f"{d['space']} does not search the resolution; drop --resolution")
        index_batch["resolution"] = torch.full((n,), net.res_sizes.index(resolution))
    models = []
    for j in range(n):
        index = {label: int(v[j]) for label, v in index_batch.items()}
        arch = net.derive_arch(net.one_hot(index))
        model = mobile_cv.build_model(arch, num_classes=d["num_classes"], in_chans=d["in_chans"])
        flops, mparams = mobile_cv.count_flops_params(model, arch["input_size"])
        models.append(
            {
                "arch": arch,
                "predicted": budget.exact(index),
                "flops": flops,
                "mparams": mparams,
                "programs": programs(arch, d),
            }
        )
    t0 = time.perf_counter()
    timed = time_models([m["arch"] for m in models], table, rounds, warmup, jobs)
    for m, t in zip(models, timed):
        m["measured"], m["spread"] = t["ms"], (t["q1"], t["q3"])
        # the plain sum: every block as timed alone, its call cost included
        m["plain_sum"] = m["predicted"] + (m["programs"] - 1) * table.overhead_ms
    return table, models, time.perf_counter() - t0


def report(table, models, seconds, resolution):
    d = table.data
    measured = [m["measured"] for m in models]
    predicted = [m["predicted"] for m in models]
    plain = [m["plain_sum"] for m in models]
    flops = [m["flops"] for m in models]
    mape = 100 * statistics.mean(abs(p - y) / y for p, y in zip(predicted, measured))
    mape_plain = 100 * statistics.mean(abs(p - y) / y for p, y in zip(plain, measured))
    a, b = line_fit(predicted, measured)
    res = f" at {resolution}px" if resolution else ""
    print(
        f"\n{d['space']}{res}: {len(models)} random architectures, {d['runtime']}{' int8' if d['int8'] else ''}, "
        f"{d['threads']} thread(s), table {d['mode']} ({table.path}); export and timing {seconds:.0f} s"
    )
    print(
        f"{'model':>5} {'MFLOPs':>9} {'measured ms':>12} {'IQR':>17} {'predicted':>10} {'error':>7} {'plain sum':>10}"
    )
    for j, m in enumerate(sorted(models, key=lambda m: m["measured"])):
        err = 100 * (m["predicted"] / m["measured"] - 1)
        iqr = f"{m['spread'][0]:.4f}-{m['spread'][1]:.4f}"
        print(
            f"{j:>5} {m['flops']:>9.3f} {m['measured']:>12.4f} {iqr:>17} {m['predicted']:>10.4f} {err:>+6.1f}% "
            f"{m['plain_sum']:>10.4f}"
        )
    print(
        f"mean abs error {mape:.1f}% (the plain sum of entries: {mape_plain:.1f}%); Spearman predicted vs measured "
        f"{spearman(predicted, measured):.3f}, FLOPs vs measured {spearman(flops, measured):.3f}; "
        f"fit measured = {a:.4f} + {b:.3f} x predicted (ms)"
    )
    # Each block timed alone keeps its weights in cache; a whole model whose weights outgrow the cache
    # reads them from memory on every call. The gap against the weights' bytes shows that cost.
    weight_mb = [4 * m["mparams"] / (1 if not d["int8"] else 4) for m in models]
    gap = [y - p for p, y in zip(predicted, measured)]
    ga, gb = line_fit(weight_mb, gap) if len(set(weight_mb)) > 1 else (statistics.mean(gap), 0.0)
    print(
        f"weights {min(weight_mb):.2f}..{max(weight_mb):.2f} MB ({'int8' if d['int8'] else 'fp32'}; the CPU's largest "
        f"cache {last_level_cache_mb():.0f} MB); measured - predicted {min(gap):+.4f}..{max(gap):+.4f} ms, "
        f"mean {statistics.mean(gap) / statistics.mean(weight_mb) * 1000:.1f} us per MB of weights; "
        f"fit gap = {ga:.4f} + {gb * 1000:.1f} us x MB"
    )
    return {
        "space": d["space"],
        "resolution": resolution,
        "runtime": d["runtime"],
        "mape": mape,
        "mape_plain_sum": mape_plain,
        "spearman": spearman(predicted, measured),
        "spearman_flops": spearman(flops, measured),
        "fit": [a, b],
        "models": [{k: v for k, v in m.items() if k != "arch"} for m in models],
    }


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.4), squeeze=False)
    for ax, r in zip(axes[0], results):
        m = r["models"]
        x, y = [v["predicted"] for v in m], [v["measured"] for v in m]
        lo, hi = min(x + y) * 0.9, max(x + y) * 1.1
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="measured = predicted")
        ax.scatter(x, y, s=18, label="architectures")
        ax.scatter([v["plain_sum"] for v in m], y, s=10, marker="x", alpha=0.5, label="plain sum of entries")
        res = f" at {r['resolution']}px" if r["resolution"] else ""
        ax.set_title(
            f"{r['space']}{res}, {r['runtime']}\nerror {r['mape']:.1f}%, Spearman {r['spearman']:.3f} "
            f"(FLOPs {r['spearman_flops']:.3f})",
            fontsize=9,
        )
        ax.set_xlabel("predicted by the table (ms)")
        ax.set_ylabel("measured, whole model (ms)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", action="append", required=True, help="a latency table (repeat for several)")
    p.add_argument("--n", type=int, action="append", help="architectures per table (default 30)")
    p.add_argument("--resolution", type=int, action="append", help="input size per table (0: sampled)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--jobs", type=int, default=0, help="export worker processes (0: one per CPU core)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="write the predicted-vs-measured plot here (PNG)")
    p.add_argument("--json", help="write every point here")
    args = p.parse_args()
    ns = args.n or []
    resolutions = args.resolution or []
    results = []
    for i, path in enumerate(args.table):
        n = ns[i] if i < len(ns) else 30
        resolution = resolutions[i] if i < len(resolutions) else 0
        table, models, seconds = evaluate_table(path, n, resolution, args.rounds, args.warmup, args.jobs, args.seed + i)
        results.append(report(table, models, seconds, resolution))
    if args.plot:
        plot(results, args.plot)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
