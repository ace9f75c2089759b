#!/usr/bin/env python
"""Export a model to TorchScript and ONNX, then check each file against the eager model.

    python tools/export.py FBNetV2_F1 --out output/export               # zoo name (random weights)
    python tools/export.py FBNetV2_F1 --pretrained                      # with the zoo's weights
    python tools/export.py output/search/arch_def.json --checkpoint output/train/model.pth --num-classes 10
    python tools/export.py fbnet_c --formats onnx --resolution 192

Each exported file is loaded back (torch.jit.load, onnxruntime) and run on a random
batch next to the eager model; the max abs difference is printed, and the exit
status is 1 if any exceeds --atol.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mobile_cv  # noqa: E402
import model_zoo  # noqa: E402
from model_zoo.export import FORMATS, ONNX_MIN_OPSET, export_and_check, resolve_model  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="zoo name, registered arch name, or .json/.py arch-def file")
    p.add_argument("--checkpoint", help="checkpoint file to load (state dict or {'model_ema'|'state_dict': ...})")
    p.add_argument("--pretrained", action="store_true", help="load the zoo entry's pretrained weights")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default: the zoo entry's, else 1000)")
    p.add_argument("--resolution", type=int, help="input size (default: the model's input_size)")
    p.add_argument("--out", default="output/export", help="output folder (default: output/export)")
    p.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    p.add_argument("--opset", type=int, default=ONNX_MIN_OPSET, help=f"ONNX opset (>= {ONNX_MIN_OPSET})")
    p.add_argument("--torchscript-method", choices=("script", "trace"), default="script")
    p.add_argument("--batch", type=int, default=2, help="batch size of the check input")
    p.add_argument("--atol", type=float, default=1e-4, help="largest allowed max abs difference")
    p.add_argument("--cache-dir", help=f"download cache (default: ${model_zoo.CACHE_ENV} or the torch hub dir)")
    args = p.parse_args(argv)

    try:
        model, name = resolve_model(args.model, args.checkpoint, args.pretrained, args.num_classes, args.cache_dir)
    except (
        mobile_cv.ArchDefError,
        mobile_cv.RegistryError,
        mobile_cv.CheckpointMismatchError,
        model_zoo.ModelZooError,
        ValueError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    resolution = args.resolution or model.input_size
    results = export_and_check(
        model, args.out, name, resolution, args.formats, args.opset, args.batch, args.torchscript_method
    )
    ok = True
    for fmt, r in results.items():
        passed = r.max_abs_diff <= args.atol
        ok &= passed
        print(
            f"{fmt:<12} {r.path}  max abs diff vs eager {r.max_abs_diff:.3g}  {'ok' if passed else 'FAILED'}"
            f" (atol {args.atol:g}, input {args.batch}x{model.in_chans}x{resolution}x{resolution})"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
