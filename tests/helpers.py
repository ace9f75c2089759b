"""Paths, constants and plain helpers the test files share (the fixtures are in ``tests/conftest.py``).

Imported as ``from tests.helpers import ROOT``: ``tests/`` is a package, and pytest puts the
repository root on ``sys.path`` for it (its default rootdir-based import). The seeded weights of
the golden-output tests are their own module, ``tests/seeded_weights.py``: it needs nothing but
torch, as ``tests/data/make_reference_logits.py`` loads it by path beside the reference package.
"""

import hashlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
DATA = os.path.join(ROOT, "tests", "data")  # fixture data

# ``python KILL_AT_STEP N tools/x.py ARGS``: the tool, SIGKILLed before its N-th step (a hook).
KILL_AT_STEP = os.path.join(ROOT, "tests", "kill_at_step.py")
# ``[*TORCHRUN, tools/x.py, ARGS]``: the tool in two processes on this machine (DistributedDataParallel)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

# the smallest search space the tool tests search: 16 px, two resolutions, a block-type choice
TINY_SPACE = {
    "input_size": 16,
    "search": {"resolution": [8, 16]},
    "blocks": [
        [["masked-channel", 8, 2, 1, {"op": "conv_k3_hs", "channels": [4, 8]}]],
        [["choice", 16, 2, 1, {"ops": ["ir_k3", "skip"], "channels": [8, 16], "expansion": [1, 2]}]],
    ],
}


# --------------------------------------------------------------------------- the fault tests
# Bad inputs and faults, as a user meets them (tests/*/test_*_faults.py, test_ranges.py,
# test_signals.py, test_run_lock.py, test_memory_check.py, test_downloads.py, test_tool_errors.py, ...):
# every case checks the exit code, that the message is one line naming the problem, that no traceback
# reaches stderr, and that every file already in the output folder is byte-identical afterwards
# (nothing lost, nothing half-written). The tools run in the test's process (``tools/<name>.py``'s
# ``main(argv)``, through the same ``run_main`` as on the command line: the ``tool`` fixture) so the
# cases stay fast; signals, worker processes and downloads use real subprocesses, threads and a
# local HTTP server that stalls.

TINY_ARCH = {
    "input_size": 32,
    "blocks": [[["conv_k3", 8, 2, 1]], [["ir_k3", 16, 2, 1, {"expansion": 2}]], [["ir_k3", 16, 2, 1]]],
}
OTHER_ARCH = {"input_size": 32, "blocks": [[["conv_k3", 8, 2, 1]], [["ir_k3", 24, 2, 1, {"expansion": 2}]]]}
TRAIN = ["DATA.LIMIT", "64", "SOLVER.BATCH_SIZE", "32", "SOLVER.EPOCHS", "2"]
SEARCH = ["DATA.LIMIT", "64", "SEARCH.BATCH_SIZE", "32", "SEARCH.EPOCHS", "2", "SEARCH.WARMUP_EPOCHS", "1"]
SEARCH += ["SEARCH.COST.TARGET", "0.004", "SEARCH.COST.TOLERANCE", "0.9", "DATA.INPUT_SIZE", "16"]

# the environment of the tools the fault tests run as real processes
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": ROOT}


def _load_tool(name):
    """``tools/<name>.py`` as a module (its ``main(argv)`` runs the tool in this process)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOLS = {name: _load_tool(name) for name in ("train", "search", "eval")}


def snapshot(folder):
    """{relative path: sha256} of every file under ``folder``."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def one_error_line(err, *words):
    """stderr holds no traceback and one ``error:`` line containing every word (case-insensitive)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    return lines[0]


def copy_run(run, tmp_path):
    """A copy of a shared run (the ``train_run``/``search_run`` fixtures) that a test may change."""
    dest = tmp_path / "copy"
    shutil.copytree(run, dest)
    return dest


def train_args(files, out, arch="tiny.json", *extra):
    return ["MODEL.ARCH", str(files / arch), "OUTPUT_DIR", str(out), *TRAIN, *extra]


def make_image_folder(root, splits=("train", "val"), classes=("cat", "dog"), per_class=3):
    """An ImageNet-layout folder of random 20x24 RGB PNGs under ``root`` (a Path): split/class/i.png."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            os.makedirs(root / split / c)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root
