"""Fail fast on memory: what one training (or search) step will need, from the meta-device build.

The model is built on the meta device (shapes, no storage) and one forward pass is run there on a
batch of the configured size and resolution, counting every tensor autograd saves for the
backward pass. With the weights, their gradients and the optimizer's state, that is the step's
peak to within the allocator's overhead; :func:`check_memory` compares it with what the machine
(CPU: available RAM, cgroup limit included) or the GPU has free, before anything is allocated.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..errors import UserError

logger = logging.getLogger("mobile_cv.engine")

GB = 1e9


class OutOfMemoryError(UserError, MemoryError):
    """The run would need more memory than the machine or the GPU has."""


@dataclass
class MemoryEstimate:
    """Bytes of one step: weights, their gradients, optimizer state, saved activations (and the
    largest activation gradient alive during the backward pass), the input batch."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    batch: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.batch

    def describe(self) -> str:
        parts = (
            ("weights", self.weights),
            ("gradients", self.gradients),
            ("optimizer", self.optimizer),
            ("activations", self.activations),
            ("batch", self.batch),
        )
        return f"{self.total / GB:.2f} GB (" + ", ".join(f"{k} {v / GB:.2f}" for k, v in parts) + ")"


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def estimate_step_memory(
    model: nn.Module,
    input_shape: "tuple[int, ...]",
    forward: Optional[Callable[[nn.Module, torch.Tensor], torch.Tensor]] = None,
    optimizer_slots: int = 1,
    checkpointed: Optional[List[nn.Module]] = None,
) -> MemoryEstimate:
    """The memory of one training step of ``model`` (on the meta device) on a batch of ``input_shape``.

    Args:
        forward: ``(model, x) -> logits`` (default ``model(x)``), e.g. the supernet with its mixing.
        optimizer_slots: state tensors per weight (SGD with momentum: 1, Adam: 2).
        checkpointed: modules run under activation checkpointing: only their inputs are kept,
            and one module's activations are recomputed at a time in the backward pass.
    """
    params = {id(p) for p in model.parameters()}
    weights = sum(_nbytes(p) for p in model.parameters())
    trainable = sum(_nbytes(p) for p in model.parameters() if p.requires_grad)
    saved = {"bytes": 0, "largest": 0}
    seen: Dict[int, torch.Tensor] = {}  # keeps each saved tensor alive so ids stay unique

    def pack(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in seen and id(t) not in params:
            seen[id(t)] = t
            saved["bytes"] += _nbytes(t)
            saved["largest"] = max(saved["largest"], _nbytes(t))
        return t

    per_block: List[tuple] = []  # (bytes saved inside the module, bytes of its input)
    handles = []
    for m in checkpointed or ():

        def pre(mod, args, _m=m):
            _m._mem_start = saved["bytes"]

        def post(mod, args, out, _m=m):
            x = args[0] if args else None
            per_block.append((saved["bytes"] - _m._mem_start, _nbytes(x) if isinstance(x, torch.Tensor) else 0))

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    x = torch.empty(input_shape, device="meta")
    was_training = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = forward(model, x) if forward is not None else model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    activations = saved["bytes"] + _nbytes(out)
    if per_block:  # checkpointed: each block keeps its input; the largest block is recomputed in backward
        inside = sum(b for b, _ in per_block)
        activations += -inside + sum(i for _, i in per_block) + max(b for b, _ in per_block)
    activations += 2 * saved["largest"]  # a gradient and its result alive at once in the backward pass
    return MemoryEstimate(
        weights=weights,
        gradients=trainable,
        optimizer=optimizer_slots * trainable,
        activations=activations,
        batch=_nbytes(x),
    )


def _cgroup_free() -> Optional[int]:
    """Bytes the cgroup (container) limit leaves, if there is a limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            return max(int(limit) - usage, 0)
    return None


def available_memory(device: torch.device) -> Optional[int]:
    """Free bytes where the step runs: the GPU's free memory, or the RAM available to this process
    (MemAvailable, capped by a cgroup limit). None when it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    free: Optional[int] = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if free is None and hasattr(os, "sysconf"):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            pass
    cgroup = _cgroup_free()
    if cgroup is not None:
        free = cgroup if free is None else min(free, cgroup)
    return free


def check_memory(
    estimate: MemoryEstimate,
    device: torch.device,
    what: str,
    processes: int = 1,
    refuse: bool = True,
    available: Optional[int] = None,
) -> Tuple[int, str]:
    """Refuse (:class:`OutOfMemoryError`) or, with ``refuse=False``, warn about a step that needs
    more than is free; returns ``(logging level, line)`` to log (the caller's logger may not be
    set up yet).

    ``processes``: ranks sharing this memory (the CPU ranks of one machine); ``what`` names the
    run in the message, e.g. "FBNetV2_L2 at 1024px, batch 256".
    """
    free = available_memory(device) if available is None else available
    if free is None:
        return logging.INFO, f"memory: one step of {what} needs about {estimate.describe()}; free memory unknown"
    need = estimate.total * processes
    where = "GPU memory free" if device.type == "cuda" else "RAM available"
    per = f" x {processes} processes" if processes > 1 else ""
    needs = f"one step of {what} needs about {estimate.describe()}{per}"
    free_gb = f"{free / GB:.2f} GB {where}"
    if need <= free:
        return logging.INFO, f"memory: {needs}, and {free_gb}"
    short = f"{needs}, but only {free_gb}"
    if refuse:
        advice = "lower SOLVER.BATCH_SIZE / SEARCH.BATCH_SIZE or DATA.INPUT_SIZE"
        raise OutOfMemoryError(f"{short}; {advice}, or set MEMORY_CHECK warn to start anyway")
    return logging.WARNING, f"{short}; starting anyway (MEMORY_CHECK warn)"
