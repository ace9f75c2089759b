"""The runtimes a latency is measured in, as the latency tables use them: each is the registered
runtime of :mod:`mobile_cv.export.runtimes` (the one registry export, tables and benchmarks share)
that can be timed: ``"executorch"`` (the phone runtime, the default where installed; fp32, or PT2E
int8 with ``int8``), ``"onnxruntime"`` (CPU provider), ``"eager"`` (PyTorch, BatchNorm folded).

A runtime is used in two steps, so that the slow one can run in worker processes while nothing is
being timed: :func:`compile_module` (export and lower: bytes, or the module itself for eager) and
:func:`load_runner` (a zero-argument callable running the program once on its input). Every module
is exported with its BatchNorms folded; an ExecuTorch program reads its input in place (no copy
into a buffer of its own), as a block inside a model reads its predecessor's output.
"""

from __future__ import annotations

import platform
from typing import Callable, Dict

import torch

from ..arch.fuse import fuse_for_inference
from ..export.runtimes import RuntimeUnavailableError, get_runtime, timed_runtimes

RUNTIMES = timed_runtimes()  # ("executorch", "onnxruntime", "eager")


def check_runtime(name: str, int8: bool = False) -> None:
    """Refuse an unknown or uninstalled runtime (and int8 outside ExecuTorch) in one line."""
    if name not in timed_runtimes():
        raise RuntimeUnavailableError(f"unknown runtime {name!r}; valid: {list(timed_runtimes())}")
    get_runtime(name).require(int8)


def default_runtime() -> str:
    """ExecuTorch where it is installed, else ONNX Runtime, else eager PyTorch."""
    for name in timed_runtimes():
        try:
            check_runtime(name)
            return name
        except RuntimeUnavailableError:
            continue
    return "eager"


def versions(name: str) -> Dict[str, str]:
    """The versions that decide the measurement: torch, the runtime's package, Python."""
    return get_runtime(name).versions()


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
    get_runtime(name).set_threads(threads)


def compile_module(name: str, module: torch.nn.Module, example: torch.Tensor, int8: bool = False):
    """What :func:`load_runner` runs: ``.pte`` bytes (executorch), ``.onnx`` bytes (onnxruntime), or
    the folded eval-mode module (eager). int8 is calibrated on random noise: for speed only."""
    return get_runtime(name).compile(fuse_for_inference(module.eval()), example, int8)


def load_runner(name: str, compiled, example: torch.Tensor, threads: int) -> Callable[[], object]:
    """A zero-argument callable that runs the compiled program once on ``example``."""
    return get_runtime(name).load(compiled, example, threads)
