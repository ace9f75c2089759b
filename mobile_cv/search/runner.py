"""The DMaskingNAS search loop (tools/search.py), DMASKINGNAS.md section 6.

After ``WARMUP_EPOCHS`` that train the weights only, every weight step (SGD,
cross-entropy, on the ``search_weights`` split) is followed by one alpha step (Adam,
the cost-aware loss, on the next ``search_alpha`` batch): with ``ALPHA.SCHEDULE``
"interleaved" alpha gets as many updates as the weights, so short runs learn; "epoch"
is FBNet's alternation (a pass of weight steps, then a pass of alpha steps). The
Gumbel temperature falls exponentially from ``TEMPERATURE.INIT`` to
``TEMPERATURE.FINAL`` over the run, updated every step. Alpha steps leave BatchNorm
running statistics alone. Each epoch ends with an evaluation of the supernet on val
and a budgeted derivation (:mod:`mobile_cv.search.derive`): the most probable
architecture whose exact cost meets the target.

Output folder::

    config.yaml, log.txt     the final config and the log
    metrics.jsonl            one line per epoch: losses, accuracies, temperature, expected
                             cost, the derived arch and its exact FLOPs/params, probabilities
    checkpoint.pth           weights, alpha, optimizers, RNG states, epoch
    arch_def.json            the derived arch def (rewritten every epoch), and at the end
    arch_def.py              the same as Python
    probabilities.png        per-choice probabilities softmax(alpha) over epochs (0..1 scale)
    cost_accuracy.png        expected and derived cost, accuracy over epochs
    search.json              the final summary (with the derived arch's log-probability)
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from typing import Any, Dict, Iterator, List, Tuple

import torch
from torch import nn

from .. import comm as dist
from ..arch_def import format_arch_def_py, to_jsonable
from ..builder import build_model
from ..config import CfgNode, ConfigError
from ..data import build_loader, set_epoch
from ..engine import train_loop
from ..engine.checkpoint import Checkpointer, atomic_write_text, state_digest
from ..engine.defaults import resolve_arch
from ..engine.logger import MetricsWriter, read_metrics
from ..engine.train_loop import NonFiniteLossError, build_lr_scheduler, build_sgd, evaluate, progress, topk_correct
from ..engine.trainer import check_model_fits_data
from ..flops import count_flops_params
from .choices import Weights
from .derive import BudgetError, CostTable, index_log_prob, log_probs, uniform_log_prob
from .loss import CostLoss
from .mixed import frozen_bn_statistics
from .supernet import Supernet, build_supernet

logger = logging.getLogger("mobile_cv.search")


class _FixedWeights(nn.Module):
    """The supernet with fixed mixing weights, as a plain ``model(x)`` for evaluation."""

    def __init__(self, net: nn.Module, weights: Weights) -> None:
        super().__init__()
        self.net, self.weights = net, weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.weights)


def temperature_at(init: float, final: float, progress: float) -> float:
    """``T = INIT * (FINAL / INIT) ** progress``; ``progress`` = epochs done / search epochs.

    FBNet's schedule (5.0, times 0.956 every epoch for 90 epochs) is INIT 5.0, FINAL
    5.0 * 0.956 ** 90 = 0.0866: then T = 5.0 * 0.956 ** epoch at the start of every epoch.
    """
    return init * (final / init) ** min(max(progress, 0.0), 1.0)


def build_cost_loss(cfg: CfgNode, table: CostTable) -> CostLoss:
    """The alpha loss of SEARCH.COST, checked against the space's exact cost range."""
    c = cfg.SEARCH.COST
    lo, hi = table.extremes()
    unit = "MFLOPs" if c.KIND == "flops" else "M params"
    logger.info("%s: the space's architectures cost %.4g-%.4g %s", cfg.SEARCH.SPACE, lo, hi, unit)
    if c.FORM in ("target", "target_dual") and not c.TARGET > 0:
        raise ConfigError("SEARCH.COST.FORM is 'target' but SEARCH.COST.TARGET is 0; set the budget in millions")
    if c.TARGET > 0:  # whether any architecture meets the budget does not depend on alpha: check it now
        try:
            table.budgeted(c.TARGET, c.TOLERANCE, log_probs(table.net))
        except BudgetError as e:
            raise ConfigError(f"SEARCH.COST.TARGET {c.TARGET:g} with TOLERANCE {c.TOLERANCE:g}: {e}") from None
    if c.FORM in ("target", "target_dual"):
        return CostLoss(c.FORM, target=c.TARGET, weight=c.TARGET_WEIGHT)
    if c.FORM == "relative":
        return CostLoss("relative", target=math.sqrt(lo * hi), beta=c.EXPONENT)
    return CostLoss("fbnet", alpha=c.ALPHA, fbnet_beta=c.BETA)


