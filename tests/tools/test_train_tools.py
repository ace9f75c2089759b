"""tools/train.py and tools/eval.py end to end, torchrun, exact resume, and the engine's safety nets."""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from mobile_cv.engine import (
    Checkpointer,
    CheckpointError,
    MetricsWriter,
    OutputDirError,
    atomic_save,
    check_output_dir,
    get_rng_state,
    read_metrics,
    set_rng_state,
)
from tests.helpers import KILL_AT_STEP, ROOT, TORCHRUN

TINY_ARCH = {
    "input_size": 32,
    "blocks": [
        [["conv_k3", 8, 2, 1]],
        [["ir_k3", 16, 2, 1, {"expansion": 2}]],
        [["ir_k3", 24, 2, 1, {"expansion": 2}]],
    ],
}
# dropout and EMA on, so the resume test also covers the RNG and the EMA state
TINY_RUN = [
    "DATA.LIMIT",
    "256",
    "SOLVER.BATCH_SIZE",
    "16",
    "MODEL.DROP_RATE",
    "0.2",
    "SOLVER.EMA.ENABLED",
    "True",
    "SOLVER.EMA.DECAY",
    "0.99",
]


def tool(name, *args, flags=()):
    return [sys.executable, os.path.join(ROOT, "tools", name), *flags, *args]


def run(cmd, check=True):
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}):\n{p.stdout}\n{p.stderr[-3000:]}")
    return p


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("arch") / "tiny.json"
    path.write_text(json.dumps(TINY_ARCH))
    return str(path)


def train_args(arch_file, out, epochs):
    return ["MODEL.ARCH", arch_file, "OUTPUT_DIR", str(out), "SOLVER.EPOCHS", str(epochs), *TINY_RUN]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, arch_file):
    """A complete 3-epoch run of the tiny arch (the reference for the resume test)."""
    out = tmp_path_factory.mktemp("runs") / "full"
    run(tool("train.py", *train_args(arch_file, out, 3)))
    return out


