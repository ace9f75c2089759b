"""Loading state dicts with errors that say what does not fit.

``torch.nn.Module.load_state_dict`` reports a wrong checkpoint as one long wall of
keys (or a size-mismatch RuntimeError from deep inside). Here the first few
missing, unexpected and wrongly-shaped keys are listed, with the counts.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

import torch
from torch import nn

from .errors import UserError

SHOW = 5


class CheckpointMismatchError(UserError, RuntimeError):
    """A state dict's keys or shapes do not fit the model."""


def extract_state_dict(obj: Any, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The model weights inside a loaded checkpoint object.

    Accepts a bare state dict or the published FBNet layout (``{"model_ema": ...,
    "state_dict": ...}``, EMA weights preferred); strips a ``module.`` prefix left by
    DistributedDataParallel.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointMismatchError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    for key in ("model_ema", "state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointMismatchError(
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


def describe_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> str:
    """A readable description of what does not fit ("" when everything fits)."""
    missing, unexpected, wrong = state_dict_mismatches(model, state_dict)
    if not (missing or unexpected or wrong):
        return ""
    name = getattr(model, "arch_name", None) or type(model).__name__
    parts = [f"{source} does not fit model {name!r}:"]
    if wrong:
        parts.append(
            f"  {len(wrong)} key(s) with another shape, first: "
            + "; ".join(f"{k} checkpoint {list(a)} vs model {list(b)}" for k, a, b in wrong[:SHOW])
        )
    if missing:
        parts.append(f"  {len(missing)} key(s) missing from the checkpoint, first: {', '.join(missing[:SHOW])}")
    if unexpected:
        parts.append(f"  {len(unexpected)} unexpected key(s) in the checkpoint, first: {', '.join(unexpected[:SHOW])}")
    parts.append("  (is it a checkpoint of another architecture, or of another num_classes?)")
    return "\n".join(parts)


def load_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True, source: str = "checkpoint"
) -> None:
    """Load ``state_dict`` into ``model``; with ``strict`` any mismatch raises :class:`CheckpointMismatchError`.

    Without ``strict``, missing and unexpected keys are allowed but a key with the
    wrong shape still raises (torch would raise anyway, less readably).
    """
    missing, unexpected, wrong = state_dict_mismatches(model, state_dict)
    if wrong or (strict and (missing or unexpected)):
        raise CheckpointMismatchError(describe_mismatch(model, state_dict, source))
    model.load_state_dict(state_dict, strict=strict)