def derive(net: Supernet, cfg: CfgNode, table: CostTable) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The derived arch def and what it owes to the learned distribution.

    With SEARCH.COST.TARGET: the most probable architecture whose exact cost is within
    TOLERANCE of it (:meth:`CostTable.budgeted`); without: the argmax of every choice.
    """
    c = cfg.SEARCH.COST
    logp = log_probs(net)
    argmax = net.argmax()
    with torch.no_grad():
        argmax_cost = net.expected_cost(c.KIND, net.one_hot(argmax)).item()
    index = table.budgeted(c.TARGET, c.TOLERANCE, logp)[0] if c.TARGET > 0 else argmax
    info = {
        "log_prob": index_log_prob(index, logp),
        "log_prob_argmax": index_log_prob(argmax, logp),
        "log_prob_uniform": uniform_log_prob(net),
        f"argmax_{c.KIND}": argmax_cost,
        "is_argmax": index == argmax,
    }
    return net.derive(net.one_hot(index)), info


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


def _check_input_size(cfg: CfgNode, net: Supernet) -> None:
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


class SearchStep:
    """The two steps of a search: weights (SGD on cross-entropy) and alpha (Adam on the cost-aware loss).

    Both draw fresh Gumbel weights (hard samples for the kinds in ``SAMPLED_CHOICES``); every
    optimizer's gradients are cleared before each backward pass.
    """

    def __init__(
        self,
        cfg: CfgNode,
        net: Supernet,
        ddp: nn.Module,
        cost_loss: CostLoss,
        w_opt,
        a_opt,
        scheduler,
        device: torch.device,
    ) -> None:
        self.net, self.ddp, self.cost_loss, self.device = net, ddp, cost_loss, device
        self.w_opt, self.a_opt, self.scheduler = w_opt, a_opt, scheduler
        self.kind, self.hard = cfg.SEARCH.COST.KIND, tuple(cfg.SEARCH.SAMPLED_CHOICES)
        self.ce = nn.CrossEntropyLoss()
        # loss, ce, cost, correct, images per phase
        self.sums = {"weights": torch.zeros(5, dtype=torch.float64), "alpha": torch.zeros(5, dtype=torch.float64)}

    def _forward(self, x: torch.Tensor, y: torch.Tensor):
        x, y = x.to(self.device), y.to(self.device)
        g = self.net.sample_weights(hard=self.hard)
        logits = self.ddp(x, g)
        return logits, y, g

    def _backward(self, loss: torch.Tensor, optimizer, where: str) -> float:
        value = train_loop.check_finite(loss, where)
        self.w_opt.zero_grad(set_to_none=True)
        self.a_opt.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return value

    def _record(self, phase: str, value: float, ce: float, cost: float, logits, y) -> None:
        n = y.numel()
        correct = topk_correct(logits.detach(), y, (1,))[0]
        self.sums[phase] += torch.tensor([value * n, ce * n, cost * n, correct, n], dtype=torch.float64)

    def weights(self, x, y, step: int, where: str) -> None:
        logits, y, _ = self._forward(x, y)
        loss = self.ce(logits, y)
        value = self._backward(loss, self.w_opt, where)
        self.scheduler.step_update(step + 1)
        self._record("weights", value, value, 0.0, logits, y)

    def alpha(self, x, y, where: str) -> None:
        with frozen_bn_statistics(self.net):
            logits, y, g = self._forward(x, y)
            ce = self.ce(logits, y)
            cost = self.net.expected_cost(self.kind, g)  # the sampled architecture's effective cost
            value = self._backward(self.cost_loss(ce, cost), self.a_opt, where)
        self.cost_loss.observe(float(dist.all_reduce_mean(cost.detach())))
        self._record("alpha", value, float(ce.detach()), float(cost.detach()), logits, y)

    def results(self) -> Dict[str, float]:
        """Means over all ranks since the last call, as ``weights_*`` and ``alpha_*`` keys."""
        out: Dict[str, float] = {}
        for phase, sums in self.sums.items():
            t = dist.all_reduce_sum(sums)
            if float(t[4]) == 0:
                continue
            n = float(t[4])
            out.update({f"{phase}_loss": float(t[0]) / n, f"{phase}_acc1": 100 * float(t[3]) / n})
            if phase == "alpha":
                out.update({"alpha_ce": float(t[1]) / n, f"alpha_sampled_{self.kind}": float(t[2]) / n})
            sums.zero_()
        return out


def _cycle(loader) -> Iterator:
    """Batches of ``loader`` over and over (in the same order: the order is f(seed, epoch))."""
    return itertools.chain.from_iterable(itertools.repeat(loader))


def run_search(cfg: CfgNode, *, resume: bool, device: torch.device) -> Dict[str, Any]:
    """Search SEARCH.SPACE on DATA; call after :func:`mobile_cv.engine.default_setup`."""
    s, out = cfg.SEARCH, cfg.OUTPUT_DIR
    w_loader = build_loader(cfg, "search_weights", batch_size=s.BATCH_SIZE, weight_split=s.WEIGHT_SPLIT)
    a_loader = build_loader(cfg, "search_alpha", batch_size=s.BATCH_SIZE, weight_split=s.WEIGHT_SPLIT)
    val_loader = build_loader(cfg, "val", batch_size=s.BATCH_SIZE)
    check_model_fits_data(cfg, w_loader.dataset)

    net = build_supernet(
        resolve_arch(s.SPACE), num_classes=cfg.MODEL.NUM_CLASSES, mode=s.MODE, in_chans=cfg.MODEL.IN_CHANS
    )
    _check_input_size(cfg, net)
    net.checkpoint_blocks = s.CHECKPOINT_BLOCKS
    table = CostTable(net, s.COST.KIND)  # exact costs of every option; the budgeted derivation's model
    cost_loss = build_cost_loss(cfg, table)
    net.to(device)
    logger.info(
        "search space %s (%s, sampled choices %s): %d choices, 10^%.1f architectures, %.2f M supernet "
        "weights; %d weight / %d alpha / %d val images",
        s.SPACE,
        s.MODE,
        list(s.SAMPLED_CHOICES),
        len(net.choices),
        net.log10_size(),
        sum(p.numel() for p in net.weight_parameters()) / 1e6,
        len(w_loader.dataset),
        len(a_loader.dataset),
        len(val_loader.dataset),
    )

    w_opt = build_sgd(
        net,
        lr=s.WEIGHTS.LR,
        momentum=s.WEIGHTS.MOMENTUM,
        weight_decay=s.WEIGHTS.WEIGHT_DECAY,
        skip=net.arch_parameters(),
    )
    # beta1 0.5 (DARTS' choice for architecture parameters): less momentum, alpha follows the
    # current supernet rather than its past
    a_opt = torch.optim.Adam(
        net.arch_parameters(), lr=s.ALPHA.LR, betas=(0.5, 0.999), weight_decay=s.ALPHA.WEIGHT_DECAY
    )
    scheduler = build_lr_scheduler(
        w_opt, name=s.WEIGHTS.LR_SCHEDULER, epochs=s.EPOCHS, warmup_epochs=0, updates_per_epoch=len(w_loader)
    )
    ddp: nn.Module = (
        nn.parallel.DistributedDataParallel(
            net,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(s.SAMPLED_CHOICES),
        )
        if dist.get_world_size() > 1
        else net
    )
    checkpointer = Checkpointer(out, supernet=net, weight_optimizer=w_opt, alpha_optimizer=a_opt, cost_loss=cost_loss)
    start_epoch = checkpointer.resume_or_start(resume).get("epoch", -1) + 1
    metrics = MetricsWriter(os.path.join(out, "metrics.jsonl"), start_epoch)
    step = SearchStep(cfg, net, ddp, cost_loss, w_opt, a_opt, scheduler, device)
    kind = s.COST.KIND

    for epoch in range(start_epoch, s.EPOCHS):
        t0 = time.perf_counter()
        set_epoch(w_loader, epoch)
        set_epoch(a_loader, epoch)
        train_alpha = epoch >= s.WARMUP_EPOCHS
        try:
            _search_epoch(cfg, net, step, w_loader, a_loader, epoch, train_alpha)
        except NonFiniteLossError as e:
            raise NonFiniteLossError(f"{e}. {checkpointer.describe_last()}") from None
        stats = step.results()
        dist.sync_buffers(net)
        net.eval()
        eval_weights = net.sample_weights(noise=False, hard=step.hard)
        val = evaluate(_FixedWeights(net, eval_weights), val_loader, device=device, desc="val")
        with torch.no_grad():
            expected = net.expected_cost(kind, net.sample_weights(noise=False)).item()
        arch, info = derive(net, cfg, table)
        flops, params = derived_cost(arch, cfg)
        probs = net.probabilities()
        record = {
            "epoch": epoch,
            "temperature": net.temperature,
            **stats,
            "cost_multiplier": cost_loss.lam,
            "val_acc1": val["acc1"],
            "val_loss": val["loss"],
            f"expected_{kind}": expected,
            "derived_flops_m": flops,
            "derived_params_m": params,
            "derived_input_size": arch["input_size"],
            "derived_arch": compact_arch(arch),
            **info,
            "probs": {label: [round(v, 5) for v in p.tolist()] for label, p in probs.items()},
            "time": time.perf_counter() - t0,
        }
        logger.info(
            "epoch %d/%d  T %.3f  weights loss %.4f acc %.1f | alpha loss %s | val acc %.2f | expected %s %.4g | "
            "derived %.4g MFLOPs %.4g M params at %dpx, log p %.2f (argmax %.2f, uniform %.2f)",
            epoch + 1,
            s.EPOCHS,
            net.temperature,
            stats["weights_loss"],
            stats["weights_acc1"],
            f"{stats['alpha_loss']:.4f}" if "alpha_loss" in stats else "- (warm-up)",
            val["acc1"],
            kind,
            expected,
            flops,
            params,
            arch["input_size"],
            info["log_prob"],
            info["log_prob_argmax"],
            info["log_prob_uniform"],
        )
        metrics.write(record)
        if dist.is_main_process():
            atomic_write_text(os.path.join(out, "arch_def.json"), json.dumps(to_jsonable(arch), indent=1) + "\n")
        checkpointer.save(epoch=epoch)
    return finish_search(cfg, net, table)


def _search_epoch(
    cfg: CfgNode, net: Supernet, step: SearchStep, w_loader, a_loader, epoch: int, train_alpha: bool
) -> None:
    """One epoch of weight steps, each followed by an alpha step ("interleaved"), or a pass of
    weight steps then a pass of alpha steps ("epoch"); the temperature follows the run's progress."""
    s = cfg.SEARCH
    n = len(w_loader)
    interleaved = s.ALPHA.SCHEDULE == "interleaved"
    alpha_batches = _cycle(a_loader) if train_alpha and interleaved else None
    desc = f"search {epoch + 1}/{s.EPOCHS}"
    bar = progress(w_loader, desc=desc + ("" if train_alpha else " (warm-up: weights only)"), total=n)
    for i, (x, y) in enumerate(bar):
        net.set_temperature(temperature_at(s.TEMPERATURE.INIT, s.TEMPERATURE.FINAL, (epoch + i / n) / s.EPOCHS))
        step.weights(x, y, epoch * n + i, f"{desc} weights, iteration {i + 1}/{n}")
        if alpha_batches is not None:
            step.alpha(*next(alpha_batches), f"{desc} alpha, iteration {i + 1}/{n}")
        w = step.sums["weights"]
        bar.set_postfix(
            loss=f"{w[0] / w[4]:.3f}", acc=f"{100 * w[3] / w[4]:.1f}", T=f"{net.temperature:.2f}", refresh=False
        )
    if train_alpha and not interleaved:
        for i, (x, y) in enumerate(progress(a_loader, desc=f"{desc} alpha", total=len(a_loader))):
            step.alpha(x, y, f"{desc} alpha, iteration {i + 1}/{len(a_loader)}")


