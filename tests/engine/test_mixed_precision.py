"""Mixed precision (SOLVER.AMP / SEARCH.AMP bf16 and fp16), channels_last and torch.compile: the
runs train, a run killed mid-epoch and resumed ends bit for bit as the uninterrupted one, and what
is saved stays float32."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from mobile_cv.engine import read_metrics
from tests.helpers import KILL_AT_STEP, ROOT, TINY_SPACE

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TINY_ARCH = {
    "input_size": 32,
    "blocks": [[["conv_k3", 8, 2, 1]], [["ir_k3_se", 16, 2, 1, {"expansion": 2}]], [["ir_k3", 16, 2, 1]]],
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("amp")
    (d / "tiny.json").write_text(json.dumps(TINY_ARCH))
    (d / "space.json").write_text(json.dumps(TINY_SPACE))
    return d


def run(args, kill_at=None):
    cmd = [sys.executable, *([KILL_AT_STEP, str(kill_at)] if kill_at else []), *args]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def train(files, out, *opts):
    return [os.path.join("tools", "train.py"), "MODEL.ARCH", str(files / "tiny.json"), "OUTPUT_DIR", str(out),
            "DATA.LIMIT", "64", "SOLVER.BATCH_SIZE", "16", "SOLVER.EPOCHS", "2", *opts]  # fmt: skip


def search(files, out, *opts):
    return [os.path.join("tools", "search.py"), "SEARCH.SPACE", str(files / "space.json"), "OUTPUT_DIR", str(out),
            "DATA.LIMIT", "64", "SEARCH.BATCH_SIZE", "16", "SEARCH.EPOCHS", "2", "SEARCH.WARMUP_EPOCHS", "1",
            "SEARCH.COST.TARGET", "0.004", "SEARCH.COST.TOLERANCE", "0.9", "DATA.INPUT_SIZE", "16", *opts]  # fmt: skip


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


CASES = {
    "bf16": ["SOLVER.AMP", "bf16"],
    "fp16": ["SOLVER.AMP", "fp16"],
    "bf16_channels_last": ["SOLVER.AMP", "bf16", "SOLVER.CHANNELS_LAST", "True"],
}


@pytest.fixture(scope="module")
def plain_weights(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "o"
    p = run(train(files, out))
    assert p.returncode == 0, p.stderr[-2000:]
    return weights(out / "model_final.pth")


@pytest.mark.parametrize("case", sorted(CASES))
def test_sigkill_then_resume_is_bit_exact(case, files, plain_weights, tmp_path):
    opts = CASES[case]
    full, killed = tmp_path / "full", tmp_path / "killed"
    p = run(train(files, full, *opts))
    assert p.returncode == 0, p.stderr[-2000:]
    p = run(train(files, killed, *opts), kill_at=6)  # inside the second epoch (4 steps per epoch)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    p = run([train(files, killed, *opts)[0], "--resume", *train(files, killed, *opts)[1:]])
    assert p.returncode == 0, p.stderr[-2000:]
    a, b = weights(full / "model_final.pth"), weights(killed / "model_final.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(v.dtype in (torch.float32, torch.int64) for v in a.values())  # saved in float32
    ref, got = read_metrics(full / "metrics.jsonl"), read_metrics(killed / "metrics.jsonl")
    assert [r["train_loss"] for r in got] == [r["train_loss"] for r in ref]
    assert any(not torch.equal(a[k], plain_weights[k]) for k in a)  # the option took effect
    if case == "fp16":  # the scaler's state is checkpointed
        ckpt = torch.load(full / "checkpoint.pth", weights_only=True)
        assert ckpt["states"]["precision"]["scaler"]["scale"] > 0


def test_search_with_bf16_and_channels_last(files, tmp_path):
    p = run(search(files, tmp_path / "s", "SEARCH.AMP", "bf16", "SEARCH.CHANNELS_LAST", "True"))
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads((tmp_path / "s" / "search.json").read_text())
    assert summary["derived_flops_m"] > 0


def test_compiled_training_saves_the_plain_model(files, tmp_path):
    out = tmp_path / "c"
    p = run(train(files, out, "SOLVER.COMPILE", "True", "SOLVER.EPOCHS", "1"))
    assert p.returncode == 0, p.stderr[-2000:]
    sd = weights(out / "model_final.pth")
    assert not any(k.startswith("_orig_mod.") for k in sd)  # torch.compile's wrapper is not in the weights
    assert json.loads((out / "eval.json").read_text())["test"]["images"] > 0


def test_compiled_search_runs_within_the_recompile_limit(files, tmp_path):
    """SEARCH.COMPILE: the weight and alpha steps run compiled graphs (one per sampled resolution and
    step kind), and dynamo never falls back to eager for hitting its recompile limit."""
    out = tmp_path / "c"
    p = run(search(files, out, "SEARCH.COMPILE", "True", "SEARCH.EPOCHS", "1", "SEARCH.WARMUP_EPOCHS", "0"))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "_limit" not in p.stderr, p.stderr[-2000:]  # "torch._dynamo hit config.recompile_limit"
    (record,) = read_metrics(out / "metrics.jsonl")
    assert record["alpha_loss"] > 0 and json.loads((out / "search.json").read_text())["derived_flops_m"] > 0


@pytest.mark.parametrize("sampled", [["op"], ["channels", "resolution"]])
def test_compiled_search_refuses_choices_sampled_per_step(sampled):
    from mobile_cv.config import ConfigError
    from mobile_cv.engine import setup_cfg

    with pytest.raises(ConfigError, match=f"SEARCH.COMPILE cannot be used with SEARCH.SAMPLED_CHOICES.*'{sampled[0]}'"):
        setup_cfg(opts=["SEARCH.COMPILE", "True", "SEARCH.SAMPLED_CHOICES", str(sampled)], arch_key="SEARCH.SPACE")


def test_fp16_divergence_stops_with_the_usual_message(files, tmp_path):
    """Under fp16 the scaler skips steps whose gradients overflowed; a loss that is itself NaN/inf
    (here: weights blown up by an absurd learning rate) still stops the run as in float32."""
    p = run(train(files, tmp_path / "d", "SOLVER.AMP", "fp16", "SOLVER.BASE_LR", "1e10"))
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    msg = p.stderr.strip().splitlines()[-1].lower()
    assert "loss is nan" in msg or "loss is inf" in msg
