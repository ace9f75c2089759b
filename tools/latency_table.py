#!/usr/bin/env python
"""Build the latency table of a search space: every block configuration it can produce, timed alone
on the runtime you deploy to (batch 1, warm-up, interleaved rounds, medians with their spread).

    python tools/latency_table.py mnist_small_space --num-classes 10 --in-chans 1 \\
        --out configs/latency/mnist_small_space_executorch.json          # every configuration timed
    python tools/latency_table.py fbnetv2_f_space --runtime executorch --threads 1 \\
        --out configs/latency/fbnetv2_f_space_executorch.json           # a grid + interpolation (> --max-configs)
    python tools/latency_table.py my_space.py --runtime onnxruntime --resolutions 160 192 --out T.json
    python tools/latency_table.py mnist_small_space --num-classes 10 --in-chans 1 --runtime eager --out T.json
    python tools/latency_table.py --check T.json                        # does T.json still describe this machine?
    python tools/latency_table.py --check T.json --rescale T_now.json   # a copy rescaled by the drift measured
    python tools/latency_table.py --check T.json --recalibrate T_here.json  # its whole models timed again here
    python tools/latency_table.py --refit T.json --out T_refit.json     # its correction fitted again (no timing)

Search with it: ``tools/search.py ... SEARCH.COST.KIND latency SEARCH.COST.LATENCY_TABLE T.json
SEARCH.COST.TARGET <ms>``. The runtime defaults to ExecuTorch (XNNPACK) where installed; ``--int8``
times PT2E int8 programs (ExecuTorch only). Run it with nothing else running: the table is only as
good as the machine is quiet. An interrupted build resumes where it stopped (the programs exported so far are kept in
``TABLE.partial/``);
a finished table for the same settings is reused. The last line is the space's latency range by
the table (``range: MIN..MAX ms``, fastest and slowest architecture): the budgets that exist.

With the blocks the build times ``--calibration-models`` whole random architectures of the space in
the same rounds and fits the correction from a sum of blocks to a whole model on them, and keeps a
few probes (docs/dmaskingnas.md#latency-as-a-search-cost). ``--statistic`` (default q1) is the
summary of the rounds the table predicts with: the first quartile is steadier than the median on a
noisy machine. ``--check TABLE`` times the probes again
here (a minute or less) and prints, per probe, now / at build with its spread, one line saying
whether the table still describes this machine, and last ``drift: RATIO``; it exits 0 when the
table describes this machine, 3 when not. ``--rescale OUT`` with it writes a copy rescaled by the
drift (where every probe moved by one factor). ``--recalibrate OUT`` with it times the table's
calibration models whole in the same rounds (a few minutes for the F space's 64) and writes a copy
whose correction is fitted again on them and whose probes are re-based on this machine: the blocks
stay as built, what a whole model costs here is measured (recorded under ``recalibrated``; it fits a
machine whose probes moved apart too; ``--corner-models N`` adds N weight-heavy architectures per
input size to the set). ``--refit TABLE --out NEW`` fits the whole-model
correction again from the calibration timings TABLE stores, with the forms this version knows,
and reads a grid table between its points as this version does (widths padded toward the
kernels' channel tile, docs/dmaskingnas.md), its held-out error recomputed (nothing is timed; what was replaced is
kept under ``refitted``).
"""

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mobile_cv import engine  # noqa: E402
from mobile_cv.config import flag_type  # noqa: E402
from mobile_cv.engine.run_lock import RunLock  # noqa: E402
from mobile_cv.latency import RUNTIMES, LatencySettings, TableMeasurement, default_runtime, table_range  # noqa: E402
from mobile_cv.latency.bundle import bundle_size, check_bundle_folder, import_timings, write_bundle  # noqa: E402
from mobile_cv.latency.calibration import describe_correction  # noqa: E402
from mobile_cv.latency.measure import (  # noqa: E402
    CALIBRATION_PROGRAM,
    calibration_programs,
    compile_programs,
    corner_rows,
    recalibrate_table,
    refit_table,
    require_calibration,
)
from mobile_cv.latency.probes import ONE_FACTOR, check_table, in_drift, rescale_table, verdict, with_heaviest  # noqa: E402
from mobile_cv.latency.table import LatencyTable, LatencyTableError  # noqa: E402

