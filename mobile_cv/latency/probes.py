"""Probes: does a table still describe the machine in front of us?

A table is a snapshot of one machine on one day: cloud machines of one name differ, phones
throttle, a runtime upgrade changes kernels. So a table keeps a few *probes*, programs timed in the
same interleaved rounds as its entries when it was built:

* ``compute``: a block whose time is mostly arithmetic (the fewest weights per millisecond among
  the slower half of the entries);
* ``memory``: a block whose time is mostly reading weights (the most weights per millisecond);
* ``model`` (``model 128px``, ...: one per input size of the space): the median calibration model
  at that size, whole;
* ``call``: the runtime's trivial program (its per-call cost; shown, not part of the drift);
* ``model heaviest``: the calibration model with the most parameters, added at check time from the
  calibration set (its rows hold its build-time timings): shown, not part of the drift; where it moved
  more than the drift by over :data:`HEAVIEST_TOLERANCE`, the verdict says models that heavy run
  slower (or faster) here than the table says (a search at a latency budget goes there).

:func:`check_table` exports them again, times them here as the table was timed, and compares:
the ratio now / at build per probe (with the spread of the per-round ratios), and the drift, the
geometric mean of the whole-model probes' ratios (of the block probes' for a table without any:
:func:`in_drift`); a whole model's prediction is converted by its own input size's probe
(:func:`drift_at_size`). The table describes this machine when the
drift is within :data:`TOLERANCE`; where every probe moved by one factor (within
:data:`ONE_FACTOR`), :func:`rescale_table` writes a copy with every time multiplied by the drift,
recorded as such; a table with calibration models can be recalibrated here whatever moved
(:func:`mobile_cv.latency.measure.recalibrate_table`: its whole models timed again, its correction
refitted); otherwise it must be rebuilt.
"""

from __future__ import annotations

import datetime
import math
import statistics
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch

from .configs import BlockConfig, build_module, config_from_key

TOLERANCE = 0.10  # |drift - 1| within this: the table still describes this machine
ONE_FACTOR = 1.15  # largest / smallest probe ratio within this: one factor moved them all (a rescale fits)


HEAVIEST = "model heaviest"  # the calibration model with the most parameters: a corner, not in the drift
HEAVIEST_TOLERANCE = 0.07  # the heaviest model's ratio over the drift beyond this: a line says so


def is_model_probe(name: str) -> bool:
    """A whole model of the table's calibration set at one input size (``model``, ``model 128px``)."""
    return name.startswith("model") and name != HEAVIEST


def in_drift(name: str, names: Iterable[str] = ()) -> bool:
    """Whether a probe counts in the drift, among the probes ``names`` a table has: its whole-model
    probes where it has any (the drift scales whole-model predictions, and on this project's machine
    the block probes swing apart from the whole models: over 39 stored results of
    benchmarks/latency_prediction.py the mean of all probes missed by up to 14%, the model probes by
    up to 6.7%; docs/benchmarks.md), else every probe but the call cost (tiny, and not what models
    pay). Never the heaviest model (a corner the drift is not applied to find)."""
    if name in ("call", HEAVIEST):
        return False
    return is_model_probe(name) or not any(is_model_probe(n) for n in names)


def drift_of_ratios(ratios: Dict[str, float]) -> float:
    """The drift from per-probe ratios now / at build: the geometric mean of those :func:`in_drift`
    keeps (NaN where none is kept)."""
    used = [r for name, r in ratios.items() if in_drift(name, ratios)]
    return math.exp(statistics.mean(math.log(r) for r in used)) if used else float("nan")


def drift_at_size(ratios: Dict[str, float], size: Optional[int]) -> float:
    """The drift for a whole model of input ``size``: the ratio of the table's model probe at that
    size (``model 128px``) where it has one, else :func:`drift_of_ratios`. Models of one input size
    move together, and apart from other sizes' (the F space's 128-px probe read 3-7% below the larger
    sizes' on 2026-12-07): times its own size's probe the F table read 30 random models at 128 and 224
    px within 5.0% on average in all 32 stored results of benchmarks/latency_prediction.py (mean 3.1%),
    times the model probes' mean in 29 (mean 3.6%; docs/benchmarks.md). A table of one input size
    (probe ``model``) or without model probes: the drift."""
    own = ratios.get(f"model {size}px") if size else None
    return own if own is not None else drift_of_ratios(ratios)


