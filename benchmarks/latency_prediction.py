#!/usr/bin/env python
"""Does a latency table predict whole models on this machine, today? Random architectures of a
space (none from the table's calibration set), each exported whole and timed in the table's runtime,
against the table's prediction, with the table's probes and the models' own blocks timed in the
same interleaved rounds.

    python benchmarks/latency_prediction.py \\
        --table configs/latency/fbnetv2_f_space_executorch.json --n 30 --resolution 128 \\
        --old-table benchmarks/tables_v1/fbnetv2_f_space_executorch.json \\
        --table configs/latency/fbnetv2_f_space_executorch.json --n 30 --resolution 224 \\
        --cache output/program_cache --json output/latency_prediction.json --plot docs/images/latency_prediction.png

Per ``--table`` (its space, classes, runtime, int8 and threads are the table's), printed and in ``--json``:

(a) ``mape``, ``spearman``, ``within_10``: the stored table as is (its whole-model prediction:
    call cost + correction of the blocks' sum, docs/dmaskingnas.md#latency-as-a-search-cost);
(b) ``drift``: the table's probes timed now / at build (geometric mean of its whole-model probes,
    or of its block probes for a table without any: ``in_drift``; per probe in ``probes``);
(c) ``mape_corrected``, ``spearman_corrected``, ``within_10_corrected``: the prediction times the drift
    at the model's input size (its own size's model probe where the table has one: ``drift_at_size``;
    per model ``drift``);
(d) ``mape_same_run``, ``spearman_same_run``, ``within_10_same_run``: the method under the same
    conditions: every block of every evaluated model timed now, in the same rounds as the whole
    models, added up and corrected as the table does (its scale on the blocks; its constant and
    per-parameter terms times the drift, being build-time milliseconds), then recalibrated as a
    table built now would be: times the factor by which the table's own model probe at the model's
    input size (a calibration model, never an evaluated one) measures now against the same
    prediction from its blocks timed now (``same_run_factors``, per input size). The correction was
    fitted at build; how blocks add up to a whole model moves with the machine's state (blocks and
    whole models drift apart, the probes show it). ``*_same_run_raw``: without that factor;
    ``*_same_run_refit``: the correction fitted again, its form chosen as a build chooses it, on
    ``--refit-models`` of the table's calibration models whose whole programs and blocks are timed in
    the same rounds (``correction_same_run_refit``): what a table built now would fit;
(e) ``mape_recalibrated``, ...: the stored table's block sums with the correction fitted again on
    those calibration models timed now (``correction_recalibrated``): what re-timing only the
    calibration set (minutes, not a rebuild) would give; the models' points in ``calibration_points``;
plus ``spearman_flops`` (FLOPs vs measured), ``mape_split_half``, ``spearman_split_half`` and
``within_10_split_half`` (the whole models' odd rounds against their even rounds: how closely, and
in which order, the timing alone reproduces itself at half the rounds; the ceiling a prediction
is held to) and, with ``--old-table`` (a table of the same space
built another way, e.g. before calibration), the same (a)-(c) for it (``old_*``), in the same run.
``models`` holds every point. ``--arch FILE`` (repeatable): a plain arch def of the space (e.g. a
search's ``arch_def.json``) timed in the same rounds as the draw, its every prediction's error on
one line beside the draw's mean (``given`` in ``--json``; not in the draw's figures): does the table
predict the architectures a search picks as well as random ones? ``--n`` architectures drawn
uniformly per choice (``--resolution`` fixes the input size of a resolution-searched space);
``--cache`` keeps the exported programs for the next run (the timing is redone every run).
Run it alone: 1 thread, nothing else running (``--export-only`` fills ``--cache`` beforehand, while
the machine is busy: the export is not timed).
"""

import argparse
import json
import os
import statistics
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import mobile_cv  # noqa: E402
from mobile_cv.errors import UserError  # noqa: E402
from mobile_cv.latency import LatencyTable  # noqa: E402
from mobile_cv.latency.calibration import Correction, describe_correction, fit_correction, smallness, table_l2_params  # noqa: E402
from mobile_cv.latency.configs import architecture_configs  # noqa: E402
from mobile_cv.latency.measure import TRIVIAL, ModelSpec, compile_programs, time_programs  # noqa: E402
from mobile_cv.latency.measure import summarize_samples as summary  # noqa: E402
from mobile_cv.latency.probes import drift_at_size, drift_of_ratios, old_table_probes, probe_programs  # noqa: E402
from mobile_cv.latency.runtimes import check_runtime  # noqa: E402
from mobile_cv.search import build_supernet  # noqa: E402
from mobile_cv.search.budget import BudgetTable, sample_uniform  # noqa: E402

