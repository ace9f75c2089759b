"""Bad data, as a user meets it: a broken image read in a worker process, a missing data root, and
16-bit images scaled rather than clipped (tests/helpers.py: what every fault test checks)."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.helpers import TINY_ARCH, one_error_line


def test_broken_image_in_worker_process(tool, tmp_path):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    (root / "train" / "b" / "9.png").write_bytes(b"not a png")
    (tmp_path / "a.json").write_text(json.dumps({**TINY_ARCH, "input_size": 16}))
    rc, err = tool(
        "train",
        "MODEL.ARCH",
        tmp_path / "a.json",
        "MODEL.NUM_CLASSES",
        "2",
        "MODEL.IN_CHANS",
        "3",
        "DATA.NAME",
        "imagefolder",
        "DATA.ROOT",
        root,
        "DATA.NUM_WORKERS",
        "1",
        "SOLVER.BATCH_SIZE",
        "4",
        "SOLVER.EPOCHS",
        "1",
        "OUTPUT_DIR",
        tmp_path / "o",
    )
    assert rc == 2
    one_error_line(err, "9.png", "worker")


def test_missing_data_root(tool, tmp_path, files):
    rc, err = tool(*["train", "MODEL.ARCH", files / "tiny.json", "OUTPUT_DIR", tmp_path / "o"], "DATA.NAME", "cifar10")
    assert rc == 2
    one_error_line(err, "cifar10")


def test_16bit_images_are_scaled_not_clipped(tmp_path):
    from mobile_cv.data.datasets import open_rgb

    a = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    rgb = np.asarray(open_rgb(str(tmp_path / "g16.png"))).astype(int)
    expected = np.round(a.astype(float) * 255 / 65535).astype(int)
    assert np.abs(rgb[..., 0] - expected).max() <= 1
    assert rgb[..., 0].mean() == pytest.approx(127.5, abs=1)  # clipping would give ~254
