#!/usr/bin/env python
"""Is a budget asked a budget met? Latency-budgeted searches of a space at three budgets, each
derived model exported whole by tools/export.py and timed in the table's runtime, against the budget.

    python benchmarks/latency_budget.py --table configs/latency/fbnetv2_f_space_executorch.json \\
        --out output/latency_budget                       # 3 searches of 2 epochs on a tiny generated ImageFolder

For each budget (default: the 15th, 50th and 85th percentile of the table's prediction over 200
random architectures of the space: spread over where the space's architectures lie), ``tools/search.py``
runs ``--config`` (default configs/search_imagenet_latency.yaml) with SEARCH.COST.TARGET the budget,
``--epochs`` epochs (the first half warm-up) of ``--images`` images on a generated ImageFolder with
the table's classes (noise images: the budget, not the accuracy, is what is measured),
SEARCH.COST.LATENCY_CHECK off (the probes are timed here instead) and SEARCH.COST.LATENCY_VERIFY
``--verify`` (default retarget: the search times what it derives and derives again at a budget
scaled by the miss; its steps are printed; off: the table alone). Each derived
``arch_def.json`` is exported by ``tools/export.py --format executorch`` as a user would, then every
``.pte`` and the table's probes are timed together in interleaved rounds (1 thread, batch 1). The
factor the search's loop converts by (``--verify-references`` N: the mean now / when the table was built of
the table's model probes and N calibration models spread over the space, timed in the same rounds,
``models_drift``; 0: the model probe of the derived model's input size, ``drift_at_size``) turns a
budget in the table's milliseconds into this machine's today: ``measured / (budget x factor) - 1`` is
the miss, printed per budget with the table's own prediction of the derived model and the misses by
the other two conversions (its size's probe; the model probes' mean). Run it alone. Finished searches and exports in
``--out`` are reused (delete the folder to redo them).
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mobile_cv.config import get_cfg  # noqa: E402
from mobile_cv.export.to_executorch import LoadedMethod  # noqa: E402
from mobile_cv.latency import LatencyTable  # noqa: E402
from mobile_cv.latency.measure import (  # noqa: E402
    ModelSpec,
    compile_programs,
    example_of,
    time_interleaved,
)
from mobile_cv.latency.measure import summarize_samples as summarize  # noqa: E402
from mobile_cv.latency.probes import drift_at_size, drift_of_ratios, old_table_probes, probe_programs  # noqa: E402
from mobile_cv.latency.runtimes import load_runner, set_threads  # noqa: E402
from mobile_cv.latency.verify import describe_steps, models_drift, spread_calibration  # noqa: E402
from mobile_cv.search import build_supernet  # noqa: E402
from mobile_cv.search.budget import sample_uniform  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_image_folder(root: str, classes: int, per_class: int = 3) -> str:
    """ROOT/train/<class>/*.png and ROOT/val/<class>/*.png of small noise images, ``classes`` classes
    (the table's classifier), 3 train images each (the weight split needs 2, the alpha split 1); the search
    reads ``--images`` of them per epoch. Made once."""
    from PIL import Image

    if os.path.isdir(os.path.join(root, "val")):
        return root
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 1)):
        for c in range(classes):
            folder = os.path.join(root, split, f"c{c:04d}")
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
                    os.path.join(folder, f"{i}.png")
                )
    return root


def default_budgets(table, net, n: int = 200):
    """The 15th, 50th and 85th percentile of the table's latency over ``n`` random architectures."""
    budget = table.budget_table(net)
    batch = sample_uniform(net, n, torch.Generator().manual_seed(7))
    values = sorted(budget.exact({k: int(v[j]) for k, v in batch.items()}) for j in range(n))
    return [round(values[int(q * (n - 1))], 3) for q in (0.15, 0.5, 0.85)]


def run(cmd, log):
    with open(log, "w") as f:
        p = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.exit(f"failed (exit {p.returncode}): {' '.join(cmd)}; see {log}")


def search_and_export(args, table_path, budget, data_root):
    out = os.path.join(args.out, f"search_{budget:g}ms")
    if not os.path.isfile(os.path.join(out, "search.json")):
        cmd = [sys.executable, "tools/search.py", "--config-file", args.config, "DATA.ROOT", data_root]
        cmd += [
            "DATA.NUM_WORKERS",
            "0",
            "SEARCH.EPOCHS",
            str(args.epochs),
            "SEARCH.WARMUP_EPOCHS",
            str(args.epochs // 2),
        ]
        cmd += ["SEARCH.BATCH_SIZE", str(args.batch), "DATA.LIMIT", str(args.images)]
        cmd += ["SEARCH.COST.LATENCY_TABLE", table_path]
        cmd += ["SEARCH.COST.TARGET", str(budget), "SEARCH.COST.LATENCY_CHECK", "off", "OUTPUT_DIR", out]
        cmd += ["SEARCH.COST.LATENCY_VERIFY", args.verify]
        cmd += ["SEARCH.COST.LATENCY_VERIFY_REFERENCES", str(args.verify_references)]
        print(f"searching at {budget:g} ms: {out}", flush=True)
        run(cmd, os.path.join(args.out, f"search_{budget:g}ms.log"))
    summary = json.load(open(os.path.join(out, "search.json")))
    folder = os.path.join(out, "export")
    found = [f for f in os.listdir(folder) if f.endswith(".pte")] if os.path.isdir(folder) else []
    if not found:
        cmd = [sys.executable, "tools/export.py", os.path.join(out, "arch_def.json"), "--format", "executorch"]
        cmd += ["--out", folder]
        run(cmd, os.path.join(args.out, f"export_{budget:g}ms.log"))
        found = [f for f in os.listdir(folder) if f.endswith(".pte")]
    return summary, os.path.join(folder, found[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", default="configs/latency/fbnetv2_f_space_executorch.json")
    p.add_argument("--config", default="configs/search_imagenet_latency.yaml")
    p.add_argument("--budgets", type=float, nargs="+", help="ms (default: three spread over the space)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--images", type=int, default=32, help="images per split and epoch (DATA.LIMIT)")
    p.add_argument("--rounds", type=int, default=60, help="interleaved timing rounds (as LATENCY_VERIFY_ROUNDS)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--tolerance", type=float, default=0.07, help="the miss allowed (fraction of the budget)")
    p.add_argument(
        "--verify",
        choices=("retarget", "off"),
        default="retarget",
        help="SEARCH.COST.LATENCY_VERIFY of the searches (off: the table's prediction alone derives)",
    )
    p.add_argument(
        "--verify-references",
        type=int,
        default=get_cfg().SEARCH.COST.LATENCY_VERIFY_REFERENCES,
        help="SEARCH.COST.LATENCY_VERIFY_REFERENCES of the searches, and what the misses here convert by "
        "(default %(default)s calibration models spread over the space with the model probes; 0: its size's probe)",
    )
    p.add_argument("--out", default="output/latency_budget")
    args = p.parse_args()
    if args.rounds < 1 or args.warmup < 0:
        p.error(f"--rounds {args.rounds} --warmup {args.warmup}: at least 1 round and 0 or more warm-up rounds")
    if not 0 <= args.verify_references <= 64:
        p.error(f"--verify-references {args.verify_references}: 0 (its size's model probe) to 64 calibration models")
    os.makedirs(args.out, exist_ok=True)
    table = LatencyTable.load(args.table)
    d = table.data
    net = build_supernet(d["space"], num_classes=d["num_classes"], in_chans=d["in_chans"])
    budgets = args.budgets or default_budgets(table, net)
    print(f"table {args.table} ({d['space']}, {d['runtime']}, {d['threads']} thread(s)); budgets {budgets} ms")
    data_root = make_image_folder(os.path.join(args.out, "data"), d["num_classes"])
    done = [search_and_export(args, os.path.abspath(args.table), b, os.path.abspath(data_root)) for b in budgets]

    probes = d.get("probes") or old_table_probes(d)
    specs = {f"probe:{k}": v for k, v in probe_programs({**d, "probes": probes}).items()}
    # beside the probes: the calibration models the searches' loops converted by (the same spread set)
    rows = d.get("calibration", {}).get("models", [])
    refs = spread_calibration(d, args.verify_references)
    for j in refs:
        specs[f"calibration:{j}"] = ModelSpec.of(rows[j]["arch"], d["num_classes"], d["in_chans"])
    compiled = compile_programs(specs, d["runtime"], d["int8"])
    set_threads(d["runtime"], d["threads"])
    runners = {k: load_runner(d["runtime"], compiled[k], example_of(s), d["threads"]) for k, s in specs.items()}
    for b, (result, pte) in zip(budgets, done):
        size = result["input_size"]
        method = LoadedMethod(pte)
        x = (torch.randn(1, d["in_chans"], size, size, generator=torch.Generator().manual_seed(0)),)
        runners[f"model:{b}"] = lambda m=method, x=x: m.execute(x)
    samples = time_interleaved(runners, args.rounds, args.warmup)
    # every program summarised by the table's statistic of its rounds, as the table's own timings are
    med = {k: summarize(v)[table.stat] for k, v in samples.items()}
    ratios = {name: med[f"probe:{name}"] / p[table.stat] for name, p in probes.items()}
    ref_ratios = [med[f"calibration:{j}"] / rows[j][table.stat] for j in refs]
    drift = drift_of_ratios(ratios)
    many = models_drift(ratios, ref_ratios) if refs else float("nan")
    print(f"drift by the table's probes: {drift:.3f} ({', '.join(f'{k} {v:.3f}' for k, v in ratios.items())})")
    if refs:
        print(
            f"x factor: the budget times {many:.3f}, the drift of the model probes and {len(refs)} calibration models "
            f"spread over the space ({min(ref_ratios):.3f}-{max(ref_ratios):.3f}), as the searches' loops convert"
        )
    else:
        print("x factor: the budget times the model probe of the derived model's input size, as the loops convert")
    print(f"measured: the {table.statistic} of each program's {args.rounds} rounds (the table entries' statistic)")
    print(
        f"{'budget ms':>10} {'x factor':>8} {'by table':>9} {'measured':>9} {'IQR':>15} {'miss':>7}  input size, "
        f"M params; the miss by its size's probe, by the model probes' mean"
    )
    misses, by_other = [], []
    for b, (result, _) in zip(budgets, done):
        q = sorted(samples[f"model:{b}"])
        at_size = drift_at_size(ratios, result["input_size"])  # the model probe of its input size
        factor = many if refs else at_size
        miss = med[f"model:{b}"] / (b * factor) - 1
        misses.append(miss)
        other = {"own_size": med[f"model:{b}"] / (b * at_size) - 1, "probes_mean": med[f"model:{b}"] / (b * drift) - 1}
        by_other.append(other)
        print(
            f"{b:>10.3f} {b * factor:>8.3f} {result['derived_latency_ms']:>9.3f} {med[f'model:{b}']:>9.3f} "
            f"{q[len(q) // 4]:>7.3f}-{q[3 * len(q) // 4]:.3f} {100 * miss:>+6.1f}%  {result['input_size']}, "
            f"{result['derived_params_m']:.2f}; {100 * other['own_size']:+.1f}%, {100 * other['probes_mean']:+.1f}%"
        )
    for b, (result, _) in zip(budgets, done):
        for line in describe_steps(result["latency_verify"]) if "latency_verify" in result else []:
            print(f"{b:g} ms: {line}")
    ok = all(abs(m) <= args.tolerance for m in misses)
    print(
        f"{'every' if ok else 'not every'} derived model within +-{100 * args.tolerance:.0f}% of its budget after the "
        f"drift correction (largest miss {100 * max(misses, key=abs):+.1f}%)"
    )
    with open(os.path.join(args.out, "latency_budget.json"), "w") as f:
        steps = [result.get("latency_verify") for result, _ in done]
        record = {"drift": drift, "probes": ratios, "budgets": budgets, "misses": misses, "ok": ok}
        record.update(models_drift=many if refs else None, references=refs, reference_ratios=ref_ratios)
        record["by_other"] = by_other
        json.dump({**record, "verify": args.verify, "verify_steps": steps}, f, indent=1)


if __name__ == "__main__":
    main()
