"""The DMaskingNAS search loop (tools/search.py): the engine's epoch loop with a two-phase step.

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
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import torch
from torch import nn

from .. import comm
from ..arch_def import format_arch_def_py, to_jsonable
from ..builder import build_model
from ..config import CfgNode, ConfigError
from ..data import build_loader
from ..flops import count_flops_params
from ..search import CostLoss, Supernet, build_supernet
from ..search.choices import Weights
from ..search.derive import BudgetError, CostTable, index_log_prob, log_probs, uniform_log_prob
from ..search.mixed import frozen_bn_statistics
from ..search.plots import plot_search
from . import train_loop
from .checkpoint import Checkpointer, atomic_write_text, state_digest
from .defaults import resolve_arch, run_identity
from .hooks import Evaluate, LRSchedule, SaveCheckpoint, SetEpoch, SyncBuffers, WriteMetrics
from .logger import read_metrics
from .loop import HookBase, StepBase, Trainer, create_ddp_model
from .train_loop import build_lr_scheduler, build_sgd, topk_correct
from .trainer import check_model_fits_data

logger = logging.getLogger("mobile_cv.search")


def temperature_at(init: float, final: float, progress: float) -> float:
    """``T = INIT * (FINAL / INIT) ** progress``; ``progress`` = epochs done / search epochs.

    FBNet's schedule (5.0, times 0.956 every epoch for 90 epochs) is INIT 5.0, FINAL
    5.0 * 0.956 ** 90 = 0.0866: then T = 5.0 * 0.956 ** epoch at the start of every epoch.
    """
    return init * (final / init) ** min(max(progress, 0.0), 1.0)


def build_cost_loss(cfg: CfgNode, table: CostTable) -> CostLoss:
    """The alpha loss of SEARCH.COST; a budget no architecture meets is refused here."""
    c = cfg.SEARCH.COST
    lo, hi = table.extremes()
    unit = "MFLOPs" if c.KIND == "flops" else "M params"
    logger.info("%s: the space's architectures cost %.4g-%.4g %s", cfg.SEARCH.SPACE, lo, hi, unit)
    if c.FORM == "target" and not c.TARGET > 0:
        raise ConfigError("SEARCH.COST.FORM is 'target' but SEARCH.COST.TARGET is 0; set the budget in millions")
    if c.TARGET > 0:  # whether any architecture meets the budget does not depend on alpha: check it now
        try:
            table.budgeted(c.TARGET, c.TOLERANCE, log_probs(table.net))
        except BudgetError as e:
            raise ConfigError(f"SEARCH.COST.TARGET {c.TARGET:g} with TOLERANCE {c.TOLERANCE:g}: {e}") from None
    if c.FORM == "target":
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


class _FixedWeights(nn.Module):
    """The supernet with fixed mixing weights, as a plain ``model(x)`` for evaluation."""

    def __init__(self, net: nn.Module, weights: Weights) -> None:
        super().__init__()
        self.net, self.weights = net, weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.weights)


def _cycle(loader) -> Iterator:
    """Batches of ``loader`` over and over (in the same order: the order is f(seed, epoch))."""
    return itertools.chain.from_iterable(itertools.repeat(loader))


class SearchStep(StepBase):
    """A weight step (SGD on cross-entropy) and, after the warm-up, an alpha step (Adam on the
    cost-aware loss): each on the next batch (``ALPHA.SCHEDULE`` "interleaved") or a pass of
    alpha steps after the epoch's weight steps ("epoch").

    Both draw fresh Gumbel weights (hard samples for the kinds in ``SAMPLED_CHOICES``); every
    optimizer's gradients are cleared before each backward pass.

    Args:
        model: ``net`` or its DistributedDataParallel wrapper.
        optimizers: ``(weights, alpha)``.
    """

    def __init__(
        self,
        cfg: CfgNode,
        net: Supernet,
        model: nn.Module,
        cost_loss: CostLoss,
        optimizers: Sequence[torch.optim.Optimizer],
        alpha_loader,
    ) -> None:
        s = cfg.SEARCH
        self.net, self.model, self.cost_loss, self.alpha_loader = net, model, cost_loss, alpha_loader
        self.w_opt, self.a_opt = optimizers
        self.kind, self.hard, self.warmup = s.COST.KIND, tuple(s.SAMPLED_CHOICES), s.WARMUP_EPOCHS
        self.interleaved = s.ALPHA.SCHEDULE == "interleaved"
        self.device = next(net.parameters()).device
        self.ce = nn.CrossEntropyLoss()
        # loss, ce, cost, correct, images per phase
        self.sums = {"weights": torch.zeros(5, dtype=torch.float64), "alpha": torch.zeros(5, dtype=torch.float64)}
        self.t0 = time.perf_counter()
        self._alpha_batches, self._alpha_epoch = None, -1

    @property
    def trains_alpha(self) -> bool:
        return self.trainer.epoch >= self.warmup

    def __call__(self, batch) -> None:
        self.weights(*batch)
        if self.trains_alpha and self.interleaved:
            if self._alpha_epoch != self.trainer.epoch:  # the alpha split's order of this epoch
                self._alpha_batches, self._alpha_epoch = _cycle(self.alpha_loader), self.trainer.epoch
            self.alpha(*next(self._alpha_batches), self.trainer.where)

    def end_epoch(self) -> None:
        if self.trains_alpha and not self.interleaved:
            n = len(self.alpha_loader)
            for i, batch in enumerate(train_loop.progress(self.alpha_loader, desc="alpha", total=n)):
                self.alpha(*batch, f"{self.trainer.desc} {self.trainer.epoch + 1}, alpha iteration {i + 1}/{n}")

    def _forward(self, x: torch.Tensor, y: torch.Tensor):
        self.net.train()
        x, y = x.to(self.device), y.to(self.device)
        g = self.net.sample_weights(hard=self.hard)
        return self.model(x, g), y, g

    def _backward(self, loss: torch.Tensor, optimizer, where: str) -> float:
        value = train_loop.check_finite(loss, where)  # module lookup: tests patch it
        self.w_opt.zero_grad(set_to_none=True)
        self.a_opt.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return value

    def _record(self, phase: str, value: float, ce: float, cost: float, logits, y) -> None:
        n = y.numel()
        correct = topk_correct(logits.detach(), y, (1,))[0]
        self.sums[phase] += torch.tensor([value * n, ce * n, cost * n, correct, n], dtype=torch.float64)

    def weights(self, x, y) -> None:
        logits, y, _ = self._forward(x, y)
        value = self._backward(self.ce(logits, y), self.w_opt, f"{self.trainer.where} (weights)")
        self._record("weights", value, value, 0.0, logits, y)

    def alpha(self, x, y, where: str) -> None:
        with frozen_bn_statistics(self.net):
            logits, y, g = self._forward(x, y)
            ce = self.ce(logits, y)
            cost = self.net.expected_cost(self.kind, g)  # the sampled architecture's effective cost
            value = self._backward(self.cost_loss(ce, cost), self.a_opt, f"{where} (alpha)")
        self._record("alpha", value, float(ce.detach()), float(cost.detach()), logits, y)

    def postfix(self) -> Dict[str, str]:
        w = self.sums["weights"]
        return {
            "loss": f"{w[0] / max(w[4], 1):.3f}",
            "acc": f"{100 * w[3] / max(w[4], 1):.1f}",
            "T": f"{self.net.temperature:.2f}",
        }

    def results(self) -> Dict[str, float]:
        """Means over all ranks since the last call, as ``weights_*`` and ``alpha_*`` keys, and ``time``."""
        out: Dict[str, float] = {}
        for phase, sums in self.sums.items():
            t = comm.all_reduce_sum(sums)
            if float(t[4]) == 0:
                continue
            n = float(t[4])
            out.update({f"{phase}_loss": float(t[0]) / n, f"{phase}_acc1": 100 * float(t[3]) / n})
            if phase == "alpha":
                out.update({"alpha_ce": float(t[1]) / n, f"alpha_sampled_{self.kind}": float(t[2]) / n})
            sums.zero_()
        out["time"] = time.perf_counter() - self.t0
        self.t0 = time.perf_counter()
        return out


class Temperature(HookBase):
    """Before each step: the Gumbel temperature of the run's progress (:func:`temperature_at`)."""

    def __init__(self, net: Supernet, init: float, final: float) -> None:
        self.net, self.init, self.final = net, init, final

    def before_step(self) -> None:
        t = self.trainer
        progress = (t.epoch + t.iter / t.steps_per_epoch) / t.epochs
        self.net.set_temperature(temperature_at(self.init, self.final, progress))