def in_spread(name: str) -> bool:
    """Whether a probe counts in the spread that decides one factor (a rescale) or probes moved apart:
    every probe but the call cost and the heaviest model."""
    return name not in ("call", HEAVIEST)


def with_heaviest(probes: Dict[str, Dict[str, Any]], data: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """``probes`` and the table's heaviest calibration model (most M params), its build-time timings
    the calibration row's (timed in the same rounds as the entries): where a search goes at a latency
    budget, and where a machine with less cache than the table's parts from the rest (docs/benchmarks.md,
    "Why the searched models miss"). Unchanged for a table without calibration models."""
    rows = data.get("calibration", {}).get("models", [])
    if not rows or HEAVIEST in probes or "mparams" not in rows[0]:
        return probes
    j = max(range(len(rows)), key=lambda i: rows[i]["mparams"])
    heavy = {"kind": "model", "calibration": j, "mparams": rows[j]["mparams"]}
    return {**probes, HEAVIEST: {**heavy, **{k: rows[j][k] for k in ("ms", "q1", "q3", "min")}}}


def heaviest_note(report: Dict[str, Any]) -> str:
    """A sentence when the heaviest model moved more than the drift (beyond :data:`HEAVIEST_TOLERANCE`)."""
    p = report["probes"].get(HEAVIEST)
    if p is None or not math.isfinite(report["drift"]):
        return ""
    over = p["ratio"] / report["drift"]
    if abs(over - 1) <= HEAVIEST_TOLERANCE:
        return ""
    return (
        f"; its heaviest calibration model ({p.get('mparams', float('nan')):.2f} M params) runs {p['ratio']:.3f}x its "
        f"build time against the drift {report['drift']:.3f} ({100 * (over - 1):+.1f}%): models this heavy "
        f"{'run slower' if over > 1 else 'run faster'} here than the table says (a cache share unlike the table's "
        f"machine: python benchmarks/cache_share.py); a latency search can measure what it derives "
        f"(SEARCH.COST.LATENCY_VERIFY retarget)"
    )


def _params(config: BlockConfig) -> int:
    torch.manual_seed(0)
    return sum(p.numel() for p in build_module(config).parameters())


def choose_probes(data: Dict[str, Any], todo: List[BlockConfig], models: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The probes of a table being built (see the module docstring), with their build-time timings."""
    entries = data["entries"]
    timed = sorted((c for c in todo if c.key in entries), key=lambda c: entries[c.key]["ms"])
    probes: Dict[str, Dict[str, Any]] = {"call": {"kind": "call", **data["overhead_ms"]}}
    slow = timed[len(timed) // 2 :]
    if slow:
        density = {c.key: _params(c) / entries[c.key]["ms"] for c in slow}
        compute = min(slow, key=lambda c: density[c.key])
        memory = max(slow, key=lambda c: density[c.key])
        probes["compute"] = {"kind": "block", "key": compute.key, **entries[compute.key]}
        if memory.key != compute.key:
            probes["memory"] = {"kind": "block", "key": memory.key, **entries[memory.key]}
    rows = data.get("calibration", {}).get("models", [])
    by_size: Dict[int, List[int]] = {}
    for i, r in enumerate(rows):
        by_size.setdefault(int(r["arch"]["input_size"]), []).append(i)
    for size, members in sorted(by_size.items()):  # the median calibration model at each input size
        j = sorted(members, key=lambda i: rows[i]["ms"])[len(members) // 2]
        name = "model" if len(by_size) == 1 else f"model {size}px"
        probes[name] = {"kind": "model", "calibration": j, **{k: rows[j][k] for k in ("ms", "q1", "q3", "min")}}
    return probes


def probe_programs(data: Dict[str, Any]) -> Dict[str, Any]:
    """``name -> program spec`` (a BlockConfig, a ModelSpec, or None for the call) of a table's probes."""
    from .measure import ModelSpec

    out: Dict[str, Any] = {}
    for name, p in data.get("probes", {}).items():
        if p["kind"] == "call":
            out[name] = None
        elif p["kind"] == "block":
            out[name] = config_from_key(p["key"])
        else:
            arch = data["calibration"]["models"][p["calibration"]]["arch"]
            out[name] = ModelSpec.of(arch, data["num_classes"], data["in_chans"])
    return out


def old_table_probes(data: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Probes for a table built before tables had them: its call cost and three of its own entries
    (fastest, median, slowest). No whole model: a drift of blocks only."""
    entries = sorted(data["entries"].items(), key=lambda kv: kv[1]["ms"])
    picks = {"fast block": entries[0], "median block": entries[len(entries) // 2], "slow block": entries[-1]}
    out = {"call": {"kind": "call", **data["overhead_ms"]}}
    out.update({name: {"kind": "block", "key": k, **e} for name, (k, e) in picks.items()})
    return out


def check_table(
    table,
    rounds: int = 15,
    warmup: int = 3,
    jobs: int = 0,
    progress: Optional[Callable[[str, int, int], None]] = None,
    extra: Optional[Dict[str, Any]] = None,
    compiled: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Re-time ``table``'s probes here as the table was timed; see the module docstring.

    Returns ``{"probes": {name: {"build_ms", "now_ms", "ratio", "q1", "q3", "now"}}, "drift", "spread",
    "describes", "one_factor"}``. Run it alone: the check is only as good as the machine is quiet.
    ``extra``: more programs (name -> :class:`~mobile_cv.latency.measure.ModelSpec` or block config)
    timed in the same rounds, their summaries (``measured``: the table's statistic; ``ms``, ``q1``,
    ``q3``, ``min``) in ``report["extra"]``; ``compiled``: a dict of programs already exported by name, filled here (a
    caller that checks again reuses the probes' programs).
    """
    from .measure import _compile_one, example_of, time_interleaved
    from .measure import summarize_samples as summary
    from .runtimes import check_runtime, load_runner, set_threads

    d = table.data
    check_runtime(d["runtime"], d["int8"])
    probes = with_heaviest(d.get("probes") or old_table_probes(d), d)
    specs = {**probe_programs({**d, "probes": probes}), **(extra or {})}
    compiled = {} if compiled is None else compiled
    args = [(d["runtime"], d["int8"], name, spec) for name, spec in specs.items() if name not in compiled]
    if progress:
        progress("export", 0, len(args))
    for i, a in enumerate(args):  # a handful of programs: exported here, one after the other
        compiled[a[2]] = _compile_one(a)[1]
        if progress:
            progress("export", i + 1, len(args))
    set_threads(d["runtime"], d["threads"])
    runners = {n: load_runner(d["runtime"], compiled[n], example_of(specs[n]), d["threads"]) for n in specs}

    def each_round(r: int) -> None:
        if progress:
            progress("timing", r, warmup + rounds)

    # as the table was timed: tables built before settling existed record no settle_calls (0)
    settle = int(d.get("settings", {}).get("settle_calls", 0))
    samples = time_interleaved(runners, rounds, warmup, each_round, settle)
    report: Dict[str, Any] = {"probes": {}, "statistic": table.statistic}
    for name, p in probes.items():
        build, current = p[table.stat], summary(samples[name])[table.stat]  # the table's statistic of the rounds
        ratios = sorted(v / build for v in samples[name])
        report["probes"][name] = {
            **({"mparams": p["mparams"]} if "mparams" in p else {}),
            "build_ms": build,
            "now_ms": current,
            "ratio": current / build,
            "q1": ratios[len(ratios) // 4],
            "q3": ratios[(3 * len(ratios)) // 4],
            "now": summary(samples[name]),  # every statistic of the rounds (a recalibration re-bases on it)
        }
    drift = drift_of_ratios({n: v["ratio"] for n, v in report["probes"].items()})
    spread_ratios = [v["ratio"] for n, v in report["probes"].items() if in_spread(n)]
    spread = max(spread_ratios) / min(spread_ratios) if spread_ratios else float("nan")
    report.update(
        drift=drift,
        spread=spread,
        describes=abs(drift - 1) <= TOLERANCE,
        one_factor=spread <= ONE_FACTOR,
        rounds=rounds,
        date=now(),
    )
    if extra:
        # "measured": the table's statistic of the rounds (the median stays in "ms")
        report["extra"] = {n: {**summary(samples[n]), "measured": summary(samples[n])[table.stat]} for n in extra}
    return report


def verdict(table, report: Dict[str, Any], rescale_to: str = "RESCALED.json") -> str:
    """The one line a user reads: the table still describes this machine, or what to do."""
    from .table import command_of

    d = table.data
    drift = report["drift"]
    if report["describes"]:
        return (
            f"latency table {table.path!r} describes this machine: its probes run {drift:.3f}x their build-time "
            f"speed (within the tolerance of {TOLERANCE:.0%})"
        ) + heaviest_note(report)
    rebuild = f"rebuild it: {command_of(d, 'NEW_TABLE.json')}"
    n_models = len(d.get("calibration", {}).get("models", []))
    if n_models:  # the whole models timed here: fits a machine whose probes moved apart too
        rebuild = (
            f"recalibrate it here (its {n_models} calibration models timed again, a few minutes): python "
            f"tools/latency_table.py --check {table.path} --recalibrate RECALIBRATED.json; or {rebuild}"
        )
    text = (
        f"latency table {table.path!r} does not describe this machine: its probes run {drift:.3f}x their "
        f"build-time times (tolerance {TOLERANCE:.0%}); "
    )
    if report["one_factor"]:
        return (
            text
            + (
                f"they moved by one factor (largest / smallest probe {report['spread']:.3f}), so a rescaled copy fits: "
                f"python tools/latency_table.py --check {table.path} --rescale {rescale_to}; or {rebuild}"
            )
            + heaviest_note(report)
        )
    return (text + f"the probes moved apart (largest / smallest {report['spread']:.3f}): {rebuild}") + heaviest_note(
        report
    )


def rescale_table(table, report: Dict[str, Any], out: str) -> Dict[str, Any]:
    """A copy of ``table`` with every time multiplied by the drift ``report`` measured, recorded
    under ``rescaled``; written atomically to ``out``. Returns the new table's data."""
    import copy

    from .table import save_table

    factor = report["drift"]
    data = copy.deepcopy(table.data)

    def scale(entry: Dict[str, Any]) -> None:
        for k in ("ms", "q1", "q3", "min"):
            if k in entry:
                entry[k] = round(entry[k] * factor, 6)

    for entries in (data["entries"], data.get("held_out", {})):
        for e in entries.values():
            scale(e)
    scale(data["overhead_ms"])
    for p in data.get("probes", {}).values():
        scale(p)
    for row in data.get("calibration", {}).get("models", []):
        scale(row)
        row["blocks_ms"] = row["blocks_ms"] * factor
    if "correction" in data:
        c = data["correction"]
        ms_terms = ("constant", "per_mparam", "per_mparam_small", "per_l2_mparam_small", "per_mparam_over")  # not scale
        for term in ms_terms:
            if term in c:
                c[term] = c[term] * factor
    data.setdefault("rescaled", []).append(
        {
            "factor": round(factor, 4),
            "source": table.path,
            "date": report.get("date", now()),
            "probes": {n: round(v["ratio"], 4) for n, v in report["probes"].items()},
        }
    )
    save_table(data, out)
    return data


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


__all__ = [
    "ONE_FACTOR",
    "TOLERANCE",
    "check_table",
    "choose_probes",
    "drift_at_size",
    "drift_of_ratios",
    "in_drift",
    "in_spread",
    "rescale_table",
    "verdict",
]
