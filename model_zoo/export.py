"""Export to TorchScript, ONNX and ExecuTorch, each checked against the eager model.

    model, name = resolve_model("FBNetV2_F1")                # zoo name, registered arch or arch-def file
    results = export_and_check(model, "output/export", name, input_size=128)
    # {"torchscript": ExportResult(path=..., max_abs_diff=0.0), "onnx": ...}
    results = export_and_check(model, "output/export", name, 128, formats=["executorch"],
                               int8=True, calib_data="configs/train_embedded_mnist.yaml")
    # {"executorch": ExportResult(...name.pte...), "executorch_int8": ExportResult(...name_int8.pte..., accuracy=...)}

Every format exports the model with its BatchNorms folded into the convs
(:func:`mobile_cv.fuse_for_inference`) and is checked against the original, unfolded
eager model.

ONNX goes through the TorchScript-based exporter (``torch.onnx.export(...,
dynamo=False)``): with torch 2.x the dynamo exporter needs the extra ``onnxscript``
package, while this one works with what is installed, offline, and reproduces the
eager outputs of these models exactly. The batch dimension is dynamic.

ExecuTorch (the phone runtime; needs ``pip install executorch torchao``, in the ``test``
extra): ``torch.export`` -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner ->
``.pte``, for a batch of 1. int8 is PT2E static quantization (XNNPACKQuantizer, symmetric,
per-channel weights) calibrated on real images of a data config's train split, and checked
by top-1 on its val+test splits; random-noise calibration must be asked for explicitly.
Each ``.pte`` is run back through ExecuTorch's Python runtime. An operator that cannot be
exported raises :class:`ExportError` naming the operator and the module that holds it.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import arch_defs
import mobile_cv
from mobile_cv.arch_def import load_arch_def_file
from mobile_cv.config import check_config, get_cfg
from mobile_cv.data import build_dataset, dataset_kwargs
from mobile_cv.errors import UserError
from mobile_cv.registry import RegistryError, did_you_mean

from . import zoo
from .entry import ZooEntry

FORMATS = ("torchscript", "onnx", "executorch")
DEFAULT_FORMATS = ("torchscript", "onnx")
ONNX_MIN_OPSET = 17
CALIB_IMAGES = 256  # train-split images the int8 calibration runs
HELD_OUT_SPLITS = ("val", "test")
EXECUTORCH_PACKAGES = "pip install executorch==1.5.1 'torchao==0.18.*'  (or: pip install -e '.[test]')"
_LOCATE_SECONDS = 90.0  # how long an export failure may spend finding the module that holds the bad op


class ExportError(UserError, RuntimeError):
    """A model (or one of its operators) cannot be exported; the message names the operator and module."""


@dataclass
class AccuracyCheck:
    """Top-1 of the eager model and of an exported file on the same labelled images."""

    images: int
    eager_top1: float
    exported_top1: float
    agreement: float  # % of images where both predict the same class
    max_abs_diff: float  # of the logits, over all the images
    source: str  # where the images came from

    @property
    def loss(self) -> float:
        """Top-1 points lost by the export (negative: it gained)."""
        return self.eager_top1 - self.exported_top1


@dataclass
class ExportResult:
    path: str
    max_abs_diff: float
    size_bytes: int = 0
    accuracy: Optional[AccuracyCheck] = None  # int8 ExecuTorch, when calibrated on a data config


def resolve_model(
    spec: str,
    checkpoint: Optional[str] = None,
    pretrained: bool = False,
    num_classes: Optional[int] = None,
    cache_dir: Optional[str] = None,
    in_chans: Optional[int] = None,
) -> Tuple[mobile_cv.FBNet, str]:
    """``(model, name)`` from a zoo name, a registered arch or an arch-def ``.json``/``.py`` file.

    Args:
        spec: what to build; zoo entries win over registered archs of the same name.
        checkpoint: a checkpoint file to load (``torch.load(weights_only=True)``).
        pretrained: load the zoo entry's own weights (zoo names only).
        num_classes: classifier outputs (default: the entry's, else 1000).
        cache_dir: download cache for ``pretrained``.
        in_chans: input channels (default: the entry's, else 3; 1 for a model trained on the MNIST digits).
    """
    entry = None if spec.endswith((".json", ".py")) else _zoo_entry(spec)
    classes = 1000 if num_classes is None else num_classes
    chans = {} if in_chans is None else {"in_chans": in_chans}
    if spec.endswith((".json", ".py")):
        model = mobile_cv.build_model(load_arch_def_file(spec), num_classes=classes, **chans)
        name = os.path.splitext(os.path.basename(spec))[0]
    elif entry is not None:  # zoo entries win over registered archs of the same name
        model = zoo.create_model(
            entry.name, pretrained=pretrained, num_classes=num_classes, cache_dir=cache_dir, **chans
        )
        name = entry.name
    elif spec in arch_defs.names("model"):
        model, name = mobile_cv.build_model(spec, num_classes=classes, **chans), spec
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


# --------------------------------------------------------------------------- #
# ExecuTorch
# --------------------------------------------------------------------------- #


def _require_executorch() -> None:
    try:
        import executorch.exir  # noqa: F401
        import torchao.quantization.pt2e  # noqa: F401
    except ImportError as e:
        raise ExportError(f"the executorch format needs executorch and torchao ({e}): {EXECUTORCH_PACKAGES}") from e


def _torch_export(model: torch.nn.Module, example: torch.Tensor) -> "torch.export.ExportedProgram":
    with torch.no_grad():
        return torch.export.export(model, (example,))


def _lower(exported: "torch.export.ExportedProgram") -> bytes:
    """Edge dialect -> XNNPACK delegate -> ExecuTorch program bytes; checks the runtime has every kernel."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    _check_kernels(program)
    return program.buffer


def _check_kernels(program) -> None:
    """Refuse a program that calls an operator the ExecuTorch runtime has no kernel for."""
    from executorch.runtime import Runtime

    needed = {
        f"{op.name}.{op.overload}" if op.overload else op.name
        for plan in program.executorch_program.execution_plan
        for op in plan.operators
    }
    missing = sorted(needed - Runtime.get().operator_registry.operator_names)
    if missing:
        raise ExportError(
            f"operator {missing[0]} has no kernel in the ExecuTorch runtime (not delegated to XNNPACK, not in the "
            f"portable kernels){'; also: ' + ', '.join(missing[1:]) if missing[1:] else ''}; replace it in the model"
        )


_OP_PATTERN = re.compile(r"\baten(?:\.|::)\w+(?:\.\w+)?")


def _op_base(op: str) -> str:
    """``"aten.special_bessel_j0.default"`` -> ``"special_bessel_j0"``."""
    return re.split(r"\.|::", op)[1]


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def _module_calls(model: torch.nn.Module, example: torch.Tensor) -> List[Tuple[str, torch.nn.Module, tuple]]:
    """``(qualified name, module, positional args)`` of every submodule an eager forward calls, first call each."""
    names = {id(m): n for n, m in model.named_modules() if n}
    calls: Dict[int, Tuple[str, torch.nn.Module, tuple]] = {}

    def record(module, args):
        if id(module) in names and id(module) not in calls and all(isinstance(a, torch.Tensor) for a in args):
            calls[id(module)] = (names[id(module)], module, tuple(a.detach().clone() for a in args))

    hooks = [m.register_forward_pre_hook(record) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(example)
    except Exception:  # the eager forward fails too: nothing to narrow down
        return []
    finally:
        for h in hooks:
            h.remove()
    return list(calls.values())


def _locate(
    model: torch.nn.Module, example: torch.Tensor, attempt: Callable[[torch.nn.Module, tuple], object]
) -> Optional[Tuple[str, torch.nn.Module, BaseException]]:
    """The smallest submodule for which ``attempt`` fails, with its error (``None`` if none does in time).

    Submodules are tried from the fewest descendants up, so when one fails all of its own
    submodules have passed: the failing code is its own forward.
    """
    calls = sorted(_module_calls(model, example), key=lambda c: sum(1 for _ in c[1].modules()))
    deadline = time.monotonic() + _LOCATE_SECONDS
    quiet = logging.getLogger("torch")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # torch.export logs each failing fragment's graph
    try:
        for name, module, args in calls:
            if time.monotonic() > deadline:
                return None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    attempt(module, args)
            except Exception as e:
                return name, module, e
    finally:
        quiet.setLevel(level)
    return None


class _Isolated(torch.nn.Module):
    """A submodule exported on its own, on copies of its inputs (an in-place op must not hit a graph input)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: torch.Tensor):
        return self.module(*(a.clone() for a in args))


def _describe(error: BaseException) -> str:
    ops = _OP_PATTERN.findall(str(error))
    if ops:
        return f"operator {ops[0]}"
    if "DataDependent" in type(error).__name__:
        return "data-dependent Python control flow (a tensor's value used as a bool or number)"
    return "an operation"


def _export_error(model: torch.nn.Module, example: torch.Tensor, stage: str, error: BaseException) -> ExportError:
    """An :class:`ExportError` naming the operator (when the message does) and the module that fails."""
    ops = _OP_PATTERN.findall(str(error))

    def attempt(module, args):
        try:
            exported = torch.export.export(_Isolated(module).eval(), args)
            # lowering is slow: only fragments that hold the named op
            if stage != "torch.export" and (not ops or _op_base(ops[0]) in str(exported.graph)):
                _lower(exported)
        except Exception as e:
            if not ops or ops[0] in str(e):  # the same failure, not another one of exporting a fragment
                raise
            return

    found = _locate(model, example, attempt)
    cause = found[2] if found else error
    where = (
        f" in module {found[0]!r} ({type(found[1]).__module__}.{type(found[1]).__qualname__})"
        if found
        else f" of {type(model).__name__}"
    )
    return ExportError(
        f"ExecuTorch export failed at {stage}: {_describe(cause)}{where} cannot be exported; "
        f"rewrite or replace that module ({_first_line(cause)})"
    )


def _program(model: torch.nn.Module, example: torch.Tensor, quantize: Optional[Callable] = None) -> bytes:
    """``.pte`` bytes of ``model`` on inputs shaped like ``example``; errors name the failing op and module."""
    _require_executorch()
    stage = "torch.export"
    try:
        exported = _torch_export(model, example)
        if quantize is not None:
            stage = "int8 quantization (PT2E)"
            exported = quantize(model, example)
        stage = "lowering to ExecuTorch (edge dialect, XNNPACK)"
        return _lower(exported)
    except ExportError:
        raise
    except Exception as e:
        raise _export_error(model, example, stage, e) from e


def _write(buffer: bytes, path: str) -> str:
    with open(path, "wb") as f:
        f.write(buffer)
    return path


def export_executorch(model: torch.nn.Module, example: torch.Tensor, path: str) -> str:
    """Save fp32 ``model`` as an ExecuTorch ``.pte`` (XNNPACK-delegated) for inputs shaped like ``example``."""
    return _write(_program(model.eval(), example), path)


def _pt2e_quantize(calibration: torch.Tensor, batch: int = 32) -> Callable:
    """(model, example) -> quantized exported program (XNNPACK symmetric int8, per-channel weights).

    Calibration runs ``batch`` images at a time through a graph exported with a dynamic batch
    dimension; the converted model is then exported again for the batch of ``example``.
    """

    def quantize(model: torch.nn.Module, example: torch.Tensor) -> "torch.export.ExportedProgram":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        two = torch.cat([calibration[:2], calibration[:1]])[:2]  # a batch of 1 would specialise the dimension
        dims = ({0: torch.export.Dim("batch", min=1, max=max(batch, 2))},)
        with torch.no_grad():
            graph = torch.export.export(model, (two,), dynamic_shapes=dims).module()
            prepared = prepare_pt2e(graph, quantizer)
            for i in range(0, len(calibration), batch):
                prepared(calibration[i : i + batch])
            return torch.export.export(convert_pt2e(prepared), (example,))

    return quantize


def _no_calibration_error() -> ValueError:
    return ValueError(
        "int8 export needs real calibration images (e.g. --calib-data configs/train_embedded_mnist.yaml); "
        "random noise would set the activation ranges wrong. Pass allow_random_calibration=True "
        "(--allow-random-calib) only if accuracy does not matter"
    )


def export_executorch_int8(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: str,
    calibration: Optional[torch.Tensor] = None,
    allow_random_calibration: bool = False,
    seed: int = 0,
) -> str:
    """Save ``model`` as an int8 ExecuTorch ``.pte`` (PT2E static quantization, XNNPACK).

    Args:
        calibration: real images ``(N, C, H, W)`` for the activation ranges
            (:func:`load_images` reads them from a data config).
        allow_random_calibration: without ``calibration``, calibrate on 32 random-noise
            images instead of refusing (the ranges then fit noise, not images: for latency
            measurements, not for accuracy).
    """
    if calibration is None:
        if not allow_random_calibration:
            raise _no_calibration_error()
        calibration = torch.randn(32, *example.shape[1:], generator=torch.Generator().manual_seed(seed))
    if tuple(calibration.shape[1:]) != tuple(example.shape[1:]):
        raise ValueError(
            f"calibration images are {tuple(calibration.shape[1:])}, the model takes {tuple(example.shape[1:])}"
        )
    return _write(_program(model.eval(), example, _pt2e_quantize(calibration)), path)


def load_executorch(path: str):
    """The ``forward`` method of a ``.pte`` file, loaded by ExecuTorch's Python runtime."""
    _require_executorch()
    from executorch.runtime import Runtime

    return Runtime.get().load_program(Path(path)).load_method("forward")


def run_executorch(path: str, inputs: torch.Tensor, method=None) -> torch.Tensor:
    """Outputs of the ``.pte`` at ``path`` on ``inputs``, one image at a time (the program takes batch 1)."""
    method = method or load_executorch(path)
    return torch.cat([method.execute((inputs[i : i + 1].contiguous(),))[0].clone() for i in range(len(inputs))])


def check_executorch(path: str, model: torch.nn.Module, inputs: torch.Tensor) -> float:
    """Max abs difference between ExecuTorch running the saved ``.pte`` and ``model`` on ``inputs``."""
    with torch.no_grad():
        return (run_executorch(path, inputs) - model(inputs)).abs().max().item()


def load_images(
    config_file: str, input_size: int, splits: Sequence[str] = ("train",), limit: int = 0
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of ``splits`` of the dataset a config's DATA section names, at ``input_size``.

    ``limit`` keeps the first images of each split (a fixed, class-mixed order).
    """
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    check_config(cfg)
    cfg.DATA.INPUT_SIZE = input_size
    kwargs = dict(dataset_kwargs(cfg), limit=limit)
    images, labels = [], []
    for split in splits:
        ds = build_dataset(cfg.DATA.NAME, split, **kwargs)
        images.extend(ds[i][0] for i in range(len(ds)))
        labels.extend(ds[i][1] for i in range(len(ds)))
    return torch.stack(images), torch.tensor(labels)


def check_accuracy(
    path: str, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, source: str = ""
) -> AccuracyCheck:
    """Top-1 (%) of ``model`` and of the ``.pte`` at ``path`` on the same labelled images."""
    with torch.no_grad():
        eager = torch.cat([model(images[i : i + 100]) for i in range(0, len(images), 100)])
    exported = run_executorch(path, images)
    pred, exported_pred = eager.argmax(1), exported.argmax(1)
    pct = 100.0 / len(labels)
    return AccuracyCheck(
        images=len(labels),
        eager_top1=(pred == labels).sum().item() * pct,
        exported_top1=(exported_pred == labels).sum().item() * pct,
        agreement=(pred == exported_pred).sum().item() * pct,
        max_abs_diff=(exported - eager).abs().max().item(),
        source=source,
    )


def _check_channels(images: torch.Tensor, in_chans: int, config_file: str) -> None:
    if images.shape[1] != in_chans:
        raise ValueError(
            f"the data of {config_file} has {images.shape[1]} channel(s), the model takes {in_chans}; "
            f"calibrate on a dataset of the kind the model was trained on"
        )


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
        _check_channels(calibration, example.shape[1], calib_data)
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
    formats: Sequence[str] = DEFAULT_FORMATS,
    opset: int = ONNX_MIN_OPSET,
    batch: int = 2,
    torchscript_method: str = "script",
    seed: int = 0,
    *,
    int8: bool = False,
    calib_data: Optional[str] = None,
    allow_random_calibration: bool = False,
    calib_images: int = CALIB_IMAGES,
) -> Dict[str, ExportResult]:
    """Export ``model`` (BN folded) to ``out_dir/name.{pt,onnx,pte}`` and compare each file with eager outputs.

    The export traces a batch of 1 and the check runs a random batch of ``batch``
    images, so a batch dimension that did not stay dynamic fails the check (the
    ExecuTorch program is for a batch of 1, the phone case: its check runs the images
    one by one). ``int8`` (with ``"executorch"`` in ``formats``) adds ``name_int8.pte``,
    calibrated on ``calib_images`` train images of the data config ``calib_data`` and
    checked on its val+test splits (``result.accuracy``).
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export format {unknown[0]!r}; valid: {list(FORMATS)}")
    if int8 and "executorch" not in formats:
        raise ValueError("int8 export is an ExecuTorch export: add 'executorch' to the formats")
    if int8 and not calib_data and not allow_random_calibration:
        raise _no_calibration_error()
    model = model.eval()
    folded = mobile_cv.fuse_for_inference(model)
    os.makedirs(out_dir, exist_ok=True)
    in_chans = int(getattr(model, "in_chans", 3))
    example = torch.zeros(1, in_chans, input_size, input_size)
    inputs = torch.randn(batch, in_chans, input_size, input_size, generator=torch.Generator().manual_seed(seed))
    results = {}
    if "torchscript" in formats:
        path = export_torchscript(folded, example, os.path.join(out_dir, f"{name}.pt"), torchscript_method)
        results["torchscript"] = ExportResult(path, check_torchscript(path, model, inputs), os.path.getsize(path))
    if "onnx" in formats:
        path = export_onnx(folded, example, os.path.join(out_dir, f"{name}.onnx"), opset)
        results["onnx"] = ExportResult(path, check_onnx(path, model, inputs), os.path.getsize(path))
    if "executorch" in formats:
        path = export_executorch(folded, example, os.path.join(out_dir, f"{name}.pte"))
        results["executorch"] = ExportResult(path, check_executorch(path, model, inputs), os.path.getsize(path))
    if int8:
        path = os.path.join(out_dir, f"{name}_int8.pte")
        results["executorch_int8"] = _executorch_int8(
            model, folded, example, inputs, path, calib_data, allow_random_calibration, calib_images
        )
    return results
