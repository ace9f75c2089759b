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
    args = engine.default_argument_parser(__doc__).parse_args(argv)

    def body() -> None:
        cfg = engine.setup_cfg(args.config_file, args.opts, arch_key="SEARCH.SPACE")
        device = engine.default_setup(
            cfg, resume=args.resume, run_files=engine.RUN_FILES + ("arch_def.json", "search.json"), tool="search"
        )
        engine.run_search(cfg, resume=args.resume, device=device, hooks=hooks)

    return engine.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
