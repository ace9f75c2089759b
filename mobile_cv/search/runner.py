"""The DMaskingNAS search loop (tools/search.py), DMASKINGNAS.md section 6.

Each epoch: set the Gumbel temperature ``T = INIT * DECAY ** epoch``; train the
supernet weights with SGD on the ``search_weights`` split (cross-entropy); then,
after the warm-up epochs, train alpha with Adam on the ``search_alpha`` split with
the cost-aware loss; evaluate the supernet (plain softmax weights) on val; derive
the argmax architecture and count its exact FLOPs/params.

Output folder::

    config.yaml, log.txt     the final config and the log
    metrics.jsonl            one line per epoch: losses, accuracies, temperature, expected
                             cost, the derived arch and its exact FLOPs/params, probabilities
    checkpoint.pth           weights, alpha, optimizers, RNG states, temperature, epoch
    arch_def.json            the derived arch def (rewritten every epoch; with a cost target,
                             derived budget-aware), and at the end
    arch_def.py              the same as Python
    probabilities.png        per-choice probabilities over epochs (heatmaps)
    cost_accuracy.png        expected and derived cost, accuracy over epochs
    search.json              the final summary
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..arch_def import format_arch_def_py, to_jsonable
from ..builder import build_model
from ..config import CfgNode, ConfigError
from ..data import build_loader, set_epoch
from ..engine import distributed as dist
from ..engine.checkpoint import Checkpointer, atomic_write_text
from ..engine import train_loop
from ..engine.checkpoint import state_digest
from ..engine.defaults import resolve_arch
from ..engine.logger import MetricsWriter, read_metrics
from ..engine.trainer import check_model_fits_data
from ..engine.train_loop import NonFiniteLossError, build_lr_scheduler, evaluate, progress, topk_correct
from ..flops import count_flops_params
from .choices import Weights
from .loss import CostLoss
from .supernet import Supernet, build_supernet

logger = logging.getLogger("mobile_cv.search")


class _FixedWeights(nn.Module):
    """The supernet with fixed mixing weights, as a plain ``model(x)`` for evaluation."""

    def __init__(self, net: nn.Module, weights: Weights) -> None:
        super().__init__()
        self.net, self.weights = net, weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.weights)


def straight_through(weights: Weights) -> Weights:
    """One-hot of each argmax in the forward pass, the soft gradient in the backward pass.

    The target form costs ``straight_through(softmax(alpha / T))``: the forward value is
    the exact cost of the architecture :meth:`Supernet.derive` would return now, so
    the penalty steers the derived model itself to the budget, not a blend of options.
    """
    out = {}
    for k, g in weights.items():
        hard = torch.nn.functional.one_hot(g.argmax(), g.numel()).to(g.dtype)
        out[k] = hard - g.detach() + g
    return out


def extreme_index(net: Supernet, kind: str, largest: bool = False, sweeps: int = 2) -> Dict[str, int]:
    """Choice indices of the cheapest (or most expensive) architecture, by coordinate descent
    (ascent) over the choices: exact for spaces whose cost is monotone in each choice
    (the usual case), otherwise an architecture near the extreme."""
    sign = -1.0 if largest else 1.0
    index = {label: 0 for label in net.choices}
    with torch.no_grad():
        for _ in range(sweeps):
            for label, choice in net.choices.items():
                costs = []
                for i in range(choice.size):
                    index[label] = i
                    costs.append(sign * net.expected_cost(kind, net.one_hot(index)).item())
                index[label] = min(range(choice.size), key=costs.__getitem__)
    return index


def cost_range(net: Supernet, kind: str) -> Tuple[float, float]:
    """(cheapest, most expensive) architecture cost of the space (see :func:`extreme_index`)."""
    with torch.no_grad():
        return tuple(net.expected_cost(kind, net.one_hot(extreme_index(net, kind, largest))).item()
                     for largest in (False, True))


def build_cost_loss(cfg: CfgNode, net: Supernet) -> CostLoss:
    c = cfg.SEARCH.COST
    if c.FORM == "target":
        if not c.TARGET > 0:
            raise ConfigError("SEARCH.COST.FORM is 'target' but SEARCH.COST.TARGET is 0; set the budget in millions")
        lo, hi = cost_range(net, c.KIND)
        unit = "MFLOPs" if c.KIND == "flops" else "M params"
        if c.TARGET < lo:
            raise ConfigError(
                f"SEARCH.COST.TARGET {c.TARGET} {unit} is below the smallest model of {cfg.SEARCH.SPACE} "
                f"({lo:.4g} {unit}); raise the target or search a smaller space"
            )
        if c.TARGET > hi:
            raise ConfigError(
                f"SEARCH.COST.TARGET {c.TARGET} {unit} is above the largest model of {cfg.SEARCH.SPACE} "
                f"({hi:.4g} {unit}); lower the target or search a larger space"
            )
        logger.info("target %.4g %s; the space spans %.4g-%.4g %s", c.TARGET, unit, lo, hi, unit)
        return CostLoss("target", target=c.TARGET, target_weight=c.TARGET_WEIGHT)
    return CostLoss("fbnet", alpha=c.ALPHA, beta=c.BETA)


def _weight_param_groups(net: Supernet, weight_decay: float) -> List[Dict[str, Any]]:
    """Decay conv/linear weights, not BN parameters and biases; alpha is not here at all."""
    arch = {id(p) for p in net.arch_parameters()}
    decay, no_decay = [], []
    for p in net.parameters():
        if id(p) in arch or not p.requires_grad:
            continue
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def derive(net: Supernet, cfg: CfgNode) -> Tuple[Dict[str, Any], float]:
    """The derived arch def and the cost of the plain argmax architecture.

    With a target the derivation is budget-aware (:meth:`Supernet.index_within`);
    otherwise it is the argmax of every choice.
    """
    c = cfg.SEARCH.COST
    with torch.no_grad():
        argmax_cost = net.expected_cost(c.KIND, net.one_hot(net.argmax())).item()
    if c.FORM == "target":
        index, _ = net.index_within(c.KIND, c.TARGET, c.TOLERANCE)
        return net.derive(net.one_hot(index)), argmax_cost
    return net.derive(), argmax_cost


def derived_cost(arch: Dict[str, Any], cfg: CfgNode) -> Tuple[float, float]:
    """Exact FLOPs/params of a derived arch def (built aside: the search's RNG stream is untouched)."""
    with torch.random.fork_rng(devices=[]):
        model = build_model(arch, num_classes=cfg.MODEL.NUM_CLASSES, in_chans=cfg.MODEL.IN_CHANS)
    return count_flops_params(model, arch["input_size"])


def compact_arch(arch: Dict[str, Any]) -> List[str]:
    """One string per derived block, e.g. "ir_k3_hs 24 e3.0" (for metrics and tables)."""
    out = []
    for stage in arch["blocks"]:
        for op, c, stride, _, *kw in stage:
            e = kw[0].get("expansion") if kw else None
            out.append(f"{op} {c}{f' s{stride}' if stride > 1 else ''}{f' e{e:g}' if e is not None else ''}")
    return out


def run_search(cfg: CfgNode, *, resume: bool, device: torch.device) -> Dict[str, Any]:
    """Search SEARCH.SPACE on DATA; call after :func:`mobile_cv.engine.default_setup`."""
    s, out = cfg.SEARCH, cfg.OUTPUT_DIR
    w_loader = build_loader(cfg, "search_weights")
    a_loader = build_loader(cfg, "search_alpha")
    val_loader = build_loader(cfg, "val")
    check_model_fits_data(cfg, w_loader.dataset)

    net = build_supernet(resolve_arch(s.SPACE), num_classes=cfg.MODEL.NUM_CLASSES, mode=s.MODE,
                         in_chans=cfg.MODEL.IN_CHANS)
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
    cost_loss = build_cost_loss(cfg, net)
    net.to(device)
    logger.info("search space %s (%s): %d choices, 10^%.1f architectures, %.2f M supernet weights; "
                "%d weight / %d alpha / %d val images", s.SPACE, s.MODE, len(net.choices), net.log10_size(),
                sum(p.numel() for p in net.weight_parameters()) / 1e6, len(w_loader.dataset), len(a_loader.dataset),
                len(val_loader.dataset))

    w_opt = torch.optim.SGD(_weight_param_groups(net, s.WEIGHTS.WEIGHT_DECAY), lr=s.WEIGHTS.LR,
                            momentum=s.WEIGHTS.MOMENTUM)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=s.ALPHA.LR, weight_decay=s.ALPHA.WEIGHT_DECAY)
    scheduler = build_lr_scheduler(w_opt, name=s.WEIGHTS.LR_SCHEDULER, epochs=s.EPOCHS, warmup_epochs=0,
                                   updates_per_epoch=len(w_loader))
    ddp: nn.Module = (
        nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        if dist.get_world_size() > 1 else net
    )
    checkpointer = Checkpointer(out, supernet=net, weight_optimizer=w_opt, alpha_optimizer=a_opt)
    start_epoch = checkpointer.resume_or_start(resume).get("epoch", -1) + 1
    metrics = MetricsWriter(os.path.join(out, "metrics.jsonl"), start_epoch)
    ce_fn = nn.CrossEntropyLoss()
    kind = s.COST.KIND

    for epoch in range(start_epoch, s.EPOCHS):
        t0 = time.perf_counter()
        net.set_temperature(s.TEMPERATURE.INIT * s.TEMPERATURE.DECAY ** epoch)
        set_epoch(w_loader, epoch)
        set_epoch(a_loader, epoch)
        desc = f"search {epoch + 1}/{s.EPOCHS}"
        try:
            w_stats = _weight_epoch(ddp, net, w_loader, w_opt, a_opt, scheduler, ce_fn, epoch, device, desc, kind)
            a_stats = (
                _alpha_epoch(ddp, net, a_loader, w_opt, a_opt, ce_fn, cost_loss, device, desc, kind)
                if epoch >= s.WARMUP_EPOCHS else {}
            )
        except NonFiniteLossError as e:
            raise NonFiniteLossError(f"{e}. {checkpointer.describe_last()}") from None
        dist.sync_buffers(net)
        net.eval()
        probs = net.sample_weights(noise=False)
        val = evaluate(_FixedWeights(net, probs), val_loader, device=device, desc="val")
        with torch.no_grad():
            expected = net.expected_cost(kind, probs).item()
        arch, argmax_cost = derive(net, cfg)
        flops, params = derived_cost(arch, cfg)
        record = {
            "epoch": epoch, "temperature": net.temperature,
            **{f"weights_{k}": v for k, v in w_stats.items()},
            **{f"alpha_{k}": v for k, v in a_stats.items()},
            "val_acc1": val["acc1"], "val_loss": val["loss"],
            f"expected_{kind}": expected, "derived_flops_m": flops, "derived_params_m": params,
            "derived_input_size": arch["input_size"], "derived_arch": compact_arch(arch),
            f"argmax_{kind}": argmax_cost,
            "probs": {label: [round(v, 5) for v in p.tolist()] for label, p in probs.items()},
            "time": time.perf_counter() - t0,
        }
        logger.info(
            "epoch %d/%d  T %.3f  weights loss %.4f acc %.1f | alpha loss %s | val acc %.2f | expected %s %.4g | "
            "derived %.4g MFLOPs %.4g M params at %dpx", epoch + 1, s.EPOCHS, net.temperature,
            w_stats["loss"], w_stats["acc1"], f"{a_stats['loss']:.4f}" if a_stats else "- (warm-up)", val["acc1"],
            kind, expected, flops, params, arch["input_size"],
        )
        metrics.write(record)
        if dist.is_main_process():
            atomic_write_text(os.path.join(out, "arch_def.json"), json.dumps(to_jsonable(arch), indent=1) + "\n")
        checkpointer.save(epoch=epoch, temperature=net.temperature)
    return finish_search(cfg, net)


