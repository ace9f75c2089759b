"""torch.distributed helpers that also work, as no-ops, in a plain single process.

Under ``torchrun --nproc_per_node=N`` call :func:`init_distributed` once; it reads
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and picks
gloo on CPU, nccl on GPU. Without torchrun nothing needs initializing.
"""

from __future__ import annotations

import os
from typing import Any, List, Sequence, Union

import torch
import torch.distributed as dist

from .errors import LaunchError


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_local_rank() -> int:
    """This process's GPU index on its machine (torchrun's LOCAL_RANK; 0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed(use_cuda: bool) -> None:
    """Join the torchrun job this process belongs to (nothing to do when WORLD_SIZE <= 1)."""
    if is_initialized() or int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise LaunchError(
            f"WORLD_SIZE is set but {', '.join(missing)} is not; start multi-process runs with "
            f"torchrun --nproc_per_node=N (it sets them)"
        )
    if use_cuda:
        torch.cuda.set_device(get_local_rank())
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")


def shutdown() -> None:
    """Leave the process group (safe to call when there is none)."""
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def _device() -> torch.device:
    # nccl reduces CUDA tensors only; gloo CPU tensors
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sum(x: Union[torch.Tensor, float]) -> Union[torch.Tensor, float]:
    """The sum over ranks of a tensor (returned on its own device) or a number."""
    if get_world_size() == 1:
        return x.detach().clone() if isinstance(x, torch.Tensor) else x
    t = (
        x.detach().to(_device(), torch.float64, copy=True)
        if isinstance(x, torch.Tensor)
        else torch.tensor(float(x), dtype=torch.float64, device=_device())
    )
    dist.all_reduce(t)
    if isinstance(x, torch.Tensor):
        return t.to(x.device, x.dtype)
    return t.item()


def all_reduce_mean(x: Union[torch.Tensor, float]) -> Union[torch.Tensor, float]:
    """The mean over ranks of a tensor or a number."""
    s = all_reduce_sum(x)
    return s / get_world_size()


def all_reduce_grads_mean(params: Sequence[torch.Tensor]) -> None:
    """Average the gradients of ``params`` over ranks in place (one all-reduce of their
    concatenation; a missing gradient counts as zeros): for parameters no
    DistributedDataParallel reduces."""
    if get_world_size() == 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]).to(_device(), torch.float32)
    dist.all_reduce(flat)
    flat /= get_world_size()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).to(g.device, g.dtype)
        offset += n


def all_gather_object(obj: Any) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (any picklable object)."""
    if get_world_size() == 1:
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@torch.no_grad()
def sync_buffers(module: torch.nn.Module) -> None:
    """Average float buffers (BatchNorm running stats) over ranks; copy rank 0's others.

    DistributedDataParallel syncs parameters, but each rank's last forward pass
    updates its own running stats; this makes every rank hold the same model.
    """
    if get_world_size() == 1:
        return
    for buf in module.buffers():
        if buf.is_floating_point():
            t = buf.to(_device())
            dist.all_reduce(t)
            buf.copy_(t / get_world_size())
        else:
            t = buf.to(_device())
            dist.broadcast(t, src=0)
            buf.copy_(t)
