#!/usr/bin/env python
"""Does a table imported from a device's timings agree with a table built directly on the same
machine? And how far apart are two runs of the device runner (the timing noise)?

    python benchmarks/device_table_agreement.py --direct DIRECT.json --imported IMPORTED.json \\
        [--bundle DIR --timings A.json B.json]

Per pair: the ratio of every entry (block configurations, the call cost, the calibration models)
at the tables' statistic: median, p10-p90, and the mean of |ratio - 1|.
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mobile_cv.latency import LatencyTable  # noqa: E402


def entries(data, stat):
    out = {k: v[stat] for k, v in data["entries"].items()}
    out["call"] = data["overhead_ms"][stat]
    for j, m in enumerate(data.get("calibration", {}).get("models", [])):
        out[f"model{j}"] = m[stat]
    return out


def compare(name, a, b):
    keys = sorted(set(a) & set(b))
    r = sorted(a[k] / b[k] for k in keys)
    models = sorted(a[k] / b[k] for k in keys if k.startswith("model"))
    q = lambda v, p: v[int(p * (len(v) - 1))]  # noqa: E731
    spread = 100 * statistics.mean(abs(x - 1) for x in r)
    line = (
        f"{name}: {len(keys)} entries, ratio median {statistics.median(r):.3f} "
        f"(p10 {q(r, 0.1):.3f}, p90 {q(r, 0.9):.3f}), mean |ratio-1| {spread:.1f}%"
    )
    if models:
        line += f"; whole models ({len(models)}): median {statistics.median(models):.3f}, mean |ratio-1| " + (
            f"{100 * statistics.mean(abs(x - 1) for x in models):.1f}%"
        )
    print(line)


def samples_table(timings, manifest, stat):
    """A runner's timings as {key: statistic} (q1 or median of its rounds), for the run-to-run noise."""
    import torch

    names = {p["name"]: p["key"] for p in manifest["programs"]}
    out = {}
    for name, values in timings["samples"].items():
        t = torch.tensor(values, dtype=torch.float64)
        q = float(torch.quantile(t, 0.25 if stat == "q1" else 0.5))
        key = names[name]
        out["call" if key == "overhead" else key.replace("model:", "model") if key.startswith("model:") else key] = q
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--direct", required=True)
    p.add_argument("--imported", required=True)
    p.add_argument("--bundle")
    p.add_argument("--timings", nargs=2)
    args = p.parse_args()
    direct, imported = LatencyTable.load(args.direct), LatencyTable.load(args.imported)
    stat = direct.stat
    compare("imported / direct", entries(imported.data, stat), entries(direct.data, stat))
    if args.timings:
        manifest = json.load(open(os.path.join(args.bundle, "manifest.json")))
        a, b = (samples_table(json.load(open(t)), manifest, stat) for t in args.timings)
        compare("runner run 2 / run 1 (the noise)", b, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