def _weight_epoch(ddp, net, loader, w_opt, a_opt, scheduler, ce_fn, epoch, device, desc, kind) -> Dict[str, float]:
    """Train the weights with cross-entropy (alpha is frozen: its expected cost is one number)."""
    with torch.no_grad():
        expected = net.expected_cost(kind)
    start = epoch * len(loader)
    scheduler.step_update(start)
    stats = _phase(ddp, net, loader, w_opt, (w_opt, a_opt), lambda logits, y, g: (ce_fn(logits, y), expected),
                   device, f"{desc} weights", kind, after_step=lambda i: scheduler.step_update(start + i + 1))
    return {k: stats[k] for k in ("loss", "acc1")}


def _alpha_epoch(ddp, net, loader, w_opt, a_opt, ce_fn, cost_loss, device, desc, kind) -> Dict[str, float]:
    """Train alpha with the cost-aware loss."""

    def loss_of(logits, y, g):
        if cost_loss.form == "target":
            cost = net.expected_cost(kind, straight_through(net.sample_weights(noise=False)))
        else:
            cost = net.expected_cost(kind, g)  # FBNet: the effective cost of this sample
        ce = ce_fn(logits, y)
        return cost_loss(ce, cost), cost, ce

    return _phase(ddp, net, loader, a_opt, (w_opt, a_opt), loss_of, device, f"{desc} alpha", kind)


