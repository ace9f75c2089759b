#!/usr/bin/env python
"""How far apart are repeated measurements of one model in the table's milliseconds? The
``SEARCH.COST.LATENCY_VERIFY`` loop times a derived model with the table's probes and divides by a
probe's now / at build; this times the same models that way ``--repeats`` times per setting
(``--rounds`` x ``--contexts``; the settings alternate, so they meet the same machine) and prints
each conversion's level and spread over the repeats. Contexts: ``alone``, each model in its own rounds
with the probes (as the loop times it); ``together``, every model in one set of rounds with the probes
and the ``--beside`` calibration models nearest each in parameters (as benchmarks/latency_budget.py
times them).

    python benchmarks/conversion_spread.py --arch output/latency_budget/search_2.59ms/arch_def.json \\
        --arch output/latency_budget/search_5.744ms/arch_def.json --repeats 6 --rounds 20 60   # ~8 min
    python benchmarks/conversion_spread.py --arch ... --repeats 4 --rounds 60 --contexts alone together

Per model and setting, over the repeats, the geometric mean, the standard deviation of the log
(``sd``) and largest / smallest of: ``models`` (measured / the mean now / at build of the model probes
and the ``--beside`` calibration models, ``models_drift``: what the loop converts by with
LATENCY_VERIFY_REFERENCES ``--beside``), ``own size`` (measured / the model probe of its input size, ``drift_at_size``:
what the loop converts by with no references), ``probes' mean`` (measured / the
geometric mean of the model probes, ``drift_of_ratios``) and ``measured`` (the model's own
milliseconds, unconverted). Each repeat is ``--rounds`` interleaved rounds of the probes and models
(2 warm-up rounds), summarised by the table's statistic, as the loop's step is. Run it alone (1 thread).
"""

import argparse
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.latency_prediction import encode_file  # noqa: E402
from mobile_cv.atomic_files import atomic_write_json  # noqa: E402
from mobile_cv.errors import UserError  # noqa: E402
from mobile_cv.latency import LatencyTable  # noqa: E402
from mobile_cv.latency.measure import ModelSpec, compile_programs, example_of, time_interleaved  # noqa: E402
from mobile_cv.latency.measure import summarize_samples as summarize  # noqa: E402
from mobile_cv.latency.probes import drift_at_size, drift_of_ratios, probe_programs  # noqa: E402
from mobile_cv.latency.runtimes import load_runner, set_threads  # noqa: E402
from mobile_cv.latency.verify import models_drift, spread_calibration  # noqa: E402
from mobile_cv.search import build_supernet  # noqa: E402

CONVERSIONS = ("models", "own size", "probes' mean", "measured")


def spread(values):
    logs = [math.log(v) for v in values]
    return math.exp(statistics.mean(logs)), statistics.stdev(logs), max(values) / min(values)


def programs(args, d):
    """The probes, the ``--beside`` calibration models spread over the space and the ``--arch`` models
    (with their input sizes). An ``--arch`` that is not a plain
    arch def of the table's space is one line naming it (before anything is exported or timed)."""
    specs = {f"probe:{k}": v for k, v in probe_programs(d).items()}
    net = build_supernet(d["space"], num_classes=d["num_classes"], in_chans=d["in_chans"])
    sizes = {}
    for path in args.arch:
        arch = net.derive_arch(net.one_hot(encode_file(net, path)))
        name = f"model:{path}"
        specs[name], sizes[name] = ModelSpec.of(arch, d["num_classes"], d["in_chans"]), int(arch["input_size"])
    rows = d.get("calibration", {}).get("models", [])
    for j in spread_calibration(d, args.beside):
        specs[f"calibration:{j}"] = ModelSpec.of(rows[j]["arch"], d["num_classes"], d["in_chans"])
    return specs, sizes


