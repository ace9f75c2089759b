"""The run lock: a second run (or torchrun job, or latency table) into a folder in use is refused in
one line and the first keeps its results; the lock of a dead run is taken over."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import ENV, ROOT, _load_tool, one_error_line, snapshot, train_args

# tools/train.py with a hook that, before the first step, says it is running and waits for a file
WAIT_AT_FIRST_STEP = """
import importlib.util, os, sys, time
sys.path.insert(0, os.environ["PYTHONPATH"])
from mobile_cv.engine import HookBase
ready, go = sys.argv[1], sys.argv[2]
class Wait(HookBase):
    def before_step(self):
        if not os.path.exists(go):
            open(ready, "w").close()
            while not os.path.exists(go):
                time.sleep(0.05)
spec = importlib.util.spec_from_file_location("train", sys.argv[3])
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
sys.exit(module.main(sys.argv[4:], hooks=[Wait()]))
"""


def test_second_run_into_the_same_folder_refuses_and_the_first_keeps_its_results(tool, files, tmp_path):
    out, ready, go = tmp_path / "o", tmp_path / "ready", tmp_path / "go"
    first = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WAIT_AT_FIRST_STEP,
            ready,
            go,
            os.path.join(ROOT, "tools", "train.py"),
            *train_args(files, out),
        ],  # fmt: skip
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not ready.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert ready.exists(), first.stderr.read()
        before = snapshot(out)
        for resume in ([], ["--resume"]):
            rc, err = tool("train", *resume, *train_args(files, out))
            assert rc == 2
            one_error_line(err, str(out), "in use by another run", f"pid {first.pid}")
            assert snapshot(out) == before
        go.touch()
        _, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, err[-2000:]
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1]
    assert json.loads((out / "eval.json").read_text())["test"]["acc1"] >= 0
    assert not (out / ".run.lock").exists()  # released at the end


def test_stale_lock_of_a_dead_run_is_taken_over(tool, files, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "o"
    out.mkdir()
    import socket

    (out / ".run.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    rc, err = tool("train", *train_args(files, out))
    assert rc == 0, err
    assert f"pid {dead.pid}" in (out / "log.txt").read_text()
    assert not (out / ".run.lock").exists()


def test_run_lock_refuses_a_live_holder_and_cleans_up(tmp_path):
    from mobile_cv.engine.run_lock import RunLock, RunLockError

    folder = tmp_path / "new"
    with RunLock(str(folder)):
        with pytest.raises(RunLockError, match="in use by another run"):
            RunLock(str(folder)).acquire()  # flock is per open file: a second lock in one process conflicts too
        assert (folder / ".run.lock").exists()
    assert not folder.exists()  # made for the lock, left empty: removed


def test_latency_table_refuses_a_table_being_built(capfd, tmp_path):
    from mobile_cv.engine.run_lock import RunLock

    out = tmp_path / "t.json"
    with RunLock(str(tmp_path), ".t.json.lock", what="--out"):
        capfd.readouterr()
        rc = _load_tool("latency_table").main(["mnist_small_space", "--runtime", "eager", "--out", str(out)])
        assert rc == 2
        one_error_line(capfd.readouterr().err, "in use by another run")
    assert sorted(os.listdir(tmp_path)) == []


def test_torchrun_into_a_folder_in_use_ends_at_once(files, tmp_path):
    """Rank 0 takes the lock; its refusal ends the job (torchrun stops the other rank), no wait."""
    from mobile_cv.engine.run_lock import RunLock

    out = tmp_path / "o"
    with RunLock(str(out)):
        before = snapshot(out)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               os.path.join(ROOT, "tools", "train.py"), *train_args(files, out)]  # fmt: skip
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
        assert time.perf_counter() - t0 < 120
        assert snapshot(out) == before
    assert p.returncode != 0
    ours = [line for line in p.stderr.splitlines() if "error:" in line and "in use by another run" in line]
    assert len(ours) == 1 and ours[0].startswith("[rank 0] error:"), p.stderr[-3000:]
