"""Export to TorchScript, ONNX, ExecuTorch and torch.export (``.pt2``), each checked against the eager model.

    model = mobile_cv.build_model("FBNetV2_F1")             # or model_zoo.resolve_model(zoo name, ...)
    results = export_and_check(model, "output/export", "FBNetV2_F1", input_size=128)
    # {"onnx": ExportResult(path=..., max_abs_diff=...), "executorch": ..., "pt2": ...}: default_formats()
    results = export_and_check(model, "output/export", name, 128, formats=["executorch"],
                               int8=True, calib_data="configs/train_embedded_mnist.yaml")
    # {"executorch": ExportResult(...name.pte...), "executorch_int8": ExportResult(...name_int8.pte..., accuracy=...)}

Every format exports the model with its BatchNorms folded into the convs
(:func:`mobile_cv.fuse_for_inference`) and is checked against the original, unfolded
eager model.

Modules, one per concern: ``to_torchscript``; ``to_pt2`` (``torch.export.save``/``load``);
``to_onnx`` (the dynamo exporter, the TorchScript-based one as the fallback; ONNX Runtime check);
``to_executorch`` (XNNPACK
delegate, ExecuTorch's Python runtime); ``quantize`` (PT2E int8, calibrated on real images of a
data config's train split and checked by top-1 on its val+test splits; random-noise calibration
must be asked for explicitly); ``calibration`` (those images and the accuracy check); ``locate``
(an operator that cannot be exported raises :class:`ExportError` naming the operator and the
module that holds it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch

from ..arch.fuse import fuse_for_inference
from .calibration import AccuracyCheck, check_accuracy, check_channels, load_images
from .errors import EXECUTORCH_PACKAGES, ExportError, ExportSettingsError
from .quantize import export_executorch_int8, no_calibration_error
from .runtimes import (
    PREFERRED_FORMATS,
    RUNTIMES,
    Runtime,
    RuntimeUnavailableError,
    default_formats,
    export_formats,
    get_runtime,
    runtime_of_format,
)
from .to_executorch import check_executorch, export_executorch, load_executorch, require_executorch, run_executorch
from .to_onnx import ONNX_EXPORTERS, ONNX_MIN_OPSET, check_onnx, export_onnx
from .to_pt2 import check_pt2, export_pt2
from .to_torchscript import check_torchscript, export_torchscript

FORMATS = export_formats()  # ("torchscript", "onnx", "executorch", "pt2"): the registered runtimes
DEFAULT_FORMATS = PREFERRED_FORMATS  # the default where installed: default_formats()
CALIB_IMAGES = 256  # train-split images the int8 calibration runs
HELD_OUT_SPLITS = ("val", "test")


@dataclass
class ExportResult:
    path: str
    max_abs_diff: float
    size_bytes: int = 0
    accuracy: Optional[AccuracyCheck] = None  # int8 ExecuTorch, when calibrated on a data config


def _executorch_int8(
    model: torch.nn.Module,
    folded: torch.nn.Module,
    example: torch.Tensor,
    inputs: torch.Tensor,
    path: str,
    calib_data: Optional[str],
    allow_random_calibration: bool,
    calib_images: int,
) -> ExportResult:
    calibration = None
    if calib_data:
        calibration, _ = load_images(calib_data, example.shape[-1], ("train",), limit=calib_images)
        check_channels(calibration, example.shape[1], calib_data)
    export_executorch_int8(folded, example, path, calibration, allow_random_calibration)
    result = ExportResult(path, check_executorch(path, model, inputs), os.path.getsize(path))
    if calib_data:
        images, labels = load_images(calib_data, example.shape[-1], HELD_OUT_SPLITS)
        source = f"{'+'.join(HELD_OUT_SPLITS)} of {calib_data}"
        result.accuracy = check_accuracy(path, model, images, labels, source)
        result.max_abs_diff = result.accuracy.max_abs_diff  # on real images: noise is off the calibrated ranges
    return result


def export_and_check(
    model: torch.nn.Module,
    out_dir: str,
    name: str,
    input_size: int,
    formats: Optional[Sequence[str]] = None,
    opset: Optional[int] = None,
    batch: int = 2,
    torchscript_method: str = "script",
    seed: int = 0,
    *,
    int8: bool = False,
    calib_data: Optional[str] = None,
    allow_random_calibration: bool = False,
    calib_images: int = CALIB_IMAGES,
    onnx_exporter: str = "dynamo",
) -> Dict[str, ExportResult]:
    """Export ``model`` (BN folded) to ``out_dir/name.{pt,onnx,pte}`` and compare each file with eager outputs.

    The export traces a batch of 1 and the check runs a random batch of ``batch``
    images, so a batch dimension that did not stay dynamic fails the check (the
    ExecuTorch program is for a batch of 1, the phone case: its check runs the images
    one by one). ``int8`` (with ``"executorch"`` in ``formats``) adds ``name_int8.pte``,
    calibrated on ``calib_images`` train images of the data config ``calib_data`` and
    checked on its val+test splits (``result.accuracy``).
    """
    formats = default_formats() if formats is None else formats
    runtimes = [runtime_of_format(fmt) for fmt in formats]  # an unknown format: one line naming the valid
    if int8 and "executorch" not in formats:
        raise ExportSettingsError("int8 export is an ExecuTorch export: add 'executorch' to the formats")
    if int8 and not calib_data and not allow_random_calibration:
        raise no_calibration_error()
    model = model.eval()
    folded = fuse_for_inference(model)
    os.makedirs(out_dir, exist_ok=True)
    in_chans = int(getattr(model, "in_chans", 3))
    example = torch.zeros(1, in_chans, input_size, input_size)
    inputs = torch.randn(batch, in_chans, input_size, input_size, generator=torch.Generator().manual_seed(seed))
    results = {}
    options = {"opset": opset, "exporter": onnx_exporter, "method": torchscript_method}  # each takes its own
    for rt in sorted(runtimes, key=lambda r: export_formats().index(r.format)):
        path = rt.export(folded, example, os.path.join(out_dir, name + rt.file), **options)
        results[rt.format] = ExportResult(path, rt.check(path, model, inputs), os.path.getsize(path))
    if int8:
        path = os.path.join(out_dir, f"{name}_int8.pte")
        results["executorch_int8"] = _executorch_int8(
            model, folded, example, inputs, path, calib_data, allow_random_calibration, calib_images
        )
    return results


__all__ = [
    "CALIB_IMAGES",
    "DEFAULT_FORMATS",
    "EXECUTORCH_PACKAGES",
    "FORMATS",
    "HELD_OUT_SPLITS",
    "ONNX_EXPORTERS",
    "ONNX_MIN_OPSET",
    "PREFERRED_FORMATS",
    "AccuracyCheck",
    "ExportError",
    "ExportResult",
    "RUNTIMES",
    "Runtime",
    "RuntimeUnavailableError",
    "default_formats",
    "check_accuracy",
    "check_executorch",
    "check_onnx",
    "check_pt2",
    "check_torchscript",
    "export_and_check",
    "export_executorch",
    "export_executorch_int8",
    "export_onnx",
    "export_pt2",
    "export_torchscript",
    "get_runtime",
    "load_executorch",
    "load_images",
    "require_executorch",
    "run_executorch",
]
