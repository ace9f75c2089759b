"""A budget asked is a budget met, by measurement: the derived model timed whole, re-derived if it misses.

A latency table predicts the architectures it was calibrated on (random draws of the space) within a
few percent, but a search does not pick at random: it goes where accuracy is cheap by the table, and
on this project's machine that was the corner of the most weights per millisecond, where the whole
model's weights (34-35 MB) outgrow the share of the last-level cache the machine really gives (a
read of 40 MB ran at 26 GB/s, 48 MB at 16 GB/s), a cliff no sum of blocks timed alone sees
(docs/benchmarks.md, "Why the searched models miss"). So, with SEARCH.COST.LATENCY_VERIFY
``retarget``, the search's last step times what it derived, as the table's runtime runs it, in the
same rounds as the table's probes (their drift turns the measurement into the table's milliseconds),
and while it misses the budget by more than LATENCY_VERIFY_TOLERANCE derives again at a budget
scaled by the miss (``aim <- aim x budget / measured``), keeping the architecture that came closest.
The table still drives the search; the measurement only moves the budget the last derivation aims at.
It measures on the machine the search runs on: use it where that machine is the one the table
describes (the start-up check says so), not on a GPU server searching for a phone.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

Index = Dict[str, int]


def measure_whole(table, arch: Dict[str, Any], rounds: int = 10, warmup: int = 2, compiled=None) -> Dict[str, float]:
    """``arch`` exported whole for ``table``'s runtime and timed with its probes in the same rounds:
    ``measured_ms`` (the table's statistic), ``drift`` (the probes now / at build) and ``in_table_ms``
    (measured / drift: what the table's milliseconds should have said)."""
    from .measure import ModelSpec
    from .probes import check_table

    d = table.data
    spec = ModelSpec.of(arch, d["num_classes"], d["in_chans"])
    name = f"derived:{spec.arch_json}"
    report = check_table(table, rounds, warmup, extra={name: spec}, compiled=compiled)
    measured = report["extra"][name]["measured"]
    return {"measured_ms": measured, "drift": report["drift"], "in_table_ms": measured / report["drift"]}


def retarget(
    select: Callable[[float], Tuple[Index, Dict[str, Any], float]],
    measure: Callable[[Index], Dict[str, float]],
    target: float,
    steps: int,
    accept: float,
) -> Tuple[Index, Dict[str, Any], Dict[str, Any]]:
    """Derive at ``target``, measure, and while the miss ``in_table_ms / target - 1`` exceeds ``accept``
    derive again at the aim scaled by ``target / in_table_ms``, at most ``steps`` derivations.
    ``select(aim)`` returns ``(index, info, table prediction)`` (raises :class:`~mobile_cv.errors.UserError`
    when nothing in the space is near ``aim``); ``measure(index)`` returns :func:`measure_whole`'s dict.
    Returns the index and info of the closest architecture and the record of every step."""
    from ..errors import UserError

    aim, tried, measured = target, [], {}
    chosen: Optional[Tuple[Index, Dict[str, Any]]] = None
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
        aim *= target / m["in_table_ms"]
    if chosen is None:
        raise UserError(f"SEARCH.COST.LATENCY_VERIFY: nothing derived to measure: {stop}")
    record = {"steps": tried, "chosen": chosen[2], "stopped": stop, "target_ms": target, "accept": accept}
    return chosen[0], chosen[1], record


def describe_steps(record: Dict[str, Any]) -> List[str]:
    """The lines a user reads: each derivation's aim, the table's prediction, the measurement."""
    lines = [
        f"latency verified by measurement (SEARCH.COST.LATENCY_VERIFY retarget): budget {record['target_ms']:.4g} ms "
        f"in the table's milliseconds; measured / drift of the probes timed in the same rounds"
    ]
    for r in record["steps"]:
        mark = "  <- chosen" if r["step"] == record["steps"][record["chosen"]]["step"] else ""
        lines.append(
            f"  step {r['step']}: aim {r['aim_ms']:.4g} ms, table {r['predicted_ms']:.4g} ms, measured "
            f"{r['measured_ms']:.4g} ms / drift {r['drift']:.3f} = {r['in_table_ms']:.4g} ms, miss "
            f"{100 * r['miss']:+.1f}%{mark}"
        )
    lines.append(f"  stopped: {record['stopped']}")
    return lines


__all__ = ["describe_steps", "measure_whole", "retarget"]
