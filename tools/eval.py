#!/usr/bin/env python
"""Top-1/top-5 accuracy of saved weights on the val or test split.

    python tools/eval.py --config-file output/train/config.yaml --weights output/train/model_final.pth
    python tools/eval.py --config-file configs/train_imagenet.yaml --weights W --split test DATA.ROOT /data/imagenet
    torchrun --nproc_per_node=2 tools/eval.py --config-file F --weights W   # each rank evaluates a shard

``--weights`` takes a plain state dict (model_final.pth or model_final.safetensors, a published
checkpoint) or a training checkpoint.pth (its EMA weights when it has them). Prints one JSON line.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mobile_cv import comm, engine  # noqa: E402


def main(argv=None) -> int:
    parser = engine.default_argument_parser(__doc__, resume=False)
    parser.add_argument(
        "--weights",
        required=True,
        metavar="FILE",
        help="state dict (.pth or .safetensors) or training checkpoint to evaluate",
    )
    parser.add_argument("--split", default="val", choices=("val", "test"), help="which split (default: val)")
    args = parser.parse_args(argv)

    def body() -> None:
        cfg = engine.setup_cfg(args.config_file, args.opts)
        device = engine.default_setup(cfg, write_outputs=False)
        result = engine.evaluate_weights(cfg, args.weights, split=args.split, device=device)
        if comm.is_main_process():
            print(json.dumps(result), flush=True)

    return engine.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
