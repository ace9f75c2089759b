"""Fail fast on memory: what one training (or search) step will need, from a meta-device twin.

The model's twin on the meta device (:func:`meta_twin`: its modules, shapes, no storage) runs the
step's forward and backward passes on a batch of the configured size and resolution, following every tensor
from the op that makes it to the moment autograd frees it (:class:`LiveTensors`). With the
weights and the optimizer's state, that high-water mark is the step's peak to within the
allocator's overhead; :func:`check_memory` compares it with what the machine (CPU: available RAM,
cgroup limit included) or the GPU has free, before anything is allocated.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import weakref
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, List, Optional, Sequence, Set, Tuple

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..errors import UserError

logger = logging.getLogger("mobile_cv.engine")

GB = 1e9


class OutOfMemoryError(UserError, MemoryError):
    """The run would need more memory than the machine or the GPU has."""


@dataclass
class MemoryEstimate:
    """Bytes of one step: weights, optimizer state, the passes' high-water mark (activations,
    temporaries and gradients alive at once), the input batch."""

    weights: int
    optimizer: int
    activations_and_gradients: int
    batch: int
    allocator: int = 0  # what the C allocator holds beyond the live tensors (see with_allocator)

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.activations_and_gradients + self.batch + self.allocator

    def describe(self) -> str:
        parts = (
            ("weights", self.weights),
            ("optimizer", self.optimizer),
            ("activations and gradients", self.activations_and_gradients),
            ("batch", self.batch),
            ("allocator", self.allocator),
        )
        return f"{self.total / GB:.2f} GB (" + ", ".join(f"{k} {v / GB:.2f}" for k, v in parts) + ")"


# Resident memory held by glibc malloc beyond the live activations and gradients, as a fraction of
# their high-water mark, per MALLOC setting: fitted on what benchmarks/memory_estimate.py measured
# on the digits search (batch 256), the P space (batch 4), the F space (batch 4 and 8) at 224 px and
# FBNetV2_F1's training step (batch 32), 2026-12-06, resident growth minus live tensors 0.07-0.22 of
# them; 0.2 keeps every case at 0.99-1.11 (docs/benchmarks.md, "The memory estimate"). It was 0.4
# while the estimate left out the alpha step's backward pass (constant mixing weights: no path to
# alpha), which the fraction then absorbed. Freed activations stay resident and scattered in the
# heap, which the tensors alone cannot tell.
ALLOCATOR_OVERHEAD = {"default": 0.2, "keep": 0.2, "return": 0.0}


def with_allocator(estimate: MemoryEstimate, malloc: Optional[str]) -> MemoryEstimate:
    """``estimate`` with what glibc malloc set to ``malloc`` (a MALLOC setting) keeps besides the
    tensors; None (a GPU step: torch's caching allocator, not modelled) adds nothing."""
    if malloc is None:
        return estimate
    extra = int(ALLOCATOR_OVERHEAD[malloc] * estimate.activations_and_gradients)
    return dataclasses.replace(estimate, allocator=extra)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class LiveTensors(TorchDispatchMode):
    """Bytes of the tensors alive while the mode is on, and their high-water mark.

    Every op's outputs are counted once per storage (a view or an in-place result adds nothing)
    and uncounted when the storage is freed, so on the meta device this follows what a real step
    holds at each moment: saved activations, the temporaries of each op, the gradients flowing
    and accumulating in the backward pass, exactly as the autograd engine frees them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._storages: Set[int] = set()

    def _count(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self._storages:
            return
        n = storage.nbytes()
        self._storages.add(key)
        self.live += n
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, n)

    def _free(self, key: int, n: int) -> None:
        if key in self._storages:
            self._storages.discard(key)
            self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._count(t)
        return out


@dataclass
class StepPhase:
    """One forward and backward pass of a step, as the real step takes it.

    forward: ``(model, x) -> logits``; inputs: the tensors the backward pass computes gradients
    for (default: every parameter that requires one); context: entered around the pass (e.g.
    frozen BatchNorm statistics).
    """

    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    inputs: Optional[Callable[[nn.Module], List[torch.Tensor]]] = None
    context: Callable[[nn.Module], ContextManager] = lambda model: nullcontext()


def meta_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers are on the meta device (shapes, no storage);
    the weights are not copied. A meta model is its own twin."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.is_meta for t in tensors):
        return model
    memo = {}
    for t in tensors:
        twin = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(twin, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else twin
    return copy.deepcopy(model, memo)


def estimate_step_memory(
    model: nn.Module,
    input_shape: "tuple[int, ...]",
    forward: Optional[Callable[[nn.Module, torch.Tensor], torch.Tensor]] = None,
    optimizer_slots: int = 1,
    phases: Optional[Sequence[StepPhase]] = None,
) -> MemoryEstimate:
    """The memory of one training step of ``model`` (on the meta device) on a batch of ``input_shape``.

    The step's passes run on the meta device under :class:`LiveTensors`: ``activations_and_gradients``
    is the high-water mark of everything alive at once besides the weights (saved tensors, temporaries,
    the gradients of the backward pass), so activation checkpointing, in-place ops and the order
    in which autograd frees are all measured, not modelled.

    Args:
        forward: ``(model, x) -> logits`` (default ``model(x)``) of a step with one pass.
        optimizer_slots: state tensors per weight (SGD with momentum: 1, Adam: 2).
        phases: the passes of a step with several (a search step: the weights' pass, then alpha's);
            as in the real step, one pass's gradients stay alive through the next one's forward.
    """
    if phases is None:
        phases = [StepPhase(forward if forward is not None else (lambda m, x: m(x)))]
    weights = sum(_nbytes(p) for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    x = torch.empty(input_shape, device="meta")
    was_training = model.training
    model.train()
    tracker = LiveTensors()
    try:
        with tracker:
            for phase in phases:
                with phase.context(model):
                    logits = phase.forward(model, x).float()
                    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
                    loss = nn.functional.cross_entropy(logits, target)
                    del logits
                    for p in trainable:  # the step's zero_grad(set_to_none=True): after its forward
                        p.grad = None
                    inputs = phase.inputs(model) if phase.inputs is not None else None
                    torch.autograd.backward(loss, inputs=inputs)
                    del loss
    finally:
        model.train(was_training)
        for p in trainable:
            p.grad = None
    return MemoryEstimate(
        weights=weights,
        optimizer=optimizer_slots * sum(_nbytes(p) for p in trainable),
        activations_and_gradients=tracker.peak,
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
