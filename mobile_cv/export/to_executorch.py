"""ExecuTorch export (the phone runtime): ``torch.export`` -> ``to_edge_transform_and_lower`` with the
XNNPACK partitioner -> ``.pte``, for a batch of 1; and running a ``.pte`` in ExecuTorch's Python
runtime. Needs ``executorch`` and ``torchao`` (the ``executorch`` extra), imported when used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch

from ..atomic_files import atomic_write_bytes
from ..extras import require
from .errors import ExportError
from .locate import export_error


def require_executorch() -> None:
    require("executorch", "the executorch format")


def torch_export(model: torch.nn.Module, example: torch.Tensor) -> "torch.export.ExportedProgram":
    with torch.no_grad():
        return torch.export.export(model, (example,))


def lower(exported: "torch.export.ExportedProgram", alloc_graph_input: bool = True) -> bytes:
    """Edge dialect -> XNNPACK delegate -> ExecuTorch program bytes; checks the runtime has every kernel.

    Args:
        alloc_graph_input: the program owns its input buffer (the runtime copies each input into
            it). False: it reads the caller's tensor in place, as a block inside a model reads its
            predecessor's output (latency tables time blocks so).
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass

    config = ExecutorchBackendConfig(memory_planning_pass=MemoryPlanningPass(alloc_graph_input=alloc_graph_input))
    program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch(config)
    check_kernels(program)
    return program.buffer


def check_kernels(program) -> None:
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


def program_bytes(
    model: torch.nn.Module, example: torch.Tensor, quantize: Optional[Callable] = None, alloc_graph_input: bool = True
) -> bytes:
    """``.pte`` bytes of ``model`` on inputs shaped like ``example``; errors name the failing op and module."""
    require_executorch()
    stage = "torch.export"
    try:
        exported = torch_export(model, example)
        if quantize is not None:
            stage = "int8 quantization (PT2E)"
            exported = quantize(model, example)
        stage = "lowering to ExecuTorch (edge dialect, XNNPACK)"
        return lower(exported, alloc_graph_input)
    except ExportError:
        raise
    except Exception as e:
        raise export_error(model, example, stage, e, lower) from e


def write_bytes(buffer: bytes, path: str) -> str:
    atomic_write_bytes(path, buffer)
    return path


def export_executorch(model: torch.nn.Module, example: torch.Tensor, path: str) -> str:
    """Save fp32 ``model`` as an ExecuTorch ``.pte`` (XNNPACK-delegated) for inputs shaped like ``example``."""
    return write_bytes(program_bytes(model.eval(), example), path)


class LoadedMethod:
    """A program's ``forward`` method loaded by ExecuTorch's Python runtime, holding the program
    (the method points into it: a method whose program is garbage-collected crashes the runtime)."""

    def __init__(self, source) -> None:
        from executorch.runtime import Runtime

        self.source = source  # the bytes, when loaded from memory, must outlive the program too
        self.program = Runtime.get().load_program(source)
        self.method = self.program.load_method("forward")

    def execute(self, inputs):
        return self.method.execute(inputs)


def load_executorch(path: str) -> LoadedMethod:
    """The ``forward`` method of a ``.pte`` file, loaded by ExecuTorch's Python runtime."""
    require_executorch()
    return LoadedMethod(Path(path))


def run_executorch(path: str, inputs: torch.Tensor, method=None) -> torch.Tensor:
    """Outputs of the ``.pte`` at ``path`` on ``inputs``, one image at a time (the program takes batch 1)."""
    method = method or load_executorch(path)
    return torch.cat([method.execute((inputs[i : i + 1].contiguous(),))[0].clone() for i in range(len(inputs))])


def check_executorch(path: str, model: torch.nn.Module, inputs: torch.Tensor) -> float:
    """Max abs difference between ExecuTorch running the saved ``.pte`` and ``model`` on ``inputs``."""
    with torch.no_grad():
        return (run_executorch(path, inputs) - model(inputs)).abs().max().item()
