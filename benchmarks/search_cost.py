#!/usr/bin/env python
"""Wall time of one DMaskingNAS search epoch vs one training epoch of plain models, on the
same data, measured interleaved in one run.

A search epoch is what ``tools/search.py`` runs after the warm-up (the real
:class:`~mobile_cv.engine.steps.SearchStep` in the engine's loop): a weight step on each ``search_weights``
batch (80% of the train split) and alpha steps on ``search_alpha`` batches as
``SEARCH.ALPHA.SCHEDULE`` places them. The settings named after ``SEARCH.SAMPLED_CHOICES`` (the
paper's full mixture, sampled resolutions, sampled block types and resolutions as GDAS, and
sampled resolutions with every gradient computed as before issue 19) keep the step as it was
before issue 29 (an alpha step after every weight step, a weight step through the mixture of
every block type); on request, the alpha schedules, a weight step of one block type per block,
and ``defaults`` (what mobile_cv/config/defaults.py says now; with ``--all-channels-last``, the
default format on a CPU too). A training epoch trains a plain model on the whole train split:
the largest architecture of the space and one derived within ``--target`` MFLOPs (or ``--arch``
FILE).

    python benchmarks/search_cost.py [--space mnist_small_space] [--rounds 2] [--arch F]
    python benchmarks/search_cost.py --all-channels-last --settings "sampled resolution" defaults  # issue 29
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import mobile_cv  # noqa: E402
from mobile_cv.arch.arch_def import load_arch_def_file  # noqa: E402
from mobile_cv.config import get_cfg  # noqa: E402
from mobile_cv.data import build_dataset, build_loader_from_dataset, set_epoch  # noqa: E402
from mobile_cv.engine import LRSchedule, SearchStep, SetEpoch, Temperature, Trainer, build_search_optimizers  # noqa: E402
from mobile_cv.engine.search import compile_supernet  # noqa: E402
from mobile_cv.search import CostLoss, build_supernet  # noqa: E402
from mobile_cv.search.budget import BudgetTable, log_probs  # noqa: E402

# The search step before issue 29: an alpha step after every weight step, and a weight step through the
# mixture of every block type. The settings named after SAMPLED_CHOICES keep it, so their rows compare
# with the tables of issue 19 whatever the defaults are now.
BEFORE_29 = {"SEARCH.ALPHA.SCHEDULE": "interleaved", "SEARCH.ALPHA.LR": 0.01, "SEARCH.WEIGHTS.SAMPLED_CHOICES": []}
SETTINGS = {  # label -> (SEARCH.SAMPLED_CHOICES, the search step's class, other config keys)
    "full mixture": ([], SearchStep, BEFORE_29),
    "sampled resolution": (["resolution"], SearchStep, BEFORE_29),
    "sampled op + resolution": (["op", "resolution"], SearchStep, BEFORE_29),
}


class FullBackwardSearchStep(SearchStep):
    """The search step before issue 19: each backward pass computes every gradient (the weight step
    alpha's too, the alpha step the weights' too) and throws away what its optimizer does not step."""

    def forward_pass(self, model, x, y, mixing_grad):
        return super().forward_pass(model, x, y, mixing_grad=True)

    def backward_pass(self, loss, optimizer, where, inputs=None, before_step=None):
        return super().backward_pass(loss, optimizer, where, before_step=before_step)


SETTINGS["sampled resolution, full backward (before)"] = (["resolution"], FullBackwardSearchStep, BEFORE_29)
# ALPHA.SCHEDULE (a weight step through the mixture): one alpha step after every weight step, or one
# pass of the alpha split per epoch (spread between the weight steps, or after them)
for _schedule, _lr in (("interleaved", 0.01), ("spread", 0.04), ("epoch", 0.04)):
    SETTINGS[f"sampled resolution, alpha {_schedule}"] = (
        ["resolution"],
        SearchStep,
        {**BEFORE_29, "SEARCH.ALPHA.SCHEDULE": _schedule, "SEARCH.ALPHA.LR": _lr},
    )
# alpha steps spread, and the weight step trains one block type per block (SEARCH.WEIGHTS.SAMPLED_CHOICES),
# drawn from alpha or uniformly; the alpha step mixes them all
for _sampling in ("alpha", "uniform"):
    SETTINGS[f"sampled resolution, alpha spread, weights one op drawn from {_sampling}"] = (
        ["resolution"],
        SearchStep,
        {
            "SEARCH.ALPHA.SCHEDULE": "spread",
            "SEARCH.WEIGHTS.SAMPLED_CHOICES": ["op"],
            "SEARCH.WEIGHTS.SAMPLING": _sampling,
        },
    )
SETTINGS["defaults"] = (["resolution"], SearchStep, {})  # whatever mobile_cv/config/defaults.py says


def loaders(batch: int, input_size: int, limit: int):
    """Split name -> its loader; with ``limit`` the train split keeps ``limit`` images and the search
    splits its share of them (80% / 20%, SEARCH.WEIGHT_SPLIT's default), so the search and the
    training epochs see as many images as without a limit."""
    weights = int(limit * 0.8)
    limits = {"search_weights": weights, "search_alpha": limit - weights, "train": limit}

    def make(split, size=input_size):
        ds = build_dataset("embedded_mnist", split, input_size=size, limit=limits[split] if limit else 0)
        return build_loader_from_dataset(ds, batch_size=batch, training=True)

    return make


class SearchEpoch:
    """One post-warm-up epoch of the search loop (weights and alpha), for one SAMPLED_CHOICES setting."""

    def __init__(
        self,
        space: str,
        sampled,
        step_cls,
        target: float,
        batch: int,
        w_loader,
        a_loader,
        compiled: bool = False,
        channels_last: bool = False,
        opts=None,
    ) -> None:
        cfg = get_cfg()
        cfg.merge_from_list(
            [
                "SEARCH.SPACE",
                space,
                "SEARCH.SAMPLED_CHOICES",
                list(sampled),
                "SEARCH.BATCH_SIZE",
                batch,
                "SEARCH.COST.FORM",
                "target",
                "SEARCH.COST.TARGET",
                target,
                "SEARCH.WARMUP_EPOCHS",
                0,
                "SEARCH.CHANNELS_LAST",
                channels_last,
                *[x for kv in (opts or {}).items() for x in kv],
            ]
        )
        net = build_supernet(space, num_classes=10, in_chans=1)
        if channels_last:  # as SearchRun.build
            net.to(memory_format=torch.channels_last)
        w_opt, a_opt, scheduler = build_search_optimizers(cfg, net, len(w_loader))
        cost = (CostLoss("target", target=target), lambda mixing: net.expected_cost("flops", mixing))
        model, alpha_model = compile_supernet(net, net) if compiled else (net, net)
        step = step_cls(cfg, net, model, cost, (w_opt, a_opt), a_loader, alpha_model=alpha_model)
        self.trainer = Trainer(
            step,
            w_loader,
            epochs=1,
            desc="search",
            hooks=[
                SetEpoch(w_loader, a_loader),
                Temperature(net, cfg.SEARCH.TEMPERATURE.INIT, cfg.SEARCH.TEMPERATURE.FINAL),
                LRSchedule(scheduler),
            ],
        )

    def __call__(self) -> float:
        t0 = time.perf_counter()
        self.trainer.train()
        return time.perf_counter() - t0


def train_epoch(model, loader, channels_last: bool = False) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    t0 = time.perf_counter()
    for x, y in loader:
        if channels_last:  # as PlainStep
            x = x.contiguous(memory_format=torch.channels_last)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="mnist_small_space")
    p.add_argument(
        "--arch",
        help="derived arch-def file to time (default: the most probable within --target MFLOPs of a fresh supernet)",
    )
    p.add_argument("--target", type=float, default=0.3, help="MFLOPs of the derived arch when --arch is not given")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument(
        "--limit", type=int, default=0, help="train images (0: all); the search splits take 80%% / 20%% of them"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time the default setting under SEARCH.COMPILE (its first epoch, the compilation, untimed)",
    )
    p.add_argument(
        "--settings",
        nargs="+",
        default=[k for k in SETTINGS if ", alpha " not in k and k != "defaults"],
        choices=list(SETTINGS),
        metavar="SETTING",
        help=f"the SAMPLED_CHOICES settings to time (default: all of {list(SETTINGS)})",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="also time the default setting and both subnets' training in channels_last",
    )
    p.add_argument(
        "--all-channels-last",
        action="store_true",
        help="every setting and the subnets' training in channels_last (the default format on a CPU) instead of "
        "the contiguous format",
    )
    args = p.parse_args()
    if args.limit < 0:
        p.error(f"--limit must be >= 0 (0: all train images), got {args.limit}")
    return args


def extra_searches(args, w_loader, a_loader) -> dict:
    """The sampled-resolution step as issue 19 left it, compiled (--compile; its first epoch, the
    compilation, run here untimed) or in channels_last (--channels-last)."""

    def before_29(**kw) -> SearchEpoch:
        return SearchEpoch(
            args.space, ["resolution"], SearchStep, args.target, args.batch, w_loader, a_loader, opts=BEFORE_29, **kw
        )

    out = {}
    if args.compile:
        label = "sampled resolution, SEARCH.COMPILE"
        out[label] = before_29(compiled=True)
        t0 = time.perf_counter()
        out[label]()  # compilation: one graph per resolution and step kind
        print(f"compiling the supernet took an epoch of {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if args.channels_last:
        out["sampled resolution, channels_last"] = before_29(channels_last=True)
    return out


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    net = build_supernet(args.space, num_classes=10, in_chans=1)
    table = BudgetTable(net, "flops")
    largest = net.derive_arch(net.one_hot(table.extreme(largest=True)[0]))
    if args.arch:
        derived = load_arch_def_file(args.arch)
    else:
        derived = net.derive_arch(net.one_hot(table.most_probable_within(args.target, 0.05, log_probs(net))[0]))

    make = loaders(args.batch, net.input_size, args.limit)
    w_loader, a_loader, train_loader = make("search_weights"), make("search_alpha"), make("train")
    searches = {
        label: SearchEpoch(
            args.space,
            sampled,
            step_cls,
            args.target,
            args.batch,
            w_loader,
            a_loader,
            channels_last=args.all_channels_last,
            opts=opts,
        )
        for label, (sampled, step_cls, opts) in SETTINGS.items()
        if label in args.settings
    }

    searches.update(extra_searches(args, w_loader, a_loader))
    models = {
        "largest": (mobile_cv.build_model(largest, num_classes=10, in_chans=1), make("train", largest["input_size"])),
        "derived": (mobile_cv.build_model(derived, num_classes=10, in_chans=1), make("train", derived["input_size"])),
    }
    if args.all_channels_last:
        for model, _ in models.values():
            model.to(memory_format=torch.channels_last)
    channels_last = {name: args.all_channels_last for name in models}
    if args.channels_last:
        for name, arch in (("largest", largest), ("derived", derived)):
            model = mobile_cv.build_model(arch, num_classes=10, in_chans=1).to(memory_format=torch.channels_last)
            models[f"{name}, channels_last"] = (model, make("train", arch["input_size"]))
            channels_last[f"{name}, channels_last"] = True
    times = {name: [] for name in [*searches, *models]}
    for r in range(args.rounds):
        for loader in (w_loader, a_loader, train_loader, *(ld for _, ld in models.values())):
            set_epoch(loader, r)
        for name, run in searches.items():
            times[name].append(run())
        for name, (model, loader) in models.items():
            times[name].append(train_epoch(model, loader, channels_last[name]))

    report(args, times, models, (largest, derived), searches, train_loader, w_loader, a_loader)


def report(args, times, models, archs, searches, train_loader, w_loader, a_loader) -> None:
    """The table: each epoch's median seconds and its ratio to the largest subnet's training epoch."""
    largest, derived = archs
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"\n{args.space}, {len(train_loader.dataset)} train images (a search epoch: {len(w_loader)} weight steps on "
        f"{len(w_loader.dataset)} images; alpha steps on {len(a_loader.dataset)}: {len(w_loader)} interleaved, "
        f"{len(a_loader)} spread or epoch), batch "
        f"{args.batch}, {args.threads} threads, median of {args.rounds} epochs each, interleaved"
        + (", every row in channels_last" if args.all_channels_last else "")
    )
    for name, arch in (("largest", largest), ("derived", derived)):
        f, prm = mobile_cv.count_flops_params(models[name][0], arch["input_size"])
        print(f"  {name:<8} subnet: {f:.3f} MFLOPs, {prm * 1e3:.1f} K params at {arch['input_size']}px")
    rows = [(f"search, {label}", label) for label in searches]
    for name in models:  # "largest" -> "train largest subnet"; "largest, channels_last" -> "..., channels_last"
        head, _, option = name.partition(", ")
        rows.append((f"train {head} subnet" + (f", {option}" if option else ""), name))
    width = max(52, *(len(text) for text, _ in rows))
    print(f"{'epoch of':<{width}} {'seconds':>8} {'/ largest-subnet epoch':>23}")
    for text, name in rows:
        print(f"{text:<{width}} {med[name]:>8.2f} {med[name] / med['largest']:>22.2f}x")


if __name__ == "__main__":
    main()