MIN_REFIT_MODELS = 4  # the fewest calibration models (d) refitted and (e) are fitted on


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
    den = (sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b)) ** 0.5
    return cov / den if den else float("nan")


def spearman(a, b):
    return pearson(ranks(a), ranks(b))


def fidelity(predicted, measured):
    """``(mape %, Spearman, % within +-10%)`` of predictions against measurements."""
    errors = [abs(p - y) / y for p, y in zip(predicted, measured)]
    return (
        100 * statistics.mean(errors),
        spearman(predicted, measured),
        100 * sum(e <= 0.10 for e in errors) / len(errors),
    )


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


def calibration_index(net, row):
    """A calibration row's option indices in ``net`` (the space at every resolution): a table built
    at some resolutions only (``--resolutions 224``) records its models' indices without the
    resolution choice or with the index among its own sizes; the row's input size says which."""
    index = dict(row["index"])
    if "resolution" in net.choices:
        index["resolution"] = net.res_sizes.index(int(row["arch"]["input_size"]))
    return index


def draw_models(net, table, n, resolution, seed):
    """``n`` random architectures (uniform per choice), none of the table's calibration set."""
    rows = table.data.get("calibration", {}).get("models", [])
    seen = {tuple(sorted(calibration_index(net, r).items())) for r in rows}
    out, gen = [], torch.Generator().manual_seed(seed)
    for _ in range(100):
        batch = sample_uniform(net, n, gen)
        if resolution:
            batch["resolution"] = torch.full((n,), net.res_sizes.index(resolution))
        for j in range(n):
            index = {label: int(v[j]) for label, v in batch.items()}
            key = tuple(sorted(index.items()))
            if key not in seen:
                seen.add(key)
                out.append(index)
            if len(out) == n:
                return out
    sys.exit(f"{table.data['space']}: fewer than {n} architectures outside the calibration set")


def drift_of(probes, med, prefix, stat):
    """Per probe now / at build (at the statistic ``stat``), and their geometric mean over the drift
    probes (the blocks of an old table)."""
    ratios = {name: med[prefix + name] / p[stat] for name, p in probes.items()}
    return drift_of_ratios(ratios), ratios


def block_keys(net, index, specs):
    """The config keys of one architecture's blocks, their programs added to ``specs``."""
    configs = [c for _, c in architecture_configs(net, index)]
    specs.update((c.key, c) for c in configs)
    return [c.key for c in configs]


def blocks_now(med, keys):
    """The plain sum of blocks timed in this run (each less the call cost, as a table's entries)."""
    return sum(max(med[k] - med[TRIVIAL], 0.0) for k in keys)


def probe_model_blocks(net, data, probes, specs):
    """Per model probe (a calibration model): its calibration row and its blocks' config keys, the
    blocks' programs added to ``specs`` (for (d)'s recalibration)."""
    rows = data.get("calibration", {}).get("models", [])
    return {
        name: (rows[p["calibration"]], block_keys(net, calibration_index(net, rows[p["calibration"]]), specs))
        for name, p in probes.items()
        if p.get("kind") == "model"
    }


def calibration_programs(net, data, k, specs):
    """The first ``k`` models of the table's calibration set (their input sizes taken in turn), each
    with its blocks' config keys; their whole programs and their blocks' programs added to ``specs``
    (for the refitted (d) and (e))."""
    out = []
    for i, row in enumerate(data.get("calibration", {}).get("models", [])[:k]):
        keys = block_keys(net, calibration_index(net, row), specs)
        specs[f"calib:{i}"] = ModelSpec.of(row["arch"], data["num_classes"], data["in_chans"])
        out.append((row, keys))
    return out


