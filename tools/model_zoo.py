#!/usr/bin/env python
"""List the model zoo, or show one entry.

python tools/model_zoo.py list                 # name, resolution, MFLOPs, Mparams, top-1, weights
python tools/model_zoo.py list "fbnetv2*" --markdown
python tools/model_zoo.py info FBNetV2_F1      # every field, and FLOPs/params counted now
"""

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import model_zoo  # noqa: E402
from mobile_cv import engine  # noqa: E402
from mobile_cv.errors import UserError  # noqa: E402
from model_zoo.zoo import computed_flops_params  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="the zoo table")
    ls.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern, case-insensitive")
    ls.add_argument("--markdown", action="store_true", help="print a Markdown table")
    info = sub.add_parser("info", help="one entry in full")
    info.add_argument("name")
    args = p.parse_args(argv)

    def body() -> None:
        if args.command == "list":
            names = model_zoo.list_models(args.pattern)
            if not names:
                raise UserError(
                    f"no zoo entry matches {args.pattern!r} (python tools/model_zoo.py list shows them all)"
                )
            print(model_zoo.format_table(names, markdown=args.markdown))
            return
        entry = model_zoo.get_entry(args.name)
        for field in dataclasses.fields(entry):
            print(f"{field.name:<14} {getattr(entry, field.name)}")
        print(f"{'crop_pct':<14} {entry.crop_pct:.4f}")
        print(f"{'timm name':<14} {entry.timm_name}")
        flops, params = computed_flops_params(entry)
        print(f"{'counted now':<14} {flops:.3f} MFLOPs, {params:.4f} Mparams at {entry.input_size}x{entry.input_size}")

    return engine.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
