"""A budget asked is a budget met, by measurement: the derived model timed whole, re-derived if it misses.

A latency table predicts the architectures it was calibrated on (random draws of the space) within a
few percent, but a search does not pick at random: it goes where accuracy is cheap by the table, and
on this project's machine that was the corner of the most weights per millisecond, where the whole
model's weights (34-35 MB) outgrow the share of the last-level cache the machine really gives (a
read of 40 MB ran at 26 GB/s, 48 MB at 16 GB/s), a cliff no sum of blocks timed alone sees
(docs/benchmarks.md, "Why the searched models miss"). So, with SEARCH.COST.LATENCY_VERIFY
``retarget``, the search's last step times what it derived, as the table's runtime runs it, in the
same rounds as the table's probes (the probe of its input size turns the measurement into the table's milliseconds),
and while it misses the budget by more than LATENCY_VERIFY_TOLERANCE derives again at a budget
scaled by the miss (``aim <- aim x budget / measured``), keeping the architecture that came closest.
The table still drives the search; the measurement only moves the budget the last derivation aims at.
It measures on the machine the search runs on: use it where that machine is the one the table
describes (the start-up check says so), not on a GPU server searching for a phone.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .probes import is_model_probe

Index = Dict[str, int]


def spread_calibration(data: Dict[str, Any], k: int) -> List[int]:
    """``k`` calibration models of a table spread evenly over its calibration set by parameters (the
    rows its model probes already are left out): with the model probes, the models whose now / at
    build converts a derived model (:func:`models_drift`). [] for a table without calibration models or k 0."""
    rows = data.get("calibration", {}).get("models", [])
    if k <= 0 or not rows or "mparams" not in rows[0]:
        return []
    probed = {p.get("calibration") for name, p in data.get("probes", {}).items() if is_model_probe(name)}
    return spread_by_params(rows, [i for i in range(len(rows)) if i not in probed], k)


def spread_by_params(rows: List[Dict[str, Any]], indices: Sequence[int], k: int) -> List[int]:
    """``k`` of ``indices`` (into calibration ``rows``) spread evenly over them by M params."""
    pool = sorted(indices, key=lambda i: (rows[i]["mparams"], i))
    k = min(k, len(pool))
    return [pool[int((j + 0.5) * len(pool) / k)] for j in range(k)]  # none for k <= 0


def models_drift(probe_ratios: Dict[str, float], reference_ratios: Sequence[float]) -> float:
    """The geometric mean of now / at build over the table's model probes (``probe_ratios``, every
    probe's: the others are left out) and the reference calibration models (``reference_ratios``)."""
    used = [r for name, r in probe_ratios.items() if is_model_probe(name)] + list(reference_ratios)
    return math.exp(statistics.mean(math.log(r) for r in used)) if used else float("nan")


def measure_whole(
    table,
    arch: Dict[str, Any],
    rounds: int = 10,
    warmup: int = 2,
    compiled=None,
    mparams: float = 0.0,
    references: int = 0,
) -> Dict[str, Any]:
    """``arch`` exported whole for ``table``'s runtime and timed with its probes in the same rounds.

    Returns ``measured_ms`` (the table's statistic of the rounds), ``drift`` (the table's model
    probe at the arch's input size now / at build, else the probes' drift:
    :func:`~mobile_cv.latency.probes.drift_at_size`; ``table_drift``: the probes' drift),
    ``in_table_ms`` (measured / the factor: what the table's milliseconds should have said)
    and ``factor``. With ``references`` > 0, that many calibration models spread over the table's
    (:func:`spread_calibration`) are timed in the same rounds too, and the factor is ``models_drift``:
    the geometric mean of now / at build over them and the model probes (each reference in
    ``references``). Why: one program's time moves against another's from one window of minutes to the
    next (on this project's machine a model converted by one probe read 6-17% apart ten minutes later),
    and a mean over many models moves less: 16 calibration models in 24 bursts, each converted by its
    own size's probe, moved by 7.4% (90th percentile of the change between bursts 5 minutes or more
    apart), by the model probes' mean 5.9%, by the model probes and 8 others 4.8%
    (benchmarks/conversion_windows.py). Without references, or a table without calibration models, the
    factor is ``drift``."""
    from .measure import ModelSpec
    from .probes import check_table, drift_at_size

    d = table.data
    spec = ModelSpec.of(arch, d["num_classes"], d["in_chans"])
    name = f"derived:{spec.arch_json}"
    rows = d.get("calibration", {}).get("models", [])
    chosen = spread_calibration(d, references)
    refs = {f"calibration:{j}": ModelSpec.of(rows[j]["arch"], d["num_classes"], d["in_chans"]) for j in chosen}
    report = check_table(table, rounds, warmup, extra={name: spec, **refs}, compiled=compiled)
    measured = report["extra"][name]["measured"]
    probe_ratios = {n: p["ratio"] for n, p in report["probes"].items()}
    # the probe of the derived model's own input size: the factor without references
    drift = drift_at_size(probe_ratios, arch.get("input_size"))
    out: Dict[str, Any] = {"measured_ms": measured, "drift": drift, "factor": drift, "table_drift": report["drift"]}
    if mparams > 0:
        out["mparams"] = mparams
    if chosen:
        ratios = [report["extra"][f"calibration:{j}"]["measured"] / rows[j][table.stat] for j in chosen]
        out["references"] = [
            {"calibration": j, "mparams": rows[j]["mparams"], "ratio": r} for j, r in zip(chosen, ratios)
        ]
        out["models_drift"] = out["factor"] = models_drift(probe_ratios, ratios)
    out["in_table_ms"] = measured / out["factor"]
    return out


