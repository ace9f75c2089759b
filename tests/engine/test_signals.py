"""Signals, in real processes: SIGKILL halfway through a checkpoint write, SIGINT and SIGTERM; the last
checkpoint stays intact and the resumed run completes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import ENV, ROOT, train_args

# SIGKILL the process halfway through writing its second checkpoint
KILL_IN_CHECKPOINT_WRITE = """
import os, runpy, signal, sys, torch
real, calls = torch.save, [0]
def save(obj, f, *a, **k):
    if isinstance(obj, dict) and str(obj.get("format", "")).startswith("mobile_cv.engine.checkpoint"):
        calls[0] += 1
        if calls[0] == 2:
            f.write(b"half a checkpoint"); f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, f, *a, **k)
torch.save = save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_sigkill_during_checkpoint_write(files, tmp_path):
    out = tmp_path / "o"
    args = [os.path.join(ROOT, "tools", "train.py"), *train_args(files, out, "tiny.json", "SOLVER.EPOCHS", "3")]
    p = subprocess.run([sys.executable, "-c", KILL_IN_CHECKPOINT_WRITE, *args], env=ENV, capture_output=True)
    assert p.returncode == -signal.SIGKILL
    assert list(out.glob(".checkpoint.pth.*.tmp"))  # the half-written file, never renamed
    ckpt = torch.load(out / "checkpoint.pth", weights_only=True)
    assert ckpt["extra"]["epoch"] == 0  # the previous checkpoint, intact
    p = subprocess.run([sys.executable, *args[:1], "--resume", *args[1:]], env=ENV, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert not list(out.glob(".*.tmp"))
    assert torch.load(out / "checkpoint.pth", weights_only=True)["extra"]["epoch"] == 2


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "stopped"), (signal.SIGTERM, 143, "terminated")])
def test_sigint_and_sigterm_stop_with_one_line(sig, code, word, files, tmp_path):
    """Ctrl-C and SIGTERM (what schedulers and ``kill`` send) end the same way: the last checkpoint
    intact, one line saying how to resume, and the resumed run completes."""
    out = tmp_path / "o"
    args = [os.path.join(ROOT, "tools", "train.py"), *train_args(files, out, "tiny.json", "SOLVER.EPOCHS", "50")]
    # a shell's background job inherits SIGINT ignored (and Python then keeps it ignored): restore it
    restore = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    p = subprocess.Popen(
        [sys.executable, *args],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=restore,
    )
    deadline = time.time() + 120
    while not (out / "checkpoint.pth").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.1)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err[-2000:]
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith(word) and "--resume" in last, last
    epoch = torch.load(out / "checkpoint.pth", weights_only=True)["extra"]["epoch"]
    assert epoch >= 0
    assert not (out / ".run.lock").exists()
    resumed = subprocess.run(
        [sys.executable, args[0], "--resume", *args[1:-1], str(epoch + 2)], env=ENV, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(epoch + 2))  # an epoch stopped during its evaluation is completed on resume
