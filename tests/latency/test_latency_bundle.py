"""Latency tables for the user's own device: a bundle written here, timed by its runner with only
ExecuTorch importable (this project blocked), imported back into a table a search uses; the logs of
ExecuTorch's own runner and benchmark app read; every bad input refused in one line, nothing written."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from mobile_cv.latency import LatencySettings, LatencyTable, TableMeasurement
from mobile_cv.latency.bundle import (
    BundleError,
    import_timings,
    read_android_app_results,
    read_executor_runner_log,
    write_bundle,
)
from tests.helpers import ROOT

pytestmark = pytest.mark.skipif(
    not __import__("importlib").util.find_spec("executorch"), reason="executorch not installed (pip install .[test])"
)
SAMPLES = os.path.join(ROOT, "tests", "data", "latency_device")
MICRO = {
    "input_size": 16,
    "search": {"resolution": [16]},
    "blocks": [
        [["masked-channel", 8, 2, 1, {"op": "conv_k3_hs", "channels": [4, 8]}]],
        [["choice", 8, 1, 1, {"ops": ["ir_k3", "skip"], "channels": [8], "expansion": [2]}]],
    ],
}
# the runner sees ExecuTorch and torch, and none of this project or its other dependencies
BLOCKED = ("mobile_cv", "fvcore", "yacs", "timm", "iopath")


def run_runner(bundle, *extra):
    code = (
        "import sys, runpy\n"
        f"for m in {BLOCKED!r}: sys.modules[m] = None\n"
        f"sys.argv = ['run_bundle.py', *{list(extra)!r}]\n"
        f"runpy.run_path({os.path.join(bundle, 'run_bundle.py')!r}, run_name='__main__')\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    cmd = [sys.executable, "-c", code]
    return subprocess.run(cmd, cwd=bundle, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "micro.json"
    path.write_text(json.dumps(MICRO))
    return str(path)


def measurement_of(space_file, out="unused.json"):
    settings = LatencySettings(
        runtime="executorch", num_classes=10, in_chans=1, rounds=3, warmup=1, calibration_models=2, jobs=1
    )
    return TableMeasurement(space_file, out, settings)


def latency_table_tool():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import latency_table
    finally:
        sys.path.pop(0)
    return latency_table


@pytest.fixture(scope="module")
def timed(space_file, tmp_path_factory):
    """A bundle of the micro space written by the tool, and its runner's timings (the runner run
    without this project)."""
    folder = str(tmp_path_factory.mktemp("b") / "bundle")
    settings = ["--num-classes", "10", "--in-chans", "1", "--rounds", "3", "--warmup", "1"]
    settings += ["--calibration-models", "2", "--jobs", "1", "--runtime", "executorch"]
    assert latency_table_tool().main([space_file, "--bundle", folder, *settings]) == 0
    done = run_runner(folder)
    assert done.returncode == 0, done.stderr
    return folder, json.load(open(os.path.join(folder, "manifest.json"))), os.path.join(folder, "timings.json")


def fresh_copy(timed, tmp_path):
    folder = str(tmp_path / "bundle")
    shutil.copytree(timed[0], folder)
    return folder, os.path.join(folder, "timings.json")


def test_bundle_holds_every_program_a_table_times_with_its_digest(timed, space_file, capfd):
    folder, manifest, _ = timed
    plan = measurement_of(space_file).plan_programs()
    assert [p["key"] for p in manifest["programs"]] == list(plan.configs)
    kinds = {p["kind"] for p in manifest["programs"]}
    assert kinds == {"trivial", "block", "model"}
    for p in manifest["programs"]:
        assert os.path.getsize(os.path.join(folder, p["file"])) == p["bytes"]
    for script in ("run_bundle.py", "run_executor_runner.sh", "run_android_app.sh"):
        assert os.path.isfile(os.path.join(folder, script))
    for script in ("run_executor_runner.sh", "run_android_app.sh"):
        assert subprocess.run(["sh", "-n", os.path.join(folder, script)]).returncode == 0


def test_imported_table_serves_a_search_and_records_the_device(timed, space_file, tmp_path):
    folder, manifest, timings = timed
    t = json.load(open(timings))
    assert t["rounds_done"] == 3 and all(len(v) == 3 for v in t["samples"].values())
    assert t["device"]["executorch"] == manifest["versions"]["executorch"]
    table, net = import_timings(timings, folder, str(tmp_path / "device.json"))
    again = LatencyTable.load(str(tmp_path / "device.json"))
    assert again.data["bundle"]["manifest_sha256"] and again.data["machine"]["timed_by"].startswith("run_bundle.py")
    assert len(again.entries) == len(measurement_of(space_file).plan_programs().todo)
    index = {label: 0 for label in net.choices}
    budget = again.budget_table(net)
    assert budget.exact(index) > 0 and again.correction.models == 2
    # importing the same timings again rewrites the same table (it came from this bundle)
    import_timings(timings, folder, str(tmp_path / "device.json"))


def test_the_runner_resumes_after_the_rounds_it_finished(timed, tmp_path):
    folder, timings = fresh_copy(timed, tmp_path)
    t = json.load(open(timings))
    t["rounds_done"], t["samples"] = 1, {k: v[:1] for k, v in t["samples"].items()}
    json.dump(t, open(timings, "w"))
    done = run_runner(folder)
    assert done.returncode == 0, done.stderr
    assert "continuing after round 1 of 3" in done.stdout
    resumed = json.load(open(timings))
    assert resumed["rounds_done"] == 3
    assert all(resumed["samples"][k][0] == v[0] for k, v in t["samples"].items())
    assert all(len(v) == 3 for v in resumed["samples"].values())


def test_the_runner_refuses_an_altered_program_in_one_line(timed, tmp_path):
    folder, timings = fresh_copy(timed, tmp_path)
    os.remove(timings)
    with open(os.path.join(folder, "programs", "p00001.pte"), "ab") as f:
        f.write(b"x")
    done = run_runner(folder)
    assert done.returncode == 2 and "p00001.pte differs from the bundle's manifest" in done.stderr
    assert not os.path.exists(timings)


def edit_timings(path, change):
    t = json.load(open(path))
    change(t)
    json.dump(t, open(path, "w"))


def first(t):
    return sorted(t["samples"])[0]


BAD_TIMINGS = {
    "another bundle": (lambda t: t.update(bundle="0" * 64), "timings of another bundle"),
    "another runtime": (lambda t: t["device"].update(executorch="0.1.0"), "timed with ExecuTorch 0.1.0"),
    "missing entry": (lambda t: t["samples"].pop(first(t)), "no timing for 1 of the bundle's"),
    "unknown entry": (lambda t: t["samples"].update(p99999=[1.0]), "programs not in this bundle: p99999"),
    "non-numeric": (lambda t: t["samples"][first(t)].__setitem__(0, "fast"), "'fast' is not a number"),
    "negative": (lambda t: t["samples"][first(t)].__setitem__(0, -1.0), "-1.0 ms is not a timing"),
    "zero": (lambda t: t["samples"][first(t)].__setitem__(0, 0), "0 ms is not a timing"),
    "nan": (lambda t: t["samples"][first(t)].__setitem__(0, float("nan")), "nan ms is not a timing"),
    "absurd": (lambda t: t["samples"][first(t)].__setitem__(0, 1e9), "1000000000.0 ms is not a timing"),
    "unfinished": (lambda t: t.update(rounds_done=1), "holds 1 of 3 rounds"),
}


@pytest.mark.parametrize("case", sorted(BAD_TIMINGS))
def test_bad_timings_are_refused_in_one_line_and_nothing_is_written(case, timed, tmp_path):
    folder, timings = fresh_copy(timed, tmp_path)
    change, message = BAD_TIMINGS[case]
    edit_timings(timings, change)
    out = tmp_path / "device.json"
    with pytest.raises(BundleError, match=message.replace("(", r"\(")) as e:
        import_timings(timings, folder, str(out))
    assert "\n" not in str(e.value) and not out.exists()


def test_bad_bundles_and_outs_are_refused_in_one_line_and_nothing_is_written(timed, tmp_path, space_file):
    folder, timings = fresh_copy(timed, tmp_path)
    out = tmp_path / "device.json"

    def refused(message, where=folder, timings=timings, out=out):
        with pytest.raises(BundleError, match=message) as e:
            import_timings(timings, where, str(out))
        assert "\n" not in str(e.value)

    os.rename(os.path.join(folder, "programs", "p00002.pte"), os.path.join(tmp_path, "moved.pte"))
    refused("p00002.pte is missing from the bundle")
    os.rename(os.path.join(tmp_path, "moved.pte"), os.path.join(folder, "programs", "p00002.pte"))
    with open(os.path.join(folder, "programs", "p00002.pte"), "r+b") as f:
        f.write(b"\0\0\0\0")
    refused("p00002.pte differs from the bundle's manifest")
    shutil.copy(os.path.join(timed[0], "programs", "p00002.pte"), os.path.join(folder, "programs", "p00002.pte"))
    text = open(timings).read()
    open(timings, "w").write(text[: len(text) // 2])
    refused("is not complete JSON")
    open(timings, "w").write(text)
    manifest = os.path.join(folder, "manifest.json")
    kept = open(manifest).read()
    open(manifest, "w").write(kept[:100])
    refused("manifest.json is not complete JSON")
    open(manifest, "w").write(kept)
    out.write_text(json.dumps({"format": "mobile_cv.latency/2", "entries": {}}))
    refused("holds a table built another way", out=out)
    assert json.loads(out.read_text()) == {"format": "mobile_cv.latency/2", "entries": {}}  # untouched
    refused("is not a folder", where=str(tmp_path / "nowhere"), out=tmp_path / "other.json")
    # writing a bundle: a file in the way, a folder that is not writable, a folder of other settings
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(BundleError, match="is a file"):
        write_bundle(measurement_of(space_file), str(a_file))
    with pytest.raises(BundleError, match="holds a bundle of other settings"):
        other = measurement_of(space_file)
        other.settings.rounds = 5
        write_bundle(other, folder)
    assert open(manifest).read() == kept


def test_a_folder_that_is_not_writable_is_refused(space_file, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(BundleError, match="is not writable"):
        write_bundle(measurement_of(space_file), str(tmp_path / "ro" / "bundle"))
    assert not (tmp_path / "ro").exists()


def test_the_executor_runners_log_and_the_apps_results_read_as_timings():
    """Sample outputs in the formats of ExecuTorch 1.x's executor_runner.cpp (ET_LOG lines) and of
    the Android benchmark app's benchmark_results.json (Gson of BenchmarkMetric)."""
    samples, device = read_executor_runner_log(os.path.join(SAMPLES, "executor_runner.log"))
    # per launch: the median of the iterations after the 2 of warm-up the script announced
    assert samples == {"p00000": [0.004, 0.005], "p00001": [0.25, 0.26], "p00002": [1.5, 1.25]}
    assert device["timed_by"].startswith("xnn_executor_runner")
    app, device = read_android_app_results(os.path.join(SAMPLES, "android_app_results"))
    assert app == {"p00000": [0.011, 0.012], "p00001": [0.31, 0.3], "p00002": [2.5, 2.4]}
    assert device["device"] == "google" and device["os"].startswith("Android")


