"""Latency tables for the user's own device: a bundle of programs timed there, imported back here.

    python tools/latency_table.py fbnetv2_f_space --bundle BUNDLE/      # here: every program + manifest
    python BUNDLE/run_bundle.py                                         # there: ExecuTorch's runtime only
    python tools/latency_table.py --import BUNDLE/timings.json --bundle BUNDLE/ --out TABLE.json

A bundle holds what a table build times (:meth:`~.build.TableMeasurement.plan_programs`: block programs,
the calibration models, the trivial program of the call cost) as ``programs/pNNNNN.pte``, a
``manifest.json`` (each program's key, kind, input shape, sha256; the space, settings, runtime
versions and the table method) and three ways to time them on a device:

* ``run_bundle.py`` (a copy of :mod:`.bundle_runner`): where Python and ExecuTorch's wheel run;
* ``run_executor_runner.sh``: ExecuTorch's own ``xnn_executor_runner`` (over ``adb shell`` or on a
  board), its output saved and imported as it is printed;
* ``run_android_app.sh``: ExecuTorch's Android benchmark app, one ``benchmark_results.json`` per
  program and round in a folder.

:func:`import_timings` reads any of the three, checks it against the bundle, and assembles the table
exactly as a build here would (:meth:`~.build.TableMeasurement.assemble`), recording the device.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import time
from typing import Any, Dict, List, Optional, Tuple

from ..atomic_files import atomic_copy, atomic_write_bytes, atomic_write_text
from . import bundle_runner
from .measure import METHOD, MODEL, TRIVIAL, TableMeasurement, compile_programs, example_of
from .runtimes import versions
from .table import LatencyTable, LatencyTableError, save_table

BUNDLE_FORMAT = bundle_runner.BUNDLE_FORMAT
TIMINGS_FORMAT = bundle_runner.TIMINGS_FORMAT
MANIFEST = "manifest.json"
ABSURD_MS = 60_000.0  # a call slower than a minute is a unit or parsing mistake, not a timing
MARKER = re.compile(r"mobile_cv-bundle program (p\d+) round (\d+)")
FAILED = re.compile(r"mobile_cv-bundle failed (p\d+)")
WARMUP = re.compile(r"mobile_cv-bundle warmup (\d+)")
ITERATION = re.compile(r"Iteration (\d+) of (\d+): ([-+0-9.eE]+|nan|inf) ms")
TOTAL = re.compile(r"Model executed successfully (\d+) time\(s\) in ([-+0-9.eE]+|nan|inf) ms")


class BundleError(LatencyTableError):
    """A bundle or timings file that cannot be used; the message names the file and the fix."""


def _kind(key: str) -> str:
    return "trivial" if key == TRIVIAL else "model" if key.startswith(MODEL) else "block"


def check_bundle_folder(folder: str) -> None:
    """A folder to write a bundle into: not a file, writable, empty or this kind of bundle's."""
    if os.path.isfile(folder):
        raise BundleError(f"--bundle {folder!r} is a file; give a folder for the bundle")
    parent = folder if os.path.isdir(folder) else os.path.dirname(os.path.abspath(folder))
    while not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK):
        raise BundleError(f"--bundle {folder!r}: {parent} is not writable; give a folder you can write to")


def _check_same_bundle(folder: str, identity: Dict[str, Any], paths) -> None:
    """A folder that holds files is resumed only when they are a bundle of the same settings."""
    if not (os.path.isdir(folder) and [f for f in os.listdir(folder) if not f.startswith(".")]):  # .bundle.lock
        return
    known = None
    for path in paths:
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    known = json.load(f).get("identity")
            except ValueError:
                known = None
            break
    if known is None:
        raise BundleError(f"--bundle {folder!r} holds other files and no bundle; give an empty or new folder")
    if known != json.loads(json.dumps(identity)):
        raise BundleError(
            f"--bundle {folder!r} holds a bundle of other settings; nothing was changed: give another folder"
        )


