"""Name -> builder registries.

Built on fvcore's :class:`~fvcore.common.registry.Registry` (the detectron2
convention), extended in two ways that an op registry needs:

* ops are registered under an explicit string name (``"ir_k3_se"``,
  ``"masked-channel"``), not under ``obj.__name__``;
* a lookup miss or a duplicate name raises an error that names the offender and
  the closest registered names, instead of fvcore's bare KeyError/AssertionError.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, List, Optional

from fvcore.common.registry import Registry as _FvcoreRegistry

from .errors import UserError


class RegistryError(UserError, KeyError):
    """A registry lookup or registration failed; the message says how to fix it."""

    def __str__(self) -> str:  # KeyError would repr() the message (quotes, escapes)
        return str(self.args[0]) if self.args else ""


def closest_names(name: str, candidates, n: int = 3) -> List[str]:
    """The up-to-``n`` candidates most similar to ``name`` (for "did you mean")."""
    return difflib.get_close_matches(str(name), list(candidates), n=n, cutoff=0.5)


def did_you_mean(name: str, candidates) -> str:
    close = closest_names(name, candidates)
    if not close:
        return ""
    return "; did you mean " + " or ".join(f'"{c}"' for c in close) + "?"


class Registry(_FvcoreRegistry):
    """fvcore Registry that registers under explicit names and explains misses.

    Usage::

        OPS = Registry("OPS", contract="builder(in_channels, out_channels, stride, **kwargs)")

        @OPS.register("my_op")
        def build_my_op(in_channels, out_channels, stride, **kwargs): ...

        OPS.register("other_op", build_other)   # function-call form
        OPS.register()(SomeClass)                  # fvcore form: name = SomeClass.__name__
    """

    def __init__(self, name: str, contract: str = "") -> None:
        super().__init__(name)
        self.contract = contract

    def _do_register(self, name: str, obj: Any) -> None:
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self._name}: a registered name must be a non-empty string, got {name!r}")
        if name in self._obj_map:
            raise RegistryError(
                f'{self._name}: the name "{name}" is already registered (to {self._obj_map[name]!r}). '
                f'Pick another name, or call {self._name}.unregister("{name}") first if you mean to replace it.'
            )
        self._obj_map[name] = obj

    def register(self, name: Any = None, obj: Optional[Callable] = None) -> Any:  # type: ignore[override]
        """Register ``obj`` under ``name``; without ``obj`` it returns a decorator.

        ``name`` may also be omitted (or be the object itself, fvcore style), in which
        case the object's ``__name__`` is used.
        """
        if name is not None and not isinstance(name, str):
            # fvcore style: register(obj)
            self._do_register(name.__name__, name)
            return name
        if obj is not None:
            self._do_register(name or obj.__name__, obj)
            return obj

        def deco(func_or_class: Callable) -> Callable:
            self._do_register(name or func_or_class.__name__, func_or_class)
            return func_or_class

        return deco

    def unregister(self, name: str) -> Any:
        """Remove and return the object registered under ``name``."""
        self.get(name)
        return self._obj_map.pop(name)

    def get(self, name: str) -> Any:
        if name not in self._obj_map:
            raise RegistryError(
                f'{self._name}: no entry named "{name}"{did_you_mean(name, self._obj_map)} '
                f"({len(self._obj_map)} registered; list them with {self._name}.names())"
            )
        return self._obj_map[name]

    def names(self) -> List[str]:
        """All registered names, sorted."""
        return sorted(self._obj_map)

    def registered(self) -> List[str]:
        """All registered names, in the order they were registered."""
        return list(self._obj_map)

    def __len__(self) -> int:
        return len(self._obj_map)
