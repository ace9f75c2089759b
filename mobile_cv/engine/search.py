"""The DMaskingNAS search loop (tools/search.py): the engine's epoch loop with a two-phase step.

After ``WARMUP_EPOCHS`` that train the weights only, every weight step (SGD,
cross-entropy, on the ``search_weights`` split) is followed by one alpha step (Adam,
the cost-aware loss, on the next ``search_alpha`` batch): with ``ALPHA.SCHEDULE``
"interleaved" alpha gets as many updates as the weights, so short runs learn; "epoch"
is FBNet's alternation (a pass of weight steps, then a pass of alpha steps). The
Gumbel temperature falls exponentially from ``TEMPERATURE.INIT`` to
``TEMPERATURE.FINAL`` over the run, updated every step. Alpha steps leave BatchNorm
running statistics alone. Each epoch ends with an evaluation of the supernet on val
and the budgeted search (:mod:`mobile_cv.search.budget`): the most probable
architecture whose exact cost meets the target.

This module only wires the pieces: the steps are in :mod:`.steps`, the hooks in :mod:`.hooks`,
the optimizers and the cost loss in :mod:`.build`, what is printed in :mod:`.report`.

Output folder::

    config.yaml, log.txt     the final config and the log
    metrics.jsonl            one line per epoch: losses, accuracies, temperature, expected
                             cost, the derived arch and its exact FLOPs/params (and latency by
                             the table, SEARCH.COST.KIND latency), probabilities
    checkpoint.pth           weights, alpha, optimizers, RNG states, epoch
    arch_def.json            the derived arch def (rewritten every epoch), and at the end
    arch_def.py              the same as Python
    probabilities.png        per-choice probabilities softmax(alpha) over epochs (0..1 scale)
    cost_accuracy.png        expected and derived cost, accuracy over epochs
    search.json              the final summary (with the derived arch's log-probability)
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Dict, Optional, Sequence

import torch
from torch import nn

from .. import comm
from ..arch.arch_def import format_arch_def_py, to_jsonable
from ..atomic_files import atomic_write_text
from ..config import CfgNode, ConfigError
from ..search import Supernet
from ..search.budget import BudgetTable, select_architecture
from ..search.choices import Mixing
from ..search.cost_kinds import cost_kind
from ..search.plots import plot_search
from .checkpoint import state_digest
from .logger import read_metrics
from .loop import HookBase
from .report import count_arch, search_summary_lines

logger = logging.getLogger("mobile_cv.search")


def check_input_size(cfg: CfgNode, net: Supernet) -> None:
    """DATA.INPUT_SIZE must be the space's input size (the largest resolution option, when searched)."""
    s = cfg.SEARCH
    if net.input_size != cfg.DATA.INPUT_SIZE and net.res_sizes is None:
        raise ConfigError(
            f"search space {s.SPACE} takes {net.input_size}px inputs but DATA.INPUT_SIZE is {cfg.DATA.INPUT_SIZE}; "
            f"set DATA.INPUT_SIZE {net.input_size}"
        )
    if net.res_sizes is not None and "resolution" in net.choices and cfg.DATA.INPUT_SIZE != net.input_size:
        raise ConfigError(
            f"search space {s.SPACE} searches resolutions {net.res_sizes} of {net.input_size}px inputs but "
            f"DATA.INPUT_SIZE is {cfg.DATA.INPUT_SIZE}; set DATA.INPUT_SIZE {net.input_size}"
        )


def build_cost_model(cfg: CfgNode, net: Supernet) -> "tuple[BudgetTable, Callable[[Mixing], torch.Tensor]]":
    """The exact cost table of every option (the budgeted search's model) and the differentiable
    expected cost the alpha step minimises, as SEARCH.COST.KIND's registered cost kind builds them
    (:mod:`mobile_cv.search.cost_kinds`)."""
    return cost_kind(cfg.SEARCH.COST.KIND).cost_model(cfg, net)


def compile_supernet(model: nn.Module, net: Supernet, weight_step: bool = True) -> "tuple[nn.Module, nn.Module]":
    """torch.compile of the weight step's model (``net`` or its DDP wrapper; left eager with
    ``weight_step`` False) and of the alpha step's (``net``). Dynamo keeps one graph per sampled
    resolution, per step kind (constant or differentiable mixing weights) and per wrapper, more
    than its default limit of 8."""
    sizes = len(net.res_sizes or ()) or 1
    limit = 4 * sizes + 4
    for name in ("recompile_limit", "cache_size_limit"):  # the key's name in newer / older torch
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))
    return (torch.compile(model) if weight_step else model), torch.compile(net)


def run_search(cfg: CfgNode, *, resume: bool, device: torch.device, hooks: Sequence[HookBase] = ()) -> Dict[str, Any]:
    """Search SEARCH.SPACE on DATA; call after :func:`mobile_cv.engine.default_setup`. Returns the
    summary written to search.json. ``hooks`` run after the built-in ones. The same as
    ``SearchRun(cfg).start(device, resume, hooks)`` (:mod:`.runs`)."""
    from .runs import SearchRun

    return SearchRun(cfg).start(device, resume, hooks)


