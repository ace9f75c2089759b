"""ONNX export through the TorchScript-based exporter, and the check in ONNX Runtime.

``torch.onnx.export(..., dynamo=False)``: with torch 2.x the dynamo exporter needs the extra
``onnxscript`` package, while this one works with what is installed, offline, and reproduces the
eager outputs of these models exactly. The batch dimension is dynamic. Needs the ``onnx`` and
``onnxruntime`` packages (the ``onnx`` extra; imported when used).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch

from ..atomic_files import atomic_write_bytes
from ..extras import require
from .errors import ExportSettingsError

ONNX_MIN_OPSET = 17


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: str, opset: int = ONNX_MIN_OPSET) -> str:
    """Save ``model`` as ONNX (input ``"input"``, output ``"logits"``, dynamic batch)."""
    if opset < ONNX_MIN_OPSET:
        raise ExportSettingsError(f"opset must be >= {ONNX_MIN_OPSET}, got {opset}")
    require("onnx", "the onnx format")  # torch's exporter writes the file through the onnx package
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter is chosen on purpose
        buffer = io.BytesIO()  # written whole once exported (never half a file)
        torch.onnx.export(
            model,
            (example,),
            buffer,
            opset_version=opset,
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    if hasattr(path, "write"):  # a file object (latency tables export into memory)
        path.write(buffer.getvalue())
    else:
        atomic_write_bytes(path, buffer.getvalue())
    return path


def check_onnx(path: str, model: torch.nn.Module, inputs: torch.Tensor) -> float:
    """Max abs difference between onnxruntime running the saved file and ``model`` on ``inputs``."""
    require("onnx", "checking an ONNX export")
    import onnx  # deferred: heavy, and needed only to check an ONNX export
    import onnxruntime

    onnx.checker.check_model(path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (out,) = session.run(["logits"], {"input": inputs.numpy()})
    with torch.no_grad():
        return float(np.abs(out - model(inputs).numpy()).max())
