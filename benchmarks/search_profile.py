#!/usr/bin/env python
"""Where one DMaskingNAS search step's time goes: torch.profiler over the real
:class:`~mobile_cv.engine.steps.SearchStep` (a weight step, then an alpha step) of a search space.

Two tables per space, from the same profiled steps (a warm-up step before them, not counted):

The resolution choice's logits are set so both steps run at the full input size (the costliest
step; a sampled resolution would make the profiled steps incomparable).

* phases (wall time of each, inclusive): the Gumbel sample of the mixing weights, the forward and
  backward passes of each step, the cost term (effective-shape expected cost), the optimizer steps;
* kinds of work (self CPU time of the aten ops, forward and backward together): convolutions,
  batch norm, masking and mixing (the element-wise products and sums of the channel masks, the
  mixtures and the soft identities, and their gradients), resolution resampling (the subsampling
  and the placement into the full-size map), activations, the rest.

    python benchmarks/search_profile.py [--spaces mnist_small_space fbnetv2_f_space] [--steps 2]
"""

import argparse
import os
import sys
import time
from collections import defaultdict
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

from mobile_cv.config import get_cfg  # noqa: E402
from mobile_cv.engine import SearchStep, build_search_optimizers  # noqa: E402
from mobile_cv.search import CostLoss, build_supernet  # noqa: E402

# space -> (input channels, default batch)
SPACES = {"mnist_small_space": (1, 64), "fbnetv2_f_space": (3, 4), "fbnetv2_p_space": (3, 4)}

# kinds of work by aten op name (self time); the first matching entry wins
KINDS = [
    ("convolution", ("convolution", "conv2d", "mkldnn_conv")),
    ("batch norm", ("batch_norm",)),
    ("resolution resampling", ("index_select", "index_put", "index_add", "index.", "aten::index", "zero", "fill_")),
    ("activations", ("hardswish", "hardsigmoid", "relu", "threshold", "sigmoid", "silu", "clamp")),
    ("masking and mixing", ("aten::mul", "aten::add", "aten::sum", "aten::sub", "aten::div", "aten::rsub")),
    ("linear / pooling", ("addmm", "aten::mm", "mean", "avg_pool", "adaptive_avg")),
]


def kind_of(name: str) -> str:
    for kind, keys in KINDS:
        if any(k in name for k in keys):
            return kind
    return "other (copies, views, allocation, optimizer, autograd)"


def timed(label: str, fn):
    def wrapper(*args, **kwargs):
        with record_function(label):
            return fn(*args, **kwargs)

    return wrapper


class ProfiledSearchStep(SearchStep):
    """The library's search step with each pass under a profiler label: its two seams overridden."""

    def forward_pass(self, model, x, y, mixing_grad):
        label = f"forward ({'alpha' if mixing_grad else 'weight'} step)"
        return timed(label, super().forward_pass)(model, x, y, mixing_grad)

    def backward_pass(self, loss, optimizer, where, inputs=None, before_step=None):
        label = f"backward + optimizer ({'alpha' if optimizer is self.alpha_opt else 'weight'} step)"
        return timed(label, super().backward_pass)(loss, optimizer, where, inputs, before_step)


def build_step(space: str, sampled, batch: int):
    in_chans, _ = SPACES.get(space, (3, batch))
    cfg = get_cfg()
    cfg.merge_from_list(["SEARCH.SPACE", space, "SEARCH.SAMPLED_CHOICES", list(sampled)])
    net = build_supernet(space, num_classes=10, in_chans=in_chans)
    w_opt, a_opt, _ = build_search_optimizers(cfg, net, 100)
    target = 0.5 * float(net.expected_cost("flops").detach())
    cost = (CostLoss("target", target=target), timed("cost term", lambda g: net.expected_cost("flops", g)))
    step = ProfiledSearchStep(cfg, net, net, cost, (w_opt, a_opt), None)
    step.trainer = SimpleNamespace(where="profile", epoch=0)
    # phases inside the passes: the public methods the step calls, wrapped
    net.sample_mixing = timed("Gumbel sample of the mixing weights", net.sample_mixing)
    w_opt.step = timed("weight SGD step", w_opt.step)
    a_opt.step = timed("alpha Adam step", a_opt.step)
    if "resolution" in net.choices:  # both steps at the full input size (the costliest; otherwise
        with torch.no_grad():  # each profiled step samples its own resolution and they do not compare)
            net.alpha("resolution").copy_(torch.linspace(-30.0, 0.0, len(net.choices["resolution"].options)))
    size = net.input_size
    x, y = torch.randn(batch, in_chans, size, size), torch.randint(0, 10, (batch,))
    return step, x, y


def profile_space(space: str, sampled, batch: int, steps: int) -> None:
    step, x, y = build_step(space, sampled, batch)

    def one():
        step.weight_step(x, y)
        step.alpha_step(x, y, "profile")

    one()  # warm-up: allocator, first-call costs
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            one()
    wall = (time.perf_counter() - t0) / steps
    events = prof.key_averages()
    phases = {e.key: e.cpu_time_total / 1e3 / steps for e in events if not e.key.startswith(("aten::", "autograd"))}
    kinds = defaultdict(float)
    for e in events:
        if e.key.startswith("aten::"):
            kinds[kind_of(e.key)] += e.self_cpu_time_total / 1e3 / steps
    total = sum(kinds.values())
    print(
        f"\n{space} at {x.shape[-1]} px, batch {batch}, SAMPLED_CHOICES {list(sampled)}, {torch.get_num_threads()} "
        f"threads: one weight step + one alpha step, {wall * 1e3:.0f} ms per pair under the profiler (mean of {steps})"
    )
    print(f"{'phase':<45} {'ms':>9} {'share':>6}")
    order = [
        "Gumbel sample of the mixing weights",
        "forward (weight step)",
        "backward + optimizer (weight step)",
        "weight SGD step",
        "forward (alpha step)",
        "cost term",
        "backward + optimizer (alpha step)",
        "alpha Adam step",
    ]
    for label in order:
        if label in phases:
            print(f"{label:<45} {phases[label]:>9.1f} {phases[label] / (wall * 1e3):>6.1%}")
    print(f"{'kind of work (self time of aten ops)':<45} {'ms':>9} {'share':>6}")
    for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"{kind:<45} {ms:>9.1f} {ms / total:>6.1%}")
    top = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)[:8]
    print("top aten ops (self ms, calls): " + ", ".join(
        f"{e.key[6:]} {e.self_cpu_time_total / 1e3 / steps:.1f} ({e.count // steps})" for e in top
    ))  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spaces", nargs="+", default=["mnist_small_space", "fbnetv2_f_space"])
    p.add_argument("--sampled", nargs="*", default=["resolution"], help="SEARCH.SAMPLED_CHOICES (default: the default)")
    p.add_argument("--batch", type=int, default=0, help="images per step (0: 64 for MNIST, 4 for the FBNetV2 spaces)")
    p.add_argument("--steps", type=int, default=2, help="profiled step pairs per space")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for space in args.spaces:
        profile_space(space, args.sampled, args.batch or SPACES.get(space, (3, 4))[1], args.steps)


if __name__ == "__main__":
    main()