def refit_points(table, net, models, calib, med):
    """(d) refitted and (e): the table's correction fitted again, its form chosen as a build chooses it
    (leave-one-out), on its calibration models timed in this run: on their blocks timed now (then applied
    to the evaluated models' blocks timed now: ``same_run_refit``), and on the table's stored block sums
    (then applied to the evaluated models' stored sums: ``recalibrated``, what re-timing only the
    calibration set would give). Returns the two corrections and the calibration models' points."""
    o_now, blocks_table, rows = med[TRIVIAL], table.blocks_table(net), [r for r, _ in calib]
    points = [
        {"size": int(r["arch"]["input_size"]), "mparams": r["mparams"], "small": r["small"]}
        | {"mparams_l2": r.get("mparams_l2", 0.0), "measured": med[f"calib:{i}"]}
        | {"blocks_now": blocks_now(med, keys), "blocks_stored": r["blocks_ms"]}
        for i, (r, keys) in enumerate(calib)
    ]
    y = [p["measured"] - o_now for p in points]
    mparams, small = [p["mparams"] for p in points], [p["small"] for p in points]
    # the L2 term is tried only where the table records each model's parameters within the L2
    l2s = [p["mparams_l2"] for p in points] if all("mparams_l2" in r for r in rows) else None
    c_now = fit_correction([p["blocks_now"] for p in points], mparams, y, small, l2s)
    c_stored = fit_correction([p["blocks_stored"] for p in points], mparams, y, small, l2s)
    for m in models:
        stored = blocks_table.exact(m["index"])
        m["same_run_refit"] = c_now.predict(o_now, m["blocks_now"], m["mparams"], m["small"], m["mparams_l2"])
        m["recalibrated"] = c_stored.predict(o_now, stored, m["mparams"], m["small"], m["mparams_l2"])
        m["blocks_stored"] = stored
    return c_now, c_stored, points


def same_run_points(table, models, probe_blocks, med, ratios):
    """(d) per model (``same_run_raw``, ``same_run``, ``blocks_now``) from the programs' summaries
    ``med`` of this run (the correction's millisecond terms converted by the probes' ``ratios`` at the
    model's size); returns the recalibration factor per input size."""
    c, o_now = table.correction, med[TRIVIAL]

    def predict(keys, mparams, small, mparams_l2, size):
        blocks = blocks_now(med, keys)
        weights_ms = c.ms_per_mparam(small) * mparams + c.per_l2_mparam_small * small * mparams_l2
        weights_ms += c.over_knot_ms(mparams, small)
        return o_now + drift_at_size(ratios, size) * (c.constant + weights_ms) + c.scale * blocks, blocks

    factors = {}  # per input size: the table's model probe now / its prediction from its blocks now
    for name, (row, keys) in probe_blocks.items():
        size = int(row["arch"]["input_size"])
        predicted_now, _ = predict(keys, row["mparams"], row["small"], row.get("mparams_l2", 0.0), size)
        factors[size] = med[f"probe:{name}"] / predicted_now
    for m in models:
        m["same_run_raw"], m["blocks_now"] = predict(m["blocks"], m["mparams"], m["small"], m["mparams_l2"], m["size"])
        m["same_run"] = m["same_run_raw"] * factors.get(m["size"], 1.0)
    return factors


def model_points(net, table, budget, old_budget, indices, specs, given=()):
    """Per architecture: its table predictions, FLOPs, parameters and blocks; its whole program and
    its blocks' programs added to ``specs``. The last ``len(given)`` indices are the ``--arch`` files
    (their points carry ``given``: the file)."""
    d, models = table.data, []
    l2_table = table_l2_params(d, BudgetTable(net, "params"))  # M params of the blocks within the L2 (term e)
    for j, index in enumerate(indices):
        arch = net.derive_arch(net.one_hot(index))
        model = mobile_cv.build_model(arch, num_classes=d["num_classes"], in_chans=d["in_chans"])
        flops, mparams = mobile_cv.count_flops_params(model, arch["input_size"], in_chans=d["in_chans"])
        m = {"index": index, "predicted": budget.exact(index), "flops": flops, "mparams": mparams}
        m["size"], m["small"] = arch["input_size"], smallness(arch["input_size"], max(d["resolutions"]))
        m["mparams_l2"] = l2_table.exact(index) if l2_table is not None else 0.0
        if old_budget is not None:
            m["old_predicted"] = old_budget.exact(index)
        if j >= len(indices) - len(given):
            m["given"] = given[j - (len(indices) - len(given))]
        models.append(m)
        specs[f"model:{j}"] = ModelSpec.of(arch, d["num_classes"], d["in_chans"])
        m["blocks"] = block_keys(net, index, specs)  # after the model: the programs' order as before
    return models