def retarget(
    select: Callable[[float], Tuple[Index, Dict[str, Any], float]],
    measure: Callable[[Index], Dict[str, float]],
    target: float,
    steps: int,
    accept: float,
) -> Tuple[Index, Dict[str, Any], Dict[str, Any]]:
    """Derive at ``target``, measure, and while the miss ``in_table_ms / target - 1`` exceeds ``accept``
    derive again at the aim scaled by ``target / in_table_ms``, at most ``steps`` derivations. Once one
    aim's pick measured under the budget and another's over, the next aim is the middle of the
    largest aim under and the smallest over (bisection), where scaling would jump from one side to the
    other (run v4 of benchmarks/latency_budget.py: a 7.87 M-param model -6.2%, an 8.20 M one +6.1%, and
    back), so an architecture between them, if the space has one, is found.
    ``select(aim)`` returns ``(index, info, table prediction)`` (raises :class:`~mobile_cv.errors.UserError`
    when nothing in the space is near ``aim``); ``measure(index)`` returns :func:`measure_whole`'s dict.
    Returns the index and info of the closest architecture and the record of every step."""
    from ..errors import UserError

    aim, tried, measured = target, [], {}
    chosen: Optional[Tuple[Index, Dict[str, Any]]] = None
    under = over = None  # the largest aim measured under the budget, the smallest measured over it
    stop = f"{steps} derivations"
    for step in range(steps):
        try:
            index, info, predicted = select(aim)
        except UserError as e:
            stop = f"no architecture near {aim:.4g} ms ({e})"
            break
        key = tuple(sorted(index.items()))
        if key not in measured:  # the same pick again is not timed again
            measured[key] = measure(index)
        m = measured[key]
        row = {"step": step, "aim_ms": aim, "predicted_ms": predicted, **m, "miss": m["in_table_ms"] / target - 1}
        tried.append(row)
        if chosen is None or abs(row["miss"]) < abs(tried[chosen[2]]["miss"]):
            chosen = (index, info, len(tried) - 1)
        if abs(row["miss"]) <= accept:
            stop = f"within {100 * accept:g}%"
            break
        if row["miss"] < 0:
            under = aim if under is None else max(under, aim)
        else:
            over = aim if over is None else min(over, aim)
        # once the budget lies between two measured aims, halve that interval (scaling by the miss would
        # jump from one side to the other); until then, scale the aim by the miss
        aim = (under + over) / 2 if under is not None and over is not None else aim * target / m["in_table_ms"]
    if chosen is None:
        raise UserError(f"SEARCH.COST.LATENCY_VERIFY: nothing derived to measure: {stop}")
    record = {"steps": tried, "chosen": chosen[2], "stopped": stop, "target_ms": target, "accept": accept}
    return chosen[0], chosen[1], record


def describe_steps(record: Dict[str, Any]) -> List[str]:
    """The lines a user reads: each derivation's aim, the table's prediction, the measurement."""
    by = "the drift of its input size's model probe (the probes' drift where the table has none)"
    if any("models_drift" in r for r in record["steps"]):
        by = "the drift of the table's model probes and calibration models spread over the space"
    lines = [
        f"latency verified by measurement (SEARCH.COST.LATENCY_VERIFY retarget): budget {record['target_ms']:.4g} ms "
        f"in the table's milliseconds; measured / {by}, timed in the same rounds"
    ]
    for r in record["steps"]:
        mark = "  <- chosen" if r["step"] == record["steps"][record["chosen"]]["step"] else ""
        source = f"drift {r['drift']:.3f}"
        if "models_drift" in r:
            source = (
                f"{r['models_drift']:.3f} (model probes and {len(r['references'])} calibration models; its size's "
                f"probe {r['drift']:.3f})"
            )
        size = f"{r['mparams']:.2f} M params, " if "mparams" in r else ""
        lines.append(
            f"  step {r['step']}: aim {r['aim_ms']:.4g} ms, table {r['predicted_ms']:.4g} ms, {size}measured "
            f"{r['measured_ms']:.4g} ms / {source} = {r['in_table_ms']:.4g} ms, miss {100 * r['miss']:+.1f}%{mark}"
        )
    lines.append(f"  stopped: {record['stopped']}")
    return lines


__all__ = ["describe_steps", "measure_whole", "models_drift", "retarget", "spread_by_params", "spread_calibration"]