def _phase(ddp, net, loader, optimizer, all_optimizers, loss_of, device, desc, kind,
           after_step=None) -> Dict[str, float]:
    """One pass over ``loader``: fresh Gumbel weights per step, ``loss_of(logits, y, g) -> (loss, cost[, ce])``,
    a step of ``optimizer`` (every optimizer's gradients are cleared first); returns the means over all
    ranks of the loss, top-1 (%), cross-entropy and cost."""
    net.train()
    sums = torch.zeros(5, dtype=torch.float64)  # loss, ce, cost, correct, images
    bar = progress(loader, desc=desc, total=len(loader))
    for i, (x, y) in enumerate(bar):
        x, y = x.to(device), y.to(device)
        g = net.sample_weights()
        logits = ddp(x, g)
        loss, cost, *ce = loss_of(logits, y, g)
        value = train_loop.check_finite(loss, f"{desc}, iteration {i + 1}/{len(loader)}")
        for opt in all_optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(i)
        n = y.numel()
        ce_value = float(ce[0].detach()) if ce else value
        correct = topk_correct(logits.detach(), y, (1,))[0]
        sums += torch.tensor([value * n, ce_value * n, float(cost) * n, correct, n], dtype=torch.float64)
        bar.set_postfix(loss=f"{sums[0] / sums[4]:.3f}", acc=f"{100 * sums[3] / sums[4]:.1f}",
                        T=f"{net.temperature:.2f}", **{kind: f"{sums[2] / sums[4]:.3g}"}, refresh=False)
    t = dist.all_reduce_sum(sums)
    n = max(float(t[4]), 1.0)
    return {"loss": float(t[0]) / n, "acc1": 100 * float(t[3]) / n, "ce": float(t[1]) / n,
            "sampled_cost": float(t[2]) / n}


