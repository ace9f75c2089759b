"""The deployment runtimes, each registered once: how a model is exported for it, saved, loaded,
given its threads and run on a batch. tools/export.py (its formats), the latency tables
(mobile_cv/latency) and benchmarks/latency.py all go through this registry.

    rt = get_runtime("executorch")
    program = rt.compile(folded_model, example)          # bytes (a file's content) or a module
    rt.set_threads(1)
    run = rt.load(program, example, threads=1)           # a zero-argument callable: one call
    rt.export(folded_model, example, "out/model.pte")    # the file tools/export.py writes

A runtime with ``format`` set is an export format of tools/export.py (``file`` its suffix); one with
``timed`` set can time a latency table. Adding one is a :class:`Runtime` subclass registered in
:data:`RUNTIMES` (docs/architecture.md#adding-a-runtime).
"""

from __future__ import annotations

import io
import platform
import warnings
from typing import Any, Callable, Dict, Optional

import torch

from ..errors import UserError
from ..extras import MissingExtraError, require
from ..registry import Registry
from .errors import ExportSettingsError

RUNTIMES = Registry("runtime", contract="a Runtime subclass (mobile_cv.export.runtimes)")


class RuntimeUnavailableError(UserError, RuntimeError):
    """A runtime that is not installed (or cannot do what was asked); the message names the install."""


class Runtime:
    """One deployment runtime. ``compile`` returns what ``load`` runs and ``save`` writes."""

    name = ""  # the registered name (set by :func:`get_runtime`)
    format = ""  # tools/export.py's --format name ("" : not an export format)
    file = ""  # the exported file's suffix
    extra = ""  # the package extras.require checks ("" : nothing beyond torch)
    timed = False  # a latency table can be timed in it
    int8 = False  # it runs PT2E int8 programs

    def require(self, int8: bool = False) -> None:
        """Raise :class:`RuntimeUnavailableError` (one line naming the install) where it cannot run."""
        if int8 and not self.int8:
            raise RuntimeUnavailableError(f"int8 latency is measured in ExecuTorch (PT2E, XNNPACK), not in {self.name}")
        if self.extra:
            try:
                require(self.extra, f"the {self.name} runtime")
            except MissingExtraError as e:
                raise RuntimeUnavailableError(str(e)) from None

    def versions(self) -> Dict[str, str]:
        """The package versions that decide a measurement in it."""
        return {"torch": torch.__version__, "python": platform.python_version()}

    def set_threads(self, threads: int) -> None:
        """Use ``threads`` threads in this process (torch's and the runtime's own pool)."""
        torch.set_num_threads(threads)

    def compile(self, folded: torch.nn.Module, example: torch.Tensor, int8: bool = False, **options) -> Any:
        """The program for inputs shaped like ``example`` (a batch of 1), in memory."""
        raise NotImplementedError

    def save(self, program: Any, path: str) -> str:
        """Write a compiled program to ``path`` (all or nothing)."""
        from ..atomic_files import atomic_write_bytes

        atomic_write_bytes(path, program)
        return path

    def export(self, folded: torch.nn.Module, example: torch.Tensor, path: str, **options) -> str:
        """The file tools/export.py writes (``options``: the format's own, e.g. ``opset``)."""
        return self.save(self.compile(folded, example, **options), path)

    def load(self, program: Any, example: torch.Tensor, threads: int) -> Callable[[], Any]:
        """A zero-argument callable running ``program`` once on ``example``."""
        raise NotImplementedError

    def check(self, path: str, model: torch.nn.Module, inputs: torch.Tensor) -> float:
        """Max abs difference between the saved file run here and ``model`` on ``inputs``."""
        raise NotImplementedError


@RUNTIMES.register("eager")
class Eager(Runtime):
    """PyTorch itself (BatchNorm folded, ``torch.inference_mode``)."""

    timed = True

    def compile(self, folded, example, int8=False, **options):
        return folded

    def load(self, program, example, threads):
        def run():
            with torch.inference_mode():
                return program(example)

        return run


@RUNTIMES.register("torchscript")
class TorchScript(Runtime):
    format, file = "torchscript", ".pt"

    def compile(self, folded, example, int8=False, method: str = "script", **options):
        from .to_torchscript import torchscript_module

        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            torch.jit.save(torchscript_module(folded, example, method), buffer)
        return buffer.getvalue()

    def load(self, program, example, threads):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            module = torch.jit.load(io.BytesIO(program) if isinstance(program, bytes) else program).eval()
        return Eager().load(module, example, threads)

    def check(self, path, model, inputs):
        from .to_torchscript import check_torchscript

        return check_torchscript(path, model, inputs)


