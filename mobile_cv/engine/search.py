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
from typing import Any, Callable, Dict, Sequence

import torch
from torch import nn

from .. import comm
from ..arch_def import format_arch_def_py, to_jsonable
from ..config import CfgNode, ConfigError
from ..data import build_loader
from ..latency.probes import check_table, verdict
from ..latency.table import LatencyTable, LatencyTableError
from ..search import Supernet, build_supernet
from ..search.budget import BudgetTable, select_architecture
from ..search.choices import Mixing
from ..search.plots import plot_search
from .build import build_cost_loss, build_search_optimizers
from .checkpoint import Checkpointer, atomic_write_text, state_digest
from .defaults import check_model_fits_data, load_latency_table, run_identity
from .hooks import (
    Evaluate,
    LRSchedule,
    RecordArchitecture,
    SaveCheckpoint,
    SetEpoch,
    SyncBuffers,
    Temperature,
    WriteMetrics,
    WriteTensorBoard,
    interrupted_record,
)
from .logger import read_metrics
from .loop import HookBase, Trainer, create_ddp_model
from .precision import MixedPrecision
from .report import count_arch, search_log_line, search_summary_lines
from .steps import FixedMixing, SearchStep

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
    expected cost the alpha step minimises: effective-shape FLOPs or params of the supernet, or
    the exact expectation of the latency table's milliseconds (:meth:`BudgetTable.expected`)."""
    kind = cfg.SEARCH.COST.KIND
    if kind == "latency":
        latency_table = load_latency_table(cfg, net)
        check_latency_table(cfg, latency_table)
        table = latency_table.budget_table(net)
        return table, table.expected
    table = BudgetTable(net, kind)
    return table, lambda mixing: net.expected_cost(kind, mixing)


def check_latency_table(cfg: CfgNode, table: LatencyTable) -> None:
    """SEARCH.COST.LATENCY_CHECK: the table's probes timed here (the main process only; the others
    wait for its verdict); one line says whether the table still describes this machine."""
    mode = cfg.SEARCH.COST.LATENCY_CHECK
    if mode == "off":
        return
    line, ok = "", True
    if comm.is_main_process():
        if not table.data.get("probes"):
            line = f"{table.rebuild_line()} (SEARCH.COST.LATENCY_CHECK {mode}: no probes to time)"
        else:
            report = check_table(table, rounds=10, warmup=2)
            line, ok = verdict(table, report), report["describes"]
            line += f" (drift: {report['drift']:.4f})"
    line, ok = comm.broadcast_object((line, ok))
    if ok:
        logger.info("%s", line)
        return
    if mode == "refuse":
        raise LatencyTableError(f"{line}; SEARCH.COST.LATENCY_CHECK refuse: the search did not start")
    logger.warning("%s; SEARCH.COST.LATENCY_CHECK warn: searching with it anyway", line)


def compile_supernet(model: nn.Module, net: Supernet) -> "tuple[nn.Module, nn.Module]":
    """torch.compile of the weight step's model (``net`` or its DDP wrapper) and of the alpha
    step's (``net``). Dynamo keeps one graph per sampled resolution, per step kind (constant or
    differentiable mixing weights) and per wrapper, more than its default limit of 8."""
    sizes = len(net.res_sizes or ()) or 1
    limit = 4 * sizes + 4
    for name in ("recompile_limit", "cache_size_limit"):  # the key's name in newer / older torch
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))
    return torch.compile(model), torch.compile(net)


