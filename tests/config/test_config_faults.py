"""Bad config values, files and output folders, as a user meets them: one line naming the key or
path, nothing written (tests/helpers.py: what every fault test checks)."""

import os

import pytest
import torch

from tests.helpers import SEARCH, one_error_line, snapshot, train_args

CONFIG_CASES = {
    "drop_rate": (["MODEL.DROP_RATE", "1.5"], ("MODEL.DROP_RATE",)),
    "label_smoothing": (["SOLVER.LABEL_SMOOTHING", "-0.1"], ("SOLVER.LABEL_SMOOTHING",)),
    "ema_decay": (["SOLVER.EMA.DECAY", "2.0"], ("SOLVER.EMA.DECAY",)),
    "seed": (["SEED", "-1"], ("SEED",)),
    "unknown_key": (["SOLVER.BASE_RL", "0.1"], ("SOLVER.BASE_RL", "SOLVER.BASE_LR")),
    "wrong_type": (["SOLVER.EPOCHS", "'three'"], ("SOLVER.EPOCHS",)),
    "odd_overrides": (["SOLVER.EPOCHS"], ("KEY VALUE",)),
    "nan_lr": (["SOLVER.BASE_LR", "float('nan')"], ("SOLVER.BASE_LR",)),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_value(case, tool, files, tmp_path):
    opts, words = CONFIG_CASES[case]
    rc, err = tool("train", "MODEL.ARCH", files / "tiny.json", "OUTPUT_DIR", tmp_path / "o", *opts)
    assert rc == 2
    one_error_line(err, *words)
    assert not (tmp_path / "o").exists()


SEARCH_CONFIG_CASES = {
    "temperature_zero": (["SEARCH.TEMPERATURE.INIT", "0"], ("SEARCH.TEMPERATURE.INIT",)),
    "warmup_not_below_epochs": (["SEARCH.WARMUP_EPOCHS", "2"], ("SEARCH.WARMUP_EPOCHS", "SEARCH.EPOCHS")),
    "space_is_plain_model": (["SEARCH.SPACE", "FBNetV2_F1"], ("FBNetV2_F1", "search")),
}


@pytest.mark.parametrize("case", sorted(SEARCH_CONFIG_CASES))
def test_bad_search_config(case, tool, files, tmp_path):
    opts, words = SEARCH_CONFIG_CASES[case]
    rc, err = tool("search", "SEARCH.SPACE", files / "space.json", "OUTPUT_DIR", tmp_path / "o", *SEARCH, *opts)
    assert rc == 2
    one_error_line(err, *words)


@pytest.mark.parametrize(
    "content,words",
    [(b"SOLVER: [\n", ("c.yaml", "YAML")), (b"SOLVER:\n  EPOCHS: \xff\n", ("c.yaml", "UTF-8"))],
    ids=["yaml_syntax", "yaml_not_utf8"],
)
def test_bad_config_file(content, words, tool, tmp_path):
    (tmp_path / "c.yaml").write_bytes(content)
    rc, err = tool("train", "--config-file", tmp_path / "c.yaml", "OUTPUT_DIR", tmp_path / "o")
    assert rc == 2
    one_error_line(err, *words)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu(tool, files, tmp_path):
    rc, err = tool("train", *train_args(files, tmp_path / "o"), "DEVICE", "cuda")
    assert rc == 2
    one_error_line(err, "DEVICE", "cuda", "cpu")


def test_output_dir_is_a_file(tool, files, tmp_path):
    (tmp_path / "o").write_text("keep me")
    rc, err = tool("train", *train_args(files, tmp_path / "o"))
    assert rc == 2
    one_error_line(err, "is a file")
    assert (tmp_path / "o").read_text() == "keep me"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_dir_read_only(tool, files, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    out.chmod(0o555)
    try:
        rc, err = tool("train", *train_args(files, out))
    finally:
        out.chmod(0o755)
    assert rc == 2
    one_error_line(err, "Permission", str(out))
    assert snapshot(out) == before


# --------------------------------------------------------------------------- issue 18: mistakes refused in one line

ISSUE_CONFIG_CASES = {
    "negative_lr": (["SOLVER.BASE_LR", "-0.5"], ("SOLVER.BASE_LR", "(0, inf)")),
    "negative_classes": (["MODEL.NUM_CLASSES", "-3"], ("MODEL.NUM_CLASSES",)),
    "negative_weight_decay": (["SOLVER.WEIGHT_DECAY", "-1.0"], ("SOLVER.WEIGHT_DECAY",)),
    "momentum_one": (["SOLVER.MOMENTUM", "1.0"], ("SOLVER.MOMENTUM",)),
    "empty_output_dir": (["OUTPUT_DIR", "''"], ("OUTPUT_DIR", "empty")),
    "root_output_dir": (["OUTPUT_DIR", "/"], ("OUTPUT_DIR", "root")),
    "search_space_as_model": (["MODEL.ARCH", "mnist_small_space"], ("search space", "tools/search.py")),
    "test_split_empty": (["DATA.TEST_FRACTION", "0.0"], ("test", "empty")),
}


@pytest.mark.parametrize("case", sorted(ISSUE_CONFIG_CASES))
def test_user_mistakes_are_refused_before_anything_is_written(case, tool, files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # OUTPUT_DIR '' would write here
    (tmp_path / "mine.txt").write_text("mine")
    opts, words = ISSUE_CONFIG_CASES[case]
    rc, err = tool("train", *train_args(files, tmp_path / "o"), *opts)
    assert rc == 2
    one_error_line(err, *words)
    assert sorted(os.listdir(tmp_path)) == ["mine.txt"]


def test_search_tolerance_zero_is_one_line(tool, files, tmp_path):
    rc, err = tool("search", "SEARCH.SPACE", files / "space.json", "OUTPUT_DIR", tmp_path / "o", *SEARCH,
                   "SEARCH.COST.TOLERANCE", "0.0")  # fmt: skip
    assert rc == 2
    one_error_line(err, "SEARCH.COST.TOLERANCE")
    assert not (tmp_path / "o").exists()


def test_config_file_that_is_a_folder(tool, files, tmp_path):
    rc, err = tool("train", "--config-file", tmp_path, *train_args(files, tmp_path / "o"))
    assert rc == 2
    one_error_line(err, str(tmp_path), "is a folder")
