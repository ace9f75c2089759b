#!/usr/bin/env python
"""How well other interpolations of the same grid would predict a grid table's held-out
configurations: offline, from the timings stored in the table (nothing is timed).

    python benchmarks/interpolation_variants.py configs/latency/fbnetv2_f_space_executorch.json

Per variant: mean and p90 of |interpolated - measured| / measured over the held-out
configurations (each net of the call cost), and the mean signed error (bias). The first row is
multilinear in ms with sizes in pixels squared (tables before 2026-12-06); the second adds the hidden
widths padded toward a multiple of 32 (fp32 tables since).
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import mobile_cv.latency.table as T  # noqa: E402
from mobile_cv.latency import LatencyTable  # noqa: E402
from mobile_cv.latency.configs import block_configs  # noqa: E402
from mobile_cv.latency.measure import predict_config, table_net  # noqa: E402
from mobile_cv.latency.table import _config  # noqa: E402


def main() -> int:
    table = LatencyTable.load(sys.argv[1])
    d = table.data
    if "held_out" not in d:
        print(f"{sys.argv[1]} is an exact table: nothing is interpolated")
        return 0
    net = table_net(d, sys.argv[1])
    owner = {}
    for block, c in block_configs(net):
        owner.setdefault(c.key, block)
    interp, o, shipped_coordinate = T.interpolate, table.overhead_ms, T._axis_coordinate

    def run(name, coordinate, forward, back):
        T._axis_coordinate = coordinate
        T.interpolate = lambda axes, values, points: back(interp(axes, forward(values), points))
        errors = []
        for key, entry in d["held_out"].items():
            measured = entry[table.stat] - o
            errors.append((predict_config(table, owner[key], _config(key, "")) - measured) / measured)
        a = sorted(abs(e) for e in errors)
        print(
            f"{name:36s} mean {100 * statistics.mean(a):5.2f}%  p90 {100 * a[int(0.9 * (len(a) - 1))]:5.2f}%  "
            f"bias {100 * statistics.mean(errors):+5.2f}%"
        )

    def same(v):
        return v

    def log_ms(v):
        return torch.log((v - o).clamp_min(1e-6))

    def exp_ms(v):
        return torch.exp(v) + o

    def px2(dim, v, interpolation=None):
        return v.double() ** 2 if dim == "size" else v.double()

    def padded(dim, v, interpolation=None):  # what fp32 tables read since 2026-12-06
        return shipped_coordinate(dim, v, T.PADDED_FP32)

    def px(dim, v, interpolation=None):
        return v.double()

    def logs(dim, v, interpolation=None):
        return torch.log(v.double())

    print(f"{len(d['held_out'])} held-out configurations of {sys.argv[1]}")
    run("ms, size px^2", px2, same, same)
    run("ms, size px^2, widths padded to 32", padded, same, same)
    run("ms, size px", px, same, same)
    run("log ms, size px^2", px2, log_ms, exp_ms)
    run("log ms, size px", px, log_ms, exp_ms)
    run("log ms, log axes", logs, log_ms, exp_ms)
    run("ms, log axes", logs, same, same)
    return 0


if __name__ == "__main__":
    sys.exit(main())