def measured_retarget(cfg: CfgNode, net: Supernet, select: Callable, target: float, compiled=None, table_path=None):
    """:func:`~mobile_cv.latency.verify.retarget` at ``target`` with the SEARCH.COST.LATENCY_VERIFY keys of
    ``cfg`` (_STEPS, _TOLERANCE, _ROUNDS, _REFERENCES): ``select(aim)`` derives, each pick is exported whole
    and timed here with ``table_path``'s probes (default SEARCH.COST.LATENCY_TABLE); ``compiled`` keeps the
    probes' programs between calls."""
    from ..latency.table import LatencyTable
    from ..latency.verify import measure_whole, retarget

    c = cfg.SEARCH.COST
    latency_table = LatencyTable.load(table_path or c.LATENCY_TABLE)
    compiled = {} if compiled is None else compiled

    def measure(index):
        arch = net.derive_arch(net.one_hot(index))
        mparams = count_arch(arch, cfg.MODEL.NUM_CLASSES, cfg.MODEL.IN_CHANS)[1]
        rounds, refs = c.LATENCY_VERIFY_ROUNDS, c.LATENCY_VERIFY_REFERENCES
        return measure_whole(latency_table, arch, rounds, 2, compiled, mparams, refs)

    return retarget(select, measure, target, c.LATENCY_VERIFY_STEPS, c.LATENCY_VERIFY_TOLERANCE)


def verify_derived(cfg: CfgNode, net: Supernet, table: BudgetTable) -> "tuple[dict, dict, dict]":
    """SEARCH.COST.LATENCY_VERIFY retarget (mobile_cv/latency/verify.py): the derived model measured
    here with the table's probes, derived again at a budget scaled by its miss; the main process
    measures, every rank gets its pick. Returns ``(index, info, record)``."""
    c, result = cfg.SEARCH.COST, None
    if comm.is_main_process():
        try:

            def select(aim: float):
                index, info = select_architecture(net, table, aim, c.TOLERANCE)
                return index, info, table.exact(index)

            result = measured_retarget(cfg, net, select, c.TARGET)
        except Exception as e:  # every rank raises, none waits for a pick that never comes
            result = e
    result = comm.broadcast_object(result)
    if isinstance(result, Exception):
        raise result
    return result


def finish_search(cfg: CfgNode, net: Supernet, table: BudgetTable, last: Optional[tuple] = None) -> Dict[str, Any]:
    """Write arch_def.json/.py, the plots and search.json; print the summary; return the summary.
    ``last``: the last epoch's pick (``RecordArchitecture.last``: alpha has not moved since), else
    selected, derived and counted here."""
    out, c = cfg.OUTPUT_DIR, cfg.SEARCH.COST
    if last is None:
        index, info = select_architecture(net, table, c.TARGET, c.TOLERANCE)
        arch = net.derive_arch(net.one_hot(index))
        last = (index, info, arch, *count_arch(arch, cfg.MODEL.NUM_CLASSES, cfg.MODEL.IN_CHANS))
    index, info, arch, flops, params = last
    verified = None
    if c.KIND == "latency" and c.LATENCY_VERIFY == "retarget":
        picked, info, verified = verify_derived(cfg, net, table)
        if picked != index:
            index, arch = picked, net.derive_arch(net.one_hot(picked))
            flops, params = count_arch(arch, cfg.MODEL.NUM_CLASSES, cfg.MODEL.IN_CHANS)
    history = read_metrics(os.path.join(out, "metrics.jsonl"))
    top = {label: round(float(p.max()), 4) for label, p in net.probabilities().items()}
    summary = {
        "space": cfg.SEARCH.SPACE,
        "mode": cfg.SEARCH.MODE,
        "sampled_choices": list(cfg.SEARCH.SAMPLED_CHOICES),
        "epochs": cfg.SEARCH.EPOCHS,
        "cost_kind": c.KIND,
        "cost_form": c.FORM,
        "target": c.TARGET or None,
        "derived_flops_m": flops,
        "derived_params_m": params,
        "input_size": arch["input_size"],
        "final_val_acc1": history[-1]["val_acc1"] if history else None,
        "arch_def": os.path.join(out, "arch_def.json"),
        # how decided the learned distribution is, and how probable the derived architecture
        **info,
        "top_prob": top,
        "mean_top_prob": round(sum(top.values()) / max(len(top), 1), 4),
        "mean_top_prob_uniform": round(sum(1 / c.size for c in net.choices.values()) / max(len(top), 1), 4),
        # every rank must end with the same alpha (DDP all-reduces its gradients)
        "alpha_sha256_per_rank": comm.all_gather_object(state_digest(net.alphas)),
    }
    key = table.cost_kind.derived_key
    summary.setdefault(key, table.exact(index))  # the counted kinds have theirs: the derived model's count
    if c.TARGET > 0:
        summary["target_error"] = summary[key] / c.TARGET - 1
        summary["argmax_target_error"] = info[f"argmax_{c.KIND}"] / c.TARGET - 1
    if verified is not None:  # the derived model as measured here (the table's milliseconds: / drift)
        chosen = verified["steps"][verified["chosen"]]
        summary["derived_measured_ms"], summary["derived_drift"] = chosen["measured_ms"], chosen["drift"]
        summary["measured_target_error"] = chosen["miss"]
        summary["latency_verify"] = verified
    if comm.is_main_process():
        atomic_write_text(os.path.join(out, "arch_def.json"), json.dumps(to_jsonable(arch), indent=1) + "\n")
        atomic_write_text(
            os.path.join(out, "arch_def.py"),
            f'"""Derived by DMaskingNAS from {cfg.SEARCH.SPACE} ({flops:.4g} MFLOPs, '
            f'{params:.4g} M params at {arch["input_size"]}px)."""\n\n' + format_arch_def_py(arch),
        )
        atomic_write_text(os.path.join(out, "search.json"), json.dumps(summary, indent=1) + "\n")
        plot_search(history, list(net.choices.values()), out)
        print("\n".join(search_summary_lines(summary, arch, history)), flush=True)
        if verified is not None:
            from ..latency.verify import describe_steps

            print("\n".join(describe_steps(verified)), flush=True)
    comm.barrier()
    return summary