class Derive(HookBase):
    """After each epoch: the budgeted derivation, its exact cost and the learned distribution
    into the record; arch_def.json rewritten."""

    def __init__(self, cfg: CfgNode, net: Supernet, table: CostTable) -> None:
        self.cfg, self.net, self.table = cfg, net, table

    def after_epoch(self) -> None:
        kind = self.cfg.SEARCH.COST.KIND
        with torch.no_grad():
            expected = self.net.expected_cost(kind, self.net.sample_weights(noise=False)).item()
        arch, info = derive(self.net, self.cfg, self.table)
        flops, params = derived_cost(arch, self.cfg)
        self.trainer.record.update(
            {
                "temperature": self.net.temperature,
                f"expected_{kind}": expected,
                "derived_flops_m": flops,
                "derived_params_m": params,
                "derived_input_size": arch["input_size"],
                "derived_arch": compact_arch(arch),
                **info,
                "probs": {label: [round(v, 5) for v in p.tolist()] for label, p in self.net.probabilities().items()},
            }
        )
        if comm.is_main_process():
            path = os.path.join(self.cfg.OUTPUT_DIR, "arch_def.json")
            atomic_write_text(path, json.dumps(to_jsonable(arch), indent=1) + "\n")


def _log_line(kind: str):
    def fmt(r: Dict[str, Any]) -> str:
        alpha = f"{r['alpha_loss']:.4f}" if "alpha_loss" in r else "- (warm-up)"
        return (
            f"T {r['temperature']:.3f}  weights loss {r['weights_loss']:.4f} acc {r['weights_acc1']:.1f} | alpha loss "
            f"{alpha} | val acc {r['val_acc1']:.2f} | expected {kind} {r[f'expected_{kind}']:.4g} | derived "
            f"{r['derived_flops_m']:.4g} MFLOPs {r['derived_params_m']:.4g} M params at {r['derived_input_size']}px, "
            f"log p {r['log_prob']:.2f} (argmax {r['log_prob_argmax']:.2f}, uniform {r['log_prob_uniform']:.2f})"
        )

    return fmt


