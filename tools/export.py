#!/usr/bin/env python
"""Export a model to TorchScript, ONNX, ExecuTorch or torch.export (.pt2), then check each file against eager.

    python tools/export.py FBNetV2_F1 --out output/export               # zoo name (random weights)
    python tools/export.py FBNetV2_F1 --pretrained                      # with the zoo's weights
    python tools/export.py output/train_cifar10/arch_def.json --weights output/train_cifar10/model_final.pth \\
        --num-classes 10                                              # what configs/train_cifar10.yaml wrote
    python tools/export.py fbnet_c --formats onnx pt2 --resolution 192   # pt2: torch.export.save, loaded back
    python tools/export.py mnist_dmasking_1p5m --pretrained --format executorch \\
        --int8 --calib-data configs/train_embedded_mnist.yaml          # phone: fp32 and int8 .pte
    python tools/export.py output/search_embedded_mnist/arch_def.json --num-classes 10 --in-chans 1 \\
        --weights output/train_embedded_mnist/model_final.pth --format executorch \\
        --int8 --calib-data configs/train_embedded_mnist.yaml

Every format exports the model with its BatchNorms folded into the convs. Each exported
file is loaded back (torch.jit.load, onnxruntime, ExecuTorch's runtime, torch.export.load) and run on a
random batch next to the eager model; the max abs difference is printed, and the exit
status is 3 if any exceeds --atol. ``--int8`` (ExecuTorch) calibrates on the train split of
the --calib-data config's dataset and checks top-1 on its val+test splits: the exit status
is 3 if int8 loses more than --max-int8-loss points against the eager model. A user error
(an unknown model, a missing file, a bad setting) is one line and exit status 2.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import model_zoo  # noqa: E402
from mobile_cv import engine  # noqa: E402
from mobile_cv.config import flag_type  # noqa: E402
from mobile_cv.export import (  # noqa: E402
    CALIB_IMAGES,
    FORMATS,
    ONNX_EXPORTERS,
    ONNX_MIN_OPSET,
    default_formats,
    export_and_check,
)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="zoo name, registered arch name, or .json/.py arch-def file")
    p.add_argument(
        "--weights",
        "--checkpoint",
        help="weights file to load (state dict or {'model_ema'|'state_dict': ...}; --checkpoint: its name in 0.1)",
    )
    p.add_argument("--pretrained", action="store_true", help="load the zoo entry's pretrained weights")
    p.add_argument(
        "--num-classes",
        type=flag_type("--num-classes"),
        help="classifier outputs (default: the zoo entry's, else 1000)",
    )
    p.add_argument(
        "--in-chans", type=flag_type("--in-chans"), help="input channels (default: the zoo entry's, else 3; MNIST: 1)"
    )
    p.add_argument("--resolution", type=flag_type("--resolution"), help="input size (default: the model's input_size)")
    p.add_argument("--out", default="output/export", help="output folder (default: output/export)")
    p.add_argument(
        "--formats",
        "--format",
        nargs="+",
        choices=FORMATS,
        help="default: executorch pt2 onnx, those installed (TorchScript, deprecated upstream: --formats torchscript)",
    )
    p.add_argument(
        "--opset",
        type=flag_type("--opset"),
        help=f"ONNX opset (>= {ONNX_MIN_OPSET}; default: the exporter's, dynamo 18, torchscript 17)",
    )
    p.add_argument(
        "--onnx-exporter",
        choices=ONNX_EXPORTERS,
        default="dynamo",
        help="torch.onnx's dynamo exporter (default; the TorchScript-based one where it cannot, said in one line) "
        "or the TorchScript-based one",
    )
    p.add_argument("--torchscript-method", choices=("script", "trace"), default="script")
    p.add_argument("--batch", type=flag_type("--batch"), default=2, help="batch size of the check input")
    p.add_argument(
        "--atol", type=flag_type("--atol"), default=1e-4, help="largest allowed max abs difference (fp32 formats)"
    )
    p.add_argument("--int8", action="store_true", help="also an int8 ExecuTorch .pte (PT2E, XNNPACK)")
    p.add_argument("--calib-data", metavar="CONFIG", help="config whose DATA section gives the calibration images")
    p.add_argument(
        "--calib-images", type=flag_type("--calib-images"), default=CALIB_IMAGES, help="train images to calibrate on"
    )
    p.add_argument(
        "--allow-random-calib", action="store_true", help="calibrate int8 on random noise (latency only, no accuracy)"
    )
    p.add_argument(
        "--max-int8-loss",
        type=flag_type("--max-int8-loss"),
        default=1.0,
        help="largest allowed int8 top-1 loss, in points",
    )
    p.add_argument("--cache-dir", help=f"download cache (default: ${model_zoo.CACHE_ENV} or the torch hub dir)")
    args = p.parse_args(argv)
    args.formats = args.formats or list(default_formats())
    if args.int8 and "executorch" not in args.formats:
        p.error("--int8 is an ExecuTorch export: add --format executorch")
    return args


def report(fmt, r, args, shape) -> bool:
    """Print one result line; whether it passed."""
    size = f"{r.size_bytes / 1e6:.2f} MB"
    if r.accuracy is not None:
        a = r.accuracy
        passed = a.loss <= args.max_int8_loss
        print(
            f"{fmt:<16} {r.path}  {size}  top-1 eager {a.eager_top1:.2f}% vs exported {a.exported_top1:.2f}% "
            f"(loss {a.loss:.2f} points, agreement {a.agreement:.2f}%, max abs logit diff {a.max_abs_diff:.3g}) on "
            f"{a.images} images ({a.source})  {'ok' if passed else 'FAILED'} (max loss {args.max_int8_loss:g})"
        )
        return passed
    if fmt == "executorch_int8":  # random calibration: nothing to hold it to
        print(f"{fmt:<16} {r.path}  {size}  calibrated on random noise: accuracy not checked")
        return True
    passed = r.max_abs_diff <= args.atol
    print(
        f"{fmt:<16} {r.path}  {size}  max abs diff vs eager {r.max_abs_diff:.3g}  {'ok' if passed else 'FAILED'}"
        f" (atol {args.atol:g}, input {shape})"
    )
    return passed


def main(argv=None) -> int:
    args = parse_args(argv)

    def body() -> int:
        model, name = model_zoo.resolve_model(
            args.model, args.weights, args.pretrained, args.num_classes, args.cache_dir, args.in_chans
        )
        resolution = args.resolution or model.input_size
        results = export_and_check(
            model,
            args.out,
            name,
            resolution,
            args.formats,
            args.opset,
            args.batch,
            args.torchscript_method,
            int8=args.int8,
            calib_data=args.calib_data,
            allow_random_calibration=args.allow_random_calib,
            calib_images=args.calib_images,
            onnx_exporter=args.onnx_exporter,
        )
        shape = f"{args.batch}x{model.in_chans}x{resolution}x{resolution}"
        ok = True
        for fmt, r in results.items():
            ok &= report(fmt, r, args, shape)
        return 0 if ok else engine.CHECK_FAILED_EXIT

    return engine.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