def measure(args, table, runners, sizes):
    """Per setting (rounds, context), per model, per conversion: one value per repeat."""
    stat, probes, rows = table.stat, table.data["probes"], table.data.get("calibration", {}).get("models", [])
    beside = {k: r for k, r in runners.items() if k.startswith(("probe:", "calibration:"))}
    settings = [(r, c) for r in args.rounds for c in args.contexts]
    values = {s: {n: {c: [] for c in CONVERSIONS} for n in sizes} for s in settings}

    def record(setting, name, samples):
        ratios = {n: summarize(samples[f"probe:{n}"])[stat] / probes[n][stat] for n in probes}
        measured = summarize(samples[name])[stat]
        beside_ms = {k: summarize(v)[stat] for k, v in samples.items() if k.startswith("calibration:")}
        refs = [ms / rows[int(k[len("calibration:") :])][stat] for k, ms in beside_ms.items()]
        row = values[setting][name]
        row["models"].append(measured / models_drift(ratios, refs))
        row["own size"].append(measured / drift_at_size(ratios, sizes[name]))
        row["probes' mean"].append(measured / drift_of_ratios(ratios))
        row["measured"].append(measured)

    for k in range(args.repeats):
        for rounds, context in settings:  # alternating: each setting meets the machine the others meet
            if context == "alone":
                for name in sizes:
                    record((rounds, context), name, time_interleaved({**beside, name: runners[name]}, rounds, 2))
            else:
                samples = time_interleaved(runners, rounds, 2)
                for name in sizes:
                    record((rounds, context), name, samples)
            print(f"repeat {k + 1}/{args.repeats}, {rounds} rounds {context} done", flush=True)
    return values


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", default="configs/latency/fbnetv2_f_space_executorch.json")
    p.add_argument("--arch", action="append", required=True, help="a plain arch def of the table's space (repeat)")
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--rounds", type=int, nargs="+", default=[20, 60])
    p.add_argument("--contexts", nargs="+", choices=("alone", "together"), default=["alone"])
    p.add_argument("--beside", type=int, default=8, help="calibration models spread over the space (0: none)")
    p.add_argument("--cache", help="keep exported programs here")
    p.add_argument("--json", help="write every repeat's conversions here")
    args = p.parse_args()
    if args.repeats < 2 or min(args.rounds) < 1:
        p.error(f"--repeats {args.repeats} --rounds {args.rounds}: --repeats must be >= 2 and every --rounds >= 1")
    if not 0 <= args.beside <= 64:
        p.error(f"--beside {args.beside}: 0 (none) to 64 calibration models")
    if args.json and (os.path.isdir(args.json) or not os.path.isdir(os.path.dirname(os.path.abspath(args.json)))):
        p.error(f"--json {args.json}: a file in an existing folder (the results are written there at the end)")
    try:
        table = LatencyTable.load(args.table)
        d = table.data
        if not d.get("probes"):
            raise UserError(f"{args.table} has no probes (a table built before probes): rebuild it")
        specs, sizes = programs(args, d)
    except UserError as e:  # a table or arch def that is missing or wrong: its one line, not a traceback
        sys.exit(str(e))
    compiled = compile_programs(specs, d["runtime"], d["int8"], cache_dir=args.cache)
    set_threads(d["runtime"], d["threads"])
    runners = {k: load_runner(d["runtime"], compiled[k], example_of(s), d["threads"]) for k, s in specs.items()}
    values = measure(args, table, runners, sizes)
    print(f"\n{args.table}: {args.repeats} repeats per setting, the {table.statistic} of each repeat's rounds")
    print("per conversion: geometric mean ms, sd of the log, largest / smallest")
    print(f"{'model':>40} {'size':>5} {'setting':>14} " + " ".join(f"{c:>24}" for c in CONVERSIONS))
    for name, size in sizes.items():
        for setting, by_model in values.items():
            cells = []
            for c in CONVERSIONS:
                mean, sd, ratio = spread(by_model[name][c])
                cells.append(f"{mean:>8.3f} {100 * sd:>7.1f}% {ratio:>7.3f}")
            print(f"{name[6:][-40:]:>40} {size:>5} {'%d %s' % setting:>14} " + " ".join(cells))
    if args.json:
        out = {f"{r} {c}": v for (r, c), v in values.items()}
        atomic_write_json(args.json, {"table": args.table, "statistic": table.statistic, "values": out})


if __name__ == "__main__":
    main()
