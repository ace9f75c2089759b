"""benchmarks/gpu_check.sh, the GPU checks of training and search, runs its three parts with
``--device cpu`` at small sizes: training throughput per option, search memory (channel table and
the F space at 224 px), and a 2-process torchrun search (gloo) whose ranks end with the same alpha."""

import os
import subprocess
import sys

from tests.helpers import ROOT


def test_gpu_check_runs_on_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        ["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--device", "cpu", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = p.stdout
    assert p.returncode == 0, out[-3000:] + p.stderr[-3000:]
    for part in "abc":
        assert f"== ({part}) ok in" in out
    assert "FBNetV2_F1             channels_last  speed-up vs none (ours):" in out  # (a)'s table
    assert "conventional        2" in out and "resolution           False     1" in out  # (b)'s tables
    assert "world size 2, alpha digests per rank equal: True" in out  # (c)
    assert (tmp_path / "search" / "arch_def.json").is_file()


def test_gpu_check_refuses_bad_arguments(tmp_path):
    (tmp_path / "f").write_text("kept")
    cases = {
        ("--device", "tpu"): "error: --device must be cuda or cpu, got 'tpu'",
        ("--device",): "error: --device needs a value",
        ("--device", "cpu", "--out", str(tmp_path / "f")): (
            f"error: --out '{tmp_path / 'f'}' is not a folder this script can write (a file, or no permission)"
        ),
        ("--batch", "3"): "error: unknown argument '--batch'; usage: bash benchmarks/gpu_check.sh [--device cuda|cpu] "
        "[--out DIR]",
    }
    for args, line in cases.items():
        p = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), *args],
                           capture_output=True, text=True)  # fmt: skip
        assert p.returncode == 2 and p.stderr.strip() == line and p.stdout == "", (args, p.stderr)
    assert (tmp_path / "f").read_text() == "kept"
