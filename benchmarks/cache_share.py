#!/usr/bin/env python
"""How much last-level cache does this machine really give one core? Read bandwidth over buffer sizes.

    python benchmarks/cache_share.py                 # ~20 s; run it alone

A whole model reads all its weights on every call. While they fit the cache share the machine
gives this process they come from there; past it, from memory, and every weight costs more. The
share is not what ``lscpu`` says on a shared VM (this project's machine reports a 480 MB L3 and
read 48 MB at the speed of memory, docs/benchmarks.md, "Why the searched models miss"), so it is
measured: per buffer size, the median time of summing a float64 buffer of that size, repeated,
as GB/s and microseconds per MB, interleaved over sizes in rounds (the order rotated). The last
line names the largest size read at cache speed (within ``--drop`` of the fastest from 4 MB on)
and the first read at memory speed.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 24, 32, 36, 40, 44, 48, 56, 64, 128, 256])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--drop", type=float, default=0.25, help="memory speed: below (1 - drop) x the cache's")
    args = p.parse_args()
    if min(args.sizes) < 1 or max(args.sizes) > 16384:
        p.error(f"--sizes {args.sizes}: each a whole number of MB in 1..16384")
    if args.rounds < 1:
        p.error(f"--rounds {args.rounds}: at least 1")
    if not 0 < args.drop < 1:
        p.error(f"--drop {args.drop}: a fraction in (0, 1)")
    buffers = {mb: np.ones(mb * 2**20 // 8) for mb in args.sizes}
    samples = {mb: [] for mb in args.sizes}
    for r in range(args.rounds + 1):  # one warm-up round
        sizes = args.sizes[r % len(args.sizes) :] + args.sizes[: r % len(args.sizes)]
        for mb in sizes:
            b, times = buffers[mb], []
            b.sum()
            for _ in range(max(3, 256 // mb)):
                t0 = time.perf_counter()
                b.sum()
                times.append(time.perf_counter() - t0)
            if r:
                samples[mb].append(statistics.median(times))
    print(f"{'MB':>6} {'GB/s':>7} {'us/MB':>7}   (median of {args.rounds} rounds)")
    speed = {}
    for mb in args.sizes:
        t = statistics.median(samples[mb])
        speed[mb] = mb / 1024 / t
        print(f"{mb:>6} {speed[mb]:>7.1f} {t * 1e6 / mb:>7.1f}")
    ref = max(v for mb, v in speed.items() if mb >= 4) if any(mb >= 4 for mb in speed) else max(speed.values())
    slow = [mb for mb in args.sizes if mb >= 4 and speed[mb] < (1 - args.drop) * ref]
    if not slow:
        print(f"every size up to {max(args.sizes)} MB read at cache speed (~{ref:.0f} GB/s)")
        return
    first = min(slow)
    last = max([mb for mb in args.sizes if mb < first], default=first)
    print(
        f"cache share: reads at ~{ref:.0f} GB/s up to {last} MB, at {speed[first]:.0f} GB/s from {first} MB "
        f"(memory): a model whose weights pass ~{last} MB streams them from memory on every call"
    )


if __name__ == "__main__":
    main()
