"""TorchScript export of a model, and the check of the saved file against the eager model."""

from __future__ import annotations

import warnings

import torch

from ..atomic_files import atomic_write
from .errors import ExportSettingsError


def torchscript_module(model: torch.nn.Module, example: torch.Tensor, method: str = "script"):
    """``model`` as TorchScript by ``"script"`` (default) or ``"trace"`` (for unscriptable custom ops)."""
    if method not in ("script", "trace"):
        raise ExportSettingsError(f"method must be 'script' or 'trace', got {method!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        return torch.jit.script(model) if method == "script" else torch.jit.trace(model, example)


def export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: str, method: str = "script") -> str:
    """Save :func:`torchscript_module` of ``model`` to ``path``."""
    module = torchscript_module(model, example, method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        atomic_write(path, lambda f: torch.jit.save(module, f))
    return path


def check_torchscript(path: str, model: torch.nn.Module, inputs: torch.Tensor) -> float:
    """Max abs difference between the saved TorchScript module and ``model`` on ``inputs``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        loaded = torch.jit.load(path, map_location="cpu").eval()
    with torch.no_grad():
        return (loaded(inputs) - model(inputs)).abs().max().item()