def write_bundle(
    measurement: TableMeasurement, folder: str, progress=None, cache_dir: Optional[str] = None
) -> Dict[str, Any]:
    """Every program a table of ``measurement``'s settings times, written to ``folder`` with the manifest
    and the runners. Resumes an interrupted write of the same settings; returns the manifest."""
    s = measurement.settings
    if s.runtime != "executorch":
        raise BundleError(
            f"a bundle holds ExecuTorch programs (the device runtime); --runtime {s.runtime} is timed here"
        )
    check_bundle_folder(folder)
    state_path = os.path.join(folder, "bundle_settings.json")
    identity = {**measurement.header, "settings": measurement._measured_settings()}
    manifest_path = os.path.join(folder, MANIFEST)
    _check_same_bundle(folder, identity, (manifest_path, state_path))
    os.makedirs(os.path.join(folder, "programs"), exist_ok=True)
    save_table({"identity": identity}, state_path)
    t0 = time.perf_counter()
    plan = measurement.plan_programs()
    names = {key: f"p{i:05d}" for i, key in enumerate(plan.configs)}
    path_of = {key: os.path.join(folder, "programs", names[key] + ".pte") for key in plan.configs}
    missing = [k for k in plan.configs if not os.path.isfile(path_of[k])]
    done = len(plan.configs) - len(missing)
    if progress:
        progress("export", done, len(plan.configs))
    for i in range(0, len(missing), s.chunk):
        chunk = {k: plan.configs[k] for k in missing[i : i + s.chunk]}
        for key, program in compile_programs(chunk, s.runtime, s.int8, s.jobs, cache_dir).items():
            atomic_write_bytes(path_of[key], program)
        done += len(chunk)
        if progress:
            progress("export", done, len(plan.configs))
    programs = []
    for key, spec in plan.configs.items():
        programs.append(
            {
                "name": names[key],
                "key": key,
                "kind": _kind(key),
                "file": f"programs/{names[key]}.pte",
                "sha256": bundle_runner.sha256_file(path_of[key]),
                "bytes": os.path.getsize(path_of[key]),
                "input_shape": list(example_of(spec).shape),
            }
        )
    manifest = {
        "format": BUNDLE_FORMAT,
        "identity": identity,
        "space": measurement.space,
        "runtime": s.runtime,
        "int8": s.int8,
        "versions": versions(s.runtime),
        "method": METHOD,
        "timing": {"rounds": s.rounds, "warmup": s.warmup, "settle_calls": s.settle_calls, "threads": s.threads},
        "export_seconds": round(time.perf_counter() - t0, 1),
        "programs": programs,
    }
    save_table(manifest, manifest_path)
    _write_runners(folder)
    os.remove(state_path)
    return manifest


def _write_runners(folder: str) -> None:
    atomic_copy(bundle_runner.__file__, os.path.join(folder, "run_bundle.py"))
    for name, text in (
        ("run_executor_runner.sh", EXECUTOR_RUNNER_SCRIPT),
        ("run_android_app.sh", ANDROID_APP_SCRIPT),
    ):
        atomic_write_text(os.path.join(folder, name), text)
        os.chmod(os.path.join(folder, name), 0o755)


def read_bundle(folder: str) -> Tuple[Dict[str, Any], str]:
    """The manifest of ``folder`` and its digest, every program checked against it."""
    if not os.path.isdir(folder):
        raise BundleError(
            f"--bundle {folder!r} is not a folder (write one with: tools/latency_table.py SPACE --bundle DIR)"
        )
    try:
        manifest, digest = bundle_runner.read_manifest(folder)
        bundle_runner.check_programs(folder, manifest)
    except bundle_runner.BundleRunError as e:
        raise BundleError(str(e)) from None
    except (KeyError, TypeError):
        raise BundleError(f"{os.path.join(folder, MANIFEST)} lacks its programs list: write the bundle again") from None
    return manifest, digest


# ------------------------------------------------------------------------------------------ timings


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BundleError(f"{where}: {value!r} is not a number of milliseconds")
    try:
        ms = float(value)
    except ValueError:
        raise BundleError(f"{where}: {value!r} is not a number of milliseconds") from None
    if not math.isfinite(ms) or ms <= 0 or ms > ABSURD_MS:
        raise BundleError(f"{where}: {value!r} ms is not a timing (it must be finite, > 0 and < {ABSURD_MS:g})")
    return ms


