#!/usr/bin/env python
"""Does the search beat chance? Searched vs random architectures of the same space at the same cost.

For each budget: draw ``--random`` architectures uniformly per choice among those whose
exact cost is within ``--tolerance`` of the budget; run the search (``tools/search.py``,
FLOPs target = the budget) once per ``--seeds``; train every architecture from scratch
with the same recipe (``tools/train.py``, ``--train-epochs``) and score it on the held-out
digits (val + test: 1,000 images the search never saw). Prints a table, one JSON row per
architecture, and per budget the random median / 75th percentile / best beside the
searched median; writes ``search_quality.png`` (accuracy vs MFLOPs: the random cloud,
the searched points, and their Pareto front) and ``search_quality.jsonl``.

Every run is a subprocess of the real tools (``--jobs`` at a time, ``--threads`` torch threads
each: on 2 cores two 1-thread runs do 1.5x the work of one 2-thread run), cached by its
content under ``--out``: rerunning with more seeds or budgets reuses what is done.

    python benchmarks/search_quality.py --budgets 0.3 1.0 --seeds 0 1 2 --random 8
    python benchmarks/search_quality.py ... --search-opts SEARCH.SAMPLED_CHOICES "[]"   # the paper's full mixture

Latency mode (``--cost latency --table TABLE``): budgets in milliseconds; the random architectures
are drawn near the budget by the table, then each is exported whole and timed in the table's
runtime (alone, interleaved, as ``benchmarks/latency_prediction.py`` does), and the first
``--random`` whose *measured* latency is within ``--tolerance`` of the budget are kept. The search
runs with ``SEARCH.COST.KIND latency``; at the end every architecture compared (random and searched)
is timed again, all together in one run, and those are the latencies reported. With
``--flops-budgets``, FLOPs searches run too, and per ms budget the one whose measured latency is
closest is compared in accuracy per millisecond.

    python benchmarks/search_quality.py --cost latency --table configs/latency/mnist_small_space_executorch.json \
        --budgets 0.05 0.1 --flops-budgets 0.15 0.3 --seeds 0 1 2 --random 8
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mobile_cv.arch.arch_def import to_jsonable  # noqa: E402
from mobile_cv.latency import LatencyTable  # noqa: E402
from mobile_cv.latency.measure import time_models  # noqa: E402
from mobile_cv.search import build_supernet  # noqa: E402
from mobile_cv.search.budget import sample_within  # noqa: E402
from mobile_cv.search.encode import encode  # noqa: E402

SEARCH_CONFIG = os.path.join("configs", "search_embedded_mnist.yaml")
TRAIN_CONFIG = os.path.join("configs", "train_embedded_mnist.yaml")


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def run(cmd, log_path, threads):
    """Run a tool with ``threads`` torch threads; its output goes to ``log_path``; a failure stops
    the benchmark with the log's tail."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(log_path, "w") as log:
        p = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    if p.returncode != 0:
        tail = open(log_path).read()[-2000:]
        sys.exit(f"search_quality: {' '.join(cmd)} failed ({p.returncode}):\n{tail}")


def percentile(values, q):
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


_LOCKS = {}


def _train(arch, args, seed, out):
    if os.path.exists(os.path.join(out, "run")):
        shutil.rmtree(os.path.join(out, "run"))  # an unfinished training: start over
    os.makedirs(out, exist_ok=True)
    arch_file = os.path.join(out, "arch.json")
    with open(arch_file, "w") as f:
        json.dump(to_jsonable(arch), f, indent=1)
    run(
        [
            sys.executable,
            "tools/train.py",
            "--config-file",
            TRAIN_CONFIG,
            "MODEL.ARCH",
            arch_file,
            "DATA.INPUT_SIZE",
            str(arch["input_size"]),
            "SOLVER.EPOCHS",
            str(args.train_epochs),
            "SEED",
            str(seed),
            "OUTPUT_DIR",
            os.path.join(out, "run"),
            *args.train_opts,
        ],
        os.path.join(out, "train.log"),
        args.threads,
    )
    os.replace(os.path.join(out, "run", "eval.json"), os.path.join(out, "eval.json"))


def train_and_score(arch, args, seed):
    """Train ``arch`` from scratch with the benchmark's recipe; accuracy (%) on val + test, FLOPs, params."""
    key = digest(
        {
            "arch": to_jsonable(arch),
            "epochs": args.train_epochs,
            "seed": seed,
            "opts": args.train_opts,
            "threads": args.threads,
        }
    )  # float sums differ with the thread count
    out = os.path.join(args.out, "train", key)
    result = os.path.join(out, "eval.json")
    with _LOCKS.setdefault(key, threading.Lock()):  # two searches may derive the same architecture
        if not os.path.exists(result):
            _train(arch, args, seed, out)
    e = json.load(open(result))

    correct = sum(e[s]["acc1"] * e[s]["images"] / 100 for s in ("val", "test"))
    images = sum(e[s]["images"] for s in ("val", "test"))
    return 100 * correct / images, e["flops_m"], e["params_m"]


