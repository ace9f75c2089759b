"""Resumable checkpoints (and torch files written atomically).

A checkpoint holds named states (models, optimizers, schedulers, EMA, alpha: any
object with ``state_dict``/``load_state_dict``), the RNG states of python, numpy and
torch (and CUDA) of every rank, and a dict of extras (epoch, temperature, ...).
Restoring all of it at an epoch boundary makes a resumed run continue exactly as
the uninterrupted run would, provided the data order depends on (seed, epoch) only
(:func:`mobile_cv.data.set_epoch`).

Files are written by :mod:`mobile_cv.atomic_files` (a temporary file in the same folder,
fsync'ed and renamed over the target): a crash leaves the old or the new file, never half.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from .. import comm
from ..arch.weights import describe_load_failure, load_state_dict, read_weights_file, safetensors_bytes
from ..atomic_files import atomic_write, atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported)
from ..errors import InvalidArgumentTypeError, UserError

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pth"
FORMAT = "mobile_cv.engine.checkpoint/1"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint cannot be read, or does not hold what this run needs."""


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)``, all or nothing."""
    atomic_write(path, lambda f: torch.save(obj, f), "wb")


def atomic_save_safetensors(state_dict: Dict[str, torch.Tensor], path: str) -> None:
    """``state_dict`` as a ``.safetensors`` file, all or nothing."""
    atomic_write_bytes(path, safetensors_bytes(state_dict))


def get_rng_state() -> Dict[str, Any]:
    """This process's RNG states as tensors and numbers (loadable with ``weights_only=True``)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["mt"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            logger.warning(
                "checkpoint holds CUDA RNG states of %d devices, this machine has %d; not restored",
                len(state["cuda"]),
                torch.cuda.device_count(),
            )


def load_file(path: str) -> Any:
    """A ``.safetensors`` file or ``torch.load(path, weights_only=True)``, on the CPU;
    :class:`CheckpointError` if it cannot be read."""
    if os.path.isdir(path):
        raise CheckpointError(
            f"checkpoint file {path!r} is a folder; give the file itself (e.g. FOLDER/model_final.pth)"
        )
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file {path!r} does not exist")
    try:
        return read_weights_file(path)
    except Exception as e:  # torch raises several types for truncated, foreign or unsafe files
        raise CheckpointError(describe_load_failure(path, e)) from None


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel (or DataParallel) wrapper."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def state_digest(module: nn.Module) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes and values), to compare copies."""
    h = hashlib.sha256()
    for name, t in sorted(unwrap(module).state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Checkpointer:
    """Saves and restores the state of a run, one file per output folder.

    Usage::

        ckpt = Checkpointer(output_dir, model=model, optimizer=opt, scheduler=sched, ema=ema)
        extra = ckpt.resume_or_start(resume)        # {} for a fresh run; restores RNG states
        for epoch in range(extra.get("epoch", -1) + 1, epochs):
            ...
            ckpt.save(epoch=epoch, temperature=t)   # every rank calls it; rank 0 writes

    Args:
        save_dir: the run's output folder; the file is ``save_dir/checkpoint.pth``.
        **checkpointables: named objects with ``state_dict()`` / ``load_state_dict()``
            (DistributedDataParallel wrappers are unwrapped; ``None`` values are skipped).
    """

    def __init__(self, save_dir: str, **checkpointables: Any) -> None:
        self.save_dir = save_dir
        self.path = os.path.join(save_dir, CHECKPOINT_FILE)
        self.checkpointables = {k: v for k, v in checkpointables.items() if v is not None}
        self.last_extra: Optional[Dict[str, Any]] = None  # extras of the last save or load
        for name, obj in self.checkpointables.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise InvalidArgumentTypeError(
                    f"checkpointable {name!r} ({type(obj).__name__}) has no state_dict/load_state_dict"
                )

    def has_checkpoint(self) -> bool:
        return os.path.isfile(self.path)

    def save(self, **extra: Any) -> str:
        """Write the checkpoint atomically; collective: every rank must call it.

        ``extra`` values must be tensors, numbers, strings, None, or lists/tuples/dicts
        of those (what ``torch.load(weights_only=True)`` accepts).
        """
        rng = comm.all_gather_object(get_rng_state())
        if comm.is_main_process():
            data = {
                "format": FORMAT,
                "states": {name: unwrap(obj).state_dict() for name, obj in self.checkpointables.items()},
                "rng": rng,
                "extra": dict(extra),
            }
            atomic_save(data, self.path)
        comm.barrier()  # nobody reads the file before it is complete
        self.last_extra = dict(extra)
        return self.path

    def describe_last(self) -> str:
        """Where the last good checkpoint of this run is, for error messages."""
        if self.last_extra is None:
            return f"this run wrote no checkpoint yet ({self.path})"
        epoch = self.last_extra.get("epoch")
        return (
            f"the last good checkpoint {self.path} (after epoch {epoch + 1 if isinstance(epoch, int) else '?'}) "
            f"is intact; --resume continues from it"
        )

    def read(self, path: Optional[str] = None) -> Dict[str, Any]:
        """The raw checkpoint dict, loaded with ``weights_only=True``."""
        path = path or self.path
        data = load_file(path)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a checkpoint written by mobile_cv.engine.Checkpointer")
        return data

    def load(self, path: Optional[str] = None) -> Dict[str, Any]:
        """Restore every checkpointable and this rank's RNG states; return the extras."""
        path = path or self.path
        data = self.read(path)
        states = data["states"]
        missing = sorted(
            n
            for n, o in self.checkpointables.items()
            if n not in states and not getattr(o, "checkpoint_optional", False)
        )
        if missing:
            raise CheckpointError(
                f"checkpoint {path} has no state for {missing} (it holds {sorted(states)}); "
                f"was it written by another tool?"
            )
        for name, obj in self.checkpointables.items():
            obj = unwrap(obj)
            if name not in states:  # an optional state the writing run did not have
                continue
            if isinstance(obj, nn.Module):
                load_state_dict(obj, states[name], source=f"{path} [{name}]")
            else:
                obj.load_state_dict(states[name])
        rng: List[Dict[str, Any]] = data["rng"]
        rank = comm.get_rank()
        if len(rng) != comm.get_world_size():
            logger.warning(
                "checkpoint %s was written by %d process(es), this run has %d: the RNG streams are not restored "
                "exactly, so the run will not repeat an uninterrupted one bit for bit",
                path,
                len(rng),
                comm.get_world_size(),
            )
        set_rng_state(rng[rank % len(rng)])
        self.last_extra = dict(data["extra"])
        return dict(data["extra"])

    def resume_or_start(self, resume: bool) -> Dict[str, Any]:
        """With ``resume`` and a checkpoint present, :meth:`load` it; otherwise ``{}`` (a fresh start)."""
        if resume and self.has_checkpoint():
            extra = self.load()
            logger.info(
                "resumed from %s (%s)",
                self.path,
                ", ".join(f"{k}={v}" for k, v in extra.items() if isinstance(v, (int, float, str))),
            )
            return extra
        if resume:
            logger.info("--resume: no checkpoint in %s yet, starting from scratch", self.save_dir)
        return {}
