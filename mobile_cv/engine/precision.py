"""Mixed precision and memory layout of a step: autocast (bf16 or fp16), fp16's gradient scaler,
channels_last.

    precision = MixedPrecision("bf16", device)
    with precision.autocast():
        loss = criterion(model(images), target)
    precision.backward_step(loss, optimizer)     # scaled for fp16; plain otherwise

The weights stay float32 (autocast casts per op), so checkpoints, EMA and exported models are
float32 whatever the setting. fp16's ``GradScaler`` skips a step whose gradients overflowed and
lowers its scale; its state is checkpointed (``state_dict``) so a resumed run scales as the
uninterrupted one.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Dict, Optional, Sequence

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class MixedPrecision:
    """Autocast to ``amp`` ("" = off, "bf16", "fp16") on ``device``, with a gradient scaler for fp16."""

    checkpoint_optional = True  # a checkpoint written with AMP off has no state for it: resume anyway

    def __init__(self, amp: str, device: torch.device) -> None:
        self.amp = amp
        self.dtype: Optional[torch.dtype] = AMP_DTYPES.get(amp)
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self):
        """The context of the forward pass and the loss."""
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else nullcontext()

    def backward_step(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        inputs: Optional[Sequence[torch.Tensor]] = None,
        before_step: Optional[Callable[[], None]] = None,
    ) -> None:
        """``loss.backward(inputs=inputs); before_step(); optimizer.step()``, through the scaler under fp16.

        Args:
            inputs: the tensors whose gradients to compute (default: every leaf of the graph);
                autograd skips the work that only other leaves need.
            before_step: called between the backward pass and the step (e.g. an all-reduce of
                gradients no DistributedDataParallel reduces).
        """
        (loss if self.scaler is None else self.scaler.scale(loss)).backward(inputs=inputs)
        if before_step is not None:
            before_step()
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    # checkpointable (engine.Checkpointer): the scaler's scale and growth tracker
    def state_dict(self) -> Dict[str, Any]:
        return {"amp": self.amp, "scaler": self.scaler.state_dict() if self.scaler is not None else {}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels_last memory format when it is a batch of images (4-D), else as it is."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


# Where channels_last was measured faster, by (device type, run kind): "auto" turns it on there only.
# CPU training: 1.26-1.57x on FBNetV2_F1, F4 and the digits model (benchmarks/train_throughput.py);
# CPU search: benchmarks/search_cost.py --channels-last (docs/benchmarks.md). CUDA: not measured
# here (benchmarks/gpu_check.sh measures it on a lent GPU), so "auto" leaves it off.
CHANNELS_LAST_MEASURED = {("cpu", "train"): True, ("cpu", "search"): True}


def resolve_channels_last(value, device: torch.device, run_kind: str) -> bool:
    """SOLVER/SEARCH.CHANNELS_LAST for this run: True or False as given, "auto" as measured."""
    if value == "auto":
        return CHANNELS_LAST_MEASURED.get((device.type, run_kind), False)
    return bool(value)