def score(arch, args):
    """Mean held-out accuracy over ``--train-seeds`` trainings, and the exact cost."""
    accs = []
    for s in args.train_seeds:
        acc, flops, params = train_and_score(arch, args, s)
        accs.append(acc)
    return statistics.mean(accs), flops, params


def search(budget, seed, args, kind=None):
    """Run tools/search.py for ``budget`` (MFLOPs, or ms with ``kind`` "latency"); returns (arch def, search.json)."""
    kind = kind or args.cost
    cost = ["SEARCH.COST.KIND", kind]
    if kind == "latency":
        d = args.latency_table.data
        cost += ["SEARCH.COST.LATENCY_TABLE", args.table, "SEARCH.COST.LATENCY_RUNTIME", d["runtime"]]
        cost += ["SEARCH.COST.LATENCY_INT8", str(d["int8"]), "SEARCH.COST.LATENCY_THREADS", str(d["threads"])]
        # searches run side by side here: probes timed at their start-up would time each other; the
        # benchmark times every architecture together at the end instead
        cost += ["SEARCH.COST.LATENCY_CHECK", "off"]
    key = {"budget": budget, "seed": seed, "opts": args.search_opts, "space": args.space, "threads": args.threads}
    if kind == "latency":
        key.update(cost=cost, table=args.latency_table.data["date"])
    out = os.path.join(args.out, "search", digest(key))
    if not os.path.exists(os.path.join(out, "search.json")):
        if os.path.exists(out):
            shutil.rmtree(out)  # an unfinished search: start over
        os.makedirs(os.path.dirname(out), exist_ok=True)
        run(
            [
                sys.executable,
                "tools/search.py",
                "--config-file",
                SEARCH_CONFIG,
                "SEARCH.SPACE",
                args.space,
                *(cost if kind == "latency" else []),
                "SEARCH.COST.FORM",
                "target",
                "SEARCH.COST.TARGET",
                str(budget),
                "SEARCH.COST.TOLERANCE",
                str(args.tolerance),
                "SEED",
                str(seed),
                "OUTPUT_DIR",
                out,
                *args.search_opts,
            ],
            out + ".log",
            args.threads,
        )
    return json.load(open(os.path.join(out, "arch_def.json"))), json.load(open(os.path.join(out, "search.json")))


def measured_latency(archs, args):
    """Each arch exported whole and timed in the table's runtime (alone; cached by arch and table)."""
    cache_path = os.path.join(args.out, "measured_latency.json")
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
    ident = {k: args.latency_table.data[k] for k in ("runtime", "int8", "threads", "date")}
    keys = [digest({"arch": to_jsonable(a), **ident}) for a in archs]
    todo = [(k, a) for k, a in zip(keys, archs) if k not in cache]
    if todo:
        timed = time_models([a for _, a in todo], args.latency_table, rounds=args.rounds, warmup=3)
        cache.update({k: t["ms"] for (k, _), t in zip(todo, timed)})
        with open(cache_path, "w") as f:
            json.dump(cache, f)
    return [cache[k] for k in keys]


def random_at_measured_latency(net, budget, args):
    """``--random`` architectures whose measured latency is within ``--tolerance`` of ``budget`` (ms):
    drawn uniformly per choice near the budget by the table, then timed whole."""
    table = args.latency_table.budget_table(net)
    kept, draws = [], 0
    for attempt in range(6):
        n = 4 * args.random
        drawn = sample_within(
            net,
            "latency",
            budget,
            3 * args.tolerance,
            n,
            seed=args.random_seed + 1000 * attempt,
            cost_fn=table.expected,
        )
        archs = [net.derive_arch(net.one_hot(index)) for index, _ in drawn]
        draws += len(archs)
        for arch, ms in zip(archs, measured_latency(archs, args)):
            if abs(ms / budget - 1) <= args.tolerance and all(arch != a for a, _ in kept):
                kept.append((arch, ms))
        if len(kept) >= args.random:
            return kept[: args.random]
    sys.exit(
        f"search_quality: only {len(kept)} of {draws} random architectures near {budget} ms measure within "
        f"{100 * args.tolerance:g}% of it; pick a budget where the table predicts well or widen --tolerance"
    )


