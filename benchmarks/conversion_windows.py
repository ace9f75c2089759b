#!/usr/bin/env python
"""Which conversion holds a model's measurement still from one window of minutes to the next? The
``SEARCH.COST.LATENCY_VERIFY`` loop measures a derived model in one window and the user (or
benchmarks/latency_budget.py) in another; both divide by a drift, now / at build, of some programs of
the table timed in the same rounds. This times the table's probes and ``--models`` calibration models
spread over the space (their build-time timings are in the table) in ``--bursts`` bursts of
``--rounds`` interleaved rounds, ``--gap`` seconds apart, and scores each calibration model, converted
each way, by how far its converted level moves between bursts:

    python benchmarks/conversion_windows.py --bursts 24 --models 16 --neighbour alternate   # ~15 min

Conversions: ``own size`` (the model probe of its input size, ``drift_at_size``: the loop with
``LATENCY_VERIFY_REFERENCES 0``), ``probes' mean`` (the model probes' geometric mean, the table's
drift), ``models`` (the model probes and ``--references`` of the other calibration models timed,
spread over them by parameters, ``models_drift``: the loop's default with 8), ``unconverted``. Per
conversion, over the calibration models: the median and largest standard deviation of the converted
log-level over the bursts, and the 50th/90th/99th percentile and largest change between two bursts at
least ``--apart`` seconds apart. ``--neighbour alternate`` runs a second process streaming 128 MB
arrays on the other core during every other burst (what another tenant does to a cloud machine).
Run it alone (1 thread).
"""

import argparse
import itertools
import math
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mobile_cv.atomic_files import atomic_write_json  # noqa: E402
from mobile_cv.errors import UserError  # noqa: E402
from mobile_cv.latency import LatencyTable  # noqa: E402
from mobile_cv.latency.measure import ModelSpec, compile_programs, example_of, time_interleaved  # noqa: E402
from mobile_cv.latency.measure import summarize_samples as summarize  # noqa: E402
from mobile_cv.latency.probes import drift_at_size, drift_of_ratios, probe_programs  # noqa: E402
from mobile_cv.latency.runtimes import load_runner, set_threads  # noqa: E402
from mobile_cv.latency.verify import models_drift, spread_by_params, spread_calibration  # noqa: E402

CONVERSIONS = ("own size", "probes' mean", "models", "unconverted")


# a neighbour: copies between two 128 MB arrays until stopped (numpy only: it starts in a moment)
NEIGHBOUR = "import numpy as np\na, b = np.ones(16 * 2**20), np.empty(16 * 2**20)\nwhile True:\n    np.copyto(b, a)\n"


def converted(data, stat, bursts, models, k):
    """Per calibration model and conversion: the log of measured / factor in every burst."""
    rows, out = data["calibration"]["models"], {}
    for j in models:
        size = rows[j]["arch"]["input_size"]
        others = spread_by_params(rows, [i for i in models if i != j], k)
        series = {c: [] for c in CONVERSIONS}
        for b in bursts:
            ratios, ms = b["probes"], b["models"][j]
            refs = [b["models"][i] / rows[i][stat] for i in others]
            series["own size"].append(math.log(ms / rows[j][stat] / drift_at_size(ratios, size)))
            series["probes' mean"].append(math.log(ms / rows[j][stat] / drift_of_ratios(ratios)))
            series["models"].append(math.log(ms / rows[j][stat] / models_drift(ratios, refs)))
            series["unconverted"].append(math.log(ms / rows[j][stat]))
        out[j] = series
    return out


def quantile(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def time_bursts(args, d, models):
    """``--bursts`` bursts of the probes and ``models``: per burst its start, whether the neighbour ran,
    the probes' now / at build and each model's milliseconds (the table's statistic of the rounds)."""
    rows = d["calibration"]["models"]
    specs = {f"probe:{k}": v for k, v in probe_programs(d).items()}
    specs.update({f"calibration:{j}": ModelSpec.of(rows[j]["arch"], d["num_classes"], d["in_chans"]) for j in models})
    compiled = compile_programs(specs, d["runtime"], d["int8"], cache_dir=args.cache)
    set_threads(d["runtime"], d["threads"])
    runners = {k: load_runner(d["runtime"], compiled[k], example_of(s), d["threads"]) for k, s in specs.items()}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    bursts = []
    for n in range(args.bursts):
        noisy = args.neighbour == "alternate" and n % 2 == 1
        neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env=env) if noisy else None
        if neighbour:
            time.sleep(1.0)
        t0 = time.time()
        samples = time_interleaved(runners, args.rounds, 2)
        if neighbour:
            neighbour.kill()
            neighbour.wait()
        ms = {k: summarize(v)[args.stat] for k, v in samples.items()}
        probes = {k: ms[f"probe:{k}"] / v[args.stat] for k, v in d["probes"].items()}
        bursts.append(
            {"t": t0, "neighbour": noisy, "probes": probes, "models": {j: ms[f"calibration:{j}"] for j in models}}
        )
        note = " (neighbour)" if noisy else ""
        print(f"burst {n + 1}/{args.bursts}{note}: drift {drift_of_ratios(probes):.3f}", flush=True)
        if args.gap and n + 1 < args.bursts:
            time.sleep(args.gap)
    return bursts


