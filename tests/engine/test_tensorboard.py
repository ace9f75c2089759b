"""TENSORBOARD True: event files beside metrics.jsonl, read back with TensorBoard's own reader."""

import json
import os
import subprocess
import sys

import pytest

from mobile_cv import engine
from mobile_cv.engine import read_metrics
from mobile_cv.extras import MissingExtraError
from tests.helpers import ROOT

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

ARCH = os.path.join(ROOT, "model_zoo", "weights", "mnist_dmasking_1p5m.json")
SPACE = {  # demo-sized: every kind of choice, two resolutions
    "input_size": 16,
    "basic_args": {"width_divisor": 8},
    "search": {"resolution": [8, 16]},
    "blocks": [
        [["masked-channel", 8, 2, 1, {"op": "conv_k3_hs", "channels": [4, 8]}]],
        [["choice", 16, 2, 1, {"ops": ["ir_k3", "ir_k5_hs", "skip"], "channels": [8, 16], "expansion": [1, 2]}]],
        [["masked-channel", 32, 1, 1, {"op": "ir_pool_hs", "channels": [16, 32], "expansion": 2}]],
    ],
}


def run_tool(name, config, *opts):
    cmd = [sys.executable, os.path.join(ROOT, "tools", name), "--config-file", os.path.join(ROOT, "configs", config)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([*cmd, *opts], capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]


def events(folder):
    files = [f for f in os.listdir(folder) if f.startswith("events.out.tfevents")]
    assert files, f"no event file in {folder}: {sorted(os.listdir(folder))}"
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_a_search_writes_every_number_and_the_probabilities(tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    out = tmp_path / "search"
    run_tool(
        "search.py", "search_embedded_mnist.yaml", "SEARCH.SPACE", str(space), "SEARCH.EPOCHS", "2",
        "SEARCH.WARMUP_EPOCHS", "1", "DATA.INPUT_SIZE", "16", "DATA.LIMIT", "96", "SEARCH.BATCH_SIZE", "32",
        "SEARCH.COST.TARGET", "0.012", "TENSORBOARD", "True", "OUTPUT_DIR", str(out),
    )  # fmt: skip
    acc = events(out)
    tags = set(acc.Tags()["scalars"])
    records = read_metrics(out / "metrics.jsonl")
    for key in ("weights_loss", "weights_acc1", "val_acc1", "temperature", "expected_flops", "derived_flops_m"):
        assert key in tags
        assert [e.step for e in acc.Scalars(key)] == [r["epoch"] for r in records]
        assert [e.value for e in acc.Scalars(key)] == pytest.approx([r[key] for r in records], rel=1e-6)
    assert "alpha_loss" in tags  # the epoch after the warm-up
    probs = records[-1]["probs"]["xif1_0.op"]
    got = [acc.Scalars(f"probs/xif1_0.op/{name}")[-1].value for name in ("ir_k3", "ir_k5_hs", "skip")]
    assert got == pytest.approx(probs, rel=1e-5) and sum(got) == pytest.approx(1, abs=1e-4)
    assert "probs/resolution/16" in tags


def test_training_writes_loss_accuracy_and_lr(tmp_path):
    out = tmp_path / "train"
    run_tool(
        "train.py", "train_embedded_mnist.yaml", "MODEL.ARCH", ARCH,
        "SOLVER.EPOCHS", "2", "DATA.LIMIT", "96", "TENSORBOARD", "True", "OUTPUT_DIR", str(out),
    )  # fmt: skip
    tags = set(events(out).Tags()["scalars"])
    assert {"train_loss", "train_acc1", "train_lr", "val_acc1", "val_loss"} <= tags


def test_asking_for_it_without_tensorboard_is_one_clear_error_before_anything_is_written(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    out = tmp_path / "run"
    cfg = engine.setup_cfg(os.path.join(ROOT, "configs", "train_embedded_mnist.yaml"), ["MODEL.ARCH", ARCH])
    cfg.merge_from_list(["TENSORBOARD", True, "OUTPUT_DIR", str(out)])
    match = r"TENSORBOARD True needs the 'tensorboard' extra .*pip install 'fbnetv2-dmasking\[tensorboard\]'"
    with pytest.raises(MissingExtraError, match=match):
        engine.default_setup(cfg, tool="train")
    assert not out.exists()