def old_table_result(old, old_path, old_probes, samples, models):
    """The old table's (a)-(c) on the same models, from its probes timed in the same run."""
    old_med = {k: summary(v)[old.stat] for k, v in samples.items() if k.startswith("old:")}
    old_drift, old_ratios = drift_of(old_probes, old_med, "old:", old.stat)
    for m in models:
        m["old_corrected"] = m["old_predicted"] * old_drift
    result = {"old_table": old_path, "old_drift": old_drift, "old_probes": old_ratios}
    models = [m for m in models if "given" not in m]  # the figures are the random draw's
    measured = [m["measured"] for m in models]
    for suffix, key in (("", "old_predicted"), ("_corrected", "old_corrected")):
        mape, rho, within = fidelity([m[key] for m in models], measured)
        result.update({f"old_mape{suffix}": mape, f"old_spearman{suffix}": rho, f"old_within_10{suffix}": within})
    return result


def prepare(args, path, old_path, n, resolution, seed):
    """The table, its space, the draw and every program the run times (``specs``), nothing compiled."""
    table = LatencyTable.load(path)
    d = table.data
    check_runtime(d["runtime"], d["int8"])
    net = build_supernet(d["space"], num_classes=d["num_classes"], in_chans=d["in_chans"])
    if resolution and "resolution" not in net.choices:
        sys.exit(f"{d['space']} does not search the resolution; drop --resolution")
    budget = table.budget_table(net)
    if args.export_only and d["runtime"] == "eager":
        sys.exit(f"--export-only: {path} is an eager table (its programs are built at load, not cached)")
    old = LatencyTable.load(old_path) if old_path else None
    if old is not None and old.data["space_digest"] != d["space_digest"]:
        sys.exit(f"--old-table {old_path} is a table of another space than {path}")
    old_budget = old.budget_table(net) if old is not None else None
    specs = {TRIVIAL: None}
    given = list(args.arch or [])
    indices = draw_models(net, table, n, resolution, seed) + [encode_file(net, f) for f in given]
    all_models = model_points(net, table, budget, old_budget, indices, specs, given)
    models = [m for m in all_models if "given" not in m]  # the random draw: every figure (a)-(e) is theirs
    if args.no_same_run:
        specs = {k: v for k, v in specs.items() if k == TRIVIAL or k.startswith("model:")}
    probes = d.get("probes") or old_table_probes(d)
    probe_blocks = {} if args.no_same_run else probe_model_blocks(net, d, probes, specs)
    calib = [] if args.no_same_run else calibration_programs(net, d, args.refit_models, specs)
    specs.update((f"probe:{k}", v) for k, v in probe_programs({**d, "probes": probes}).items())
    if old is not None:
        old_probes = old.data.get("probes") or old_table_probes(old.data)
        specs.update((f"old:{k}", v) for k, v in probe_programs({**old.data, "probes": old_probes}).items())
    return SimpleNamespace(**locals())


