#!/usr/bin/env python
"""Time every program of a latency bundle on this device; needs only ExecuTorch's Python runtime.

    python run_bundle.py                       # in the bundle folder: writes timings.json
    python run_bundle.py --bundle DIR --out DIR/timings.json --threads 2

This file is copied into every bundle written by ``tools/latency_table.py SPACE --bundle DIR``; it
imports nothing of the project that wrote it (the standard library, ``torch`` for the input tensors
and ``executorch.runtime``: ``pip install executorch torch``). It times as the project's own table builds
do: every program loaded at once; ``warmup`` untimed rounds, then ``rounds`` interleaved rounds
(each program once per round, the order rotated); a program's sample in a round is the bundle's
``settle_calls`` untimed calls, then the median of the calls that fit in ~1 ms (at least 3). The
timings are written after every round (atomically): stop it (Ctrl-C) and run it again to continue.
Then, on the machine with the project:

    python tools/latency_table.py --import timings.json --bundle DIR --out TABLE.json
"""

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time

TIMINGS_FORMAT = "mobile_cv.latency.timings/1"
BUNDLE_FORMAT = "mobile_cv.latency.bundle/1"
MIN_SAMPLE_S = 0.001


class BundleRunError(Exception):
    """Something the user can fix; printed as one line, nothing written."""


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder):
    path = os.path.join(folder, "manifest.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        manifest = json.loads(raw)
    except OSError as e:
        raise BundleRunError(f"{path} cannot be read ({e.strerror}): give the bundle folder with --bundle") from None
    except ValueError as e:
        raise BundleRunError(f"{path} is not complete JSON ({e}): copy the bundle again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleRunError(f"{path} is not a latency bundle's manifest (format {BUNDLE_FORMAT!r})")
    return manifest, hashlib.sha256(raw).hexdigest()


def check_programs(folder, manifest):
    """Every program present and unchanged (its sha256 as written in the manifest)."""
    for p in manifest["programs"]:
        path = os.path.join(folder, p["file"])
        if not os.path.isfile(path):
            raise BundleRunError(f"{path} is missing from the bundle: copy the bundle again")
        if sha256_file(path) != p["sha256"]:
            raise BundleRunError(f"{path} differs from the bundle's manifest (sha256): copy the bundle again")


def executorch_version():
    try:
        from importlib.metadata import version

        return version("executorch")
    except Exception:  # a source build has no distribution metadata
        return "unknown"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(threads):
    return {
        "cpu": cpu_name(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "threads": threads,
        "os": platform.platform(),
        "python": platform.python_version(),
        "executorch": executorch_version(),
    }


def write_atomic(path, data):
    # mobile_cv.atomic_files' pattern (.NAME.RANDOM.tmp), restated: this file runs without the project
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_runners(folder, manifest, threads):
    try:
        import torch
        from executorch.runtime import Runtime
    except ImportError as e:
        raise BundleRunError(f"{e.name} is not installed here: pip install executorch torch") from None

    torch.set_num_threads(threads)
    try:
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's pool (default: one thread per core)
    except (ImportError, AttributeError):
        print(f"note: this ExecuTorch cannot set its thread count; it uses its default, not {threads}")
    runtime = Runtime.get()
    runners, keep = {}, []
    for p in manifest["programs"]:
        program = runtime.load_program(os.path.join(folder, p["file"]))
        method = program.load_method("forward")
        example = torch.randn(*p["input_shape"], generator=torch.Generator().manual_seed(0))
        keep.append((program, method, example))  # a method whose program is collected crashes the runtime
        runners[p["name"]] = (lambda m, x: lambda: m.execute((x,)))(method, example)
    return runners, keep


def time_rounds(runners, timings, out, rounds, warmup, settle=0):
    names = list(runners)
    calls = {}
    for k in names:
        t0 = time.perf_counter()
        runners[k]()
        calls[k] = max(3, min(200, int(MIN_SAMPLE_S / max(time.perf_counter() - t0, 1e-7))))
    start, t0 = timings["rounds_done"], time.perf_counter()
    for r in range(warmup + rounds - start):
        timed = r >= warmup
        index = start + r - warmup if timed else r
        order = names[index % len(names) :] + names[: index % len(names)]
        for k in order:
            run, times = runners[k], []
            for _ in range(settle):  # untimed: a program runs slower for its first calls after another ran
                run()
            for _ in range(calls[k]):
                t1 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t1)
            if timed:
                timings["samples"].setdefault(k, []).append(round(statistics.median(times) * 1e3, 6))
        if timed:
            timings["rounds_done"] += 1
            timings["seconds"] = round(timings["seconds"] + time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            write_atomic(out, timings)
            left = rounds - timings["rounds_done"]
            eta = timings["seconds"] / max(timings["rounds_done"] - start, 1) * left
            print(f"round {timings['rounds_done']}/{rounds} of {len(names)} programs; ~{eta:.0f} s left", flush=True)
        else:
            print(f"warm-up round {r + 1}/{warmup}", flush=True)


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=here, help="the bundle folder (default: this script's)")
    p.add_argument("--out", help="the timings file (default: BUNDLE/timings.json)")
    p.add_argument("--rounds", type=int, help="timed rounds (default: the bundle's)")
    p.add_argument("--warmup", type=int, help="untimed rounds first (default: the bundle's)")
    p.add_argument("--threads", type=int, help="runtime threads (default: the bundle's)")
    args = p.parse_args(argv)
    try:
        manifest, digest = read_manifest(args.bundle)
        t = manifest["timing"]
        rounds = t["rounds"] if args.rounds is None else args.rounds
        warmup = t["warmup"] if args.warmup is None else args.warmup
        threads = t["threads"] if args.threads is None else args.threads
        if rounds < 1 or warmup < 0 or threads < 1:
            raise BundleRunError("--rounds and --threads must be >= 1, --warmup >= 0")
        out = args.out or os.path.join(args.bundle, "timings.json")
        timings = None
        if os.path.exists(out):
            try:
                with open(out) as f:
                    timings = json.load(f)
            except ValueError:
                raise BundleRunError(f"{out} exists and is not a timings file; move it away") from None
            same = {"bundle": digest, "rounds": rounds, "warmup": warmup, "threads": threads}
            if timings.get("format") != TIMINGS_FORMAT or any(timings.get(k) != v for k, v in same.items()):
                raise BundleRunError(f"{out} holds timings of another bundle or other settings; move it away")
            if timings["rounds_done"] >= rounds:
                print(f"{out}: all {rounds} rounds done already")
                return 0
            print(f"{out}: continuing after round {timings['rounds_done']} of {rounds}")
        check_programs(args.bundle, manifest)
        if timings is None:
            timings = {
                "format": TIMINGS_FORMAT,
                "bundle": digest,
                "timed_by": "run_bundle.py (ExecuTorch Python runtime)",
                "device": describe_device(threads),
                "rounds": rounds,
                "warmup": warmup,
                "threads": threads,
                "rounds_done": 0,
                "seconds": 0.0,
                "samples": {},
            }
        folder = os.path.dirname(os.path.abspath(out))
        if not os.access(folder, os.W_OK):
            raise BundleRunError(f"{folder} is not writable: give --out a writable place")
        print(f"loading {len(manifest['programs'])} programs ({manifest['space']}, {threads} thread(s))", flush=True)
        runners, _keep = load_runners(args.bundle, manifest, threads)
        time_rounds(runners, timings, out, rounds, warmup, int(t.get("settle_calls", 0)))
        print(f"{out}: {rounds} rounds of {len(runners)} programs in {timings['seconds']:.0f} s")
        return 0
    except BundleRunError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped; the rounds finished are kept: run it again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
