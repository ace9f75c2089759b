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


@pytest.fixture
def data_dir():
    return DATA
