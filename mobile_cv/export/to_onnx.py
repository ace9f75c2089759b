"""ONNX export, by torch's dynamo exporter (``torch.export`` then onnxscript) or the older
TorchScript-based one, and the check in ONNX Runtime.

The dynamo exporter is the default, as upstream: it needs the ``onnxscript`` package (in the
``onnx`` extra). Where onnxscript is missing or the dynamo export fails on a model, the file is
written by the TorchScript-based exporter instead, with one logged line saying why; both
reproduce these models' eager outputs. The batch dimension is dynamic. Latency tables on ONNX
Runtime export their thousands of block programs with the TorchScript-based exporter
(``exporter="torchscript"``: 0.04 s a program vs about 3 s through dynamo). Needs the ``onnx``
and ``onnxruntime`` packages (imported when used).
"""

from __future__ import annotations

import importlib.util
import io
import logging
import warnings
from typing import Optional

import numpy as np
import torch

from ..atomic_files import atomic_write_bytes
from ..extras import require
from .errors import ExportSettingsError

logger = logging.getLogger("mobile_cv.export")

ONNX_MIN_OPSET = 17  # the oldest opset written; the dynamo exporter's own default is 18
DYNAMO_OPSET = 18
ONNX_EXPORTERS = ("dynamo", "torchscript")


def export_onnx(
    model: torch.nn.Module,
    example: torch.Tensor,
    path,
    opset: Optional[int] = None,
    exporter: str = "dynamo",
) -> str:
    """Save ``model`` as ONNX (input ``"input"``, output ``"logits"``, dynamic batch) to ``path`` (a
    file name, or a file object: latency tables export into memory). ``opset`` defaults to the
    exporter's (dynamo 18, TorchScript-based 17)."""
    if exporter not in ONNX_EXPORTERS:
        raise ExportSettingsError(f"unknown ONNX exporter {exporter!r}; valid: {list(ONNX_EXPORTERS)}")
    if opset is not None and opset < ONNX_MIN_OPSET:
        raise ExportSettingsError(f"opset must be >= {ONNX_MIN_OPSET}, got {opset}")
    require("onnx", "the onnx format")  # both exporters write the file through the onnx package
    data = None
    if exporter == "dynamo":
        if importlib.util.find_spec("onnxscript") is None:
            why = "it needs the onnxscript package (pip install onnxscript, or the onnx extra)"
        else:
            try:
                data = _dynamo_bytes(model, example, opset or DYNAMO_OPSET)
            except Exception as e:  # an op the dynamo exporter cannot take: the older exporter still may
                why = f"it failed on this model ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})"
        if data is None:
            logger.warning("ONNX: not the dynamo exporter: %s; written by the TorchScript-based exporter", why)
    if data is None:
        data = _torchscript_bytes(model, example, opset or ONNX_MIN_OPSET)
    if hasattr(path, "write"):
        path.write(data)
    else:
        atomic_write_bytes(path, data)  # written whole once exported (never half a file)
    return path


def _dynamo_bytes(model: torch.nn.Module, example: torch.Tensor, opset: int) -> bytes:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    return program.model_proto.SerializeToString()


def _torchscript_bytes(model: torch.nn.Module, example: torch.Tensor, opset: int) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter, asked for
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
    return buffer.getvalue()


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
