"""``ZooEntry``: one pretrained model described as data.

An entry says what to build (``arch``), where the weights are (``url`` to download
or ``file`` bundled in ``model_zoo/weights/``), how to feed the model (input size,
resize, mean/std) and how good it is (FLOPs, params, top-1 and where that number
comes from). Adding a model to the zoo is adding one entry to ``entries.py``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from mobile_cv.arch.arch_def import load_arch_def_file
from mobile_cv.arch.arch_registry import get_arch_def
from mobile_cv.errors import UserError

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # also a valid timm name (no "." tag, no "-")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ZooEntryError(UserError, ValueError):
    """A zoo entry is malformed; the message names the entry, the field and the fix."""


@dataclass(frozen=True)
class ZooEntry:
    """One pretrained model.

    Attributes:
        name: zoo name (letters, digits, ``_``); its lower-case form is the timm name.
        arch: a name registered in ``arch_defs``, or an arch-def ``.json`` file shipped
            next to the weights (relative to ``model_zoo/weights/``, or absolute).
        input_size: the resolution the model was trained and evaluated at.
        resize: shorter image side before the center crop at evaluation
            (``crop_pct = input_size / resize``).
        num_classes: classifier outputs of the checkpoint.
        url: where the published checkpoint is downloaded from (or ``file``).
        file: a bundled checkpoint, relative to ``model_zoo/weights/`` (or absolute).
        sha256: hex digest of the checkpoint file; None where it is not known.
        in_chans: image channels.
        mean, std: per-channel normalization of images scaled to [0, 1] (RGB order).
        interpolation: resize interpolation used at evaluation.
        flops_m, params_m: millions of MACs at ``input_size`` and millions of conv and
            linear weights (the conventions of ``mobile_cv.count_flops_params``).
        top1, top5: accuracy in percent, on ``eval_set``.
        eval_set: what the accuracy was measured on, and by whom.
        license: the terms the weights come under.
        how_made: for bundled weights, the exact commands that produced them.
    """

    name: str
    arch: str
    input_size: int
    resize: int
    num_classes: int
    url: Optional[str] = None
    file: Optional[str] = None
    sha256: Optional[str] = None
    in_chans: int = 3
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    flops_m: Optional[float] = None
    params_m: Optional[float] = None
    top1: Optional[float] = None
    top5: Optional[float] = None
    eval_set: str = ""
    license: str = ""
    how_made: Optional[str] = None

    def __post_init__(self) -> None:
        where = f"zoo entry {self.name!r}"
        self._check_weights(where)
        self._check_arch_and_input(where)

    def _check_weights(self, where: str) -> None:
        if not (isinstance(self.name, str) and _NAME.match(self.name)):
            raise ZooEntryError(f"{where}: name must start with a letter and hold only letters, digits and '_'")
        if (self.url is None) == (self.file is None):
            raise ZooEntryError(f"{where}: set exactly one of url= (downloaded weights) and file= (bundled weights)")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ZooEntryError(f"{where}: url must start with http:// or https://, got {self.url!r}")
        if self.sha256 is not None and not (isinstance(self.sha256, str) and _SHA256.match(self.sha256)):
            raise ZooEntryError(f"{where}: sha256 must be 64 lower-case hex digits (hashlib.sha256().hexdigest())")
        if self.file is not None:
            # Bundled weights are made by this project, so everything about them is known.
            missing = [f for f in ("sha256", "top1", "how_made") if getattr(self, f) in (None, "")]
            if missing:
                raise ZooEntryError(
                    f"{where}: a bundled entry (file=) must record {', '.join(missing)} "
                    f"(the file's hash, its measured accuracy and the exact commands that made it)"
                )

    def _check_arch_and_input(self, where: str) -> None:
        if not (isinstance(self.arch, str) and self.arch):
            raise ZooEntryError(f"{where}: arch must be a registered arch name or a .json arch-def file")
        if self.arch.endswith(".py"):
            raise ZooEntryError(
                f"{where}: arch {self.arch!r}: ship arch defs as .json (data, and the only kind packaged); "
                f"write one with json.dump(arch_def, f)"
            )
        for field_name in ("input_size", "resize", "num_classes", "in_chans"):
            value = getattr(self, field_name)
            if not (isinstance(value, int) and value > 0):
                raise ZooEntryError(f"{where}: {field_name} must be a positive int, got {value!r}")
        if self.resize < self.input_size:
            raise ZooEntryError(f"{where}: resize ({self.resize}) must be >= input_size ({self.input_size})")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ZooEntryError(f"{where}: mean and std need one value per input channel ({self.in_chans})")

    @property
    def timm_name(self) -> str:
        return self.name.lower()

    @property
    def crop_pct(self) -> float:
        """Center-crop fraction in timm's convention."""
        return self.input_size / self.resize

    @property
    def is_bundled(self) -> bool:
        return self.file is not None

    @property
    def source(self) -> str:
        """``"bundled"`` or ``"URL"`` (for tables)."""
        return "bundled" if self.is_bundled else "URL"

    def weights_path(self) -> str:
        """Absolute path of the bundled checkpoint (entries with ``file=`` only)."""
        if self.file is None:
            raise ZooEntryError(f"zoo entry {self.name!r} has no bundled file; its weights are at {self.url}")
        return _resolve(self.file)

    def arch_def(self) -> Dict[str, Any]:
        """The arch def to build: from ``arch_defs`` or from the shipped ``.json`` file."""
        if self.arch.endswith(".json"):
            return load_arch_def_file(_resolve(self.arch))
        return get_arch_def(self.arch)


def _resolve(path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(WEIGHTS_DIR, path)
