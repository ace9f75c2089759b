"""``torch.export`` programs (``.pt2``): the format the PyTorch deployment stack now starts from
(ExecuTorch, AOTInductor, the dynamo ONNX exporter all take an ``ExportedProgram``), and the check of
the saved file against the eager model."""

from __future__ import annotations

import torch

from ..atomic_files import atomic_write

MAX_BATCH = 1024  # the dynamic batch dimension's upper bound


def exported_program(model: torch.nn.Module, example: torch.Tensor) -> "torch.export.ExportedProgram":
    """``torch.export.export(model)`` with a dynamic batch dimension (1..MAX_BATCH)."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # an example of batch 2: torch.export specialises a dimension it sees as 1
    example2 = example.expand(2, *example.shape[1:]).contiguous()
    return torch.export.export(model.eval(), (example2,), dynamic_shapes=({0: batch},))


def export_pt2(model: torch.nn.Module, example: torch.Tensor, path: str) -> str:
    """Save :func:`exported_program` of ``model`` to ``path``."""
    program = exported_program(model, example)
    atomic_write(path, lambda f: torch.export.save(program, f))
    return path


def check_pt2(path: str, model: torch.nn.Module, inputs: torch.Tensor) -> float:
    """Max abs difference between the saved program (``torch.export.load``) and ``model`` on ``inputs``."""
    loaded = torch.export.load(path).module()
    with torch.no_grad():
        return (loaded(inputs) - model(inputs)).abs().max().item()
