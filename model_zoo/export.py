"""Export to TorchScript and ONNX, each checked against the eager model.

    model, name = resolve_model("FBNetV2_F1")                # zoo name, registered arch or arch-def file
    results = export_and_check(model, "output/export", name, input_size=128)
    # {"torchscript": ExportResult(path=..., max_abs_diff=0.0), "onnx": ...}

ONNX goes through the TorchScript-based exporter (``torch.onnx.export(...,
dynamo=False)``): with torch 2.x the dynamo exporter needs the extra ``onnxscript``
package, while this one works with what is installed, offline, and reproduces the
eager outputs of these models exactly. The batch dimension is dynamic.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

import arch_defs
import mobile_cv
from mobile_cv.arch_def import load_arch_def_file
from mobile_cv.registry import RegistryError, did_you_mean

from . import zoo
from .entry import ZooEntry

FORMATS = ("torchscript", "onnx")
ONNX_MIN_OPSET = 17


@dataclass
class ExportResult:
    path: str
    max_abs_diff: float


def resolve_model(
    spec: str,
    checkpoint: Optional[str] = None,
    pretrained: bool = False,
    num_classes: Optional[int] = None,
    cache_dir: Optional[str] = None,
) -> Tuple[mobile_cv.FBNet, str]:
    """``(model, name)`` from a zoo name, a registered arch or an arch-def ``.json``/``.py`` file.

    Args:
        spec: what to build; zoo entries win over registered archs of the same name.
        checkpoint: a checkpoint file to load (``torch.load(weights_only=True)``).
        pretrained: load the zoo entry's own weights (zoo names only).
        num_classes: classifier outputs (default: the entry's, else 1000).
        cache_dir: download cache for ``pretrained``.
    """
    entry = None if spec.endswith((".json", ".py")) else _zoo_entry(spec)
    classes = 1000 if num_classes is None else num_classes
    if spec.endswith((".json", ".py")):
        model = mobile_cv.build_model(load_arch_def_file(spec), num_classes=classes)
        name = os.path.splitext(os.path.basename(spec))[0]
    elif entry is not None:  # zoo entries win over registered archs of the same name
        model = zoo.create_model(entry.name, pretrained=pretrained, num_classes=num_classes, cache_dir=cache_dir)
        name = entry.name
    elif spec in arch_defs.names("model"):
        model, name = mobile_cv.build_model(spec, num_classes=classes), spec
    else:
        known = sorted(set(zoo.list_models()) | set(arch_defs.names("model")))
        raise RegistryError(
            f'"{spec}" is neither a zoo entry nor a registered arch{did_you_mean(spec, known)}, nor a .json/.py '
            f"arch-def file (list them with: python tools/model_zoo.py list; python tools/flops.py)"
        )
    if pretrained and entry is None:
        raise ValueError(f"{spec!r} is not a zoo entry, so it has no pretrained weights; pass a checkpoint instead")
    if checkpoint:
        zoo.load_pretrained(model, checkpoint)
    return model.eval(), name


def _zoo_entry(spec: str) -> Optional[ZooEntry]:
    try:
        return zoo.get_entry(spec)
    except RegistryError:
        return None


def export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: str, method: str = "script") -> str:
    """Save ``model`` as TorchScript by ``"script"`` (default) or ``"trace"`` (for unscriptable custom ops)."""
    if method not in ("script", "trace"):
        raise ValueError(f"method must be 'script' or 'trace', got {method!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        module = torch.jit.script(model) if method == "script" else torch.jit.trace(model, example)
    module.save(path)
    return path


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: str, opset: int = ONNX_MIN_OPSET) -> str:
    """Save ``model`` as ONNX (input ``"input"``, output ``"logits"``, dynamic batch)."""
    if opset < ONNX_MIN_OPSET:
        raise ValueError(f"opset must be >= {ONNX_MIN_OPSET}, got {opset}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter is chosen on purpose
        torch.onnx.export(
            model,
            (example,),
            path,
            opset_version=opset,
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


def check_torchscript(path: str, model: torch.nn.Module, inputs: torch.Tensor) -> float:
    """Max abs difference between the saved TorchScript module and ``model`` on ``inputs``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        loaded = torch.jit.load(path, map_location="cpu").eval()
    with torch.no_grad():
        return (loaded(inputs) - model(inputs)).abs().max().item()


def check_onnx(path: str, model: torch.nn.Module, inputs: torch.Tensor) -> float:
    """Max abs difference between onnxruntime running the saved file and ``model`` on ``inputs``."""
    import onnx  # deferred: heavy, and needed only to check an ONNX export
    import onnxruntime

    onnx.checker.check_model(path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (out,) = session.run(["logits"], {"input": inputs.numpy()})
    with torch.no_grad():
        return float(np.abs(out - model(inputs).numpy()).max())


def export_and_check(
    model: torch.nn.Module,
    out_dir: str,
    name: str,
    input_size: int,
    formats: Sequence[str] = FORMATS,
    opset: int = ONNX_MIN_OPSET,
    batch: int = 2,
    torchscript_method: str = "script",
    seed: int = 0,
) -> Dict[str, ExportResult]:
    """Export ``model`` to ``out_dir/name.{pt,onnx}`` and compare each file with eager outputs.

    The export traces a batch of 1 and the check runs a random batch of ``batch``
    images, so a batch dimension that did not stay dynamic fails the check.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export format {unknown[0]!r}; valid: {list(FORMATS)}")
    model = model.eval()
    os.makedirs(out_dir, exist_ok=True)
    in_chans = int(getattr(model, "in_chans", 3))
    example = torch.zeros(1, in_chans, input_size, input_size)
    inputs = torch.randn(batch, in_chans, input_size, input_size, generator=torch.Generator().manual_seed(seed))
    results = {}
    if "torchscript" in formats:
        path = export_torchscript(model, example, os.path.join(out_dir, f"{name}.pt"), torchscript_method)
        results["torchscript"] = ExportResult(path, check_torchscript(path, model, inputs))
    if "onnx" in formats:
        path = export_onnx(model, example, os.path.join(out_dir, f"{name}.onnx"), opset)
        results["onnx"] = ExportResult(path, check_onnx(path, model, inputs))
    return results
