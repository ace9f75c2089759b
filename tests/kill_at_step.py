"""Run a tool with a hook that SIGKILLs the process at an exact step: a real kill at a known
point, where a timer would be at the mercy of the machine's load. Fault injection through the
engine's hook API (``tools/<tool>.py``'s ``main(argv, hooks=...)``), not by patching the code
under test.

    python tests/kill_at_step.py N tools/train.py --config-file F ...   # killed before its N-th step
"""

import importlib.util
import os
import signal
import sys

# A script, not a module of the tests package: run as ``python tests/kill_at_step.py``, it has its
# own folder (tests/) on sys.path, not the repository root its tools and mobile_cv are found from.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mobile_cv.engine import HookBase  # noqa: E402


class KillAtStep(HookBase):
    """SIGKILL before the ``n``-th step of this run (1-based; a search step is a weight and an alpha step)."""

    def __init__(self, n: int) -> None:
        self.n, self.steps = n, 0

    def before_step(self) -> None:
        self.steps += 1
        if self.steps == self.n:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    n, tool, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    spec = importlib.util.spec_from_file_location("tool", os.path.join(ROOT, tool))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv, hooks=[KillAtStep(n)])


if __name__ == "__main__":
    sys.exit(main())