DEFAULTS = LatencySettings()
# --recalibrate times whole models only, each a sum of many blocks (steadier than one block): 30
# rounds of the F space's 64 calibration models took 2.8 min on 2 cores, 90 rounds 7 min (2026-12-07)
RECALIBRATE_ROUNDS = 30


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "space", nargs="?", help="a registered search space (arch_defs.names('space')) or a .json/.py space file"
    )
    p.add_argument("--out", metavar="TABLE", help="the table file to write (JSON)")
    p.add_argument("--check", metavar="TABLE", help="time TABLE's probes here: does it still describe this machine?")
    p.add_argument("--rescale", metavar="OUT", help="with --check: write a copy of TABLE rescaled by the drift")
    p.add_argument(
        "--recalibrate",
        metavar="OUT",
        help="with --check: time TABLE's calibration models here too and write a copy with its correction fitted "
        "again on them (the blocks as built)",
    )
    p.add_argument(
        "--corner-models",
        type=flag_type("--corner-models"),
        default=0,
        help="with --recalibrate: add this many weight-heavy architectures per input size to the calibration set "
        "(the corner a latency-budgeted search goes to; default 0)",
    )
    p.add_argument(
        "--refit",
        metavar="TABLE",
        help="fit TABLE's whole-model correction again from its stored calibration timings; the copy goes to --out",
    )
    p.add_argument(
        "--bundle",
        metavar="DIR",
        help="with SPACE: write the programs to time on your device here (no --out); with --import: the bundle timed",
    )
    p.add_argument(
        "--cache",
        metavar="DIR",
        help="reuse programs exported before (same block or model, runtime, int8, versions) from DIR, and keep the "
        "new ones there (a build or --bundle)",
    )
    p.add_argument(
        "--import",
        dest="import_timings",
        metavar="TIMINGS",
        help="a device's timings of --bundle DIR (run_bundle.py's timings.json, the executor runner's log, or the "
        "benchmark app's results folder) made into the table --out",
    )
    p.add_argument("--runtime", choices=RUNTIMES, help="where to time (default: executorch where installed)")
    p.add_argument("--int8", action="store_true", help="time int8 programs (PT2E, XNNPACK; ExecuTorch only)")
    p.add_argument(
        "--threads", type=flag_type("--threads"), default=DEFAULTS.threads, help="runtime threads (default: 1)"
    )
    p.add_argument(
        "--resolutions", type=flag_type("--resolutions"), nargs="+", help="input sizes (default: the space's)"
    )
    p.add_argument(
        "--num-classes",
        type=flag_type("--num-classes"),
        default=1000,
        help="classifier outputs (default 1000; the embedded digits: 10): the search's MODEL.NUM_CLASSES",
    )
    p.add_argument(
        "--in-chans",
        type=flag_type("--in-chans"),
        default=3,
        help="input channels (default 3; the embedded digits: 1): the search's MODEL.IN_CHANS",
    )
    p.add_argument(
        "--rounds",
        type=flag_type("--rounds"),
        help=f"interleaved timing rounds (default {DEFAULTS.rounds}; --recalibrate: {RECALIBRATE_ROUNDS})",
    )
    p.add_argument("--warmup", type=flag_type("--warmup"), default=DEFAULTS.warmup, help="untimed rounds first (>= 0)")
    p.add_argument(
        "--settle-calls",
        type=flag_type("--settle-calls"),
        default=DEFAULTS.settle_calls,
        help=f"untimed calls of a program before each of its samples (default {DEFAULTS.settle_calls}: a program "
        "runs slower for its first calls after another ran)",
    )
    p.add_argument(
        "--max-configs",
        type=flag_type("--max-configs"),
        default=DEFAULTS.max_configs,
        help="time every configuration up to this many, else a grid and interpolation",
    )
    p.add_argument(
        "--grid-points",
        type=flag_type("--grid-points"),
        nargs=4,
        default=list(DEFAULTS.grid_points),
        metavar=("C_IN", "HIDDEN", "C_OUT", "SIZE"),
        help="grid values per axis (>= 2 each; default 2 5 3 2: the hidden width bends most)",
    )
    p.add_argument(
        "--held-out",
        type=flag_type("--held-out"),
        default=DEFAULTS.held_out,
        help="grid mode: configurations off the grid timed to measure the interpolation error (>= 0)",
    )
    p.add_argument(
        "--calibration-models",
        type=flag_type("--calibration-models"),
        default=DEFAULTS.calibration_models,
        help="whole random architectures timed with the blocks, to fit the whole-model correction (default 64)",
    )
    p.add_argument(
        "--statistic",
        choices=("q1", "median", "min"),
        default=DEFAULTS.statistic,
        help="the summary of the timing rounds the table predicts with (default q1: steadiest on a noisy machine)",
    )
    p.add_argument(
        "--jobs", type=flag_type("--jobs"), default=0, help="export worker processes (default 0: one per CPU core)"
    )
    p.add_argument(
        "--chunk", type=flag_type("--chunk"), default=DEFAULTS.chunk, help="configurations exported, then timed"
    )
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = RECALIBRATE_ROUNDS if args.recalibrate else DEFAULTS.rounds
    if args.cache and not (args.space or args.recalibrate):
        p.error("--cache goes with SPACE (a build or --bundle) or --check TABLE --recalibrate OUT")
    if args.recalibrate and (not args.check or args.rescale):
        p.error("--recalibrate OUT goes with --check TABLE, without --rescale")
    if args.corner_models and not args.recalibrate:
        p.error("--corner-models N goes with --check TABLE --recalibrate OUT")
    check_modes(p, args)
    return args


