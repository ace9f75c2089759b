import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

torch.set_num_threads(2)

# Runs a tool with SIGKILL sent to itself at the KILL_AT-th training iteration: a real kill at
# an exact point, where a timer would be at the mercy of the machine's load.
KILL_AT_ITERATION = """
import os, runpy, signal, sys
import mobile_cv.engine.train_loop as loop
real, calls = loop.check_finite, [0]
def check_finite(loss, where):
    calls[0] += 1
    if calls[0] == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(loss, where)
loop.check_finite = check_finite
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture
def data_dir():
    return DATA