def finish_search(cfg: CfgNode, net: Supernet) -> Dict[str, Any]:
    """Write arch_def.json/.py, the plots and search.json; print the summary table."""
    out = cfg.OUTPUT_DIR
    arch, argmax_cost = derive(net, cfg)
    flops, params = derived_cost(arch, cfg)
    history = read_metrics(os.path.join(out, "metrics.jsonl"))
    summary = {
        "space": cfg.SEARCH.SPACE, "mode": cfg.SEARCH.MODE, "epochs": cfg.SEARCH.EPOCHS,
        "cost_kind": cfg.SEARCH.COST.KIND, "cost_form": cfg.SEARCH.COST.FORM,
        "target": cfg.SEARCH.COST.TARGET or None,
        "derived_flops_m": flops, "derived_params_m": params, "input_size": arch["input_size"],
        "final_val_acc1": history[-1]["val_acc1"] if history else None,
        "arch_def": os.path.join(out, "arch_def.json"),
        # every rank must end with the same alpha (DDP all-reduces its gradients)
        "alpha_sha256_per_rank": dist.all_gather_object(state_digest(net.alphas)),
    }
    if cfg.SEARCH.COST.FORM == "target":
        got = flops if cfg.SEARCH.COST.KIND == "flops" else params
        summary["target_error"] = got / cfg.SEARCH.COST.TARGET - 1
        summary[f"argmax_{cfg.SEARCH.COST.KIND}"] = argmax_cost
        summary["argmax_target_error"] = argmax_cost / cfg.SEARCH.COST.TARGET - 1
    if dist.is_main_process():
        atomic_write_text(os.path.join(out, "arch_def.json"), json.dumps(to_jsonable(arch), indent=1) + "\n")
        atomic_write_text(os.path.join(out, "arch_def.py"),
                          f'"""Derived by DMaskingNAS from {cfg.SEARCH.SPACE} ({flops:.4g} MFLOPs, '
                          f'{params:.4g} M params at {arch["input_size"]}px)."""\n\n' + format_arch_def_py(arch))
        atomic_write_text(os.path.join(out, "search.json"), json.dumps(summary, indent=1) + "\n")
        from .plots import plot_search

        plot_search(history, list(net.choices.values()), out)
        print_summary(summary, arch, history)
    dist.barrier()
    return summary


def print_summary(summary: Dict[str, Any], arch: Dict[str, Any], history: List[Dict[str, Any]]) -> None:
    """The derived architecture and how the search went, as a table on stdout."""
    lines = [
        f"DMaskingNAS search of {summary['space']} ({summary['mode']}, {summary['epochs']} epochs, "
        f"{summary['cost_kind']} cost, {summary['cost_form']} form"
        + (f", target {summary['target']:g}" if summary["target"] else "") + ")",
        f"{'block':<8} {'op':<18} {'out':>5} {'stride':>6} {'expansion':>9}",
    ]
    for s, stage in enumerate(arch["blocks"]):
        for b, (op, c, stride, _, *kw) in enumerate(stage):
            e = kw[0].get("expansion", "") if kw else ""
            lines.append(f"xif{s}_{b:<3} {op:<18} {c:>5} {stride:>6} {e:>9}")
    lines.append(
        f"derived: {summary['derived_flops_m']:.4g} MFLOPs, {summary['derived_params_m']:.4g} M params at "
        f"{summary['input_size']}px" + (f" ({100 * summary['target_error']:+.1f}% from the target; the plain argmax "
                                         f"architecture: {100 * summary['argmax_target_error']:+.1f}%)"
                                         if "target_error" in summary else "")
    )
    if history:
        lines.append("epoch  T      val_acc  expected  derived_MFLOPs")
        for r in history:
            exp = r.get(f"expected_{summary['cost_kind']}")
            lines.append(f"{r['epoch'] + 1:>5}  {r['temperature']:<6.3f} {r['val_acc1']:>7.2f}  {exp:>8.4g}  "
                         f"{r['derived_flops_m']:>14.4g}")
    print("\n".join(lines), flush=True)
