import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

torch.set_num_threads(2)

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


@pytest.fixture
def data_dir():
    return DATA
