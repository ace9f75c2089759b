#!/usr/bin/env python
"""The tools' memory estimate beside the measured peak of a real search (and training) step.

Each case runs in a fresh process: the estimate the tools print before a search starts (the
supernet built on the meta device, :meth:`mobile_cv.engine.SearchRun.estimate_memory`, default
settings: ``SEARCH.SAMPLED_CHOICES ['resolution']``, ``MALLOC default``), then the real supernet built
and ``--steps`` weight steps (SGD with momentum) and alpha steps (Adam, BatchNorm statistics frozen)
taken with the largest step's mixing (the estimate's worst case: every option of a mixed choice,
the largest sampled resolution). "measured" is the growth of the process's resident high-water
mark (VmHWM) from just before the real supernet was built: weights, gradients, optimizer state,
activations and whatever the allocator keeps. "tensors" is the estimate without the allocator's
share: the high-water mark of the live tensors, which the meta-device passes follow exactly.

The ``train-*`` cases do the same for a training step of a plain model (TrainRun's estimate).

    python benchmarks/memory_estimate.py [--cases f4 f8 p4 mnist256 train-f1-32 train-l2-16]
        [--malloc default|keep|return]

Goal (issue 29): estimate / measured within [0.8, 1.25] for every case.
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# name: (space, batch, input size, input channels, classes)
CASES = {
    "f4": ("fbnetv2_f_space", 4, 224, 3, 1000),
    "f8": ("fbnetv2_f_space", 8, 224, 3, 1000),
    "p4": ("fbnetv2_p_space", 4, 224, 3, 1000),
    "mnist256": ("mnist_small_space", 256, 32, 1, 10),
    # training steps (TrainRun's estimate; SGD with momentum), the plain models
    "train-f1-32": ("FBNetV2_F1", 32, 224, 3, 1000),
    "train-l2-16": ("FBNetV2_L2", 16, 288, 3, 1000),
}
LOW, HIGH = 0.8, 1.25


def vm_hwm() -> int:
    """This process's resident high-water mark in bytes (ru_maxrss would carry the parent's over exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def search_optimizers(net):
    """SGD with momentum on the supernet's weights, Adam on alpha (as the search builds them)."""
    import torch

    arch = {id(a) for a in net.arch_parameters()}
    weights = [p for p in net.parameters() if id(p) not in arch]
    return torch.optim.SGD(weights, lr=0.01, momentum=0.9), torch.optim.Adam(net.arch_parameters(), lr=1e-3)


def search_step(net, opts, x, y, mixing, alpha_mixing) -> None:
    """A weight step and an alpha step as SearchStep takes them: ``mixing()`` gives the weight pass's
    mixing, ``alpha_mixing()`` the alpha pass's (computed from alpha, so the backward pass reaches it)."""
    import torch

    from mobile_cv.search.choices import detach_mixing
    from mobile_cv.search.mixed import frozen_bn_statistics

    weight_opt, alpha_opt = opts
    weight_opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(net(x, detach_mixing(mixing())), y).backward()
    weight_opt.step()
    alpha_opt.zero_grad(set_to_none=True)
    with frozen_bn_statistics(net):
        loss = torch.nn.functional.cross_entropy(net(x, alpha_mixing()), y)
        torch.autograd.backward(loss, inputs=net.arch_parameters())
        del loss  # a backward pass to alpha alone leaves the weights' part of the graph: free it
    alpha_opt.step()


def measure(case: str, threads: int, steps: int, malloc: str = "default") -> dict:
    """One case, in this process: the estimate, then a real step's peak growth."""
    import torch

    from mobile_cv.engine.allocator import apply_malloc_setting
    from mobile_cv.engine.memory import with_allocator

    apply_malloc_setting(malloc)

    from mobile_cv.config import get_cfg
    from mobile_cv.engine.runs import SearchRun, TrainRun
    from mobile_cv.search.supernet import build_supernet, worst_case_mixing

    space, batch, size, chans, classes = CASES[case]
    training = case.startswith("train-")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = get_cfg()
    if training:
        cfg.MODEL.ARCH, cfg.SOLVER.BATCH_SIZE = space, batch
    else:
        cfg.SEARCH.SPACE, cfg.SEARCH.BATCH_SIZE = space, batch
    cfg.DATA.INPUT_SIZE, cfg.MODEL.IN_CHANS, cfg.MODEL.NUM_CLASSES = size, chans, classes
    run = TrainRun(cfg) if training else SearchRun(cfg)
    with torch.device("meta"):
        meta = run.build_model()
    shape = (batch, chans, size, size)
    estimate = with_allocator(run.estimate_memory(meta, shape), malloc)  # as the tools check it on a CPU
    del meta

    x, y = torch.randn(shape), torch.randint(0, classes, (batch,))
    base = vm_hwm()
    if training:
        model = run.build_model().train()  # outside the meta context: real weights
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    else:
        net = build_supernet(space, classes, cfg.SEARCH.MODE, chans).train()
        opts = search_optimizers(net)
        g = worst_case_mixing(net, cfg.SEARCH.SAMPLED_CHOICES)
        for _ in range(steps):  # with the largest step's mixing
            search_step(
                net,
                opts,
                x,
                y,
                lambda: g,
                lambda: worst_case_mixing(net, cfg.SEARCH.SAMPLED_CHOICES, differentiable=True),
            )
    measured = vm_hwm() - base
    return {
        "case": case,
        "space": space,
        "batch": batch,
        "size": size,
        "estimate": estimate.total,
        "parts": dataclasses.asdict(estimate),
        "measured": measured,
        "ratio": estimate.total / measured,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--cases", nargs="+", default=["f4", "f8", "p4", "mnist256", "train-f1-32", "train-l2-16"], choices=list(CASES)
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=2, help="weight + alpha steps per case")
    p.add_argument("--malloc", default="default", help="MALLOC of the real steps (mallopt at start-up)")
    p.add_argument("--json", help="write the rows here too")
    p.add_argument("--one", help=argparse.SUPPRESS)  # a child process: one case, its row as JSON
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.threads, args.steps, args.malloc)))
        return 0
    import torch

    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {args.steps} weight + alpha steps per case, "
        f"MALLOC {args.malloc}"
    )
    print(
        f"{'case':<10} {'space':<18} {'batch':>5} {'px':>4} {'tensors GB':>11} {'estimate GB':>12} "
        f"{'measured GB':>12} {'tensors/measured':>17} {'estimate/measured':>18}"
    )
    rows, bad = [], 0
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for case in args.cases:
        cmd = [sys.executable, os.path.abspath(__file__), "--one", case, "--threads", str(args.threads)]
        cmd += ["--steps", str(args.steps), "--malloc", args.malloc]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            print(f"{case:<10} FAILED: {proc.stderr.strip().splitlines()[-1:]}")
            bad += 1
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(r)
        ok = LOW <= r["ratio"] <= HIGH
        bad += not ok
        tensors = (r["estimate"] - r["parts"]["allocator"]) / 1e9
        print(
            f"{case:<10} {r['space']:<18} {r['batch']:>5} {r['size']:>4} {tensors:>11.3f} {r['estimate'] / 1e9:>12.3f} "
            f"{r['measured'] / 1e9:>12.3f} {tensors / r['measured'] * 1e9:>17.3f} {r['ratio']:>18.3f}"
            f"{'' if ok else '  outside'}"
        )
    print(f"goal: every ratio within [{LOW}, {HIGH}]: {'met' if not bad else f'{bad} case(s) not'}")
    if args.json:
        from mobile_cv.atomic_files import atomic_write_json

        atomic_write_json(args.json, rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