def check_modes(p: argparse.ArgumentParser, args) -> None:
    """One of build, --bundle, --import, --check, --refit, with the flags each takes (argparse's one-line error)."""
    if args.refit:
        if args.space or args.check or args.bundle or args.import_timings or args.rescale or not args.out:
            p.error("--refit TABLE takes --out NEW (the refitted copy) and no SPACE, --check, --bundle or --import")
    elif args.check:
        if args.space or args.out or args.bundle or args.import_timings:
            p.error(
                "--check TABLE takes no SPACE, --out, --bundle or --import (--rescale OUT or --recalibrate OUT writes "
                "the copy)"
            )
    elif args.import_timings:
        if args.space or not args.bundle or not args.out:
            p.error("--import TIMINGS takes --bundle DIR (the bundle timed) and --out TABLE, no SPACE")
    elif args.bundle:
        if not args.space or args.out:
            p.error("SPACE --bundle DIR writes a bundle (no --out: the table comes from --import)")
    elif not args.space or not args.out:
        p.error("give SPACE and --out TABLE to build a table, or --check TABLE to check one")
    elif args.rescale:
        p.error("--rescale goes with --check TABLE")


class PhaseBars:
    """One progress bar per phase ("export", then "timing"), each closed when the next starts."""

    def __init__(self, export_desc: str) -> None:
        self.bars, self.export_desc = {}, export_desc

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.bars:
            self.close()
            desc = self.export_desc if phase == "export" else "timing rounds"
            self.bars[phase] = engine.progress(None, desc=desc, total=total)
        self.bars[phase].update(done - self.bars[phase].n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def check_new_file(out: str, source: str, flag: str = "--rescale") -> None:
    """--rescale OUT / --refit's --out: a new file, not a folder, not the source table (nothing is overwritten)."""
    if os.path.isdir(out):
        raise LatencyTableError(f"{flag} {out!r} is a folder; give the new table's file name")
    if os.path.abspath(out) == os.path.abspath(source):
        raise LatencyTableError(f"{flag} would overwrite the table it reads; give another file name")
    if os.path.exists(out):
        raise LatencyTableError(f"{flag} {out!r} exists; nothing was changed: move it away first")


def describe_interpolation(interpolation) -> str:
    padded = interpolation["padded"]
    if not padded:
        return "multilinear, widths as they are"
    axes = ", ".join(
        f"{'pixels' if axis == 'size' else axis} {p['share']:.0%} toward a multiple of {p['tile']}"
        for axis, p in padded.items()
    )
    return f"multilinear, padded: {axes}"


def describe_choice(data) -> str:
    """How the reading was chosen, with its cross-validated held-out error (empty for older tables)."""
    choice = data.get("interpolation_choice") or {}
    if not choice.get("chosen"):
        return f" ({choice['why']})" if choice.get("why") else ""
    cv = choice["cross_validated"]
    return (
        f" (chosen on the held-out timings; cross-validated, each half read as chosen on the other: "
        f"mean {cv['mape_block']:.2f}%, p90 {cv['p90_block']:.2f}%)"
    )


def refit(args) -> None:
    """--refit TABLE --out NEW: the correction fitted again from TABLE's calibration timings."""
    check_new_file(args.out, args.refit, "--out")
    before, after = refit_table(args.refit, args.out)
    new = LatencyTable.load(args.out).data
    if new["mode"] == "grid":
        old_error = new["refitted"][-1].get("interpolation_error_before") or {}
        for name, interp, e in (
            ("before", new["refitted"][-1]["interpolation_before"], old_error),
            ("after", new["interpolation"], new.get("interpolation_error") or {}),
        ):
            error = f"mean {e['mape_block']:.2f}%, p90 {e['p90_block']:.2f}%" if e else "no held-out configurations"
            chosen = describe_choice(new) if name == "after" else ""
            print(f"{name + ':':<8}interpolation {describe_interpolation(interp)}: held-out error {error}{chosen}")
    for name, c in (("before", before), ("after", after)):
        print(f"{name + ':':<8}{describe_correction(c)} (leave-one-out error {c.loo_mape:.2f}%, max {c.loo_max:.1f}%)")
    print(f"{args.out}: {args.refit} with the correction refitted on its {after.models} calibration models")


def check(args) -> int:
    """--check [--rescale | --recalibrate]: the probes timed here against the table's build; 0 when it
    describes this machine or a copy was written."""
    table = LatencyTable.load(args.check)
    out = args.rescale or args.recalibrate
    if out:
        check_new_file(out, args.check, "--rescale" if args.rescale else "--recalibrate")
    if not table.data.get("probes"):
        print(f"{args.check} has no probes (built before tables had them): three of its entries and its call cost")
    extra, compiled, added = None, None, []
    if args.recalibrate:
        extra, compiled, added = export_calibration_models(table, args)
    progress = PhaseBars("exporting probes")
    report = check_table(
        table, rounds=args.rounds, warmup=args.warmup, progress=progress, extra=extra, compiled=compiled
    )
    progress.close()
    print(f"{'probe':<14} {'at build ms':>12} {'now ms':>10} {'now/build':>10} {'IQR of rounds':>16}")
    for name, p in report["probes"].items():
        note = "" if in_drift(name, report["probes"]) else "  (not in the drift)"
        print(
            f"{name:<14} {p['build_ms']:>12.4f} {p['now_ms']:>10.4f} {p['ratio']:>9.3f}x "
            f"{p['q1']:>7.3f}-{p['q3']:.3f}{note}"
        )
    print(verdict(table, report, args.rescale or "RESCALED.json"))
    if args.rescale:
        if not report["one_factor"]:
            raise LatencyTableError(
                f"--rescale: the probes moved apart (largest / smallest {report['spread']:.3f} > {ONE_FACTOR}), "
                f"one factor does not describe the change; nothing was written: recalibrate or rebuild the table"
            )
        rescale_table(table, report, args.rescale)
        print(f"{args.rescale}: {args.check} with every time x {report['drift']:.4f} (recorded under 'rescaled')")
    if args.recalibrate:
        before, after = recalibrate_table(table, report, args.recalibrate, added)
        q = sorted(LatencyTable.load(args.recalibrate).data["recalibrated"][-1]["calibration_ratio"])
        print(
            f"calibration models now / at build: median {q[len(q) // 2]:.3f}x "
            f"(p10-p90 {q[len(q) // 10]:.3f}-{q[(9 * len(q)) // 10]:.3f}) over {len(q)} models"
            + (f"; {len(added)} weight-heavy models added" if added else "")
        )
        for name, c in (("before", before), ("after", after)):
            print(
                f"{name + ':':<8}{describe_correction(c)} (leave-one-out error {c.loo_mape:.2f}%, max {c.loo_max:.1f}%)"
            )
        print(
            f"{args.recalibrate}: {args.check} with its correction fitted again on its {after.models} calibration "
            f"models timed here and its probes re-based (recorded under 'recalibrated')"
        )
    print(f"drift: {report['drift']:.4f}")
    return 0 if report["describes"] or out else engine.CHECK_FAILED_EXIT


def export_calibration_models(table: LatencyTable, args):
    """--recalibrate: the table's calibration models and ``--corner-models`` more as programs (the
    check's ``extra``), exported in worker processes (``--jobs``, ``--cache``); the model probes reuse
    their programs. Returns ``(programs, compiled, rows added)``."""
    d = table.data
    require_calibration(d, args.check, "recalibrate")  # before anything is exported or timed
    added = corner_rows(d, args.corner_models, args.check) if args.corner_models else []
    specs = calibration_programs(d, added)
    print(f"exporting the {len(specs)} calibration models of {args.check} ({len(added)} added)", flush=True)
    compiled = compile_programs(specs, d["runtime"], d["int8"], args.jobs, args.cache)
    for name, p in with_heaviest(d.get("probes") or {}, d).items():
        if p["kind"] == "model":
            compiled[name] = compiled[CALIBRATION_PROGRAM.format(p["calibration"])]
    return specs, compiled, added


def build_table(args, settings: LatencySettings) -> None:
    """Build (or finish) the table, with progress bars; print its summary."""
    measurement = TableMeasurement(args.space, args.out, settings, cache_dir=args.cache)
    progress = PhaseBars("exporting programs")

    table = measurement.run(progress)
    progress.close()
    print_table(table, measurement.net, args.out)


def print_table(table: LatencyTable, net, out: str) -> None:
    """A finished table's summary; the last line its range (``range: MIN..MAX ms``)."""
    d = table.data
    print(f"{out}: {table.describe()}; call cost {table.overhead_ms:.4f} ms; built in {d['build_seconds']:.0f} s")
    if "interpolation_error" in d and d["interpolation_error"]:
        e = d["interpolation_error"]
        print(
            f"interpolation error on {e['configs']} held-out configurations: mean {e['mape_block']:.1f}% "
            f"(p90 {e['p90_block']:.1f}%, max {e['max_block']:.1f}%) of the block's latency; "
            f"{describe_interpolation(table.interpolation)}{describe_choice(d)}"
        )
    c = table.correction
    if c.form:
        print(
            f"whole models: {describe_correction(c)}, fitted on {c.models} calibration models "
            f"(leave-one-out error {c.loo_mape:.1f}%, max {c.loo_max:.1f}%)"
        )
    lo, hi = table_range(table, net)
    print(f"range: {lo:.4g}..{hi:.4g} ms")


def write_bundle_cmd(args, settings: LatencySettings) -> None:
    """SPACE --bundle DIR: the programs, manifest and runners; then how to time and import them."""
    measurement = TableMeasurement(args.space, os.path.join(args.bundle, "TABLE.json"), settings)
    check_bundle_folder(args.bundle)
    os.makedirs(args.bundle, exist_ok=True)
    progress = PhaseBars("writing programs")
    with RunLock(args.bundle, ".bundle.lock", what=f"--bundle {args.bundle!r}"):
        manifest = write_bundle(measurement, args.bundle, progress, cache_dir=args.cache)
    progress.close()
    n, mb = len(manifest["programs"]), bundle_size(args.bundle) / 2**20
    print(f"{args.bundle}: {n} programs ({mb:.1f} MB) for {args.space}, written in {manifest['export_seconds']:.0f} s")
    print(
        f"time them on the device: python run_bundle.py in the folder (ExecuTorch's Python runtime), or "
        f"run_executor_runner.sh (xnn_executor_runner), or run_android_app.sh; then here: python "
        f"tools/latency_table.py --import TIMINGS --bundle {args.bundle} --out TABLE.json"
    )


def import_cmd(args) -> None:
    """--import TIMINGS --bundle DIR --out TABLE: the device's table."""
    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    with RunLock(folder, f".{os.path.basename(args.out)}.lock", what=f"--out {args.out!r}"):
        table, net = import_timings(args.import_timings, args.bundle, args.out)
    m = table.data["machine"]
    print(f"timed on: {m.get('cpu') or m.get('device')}, {m.get('os')} by {m.get('timed_by')}")
    print_table(table, net, args.out)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.refit:
        return engine.run_main(lambda: refit(args), stopped="stopped; nothing was written")
    if args.check:
        return engine.run_main(lambda: check(args), stopped="stopped; nothing was written")
    if args.import_timings:
        return engine.run_main(lambda: import_cmd(args), stopped="stopped; nothing was written")

    def body() -> None:
        settings = LatencySettings(
            runtime=args.runtime or default_runtime(),
            int8=args.int8,
            threads=args.threads,
            resolutions=args.resolutions,
            num_classes=args.num_classes,
            in_chans=args.in_chans,
            rounds=args.rounds,
            warmup=args.warmup,
            settle_calls=args.settle_calls,
            max_configs=args.max_configs,
            grid_points=tuple(args.grid_points),
            held_out=args.held_out,
            calibration_models=args.calibration_models,
            statistic=args.statistic,
            jobs=args.jobs,
            chunk=args.chunk,
        )
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        if args.bundle:
            write_bundle_cmd(args, settings)
            return
        if os.path.isdir(args.out):
            raise LatencyTableError(f"--out {args.out!r} is a folder; give the table's file name")
        folder = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(folder, exist_ok=True)
        # one build per table: two would time each other and share TABLE.partial/
        with RunLock(folder, f".{os.path.basename(args.out)}.lock", what=f"--out {args.out!r}"):
            build_table(args, settings)

    return engine.run_main(
        body,
        stopped="stopped; the programs exported so far are kept in TABLE.partial/: rerun the command to continue",
    )


if __name__ == "__main__":
    sys.exit(main())