def evaluate(args, path, old_path, n, resolution, seed):
    p = prepare(args, path, old_path, n, resolution, seed)
    table, d, net, specs, probes, old = p.table, p.d, p.net, p.specs, p.probes, p.old
    all_models, models, given, probe_blocks, calib = p.all_models, p.models, p.given, p.probe_blocks, p.calib
    t0 = time.perf_counter()
    compiled = compile_programs(specs, d["runtime"], d["int8"], args.jobs, args.cache)
    t1 = time.perf_counter()
    if args.export_only:
        print(f"{path}: {len(specs)} programs in {args.cache} ({t1 - t0:.0f} s); nothing timed (--export-only)")
        return table, None
    samples = time_programs(specs, compiled, d["runtime"], d["threads"], args.rounds, args.warmup)
    # every program summarised by the table's statistic of its rounds (as the table's own entries are)
    med = {k: summary(v)[table.stat] for k, v in samples.items()}
    drift, ratios = drift_of(probes, med, "probe:", table.stat)
    for j, m in enumerate(all_models):
        q = summary(samples[f"model:{j}"])
        m["measured"], m["spread"], m["measured_median"] = med[f"model:{j}"], (q["q1"], q["q3"]), q["ms"]
        m["drift"] = drift_at_size(ratios, m["size"])  # its own input size's model probe (else the drift)
        m["corrected"] = m["predicted"] * m["drift"]
    factors = {} if args.no_same_run else same_run_points(table, all_models, probe_blocks, med, ratios)
    refits = refit_points(table, net, all_models, calib, med) if len(calib) >= MIN_REFIT_MODELS else None
    result = {"space": d["space"], "table": path, "resolution": resolution, "runtime": d["runtime"]}
    result.update(int8=d["int8"], threads=d["threads"], calibrated=table.calibrated)
    measured = [m["measured"] for m in models]
    for suffix, key in (
        ("", "predicted"),
        ("_corrected", "corrected"),
        ("_same_run", "same_run"),
        ("_same_run_raw", "same_run_raw"),
        ("_same_run_refit", "same_run_refit"),
        ("_recalibrated", "recalibrated"),
    ):
        if key in models[0]:
            mape, rho, within = fidelity([m[key] for m in models], measured)
            result.update({f"mape{suffix}": mape, f"spearman{suffix}": rho, f"within_10{suffix}": within})
    result.update(drift=drift, probes=ratios, spearman_flops=spearman([m["flops"] for m in models], measured))
    if factors:
        result["same_run_factors"] = {str(size): f for size, f in sorted(factors.items())}
    if refits is not None:
        result["refit_models"], result["call_now"] = len(calib), med[TRIVIAL]
        result["correction_same_run_refit"], result["correction_recalibrated"] = (c.to_dict() for c in refits[:2])
        result["calibration_points"] = refits[2]
    result["statistic"] = table.statistic
    noise = sorted(m["measured_median"] / m["measured"] for m in models)
    result["median_over_statistic"] = [noise[0], statistics.median(noise), noise[-1]]
    # the measurement against itself: the odd rounds' statistic against the even rounds' (each half as
    # long as the measurement the predictions meet), how well the timing alone ranks these models
    halves = [[summary(samples[f"model:{j}"][h::2])[table.stat] for j in range(len(models))] for h in (0, 1)]
    mape, rho, within = fidelity(halves[0], halves[1])
    result.update(mape_split_half=mape, spearman_split_half=rho, within_10_split_half=within)
    if old is not None:
        result.update(old_table_result(old, old_path, p.old_probes, samples, all_models))
    result["seconds"] = {"export": round(t1 - t0, 1), "timing": round(time.perf_counter() - t1, 1)}
    result["models"] = [{k: v for k, v in m.items() if k != "blocks"} for m in models]
    if given:
        result["given"] = [{k: v for k, v in m.items() if k != "blocks"} for m in all_models if "given" in m]
    return table, result


