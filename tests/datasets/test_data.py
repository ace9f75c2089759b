"""Datasets and loaders: fixed splits, (seed, epoch) shuffling, sharding, and bad-input errors."""

import os
import pickle

import numpy as np
import pytest
import torch

from mobile_cv.config import get_cfg
from mobile_cv.data import (
    DatasetError,
    ShardSampler,
    build_dataset,
    build_loader,
    build_loader_from_dataset,
    set_epoch,
)
from tests.helpers import make_image_folder


def indices(name, split, **kw):
    return build_dataset(name, split, **kw).indices


# --------------------------------------------------------------------------- embedded_mnist


def test_embedded_splits_are_fixed_stratified_and_disjoint():
    sizes = {}
    for split in ("train", "val", "test", "search_weights", "search_alpha"):
        ds = build_dataset("embedded_mnist", split)
        sizes[split] = len(ds)
        counts = np.bincount(ds.targets, minlength=10)
        assert (counts == counts[0]).all(), (split, counts)  # the same number of every digit
    assert sizes == {"train": 4000, "val": 500, "test": 500, "search_weights": 3200, "search_alpha": 800}
    train, val, test = (set(indices("embedded_mnist", s)) for s in ("train", "val", "test"))
    assert not (train & val or train & test or val & test) and len(train | val | test) == 5000
    w, a = set(indices("embedded_mnist", "search_weights")), set(indices("embedded_mnist", "search_alpha"))
    assert not (w & a) and w | a == train
    np.testing.assert_array_equal(indices("embedded_mnist", "val"), indices("embedded_mnist", "val"))


def test_embedded_images_are_real_padded_normalized_digits():
    ds = build_dataset("embedded_mnist", "test")
    x, y = ds[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and 0 <= y <= 9
    assert ds.in_chans == 1 and ds.num_classes == 10
    assert torch.allclose(x[:, :2, :], x.min().expand(1, 2, 32))  # the 2-pixel pad is background
    assert x.max() > 2.0  # ink: (1 - 0.1307) / 0.3081
    assert build_dataset("embedded_mnist", "test", input_size=28)[0][0].shape == (1, 28, 28)


def test_limit_takes_a_class_mixed_prefix():
    full = build_dataset("embedded_mnist", "train")
    ds = build_dataset("embedded_mnist", "train", limit=50)
    np.testing.assert_array_equal(ds.indices, full.indices[:50])
    assert len(set(ds.targets.tolist())) >= 8


def test_unknown_dataset_and_split():
    with pytest.raises(DatasetError, match='did you mean "embedded_mnist"'):
        build_dataset("embeded_mnist", "train")
    with pytest.raises(DatasetError, match="unknown split 'training'"):
        build_dataset("embedded_mnist", "training")


# --------------------------------------------------------------------------- loaders


def order(loader, epoch):
    set_epoch(loader, epoch)
    return torch.cat([y for _, y in loader]).tolist()


def small(limit=64):
    return build_dataset("embedded_mnist", "train", limit=limit)


def test_shuffle_order_is_a_function_of_seed_and_epoch_only():
    a = build_loader_from_dataset(small(), batch_size=8, training=True, seed=3)
    b = build_loader_from_dataset(small(), batch_size=8, training=True, seed=3)
    torch.manual_seed(123)  # the global RNG plays no part
    first = order(a, 0)
    torch.manual_seed(456)
    assert order(b, 0) == first
    assert order(a, 1) != first and order(a, 0) == first  # epoch 1 differs; epoch 0 again repeats
    c = build_loader_from_dataset(small(), batch_size=8, training=True, seed=4)
    assert order(c, 0) != first


def test_training_shards_split_the_epoch_between_ranks():
    ds = small(64)

    def shards(seed=0):
        return [build_loader_from_dataset(ds, batch_size=16, training=True, seed=seed, shard=(r, 2)) for r in (0, 1)]

    def epoch_indices(loaders, epoch):
        out = []
        for loader in loaders:
            set_epoch(loader, epoch)  # before iterating, as the training loop does
            out.append([int(i) for i in loader.sampler])
        return out

    ranks = shards()
    assert ranks[0].batch_size == 8
    per_epoch = [epoch_indices(ranks, e) for e in range(3)]
    for seen in per_epoch:  # each epoch: the ranks split the 64 images, none twice, none left out
        assert len(seen[0]) == len(seen[1]) == 32 and sorted(seen[0] + seen[1]) == list(range(64))
    for r in (0, 1):  # every rank's order changes from epoch to epoch ...
        assert len({tuple(seen[r]) for seen in per_epoch}) == 3
    assert set(per_epoch[0][0]) != set(per_epoch[1][0])  # ... and so does which images it gets
    # the same (seed, epoch) gives the same shards: on fresh loaders, and back on these ones
    assert epoch_indices(shards(), 1) == per_epoch[1]
    assert epoch_indices(ranks, 0) == per_epoch[0]
    assert epoch_indices(shards(seed=1), 1) != per_epoch[1]
    # the loaders deliver the sampler's order: rank 0's labels in epoch 2
    set_epoch(ranks[0], 2)
    assert torch.cat([y for _, y in ranks[0]]).tolist() == [int(ds.targets[i]) for i in per_epoch[2][0]]


def test_eval_shards_cover_every_image_once():
    parts = [list(ShardSampler(10, r, 3)) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(10))


def test_fewer_images_than_a_batch_is_an_error():
    with pytest.raises(DatasetError, match="fewer than one batch of 32"):
        build_loader_from_dataset(small(20), batch_size=32, training=True)
    with pytest.raises(DatasetError, match="does not divide among 3"):
        build_loader_from_dataset(small(20), batch_size=8, training=True, shard=(0, 3))


def test_build_loader_from_config():
    cfg = get_cfg()
    cfg.merge_from_list(["DATA.LIMIT", "40", "SOLVER.BATCH_SIZE", "16", "SEARCH.BATCH_SIZE", "8"])
    with pytest.raises(DatasetError, match="DATA.INPUT_SIZE is 0"):
        build_loader(cfg, "train")  # 0 means "the arch's": setup_cfg resolves it
    cfg.merge_from_list(["DATA.INPUT_SIZE", "32"])
    train = build_loader(cfg, "train")
    assert len(train) == 2 and len(train.dataset) == 40  # the partial batch is dropped
    assert build_loader(cfg, "search_alpha", batch_size=8, weight_split=0.8).batch_size == 8
    val = build_loader(cfg, "val")
    assert sum(len(y) for _, y in val) == 40


# --------------------------------------------------------------------------- imagefolder


def test_image_folder_loads_with_timm_transforms(tmp_path):
    root = make_image_folder(tmp_path)
    ds = build_dataset("imagefolder", "train", root=str(root), input_size=16)
    assert len(ds) == 6 and ds.classes == ["cat", "dog"] and ds.in_chans == 3
    assert ds[0][0].shape == (3, 16, 16)
    test = build_dataset("imagefolder", "test", root=str(root), input_size=16)  # no test/: the val folder
    np.testing.assert_array_equal(test.indices, build_dataset("imagefolder", "val", root=str(root)).indices)


def test_undecodable_image_names_the_file(tmp_path):
    root = make_image_folder(tmp_path)
    bad = root / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    ds = build_dataset("imagefolder", "train", root=str(root), input_size=16)
    with pytest.raises(DatasetError) as e:
        for i in range(len(ds)):
            ds[i]
    assert "cannot decode image" in str(e.value) and str(bad) in str(e.value)


@pytest.mark.parametrize(
    "setup,needle",
    [
        (lambda r: None, "does not exist"),
        (lambda r: r.write_text("x"), "is not a folder"),
        (lambda r: make_image_folder(r, splits=("train",)), "val"),
        (lambda r: (r / "train").mkdir(parents=True), "holds no class sub-folders"),
    ],
)
def test_bad_image_folders_name_the_path_and_layout(tmp_path, setup, needle):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DatasetError) as e:
        build_dataset("imagefolder", "val", root=str(root))
    msg = str(e.value)
    assert needle in msg and str(root) in msg and "ImageNet layout" in msg


