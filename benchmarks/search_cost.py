#!/usr/bin/env python
"""Wall time of one DMaskingNAS search epoch vs one training epoch of plain models,
on the same data (the embedded MNIST train split: a search epoch trains the weights
on its 80% and alpha on its 20%; a training epoch trains on all of it), measured
interleaved in one run.

Plain models: the largest architecture of the space (every choice at its most
expensive option) and a derived one (budget-aware at ``--target`` MFLOPs from the
freshly initialised supernet, or ``--arch`` FILE, e.g. a search's arch_def.json).

    python benchmarks/search_cost.py [--space mnist_small_space] [--rounds 2] [--arch F]
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
from mobile_cv.arch_def import load_arch_def_file  # noqa: E402
from mobile_cv.data import build_dataset, build_loader_from_dataset, set_epoch  # noqa: E402
from mobile_cv.search import CostLoss, build_supernet  # noqa: E402
from mobile_cv.search.runner import extreme_index  # noqa: E402


def loaders(batch: int, input_size: int, limit: int):
    def make(split, size=input_size):
        ds = build_dataset("embedded_mnist", split, input_size=size, limit=limit)
        return build_loader_from_dataset(ds, batch_size=batch, training=True)

    return make


def search_epoch(net, w_loader, a_loader) -> float:
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=0.01)
    loss_fn = CostLoss("fbnet")
    net.train()
    t0 = time.perf_counter()
    for x, y in w_loader:
        loss = nn.functional.cross_entropy(net(x, net.sample_weights()), y)
        w_opt.zero_grad()
        a_opt.zero_grad()
        loss.backward()
        w_opt.step()
    for x, y in a_loader:
        g = net.sample_weights()
        loss = loss_fn(nn.functional.cross_entropy(net(x, g), y), net.expected_cost("flops", g))
        w_opt.zero_grad()
        a_opt.zero_grad()
        loss.backward()
        a_opt.step()
    return time.perf_counter() - t0


def train_epoch(model, loader) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    t0 = time.perf_counter()
    for x, y in loader:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="mnist_small_space")
    p.add_argument("--arch", help="derived arch-def file to time (default: budget-aware at --target)")
    p.add_argument("--target", type=float, default=1.5, help="MFLOPs of the derived arch when --arch is not given")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--limit", type=int, default=0, help="images per split (0: all)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    net = build_supernet(args.space, num_classes=10, in_chans=1)
    index = extreme_index(net, "flops", largest=True)  # the most expensive architecture
    largest = net.derive(net.one_hot(index))
    if args.arch:
        derived = load_arch_def_file(args.arch)
    else:
        idx, _ = net.index_within("flops", args.target)
        derived = net.derive(net.one_hot(idx))

    make = loaders(args.batch, net.input_size, args.limit)
    w_loader, a_loader, train_loader = make("search_weights"), make("search_alpha"), make("train")
    models = {
        "largest": (mobile_cv.build_model(largest, num_classes=10, in_chans=1), make("train", largest["input_size"])),
        "derived": (mobile_cv.build_model(derived, num_classes=10, in_chans=1), make("train", derived["input_size"])),
    }
    times = {"search": [], "largest": [], "derived": []}
    for r in range(args.rounds):
        for loader in (w_loader, a_loader, train_loader, *(ld for _, ld in models.values())):
            set_epoch(loader, r)
        times["search"].append(search_epoch(net, w_loader, a_loader))
        for name, (model, loader) in models.items():
            times[name].append(train_epoch(model, loader))

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.space}, {len(train_loader.dataset)} train images ({len(w_loader.dataset)} weight + "
          f"{len(a_loader.dataset)} alpha in the search), batch {args.batch}, {args.threads} threads, "
          f"median of {args.rounds} epochs each, interleaved")
    for name, arch in (("largest", largest), ("derived", derived)):
        f, prm = mobile_cv.count_flops_params(models[name][0], arch["input_size"])
        print(f"  {name:<8} subnet: {f:.3f} MFLOPs, {prm * 1e3:.1f} K params at {arch['input_size']}px")
    print(f"{'epoch of':<22} {'seconds':>8} {'search / this':>14}")
    for name, label in (("search", "search (supernet)"), ("largest", "train largest subnet"),
                        ("derived", "train derived subnet")):
        print(f"{label:<22} {med[name]:>8.2f} {med['search'] / med[name]:>13.2f}x")


if __name__ == "__main__":
    main()