@RUNTIMES.register("onnxruntime")
class OnnxRuntime(Runtime):
    """ONNX in ONNX Runtime's CPU provider. The file tools/export.py writes comes from the dynamo
    exporter (the TorchScript-based one where that cannot: :func:`~.to_onnx.export_onnx`); a latency
    table's block programs from the TorchScript-based one (70x faster to export, thousands of them)."""

    format, file, extra, timed = "onnx", ".onnx", "onnx", True

    def versions(self):
        import onnxruntime

        return {**super().versions(), "onnxruntime": onnxruntime.__version__}

    def compile(self, folded, example, int8=False, opset: Optional[int] = None, exporter="torchscript", **options):
        from .to_onnx import export_onnx

        buffer = io.BytesIO()
        export_onnx(folded, example, buffer, opset, exporter)
        return buffer.getvalue()

    def export(self, folded, example, path, opset: Optional[int] = None, exporter="dynamo", **options):
        from .to_onnx import export_onnx

        return export_onnx(folded, example, path, opset, exporter)

    def load(self, program, example, threads):
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(program, opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: example.numpy()}
        return lambda: session.run(None, feed)

    def check(self, path, model, inputs):
        from .to_onnx import check_onnx

        return check_onnx(path, model, inputs)


@RUNTIMES.register("executorch")
class ExecuTorch(Runtime):
    """The phone runtime: the XNNPACK delegate, fp32 or PT2E int8, run by ExecuTorch's Python runtime."""

    format, file, extra, timed, int8 = "executorch", ".pte", "executorch", True, True

    def versions(self):
        from importlib.metadata import version

        return {**super().versions(), "executorch": version("executorch"), "torchao": version("torchao")}

    def set_threads(self, threads):
        super().set_threads(threads)
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's pool (default: one thread per core)

    def compile(self, folded, example, int8=False, calibration=None, in_place: bool = True, **options):
        """``in_place``: the program reads the caller's input tensor in place (no copy into a buffer
        of its own), as a block inside a model reads its predecessor's output; latency tables time
        so. int8 without ``calibration`` images is calibrated on random noise: for speed only."""
        from .quantize import pt2e_quantizer
        from .to_executorch import program_bytes

        quantize = None
        if int8:
            if calibration is None:
                calibration = torch.randn(8, *example.shape[1:], generator=torch.Generator().manual_seed(0))
            quantize = pt2e_quantizer(calibration)
        return program_bytes(folded.eval(), example, quantize, alloc_graph_input=not in_place)

    def export(self, folded, example, path, **options):
        return self.save(self.compile(folded, example, in_place=False), path)

    def load(self, program, example, threads):
        from .to_executorch import LoadedMethod, require_executorch

        require_executorch()
        method = LoadedMethod(program)
        inputs = (example.contiguous(),)
        return lambda: method.execute(inputs)

    def check(self, path, model, inputs):
        from .to_executorch import check_executorch

        return check_executorch(path, model, inputs)


@RUNTIMES.register("pt2")
class Pt2(Runtime):
    """``torch.export`` programs (``.pt2``), run by ``torch.export.load(...).module()``."""

    format, file = "pt2", ".pt2"

    def compile(self, folded, example, int8=False, **options):
        from .to_pt2 import exported_program

        buffer = io.BytesIO()
        torch.export.save(exported_program(folded, example), buffer)
        return buffer.getvalue()

    def load(self, program, example, threads):
        module = torch.export.load(io.BytesIO(program) if isinstance(program, bytes) else program).module()
        return Eager().load(module, example, threads)

    def check(self, path, model, inputs):
        from .to_pt2 import check_pt2

        return check_pt2(path, model, inputs)


def get_runtime(name: str) -> Runtime:
    """The registered runtime ``name`` (an instance); a miss names the registered ones."""
    rt = RUNTIMES.get(name)()
    rt.name = name
    return rt


def runtime_of_format(fmt: str) -> Runtime:
    """The runtime of tools/export.py's ``--format fmt``; an unknown format names the valid ones."""
    for name in RUNTIMES.names():
        if RUNTIMES.get(name).format == fmt:
            return get_runtime(name)
    raise ExportSettingsError(f"unknown export format {fmt!r}; valid: {list(export_formats())}")


def export_formats() -> tuple:
    """tools/export.py's formats: the registered runtimes that write a file, in registration order."""
    return tuple(RUNTIMES.get(name).format for name in RUNTIMES.registered() if RUNTIMES.get(name).format)


PREFERRED_FORMATS = ("executorch", "pt2", "onnx")  # what to deploy from today, in that order


def default_formats() -> tuple:
    """tools/export.py's default formats: ExecuTorch (.pte), torch.export (.pt2) and ONNX, those
    installed here; TorchScript (deprecated upstream) is one ``--formats torchscript`` away."""
    out = []
    for fmt in PREFERRED_FORMATS:
        try:
            runtime_of_format(fmt).require()
        except RuntimeUnavailableError:
            continue
        out.append(fmt)
    return tuple(out)


def timed_runtimes() -> tuple:
    """The runtimes a latency table can be timed in, the phone runtime first."""
    names = [n for n in RUNTIMES.registered() if RUNTIMES.get(n).timed]
    return tuple(sorted(names, key=lambda n: (n != "executorch", n == "eager", n)))
