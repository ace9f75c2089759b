"""Loading state dicts with errors that say what does not fit.

``torch.nn.Module.load_state_dict`` reports weights that do not fit as one long wall of
keys (or a size-mismatch RuntimeError from deep inside). Here the first few
missing, unexpected and wrongly-shaped keys are listed, with the counts.

Weight files are read in either format, by suffix: ``.safetensors`` (the Hugging Face Hub's
format: tensors only, nothing executed) or a PyTorch file through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import pickle
import re
from typing import Any, Dict, List, Mapping, Tuple

import safetensors
import safetensors.torch
import torch
from torch import nn

from ..errors import UserError

logger = logging.getLogger("mobile_cv")

SHOW = 5
SAFETENSORS_SUFFIX = ".safetensors"


def is_safetensors(path: str) -> bool:
    return str(path).endswith(SAFETENSORS_SUFFIX)


def read_weights_file(path: str) -> Any:
    """The object in a weights file on the CPU: a ``.safetensors`` file's tensors as a dict, or
    ``torch.load(path, weights_only=True)``. Errors are the readers' own; pass them to
    :func:`describe_load_failure`."""
    if is_safetensors(path):
        return safetensors.torch.load_file(path, device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def safetensors_bytes(state_dict: Mapping[str, torch.Tensor]) -> bytes:
    """``state_dict`` in the safetensors format (tensors made contiguous, on the CPU)."""
    return safetensors.torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()})


class WeightsMismatchError(UserError, RuntimeError):
    """A state dict's keys or shapes do not fit the model."""


CheckpointMismatchError = WeightsMismatchError  # its name in 0.1 ("checkpoint" now means a run's state)


def extract_state_dict(obj: Any, source: str = "weights") -> Dict[str, torch.Tensor]:
    """The model weights inside a loaded weights file's object.

    Accepts a bare state dict or the published FBNet layout (``{"model_ema": ...,
    "state_dict": ...}``, EMA weights preferred); strips a ``module.`` prefix left by
    DistributedDataParallel.
    """
    if not isinstance(obj, Mapping):
        raise WeightsMismatchError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    for key in ("model_ema", "state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise WeightsMismatchError(
                f"{source}: not a state dict (entry {k!r} is a {type(v).__name__}, expected a tensor)"
            )
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out


def state_dict_mismatches(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> Tuple[List[str], List[str], List[Tuple[str, tuple, tuple]]]:
    """``(missing, unexpected, wrong_shape)`` of ``state_dict`` against ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [
        (k, tuple(state_dict[k].shape), tuple(own[k].shape))
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    return missing, unexpected, wrong


def describe_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "weights") -> str:
    """A readable description of what does not fit ("" when everything fits)."""
    missing, unexpected, wrong = state_dict_mismatches(model, state_dict)
    if not (missing or unexpected or wrong):
        return ""
    name = getattr(model, "arch_name", None) or type(model).__name__
    parts = [f"{source} does not fit model {name!r}:"]
    if wrong:
        parts.append(
            f"  {len(wrong)} key(s) with another shape, first: "
            + "; ".join(f"{k} weights {list(a)} vs model {list(b)}" for k, a, b in wrong[:SHOW])
        )
    if missing:
        parts.append(f"  {len(missing)} key(s) missing from the weights, first: {', '.join(missing[:SHOW])}")
    if unexpected:
        parts.append(f"  {len(unexpected)} unexpected key(s) in the weights, first: {', '.join(unexpected[:SHOW])}")
    parts.append("  (are they the weights of another architecture, or of another num_classes?)")
    return "\n".join(parts)


def load_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True, source: str = "weights"
) -> None:
    """Load ``state_dict`` into ``model``; with ``strict`` any mismatch raises :class:`WeightsMismatchError`.

    Without ``strict``, missing and unexpected keys are allowed but a key with the
    wrong shape still raises (torch would raise anyway, less readably).
    """
    missing, unexpected, wrong = state_dict_mismatches(model, state_dict)
    if wrong or (strict and (missing or unexpected)):
        raise WeightsMismatchError(describe_mismatch(model, state_dict, source))
    check_values(model, state_dict, source)
    model.load_state_dict(state_dict, strict=strict)


def check_values(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "weights") -> None:
    """Refuse a floating-point weight stored as integers or booleans (torch would cast it
    silently) and NaN or infinite weights (the model would only ever output NaN)."""
    own = model.state_dict()
    cast: Dict[Tuple[torch.dtype, torch.dtype], List[str]] = {}
    for k, v in state_dict.items():
        if k not in own:
            continue
        if own[k].is_floating_point() and v.is_floating_point() and v.dtype != own[k].dtype:
            cast.setdefault((v.dtype, own[k].dtype), []).append(k)
        if own[k].is_floating_point() and not v.is_floating_point():
            raise WeightsMismatchError(
                f"{source}: {k!r} holds {v.dtype} values; the model's weight is {own[k].dtype} (not float weights?)"
            )
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise WeightsMismatchError(
                f"{source}: {k!r} holds {bad} NaN/infinite value(s); the file is corrupt or from a diverged run"
            )
    for (stored, wanted), keys in cast.items():  # torch casts silently; a float16 file loses precision
        logger.warning(
            "%s: %d weight(s) stored as %s are loaded into the model's %s (e.g. %r)",
            source,
            len(keys),
            str(stored).replace("torch.", ""),
            str(wanted).replace("torch.", ""),
            keys[0],
        )


def describe_load_failure(source: str, error: Exception) -> str:
    """One readable sentence for a failed :func:`read_weights_file`, without torch's advice to
    pass ``weights_only=False`` (the one thing not to do with a file of unknown origin)."""
    if is_safetensors(source):
        detail = (str(error).strip().splitlines() or [""])[0]
        return (
            f"{source}: not a readable safetensors file ({type(error).__name__}: {detail[:200]}). "
            f"It is truncated, corrupt or another kind of file."
        )
    refused = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
    if isinstance(error, pickle.UnpicklingError) and refused:
        return (
            f"{source}: refused to load: it references the Python object {refused.group(1)}. Weight files are "
            f"loaded with torch.load(weights_only=True), which unpickles only tensors and plain containers, "
            f"because unpickling other objects can run arbitrary code. If you trust the file, re-save its "
            f"weights as a plain state dict: torch.save(model.state_dict(), path)."
        )
    # torch's own message suggests weights_only=False, the one thing not to do with an unknown file
    unpickler = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(error))
    detail = unpickler.group(1) if unpickler else (str(error).strip().splitlines() or [""])[0]
    return (
        f"{source}: not a readable PyTorch file ({type(error).__name__}: {detail[:200]}). "
        f"It is truncated, corrupt or another kind of file (torch.load(weights_only=True) reads only "
        f"tensors and plain containers)."
    )