def test_empty_root_is_explained():
    with pytest.raises(DatasetError, match="DATA.ROOT is empty"):
        build_dataset("imagefolder", "train", root="")


def test_unreadable_folder_is_explained(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(root) else real_access(p, mode))
    with pytest.raises(DatasetError, match="is not readable"):
        build_dataset("imagefolder", "train", root=str(root))


# --------------------------------------------------------------------------- cifar10


def write_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    d = {
        b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
        b"labels": [i % 10 for i in range(n)],
        b"batch_label": b"fake",
    }
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


def make_cifar(root, n=20):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        write_batch(folder / f"data_batch_{i}", n, i)
    write_batch(folder / "test_batch", n, 0)
    return folder


def test_cifar10_folder_splits(tmp_path):
    make_cifar(tmp_path)
    kw = dict(root=str(tmp_path), held_out=(0.1, 0.1))
    train, val, test = (build_dataset("cifar10", s, **kw) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (90, 10, 20)
    assert sorted(val.targets.tolist()) == list(range(10))  # one of each class
    assert not set(train.indices) & set(val.indices)
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and train.classes[0] == "airplane"


def test_cifar10_missing_files_are_named(tmp_path):
    folder = make_cifar(tmp_path)
    os.remove(folder / "data_batch_3")
    with pytest.raises(DatasetError, match="data_batch_3"):
        build_dataset("cifar10", "train", root=str(folder))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar10_refuses_pickles_that_would_run_code(tmp_path):
    folder = make_cifar(tmp_path)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(DatasetError) as e:
        build_dataset("cifar10", "train", root=str(folder))
    assert "refusing to load" in str(e.value) and "data_batch_1" in str(e.value)


def test_cifar10_corrupt_batch_is_named(tmp_path):
    folder = make_cifar(tmp_path)
    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="test_batch is not a valid python-pickle batch"):
        build_dataset("cifar10", "test", root=str(tmp_path))