def test_a_runner_log_that_failed_or_holds_nothing_is_refused_by_line(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("mobile_cv-bundle program p00000 round 1\nI 00:00:00.1 executorch:x.cpp:1] Model loaded\n")
    with pytest.raises(BundleError, match="p00000 round 1 .*no timing printed"):
        read_executor_runner_log(str(log))
    log.write_text("mobile_cv-bundle program p00000 round 1\nmobile_cv-bundle failed p00000\n")
    with pytest.raises(BundleError, match="line 2: the runner failed on program p00000"):
        read_executor_runner_log(str(log))
    log.write_text("hello\n")
    with pytest.raises(BundleError, match="no program's timing"):
        read_executor_runner_log(str(log))


def test_import_reads_the_executor_runners_log_of_a_bundle(timed, tmp_path):
    """The runner's timings written out as run_executor_runner.sh's log would show them."""
    folder, _, timings = timed
    t = json.load(open(timings))
    lines = ["mobile_cv-bundle warmup 1 iters 2 threads 1"]
    for r in range(3):
        for name, values in sorted(t["samples"].items()):
            lines.append(f"mobile_cv-bundle program {name} round {r + 1}")
            lines.append("I 00:00:00.000100 executorch:executor_runner.cpp:301] Iteration 1 of 3: 9.0 ms")
            for i in (2, 3):
                lines.append(
                    f"I 00:00:00.000200 executorch:executor_runner.cpp:301] Iteration {i} of 3: {values[r]:.6f} ms"
                )
    log = tmp_path / "runner.log"
    log.write_text("\n".join(lines) + "\n")
    table, _ = import_timings(str(log), folder, str(tmp_path / "from_log.json"))
    direct, _ = import_timings(timings, folder, str(tmp_path / "direct.json"))
    assert table.entries == direct.entries
    assert table.data["machine"]["timed_by"].startswith("xnn_executor_runner")


def test_tool_imports_a_bundles_timings_and_refuses_bad_ones_in_one_line(timed, tmp_path, capfd):
    latency_table = latency_table_tool()
    folder, timings = fresh_copy(timed, tmp_path)
    out = tmp_path / "t.json"
    assert latency_table.main(["--import", timings, "--bundle", folder, "--out", str(out)]) == 0
    printed = capfd.readouterr().out
    assert "timed on:" in printed and printed.strip().splitlines()[-1].startswith("range: ")
    edit_timings(timings, lambda t: t.update(bundle="0" * 64))
    assert latency_table.main(["--import", timings, "--bundle", folder, "--out", str(tmp_path / "u.json")]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "timings of another bundle" in err[0] and not (tmp_path / "u.json").exists()