def report(table, r):
    d = table.data
    res = f" at {r['resolution']}px" if r["resolution"] else ""
    print(
        f"\n{d['space']}{res}: {len(r['models'])} random architectures (none in the calibration set), "
        f"{d['runtime']}{' int8' if d['int8'] else ''}, {d['threads']} thread(s); table {table.path} "
        f"({'calibrated' if table.calibrated else 'blocks only'}, {d['mode']}); export {r['seconds']['export']:.0f} s, "
        f"timing {r['seconds']['timing']:.0f} s"
    )
    cols = ["predicted", "corrected"] + (["same_run"] if "same_run" in r["models"][0] else [])
    cols += ["old_corrected"] if "old_table" in r else []
    head = {"predicted": "(a) table", "corrected": "(c) x drift", "same_run": "(d) same run"}
    head["old_corrected"] = "old (c)"
    print(f"{'MFLOPs':>8} {'M params':>8} {'measured':>9} {'IQR':>15} " + " ".join(f"{head[c]:>13}" for c in cols))
    for m in sorted(r["models"], key=lambda m: m["measured"]):
        iqr = f"{m['spread'][0]:.3f}-{m['spread'][1]:.3f}"
        cells = " ".join(f"{m[c]:>7.3f} {100 * (m[c] / m['measured'] - 1):>+4.0f}%" for c in cols)
        print(f"{m['flops']:>8.2f} {m['mparams']:>8.2f} {m['measured']:>9.4f} {iqr:>15} {cells}")

    def line(label, p, suffix=""):
        return (
            f"{label}: mean abs error {r[p + 'mape' + suffix]:.1f}%, Spearman {r[p + 'spearman' + suffix]:.3f}, "
            f"{r[p + 'within_10' + suffix]:.0f}% of models within +-10%"
        )

    print(line("(a) the table as stored", ""))
    probes = ", ".join(f"{k} {v:.3f}" for k, v in r["probes"].items())
    print(f"(b) drift by the table's probes: {r['drift']:.3f} (now / at build: {probes})")
    sized = any(k.endswith("px") and k.startswith("model") for k in r["probes"])
    print(
        line(
            "(c) after the drift correction" + (" (each model x its input size's model probe)" if sized else ""),
            "",
            "_corrected",
        )
    )
    if "mape_same_run" in r:
        factors = ", ".join(f"{k}px {v:.3f}" for k, v in r.get("same_run_factors", {}).items()) or "none"
        print(line("(d) the method in this run (their blocks timed now, corrected as the table)", "", "_same_run_raw"))
        print(line(f"(d) recalibrated on the table's model probes timed now ({factors})", "", "_same_run"))
    if "mape_same_run_refit" in r:
        k = r["refit_models"]
        for key, label in (
            ("same_run_refit", f"(d) refitted on {k} of its calibration models, their blocks timed now"),
            ("recalibrated", f"(e) its stored blocks, the correction refitted on {k} calibration models timed now"),
        ):
            c = r[f"correction_{key}"]
            print(line(label, "", f"_{key}"))
            print(f"      {describe_correction(Correction.from_dict(c))} (leave-one-out {c['loo_mape']:.1f}%)")
    if "old_table" in r:
        print(line(f"old table {r['old_table']} as stored", "old_"))
        print(line(f"old table after its probes' drift {r['old_drift']:.3f}", "old_", "_corrected"))
    print(f"FLOPs vs measured: Spearman {r['spearman_flops']:.3f}")
    print(line("the measurement against itself (odd rounds vs even rounds, each half the rounds)", "", "_split_half"))
    lo, mid, hi = r["median_over_statistic"]
    print(
        f"measured = the {r['statistic']} of each program's rounds (as the table's entries); the whole models' "
        f"median / {r['statistic']}: {mid:.3f} ({lo:.3f}..{hi:.3f}): the machine's noise in this run"
    )
    weight_mb = [4 * m["mparams"] / (4 if d["int8"] else 1) for m in r["models"]]
    print(
        f"weights {min(weight_mb):.2f}..{max(weight_mb):.2f} MB ({'int8' if d['int8'] else 'fp32'}); the CPU's largest "
        f"cache {last_level_cache_mb():.0f} MB; correction of the table: {table.correction.form or 'none'}"
    )


def plot(results, path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(results), 4.6))
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    for ax, r in zip(axes, results):
        m = r["models"]
        y = [v["measured"] for v in m]
        series = [("corrected", "this table x drift", "o")]
        if "old_corrected" in m[0]:
            series.append(("old_corrected", "old table x its drift", "x"))
        xs = [v[k] for k, _, _ in series for v in m]
        lo, hi = min(xs + y) * 0.9, max(xs + y) * 1.1
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="measured = predicted")
        ax.fill_between([lo, hi], [lo / 1.1, hi / 1.1], [lo / 0.9, hi / 0.9], color="k", alpha=0.06, label="+-10%")
        for key, label, marker in series:
            ax.scatter([v[key] for v in m], y, s=16, marker=marker, label=label)
        res = f" at {r['resolution']}px" if r["resolution"] else ""
        title = f"{r['space']}{res}, {r['runtime']}{' int8' if r['int8'] else ''}, {r['threads']} thr\n"
        title += f"(c) error {r['mape_corrected']:.1f}%, Spearman {r['spearman_corrected']:.3f}"
        if "old_table" in r:
            title += f"; old table {r['old_mape_corrected']:.1f}%, {r['old_spearman_corrected']:.3f}"
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("predicted (ms)")
        ax.set_ylabel("measured, whole model (ms)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def encode_file(net, path):
    """The space's option indices of the plain arch def in ``path`` (JSON, e.g. a search's
    ``arch_def.json``); a file that is missing or not in the space is one line naming it."""
    try:
        with open(path) as f:
            arch = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"--arch {path}: cannot read it as a JSON arch def ({e})") from None
    try:
        return net.encode(arch)
    except UserError as e:
        raise UserError(f"--arch {path}: not an architecture of this table's space: {e}") from None


