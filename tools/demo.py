#!/usr/bin/env python
"""The main job on the embedded default: build every registered arch, print its
FLOPs, params and a forward-pass check against the published table."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import arch_defs  # noqa: E402
import mobile_cv  # noqa: E402


def main() -> int:
    table = {m["name"]: m for m in json.load(open(os.path.join(ROOT, "tests/data/published_models.json")))["models"]}
    print(f"{'arch':<12} {'res':>4} {'MFLOPs':>9} {'published':>9} {'Mparams':>8} {'published':>9}  forward")
    ok = True
    for name in arch_defs.names("model"):
        model = mobile_cv.build_model(name).eval()
        res = model.input_size
        flops, params = mobile_cv.count_flops_params(model, res)
        with torch.no_grad():
            y = model(torch.randn(1, 3, res, res))
        fwd = "ok" if y.shape == (1, 1000) and torch.isfinite(y).all() else "FAILED"
        pub = table.get(name, {})
        ok &= fwd == "ok"
        print(f"{name:<12} {res:>4} {flops:>9.3f} {pub.get('flops_m', float('nan')):>9.3f} "
              f"{params:>8.4f} {pub.get('params_m', float('nan')):>9.4f}  {fwd} {tuple(y.shape)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
