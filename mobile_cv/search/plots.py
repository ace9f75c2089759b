"""PNG plots of a search from its metrics.jsonl records (matplotlib, no display needed)."""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Sequence

import numpy as np
from matplotlib.figure import Figure  # the object API: no pyplot, the user's backend left as it is

from ..atomic_files import atomic_write
from .choices import Choice
from .cost_kinds import COST_KINDS, cost_kind


def _fmt(option: Any) -> str:
    return f"{option:g}" if isinstance(option, float) else str(option)


def plot_probabilities(history: List[Dict[str, Any]], choices: Sequence[Choice], path: str) -> None:
    """One heatmap per choice: options (rows) x epochs (columns), colour = probability on 0..1.

    The scale is absolute, so a near-uniform distribution looks flat; the last epoch's
    top probability is printed in each title.
    """
    if not choices or not history:
        return
    cols = min(4, len(choices))
    rows = math.ceil(len(choices) / cols)
    fig = Figure(figsize=(4.2 * cols, 2.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    epochs = [r["epoch"] + 1 for r in history]
    im = None
    for ax, choice in zip(axes.flat, choices):
        probs = np.array([r["probs"][choice.label] for r in history]).T  # options x epochs
        im = ax.imshow(
            probs,
            aspect="auto",
            cmap="viridis",
            vmin=0.0,
            vmax=1.0,
            origin="lower",
            extent=(epochs[0] - 0.5, epochs[-1] + 0.5, -0.5, choice.size - 0.5),
        )
        ax.xaxis.get_major_locator().set_params(integer=True)
        step = max(1, choice.size // 8)
        ax.set_yticks(range(0, choice.size, step))
        ax.set_yticklabels([_fmt(o) for o in choice.options[::step]], fontsize=6)
        top = int(probs[:, -1].argmax())
        ax.set_title(
            f"{choice.label}: {_fmt(choice.options[top])} p={probs[top, -1]:.2f} (uniform {1 / choice.size:.2f})",
            fontsize=7,
        )
        ax.set_xlabel("epoch", fontsize=7)
        ax.tick_params(axis="x", labelsize=6)
    for ax in list(axes.flat)[len(choices) :]:
        ax.axis("off")
    fig.suptitle("DMaskingNAS: choice probabilities softmax(alpha) per epoch")
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    fig.colorbar(im, cax=fig.add_axes((0.945, 0.15, 0.012, 0.7)), label="probability")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))


def plot_cost_accuracy(history: List[Dict[str, Any]], path: str) -> None:
    """Expected cost, derived cost and accuracies over epochs."""
    if not history:
        return
    epochs = [r["epoch"] + 1 for r in history]
    kind = next(k for k in COST_KINDS.names() if any(f"expected_{k}" in r for r in history))
    ck = cost_kind(kind)
    fig = Figure(figsize=(10, 3.6))
    a1, a2 = fig.subplots(1, 2)
    a1.plot(epochs, [r[f"expected_{kind}"] for r in history], "o-", label=f"{ck.what} of softmax(alpha/T)")
    a1.plot(
        epochs,
        [r[ck.derived_key] for r in history],
        "s-",
        label=f"derived {kind} ({ck.source})",
    )
    for ax in (a1, a2):
        ax.xaxis.get_major_locator().set_params(integer=True)
    a1.set_xlabel("epoch")
    a1.set_ylabel(ck.unit)
    a1.legend(fontsize=8)
    a1.set_title("cost")
    a2.plot(epochs, [r["weights_acc1"] for r in history], "o-", label="train (weights split)")
    a2.plot(epochs, [r["val_acc1"] for r in history], "s-", label="val (supernet)")
    if any("alpha_acc1" in r for r in history):
        a2.plot(
            [r["epoch"] + 1 for r in history if "alpha_acc1" in r],
            [r["alpha_acc1"] for r in history if "alpha_acc1" in r],
            "^-",
            label="alpha split",
        )
    a2.set_xlabel("epoch")
    a2.set_ylabel("top-1 %")
    a2.legend(fontsize=8)
    a2.set_title("accuracy")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))


def plot_search(history: List[Dict[str, Any]], choices: Sequence[Choice], out_dir: str) -> None:
    plot_probabilities(history, choices, os.path.join(out_dir, "probabilities.png"))
    plot_cost_accuracy(history, os.path.join(out_dir, "cost_accuracy.png"))
