#!/usr/bin/env python
"""Size of a search space: log10 of its number of architectures, and the ratio to
FBNet v1's space (9 candidates in each of 22 layers, about 10^21).

    python tools/space_size.py fbnetv2_f_space [--choices]
    python tools/space_size.py            # every registered space
"""

import argparse
import math
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import arch_defs  # noqa: E402
from mobile_cv import engine  # noqa: E402
from mobile_cv.search import build_supernet  # noqa: E402

FBNET_V1_LOG10 = 22 * math.log10(9)  # 20.99


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spaces", nargs="*", help="registered space names or .json/.py files (default: all spaces)")
    p.add_argument("--choices", action="store_true", help="also list every choice and its number of options")
    args = p.parse_args(argv)

    def body() -> None:
        for name in args.spaces or arch_defs.names("space"):
            net = build_supernet(name, num_classes=0)
            size = net.log10_size()
            kinds = Counter(c.kind for c in net.choices.values())
            print(
                f"{name}: 10^{size:.2f} architectures = 10^{size - FBNET_V1_LOG10:.2f} x FBNet v1's "
                f"10^{FBNET_V1_LOG10:.2f} "
                f"({len(net.choices)} choices: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")"
            )
            if args.choices:
                for c in net.choices.values():
                    print(f"  {c.label:<24} {c.size:>4} options  {list(c.options)[:4]}{' ...' if c.size > 4 else ''}")

    return engine.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
