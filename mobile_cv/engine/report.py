"""What a search tells its user: the derived architecture as a table, its exact cost, the
per-epoch log line and the final summary. One place for every printed form of an architecture
(tools/demo.py prints the same table)."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch

from ..arch.builder import build_model
from ..arch.flops import count_flops_params
from ..search.cost_kinds import cost_kind


def _rows(arch: Dict[str, Any]):
    """``(block name, op, out channels, stride, expansion or None)`` of every block of a plain arch def."""
    for s, stage in enumerate(arch["blocks"]):
        for b, (op, c, stride, _, *kw) in enumerate(stage):
            yield f"xif{s}_{b}", op, c, stride, (kw[0].get("expansion") if kw else None)


def arch_table(arch: Dict[str, Any]) -> List[str]:
    """The blocks of a plain arch def as table lines (a header, then one line per block)."""
    lines = [f"{'block':<8} {'op':<18} {'out':>5} {'stride':>6} {'expansion':>9}"]
    for name, op, c, stride, e in _rows(arch):
        lines.append(f"{name:<8} {op:<18} {c:>5} {stride:>6} {'' if e is None else f'{e:g}':>9}")
    return lines


def compact_arch(arch: Dict[str, Any]) -> List[str]:
    """One string per block, e.g. "ir_k3_hs 24 s2 e3" (for metrics.jsonl)."""
    return [
        f"{op} {c}{f' s{stride}' if stride > 1 else ''}{f' e{e:g}' if e is not None else ''}"
        for _, op, c, stride, e in _rows(arch)
    ]


def count_arch(arch: Dict[str, Any], num_classes: int, in_chans: int) -> Tuple[float, float]:
    """Exact (MFLOPs, M params) of a plain arch def at its input size, built aside: the caller's
    RNG stream is untouched."""
    with torch.random.fork_rng(devices=[]):
        model = build_model(arch, num_classes=num_classes, in_chans=in_chans)
    return count_flops_params(model, arch["input_size"])


def search_log_line(kind: str):
    """``record -> str``: the search's per-epoch log line."""
    ck = cost_kind(kind)

    def fmt(r: Dict[str, Any]) -> str:
        alpha = f"{r['alpha_loss']:.4f}" if "alpha_loss" in r else "- (warm-up)"
        own = ck.derived_note(r)
        return (
            f"T {r['temperature']:.3f}  weights loss {r['weights_loss']:.4f} acc {r['weights_acc1']:.1f} | alpha loss "
            f"{alpha} | val acc {r['val_acc1']:.2f} | expected {kind} {r[f'expected_{kind}']:.4g} {ck.unit} | derived "
            f"{r['derived_flops_m']:.4g} MFLOPs {r['derived_params_m']:.4g} M params{own} at "
            f"{r['derived_input_size']}px, log p {r['log_prob']:.2f} (argmax {r['log_prob_argmax']:.2f}, "
            f"uniform {r['log_prob_uniform']:.2f})"
        )

    return fmt


def search_summary_lines(summary: Dict[str, Any], arch: Dict[str, Any], history: List[Dict[str, Any]]) -> List[str]:
    """The derived architecture and how the search went, as the lines tools/search.py prints."""
    kind = summary["cost_kind"]
    ck = cost_kind(kind)
    lines = [
        f"DMaskingNAS search of {summary['space']} ({summary['mode']}, {summary['epochs']} epochs, "
        f"{kind} cost, {summary['cost_form']} form"
        + (f", target {summary['target']:g} {ck.unit}" if summary["target"] else "")
        + ")",
        *arch_table(arch),
    ]
    own = ck.derived_note(summary, long=True)
    lines.append(
        f"derived: {summary['derived_flops_m']:.4g} MFLOPs, {summary['derived_params_m']:.4g} M params{own} at "
        f"{summary['input_size']}px"
        + (
            f" ({100 * summary['target_error']:+.1f}% from the target; the plain argmax "
            f"architecture: {100 * summary['argmax_target_error']:+.1f}%)"
            if "target_error" in summary
            else ""
        )
    )
    lines.append(
        f"log-probability of the derived architecture {summary['log_prob']:.2f} (the argmax: "
        f"{summary['log_prob_argmax']:.2f}, any architecture under uniform choices: "
        f"{summary['log_prob_uniform']:.2f}); mean top probability per choice {summary['mean_top_prob']:.3f} "
        f"(uniform: {summary['mean_top_prob_uniform']:.3f})"
    )
    if history:
        derived = ck.derived_key
        lines.append(f"epoch  T      val_acc  expected  {derived}")
        for r in history:
            lines.append(
                f"{r['epoch'] + 1:>5}  {r['temperature']:<6.3f} {r['val_acc1']:>7.2f}  "
                f"{r.get(f'expected_{kind}'):>8.4g}  {r[derived]:>{len(derived)}.4g}"
            )
    return lines
