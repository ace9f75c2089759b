"""Labelled images from a data config: int8 calibration and the accuracy check of an exported file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch

from ..config import check_config, get_cfg
from ..data import build_dataset, dataset_kwargs
from .errors import ExportSettingsError
from .to_executorch import run_executorch


@dataclass
class AccuracyCheck:
    """Top-1 of the eager model and of an exported file on the same labelled images."""

    images: int
    eager_top1: float
    exported_top1: float
    agreement: float  # % of images where both predict the same class
    max_abs_diff: float  # of the logits, over all the images
    source: str  # where the images came from

    @property
    def loss(self) -> float:
        """Top-1 points lost by the export (negative: it gained)."""
        return self.eager_top1 - self.exported_top1


def load_images(
    config_file: str, input_size: int, splits: Sequence[str] = ("train",), limit: int = 0
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of ``splits`` of the dataset a config's DATA section names, at ``input_size``.

    ``limit`` keeps the first images of each split (a fixed, class-mixed order).
    """
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    check_config(cfg)
    cfg.DATA.INPUT_SIZE = input_size
    kwargs = dict(dataset_kwargs(cfg), limit=limit)
    images, labels = [], []
    for split in splits:
        ds = build_dataset(cfg.DATA.NAME, split, **kwargs)
        images.extend(ds[i][0] for i in range(len(ds)))
        labels.extend(ds[i][1] for i in range(len(ds)))
    return torch.stack(images), torch.tensor(labels)


def check_accuracy(
    path: str, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, source: str = ""
) -> AccuracyCheck:
    """Top-1 (%) of ``model`` and of the ``.pte`` at ``path`` on the same labelled images."""
    with torch.no_grad():
        eager = torch.cat([model(images[i : i + 100]) for i in range(0, len(images), 100)])
    exported = run_executorch(path, images)
    pred, exported_pred = eager.argmax(1), exported.argmax(1)
    pct = 100.0 / len(labels)
    return AccuracyCheck(
        images=len(labels),
        eager_top1=(pred == labels).sum().item() * pct,
        exported_top1=(exported_pred == labels).sum().item() * pct,
        agreement=(pred == exported_pred).sum().item() * pct,
        max_abs_diff=(exported - eager).abs().max().item(),
        source=source,
    )


def check_channels(images: torch.Tensor, in_chans: int, config_file: str) -> None:
    if images.shape[1] != in_chans:
        raise ExportSettingsError(
            f"the data of {config_file} has {images.shape[1]} channel(s), the model takes {in_chans}; "
            f"calibrate on a dataset of the kind the model was trained on"
        )
