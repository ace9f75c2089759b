"""Datasets and loaders from a config, for one process or a torchrun job.

    loader = build_loader(cfg, "train")            # shuffled, sharded over ranks
    for epoch in range(start_epoch, epochs):
        set_epoch(loader, epoch)                   # order = f(SEED, epoch) only
        for images, labels in loader: ...

Splits: ``"train"``, ``"val"``, ``"test"`` (see :mod:`mobile_cv.data.datasets`), and
for the search ``"search_weights"`` / ``"search_alpha"``: a fixed, stratified
partition of the train split (``SEARCH.WEIGHT_SPLIT`` of each class trains the
weights, the rest trains alpha; independent of SEED).
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from .. import comm
from ..errors import InvalidArgumentError
from ..registry import RegistryError
from .datasets import DATASETS, SPLIT_SEED, ClassificationDataset, DatasetError, stratified_split

SPLITS = ("train", "val", "test", "search_weights", "search_alpha")
# Splits that are shuffled, augmented and cut into full batches.
TRAINING_SPLITS = ("train", "search_weights", "search_alpha")


def build_dataset(
    name: str,
    split: str,
    *,
    root: str = "",
    input_size: int = 32,
    held_out: Tuple[float, float] = (0.1, 0.1),
    weight_split: float = 0.8,
    limit: int = 0,
) -> ClassificationDataset:
    """One split of a registered dataset (``DATASETS.names()``).

    Args:
        name: dataset name, e.g. ``"embedded_mnist"``.
        split: one of :data:`SPLITS`.
        root: data folder (unused by ``embedded_mnist``).
        input_size: image side in pixels.
        held_out: the (val, test) fractions held out for datasets without those splits.
        weight_split: the ``search_weights`` fraction of the train split.
        limit: keep only the first ``limit`` images (0: all).
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; valid splits: {list(SPLITS)}")
    try:
        builder = DATASETS.get(name)
    except RegistryError as e:
        raise DatasetError(f"DATA.NAME: {e}") from None
    base = "train" if split.startswith("search_") else split
    settings = {
        "root": root,
        "input_size": input_size,
        "val_fraction": held_out[0],
        "test_fraction": held_out[1],
        "training": split in TRAINING_SPLITS,
    }
    wanted = inspect.signature(builder).parameters
    ds = builder(base, **{k: v for k, v in settings.items() if k in wanted})
    if split.startswith("search_"):
        # a different seed than the train/val/test carving, so the two partitions are independent
        parts = stratified_split(ds.targets, {"search_alpha": 1.0 - weight_split}, SPLIT_SEED + 1, "search_weights")
        ds = ds.subset(parts[split], f"{ds.name.rsplit('/', 1)[0]}/{split}")
    if limit:
        ds = ds.subset(range(min(limit, len(ds))))
    if len(ds) == 0:
        raise DatasetError(f"split {ds.name} is empty (check DATA.LIMIT and the split fractions)")
    return ds


def dataset_kwargs(cfg: Any) -> Dict[str, Any]:
    """The :func:`build_dataset` keyword arguments the DATA config gives (the from_config mapping)."""
    if cfg.DATA.INPUT_SIZE <= 0:
        raise DatasetError(
            "DATA.INPUT_SIZE is 0 (the arch def's input_size), which engine.setup_cfg resolves; "
            "set DATA.INPUT_SIZE when building loaders from a config of your own"
        )
    return dict(
        root=cfg.DATA.ROOT,
        input_size=cfg.DATA.INPUT_SIZE,
        held_out=(cfg.DATA.VAL_FRACTION, cfg.DATA.TEST_FRACTION),
        limit=cfg.DATA.LIMIT,
    )


class ShardSampler(Sampler[int]):
    """Rank ``r`` of ``w`` gets a contiguous ``1/w`` slice, unshuffled, nothing repeated.

    For evaluation: unlike DistributedSampler it pads no duplicates, so metrics summed
    over ranks count every image exactly once.
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self.start = size * rank // world_size
        self.stop = size * (rank + 1) // world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def build_loader_from_dataset(
    dataset: ClassificationDataset,
    *,
    batch_size: int,
    training: bool,
    seed: int = 0,
    num_workers: int = 0,
    shard: Tuple[int, int] = (0, 1),
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over this rank's shard of ``dataset``.

    Args:
        shard: ``(rank, world_size)``: this process's share of the data.
        batch_size: images per step summed over all ranks (must divide by ``world_size``).
        training: shuffle (by ``seed`` + epoch, see :func:`set_epoch`) and drop the last
            partial batch; otherwise the rank's contiguous shard in order.
    """
    rank, world_size = shard
    if batch_size % world_size:
        raise DatasetError(f"the batch size {batch_size} does not divide among {world_size} processes")
    per_rank = batch_size // world_size
    if training:
        # DistributedSampler also for one process: the same (seed, epoch) -> order rule everywhere
        sampler: Sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        if len(sampler) < per_rank:
            raise DatasetError(
                f"split {dataset.name} has {len(dataset)} images, {len(sampler)} per process: fewer than one "
                f"batch of {per_rank}; lower the batch size or raise DATA.LIMIT"
            )
    else:
        sampler = ShardSampler(len(dataset), rank, world_size)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=training,
        pin_memory=pin_memory,
        # the iterator draws the workers' seeds from this generator instead of the global RNG;
        # set_epoch reseeds it, and workers are not persistent, so augmentation is f(seed, epoch)
        generator=generator,
        persistent_workers=False,
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Make the loader's order and worker seeds a function of (seed, epoch) only."""
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
        loader.generator.manual_seed(sampler.seed * 100_003 + epoch)


def build_loader(
    cfg: Any,
    split: str,
    *,
    batch_size: Optional[int] = None,
    weight_split: Optional[float] = None,
    distributed: Optional[bool] = None,
) -> DataLoader:
    """The loader of one split as the DATA config says; ``loader.dataset`` is the split's dataset.

    Args:
        cfg: the run's config (DATA, SEED, DEVICE, SOLVER.BATCH_SIZE).
        split: one of :data:`SPLITS`.
        batch_size: images per step over all ranks (default ``SOLVER.BATCH_SIZE``).
        weight_split: for the ``search_*`` splits, the ``search_weights`` fraction of the
            train split (the search passes ``SEARCH.WEIGHT_SPLIT``).
        distributed: shard over the torchrun ranks; default: when more than one process runs.
    """
    if split.startswith("search_") and weight_split is None:
        raise InvalidArgumentError(
            f"split {split!r} needs weight_split, the search_weights fraction of the train split"
        )
    kwargs = dataset_kwargs(cfg)
    if weight_split is not None:
        kwargs["weight_split"] = weight_split
    dataset = build_dataset(cfg.DATA.NAME, split, **kwargs)
    if distributed is None:
        distributed = comm.get_world_size() > 1
    return build_loader_from_dataset(
        dataset,
        batch_size=batch_size or cfg.SOLVER.BATCH_SIZE,
        training=split in TRAINING_SPLITS,
        seed=cfg.SEED,
        num_workers=cfg.DATA.NUM_WORKERS,
        shard=(comm.get_rank(), comm.get_world_size()) if distributed else (0, 1),
        pin_memory=torch.cuda.is_available() and cfg.DEVICE != "cpu",
    )