def report_given(r):
    """The ``--arch`` models, one line each: every prediction's error against its measurement, beside
    the random draw's mean signed error of the same prediction (the draw's bias)."""
    cols = ("predicted", "corrected", "same_run_raw", "same_run", "same_run_refit", "recalibrated")
    cols = [c for c in cols if c in r["given"][0]]
    head = {"predicted": "(a)", "corrected": "(c)", "same_run_raw": "(d) raw", "same_run": "(d)"}
    head |= {"same_run_refit": "(d) refit", "recalibrated": "(e)"}

    def bias(models, c):
        return 100 * statistics.mean(m[c] / m["measured"] - 1 for m in models)

    print("--arch models, timed in the same rounds; error of each prediction (predicted / measured - 1):")
    print(f"{'':>34} {'MFLOPs':>7} {'Mparams':>7} {'px':>4} {'measured':>8} " + " ".join(f"{head[c]:>9}" for c in cols))
    for m in r["given"]:
        name = m["given"] if len(m["given"]) <= 34 else "..." + m["given"][-31:]
        cells = " ".join(f"{100 * (m[c] / m['measured'] - 1):>+8.1f}%" for c in cols)
        print(f"{name:>34} {m['flops']:>7.1f} {m['mparams']:>7.2f} {m['size']:>4} {m['measured']:>8.3f} {cells}")
    cells = " ".join(f"{bias(r['models'], c):>+8.1f}%" for c in cols)
    mp = [m["mparams"] for m in r["models"]]
    print(f"{'the random draw, mean':>34} {'':>7} {min(mp):>3.1f}-{max(mp):<3.1f} {'':>4} {'':>8} {cells}")


def nth(values, i, default):
    """The i-th of a repeated flag's values, or ``default``."""
    return values[i] if values and i < len(values) else default


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", action="append", required=True, help="a latency table (repeat for several)")
    p.add_argument("--old-table", action="append", help="per --table: a table built another way to compare ('' none)")
    p.add_argument("--n", type=int, action="append", help="architectures per table (default 30)")
    p.add_argument("--resolution", type=int, action="append", help="input size per table (0: sampled)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--jobs", type=int, default=0, help="export worker processes (0: one per CPU core)")
    p.add_argument("--cache", help="keep exported programs here for the next run")
    p.add_argument(
        "--export-only",
        action="store_true",
        help="export every program into --cache and stop: a later run times them alone (export while the "
        "machine is busy, time when it is quiet)",
    )
    p.add_argument("--no-same-run", action="store_true", help="skip (d): do not time the models' blocks")
    p.add_argument(
        "--refit-models",
        type=int,
        default=24,
        help="time this many of the table's calibration models and their blocks too, and refit the "
        "correction on them: (d) refitted and (e) (0: skip; a table with fewer than 4 calibration models skips them)",
    )
    p.add_argument(
        "--arch",
        action="append",
        help="a plain arch def (JSON, e.g. a search's arch_def.json) of the space, timed beside every table's "
        "random draw and reported on its own line (repeat for several; not in the draw's figures)",
    )
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--plot", help="write the predicted-vs-measured plot here (PNG)")
    p.add_argument("--json", help="write every result and point here")
    args = p.parse_args()
    if args.export_only and not args.cache:
        p.error("--export-only keeps the programs in --cache DIR; give one")
    if args.cache and os.path.exists(args.cache) and not os.path.isdir(args.cache):
        p.error(f"--cache {args.cache} is a file, not a folder")
    if args.refit_models < 0 or 0 < args.refit_models < MIN_REFIT_MODELS:
        p.error(f"--refit-models {args.refit_models}: 0 (skip) or at least {MIN_REFIT_MODELS} (to fit a correction)")
    results = []
    for i, path in enumerate(args.table):
        try:
            table, r = evaluate(
                args, path, nth(args.old_table, i, ""), nth(args.n, i, 30), nth(args.resolution, i, 0), args.seed + i
            )
        except UserError as e:  # a table that is missing or wrong: its one line, not a traceback
            sys.exit(f"latency_prediction.py: {e}")
        if r is None:  # --export-only
            continue
        report(table, r)
        if "given" in r:
            report_given(r)
        results.append(r)
    if args.plot:
        plot(results, args.plot)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
