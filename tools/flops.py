#!/usr/bin/env python
"""Print resolution, FLOPs and params of registered archs or arch-def files.

python tools/flops.py FBNetV2_F1 fbnet_c
python tools/flops.py output/search/arch_def.json --resolution 32 --json
python tools/flops.py            # every registered model
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tabulate import tabulate  # noqa: E402

import arch_defs  # noqa: E402
import mobile_cv  # noqa: E402
from mobile_cv import engine  # noqa: E402
from mobile_cv.config import flag_type  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("archs", nargs="*", help="registered arch names or .json/.py arch-def files (default: all models)")
    p.add_argument("--resolution", type=flag_type("--resolution"), help="input size (default: each arch's input_size)")
    p.add_argument("--num-classes", type=flag_type("--num-classes"), default=1000)
    p.add_argument(
        "--in-chans", type=flag_type("--in-chans"), default=3, help="input channels (1 for the embedded MNIST models)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    args = p.parse_args(argv)

    def body() -> None:
        rows = []
        for name in args.archs or arch_defs.names("model"):
            model = mobile_cv.build_model(name, num_classes=args.num_classes, in_chans=args.in_chans)
            res = args.resolution or model.input_size
            flops, params = mobile_cv.count_flops_params(model, res)
            rows.append({"name": name, "resolution": res, "flops_m": round(flops, 6), "params_m": round(params, 6)})
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            table = [(r["name"], r["resolution"], f"{r['flops_m']:.3f}", f"{r['params_m']:.4f}") for r in rows]
            print(
                tabulate(
                    table, headers=("name", "res", "MFLOPs", "Mparams"), colalign=("left", "right", "right", "right")
                )
            )

    return engine.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
