"""The runtimes a latency is measured in: how a module is prepared for one and run on a batch of 1.

* ``"executorch"`` (the phone runtime, the default where installed): the module lowered to the
  XNNPACK delegate as tools/export.py does (fp32, or PT2E int8 with ``int8``), run by
  ExecuTorch's Python runtime. The program reads its input in place (no copy into a buffer of
  its own), as a block inside a model reads its predecessor's output;
* ``"onnxruntime"``: the ONNX export of tools/export.py in ONNX Runtime's CPU provider;
* ``"eager"``: PyTorch itself (BatchNorm folded, ``torch.inference_mode``).

A runtime is used in two steps, so that the slow one can run in worker processes while
nothing is being timed: :func:`compile_module` (export and lower: bytes, or the module itself
for eager) and :func:`load_runner` (a zero-argument callable running the program once on its
input). Every module is exported with its BatchNorms folded.
"""

from __future__ import annotations

import io
import platform
from typing import Callable, Dict

import torch

from ..errors import UserError
from ..extras import MissingExtraError, require
from ..fuse import fuse_for_inference

RUNTIMES = ("executorch", "onnxruntime", "eager")


class RuntimeUnavailableError(UserError, RuntimeError):
    """The runtime a latency table is measured in is not installed; the message names the install."""


def check_runtime(name: str, int8: bool = False) -> None:
    """Refuse an unknown or uninstalled runtime (and int8 outside ExecuTorch) in one line."""
    if name not in RUNTIMES:
        raise RuntimeUnavailableError(f"unknown runtime {name!r}; valid: {list(RUNTIMES)}")
    if int8 and name != "executorch":
        raise RuntimeUnavailableError(f"int8 latency is measured in ExecuTorch (PT2E, XNNPACK), not in {name}")
    if name in ("executorch", "onnxruntime"):
        try:
            require("executorch" if name == "executorch" else "onnx", f"the {name} runtime")
        except MissingExtraError as e:
            raise RuntimeUnavailableError(str(e)) from None


def default_runtime() -> str:
    """ExecuTorch where it is installed, else ONNX Runtime, else eager PyTorch."""
    for name in RUNTIMES:
        try:
            check_runtime(name)
            return name
        except RuntimeUnavailableError:
            continue
    return "eager"


def versions(name: str) -> Dict[str, str]:
    """The versions that decide the measurement: torch, the runtime's package, Python."""
    out = {"torch": torch.__version__, "python": platform.python_version()}
    if name == "executorch":
        from importlib.metadata import version

        out["executorch"], out["torchao"] = version("executorch"), version("torchao")
    elif name == "onnxruntime":
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    return out


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> Dict[str, object]:
    """What a timing depends on besides the runtime: the CPU, its logical cores, its caches (as Linux
    reports them), the OS."""
    import os

    caches = {}
    root = "/sys/devices/system/cpu/cpu0/cache"
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        try:
            with open(os.path.join(root, name, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(root, name, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(root, name, "size")) as f:
                size = f.read().strip()
        except OSError:
            continue
        caches[f"L{level}" + ("d" if kind == "Data" else "i" if kind == "Instruction" else "")] = size
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "caches": caches, "os": platform.platform()}


def set_threads(name: str, threads: int) -> None:
    """Use ``threads`` threads in this process for ``name`` (and for torch itself)."""
    torch.set_num_threads(threads)
    if name == "executorch":
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's pool (default: one thread per core)


def compile_module(name: str, module: torch.nn.Module, example: torch.Tensor, int8: bool = False):
    """What :func:`load_runner` runs: ``.pte`` bytes (executorch), ``.onnx`` bytes (onnxruntime), or
    the folded eval-mode module (eager). int8 is calibrated on random noise: for speed only."""
    folded = fuse_for_inference(module.eval())
    if name == "eager":
        return folded
    if name == "onnxruntime":
        from ..export.to_onnx import export_onnx

        buffer = io.BytesIO()
        export_onnx(folded, example, buffer)
        return buffer.getvalue()
    from ..export.quantize import pt2e_quantizer
    from ..export.to_executorch import program_bytes

    quantize = pt2e_quantizer(torch.randn(8, *example.shape[1:], generator=torch.Generator().manual_seed(0)))
    return program_bytes(folded, example, quantize if int8 else None, alloc_graph_input=False)


def load_runner(name: str, compiled, example: torch.Tensor, threads: int) -> Callable[[], object]:
    """A zero-argument callable that runs the compiled program once on ``example``."""
    if name == "eager":

        def run_eager():
            with torch.inference_mode():
                return compiled(example)

        return run_eager
    if name == "onnxruntime":
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(compiled, opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: example.numpy()}
        return lambda: session.run(None, feed)
    from ..export.to_executorch import LoadedMethod

    method = LoadedMethod(compiled)
    inputs = (example.contiguous(),)
    return lambda: method.execute(inputs)
