#!/usr/bin/env python
"""DMaskingNAS search: a search space, data, and a cost (FLOPs, params or latency) -> a derived arch def.

    python tools/search.py --config-file configs/search_embedded_mnist.yaml
    python tools/search.py --config-file configs/search_embedded_mnist.yaml \\
        SEARCH.COST.FORM target SEARCH.COST.TARGET 2.0 OUTPUT_DIR output/search_2mflops
    python tools/search.py --config-file F --resume              # continue a killed search
    torchrun --nproc_per_node=2 tools/search.py --config-file F   # DistributedDataParallel

Writes to OUTPUT_DIR: config.yaml, log.txt, metrics.jsonl, checkpoint.pth (every epoch),
arch_def.json (every epoch), and at the end arch_def.py, probabilities.png,
cost_accuracy.png and search.json. Train the result with
``tools/train.py --config-file F MODEL.ARCH OUTPUT_DIR/arch_def.json``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mobile_cv import engine  # noqa: E402


def main(argv=None, hooks=()) -> int:
    """``hooks``: extra :class:`mobile_cv.engine.HookBase` hooks for the run (the Python API's)."""
    return engine.launch_run(engine.SearchRun, __doc__, argv, hooks)


if __name__ == "__main__":
    sys.exit(main())