def read_runner_timings(path: str, manifest: Dict[str, Any], digest: str) -> Tuple[Dict[str, List[float]], Dict]:
    """run_bundle.py's timings: checked against the bundle (digest, runtime version, rounds)."""
    try:
        with open(path) as f:
            t = json.load(f)
    except ValueError as e:
        raise BundleError(f"{path} is not complete JSON ({e}): run run_bundle.py again to finish it") from None
    if not isinstance(t, dict) or t.get("format") != TIMINGS_FORMAT:
        raise BundleError(f"{path} is not a timings file of run_bundle.py (format {TIMINGS_FORMAT!r})")
    if t.get("bundle") != digest:
        raise BundleError(f"{path} holds timings of another bundle (its manifest's sha256 differs): time this bundle")
    ours, theirs = manifest["versions"].get("executorch"), t.get("device", {}).get("executorch")
    if theirs not in (ours, "unknown"):
        raise BundleError(
            f"{path} was timed with ExecuTorch {theirs}, the bundle's programs were written by {ours}: "
            f"install executorch=={ours} on the device, or write the bundle with {theirs}"
        )
    if t.get("rounds_done", 0) < t.get("rounds", 1):
        raise BundleError(f"{path} holds {t.get('rounds_done')} of {t.get('rounds')} rounds: run run_bundle.py again")
    samples = t.get("samples")
    if not isinstance(samples, dict):
        raise BundleError(f"{path} has no samples")
    out = {}
    for name, values in samples.items():
        if not isinstance(values, list) or not values:
            raise BundleError(f"{path}: program {name}: no samples")
        out[name] = [_number(v, f"{path}: program {name}") for v in values]
    device = {**t.get("device", {}), "timed_by": t.get("timed_by", "run_bundle.py"), "seconds": t.get("seconds")}
    return out, device


def read_executor_runner_log(path: str, warmup: int = 0) -> Tuple[Dict[str, List[float]], Dict]:
    """The saved output of run_executor_runner.sh: per program and round, the median of its
    ``Iteration i of N: X ms`` lines after the first ``warmup`` (the script's first line says how
    many); from a runner that prints only its total, ``Model executed successfully N time(s) in T ms``:
    T / N."""
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    samples: Dict[str, List[float]] = {}
    block: Optional[Dict[str, Any]] = None  # the program being read: name, round, iterations, total
    for n, line in enumerate(lines, 1):
        m = WARMUP.search(line) or FAILED.search(line) or MARKER.search(line)
        if m and m.re is WARMUP:
            warmup = int(m.group(1))
        elif m and m.re is FAILED:
            raise BundleError(f"{path} line {n}: the runner failed on program {m.group(1)} (see the lines above it)")
        elif m:
            _close_block(block, samples, warmup, path, n)
            block = {"name": m.group(1), "round": m.group(2), "iters": [], "total": None}
        elif block is not None and ITERATION.search(line):
            it = ITERATION.search(line)
            block["iters"].append((int(it.group(1)), _number(it.group(3), f"{path} line {n}")))
        elif block is not None and TOTAL.search(line):
            t = TOTAL.search(line)
            block["total"] = _number(float(t.group(2)) / max(int(t.group(1)), 1), f"{path} line {n}")
    _close_block(block, samples, warmup, path, len(lines))
    if not samples:
        raise BundleError(f"{path} holds no program's timing (no 'mobile_cv-bundle program' lines): is it the log?")
    return samples, {"timed_by": "xnn_executor_runner (run_executor_runner.sh)"}


