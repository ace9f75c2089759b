#!/usr/bin/env python
"""Train a plain model from scratch: a registered arch or an arch-def file (e.g. a search's arch_def.json).

    python tools/train.py --config-file configs/train_embedded_mnist.yaml
    python tools/train.py --config-file configs/train_embedded_mnist.yaml MODEL.ARCH FBNetV2_F1 \\
        DATA.INPUT_SIZE 32 SOLVER.EPOCHS 3             # DATA.INPUT_SIZE 0 (default): the arch's own
    python tools/train.py --config-file F --resume            # continue a killed run where it stopped
    torchrun --nproc_per_node=2 tools/train.py --config-file F   # DistributedDataParallel

Writes to OUTPUT_DIR: config.yaml, log.txt, metrics.jsonl, checkpoint.pth (every epoch),
arch_def.json, model_final.pth, model_final.safetensors and eval.json (val and test top-1/top-5).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mobile_cv import engine  # noqa: E402


def main(argv=None, hooks=()) -> int:
    """``hooks``: extra :class:`mobile_cv.engine.HookBase` hooks for the run (the Python API's)."""
    return engine.launch_run(engine.TrainRun, __doc__, argv, hooks)


if __name__ == "__main__":
    sys.exit(main())
