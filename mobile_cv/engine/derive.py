"""A family of architectures from one finished search: the most probable architecture within
tolerance of each budget, under the search's learned distribution (tools/derive.py).

The budgeted search is exact (:meth:`mobile_cv.search.budget.BudgetTable.most_probable_within`),
so any budget inside the space's range can be derived from the same alpha: search once, derive
a family (the paper's F1-F4 came from searches at several budgets).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..arch.arch_def import to_jsonable
from ..atomic_files import atomic_write, atomic_write_text
from ..errors import UserError
from ..search import build_supernet
from ..search.budget import cost_range, index_log_prob, log_probs
from ..search.cost_kinds import cost_kind
from .report import count_arch
from .runs import SearchRun


class DeriveError(UserError, ValueError):
    """A folder without a finished search, or a budget the space cannot meet; the message says which."""


def load_finished_search(search_dir: str):
    """The config and the supernet (with its learned alpha) of a finished search in ``search_dir``."""
    for name in ("search.json", "config.yaml", "checkpoint.pth"):
        if not os.path.isfile(os.path.join(search_dir, name)):
            raise DeriveError(
                f"{search_dir} holds no finished search (no {name}); give the OUTPUT_DIR of a tools/search.py "
                f"run that ended"
            )
    cfg = SearchRun.setup_cfg(os.path.join(search_dir, "config.yaml"))
    s = cfg.SEARCH
    net = build_supernet(s.SPACE, num_classes=cfg.MODEL.NUM_CLASSES, mode=s.MODE, in_chans=cfg.MODEL.IN_CHANS)
    state = torch.load(os.path.join(search_dir, "checkpoint.pth"), map_location="cpu", weights_only=True)
    alphas = {k[len("alphas.") :]: v for k, v in state["states"]["supernet"].items() if k.startswith("alphas.")}
    with torch.no_grad():
        for key, value in alphas.items():
            net.alphas[key].copy_(value)
    return cfg, net


def derive_family(
    search_dir: str,
    budgets: Sequence[float],
    out_dir: str,
    kind: Optional[str] = None,
    tolerance: float = 0.05,
    latency_table: Optional[str] = None,
    verify: str = "off",
) -> List[Dict[str, Any]]:
    """One arch def per budget written to ``out_dir`` (``arch_def_<budget>.json``), with
    ``family.json``; returns the rows (budget, cost, FLOPs, params, log-probability, file).
    ``verify`` "retarget" (latency only): each derived model is exported whole and timed here with the
    table's probes, derived again at a budget scaled by its miss (the search's SEARCH.COST.LATENCY_VERIFY
    keys; mobile_cv/latency/verify.py); rows add ``measured_ms``, ``drift`` and ``measured_error``."""
    cfg, net = load_finished_search(search_dir)
    kind = kind or cfg.SEARCH.COST.KIND
    if verify not in ("off", "retarget"):
        raise DeriveError(f"--verify {verify!r}: one of off, retarget")
    if verify == "retarget" and kind != "latency":
        raise DeriveError(
            f"--verify retarget times the derived models against budgets in ms; this family's cost is {kind}: "
            f"give --kind latency (and --table) or --verify off"
        )
    ck = cost_kind(kind)
    table = ck.budget_table(cfg, net, latency_table)
    lo, hi = cost_range(net, kind, table)
    bad = [b for b in budgets if not lo * (1 - tolerance) <= b <= hi * (1 + tolerance)]
    if bad:
        raise DeriveError(
            f"budget {bad[0]:g} {ck.unit} is outside what {cfg.SEARCH.SPACE} can meet "
            f"({lo:.4g}..{hi:.4g} {ck.unit}, tolerance {tolerance:g}); give budgets in that range"
        )
    logp = log_probs(net)
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    compiled: Dict[str, Any] = {}  # the probes exported once for every budget
    for budget in budgets:
        index, cost, _ = table.most_probable_within(budget, tolerance, logp)
        measured = None
        if verify == "retarget":
            from ..latency.verify import describe_steps
            from .search import measured_retarget

            def select(aim: float):
                pick = table.most_probable_within(aim, tolerance, logp)[0]
                return pick, {}, float(table.exact(pick))

            index, _, record = measured_retarget(cfg, net, select, budget, compiled, latency_table)
            for line in describe_steps(record):
                print(f"{budget:g} ms: {line}")
            measured = record["steps"][record["chosen"]]
        arch = net.derive_arch(net.one_hot(index))
        flops, params = count_arch(arch, cfg.MODEL.NUM_CLASSES, cfg.MODEL.IN_CHANS)
        name = f"arch_def_{budget:g}.json"
        atomic_write_text(os.path.join(out_dir, name), json.dumps(to_jsonable(arch), indent=1) + "\n")
        rows.append(
            {
                "budget": budget,
                "cost": round(float(table.exact(index)), 6),
                "error": round(float(table.exact(index)) / budget - 1, 4),
                "flops_m": round(flops, 4),
                "params_m": round(params, 4),
                "input_size": arch["input_size"],
                "log_prob": round(index_log_prob(index, logp), 3),
                "file": name,
            }
        )
        if measured is not None:  # the table's milliseconds the model measured here (measured / the factor)
            rows[-1].update(
                measured_ms=round(measured["in_table_ms"], 4),
                drift=round(measured["drift"], 4),
                measured_error=round(measured["miss"], 4),
            )
            if "models_drift" in measured:  # what converted it (SEARCH.COST.LATENCY_VERIFY_REFERENCES)
                rows[-1]["models_drift"] = round(measured["models_drift"], 4)
    summary = {"search": os.path.abspath(search_dir), "kind": kind, "unit": ck.unit, "tolerance": tolerance}
    summary["verify"] = verify
    atomic_write_text(os.path.join(out_dir, "family.json"), json.dumps({**summary, "rows": rows}, indent=1) + "\n")
    plot_family(rows, ck.unit, os.path.join(out_dir, "family.png"))
    return rows


def plot_family(rows: List[Dict[str, Any]], unit: str, path: str) -> None:
    """Cost and log-probability of each derived architecture against its budget."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.4))
    a1, a2 = fig.subplots(1, 2)
    budgets = [r["budget"] for r in rows]
    a1.plot(budgets, budgets, "--", color="grey", label="budget")
    a1.plot(budgets, [r["cost"] for r in rows], "o-", label="derived (exact)")
    a1.set_xlabel(f"budget ({unit})")
    a1.set_ylabel(unit)
    a1.legend(fontsize=8)
    a2.plot(budgets, [r["log_prob"] for r in rows], "s-")
    a2.set_xlabel(f"budget ({unit})")
    a2.set_ylabel("log-probability under alpha")
    fig.suptitle("one search, a family of architectures")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