def finish_search(cfg: CfgNode, net: Supernet, table: CostTable) -> Dict[str, Any]:
    """Write arch_def.json/.py, the plots and search.json; print the summary table."""
    out = cfg.OUTPUT_DIR
    arch, info = derive(net, cfg, table)
    flops, params = derived_cost(arch, cfg)
    history = read_metrics(os.path.join(out, "metrics.jsonl"))
    probs = net.probabilities()
    top = {label: round(float(p.max()), 4) for label, p in probs.items()}
    summary = {
        "space": cfg.SEARCH.SPACE,
        "mode": cfg.SEARCH.MODE,
        "sampled_choices": list(cfg.SEARCH.SAMPLED_CHOICES),
        "epochs": cfg.SEARCH.EPOCHS,
        "cost_kind": cfg.SEARCH.COST.KIND,
        "cost_form": cfg.SEARCH.COST.FORM,
        "target": cfg.SEARCH.COST.TARGET or None,
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
        "alpha_sha256_per_rank": dist.all_gather_object(state_digest(net.alphas)),
    }
    if cfg.SEARCH.COST.TARGET > 0:
        got = flops if cfg.SEARCH.COST.KIND == "flops" else params
        summary["target_error"] = got / cfg.SEARCH.COST.TARGET - 1
        summary["argmax_target_error"] = info[f"argmax_{cfg.SEARCH.COST.KIND}"] / cfg.SEARCH.COST.TARGET - 1
    if dist.is_main_process():
        atomic_write_text(os.path.join(out, "arch_def.json"), json.dumps(to_jsonable(arch), indent=1) + "\n")
        atomic_write_text(
            os.path.join(out, "arch_def.py"),
            f'"""Derived by DMaskingNAS from {cfg.SEARCH.SPACE} ({flops:.4g} MFLOPs, '
            f'{params:.4g} M params at {arch["input_size"]}px)."""\n\n' + format_arch_def_py(arch),
        )
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
        + (f", target {summary['target']:g}" if summary["target"] else "")
        + ")",
        f"{'block':<8} {'op':<18} {'out':>5} {'stride':>6} {'expansion':>9}",
    ]
    for s, stage in enumerate(arch["blocks"]):
        for b, (op, c, stride, _, *kw) in enumerate(stage):
            e = kw[0].get("expansion", "") if kw else ""
            lines.append(f"xif{s}_{b:<3} {op:<18} {c:>5} {stride:>6} {e:>9}")
    lines.append(
        f"derived: {summary['derived_flops_m']:.4g} MFLOPs, {summary['derived_params_m']:.4g} M params at "
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
        lines.append("epoch  T      val_acc  expected  derived_MFLOPs")
        for r in history:
            exp = r.get(f"expected_{summary['cost_kind']}")
            lines.append(
                f"{r['epoch'] + 1:>5}  {r['temperature']:<6.3f} {r['val_acc1']:>7.2f}  {exp:>8.4g}  "
                f"{r['derived_flops_m']:>14.4g}"
            )
    print("\n".join(lines), flush=True)