def test_train_writes_every_output(finished_run):
    names = set(os.listdir(finished_run))
    assert {
        "config.yaml",
        "log.txt",
        "metrics.jsonl",
        "checkpoint.pth",
        "arch_def.json",
        "model_final.pth",
        "model_final.safetensors",
        "eval.json",
    } <= names
    assert not [n for n in names if n.endswith(".tmp")]
    records = read_metrics(finished_run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert {"train_loss", "train_acc1", "train_lr", "val_acc1", "val_acc5"} <= set(records[0])
    summary = json.load(open(finished_run / "eval.json"))
    assert summary["val"]["images"] == 256 and summary["test"]["images"] == 256
    assert summary["val"]["acc1"] > 20  # it learned something from 48 steps (chance: 10)
    assert json.load(open(finished_run / "arch_def.json"))["blocks"] == TINY_ARCH["blocks"]
    assert "SOLVER:" in open(finished_run / "config.yaml").read()


def eval_test_split(run_dir, weights):
    """tools/eval.py's JSON result on the test split of a finished run."""
    args = ("--config-file", str(run_dir / "config.yaml"), "--weights", str(run_dir / weights), "--split", "test")
    return json.loads(run(tool("eval.py", *args)).stdout.strip().splitlines()[-1])


def test_eval_tool_reproduces_the_summary(finished_run):
    result = eval_test_split(finished_run, "model_final.pth")
    summary = json.load(open(finished_run / "eval.json"))
    assert result["acc1"] == pytest.approx(summary["test"]["acc1"]) and result["images"] == 256


def test_safetensors_weights_equal_the_pth_and_evaluate_the_same(finished_run):
    from safetensors.torch import load_file

    pth = torch.load(finished_run / "model_final.pth", map_location="cpu", weights_only=True)
    st = load_file(finished_run / "model_final.safetensors")
    assert pth.keys() == st.keys()
    assert all(torch.equal(pth[k], st[k]) and pth[k].dtype == st[k].dtype for k in pth)
    result = eval_test_split(finished_run, "model_final.safetensors")
    assert result["acc1"] == pytest.approx(json.load(open(finished_run / "eval.json"))["test"]["acc1"])


def test_output_folder_of_another_run_is_refused(finished_run, arch_file):
    before = {n: sha256(finished_run / n) for n in ("checkpoint.pth", "metrics.jsonl", "model_final.pth")}
    p = run(tool("train.py", *train_args(arch_file, finished_run, 3)), check=False)
    assert p.returncode == 2
    assert str(finished_run) in p.stderr and "--resume" in p.stderr and "Traceback" not in p.stderr
    assert before == {n: sha256(finished_run / n) for n in before}


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(finished_run, arch_file, tmp_path):
    out = tmp_path / "killed"
    steps = 256 // 16
    cmd = [sys.executable, KILL_AT_STEP, str(steps + 7), *tool("train.py", *train_args(arch_file, out, 3))[1:]]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    # it died inside the second epoch (KILL_AT_STEP: step 7 of it): the first one's record alone
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [0]
    assert not (out / "model_final.pth").exists()

    run(tool("train.py", *train_args(arch_file, out, 3), flags=["--resume"]))
    a, b = load(finished_run / "model_final.pth"), load(out / "model_final.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref, got = read_metrics(finished_run / "metrics.jsonl"), read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in got] == [0, 1, 2]
    assert [r["train_loss"] for r in got] == [r["train_loss"] for r in ref]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(finished_run, arch_file, tmp_path):
    out = tmp_path / "nan"
    shutil.copytree(finished_run, out)
    kept = {n: sha256(out / n) for n in ("checkpoint.pth", "metrics.jsonl", "model_final.pth", "eval.json")}
    # resume for a 4th epoch with an absurd learning rate (the schedule follows the config on resume)
    args = train_args(arch_file, out, 4) + ["SOLVER.BASE_LR", "1e10"]
    p = run(tool("train.py", *args, flags=["--resume"]), check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    msg = p.stderr.strip().splitlines()[-1]
    assert "loss is nan" in msg.lower() or "loss is inf" in msg.lower()
    assert "epoch 4/4" in msg and "checkpoint.pth (after epoch 3) is intact" in msg
    assert kept == {n: sha256(out / n) for n in kept}
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_torchrun_two_processes_write_one_run_with_identical_weights(arch_file, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        *TORCHRUN,
        os.path.join(ROOT, "tools", "train.py"),
        *train_args(arch_file, out, 1),
    ]
    p = run(cmd)
    assert "world size 2" in p.stdout
    summary = json.load(open(out / "eval.json"))
    digests = summary["weights_sha256_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert summary["val"]["images"] == 256  # the two shards together cover the split once
    assert len(read_metrics(out / "metrics.jsonl")) == 1
    assert open(out / "log.txt").read().count("final: val top-1") == 1  # rank 0 alone logs


# --------------------------------------------------------------------------- engine pieces, in process


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    state = get_rng_state()
    atomic_save(state, str(tmp_path / "rng.pth"))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    set_rng_state(load(tmp_path / "rng.pth"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_checkpointer_restores_states_and_extras(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    ckpt = Checkpointer(str(tmp_path), model=model, optimizer=opt, scheduler=None)
    ckpt.save(epoch=4, temperature=3.5, arch={"blocks": [1, 2]})
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    torch.nn.init.zeros_(model.weight)
    extra = Checkpointer(str(tmp_path), model=model, optimizer=opt).resume_or_start(resume=True)
    assert extra == {"epoch": 4, "temperature": 3.5, "arch": {"blocks": [1, 2]}}
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert Checkpointer(str(tmp_path / "empty"), model=model).resume_or_start(resume=True) == {}


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    ckpt = Checkpointer(str(tmp_path), model=model)
    ckpt.save(epoch=0)
    good = sha256(tmp_path / "checkpoint.pth")

    def torn_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(epoch=1)
    assert sha256(tmp_path / "checkpoint.pth") == good and os.listdir(tmp_path) == ["checkpoint.pth"]


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.pth").write_bytes(b"torn")
    with pytest.raises(CheckpointError, match="checkpoint.pth: not a readable PyTorch file"):
        Checkpointer(str(tmp_path), model=torch.nn.Linear(1, 1)).resume_or_start(resume=True)
    atomic_save({"weights": torch.zeros(1)}, str(tmp_path / "checkpoint.pth"))
    with pytest.raises(CheckpointError, match="not a checkpoint written by"):
        Checkpointer(str(tmp_path), model=torch.nn.Linear(1, 1)).resume_or_start(resume=True)


def test_metrics_writer_drops_records_of_epochs_being_redone(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    w = MetricsWriter(path)
    for e in range(3):
        w.write({"epoch": e, "loss": torch.tensor(1.0 / (e + 1)), "bad": float("nan")})
    with open(path, "a") as f:
        f.write('{"epoch": 3, "lo')  # torn by a kill
    MetricsWriter(path, start_epoch=2)
    assert [r["epoch"] for r in read_metrics(path)] == [0, 1]
    assert read_metrics(path)[0]["loss"] == 1.0 and read_metrics(path)[0]["bad"] == "nan"


def test_output_dir_guard(tmp_path):
    check_output_dir(str(tmp_path / "new"), resume=False)
    (tmp_path / "checkpoint.pth").write_bytes(b"x")
    with pytest.raises(OutputDirError, match="--resume"):
        check_output_dir(str(tmp_path), resume=False)
    check_output_dir(str(tmp_path), resume=True)