def _close_block(block, samples: Dict[str, List[float]], warmup: int, path: str, line: int) -> None:
    """One program's launch in the log made into one sample."""
    if block is None:
        return
    if block["iters"]:
        kept = [v for i, v in block["iters"] if i > warmup] or [v for _, v in block["iters"]]
        samples.setdefault(block["name"], []).append(sorted(kept)[len(kept) // 2])
    elif block["total"] is not None:
        samples.setdefault(block["name"], []).append(block["total"])
    else:
        raise BundleError(
            f"{path}: program {block['name']} round {block['round']} (before line {line}): no timing printed "
            f"(did the runner fail? see the lines above it)"
        )


APP_METRICS = ("trimmean_inference_latency(ms)", "avg_inference_latency(ms)")


def read_android_app_results(folder: str) -> Tuple[Dict[str, List[float]], Dict]:
    """The benchmark app's ``benchmark_results.json`` files (one per program and round, as
    run_android_app.sh saves them): its trimmed mean per launch is one sample of the program."""
    files = sorted(glob.glob(os.path.join(folder, "*.json")))
    if not files:
        raise BundleError(f"{folder} holds no benchmark_results JSON files")
    samples: Dict[str, List[float]] = {}
    device: Dict[str, Any] = {"timed_by": "ExecuTorch Android benchmark app (run_android_app.sh)"}
    for path in files:
        try:
            with open(path) as f:
                metrics = json.load(f)
        except ValueError as e:
            raise BundleError(f"{path} is not complete JSON ({e}): fetch it again") from None
        if not isinstance(metrics, list):
            raise BundleError(f"{path} is not a benchmark_results.json (a list of metrics)")
        by_metric = {}
        for m in metrics:
            try:
                name, metric, value = m["benchmarkModel"]["name"], m["metric"], m["actualValue"]
            except (KeyError, TypeError):
                raise BundleError(f"{path}: an entry without benchmarkModel.name, metric, actualValue") from None
            by_metric[(name, metric)] = value
            if "deviceInfo" in m and "device" not in device:
                info = m["deviceInfo"]
                device.update(device=info.get("device"), model=info.get("arch"), os=info.get("os"))
        for (name, metric), value in by_metric.items():
            if metric == "load_status" and value not in (0, 0.0):
                raise BundleError(f"{path}: program {name} failed to load on the device (status {value})")
        names = {name for name, _ in by_metric}
        for name in names:
            metric = next((k for k in APP_METRICS if (name, k) in by_metric), None)
            if metric is None:
                raise BundleError(f"{path}: program {name} has no latency metric ({' or '.join(APP_METRICS)})")
            samples.setdefault(name, []).append(_number(by_metric[(name, metric)], f"{path}: program {name}"))
    return samples, device


def read_timings(path: str, manifest: Dict[str, Any], digest: str) -> Tuple[Dict[str, List[float]], Dict]:
    """Any of the three kinds of timings, by what ``path`` is."""
    if os.path.isdir(path):
        return read_android_app_results(path)
    if not os.path.isfile(path):
        raise BundleError(f"--import {path!r} does not exist (timings.json, a runner log, or the app's results folder)")
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if head.startswith(b"{"):
        return read_runner_timings(path, manifest, digest)
    return read_executor_runner_log(path)


def import_timings(timings: str, folder: str, out: str) -> Tuple[LatencyTable, Any]:
    """The table of the bundle at ``folder`` from the device's ``timings``, written to ``out``; and
    the supernet it serves."""
    manifest, digest = read_bundle(folder)
    if os.path.isdir(out):
        raise BundleError(f"--out {out!r} is a folder; give the table's file name")
    if os.path.exists(out):
        try:
            with open(out) as f:
                theirs = json.load(f).get("bundle", {}).get("manifest_sha256")
        except (ValueError, AttributeError, OSError):
            theirs = None
        if theirs != digest:
            raise BundleError(
                f"--out {out!r} holds a table built another way (not from this bundle); nothing was changed: "
                f"choose another --out"
            )
    samples, device = read_timings(timings, manifest, digest)
    names = {p["name"]: p for p in manifest["programs"]}
    unknown = sorted(set(samples) - set(names))
    if unknown:
        raise BundleError(
            f"{timings}: programs not in this bundle: {', '.join(unknown[:5])}: timings of another bundle?"
        )
    missing = sorted(set(names) - set(samples))
    if missing:
        raise BundleError(
            f"{timings}: no timing for {len(missing)} of the bundle's {len(names)} programs "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): time them all"
        )
    ident = manifest["identity"]
    measurement = TableMeasurement.from_identity(manifest["space"], out, ident)
    plan = measurement.plan_programs()
    by_key = {p["key"]: p["name"] for p in manifest["programs"]}
    if set(by_key) != set(plan.configs):
        raise BundleError(
            f"{folder}: the bundle's programs are not what this version of the project times for "
            f"{manifest['space']}; write the bundle again"
        )
    measured = {
        "versions": manifest["versions"],
        "cpu": device.get("cpu") or device.get("model") or "unknown",
        "machine": {k: v for k, v in device.items() if k not in ("seconds",)},
        "bundle": {"manifest_sha256": digest, "timed_by": device.get("timed_by")},
    }
    seconds = manifest.get("export_seconds", 0.0) + (device.get("seconds") or 0.0)
    data = measurement.assemble(plan, {key: samples[name] for key, name in by_key.items()}, measured, seconds)
    save_table(data, out)
    return LatencyTable(data, out), measurement.net


def bundle_size(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs)


# ---------------------------------------------------------------------------- device-side scripts

EXECUTOR_RUNNER_SCRIPT = r"""#!/bin/sh
# Time every program of this bundle with ExecuTorch's xnn_executor_runner; save what it prints:
#   ./run_executor_runner.sh > runner_log.txt 2>&1                     # on a board, runner on PATH
#   ADB=1 ./run_executor_runner.sh > runner_log.txt 2>&1               # an Android phone over adb
# then: python tools/latency_table.py --import runner_log.txt --bundle THIS_FOLDER --out TABLE.json
# Settings (environment): RUNNER (default xnn_executor_runner; with ADB=1 /data/local/tmp/xnn_executor_runner),
# ROUNDS (default 5), ITERS (calls per launch, default 20), WARMUP (calls dropped per launch, default 3),
# THREADS (default 1), DEVICE_DIR (with ADB=1, default /data/local/tmp/mobile_cv_bundle).
set -e
cd "$(dirname "$0")"
ROUNDS=${ROUNDS:-5}; ITERS=${ITERS:-20}; WARMUP=${WARMUP:-3}; THREADS=${THREADS:-1}
DEVICE_DIR=${DEVICE_DIR:-/data/local/tmp/mobile_cv_bundle}
if [ -n "$ADB" ]; then
  RUNNER=${RUNNER:-/data/local/tmp/xnn_executor_runner}
  adb shell mkdir -p "$DEVICE_DIR/programs"
  adb push programs/. "$DEVICE_DIR/programs/" > /dev/null
  run() {
    adb shell "$RUNNER" --model_path "$DEVICE_DIR/$1" --num_executions $((ITERS + WARMUP)) --cpu_threads "$THREADS"
  }
else
  RUNNER=${RUNNER:-xnn_executor_runner}
  run() { "$RUNNER" --model_path "$1" --num_executions $((ITERS + WARMUP)) --cpu_threads "$THREADS"; }
fi
echo "mobile_cv-bundle warmup $WARMUP iters $ITERS threads $THREADS"
r=1
while [ "$r" -le "$ROUNDS" ]; do
  for f in programs/*.pte; do
    p=$(basename "$f" .pte)
    echo "mobile_cv-bundle program $p round $r"
    run "$f" || echo "mobile_cv-bundle failed $p"
  done
  echo "round $r of $ROUNDS done" >&2
  r=$((r + 1))
done
"""

ANDROID_APP_SCRIPT = r"""#!/bin/sh
# Time every program of this bundle with ExecuTorch's Android benchmark app (org.pytorch.minibench),
# one launch per program and round; each launch's benchmark_results.json is saved to results/:
#   ./run_android_app.sh
# then: python tools/latency_table.py --import results --bundle THIS_FOLDER --out TABLE.json
# Settings (environment): ROUNDS (default 3), ITERS (default 50), WARMUP (default 10).
set -e
cd "$(dirname "$0")"
ROUNDS=${ROUNDS:-3}; ITERS=${ITERS:-50}; WARMUP=${WARMUP:-10}
DIR=/data/local/tmp/minibench
mkdir -p results
r=1
while [ "$r" -le "$ROUNDS" ]; do
  for f in programs/*.pte; do
    p=$(basename "$f" .pte)
    [ -s "results/$p.r$r.json" ] && continue   # resumable: a launch already saved is kept
    adb shell rm -rf "$DIR" && adb shell mkdir -p "$DIR"
    adb push "$f" "$DIR/$p.pte" > /dev/null
    adb shell am start -W -S -n org.pytorch.minibench/org.pytorch.minibench.BenchmarkActivity \
      --es model_dir "$DIR" --ei num_iter "$ITERS" --ei num_warm_up_iter "$WARMUP" > /dev/null
    adb shell run-as org.pytorch.minibench cat files/benchmark_results.json > "results/$p.r$r.json.tmp"
    mv "results/$p.r$r.json.tmp" "results/$p.r$r.json"
  done
  echo "round $r of $ROUNDS done"
  r=$((r + 1))
done
"""