class FinishSearch(HookBase):
    """After the last epoch: arch_def.json/.py, the plots, search.json and the summary table."""

    def __init__(self, cfg: CfgNode, net: Supernet, table: CostTable) -> None:
        self.cfg, self.net, self.table = cfg, net, table
        self.summary: Dict[str, Any] = {}

    def after_train(self) -> None:
        self.summary = finish_search(self.cfg, self.net, self.table)


def _build_optimizers(cfg: CfgNode, net: Supernet, steps_per_epoch: int):
    s = cfg.SEARCH
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
        w_opt, name=s.WEIGHTS.LR_SCHEDULER, epochs=s.EPOCHS, warmup_epochs=0, updates_per_epoch=steps_per_epoch
    )
    return w_opt, a_opt, scheduler


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
    w_opt, a_opt, scheduler = _build_optimizers(cfg, net, len(w_loader))
    checkpointer = Checkpointer(out, supernet=net, weight_optimizer=w_opt, alpha_optimizer=a_opt)
    start_epoch = checkpointer.resume_or_start(resume).get("epoch", -1) + 1
    model = create_ddp_model(net, device, find_unused_parameters=bool(s.SAMPLED_CHOICES))
    step = SearchStep(cfg, net, model, cost_loss, (w_opt, a_opt), a_loader)

    def eval_model() -> nn.Module:  # the supernet with the deterministic weights of its sampling
        return _FixedWeights(net, net.sample_weights(noise=False, hard=step.hard))

    finish = FinishSearch(cfg, net, table)
    trainer = Trainer(
        step,
        w_loader,
        epochs=s.EPOCHS,
        desc="search",
        describe_failure=checkpointer.describe_last,
        hooks=[
            SetEpoch(w_loader, a_loader),
            Temperature(net, s.TEMPERATURE.INIT, s.TEMPERATURE.FINAL),
            LRSchedule(scheduler),
            SyncBuffers(net),
            SaveCheckpoint(checkpointer, run=run_identity(cfg, "search")),
            Evaluate(eval_model, val_loader, device, keys=("acc1", "loss")),
            Derive(cfg, net, table),
            WriteMetrics(os.path.join(out, "metrics.jsonl"), start_epoch, fmt=_log_line(s.COST.KIND)),
            finish,
        ],
    )
    trainer.train(start_epoch)
    return finish.summary


def finish_search(cfg: CfgNode, net: Supernet, table: CostTable) -> Dict[str, Any]:
    """Write arch_def.json/.py, the plots and search.json; print the summary table."""
    out = cfg.OUTPUT_DIR
    arch, info = derive(net, cfg, table)
    flops, params = derived_cost(arch, cfg)
    history = read_metrics(os.path.join(out, "metrics.jsonl"))
    top = {label: round(float(p.max()), 4) for label, p in net.probabilities().items()}
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
        "alpha_sha256_per_rank": comm.all_gather_object(state_digest(net.alphas)),
    }
    if cfg.SEARCH.COST.TARGET > 0:
        got = flops if cfg.SEARCH.COST.KIND == "flops" else params
        summary["target_error"] = got / cfg.SEARCH.COST.TARGET - 1
        summary["argmax_target_error"] = info[f"argmax_{cfg.SEARCH.COST.KIND}"] / cfg.SEARCH.COST.TARGET - 1
    if comm.is_main_process():
        atomic_write_text(os.path.join(out, "arch_def.json"), json.dumps(to_jsonable(arch), indent=1) + "\n")
        atomic_write_text(
            os.path.join(out, "arch_def.py"),
            f'"""Derived by DMaskingNAS from {cfg.SEARCH.SPACE} ({flops:.4g} MFLOPs, '
            f'{params:.4g} M params at {arch["input_size"]}px)."""\n\n' + format_arch_def_py(arch),
        )
        atomic_write_text(os.path.join(out, "search.json"), json.dumps(summary, indent=1) + "\n")
        plot_search(history, list(net.choices.values()), out)
        print_summary(summary, arch, history)
    comm.barrier()
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