def score(args, d, bursts, models):
    """Print and return, per conversion, the spread of the converted levels and their changes."""
    rows = d["calibration"]["models"]
    series = converted(d, args.stat, bursts, models, args.references)
    t = [b["t"] for b in bursts]
    pairs = [(a, b) for a, b in itertools.combinations(range(len(bursts)), 2) if abs(t[b] - t[a]) >= args.apart]
    sizes = [rows[j]["mparams"] for j in models]
    print(
        f"\n{args.table}: {len(models)} calibration models ({min(sizes):.2f}-{max(sizes):.2f} M params), "
        f"{args.bursts} bursts of {args.rounds} rounds over {(t[-1] - t[0]) / 60:.1f} min, {len(pairs)} pairs of "
        f"bursts {args.apart:g} s or more apart; 'models': the model probes and {args.references} other models"
    )
    head = " ".join(f"{q:>6}" for q in ("p50", "p90", "p99", "max"))
    print(f"{'conversion':>14} {'sd median':>10} {'sd max':>7}   change between bursts: {head}")
    scores = {}
    for c in CONVERSIONS:
        sds = [statistics.pstdev(s[c]) for s in series.values()]
        changes = [abs(s[c][a] - s[c][b]) for s in series.values() for a, b in pairs]
        scores[c] = {"sd_median": statistics.median(sds), "sd_max": max(sds)}
        if changes:
            scores[c].update(p50=quantile(changes, 0.5), p90=quantile(changes, 0.9), p99=quantile(changes, 0.99))
            scores[c]["max"] = max(changes)
        cells = " ".join(f"{100 * scores[c].get(q, float('nan')):>5.2f}%" for q in ("p50", "p90", "p99", "max"))
        print(f"{c:>14} {100 * scores[c]['sd_median']:>9.2f}% {100 * scores[c]['sd_max']:>6.2f}%   {'':>23}{cells}")
    return scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", default="configs/latency/fbnetv2_f_space_executorch.json")
    p.add_argument("--bursts", type=int, default=24)
    p.add_argument("--rounds", type=int, default=20, help="interleaved rounds per burst")
    p.add_argument("--gap", type=float, default=0.0, help="seconds between bursts")
    p.add_argument("--models", type=int, default=16, help="calibration models spread over the space")
    p.add_argument("--references", type=int, default=8, help="other calibration models in 'models'")
    p.add_argument("--apart", type=float, default=300.0, help="seconds between two bursts compared")
    p.add_argument("--neighbour", choices=("none", "alternate"), default="none")
    p.add_argument("--cache", help="keep exported programs here")
    p.add_argument("--json", help="write every burst's timings and the scores here")
    args = p.parse_args()
    if args.bursts < 2 or args.rounds < 1 or args.gap < 0 or args.apart < 0:
        p.error(
            f"--bursts {args.bursts} --rounds {args.rounds} --gap {args.gap} --apart {args.apart}: 2 or more "
            "bursts of 1 or more rounds, gaps and --apart 0 or more seconds"
        )
    if not 2 <= args.models <= 64 or not 1 <= args.references < args.models:
        p.error(f"--models {args.models} --references {args.references}: 2-64 models, 1 to models - 1 references")
    if args.json and (os.path.isdir(args.json) or not os.path.isdir(os.path.dirname(os.path.abspath(args.json)))):
        p.error(f"--json {args.json}: a file in an existing folder (the results are written there at the end)")
    try:
        table = LatencyTable.load(args.table)
    except UserError as e:
        sys.exit(str(e))
    d, args.stat = table.data, table.stat
    rows = d.get("calibration", {}).get("models", [])
    if not d.get("probes") or not rows or "mparams" not in rows[0]:
        sys.exit(f"{args.table}: no probes or calibration models to convert by (a table built before them): rebuild it")
    models = spread_calibration(d, args.models)
    bursts = time_bursts(args, d, models)
    scores = score(args, d, bursts, models)
    if args.json:
        atomic_write_json(args.json, {"table": args.table, "models": models, "bursts": bursts, "scores": scores})


if __name__ == "__main__":
    main()