def pareto(points):
    """Points not dominated in (lower MFLOPs, higher accuracy), sorted by MFLOPs."""
    front, best = [], -1.0
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def plot(rows, path, x="mflops"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rnd = [(r[x], r["acc"]) for r in rows if r["kind"] == "random"]
    src = [(r[x], r["acc"]) for r in rows if r["kind"] == "searched"]
    flp = [(r[x], r["acc"]) for r in rows if r["kind"] == "flops_searched"]
    ax.scatter(*zip(*rnd), s=22, c="0.6", label="random (uniform per choice, same budget)")
    if src:
        ax.scatter(*zip(*src), s=60, c="tab:red", marker="*", label="searched (DMaskingNAS)")
    if flp:
        ax.scatter(*zip(*flp), s=40, c="tab:blue", marker="^", label="searched for FLOPs")
    for pts, style, label in ((rnd, "--", "random Pareto front"), (src, "-", "searched Pareto front")):
        if not pts:
            continue
        front = pareto(pts)
        ax.plot(*zip(*front), style, c="0.4" if style == "--" else "tab:red", lw=1, label=label)
    ax.set_xlabel("MFLOPs (exact)" if x == "mflops" else "latency, measured whole model (ms)")
    ax.set_ylabel("held-out top-1 % (val + test)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("search quality: searched vs random architectures at the same budgets", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="mnist_small_space")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.3, 1.0], help="MFLOPs (ms with --cost latency)")
    p.add_argument("--cost", choices=("flops", "latency"), default="flops", help="what the budgets count")
    p.add_argument("--table", help="--cost latency: the space's latency table (tools/latency_table.py)")
    p.add_argument("--flops-budgets", type=float, nargs="*", default=[], help="--cost latency: FLOPs searches too")
    p.add_argument("--rounds", type=int, default=15, help="--cost latency: timing rounds of whole models")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="search seeds")
    p.add_argument("--random", type=int, default=8, help="random architectures per budget")
    p.add_argument("--random-seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--train-epochs", type=int, default=20)
    p.add_argument(
        "--train-seeds",
        type=int,
        nargs="+",
        default=[0],
        help="train every architecture once per seed and average (less training noise)",
    )
    p.add_argument("--search-opts", nargs="*", default=[], help="extra KEY VALUE overrides for tools/search.py")
    p.add_argument("--train-opts", nargs="*", default=[], help="extra KEY VALUE overrides for tools/train.py")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (results depend on it)")
    p.add_argument("--out", default=os.path.join("output", "search_quality"))
    args = p.parse_args()
    if args.cost == "latency" and not args.table:
        p.error("--cost latency needs --table (python tools/latency_table.py SPACE --out TABLE)")
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    net = build_supernet(args.space, num_classes=10, in_chans=1)
    args.latency_table = LatencyTable.load(args.table) if args.cost == "latency" else None
    tasks = []
    for budget in args.budgets:
        if args.cost == "latency":
            drawn = random_at_measured_latency(net, budget, args)
            tasks += [(budget, "random", i, arch, {"ms": ms}) for i, (arch, ms) in enumerate(drawn)]
        else:
            drawn = sample_within(net, "flops", budget, args.tolerance, args.random, seed=args.random_seed)
            tasks += [
                (budget, "random", i, net.derive_arch(net.one_hot(index)), {}) for i, (index, _) in enumerate(drawn)
            ]
    searches = [(budget, "searched", seed, args.cost) for budget in args.budgets for seed in args.seeds]
    searches += [(budget, "flops_searched", seed, "flops") for budget in args.flops_budgets for seed in args.seeds]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        found = list(pool.map(lambda t: search(t[0], t[2], args, t[3]), searches))
    ms = [None] * len(found)
    if args.cost == "latency":
        # the random architectures were picked by a first timing; now every architecture of the comparison
        # is timed again in one run, together, so a slow spell of the machine cannot favour either side
        randoms = [t for t in tasks if t[1] == "random"]
        together = time_models(
            [t[3] for t in randoms] + [arch for arch, _ in found], args.latency_table, rounds=args.rounds, warmup=3
        )
        for (_, _, _, _, extra), t in zip(randoms, together):
            extra.update(ms_at_selection=extra["ms"], ms=t["ms"])
        ms = [t["ms"] for t in together[len(randoms) :]]
    for (budget, kind, seed, _), (arch, summary), t in zip(searches, found, ms):
        extra = {k: summary.get(k) for k in ("log_prob", "log_prob_argmax", "log_prob_uniform", "mean_top_prob")}
        if t is not None:
            extra.update(ms=t, table_ms=summary.get("derived_latency_ms"))
            if kind == "flops_searched":  # a FLOPs search does not report it: the table's sum of its arch
                extra["table_ms"] = round(args.latency_table.budget_table(net).exact(encode(net, arch)), 6)
        tasks.append((budget, kind, seed, arch, extra))

    def work(task):
        budget, kind, seed, arch, extra = task
        acc, flops, params = score(arch, args)
        row = {
            "budget": budget,
            "kind": kind,
            "seed": seed,
            "mflops": round(flops, 4),
            "mparams": round(params, 5),
            "acc": round(acc, 2),
            **extra,
        }
        print(json.dumps(row), flush=True)
        return row

    # each run is a subprocess with --threads torch threads; --jobs of them at a time
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(work, tasks))

    with open(os.path.join(args.out, "search_quality.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    plot(rows, os.path.join(args.out, "search_quality.png"), "ms" if args.cost == "latency" else "mflops")
    ok = print_verdicts(rows, args)
    if args.cost == "latency" and args.flops_budgets:
        print_flops_comparison(rows, args)
    print(
        f"({(time.time() - t0) / 60:.1f} min; rows in {args.out}/search_quality.jsonl, plot "
        f"{args.out}/search_quality.png)"
    )
    return 0 if ok else 1


def print_verdicts(rows, args) -> bool:
    """Per budget: the random median / p75 / best beside the searched accuracies; whether the
    searched median reaches the random 75th percentile."""
    unit = "ms (measured)" if args.cost == "latency" else "MFLOPs (exact)"
    print(
        f"\n{args.space}: {args.random} random architectures per budget (uniform per choice, {unit} within "
        f"+-{100 * args.tolerance:g}%) vs the search with seeds {args.seeds}; every architecture trained "
        f"{args.train_epochs} epochs from scratch (seeds {args.train_seeds}), top-1 on 1,000 held-out digits"
    )
    print(
        f"{'budget':>7} {'random median':>14} {'random p75':>11} {'random best':>12} {'searched median':>16} "
        f"{'searched':>22}  verdict"
    )
    ok = True
    for budget in args.budgets:
        rnd = [r["acc"] for r in rows if r["budget"] == budget and r["kind"] == "random"]
        src = [r for r in rows if r["budget"] == budget and r["kind"] == "searched"]
        med, p75 = statistics.median(rnd), percentile(rnd, 75)
        if not src:
            print(f"{budget:>7g} {med:>14.2f} {p75:>11.2f} {max(rnd):>12.2f} {'-':>16} {'-':>22}  (no search)")
            continue
        accs = [r["acc"] for r in src]
        verdict = "searched median >= random p75" if statistics.median(accs) >= p75 else "BELOW random p75"
        ok &= statistics.median(accs) >= p75
        print(
            f"{budget:>7g} {med:>14.2f} {p75:>11.2f} {max(rnd):>12.2f} {statistics.median(accs):>16.2f} "
            f"{' '.join(f'{a:.2f}' for a in accs):>22}  {verdict}"
        )
        if args.cost == "latency":
            rnd_ms = " ".join(f"{r['ms']:.4f}" for r in rows if r["budget"] == budget and r["kind"] == "random")
            src_ms = " ".join(f"{r['ms']:.4f}" for r in src)
            table_ms = " ".join(f"{r['table_ms']:.4f}" for r in src)
            print(f"{'':>7} measured ms: random {rnd_ms}; searched {src_ms} (by the table {table_ms})")
    return ok


def print_flops_comparison(rows, args) -> None:
    """Per ms budget: the FLOPs-searched architecture whose measured latency is closest, beside the
    latency-searched ones: accuracy and accuracy per millisecond."""
    flops_rows = [r for r in rows if r["kind"] == "flops_searched"]
    print("\nFLOPs search vs latency search at the same measured latency (accuracy per ms = top-1 % / ms):")
    for budget in args.budgets:
        src = [r for r in rows if r["budget"] == budget and r["kind"] == "searched"]
        lat_acc, lat_ms = statistics.median(r["acc"] for r in src), statistics.median(r["ms"] for r in src)
        # nearest to what the latency-searched ones measured in this run (not to the budget: the machine's
        # speed when the table was built and now may differ; both sides were timed together)
        near = min(flops_rows, key=lambda r: abs(r["ms"] - lat_ms))
        flops = f"{near['budget']:g} MFLOPs target, seed {near['seed']}, {near['mflops']:.3f} MFLOPs"
        print(
            f"  {budget:g} ms: latency-searched median {lat_acc:.2f}% at {lat_ms:.4f} ms "
            f"({lat_acc / lat_ms:.0f} %/ms); the FLOPs-searched one nearest in latency ({flops}) "
            f"{near['acc']:.2f}% at {near['ms']:.4f} ms ({near['acc'] / near['ms']:.0f} %/ms; by the table "
            f"{near['table_ms']:.4f} ms, the latency-searched {statistics.median(r['table_ms'] for r in src):.4f})"
        )


if __name__ == "__main__":
    sys.exit(main())
