"""Which module of a model holds the operator an export fails on.

When ``torch.export`` or the lowering to ExecuTorch fails, every submodule the eager forward
calls is exported on its own, from the fewest descendants up; the first that fails the same way
is the one to rewrite. :func:`export_error` turns that into an :class:`ExportError` naming the
operator and the module.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .errors import ExportError

LOCATE_SECONDS = 90.0  # how long an export failure may spend finding the module that holds the bad op

_OP_PATTERN = re.compile(r"\baten(?:\.|::)\w+(?:\.\w+)?")


def op_base(op: str) -> str:
    """``"aten.special_bessel_j0.default"`` -> ``"special_bessel_j0"``."""
    return re.split(r"\.|::", op)[1]


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def _module_calls(model: torch.nn.Module, example: torch.Tensor) -> List[Tuple[str, torch.nn.Module, tuple]]:
    """``(qualified name, module, positional args)`` of every submodule an eager forward calls, first call each."""
    names = {id(m): n for n, m in model.named_modules() if n}
    calls: Dict[int, Tuple[str, torch.nn.Module, tuple]] = {}

    def record(module, args):
        if id(module) in names and id(module) not in calls and all(isinstance(a, torch.Tensor) for a in args):
            calls[id(module)] = (names[id(module)], module, tuple(a.detach().clone() for a in args))

    hooks = [m.register_forward_pre_hook(record) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(example)
    except Exception:  # the eager forward fails too: nothing to narrow down
        return []
    finally:
        for h in hooks:
            h.remove()
    return list(calls.values())


def _locate(
    model: torch.nn.Module, example: torch.Tensor, attempt: Callable[[torch.nn.Module, tuple], object]
) -> Optional[Tuple[str, torch.nn.Module, BaseException]]:
    """The smallest submodule for which ``attempt`` fails, with its error (``None`` if none does in time).

    Submodules are tried from the fewest descendants up, so when one fails all of its own
    submodules have passed: the failing code is its own forward.
    """
    calls = sorted(_module_calls(model, example), key=lambda c: sum(1 for _ in c[1].modules()))
    deadline = time.monotonic() + LOCATE_SECONDS
    quiet = logging.getLogger("torch")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # torch.export logs each failing fragment's graph
    try:
        for name, module, args in calls:
            if time.monotonic() > deadline:
                return None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    attempt(module, args)
            except Exception as e:
                return name, module, e
    finally:
        quiet.setLevel(level)
    return None


class _Isolated(torch.nn.Module):
    """A submodule exported on its own, on copies of its inputs (an in-place op must not hit a graph input)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: torch.Tensor):
        return self.module(*(a.clone() for a in args))


def _describe(error: BaseException) -> str:
    ops = _OP_PATTERN.findall(str(error))
    if ops:
        return f"operator {ops[0]}"
    if "DataDependent" in type(error).__name__:
        return "data-dependent Python control flow (a tensor's value used as a bool or number)"
    return "an operation"


def export_error(
    model: torch.nn.Module, example: torch.Tensor, stage: str, error: BaseException, lower: Callable
) -> ExportError:
    """An :class:`ExportError` naming the operator (when the message does) and the module that fails.

    ``lower(exported program)`` is the lowering step to retry on each submodule.
    """
    ops = _OP_PATTERN.findall(str(error))

    def attempt(module, args):
        try:
            exported = torch.export.export(_Isolated(module).eval(), args)
            # lowering is slow: only fragments that hold the named op
            if stage != "torch.export" and (not ops or op_base(ops[0]) in str(exported.graph)):
                lower(exported)
        except Exception as e:
            if not ops or ops[0] in str(e):  # the same failure, not another one of exporting a fragment
                raise
            return

    found = _locate(model, example, attempt)
    cause = found[2] if found else error
    where = (
        f" in module {found[0]!r} ({type(found[1]).__module__}.{type(found[1]).__qualname__})"
        if found
        else f" of {type(model).__name__}"
    )
    return ExportError(
        f"ExecuTorch export failed at {stage}: {_describe(cause)}{where} cannot be exported; "
        f"rewrite or replace that module ({_first_line(cause)})"
    )
