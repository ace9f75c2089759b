"""Resume and checkpoints, as a user meets their faults: a run resumed with other settings, a corrupt
or foreign checkpoint, bad weights handed to the eval tool, an epoch stopped after its checkpoint
(tests/helpers.py: what every fault test checks). The tests work on copies of the shared runs."""

import json
import pickle

import pytest
import torch

from mobile_cv.arch.weights import safetensors_bytes
from tests.helpers import SEARCH, TRAIN, copy_run, one_error_line, snapshot, train_args


def test_existing_run_needs_resume(tool, files, train_run, tmp_path):
    run = copy_run(train_run, tmp_path)
    before = snapshot(run)
    rc, err = tool("train", *train_args(files, run))
    assert rc == 2
    one_error_line(err, "already holds a run", "--resume")
    assert snapshot(run) == before


RESUME_CASES = {
    # (tool, which run's folder, extra args, words)
    "train_into_search_folder": ("train", "search", [], ("search checkpoint", "train run")),
    "search_into_train_folder": ("search", "train", [], ("train checkpoint", "search run")),
    "train_other_arch": ("train", "train", ["MODEL.ARCH", "{other}"], ("MODEL.ARCH", "other.json")),
    "train_other_classes": ("train", "train", ["MODEL.NUM_CLASSES", "7"], ("NUM_CLASSES 7",)),
    "train_fewer_epochs": ("train", "train", ["SOLVER.EPOCHS", "1"], ("already run 2 epochs", "SOLVER.EPOCHS")),
    "search_other_space": ("search", "search", ["SEARCH.SPACE", "mnist_small_space"], ("mnist_small_space",)),
    "search_fewer_epochs": (
        "search",
        "search",
        ["SEARCH.EPOCHS", "1", "SEARCH.WARMUP_EPOCHS", "0"],
        ("already run 2 epochs", "SEARCH.EPOCHS"),
    ),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_refused_resume_changes_nothing(case, tool, files, train_run, search_run, tmp_path):
    name, which, extra, words = RESUME_CASES[case]
    run = copy_run(train_run if which == "train" else search_run, tmp_path)
    before = snapshot(run)
    extra = [str(files / "other.json") if e == "{other}" else e for e in extra]
    if name == "train":
        args = train_args(files, run, "tiny.json", *extra)
    else:
        args = ["SEARCH.SPACE", files / "space.json", "OUTPUT_DIR", run, *SEARCH, *extra]
    rc, err = tool(name, "--resume", *args)
    assert rc == 2
    one_error_line(err, *words)
    assert snapshot(run) == before
    # and the documented evaluation of the run still works from its config.yaml
    if which == "train":
        cfg, weights = run / "config.yaml", run / "model_final.pth"
        rc, err = tool("eval", "--config-file", cfg, "--weights", weights)
        assert rc == 0, err


def test_corrupt_checkpoint_on_resume(tool, files, train_run, tmp_path):
    run = copy_run(train_run, tmp_path)
    data = (run / "checkpoint.pth").read_bytes()
    (run / "checkpoint.pth").write_bytes(data[: len(data) // 2])
    before = snapshot(run)
    rc, err = tool("train", "--resume", *train_args(files, run, "tiny.json", "SOLVER.EPOCHS", "3"))
    assert rc == 2
    line = one_error_line(err, "checkpoint.pth")
    assert "weights_only=False" not in line
    assert snapshot(run) == before


def test_stale_temporaries_removed_on_resume(tool, files, train_run, tmp_path):
    run = copy_run(train_run, tmp_path)
    (run / ".checkpoint.pth.abc123.tmp").write_bytes(b"half a checkpoint")
    rc, err = tool("train", "--resume", *train_args(files, run, "tiny.json", "SOLVER.EPOCHS", "3"))
    assert rc == 0, err
    assert not list(run.glob(".*.tmp"))
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def weights_file(tmp_path, name, obj=None, raw=None):
    path = tmp_path / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        torch.save(obj, path)
    return path


class Payload:  # pickling this puts a GLOBAL reference in the file: weights_only refuses it
    pass


def _eval_weight_cases(train_run, search_run, tmp_path):
    sd = torch.load(train_run / "model_final.pth", weights_only=True)
    nan = {k: (v * float("nan") if v.is_floating_point() else v) for k, v in sd.items()}
    ints = {k: (v.long() if v.is_floating_point() else v) for k, v in sd.items()}
    good = (train_run / "model_final.pth").read_bytes()
    st = (train_run / "model_final.safetensors").read_bytes()
    return {
        "search_checkpoint": (search_run / "checkpoint.pth", ("search checkpoint", "tools/train.py")),
        "truncated": (weights_file(tmp_path, "t.pth", raw=good[: len(good) // 3]), ("t.pth", "truncated")),
        "text_file": (weights_file(tmp_path, "x.pth", raw=b"hello"), ("x.pth", "not a readable")),
        "pickled_code": (weights_file(tmp_path, "p.pth", raw=pickle.dumps(Payload())), ("p.pth",)),
        "nan_weights": (weights_file(tmp_path, "n.pth", nan), ("n.pth", "NaN")),
        "integer_weights": (weights_file(tmp_path, "i.pth", ints), ("i.pth", "torch.int64")),
        "missing": (tmp_path / "nope.pth", ("nope.pth", "does not exist")),
        "other_arch": (None, ("model_final.pth",)),
        "truncated_safetensors": (weights_file(tmp_path, "t.safetensors", raw=st[: len(st) // 3]), ("t.safetensors",)),
        "text_as_safetensors": (weights_file(tmp_path, "x.safetensors", raw=b"hello"), ("not a readable safetensors",)),
        "nan_safetensors": (weights_file(tmp_path, "n.safetensors", raw=safetensors_bytes(nan)), ("NaN",)),
    }


EVAL_CASES = [
    "search_checkpoint",
    "truncated",
    "text_file",
    "pickled_code",
    "nan_weights",
    "integer_weights",
    "missing",
    "other_arch",
    "truncated_safetensors",
    "text_as_safetensors",
    "nan_safetensors",
]


@pytest.mark.parametrize("case", EVAL_CASES)
def test_bad_weights_for_eval(case, tool, files, train_run, search_run, tmp_path):
    weights, words = _eval_weight_cases(train_run, search_run, tmp_path)[case]
    arch = "other.json" if case == "other_arch" else "tiny.json"
    weights = weights or train_run / "model_final.pth"
    before = snapshot(train_run), snapshot(search_run)
    rc, err = tool("eval", "--weights", weights, "MODEL.ARCH", files / arch, *TRAIN[:2])
    assert rc == 2
    line = one_error_line(err, *words)
    assert "weights_only=False" not in line
    assert (snapshot(train_run), snapshot(search_run)) == before


def test_weights_that_are_a_folder(tool, files, tmp_path):
    rc, err = tool("eval", "--weights", tmp_path, "MODEL.ARCH", files / "tiny.json", *TRAIN[:2])
    assert rc == 2
    one_error_line(err, str(tmp_path), "is a folder")


def test_float16_checkpoint_resumes_with_one_warning(tool, files, train_run, tmp_path):
    run = copy_run(train_run, tmp_path)
    ckpt = torch.load(run / "checkpoint.pth", weights_only=True)
    states = ckpt["states"]["model"]
    ckpt["states"]["model"] = {k: v.half() if v.is_floating_point() else v for k, v in states.items()}
    torch.save(ckpt, run / "checkpoint.pth")
    rc, err = tool("train", "--resume", *train_args(files, run, "tiny.json", "SOLVER.EPOCHS", "3"))
    assert rc == 0, err
    log = (run / "log.txt").read_text()
    lines = [line for line in log.splitlines() if "stored as float16" in line]
    assert len(lines) == 1 and "float32" in lines[0], log[-2000:]


@pytest.mark.parametrize("name", ["train", "search"])
def test_epoch_interrupted_after_its_checkpoint_is_completed_on_resume(
    name, tool, files, train_run, search_run, tmp_path
):
    """Stopped between an epoch's checkpoint and its metrics line (during the evaluation): the resumed
    run evaluates that epoch's weights first and writes the record an uninterrupted run wrote."""
    run = copy_run(train_run if name == "train" else search_run, tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n")  # as if stopped during epoch 1's evaluation
    if name == "train":
        args = train_args(files, run)
    else:
        args = ["SEARCH.SPACE", files / "space.json", "OUTPUT_DIR", run, *SEARCH]
    rc, err = tool(name, "--resume", *args)  # the same command: only the interrupted epoch is left
    assert rc == 0, err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert records[1] == json.loads(lines[1])
    assert "completing them" in (run / "log.txt").read_text()
