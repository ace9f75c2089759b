"""Datasets and loaders: the embedded MNIST digits (no download), ImageFolder, CIFAR-10.

    from mobile_cv.data import build_loader, set_epoch
    loader = build_loader(cfg, "train")   # or "val", "test", "search_weights", "search_alpha"

See :mod:`mobile_cv.data.datasets` for each dataset's fixed splits.
"""

from .build import (
    SPLITS,
    TRAINING_SPLITS,
    ShardSampler,
    build_dataset,
    build_loader,
    build_loader_from_dataset,
    dataset_kwargs,
    set_epoch,
)
from .datasets import (
    DATASETS,
    NORMALIZATION,
    SPLIT_SEED,
    ClassificationDataset,
    DatasetError,
    require_dataset_packages,
    stratified_split,
)

__all__ = [
    "require_dataset_packages",
    "NORMALIZATION",
    "DATASETS",
    "SPLITS",
    "SPLIT_SEED",
    "TRAINING_SPLITS",
    "ClassificationDataset",
    "DatasetError",
    "ShardSampler",
    "build_dataset",
    "build_loader",
    "build_loader_from_dataset",
    "dataset_kwargs",
    "set_epoch",
    "stratified_split",
]