def run_search(cfg: CfgNode, *, resume: bool, device: torch.device, hooks: Sequence[HookBase] = ()) -> Dict[str, Any]:
    """Search SEARCH.SPACE on DATA; call after :func:`mobile_cv.engine.default_setup`. Returns the
    summary written to search.json. ``hooks`` run after the built-in ones."""
    s, out = cfg.SEARCH, cfg.OUTPUT_DIR
    weight_loader = build_loader(cfg, "search_weights", batch_size=s.BATCH_SIZE, weight_split=s.WEIGHT_SPLIT)
    alpha_loader = build_loader(cfg, "search_alpha", batch_size=s.BATCH_SIZE, weight_split=s.WEIGHT_SPLIT)
    val_loader = build_loader(cfg, "val", batch_size=s.BATCH_SIZE)
    check_model_fits_data(cfg, weight_loader.dataset)

    net = build_supernet(s.SPACE, num_classes=cfg.MODEL.NUM_CLASSES, mode=s.MODE, in_chans=cfg.MODEL.IN_CHANS)
    check_input_size(cfg, net)
    net.checkpoint_blocks = s.CHECKPOINT_BLOCKS
    table, cost_fn = build_cost_model(cfg, net)
    cost_loss, _ = build_cost_loss(cfg, table)
    net.to(device)
    if s.CHANNELS_LAST:
        net.to(memory_format=torch.channels_last)
    precision = MixedPrecision(s.AMP, device)
    logger.info(
        "search space %s (%s, sampled choices %s): %d choices, 10^%.1f architectures, %.2f M supernet "
        "weights; %d weight / %d alpha / %d val images",
        s.SPACE,
        s.MODE,
        list(s.SAMPLED_CHOICES),
        len(net.choices),
        net.log10_size(),
        sum(p.numel() for p in net.weight_parameters()) / 1e6,
        len(weight_loader.dataset),
        len(alpha_loader.dataset),
        len(val_loader.dataset),
    )
    weight_opt, alpha_opt, scheduler = build_search_optimizers(cfg, net, len(weight_loader))
    checkpointer = Checkpointer(
        out,
        supernet=net,
        weight_optimizer=weight_opt,
        alpha_optimizer=alpha_opt,
        precision=precision if precision.scaler else None,
    )
    extra = checkpointer.resume_or_start(resume)
    start_epoch = extra.get("epoch", -1) + 1
    interrupted = interrupted_record(os.path.join(out, "metrics.jsonl"), extra)  # before WriteMetrics rewrites it
    # DDP reduces the weights' gradients; the alpha step averages alpha's itself (SearchStep.alpha_step).
    # A sampled resolution runs every weight; a sampled block type (or, in conventional mode, width)
    # leaves the unchosen candidates' weights out of the step: DDP must look for them.
    model = create_ddp_model(
        net,
        device,
        find_unused_parameters=bool(set(s.SAMPLED_CHOICES) - {"resolution"}),
        ignored_parameters=net.arch_parameter_names(),
    )
    alpha_model = net
    if s.COMPILE:
        model, alpha_model = compile_supernet(model, net)
    step = SearchStep(
        cfg, net, model, (cost_loss, cost_fn), (weight_opt, alpha_opt), alpha_loader, precision, alpha_model
    )

    def eval_model() -> nn.Module:  # the supernet with the deterministic mixing weights of its sampling
        return FixedMixing(net, net.sample_mixing(noise=False, hard=step.hard))

    trainer = Trainer(
        step,
        weight_loader,
        epochs=s.EPOCHS,
        desc="search",
        describe_failure=checkpointer.describe_last,
        hooks=[
            SetEpoch(weight_loader, alpha_loader),
            Temperature(net, s.TEMPERATURE.INIT, s.TEMPERATURE.FINAL),
            LRSchedule(scheduler),
            SyncBuffers(net),
            SaveCheckpoint(checkpointer, run=run_identity(cfg, "search")),
            Evaluate(eval_model, val_loader, device, keys=("acc1", "loss")),
            RecordArchitecture(
                net, table, cost_fn, (s.COST.TARGET, s.COST.TOLERANCE), (cfg.MODEL.NUM_CLASSES, cfg.MODEL.IN_CHANS), out
            ),
            WriteMetrics(os.path.join(out, "metrics.jsonl"), start_epoch, fmt=search_log_line(s.COST.KIND)),
            WriteTensorBoard(out, start_epoch, {k: c.options for k, c in net.choices.items()})
            if cfg.TENSORBOARD
            else None,
            *hooks,
        ],
    )
    if interrupted is not None:
        logger.info(
            "epoch %d was checkpointed but its evaluation and metrics were interrupted: completing them", start_epoch
        )
    trainer.train(start_epoch, interrupted)
    return finish_search(cfg, net, table)


def finish_search(cfg: CfgNode, net: Supernet, table: BudgetTable) -> Dict[str, Any]:
    """Write arch_def.json/.py, the plots and search.json; print the summary; return the summary."""
    out, c = cfg.OUTPUT_DIR, cfg.SEARCH.COST
    index, info = select_architecture(net, table, c.TARGET, c.TOLERANCE)
    arch = net.derive_arch(net.one_hot(index))
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
    if c.KIND == "latency":
        summary["derived_latency_ms"] = table.exact(index)
    if c.TARGET > 0:
        got = {"flops": flops, "params": params}.get(c.KIND, summary.get("derived_latency_ms"))
        summary["target_error"] = got / c.TARGET - 1
        summary["argmax_target_error"] = info[f"argmax_{c.KIND}"] / c.TARGET - 1
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
    comm.barrier()
    return summary
