"""run_main, the way every tool exits: a user's error is one line and exit code 2, an out-of-memory
error is one line naming the batch size, a bug keeps its traceback."""

import pytest

from mobile_cv.errors import UserError
from tests.helpers import one_error_line


def test_bugs_keep_their_traceback_and_exit_1():
    from mobile_cv.engine import USER_ERROR_EXIT, run_main

    def bug():
        return 1 / 0

    with pytest.raises(ZeroDivisionError):
        run_main(bug)
    assert run_main(lambda: (_ for _ in ()).throw(UserError("fix this"))) == USER_ERROR_EXIT != 1


def test_running_out_of_memory_is_one_line(capfd):
    from mobile_cv.engine import run_main

    def allocate():
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: 9 GB")

    capfd.readouterr()
    assert run_main(allocate) == 2
    one_error_line(capfd.readouterr().err, "out of memory", "SOLVER.BATCH_SIZE")
