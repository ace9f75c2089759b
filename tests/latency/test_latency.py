"""Latency tables and latency as a search cost: the table of a tiny space built in the eager runtime
(seconds; ExecuTorch where installed on a smaller one), the expected latency's exactness and gradient,
the budgeted search in milliseconds, and the bad tables a user can hand over."""

import json
import math
import os
import shutil
import sys

import pytest
import torch

import mobile_cv
from mobile_cv.latency import (
    LatencySettings,
    LatencyTable,
    LatencyTableError,
    TableMeasurement,
    measure,
    measure_latency_table,
)
from mobile_cv.latency.calibration import Correction
from mobile_cv.latency.configs import BlockConfig, config_from_key, space_configs
from mobile_cv.latency.measure import first_blocks, predict_config
from mobile_cv.latency.runtimes import RuntimeUnavailableError, check_runtime
from mobile_cv.latency.table import PADDED_FP32, PLAIN, _axis_coordinate, interpolation_for
from mobile_cv.search import build_supernet
from mobile_cv.search.budget import enumerate_all, index_log_prob, log_probs
from tests.helpers import ROOT

SPACE = {
    "input_size": 16,
    "basic_args": {"width_divisor": 8},
    "search": {"resolution": [8, 16]},
    "blocks": [
        [["masked-channel", 8, 2, 1, {"op": "conv_k3_hs", "channels": [4, 8]}]],
        [["choice", 16, 2, 1, {"ops": ["ir_k3", "skip"], "channels": [8, 16], "expansion": [1, 2]}]],
        [["choice", 16, 1, 2, {"ops": ["ir_k3_sehsig_hs", "skip"], "channels": [8, 16], "expansion": [1, 2]}]],
        [["masked-channel", 32, 1, 1, {"op": "ir_pool_hs", "channels": [16, 32], "expansion": 2}]],
    ],
}
FAST = dict(
    runtime="eager", num_classes=10, in_chans=1, rounds=3, warmup=1, settle_calls=1, chunk=32, calibration_models=12
)


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("latency") / "space.json"
    path.write_text(json.dumps(SPACE))
    return str(path)


@pytest.fixture(scope="module")
def table(space_file):
    out = os.path.join(os.path.dirname(space_file), "table.json")
    return measure_latency_table(space_file, out, LatencySettings(**FAST))


@pytest.fixture(scope="module")
def net(space_file):
    return build_supernet(space_file, num_classes=10, in_chans=1)


def block_configs_of(arch):
    """The configs of a plain model's blocks, read off the built model and a forward pass (hooks),
    independently of the supernet's enumeration."""
    model = mobile_cv.build_model(arch, num_classes=10, in_chans=1).eval()
    sizes = {}
    hooks = [
        b.register_forward_pre_hook(lambda m, i, n=name: sizes.__setitem__(n, tuple(i[0].shape[1:3])))
        for name, b in model.backbone.stages.named_children()
    ]
    hooks.append(model.head.register_forward_pre_hook(lambda m, i: sizes.__setitem__("head", tuple(i[0].shape[1:3]))))
    with torch.no_grad():
        model(torch.zeros(1, 1, arch["input_size"], arch["input_size"]))
    for h in hooks:
        h.remove()
    rows = [row for stage in arch["blocks"] for row in stage]
    out = []
    for (name, block), row in zip(model.backbone.stages.named_children(), rows):
        (c_in, size), hidden = sizes[name], getattr(block, "hidden_channels", 0)
        out.append(BlockConfig(row[0], c_in, hidden, row[1], row[2], size, divisor=8).natural())
    out.append(BlockConfig("head", sizes["head"][0], 0, 10, 1, sizes["head"][1]))
    return out


def test_table_records_what_was_measured_and_covers_every_configuration(table, net):
    d = table.data
    assert d["runtime"] == "eager" and d["threads"] == 1 and d["mode"] == "exact" and d["complete"]
    assert d["resolutions"] == [8, 16] and d["num_classes"] == 10 and d["in_chans"] == 1
    assert {"torch", "python"} <= set(d["versions"]) and d["cpu"] and d["date"][:2] == "20"
    assert d["settings"]["rounds"] == 3 and d["settings"]["settle_calls"] == 1
    keys = {c.key for c in space_configs(net)}
    assert keys == set(d["entries"]) and len(keys) == d["configs_total"]
    for e in d["entries"].values():
        assert 0 < e["min"] <= e["ms"] and e["q1"] <= e["ms"] <= e["q3"]
    assert 0 < table.overhead_ms < min(e["ms"] for e in d["entries"].values()) * 2


def test_each_sample_is_timed_after_the_program_has_settled():
    """Three programs, each slow for its first three calls after another ran (as a whole model is on
    a real CPU): timed unsettled, a sample holds the slow calls; after ``settle`` untimed calls, only
    the steady ones."""
    import time

    from mobile_cv.latency.measure import time_interleaved

    state = {"last": None, "streak": 0}

    def program(name):
        def run():
            state["streak"] = state["streak"] + 1 if state["last"] == name else 1
            state["last"] = name
            end = time.perf_counter() + (0.004 if state["streak"] <= 3 else 0.0005)
            while time.perf_counter() < end:
                pass

        return run

    runners = {name: program(name) for name in "abc"}  # three: a round never starts with the last one's runner
    unsettled = time_interleaved(runners, rounds=3, warmup=0, settle=0)
    settled = time_interleaved(runners, rounds=3, warmup=0, settle=3)
    assert all(v > 3.5 for k in runners for v in unsettled[k])
    assert all(0.4 < v < 1.0 for k in runners for v in settled[k])


def every_architecture(net):
    """Every assignment of ``net``'s options: the list, as ``(N,)`` option indices per choice, and as
    one-hot ``(N, options)`` mixing weights."""
    every = list(enumerate_all(net))
    batch = {label: torch.tensor([ix[label] for ix in every]) for label in net.choices}
    one_hot = {label: torch.nn.functional.one_hot(batch[label], c.size).double() for label, c in net.choices.items()}
    return every, batch, one_hot


def brute_force_optimum_checks(budget, net, batch, latencies, fracs, seed):
    """For random alphas and targets at ``fracs`` of the space's range: the budgeted derivation is in
    the +-5% window, costed exactly, and as probable as the most probable architecture in it (by brute
    force over ``batch``). Returns how many targets had an architecture in their window."""
    lo, hi = float(latencies.min()), float(latencies.max())
    g = torch.Generator().manual_seed(seed)
    checked = 0
    for frac in fracs:
        with torch.no_grad():
            for a in net.arch_parameters():
                a.copy_(torch.randn(a.shape, generator=g))
        logp = log_probs(net)
        total = sum(logp[label][batch[label]] for label in net.choices)
        target = lo + frac * (hi - lo)
        inside = (latencies >= 0.95 * target) & (latencies <= 1.05 * target)
        if not inside.any():
            continue
        index, ms, lp = budget.most_probable_within(target, 0.05, logp)
        assert 0.95 * target <= ms <= 1.05 * target and ms == pytest.approx(budget.exact(index))
        assert lp == pytest.approx(float(total[inside].max()), abs=1e-9) == index_log_prob(index, logp)
        checked += 1
    return checked


def prediction_of(table, arch):
    """A plain model's whole-model latency by ``table``, from the model alone: its blocks read off a
    forward pass, its parameters counted, and the table's correction."""
    c = table.correction
    blocks = sum(table.block_ms(b) for b in block_configs_of(arch))
    _, mparams = mobile_cv.count_flops_params(mobile_cv.build_model(arch, 10, in_chans=1), arch["input_size"], 1)
    small = 1 - (arch["input_size"] / max(table.data["resolutions"])) ** 2
    within_l2 = 0.0
    if c.per_l2_mparam_small:  # the M params of the blocks whose fp32 weights fit the table's L2
        l2 = int(table.data["machine"]["caches"]["L2"].rstrip("K")) * 1024
        model = mobile_cv.build_model(arch, 10, in_chans=1)
        for block in [*model.backbone.stages, model.head]:
            n = sum(m.weight.numel() for m in block.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
            within_l2 += n / 1e6 if 4 * n <= l2 else 0.0
    weights = (c.per_mparam + c.per_mparam_small * small) * mparams + c.per_l2_mparam_small * small * within_l2
    hinge = c.per_mparam_over * (1 - small) * max(0.0, mparams - c.mparam_knot)
    return table.overhead_ms + c.constant + c.scale * blocks + weights + hinge


@pytest.fixture(scope="module")
def corrected(table):
    """The table with a whole-model correction of every term (constant, scale, per M params, per M
    params at the smaller input size, the same for the blocks within the L2), on a machine of an L2
    of 2 KB: some of this space's blocks fit it, some do not."""
    data = json.loads(json.dumps(table.data))
    form = ("constant", "scale", "per_mparam", "per_mparam_small", "per_l2_mparam_small")
    data["correction"] = Correction(0.05, 1.3, 0.7, form, per_mparam_small=0.4, per_l2_mparam_small=0.9).to_dict()
    data["machine"]["caches"]["L2"] = "2K"
    return LatencyTable(data, table.path)


@pytest.fixture(scope="module")
def hinged(table, net):
    """The table with a hinge in the model's M params (``per_mparam_over``), its knot at the median
    of the space's architectures' M params and a slope that makes it a large part of the latency."""
    from mobile_cv.search.budget import BudgetTable

    params = BudgetTable(net, "params")
    _, _, one_hot = every_architecture(net)
    mparams = params.expected(one_hot)
    knot = float(mparams.median())
    spread = float(mparams.max() - mparams.min())
    lo, hi = table.budget_table(net).extremes()
    data = json.loads(json.dumps(table.data))
    form = ("scale", "per_mparam_over")
    data["correction"] = Correction(0.0, 1.1, 0.0, form, per_mparam_over=(hi - lo) / spread, mparam_knot=knot).to_dict()
    return LatencyTable(data, table.path)


@pytest.mark.parametrize("which", ["table", "corrected", "hinged"])
def test_one_hot_expected_latency_equals_the_derived_models_prediction(which, table, corrected, hinged, net):
    """At one-hot mixing the expected latency is the derived model's prediction, computed here from
    the plain model itself (its blocks read off a forward pass, its parameters counted)."""
    t = {"table": table, "corrected": corrected, "hinged": hinged}[which]
    budget = t.budget_table(net)
    g = torch.Generator().manual_seed(0)
    for _ in range(12):
        index = {label: int(torch.randint(c.size, (1,), generator=g)) for label, c in net.choices.items()}
        arch = net.derive_arch(net.one_hot(index))
        expected = float(budget.expected(net.one_hot(index)))
        prediction = prediction_of(t, arch)
        assert expected == pytest.approx(prediction, rel=1e-9, abs=1e-12)
        assert budget.exact(index) == pytest.approx(prediction, rel=1e-9, abs=1e-12)


def test_the_conventional_supernet_gets_the_same_latencies(table, net, space_file):
    """FBNet-style DNAS (a candidate per option) enumerates other items, the same architectures:
    every architecture's table latency is the same in both modes."""
    conventional = build_supernet(space_file, num_classes=10, in_chans=1, mode="conventional")
    a, b = table.budget_table(net), table.budget_table(conventional)
    g = torch.Generator().manual_seed(3)
    for _ in range(8):
        index = {label: int(torch.randint(c.size, (1,), generator=g)) for label, c in net.choices.items()}
        assert b.exact(index) == pytest.approx(a.exact(index), rel=1e-12)
    assert b.extremes() == pytest.approx(a.extremes())


@pytest.mark.parametrize("which", ["table", "corrected"])
def test_expected_latency_is_the_exact_expectation_over_every_architecture(which, table, corrected, net):
    """Soft mixing weights: the expected latency equals the sum over all architectures of their
    probability (the product of their options' weights) times their table latency; it is not the
    table at an "expected width". With the whole-model correction too (its terms are per block)."""
    budget = {"table": table, "corrected": corrected}[which].budget_table(net)
    g = torch.Generator().manual_seed(1)
    mixing = {label: torch.softmax(torch.randn(c.size, generator=g).double(), 0) for label, c in net.choices.items()}
    every, batch, one_hot = every_architecture(net)
    latencies = budget.expected(one_hot)  # (N,) exact latency of every assignment
    prob = torch.ones(len(every), dtype=torch.float64)
    for label in net.choices:
        prob *= mixing[label][batch[label]]
    assert float(prob.sum()) == pytest.approx(1.0)
    assert float(budget.expected(mixing)) == pytest.approx(float((prob * latencies).sum()), rel=1e-9)


def test_the_hinge_dp_is_exact_at_one_hot_and_the_expectation_over_every_architecture(hinged, net):
    """The hinge in M params is not a sum over blocks: its expectation comes from the distribution of
    the model's M params (a sum-product DP). At one-hot weights (the DP itself, not the shortcut) it is
    the architecture's hinge; at soft weights it matches the brute-force expectation over all 20k
    architectures (never above it: each DP cell is taken at its mean M params)."""
    budget = hinged.budget_table(net)
    h = budget.hinge
    assert h is not None and h.knot == hinged.correction.mparam_knot
    every, batch, one_hot = every_architecture(net)
    mparams = h.params.expected(one_hot)
    # the slope at each architecture's input size: (size / largest)^2 of the table's
    slope = h.slopes[batch["resolution"]] if "resolution" in batch else h.slopes[0]
    sizes = net.res_sizes or [net.input_size]
    c = hinged.correction
    assert h.slopes.tolist() == pytest.approx([c.per_mparam_over * (s / max(sizes)) ** 2 for s in sizes])
    exact_hinge = slope * (mparams - h.knot).clamp_min(0)
    assert (exact_hinge > 0).float().mean() == pytest.approx(0.5, abs=0.05)  # the knot splits the space
    for j in torch.randperm(len(every), generator=torch.Generator().manual_seed(0))[:12].tolist():
        one = {label: m[j] for label, m in one_hot.items()}
        dp = float(h.expected(one, budget.terms, shortcut=False))
        assert dp == pytest.approx(float(exact_hinge[j]), rel=1e-9, abs=1e-12)
    g, choices = torch.Generator().manual_seed(1), net.choices.items()
    for scale in (0.5, 2.0):
        mixing = {label: torch.softmax(torch.randn(c.size, generator=g).double() * scale, 0) for label, c in choices}
        prob = torch.ones(len(every), dtype=torch.float64)
        for label in net.choices:
            prob *= mixing[label][batch[label]]
        truth = float((prob * exact_hinge).sum())
        dp = float(h.expected(mixing, budget.terms))
        assert dp <= truth + 1e-12 and dp == pytest.approx(truth, rel=2e-3)
        latencies = budget.expected(one_hot)
        assert float(budget.expected(mixing)) == pytest.approx(float((prob * latencies).sum()), rel=2e-3)


def test_the_hinged_table_derives_the_brute_force_optimum_and_its_extremes(hinged, net):
    """Budgeted derivation with the hinge (the larger of two sums over blocks, each branch's DP decoded
    and every decoded architecture costed exactly): in the window, exact, and the most probable there."""
    budget = hinged.budget_table(net)
    _, batch, one_hot = every_architecture(net)
    latencies = budget.expected(one_hot)
    assert budget.extremes() == pytest.approx((float(latencies.min()), float(latencies.max())))
    checked = brute_force_optimum_checks(budget, net, batch, latencies, (0.2, 0.4, 0.6, 0.8), seed=2)
    assert checked >= 3


@pytest.mark.parametrize("which", ["table", "hinged"])
def test_alpha_gets_a_gradient_through_the_expected_latency(which, table, hinged, net):
    budget = {"table": table, "hinged": hinged}[which].budget_table(net)
    for a in net.arch_parameters():
        a.grad = None
    budget.expected(net.sample_mixing(noise=True)).backward()
    for label in net.choices:
        grad = net.alpha(label).grad
        assert grad is not None and grad.abs().sum() > 0, label


def test_budgeted_search_in_milliseconds_is_the_brute_force_optimum(table, net):
    budget = table.budget_table(net)
    _, batch, one_hot = every_architecture(net)
    latencies = budget.expected(one_hot)
    lo, hi = budget.extremes()
    assert (lo, hi) == pytest.approx((float(latencies.min()), float(latencies.max())))
    brute_force_optimum_checks(budget, net, batch, latencies, (0.2, 0.5, 0.8), seed=2)


def test_a_finished_table_is_reused_and_an_interrupted_one_resumes(space_file, tmp_path):
    """Interrupted after the first chunk of exported programs (ONNX Runtime: an export runtime that
    is quick): the rerun exports only what is missing; a finished table is then reused as it is."""
    out = str(tmp_path / "t.json")
    seen = []

    def stop_after_first_chunk(phase, done, total):
        seen.append((phase, done))
        if phase == "export" and done > 0:
            raise KeyboardInterrupt

    settings = LatencySettings(**{**FAST, "runtime": "onnxruntime", "chunk": 8, "jobs": 1})
    with pytest.raises(KeyboardInterrupt):
        measure_latency_table(space_file, out, settings, stop_after_first_chunk)
    assert not os.path.exists(out)
    kept = sorted(os.listdir(os.path.join(out + ".partial", "programs")))
    assert len(kept) == 8
    seen.clear()
    table = measure_latency_table(space_file, out, settings, lambda phase, done, total: seen.append((phase, done)))
    assert seen[0] == ("export", 8)  # resumed after the chunk already exported
    assert not os.path.exists(out + ".partial") and table.data["runtime"] == "onnxruntime"
    assert len(table.entries) == len(space_configs(build_supernet(space_file, num_classes=10, in_chans=1)))
    data = open(out, "rb").read()
    again = []
    measure_latency_table(space_file, out, settings, lambda *a: again.append(a))
    assert again == [] and open(out, "rb").read() == data  # reused, not rebuilt
    with pytest.raises(LatencyTableError, match="other settings .*rounds 3 \\(asked: 5\\)"):
        measure_latency_table(space_file, out, LatencySettings(**{**FAST, "runtime": "onnxruntime", "rounds": 5}))
    assert open(out, "rb").read() == data


def grid_space_table(tmp_path, held_out: int):
    """A table of the test space with 3 resolutions and 3 widths in grid mode (2 points per axis,
    so the middle ones are interpolated), ``held_out`` configurations off the grid: ``(net, table)``."""
    space = json.loads(json.dumps(SPACE))
    space["search"]["resolution"] = [8, 12, 16]
    space["blocks"][1][0][4]["channels"] = [8, 12, 16]
    path = tmp_path / "grid_space.json"
    path.write_text(json.dumps(space))
    net = build_supernet(str(path), num_classes=10, in_chans=1)
    settings = LatencySettings(**{**FAST, "max_configs": 10, "grid_points": (2, 2, 2, 2), "held_out": held_out})
    return net, measure_latency_table(str(path), str(tmp_path / "grid.json"), settings)


def test_grid_mode_interpolates_and_measures_its_error_on_held_out_configurations(tmp_path):
    """More configurations than --max-configs: per block a grid of 2 values per axis (3 widths and 3
    sizes in this space, so the middle ones are interpolated), held-out configurations timed off it."""
    net, table = grid_space_table(tmp_path, held_out=12)
    d = table.data
    assert d["mode"] == "grid" and d["configs_total"] > 10 and d["grids"]
    assert set(d["entries"]) == {p.key for g in table.grids for p in g.points()} and len(d["held_out"]) == 12
    assert all(len(values) <= 2 for g in table.grids for values in g.axes.values())
    assert not set(d["held_out"]) & set(d["entries"])
    err = d["interpolation_error"]
    assert err["configs"] == 12 and 0 <= err["mape_block"] < 1000 and err["p90_block"] <= err["max_block"]
    budget = table.budget_table(net)  # every architecture gets a latency, through the grids
    lo, hi = budget.extremes()
    assert 0 < lo < hi
    # on a grid's own points, the interpolation returns the measured entry
    grid = table.grids[0]
    point = grid.points()[-1]
    assert predict_config(table, grid.block, point) == pytest.approx(
        max(d["entries"][point.key][table.stat] - table.overhead_ms, 0.0)
    )
    # an fp32 table reads hidden widths padded toward their tile, and says so; --refit of a table built
    # before (no "interpolation": widths as they are) reads it so too, and recomputes the held-out error
    # (12 held-out configurations: too few to choose between readings, the default)
    assert d["interpolation"] == interpolation_for(False) == PADDED_FP32 and interpolation_for(True) == PLAIN
    assert not d["interpolation_choice"]["chosen"] and "fewer than" in d["interpolation_choice"]["why"]
    old = json.loads(json.dumps(d))
    del old["interpolation"]
    src, out = tmp_path / "old_grid.json", tmp_path / "refit_grid.json"
    src.write_text(json.dumps(old))
    assert LatencyTable.load(str(src)).interpolation == PLAIN
    assert load_tool("latency_table").main(["--refit", str(src), "--out", str(out)]) == 0
    new = LatencyTable.load(str(out))
    assert new.interpolation == PADDED_FP32 and new.data["refitted"][-1]["interpolation_before"] == PLAIN
    assert new.data["interpolation_error"] == d["interpolation_error"]  # what the build measured, read again


def test_a_grid_table_reads_its_points_as_its_held_out_timings_say(tmp_path, monkeypatch):
    """choose_interpolation: held-out timings made to follow a padded reading of the grid's own
    entries are read with a reading that reproduces them (error ~0, cross-validated too), where the
    plain reading misses them; too few held-out configurations keep the default reading."""
    net, table = grid_space_table(tmp_path, held_out=40)
    assert len(table.data["held_out"]) == 40 and table.data["interpolation_choice"]["chosen"]
    held_out = [config_from_key(k) for k in table.data["held_out"]]
    owner = first_blocks(net)
    truth = {
        "padded": {
            "hidden": {"tile": 32, "share": 0.8},
            "c_out": {"tile": 16, "share": 0.5},
            "size": {"tile": 7, "share": 0.95},
        }
    }
    data = json.loads(json.dumps(table.data))
    follows = LatencyTable({**data, "interpolation": truth})
    for c in held_out:
        data["held_out"][c.key][table.stat] = predict_config(follows, owner[c.key], c) + table.overhead_ms
    monkeypatch.setattr(measure, "MIN_HELD_OUT_TO_CHOOSE", 4)
    reading, how, error = measure.choose_interpolation(data, net, held_out)
    # the plain reading misses (by how much depends on this machine's timings of the grid: 0.035-0.1%
    # seen), the chosen one reproduces them, cross-validated too
    assert how["chosen"] and how["plain"]["mape_block"] > 0.005
    assert how["cross_validated"]["mape_block"] < 1e-6
    chosen = measure.interpolation_error(LatencyTable({**data, "interpolation": reading}), net, held_out)
    assert error == chosen  # the error it returns is the chosen reading's, recomputed from scratch
    # in this space only the pixels tell the readings apart (widths 8-16): their tile is found
    assert chosen["max_block"] < 1e-6 and reading["padded"]["size"] == truth["padded"]["size"]


def test_widths_are_read_padded_toward_their_tile():
    """w + share * (ceil(w / tile) * tile - w): multiples of the tile stay, the rest rise toward the
    next one; strictly increasing (interpolation needs that), and as they are without a tile."""
    w = torch.arange(8, 1025, 8)
    for axis, share in (("hidden", 0.8), ("c_out", 0.5)):
        assert PADDED_FP32["padded"][axis] == {"tile": 32, "share": share}
        padded = _axis_coordinate(axis, w, PADDED_FP32)
        assert (padded[1:] > padded[:-1]).all()
        assert padded[w % 32 == 0].tolist() == w[w % 32 == 0].double().tolist()
    assert _axis_coordinate("hidden", torch.tensor([72, 88]), PADDED_FP32).tolist() == pytest.approx([91.2, 94.4])
    assert _axis_coordinate("hidden", w, PLAIN).tolist() == w.double().tolist()
    assert _axis_coordinate("c_in", w, PADDED_FP32).tolist() == w.double().tolist()  # not padded
    assert _axis_coordinate("size", torch.tensor([8]), PADDED_FP32).tolist() == [64.0]
    # a size reads its pixels, padded toward a tile of pixels (XNNPACK's GEMM rows) where asked
    rows_of_7 = {"padded": {"size": {"tile": 7, "share": 0.95}}}
    assert _axis_coordinate("size", torch.tensor([4, 5, 6, 7]), rows_of_7).tolist() == pytest.approx(
        [16 + 0.95 * 5, 25 + 0.95 * 3, 36 + 0.95 * 6, 49]
    )


def test_a_table_with_a_bad_interpolation_is_refused_by_name(table, tmp_path):
    bad_ones = (
        {"padded": {"hidden": {"tile": 32, "share": 1.0}}},
        {"padded": {"hidden": {"tile": -8, "share": 0.5}}},
        {"padded": {"classes": {"tile": 8, "share": 0.5}}},
        {"hidden_tile": 32},
        "padded",
    )
    for bad in bad_ones:
        data = json.loads(json.dumps(table.data))
        data["interpolation"] = bad
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(data))
        with pytest.raises(LatencyTableError, match="interpolation .* is not of the form"):
            LatencyTable.load(str(path))


# ---- bad input ----------------------------------------------------------------------------------
def test_a_table_of_another_space_resolution_runtime_or_thread_count_is_refused(table, space_file, net, tmp_path):
    want = {"runtime": "eager", "int8": False, "threads": 1}
    table.check(space_file, SPACE, net, want)  # the right one passes
    table.check(space_file, SPACE, net, {})  # a table given by hand (tools/derive.py --table): any runtime
    other = json.loads(json.dumps(SPACE))
    other["blocks"][1][0][4]["channels"] = [8, 12]
    with pytest.raises(LatencyTableError, match="was built for space .*digest.*build the right one: python tools/"):
        table.check("other.json", other, build_supernet(other, num_classes=10, in_chans=1), want)
    wider = json.loads(json.dumps(SPACE))
    wider["search"]["resolution"] = [8, 12, 16]
    with pytest.raises(LatencyTableError, match=r"without \[12\]"):
        table.check(space_file, SPACE, build_supernet(wider, num_classes=10, in_chans=1), want)
    with pytest.raises(LatencyTableError, match="runtime eager .*LATENCY_RUNTIME executorch.*--runtime executorch"):
        table.check(space_file, SPACE, net, {**want, "runtime": "executorch"})
    with pytest.raises(LatencyTableError, match="1 thread.*LATENCY_THREADS 4.*--threads 4"):
        table.check(space_file, SPACE, net, {**want, "threads": 4})
    with pytest.raises(LatencyTableError, match="10 classes"):
        table.check(space_file, SPACE, build_supernet(space_file, num_classes=3, in_chans=1), want)


def test_truncated_corrupt_or_incomplete_tables_are_refused_by_name(table, tmp_path, net):
    text = open(table.path).read()
    cases = {
        "truncated.json": text[: len(text) // 2],
        "list.json": "[1, 2]",
        "no_entries.json": json.dumps({k: v for k, v in table.data.items() if k != "entries"}),
        "nan.json": text.replace('"ms": ', '"ms": -', 1),
    }
    for name, body in cases.items():
        (tmp_path / name).write_text(body)
        with pytest.raises(LatencyTableError, match=name):
            LatencyTable.load(str(tmp_path / name))
    with pytest.raises(LatencyTableError, match="does not exist.*tools/latency_table.py"):
        LatencyTable.load(str(tmp_path / "none.json"))
    with pytest.raises(LatencyTableError, match="is a folder"):
        LatencyTable.load(str(tmp_path))
    missing = json.loads(text)
    key = sorted(missing["entries"])[0]
    del missing["entries"][key]
    (tmp_path / "missing.json").write_text(json.dumps(missing))
    with pytest.raises(LatencyTableError, match=f"no entry for .*{key.split('|')[0]}.*build the right one"):
        LatencyTable.load(str(tmp_path / "missing.json")).budget_table(net)


def test_a_runtime_that_is_not_installed_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "executorch", None)  # import executorch now raises ImportError
    with pytest.raises(RuntimeUnavailableError, match=r"executorch.*pip install 'fbnetv2-dmasking\[executorch\]'"):
        check_runtime("executorch")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(RuntimeUnavailableError, match=r"pip install 'fbnetv2-dmasking\[onnx\]'"):
        check_runtime("onnxruntime")
    with pytest.raises(RuntimeUnavailableError, match="int8 .* ExecuTorch"):
        check_runtime("eager", int8=True)


# ---- the tool -----------------------------------------------------------------------------------
def load_tool(name="latency_table"):
    """``tools/<name>.py`` as a module (its ``main(argv)`` runs in this process)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_builds_then_reuses_and_ends_with_the_range(space_file, table, tmp_path, capfd):
    tool = load_tool()
    out = tmp_path / "tool.json"
    shutil.copy(table.path, out)  # a finished table of these settings: reused
    args = [space_file, "--runtime", "eager", "--num-classes", "10", "--in-chans", "1", "--rounds", "3"]
    args += ["--calibration-models", "12", "--settle-calls", "1"]
    assert tool.main([*args, "--warmup", "1", "--chunk", "32", "--out", str(out)]) == 0
    lines = capfd.readouterr().out.strip().splitlines()
    assert "whole models: model = call cost + " in lines[-2] and "12 calibration models" in lines[-2]
    lo, hi = table_range_of(table)
    assert lines[-1] == f"range: {lo:.4g}..{hi:.4g} ms"
    assert open(out).read() == open(table.path).read()


def table_range_of(table):
    net = build_supernet(table.data["space"], num_classes=10, in_chans=1)
    return table.budget_table(net).extremes()


def test_tool_refuses_bad_settings_in_one_line_and_touches_nothing(space_file, table, tmp_path, capfd):
    tool = load_tool()
    out = tmp_path / "t.json"
    shutil.copy(table.path, out)
    before = out.read_bytes()
    base = [space_file, "--runtime", "eager", "--num-classes", "10", "--in-chans", "1"]
    cases = [
        ([*base, "--threads", "2", "--out", str(out)], "other settings"),  # another thread count: refused
        ([*base, "--out", str(tmp_path)], "is a folder"),
        (["mnist_small_spac", "--runtime", "eager", "--out", str(tmp_path / "x.json")], "mnist_small_space"),
        (["FBNetV2_F1", "--runtime", "eager", "--out", str(tmp_path / "x.json")], "not a search space"),
    ]
    for argv, words in cases:
        capfd.readouterr()
        assert tool.main(argv) == 2
        err = capfd.readouterr().err
        assert "Traceback" not in err and words in err, err
        assert len([line for line in err.splitlines() if "error:" in line]) == 1
    assert out.read_bytes() == before
    for flag in (["--threads", "0"], ["--rounds", "-1"], ["--grid-points", "1", "2", "2", "2"], ["--warmup", "-2"]):
        with pytest.raises(SystemExit) as e:
            tool.main([*base, "--out", str(tmp_path / "y.json"), *flag])
        assert e.value.code == 2


@pytest.mark.skipif(not __import__("importlib").util.find_spec("executorch"), reason="executorch not installed")
def test_executorch_table_of_a_small_space(tmp_path, monkeypatch):
    """The default runtime: XNNPACK programs run by ExecuTorch, exported in worker processes; a
    program cache makes a second build export nothing."""
    micro = {
        "input_size": 16,
        "search": {"resolution": [16]},
        "blocks": [
            [["masked-channel", 8, 2, 1, {"op": "conv_k3_hs", "channels": [4, 8]}]],
            [["choice", 8, 1, 1, {"ops": ["ir_k3", "skip"], "channels": [8], "expansion": [2]}]],
        ],
    }
    path = tmp_path / "micro.json"
    path.write_text(json.dumps(micro))
    settings = LatencySettings(runtime="executorch", num_classes=10, in_chans=1, rounds=3, warmup=1, jobs=2)
    cache = tmp_path / "cache"
    measurement = TableMeasurement(str(path), str(tmp_path / "et.json"), settings, cache_dir=str(cache))
    table = measurement.run()
    assert table.data["runtime"] == "executorch" and "executorch" in table.data["versions"]
    assert len(table.entries) == len(space_configs(measurement.net))
    budget = table.budget_table(measurement.net)
    index = {label: 0 for label in measurement.net.choices}
    assert budget.exact(index) > table.overhead_ms > 0
    # a second build with the same cache exports nothing (every program is taken from the cache)
    import mobile_cv.latency.measure as build_module_

    def no_export(args):
        raise AssertionError(f"{args[2]} exported again")

    monkeypatch.setattr(build_module_, "_compile_one", no_export)
    again = TableMeasurement(str(path), str(tmp_path / "again.json"), settings, cache_dir=str(cache)).run()
    assert again.entries.keys() == table.entries.keys() and len(os.listdir(cache)) >= len(table.entries)


def test_latency_search_cost_keys_are_checked_before_anything_is_written(space_file, table, tmp_path):
    from mobile_cv.config import ConfigError
    from mobile_cv.engine import setup_cfg

    with pytest.raises(ConfigError, match="LATENCY_TABLE is empty.*tools/latency_table.py"):
        setup_cfg("", ["SEARCH.SPACE", space_file, "SEARCH.COST.KIND", "latency"], arch_key="SEARCH.SPACE")
    with pytest.raises(ConfigError, match="LATENCY_THREADS must be an int in \\[1, 1024\\]"):
        setup_cfg("", ["SEARCH.COST.LATENCY_THREADS", "0"], arch_key="SEARCH.SPACE")
    with pytest.raises(ConfigError, match="LATENCY_RUNTIME must be one of"):
        setup_cfg("", ["SEARCH.COST.LATENCY_RUNTIME", "tflite"], arch_key="SEARCH.SPACE")


def mid_budget(table, net) -> float:
    """A budget 40% of the way across the space's range by ``table``."""
    lo, hi = table.budget_table(net).extremes()
    return round(lo + 0.4 * (hi - lo), 4)


def latency_search_argv(space_file, table, target, out, images: int):
    """tools/search.py's argv for a 2-epoch latency-budgeted digits search (eager); OUTPUT_DIR last."""
    return [
        "--config-file", os.path.join(ROOT, "configs", "search_embedded_mnist.yaml"),
        "SEARCH.SPACE", space_file, "DATA.INPUT_SIZE", "16", "DATA.LIMIT", str(images), "SEARCH.BATCH_SIZE", "32",
        "SEARCH.EPOCHS", "2", "SEARCH.WARMUP_EPOCHS", "1", "SEARCH.COST.KIND", "latency",
        "SEARCH.COST.LATENCY_TABLE", table.path, "SEARCH.COST.LATENCY_RUNTIME", "eager",
        "SEARCH.COST.TARGET", str(target), "SEARCH.COST.TOLERANCE", "0.1", "OUTPUT_DIR", str(out),
    ]  # fmt: skip


def test_latency_budgeted_search_end_to_end(space_file, table, net, tmp_path, capfd):
    """tools/search.py with SEARCH.COST.KIND latency on the digits: the derived architecture's
    latency by the table (search.json's derived_latency_ms) is within TOLERANCE of the ms budget."""
    target, out = mid_budget(table, net), tmp_path / "search"
    argv = latency_search_argv(space_file, table, target, out, images=96)
    assert load_tool("search").main(argv) == 0, capfd.readouterr().err[-3000:]
    summary = json.load(open(out / "search.json"))
    assert summary["cost_kind"] == "latency" and abs(summary["derived_latency_ms"] / target - 1) <= 0.1
    arch = json.load(open(out / "arch_def.json"))
    assert summary["derived_latency_ms"] == pytest.approx(prediction_of(table, arch), rel=1e-9)
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert all("expected_latency" in r and "derived_latency_ms" in r for r in records)
    printed = capfd.readouterr()
    assert "ms by the latency table" in printed.out
    both = printed.out + printed.err
    assert f"latency table {table.path!r} d" in both  # the start-up check's line, whatever it found
    assert "describes this machine" in both or "does not describe this machine" in both
    assert (out / "cost_accuracy.png").exists()

    # a table of another runtime: refused before anything is written
    bad = tmp_path / "refused"
    argv[argv.index("eager")] = "executorch"
    argv[argv.index(str(out))] = str(bad)
    capfd.readouterr()
    assert load_tool("search").main(argv) == 2
    err = capfd.readouterr().err
    assert "LATENCY_RUNTIME executorch" in err and "Traceback" not in err and not bad.exists()


@pytest.mark.parametrize("config", ["search_embedded_mnist_latency.yaml", "search_imagenet_latency.yaml"])
def test_shipped_latency_configs_name_a_table_that_serves_them(config):
    """The shipped tables (measured on this project's machine) fit their configs, and each config's
    budget is one the space can meet."""
    from mobile_cv.engine import setup_cfg
    from mobile_cv.search.cost_kinds import cost_kind

    cfg = setup_cfg(os.path.join(ROOT, "configs", config), arch_key="SEARCH.SPACE")
    net = build_supernet(cfg.SEARCH.SPACE, num_classes=cfg.MODEL.NUM_CLASSES, in_chans=cfg.MODEL.IN_CHANS)
    table = cost_kind("latency").load(cfg, net)
    lo, hi = table.budget_table(net).extremes()
    assert lo < cfg.SEARCH.COST.TARGET < hi
    assert table.data["runtime"] == cfg.SEARCH.COST.LATENCY_RUNTIME == "executorch"


def test_fbnet_form_is_refused_where_every_cost_is_below_one(space_file, table, tmp_path, capfd):
    """FBNet's CE * a * log(cost) ** b: sub-millisecond latencies would all clamp at log(1)."""
    data = json.loads(open(table.path).read())  # the measured table, scaled so no architecture reaches 1 ms
    scale = 0.01 / max(e["ms"] for e in data["entries"].values())  # even on a slow, loaded machine
    for e in [*data["entries"].values(), data["overhead_ms"]]:
        e.update({k: v * scale for k, v in e.items() if isinstance(v, float)})
    small = tmp_path / "small_table.json"
    small.write_text(json.dumps(data))
    argv = [
        "--config-file", os.path.join(ROOT, "configs", "search_embedded_mnist.yaml"),
        "SEARCH.SPACE", space_file, "DATA.INPUT_SIZE", "16", "DATA.LIMIT", "96", "SEARCH.BATCH_SIZE", "32",
        "SEARCH.COST.KIND", "latency", "SEARCH.COST.LATENCY_TABLE", str(small),
        "SEARCH.COST.LATENCY_RUNTIME", "eager", "SEARCH.COST.FORM", "fbnet", "SEARCH.COST.TARGET", "0",
        "OUTPUT_DIR", str(tmp_path / "o"),
    ]  # fmt: skip
    capfd.readouterr()
    assert load_tool("search").main(argv) == 2
    err = capfd.readouterr().err
    assert "FORM fbnet takes log(cost)" in err and "ms" in err and "Traceback" not in err


def test_latency_prediction_benchmark_runs_on_a_table(table, net, tmp_path):
    """benchmarks/latency_prediction.py end to end at tiny settings (eager): every model timed, the
    figures it prints are the ones it writes."""
    import subprocess

    out = tmp_path / "points.json"
    # one given architecture (as a search's arch_def.json), timed beside the draw and kept out of its figures
    from mobile_cv.search.budget import sample_uniform

    batch = sample_uniform(net, 1, torch.Generator().manual_seed(3))
    given_index = {k: int(v[0]) for k, v in batch.items()}
    given = tmp_path / "arch_def.json"
    given.write_text(json.dumps(net.derive_arch(net.one_hot(given_index))))
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "latency_prediction.py"), "--table", table.path]
    cmd += ["--n", "4", "--rounds", "2", "--warmup", "1", "--jobs", "1", "--refit-models", "6", "--json", str(out)]
    cmd += ["--arch", str(given)]
    p = subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert p.returncode == 0, p.stderr[-2000:]
    (result,) = json.loads(out.read_text())
    assert len(result["models"]) == 4 and all(m["measured"] > 0 and m["predicted"] > 0 for m in result["models"])
    assert -1 <= result["spearman"] <= 1 and result["mape"] >= 0
    for key in ("mape", "spearman", "within_10", "drift", "mape_corrected", "spearman_corrected"):
        assert math.isfinite(result[key]), key
    assert {"within_10_corrected", "mape_same_run", "within_10_same_run"} <= set(result)
    assert all(m["index"] not in [r["index"] for r in table.data["calibration"]["models"]] for m in result["models"])
    assert (
        f"(a) the table as stored: mean abs error {result['mape']:.1f}%, Spearman {result['spearman']:.3f}" in p.stdout
    )
    assert f"(b) drift by the table's probes: {result['drift']:.3f}" in p.stdout
    # (c): each model times the model probe of its own input size
    by_size = "(each model x its input size's model probe)"
    assert f"(c) after the drift correction {by_size}: mean abs error {result['mape_corrected']:.1f}%" in p.stdout
    for m in result["models"]:
        assert m["drift"] == result["probes"][f"model {m['size']}px"]
        assert m["corrected"] == pytest.approx(m["predicted"] * m["drift"], rel=1e-12)
    assert f"mean abs error {result['mape_same_run']:.1f}%" in p.stdout
    # (d) recalibrated on the table's own model probes (calibration models), one factor per input size
    factors = result["same_run_factors"]
    assert set(factors) == {str(r["arch"]["input_size"]) for r in table.data["calibration"]["models"]}
    for m in result["models"]:
        assert m["same_run"] == pytest.approx(m["same_run_raw"] * factors[str(m["size"])], rel=1e-12)
    assert "(d) recalibrated on the table's model probes timed now (" in p.stdout
    assert f"mean abs error {result['mape_same_run_raw']:.1f}%" in p.stdout
    # (d) refitted and (e): the correction fitted again on 6 calibration models timed in the run; (e)
    # applies it to the stored table's block sums, read here independently of the benchmark
    from mobile_cv.latency.calibration import Correction

    assert result["refit_models"] == 6 and "(d) refitted on 6 of its calibration models" in p.stdout
    c = Correction.from_dict(result["correction_recalibrated"])
    assert c.models == 6 and "(e) its stored blocks, the correction refitted on 6" in p.stdout
    blocks = table.blocks_table(net)
    for m in result["models"]:
        stored = blocks.exact(m["index"])
        want = c.predict(result["call_now"], stored, m["mparams"], m["small"], m["mparams_l2"])
        assert m["recalibrated"] == pytest.approx(want, rel=1e-4)  # the JSON rounds the terms to 6 digits
        assert m["same_run_refit"] > 0
    assert f"mean abs error {result['mape_recalibrated']:.1f}%" in p.stdout
    (g,) = result["given"]
    assert g["given"] == str(given) and g["index"] == net.encode(json.loads(given.read_text()))
    assert g["measured"] > 0 and g["predicted"] == pytest.approx(table.budget_table(net).exact(g["index"]), rel=1e-9)
    assert {"corrected", "same_run", "same_run_refit", "recalibrated"} <= set(g)
    assert f"{100 * (g['corrected'] / g['measured'] - 1):+.1f}%" in p.stdout.split("--arch models")[1]


def test_cache_share_benchmark_reads_every_size_and_names_the_edge():
    """benchmarks/cache_share.py at two small sizes: a line per size, and the last line's verdict."""
    import subprocess

    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "cache_share.py"), "--sizes", "1", "4", "8"]
    p = subprocess.run(cmd + ["--rounds", "2"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [line.split() for line in p.stdout.splitlines()[1:-1]]
    assert [r[0] for r in rows] == ["1", "4", "8"] and all(float(r[1]) > 0 for r in rows)
    last = p.stdout.splitlines()[-1]
    assert last.startswith("cache share:") or last.startswith("every size up to 8 MB read at cache speed")
    bad = ((["--sizes", "0"], "--sizes [0]"), (["--rounds", "0"], "--rounds 0"), (["--drop", "2"], "--drop"))
    for flags, want in bad:
        p = subprocess.run(cmd[:2] + flags, capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and want in p.stderr and "Traceback" not in p.stderr, (flags, p.stderr)


def test_latency_prediction_benchmark_refuses_bad_refit_models_and_missing_tables(table, tmp_path):
    """--refit-models below the fit's minimum, a table that is no table, an --arch that is no arch def,
    --export-only without a cache or of an eager table (nothing to keep), a --cache that is a file:
    one line each, no traceback."""
    import subprocess

    script = [sys.executable, os.path.join(ROOT, "benchmarks", "latency_prediction.py")]
    for flags, want in (
        (["--table", "t.json", "--refit-models", "-1"], "--refit-models -1: 0 (skip) or at least 4"),
        (["--table", "t.json", "--refit-models", "2"], "--refit-models 2: 0 (skip) or at least 4"),
        (["--table", str(tmp_path)], "is a folder, not a table file"),
        (["--table", str(tmp_path / "none.json")], "does not exist"),
        (["--table", table.path, "--arch", str(tmp_path / "no.json")], f"--arch {tmp_path / 'no.json'}: cannot read"),
        (["--table", table.path, "--export-only"], "--export-only keeps the programs in --cache DIR"),
        (["--table", table.path, "--export-only", "--cache", str(tmp_path)], "is an eager table"),
        (["--table", table.path, "--cache", table.path], f"--cache {table.path} is a file, not a folder"),
    ):
        p = subprocess.run(script + flags, capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert p.returncode != 0 and want in p.stderr and "Traceback" not in p.stderr, (flags, p.stderr[-500:])


# ---- whole-model correction, probes, check and rescale ------------------------------------------
def test_fit_correction_recovers_the_terms_and_never_fits_a_negative_cost():
    from mobile_cv.latency.calibration import fit_correction

    g = torch.Generator().manual_seed(0)
    blocks = (torch.rand(24, generator=g) * 3 + 1).tolist()
    mparams = (torch.rand(24, generator=g) * 4 + 2).tolist()
    y = [0.2 + 1.1 * b + 0.15 * w + 0.002 * float(torch.randn(1, generator=g)) for b, w in zip(blocks, mparams)]
    c = fit_correction(blocks, mparams, y)
    assert set(c.form) >= {"scale", "per_mparam"} and c.models == 24 and c.loo_mape < 1
    assert c.scale == pytest.approx(1.1, rel=0.02) and c.per_mparam == pytest.approx(0.15, rel=0.1)
    # whole models faster the more weights they have: no form with a negative term is taken
    c = fit_correction(blocks, mparams, [1.0 * b - 0.2 * w + 2 for b, w in zip(blocks, mparams)])
    assert c.per_mparam >= 0 and c.constant >= 0 and c.scale >= 0
    assert fit_correction([1.0], [1.0], [1.0]).form == ()  # too few models: the plain sum


def test_fit_correction_finds_a_hinge_in_the_models_weights_and_only_where_it_pays():
    """Whole models that pay for their weights only past a knot (a cache's worth): the hinge is chosen,
    its knot among the models' quantiles and its slope recovered; on data without one it is not taken
    (the margin it must beat the other forms by), and a knot always leaves models on both sides."""
    from mobile_cv.latency.calibration import HINGE_MIN_GAIN, MIN_SIDE, fit_correction, knots

    g = torch.Generator().manual_seed(2)
    blocks = (torch.rand(40, generator=g) * 3 + 1).tolist()
    mparams = (torch.rand(40, generator=g) * 6 + 4).tolist()
    noise = [0.003 * float(torch.randn(1, generator=g)) for _ in blocks]
    y = [1.05 * b + 0.3 * max(0.0, w - 6.5) + e for b, w, e in zip(blocks, mparams, noise)]
    c = fit_correction(blocks, mparams, y)
    assert "per_mparam_over" in c.form and c.loo_mape < 1
    assert c.mparam_knot == pytest.approx(6.5, abs=0.7) and c.per_mparam_over == pytest.approx(0.3, rel=0.25)
    slope = c.per_mparam + c.per_mparam_over  # per_mparam: 0 or a small part the fit gave the whole range
    assert c.predict(0.0, blocks[0], 9.0) - c.predict(0.0, blocks[0], 8.0) == pytest.approx(slope)
    assert c.predict(0.0, blocks[0], 4.0) == pytest.approx(c.scale * blocks[0] + 4 * c.per_mparam)  # below the knot
    linear = [1.05 * b + 0.1 * w + e for b, w, e in zip(blocks, mparams, noise)]
    plain = fit_correction(blocks, mparams, linear)
    assert "per_mparam_over" not in plain.form and plain.per_mparam == pytest.approx(0.1, rel=0.1)
    assert HINGE_MIN_GAIN > 0
    w = torch.tensor(mparams, dtype=torch.float64)
    for k in knots(w):
        assert int((w < k).sum()) >= MIN_SIDE and int((w > k).sum()) >= MIN_SIDE
    assert knots(w[:5]) == []  # too few models for a knot with three on each side


def test_rescale_scales_the_hinge_with_the_other_millisecond_terms(hinged, net, tmp_path):
    from mobile_cv.latency.probes import rescale_table

    out = tmp_path / "x2.json"
    rescale_table(hinged, {"drift": 2.0, "probes": {}}, str(out))
    doubled = LatencyTable.load(str(out))
    assert doubled.correction.per_mparam_over == pytest.approx(2 * hinged.correction.per_mparam_over, rel=1e-6)
    assert doubled.correction.mparam_knot == hinged.correction.mparam_knot  # M params, not milliseconds
    a, b = hinged.budget_table(net), doubled.budget_table(net)
    g = torch.Generator().manual_seed(4)
    for _ in range(6):
        index = {label: int(torch.randint(c.size, (1,), generator=g)) for label, c in net.choices.items()}
        assert b.exact(index) == pytest.approx(2 * a.exact(index), rel=1e-5)


def test_fit_correction_finds_a_weights_cost_that_only_smaller_inputs_pay():
    """Whole models whose weights cost more at the smaller of two input sizes: the form with the
    ``per_mparam_small`` term is chosen and recovers it; with one input size it is never tried."""
    from mobile_cv.latency.calibration import fit_correction, smallness

    g = torch.Generator().manual_seed(1)
    blocks = (torch.rand(24, generator=g) * 3 + 1).tolist()
    mparams = (torch.rand(24, generator=g) * 4 + 2).tolist()
    small = [smallness(128 if j % 2 else 224, 224) for j in range(24)]
    y = [1.1 * b + 0.3 * w * s + 0.002 * float(torch.randn(1, generator=g)) for b, w, s in zip(blocks, mparams, small)]
    c = fit_correction(blocks, mparams, y, small)
    assert "per_mparam_small" in c.form and c.loo_mape < 1
    assert c.per_mparam_small == pytest.approx(0.3, rel=0.1) and c.scale == pytest.approx(1.1, rel=0.02)
    assert c.predict(0.01, blocks[1], mparams[1], small[1]) == pytest.approx(0.01 + y[1], rel=0.01)
    without = fit_correction(blocks, mparams, y)  # the sizes not given: the term cannot be fitted
    assert "per_mparam_small" not in without.form and without.loo_mape > c.loo_mape
    assert smallness(224, 224) == 0 and smallness(112, 224) == pytest.approx(0.75)


def test_fit_correction_finds_the_weights_cost_of_the_blocks_within_the_l2():
    """Whole models that pay, at the smaller input, for the weights of their blocks within the L2 only
    (blocks larger than it read their weights from farther when timed alone too): the form with the
    ``per_l2_mparam_small`` term is chosen and recovers it; without those parameters it is never tried."""
    from mobile_cv.latency.calibration import fit_correction, smallness

    g = torch.Generator().manual_seed(2)
    blocks = (torch.rand(32, generator=g) * 3 + 1).tolist()
    mparams = (torch.rand(32, generator=g) * 4 + 2).tolist()
    within = [w * float(torch.rand(1, generator=g)) for w in mparams]
    small = [smallness(128 if j % 2 else 224, 224) for j in range(32)]
    noise = [0.002 * float(torch.randn(1, generator=g)) for _ in range(32)]
    y = [1.1 * b + 0.5 * w2 * s + e for b, w2, s, e in zip(blocks, within, small, noise)]
    c = fit_correction(blocks, mparams, y, small, within)
    assert "per_l2_mparam_small" in c.form and c.loo_mape < 1
    assert c.per_l2_mparam_small == pytest.approx(0.5, rel=0.1) and c.scale == pytest.approx(1.1, rel=0.02)
    assert c.predict(0.01, blocks[1], mparams[1], small[1], within[1]) == pytest.approx(0.01 + y[1], rel=0.01)
    without = fit_correction(blocks, mparams, y, small)
    assert "per_l2_mparam_small" not in without.form and without.loo_mape > c.loo_mape


def test_the_parameters_within_the_l2_are_those_of_the_blocks_that_fit_it(table, net):
    from mobile_cv.latency.calibration import l2_bytes, l2_params_table, parse_cache_size
    from mobile_cv.search.budget import BudgetTable

    assert parse_cache_size("2048K") == 2 * 1024**2 and parse_cache_size("2M") == 2 * 1024**2
    assert parse_cache_size("512") == 512 and parse_cache_size("big") is None
    assert l2_bytes({"machine": {"caches": {"L2": "48K"}}}) == 48 * 1024 and l2_bytes({"machine": {}}) is None
    params = BudgetTable(net, "params")
    index = {label: c.size - 1 for label, c in net.choices.items()}  # the widest architecture
    total = params.exact(index)
    assert l2_params_table(params, 1 << 40, 4).exact(index) == pytest.approx(total)  # every block fits
    assert l2_params_table(params, 0, 4).exact(index) == 0.0  # none does
    assert 0 < l2_params_table(params, 2 * 1024, 4).exact(index) < total  # the 2 KB of `corrected`: some fit
    assert params.exact(index) == total  # the source table untouched


def test_refit_writes_a_copy_with_the_correction_fitted_again_and_keeps_the_old_one(table, tmp_path, capsys):
    """--refit TABLE --out NEW: the correction fitted from the stored calibration timings (a table
    whose correction was tampered with gets the fit back), the previous one kept; the source is
    never overwritten and an existing --out is refused."""
    tool = load_tool("latency_table")
    data = json.loads(json.dumps(table.data))
    fitted = data["correction"]
    data["correction"] = Correction(0.5, 2.0, 0.0, ("constant", "scale")).to_dict()
    src, out = tmp_path / "t.json", tmp_path / "refit.json"
    src.write_text(json.dumps(data))
    source_text = src.read_text()
    assert tool.main(["--refit", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "before: model = call cost + 0.5 ms + 2 x blocks" in printed and f"{out}: {src}" in printed
    new = json.loads(out.read_text())
    assert new["correction"]["form"] == fitted["form"] and new["refitted"][0]["before"]["scale"] == 2.0
    assert {k: v for k, v in new["correction"].items() if k != "form"} == pytest.approx(
        {k: v for k, v in fitted.items() if k != "form"}
    )
    assert new["entries"] == data["entries"] and src.read_text() == source_text  # the source untouched
    assert tool.main(["--refit", str(src), "--out", str(out)]) != 0  # exists: refused
    assert "exists; nothing was changed" in capsys.readouterr().err
    assert tool.main(["--refit", str(src), "--out", str(src)]) != 0
    del data["calibration"]
    src.write_text(json.dumps(data))
    assert tool.main(["--refit", str(src), "--out", str(tmp_path / "other.json")]) != 0
    assert "no calibration models" in capsys.readouterr().err and not (tmp_path / "other.json").exists()


def test_a_calibrated_table_keeps_its_calibration_set_correction_and_probes(table, net):
    d = table.data
    assert d["format"] == "mobile_cv.latency_table/2" and table.calibrated
    assert "calibration models" in d["method"] and d["machine"]["cores"] >= 1 and d["machine"]["cpu"]
    rows = d["calibration"]["models"]
    assert len(rows) >= 8 and {r["index"]["resolution"] for r in rows} == {0, 1}  # every resolution
    for r in rows[:3]:  # each row's features are the table's own, its arch the architecture of its index
        assert r["arch"] == json.loads(json.dumps(net.derive_arch(net.one_hot(r["index"]))))
        assert r["blocks_ms"] == pytest.approx(table.blocks_table(net).exact(r["index"]), rel=1e-9)
        assert r["ms"] > 0 and r["q1"] <= r["ms"] <= r["q3"]
    assert set(d["probes"]) == {"call", "compute", "memory", "model 8px", "model 16px"}  # a model per input size
    assert d["probes"]["compute"]["ms"] == d["entries"][d["probes"]["compute"]["key"]]["ms"]
    for size in (8, 16):
        row = rows[d["probes"][f"model {size}px"]["calibration"]]
        assert d["probes"][f"model {size}px"]["q1"] == row["q1"] and row["arch"]["input_size"] == size


def scaled_copy(table, path, factor, only=None):
    """The table as if built on a machine ``factor`` times slower (every time; or one probe, ``only``)."""
    from mobile_cv.latency.probes import rescale_table

    if only:
        data = json.loads(json.dumps(table.data))
        for k in ("ms", "q1", "q3", "min"):
            data["probes"][only][k] *= factor
        path.write_text(json.dumps(data))
        return str(path)
    rescale_table(table, {"drift": factor, "probes": {}}, str(path))
    data = json.loads(path.read_text())
    del data["rescaled"]
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture(scope="module")
def steady_table(space_file):
    """The table timed over more rounds than ``table``: probes steady enough to compare twice."""
    out = os.path.join(os.path.dirname(space_file), "steady.json")
    return measure_latency_table(space_file, out, LatencySettings(**{**FAST, "rounds": 15, "warmup": 3}))


def rebased_on_now(table, path):
    """``table`` with its probes' build-time timings replaced by theirs timed here now (the entries
    unchanged): a table timed in its process's first second and checked later can read its probes
    apart on some machines (CI, 2026-12-06: 0.59-0.75x in four checks in a row), which is the machine,
    not what the test is about."""
    from mobile_cv.latency.probes import check_table

    report = check_table(table, rounds=15, warmup=3)
    data = json.loads(json.dumps(table.data))
    for name, probe in data["probes"].items():
        factor = report["probes"][name]["now_ms"] / probe[table.stat]
        for k in ("ms", "q1", "q3", "min"):
            probe[k] *= factor
    path.write_text(json.dumps(data))
    return LatencyTable.load(str(path))


def check_drift(tool, table_path, capfd, *extra):
    """One ``--check`` of ``table_path``: (status, stdout, stderr, the drift it printed or None)."""
    status = tool.main(["--check", str(table_path), "--rounds", "15", *extra])
    captured = capfd.readouterr()
    last = captured.out.strip().splitlines()[-1] if captured.out.strip() else ""
    drift = float(last.removeprefix("drift: ")) if last.startswith("drift: ") else None
    return status, captured.out, captured.err, drift


def test_check_tells_a_table_of_another_machine_and_rescale_brings_it_back(steady_table, net, tmp_path, capfd):
    tool, table = load_tool(), rebased_on_now(steady_table, tmp_path / "here.json")
    slow = scaled_copy(table, tmp_path / "slow.json", 1.5)
    # The claim: a table built 1.5x slower reads 1/1.5 the drift of the original. The two drifts are
    # compared only as timed back to back: a shared machine can slow 2x between checks seconds apart
    # (CI, 2026-12-07: 1.04 then 1.47 for the 1.5x copy), so a pair off the band is timed again, up to
    # three pairs. A drift that ignored the table would read the same for both: ratio 1, outside the band.
    # A loaded machine can also time the probes apart (the check then says so and offers no rescale,
    # rightly); "does not describe" is held for the slow copy every time.
    for _ in range(3):
        status, out, _, drift = check_drift(tool, table.path, capfd)
        assert status in (0, 3) and ("describes this machine" in out) == (status == 0)
        status, out, _, slow_drift = check_drift(tool, slow, capfd)
        assert status == 3 and "does not describe this machine" in out
        if "moved apart" not in out and 1 / 1.5 / 1.4 < slow_drift / drift < 1 / 1.5 * 1.4:
            break
    assert "--rescale" in out, out
    assert 1 / 1.5 / 1.4 < slow_drift / drift < 1 / 1.5 * 1.4, (drift, slow_drift)

    fixed = tmp_path / "fixed.json"
    # probes timed apart make the tool refuse the rescale (and write nothing): retried as above; the
    # rescaled copy is compared with the original as checked just before it, as a pair
    for attempt in range(4):
        _, _, _, drift = check_drift(tool, table.path, capfd)
        status, out, err, rescale_drift = check_drift(tool, slow, capfd, "--rescale", str(fixed))
        if (status == 0 and abs(1.5 * rescale_drift / drift - 1) < 0.4) or attempt == 3:
            break
        if status == 0:  # written, but timed apart from its pair: timed again into a fresh file
            fixed.unlink()
        else:
            assert "moved apart" in err and not fixed.exists(), err
    assert status == 0, err
    rescaled = LatencyTable.load(str(fixed))
    assert rescaled.data["rescaled"][0]["source"] == slow
    a, b = table.budget_table(net), rescaled.budget_table(net)
    g = torch.Generator().manual_seed(5)
    for _ in range(6):
        index = {label: int(torch.randint(c.size, (1,), generator=g)) for label, c in net.choices.items()}
        # the slow copy (x 1.5) times the drift its check measured: exactly, whatever the machine did
        assert b.exact(index) / a.exact(index) == pytest.approx(1.5 * rescale_drift, rel=1e-3)  # printed to 4 digits
        # and like the original as timed just before (its own drift: 1 on a steady machine), within the noise
        assert b.exact(index) / a.exact(index) == pytest.approx(drift, rel=0.4)

    # the rescaled copy is never written over a file, and probes that moved apart get no rescale
    assert tool.main(["--check", slow, "--rounds", "2", "--rescale", str(fixed)]) == 2
    assert "exists" in capfd.readouterr().err
    apart = scaled_copy(table, tmp_path / "apart.json", 2.0, only="compute")
    assert tool.main(["--check", apart, "--rounds", "15", "--rescale", str(tmp_path / "no.json")]) == 2
    err = capfd.readouterr().err
    assert "moved apart" in err and "rebuild" in err and not (tmp_path / "no.json").exists()
    with pytest.raises(SystemExit) as stop:  # argparse: one line
        tool.main(["--check", table.path, "--out", str(tmp_path / "x.json")])
    assert stop.value.code == 2 and "--check TABLE takes no SPACE, --out" in capfd.readouterr().err


def models_slower_copy(table, path, factor):
    """``table`` as if its whole models had run ``factor`` times slower at build than its blocks say
    (calibration timings and model probes x factor, its correction fitted on them; blocks unchanged)."""
    from mobile_cv.latency.measure import calibrate, table_net

    data = json.loads(json.dumps(table.data))
    for r in data["calibration"]["models"]:
        r.update({k: r[k] * factor for k in ("ms", "q1", "q3", "min")})
    for p in data["probes"].values():
        if p["kind"] == "model":
            p.update({k: data["calibration"]["models"][p["calibration"]][k] for k in ("ms", "q1", "q3", "min")})
    calibrate(data, table_net(data, str(path)), str(path))
    path.write_text(json.dumps(data))
    return LatencyTable.load(str(path))


def test_recalibrate_refits_the_correction_on_the_whole_models_timed_here(steady_table, net, tmp_path, capfd):
    from mobile_cv.latency.measure import refit_table

    tool, here = load_tool(), rebased_on_now(steady_table, tmp_path / "here.json")
    slow = models_slower_copy(here, tmp_path / "slow.json", 1.5)
    stat = slow.stat
    out = tmp_path / "recalibrated.json"
    # the calibration models must read now / at build as the same check's drift (its model probes, built
    # 1.5x slow like them, timed in the same rounds). Held within one run: the copy's build timings are the
    # fixture's, timed minutes apart from the probes' re-base, and CI read the machine 4x apart between
    # those (2026-12-07: drift 0.46 against the models' 1.20 when compared with a separate check). A run off
    # the band is timed again, up to three; a ratio taken against the unslowed timings is 1.5x off in all.
    for attempt in range(3):
        status, printed, _, drift = check_drift(
            tool, slow.path, capfd, "--recalibrate", str(out), "--corner-models", "2"
        )
        assert status == 0, printed
        median = sorted(LatencyTable.load(str(out)).data["recalibrated"][0]["calibration_ratio"])
        median = median[len(median) // 2]
        if drift / 1.4 < median < drift * 1.4 or attempt == 2:
            break
        out.unlink()
    # the verdict offers the recalibration wherever the table (with calibration models) fails its check
    assert "does not describe" not in printed or "--recalibrate RECALIBRATED.json" in printed
    assert "before:" in printed and "after:" in printed and "recorded under 'recalibrated'" in printed
    new = LatencyTable.load(str(out))
    d, old = new.data, slow.data
    record = d["recalibrated"][0]
    assert record["source"] == slow.path and "recalibrated" in new.describe()
    # the blocks stay as built; the calibration models carry their timings now, the build's kept
    assert d["entries"] == old["entries"] and d["overhead_ms"] == old["overhead_ms"]
    rows, old_rows = d["calibration"]["models"], old["calibration"]["models"]
    assert [r["index"] for r in rows[: len(old_rows)]] == [r["index"] for r in old_rows]
    assert record["calibration_before"] == [[r[k] for k in ("ms", "q1", "q3", "min")] for r in old_rows]
    for r, o, ratio in zip(rows, old_rows, record["calibration_ratio"]):
        assert r[stat] / o[stat] == pytest.approx(ratio, abs=1e-4) and r["q1"] <= r["ms"] <= r["q3"]
    # the weight-heavy models asked for, appended (none a repeat), timed in the same rounds and in the fit
    added = rows[len(old_rows) :]
    assert 1 <= record["added"] == len(added) <= 4 and all(r["corner"] and r[stat] > 0 for r in added)
    assert len({json.dumps(r["index"], sort_keys=True) for r in rows}) == len(rows) == new.correction.models
    assert "weight-heavy models added" in printed
    # the models moved as the same check's drift says (noisy machine: rough size)
    assert drift / 1.4 < median < drift * 1.4, (drift, median)
    # probes re-based on now: the model probes are their calibration rows as timed now
    for name, p in d["probes"].items():
        if p["kind"] == "model":
            assert p[stat] == rows[p["calibration"]][stat]
        else:  # the others their own timings now
            assert p[stat] == pytest.approx(old["probes"][name][stat] * record["probes"][name], rel=2e-3)
    # the correction is the one fitted on the new timings (a refit of the copy changes nothing) ...
    before, after = refit_table(str(out), str(tmp_path / "refit.json"))
    assert before.to_dict() == after.to_dict()
    # ... and moves the predictions by what the models moved
    a, b = slow.budget_table(net), new.budget_table(net)
    g = torch.Generator().manual_seed(3)
    for _ in range(6):
        index = {label: int(torch.randint(c.size, (1,), generator=g)) for label, c in net.choices.items()}
        assert b.exact(index) / a.exact(index) == pytest.approx(median, rel=0.3)

    # nothing is written over a file; a table without calibration models names the rebuild
    assert tool.main(["--check", slow.path, "--rounds", "2", "--recalibrate", str(out)]) == 2
    assert "exists" in capfd.readouterr().err and LatencyTable.load(str(out)).data == d
    bare = json.loads(json.dumps(old))
    del bare["calibration"], bare["correction"]
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    assert tool.main(["--check", str(tmp_path / "bare.json"), "--recalibrate", str(tmp_path / "no.json")]) == 2
    err = capfd.readouterr().err
    assert "no calibration models" in err and "latency_table.py" in err and not (tmp_path / "no.json").exists()
    for argv in (
        ["--recalibrate", str(tmp_path / "x.json")],
        ["--check", slow.path, "--rescale", "a", "--recalibrate", "b"],
    ):
        with pytest.raises(SystemExit) as stop:
            tool.main(argv)
        assert stop.value.code == 2 and "--recalibrate OUT goes with --check TABLE" in capfd.readouterr().err
    with pytest.raises(SystemExit) as stop:
        tool.main(["--check", slow.path, "--corner-models", "2"])
    assert stop.value.code == 2 and "--corner-models N goes with" in capfd.readouterr().err


def test_corner_models_hold_more_weights_than_uniform_ones_at_every_size():
    from mobile_cv.latency.calibration import calibration_indices, corner_indices
    from mobile_cv.search.budget import BudgetTable

    net = build_supernet("fbnetv2_f_space", num_classes=1000, in_chans=3)
    params = BudgetTable(net, "params")
    corner, uniform = corner_indices(net, 6, seed=1), calibration_indices(net, 24, seed=1)
    assert [i["resolution"] for i in corner] == [r for r in range(4) for _ in range(6)]  # per input size, in turn
    heavy = sorted(params.exact(i) for i in corner)
    plain = sorted(params.exact(i) for i in uniform)
    assert heavy[len(heavy) // 2] > 1.15 * plain[len(plain) // 2]  # the corner: the most weights
    assert corner == corner_indices(net, 6, seed=1)  # seeded


def test_a_table_built_the_old_way_is_read_with_one_line_asking_for_a_rebuild(table, net, tmp_path, caplog):
    data = json.loads(json.dumps(table.data))
    data["format"] = "mobile_cv.latency_table/1"
    for key in ("correction", "calibration", "probes"):
        del data[key]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    with caplog.at_level("WARNING", logger="mobile_cv.latency"):
        old = LatencyTable.load(str(path))
    (line,) = [r.getMessage() for r in caplog.records if "old way" in r.getMessage()]
    assert "predicts whole models less well" in line and "python tools/latency_table.py" in line
    index = {label: 0 for label in net.choices}
    arch = net.derive_arch(net.one_hot(index))
    plain = old.overhead_ms + sum(old.block_ms(c) for c in block_configs_of(arch))
    assert old.budget_table(net).exact(index) == pytest.approx(plain, rel=1e-9)  # the plain sum, as before


def test_a_search_refuses_to_start_on_a_table_of_another_machine_when_asked(space_file, table, tmp_path, capfd):
    slow = scaled_copy(table, tmp_path / "slow.json", 1.5)
    argv = [
        "--config-file", os.path.join(ROOT, "configs", "search_embedded_mnist.yaml"),
        "SEARCH.SPACE", space_file, "DATA.INPUT_SIZE", "16", "DATA.LIMIT", "64", "SEARCH.BATCH_SIZE", "32",
        "SEARCH.EPOCHS", "1", "SEARCH.WARMUP_EPOCHS", "0", "SEARCH.COST.KIND", "latency",
        "SEARCH.COST.LATENCY_TABLE", slow, "SEARCH.COST.LATENCY_RUNTIME", "eager",
        "SEARCH.COST.LATENCY_CHECK", "refuse", "OUTPUT_DIR", str(tmp_path / "s"),
    ]  # fmt: skip
    assert load_tool("search").main(argv) == 2
    err = capfd.readouterr().err
    assert "does not describe this machine" in err and "LATENCY_CHECK refuse" in err and "Traceback" not in err
    assert not (tmp_path / "s" / "search.json").exists()


def test_architecture_configs_are_the_blocks_of_the_derived_model(net):
    """What the benchmarks time for an architecture: its derived model's blocks (and head), in order."""
    from mobile_cv.latency.configs import architecture_configs

    g = torch.Generator().manual_seed(2)
    for _ in range(8):
        index = {label: int(torch.randint(c.size, (1,), generator=g)) for label, c in net.choices.items()}
        arch = net.derive_arch(net.one_hot(index))
        want = [c for c in block_configs_of(arch) if not c.identity]
        assert [c for _, c in architecture_configs(net, index)] == want


def test_the_table_predicts_with_the_statistic_it_records(table, space_file, tmp_path):
    """Lookups read the statistic the table records (q1 by default; the median stays in ``ms``)."""
    d = table.data
    assert d["statistic"] == "q1" and table.stat == "q1"
    key = next(iter(d["entries"]))
    config = mobile_cv.latency.configs.config_from_key(key)
    assert table.block_ms(config) == pytest.approx(max(d["entries"][key]["q1"] - d["overhead_ms"]["q1"], 0.0))
    median = LatencyTable({**json.loads(json.dumps(d)), "statistic": "median"}, table.path)
    assert median.block_ms(config) == pytest.approx(max(d["entries"][key]["ms"] - d["overhead_ms"]["ms"], 0.0))
    with pytest.raises(LatencyTableError, match="--statistic must be one of"):
        TableMeasurement(space_file, str(tmp_path / "t.json"), LatencySettings(**{**FAST, "statistic": "mean"}))


@pytest.mark.skipif(not __import__("importlib").util.find_spec("executorch"), reason="executorch not installed")
def test_the_program_cache_keys_programs_by_what_they_are_not_by_their_name(tmp_path):
    """Two tables' probes share names ("compute") but not blocks: each gets its own program."""
    from mobile_cv.latency.measure import compile_programs, example_of, load_runner

    small = BlockConfig("conv_k3_hs", 4, 0, 8, 1, 8)
    large = BlockConfig("conv_k3_hs", 8, 0, 16, 1, 12)
    cache = str(tmp_path / "cache")
    for spec in (small, large):
        program = compile_programs({"compute": spec}, "executorch", False, jobs=1, cache_dir=cache)["compute"]
        load_runner("executorch", program, example_of(spec), 1)()  # a wrong program refuses this input
    assert len(os.listdir(cache)) == 2


# ---- the derived model verified by measurement (SEARCH.COST.LATENCY_VERIFY retarget) ----------------
def test_retarget_aims_again_by_the_miss_and_keeps_the_closest():
    """A table that under-predicts by 20%: the second derivation aims 1/1.2 lower and meets the budget;
    a pick measured once is not timed again; nothing near an aim stops the loop with what it has."""
    from mobile_cv.errors import UserError
    from mobile_cv.latency.verify import describe_steps, retarget

    timed = []

    def select(aim):  # an architecture per aim (ms by the table: the aim itself)
        return {"a": round(aim * 1000)}, {"aim": aim}, aim

    def measure(index):
        timed.append(index["a"])
        ms = 1.2 * index["a"] / 1000  # the whole model runs 20% over the table
        return {"measured_ms": 1.1 * ms, "drift": 1.1, "in_table_ms": ms}

    index, info, record = retarget(select, measure, 4.0, steps=4, accept=0.03)
    assert [round(r["aim_ms"], 6) for r in record["steps"]] == [4.0, round(4.0 / 1.2, 6)]
    assert record["steps"][0]["miss"] == pytest.approx(0.2) and abs(record["steps"][1]["miss"]) < 1e-3
    assert record["chosen"] == 1 and index == {"a": round(4000 / 1.2)} and "within 3%" in record["stopped"]
    lines = describe_steps(record)
    assert "step 0: aim 4 ms" in lines[1] and "miss +20.0%" in lines[1] and lines[2].endswith("<- chosen")

    # the same pick whatever the aim: timed once, the loop runs its steps and keeps it
    timed.clear()
    index, _, record = retarget(lambda aim: ({"a": 1}, {}, 1.0), measure, 4.0, steps=3, accept=0.03)
    assert timed == [1] and len(record["steps"]) == 3 and record["stopped"] == "3 derivations"

    # no architecture near the second aim: the first pick is kept, the reason recorded
    def select_once(aim):
        if aim < 4.0:
            raise UserError("nothing below 4 ms")
        return {"a": 4000}, {}, 4.0

    index, _, record = retarget(select_once, measure, 4.0, steps=4, accept=0.03)
    assert index == {"a": 4000} and len(record["steps"]) == 1 and "nothing below 4 ms" in record["stopped"]
    with pytest.raises(UserError, match="nothing derived to measure"):
        retarget(lambda aim: select_once(1.0), measure, 4.0, steps=2, accept=0.03)


def test_retarget_bisects_between_the_aims_measured_under_and_over_the_budget():
    """Picks as run v4 of latency_budget measured them (table ms -> measured, in the table's ms: the
    heavier, the more the table under-predicts), plus one between them that scaling by the miss never
    reaches (it jumps 3.476 -> 3.702 -> 3.476): once one aim measured under and one over, the aims are
    bisected and land on it; where the space has nothing near the middle, the loop stops with the closest."""
    from mobile_cv.errors import UserError
    from mobile_cv.latency.verify import retarget

    def space(picks):
        def select(aim):  # the pick nearest the aim in the table's ms, within 2%
            p = min(picks, key=lambda p: abs(p - aim))
            if abs(p / aim - 1) > 0.02:
                raise UserError(f"nothing within 2% of {aim:.4g}")
            return {"p": p}, {}, p

        def measure(index):
            return {"measured_ms": picks[index["p"]], "drift": 1.0, "in_table_ms": picks[index["p"]]}

        return select, measure

    v4 = {3.476: 3.726, 3.702: 4.213, 4.019: 4.621}
    index, _, record = retarget(*space({**v4, 3.59: 3.95}), 3.971, steps=4, accept=0.03)
    aims = [s["aim_ms"] for s in record["steps"]]
    assert [s["predicted_ms"] for s in record["steps"]] == [4.019, 3.476, 3.702, 3.59] and index == {"p": 3.59}
    assert aims[2] == pytest.approx((aims[0] + aims[1]) / 2) and aims[3] == pytest.approx((aims[1] + aims[2]) / 2)
    assert "within 3%" in record["stopped"]
    # v4's picks alone: nothing within 2% of the middle (3.55): stopped, the closest (+6.1%) kept
    index, _, record = retarget(*space(v4), 3.971, steps=6, accept=0.03)
    assert len(record["steps"]) == 3 and "no architecture near 3.55" in record["stopped"]
    assert index == {"p": 3.702} and record["steps"][record["chosen"]]["miss"] == pytest.approx(4.213 / 3.971 - 1)


def test_the_derived_model_is_converted_by_the_model_probes_and_calibration_models_spread_over_the_space(
    table, tmp_path
):
    """measure_whole with references: that many calibration models spread over the table's by M params
    (none of them a model probe) are timed with it, and the mean now / at build of them and the model
    probes converts it. Their stored timings halved, the factor reads ~2^(k/(k+probes)) x the probes'
    drift and the measurement is divided by it; with no references its size's probe converts, as before."""
    from mobile_cv.latency.probes import is_model_probe
    from mobile_cv.latency.verify import measure_whole, models_drift, spread_calibration

    rows = table.data["calibration"]["models"]
    probed = {p["calibration"] for n, p in table.data["probes"].items() if is_model_probe(n)}
    spread = spread_calibration(table.data, 4)
    pool = sorted(r["mparams"] for i, r in enumerate(rows) if i not in probed)
    assert len(spread) == 4 == len(set(spread)) and not probed & set(spread)
    picked = sorted(rows[j]["mparams"] for j in spread)  # one from each quarter of the pool by M params
    assert all(pool[len(pool) * q // 4] <= m <= pool[(len(pool) * (q + 1) - 1) // 4] for q, m in enumerate(picked))
    assert len(spread_calibration(table.data, 1000)) == len(pool)
    assert spread_calibration(table.data, 0) == [] and spread_calibration({"entries": {}}, 3) == []
    assert models_drift({"call": 9.0, "compute": 9.0, "model 16px": 2.0}, [0.5, 1.0]) == pytest.approx(1.0)

    data = json.loads(json.dumps(table.data))
    for j in spread:
        for k in ("ms", "q1", "q3", "min"):
            data["calibration"]["models"][j][k] *= 0.5
    path = tmp_path / "halved.json"
    path.write_text(json.dumps(data))
    halved, arch = LatencyTable.load(str(path)), rows[spread[0]]["arch"]
    m = measure_whole(halved, arch, rounds=5, warmup=1, mparams=1.5, references=4)
    assert [r["calibration"] for r in m["references"]] == spread and m["mparams"] == 1.5
    n_probes = len(probed)
    logs = [math.log(r["ratio"]) for r in m["references"]] + [math.log(m["table_drift"])] * n_probes
    assert m["models_drift"] == pytest.approx(math.exp(sum(logs) / (4 + n_probes)))
    assert m["factor"] == m["models_drift"] and m["in_table_ms"] == pytest.approx(m["measured_ms"] / m["factor"])
    assert min(r["ratio"] for r in m["references"]) > 1.4 * m["table_drift"], m  # halved build times: ~2x
    plain = measure_whole(halved, arch, rounds=5, warmup=1, mparams=1.5, references=0)
    assert "references" not in plain and plain["factor"] == plain["drift"]
    assert plain["in_table_ms"] == pytest.approx(plain["measured_ms"] / plain["drift"])


def test_a_model_is_converted_by_the_probe_of_its_own_input_size(table, tmp_path):
    """drift_at_size: the model probe at the model's input size where the table has one, else the
    drift; measure_whole converts the derived model by it. That probe's build times halved, the
    derived model's drift reads ~2x where the probes' mean (three sizes) moves by 2^(1/3)."""
    from mobile_cv.latency.probes import drift_at_size
    from mobile_cv.latency.verify import measure_whole

    ratios = {"call": 3.0, "compute": 1.5, "model 16px": 1.1, "model 24px": 1.4}
    assert drift_at_size(ratios, 16) == 1.1 and drift_at_size(ratios, 24) == 1.4
    assert drift_at_size(ratios, 20) == pytest.approx(math.sqrt(1.1 * 1.4))  # no probe of that size: the drift
    assert drift_at_size(ratios, None) == pytest.approx(math.sqrt(1.1 * 1.4))
    assert drift_at_size({"model": 1.3, "compute": 2.0}, 224) == 1.3  # one input size: its probe is the drift
    assert drift_at_size({"call": 2.0, "compute": 1.2, "memory": 1.2 / 1.44}, 16) == pytest.approx(1.0)

    arch = table.data["calibration"]["models"][0]["arch"]
    name = f"model {arch['input_size']}px"
    data = json.loads(json.dumps(table.data))
    assert name in data["probes"], list(data["probes"])
    for k in ("ms", "q1", "q3", "min"):
        if k in data["probes"][name]:
            data["probes"][name][k] *= 0.5
    path = tmp_path / "size_halved.json"
    path.write_text(json.dumps(data))
    m = measure_whole(LatencyTable.load(str(path)), arch, rounds=5, warmup=1)
    assert m["factor"] == m["drift"] and m["in_table_ms"] == pytest.approx(m["measured_ms"] / m["drift"])
    assert m["drift"] / m["table_drift"] > 1.3, m  # 2 / 2^(1/3) = 1.59 with no noise


def test_latency_verify_needs_a_latency_budget():
    from mobile_cv.config import ConfigError
    from mobile_cv.engine import setup_cfg

    with pytest.raises(ConfigError, match="LATENCY_VERIFY retarget .* needs SEARCH.COST.KIND latency"):
        setup_cfg("", ["SEARCH.COST.LATENCY_VERIFY", "retarget"], arch_key="SEARCH.SPACE")
    with pytest.raises(ConfigError, match="LATENCY_VERIFY must be one of"):
        setup_cfg("", ["SEARCH.COST.LATENCY_VERIFY", "on"], arch_key="SEARCH.SPACE")


def test_latency_search_verifies_its_derived_model_by_measurement(space_file, table, net, tmp_path, capfd):
    """tools/search.py with SEARCH.COST.LATENCY_VERIFY retarget: the derived model is timed whole with
    the table's probes; search.json records every step, and the architecture written is the chosen step's."""
    target, out = mid_budget(table, net), tmp_path / "verified"
    argv = latency_search_argv(space_file, table, target, out, images=64)
    argv[-2:-2] = [
        "SEARCH.COST.LATENCY_CHECK", "off", "SEARCH.COST.LATENCY_VERIFY", "retarget",
        "SEARCH.COST.LATENCY_VERIFY_ROUNDS", "3", "SEARCH.COST.LATENCY_VERIFY_STEPS", "3",
        "SEARCH.COST.LATENCY_VERIFY_REFERENCES", "3",
    ]  # fmt: skip
    assert load_tool("search").main(argv) == 0, capfd.readouterr().err[-3000:]
    summary = json.load(open(out / "search.json"))
    record = summary["latency_verify"]
    steps = record["steps"]
    assert 1 <= len(steps) <= 3 and steps[0]["aim_ms"] == target
    for s in steps:  # converted by the model probes and 3 calibration models spread over the space
        assert len(s["references"]) == 3 and s["factor"] == s["models_drift"] and s["drift"] > 0
        assert s["in_table_ms"] == pytest.approx(s["measured_ms"] / s["factor"])
        assert s["miss"] == pytest.approx(s["in_table_ms"] / target - 1)
    chosen = steps[record["chosen"]]
    assert abs(chosen["miss"]) == min(abs(s["miss"]) for s in steps)
    assert summary["measured_target_error"] == chosen["miss"]
    assert summary["derived_measured_ms"] == chosen["measured_ms"]
    arch = json.load(open(out / "arch_def.json"))  # the chosen step's architecture, as the table predicts it
    assert prediction_of(table, arch) == pytest.approx(chosen["predicted_ms"], rel=1e-9)
    assert summary["derived_latency_ms"] == pytest.approx(chosen["predicted_ms"], rel=1e-9)
    assert "latency verified by measurement" in capfd.readouterr().out

    # tools/derive.py --verify retarget: a family from the same alpha, each model timed as above
    from mobile_cv.engine.derive import DeriveError, derive_family

    lo, hi = table.budget_table(net).extremes()
    budgets = [target, round(lo + 0.7 * (hi - lo), 4)]
    rows = derive_family(str(out), budgets, str(tmp_path / "family"), tolerance=0.1, verify="retarget")
    for r, b in zip(rows, budgets):
        assert (
            r["budget"] == b
            and r["drift"] > 0
            and r["measured_error"] == pytest.approx(r["measured_ms"] / b - 1, abs=2e-3)
        )
        assert r["models_drift"] > 0  # the search's LATENCY_VERIFY_REFERENCES 3 converted it
        assert prediction_of(table, json.load(open(tmp_path / "family" / r["file"]))) == pytest.approx(
            r["cost"], rel=1e-5
        )
    assert capfd.readouterr().out.count("latency verified by measurement") == 2
    with pytest.raises(DeriveError, match="--verify retarget times the derived models against budgets in ms"):
        derive_family(str(out), [1.0], str(tmp_path / "f2"), kind="flops", verify="retarget")


def test_the_drift_is_the_whole_model_probes_where_a_table_has_them(table, tmp_path):
    """The drift scales whole-model predictions, so it is read from the whole-model probes: a table
    whose block probes alone read 1.5x their build-time timings now (the stored ones divided by 1.5)
    keeps its drift, and the probes' spread (one factor or not) still sees the blocks; a table with block
    probes only (built before model probes) takes its drift from them."""
    from mobile_cv.latency.probes import HEAVIEST, check_table, drift_of_ratios, in_drift, in_spread

    names = ["call", "compute", "memory", "model 16px", "model 24px", HEAVIEST]
    assert [n for n in names if in_drift(n, names)] == ["model 16px", "model 24px"]
    assert [n for n in names if in_spread(n)] == ["compute", "memory", "model 16px", "model 24px"]
    blocks_only = ["call", "compute", "memory"]
    assert [n for n in blocks_only if in_drift(n, blocks_only)] == ["compute", "memory"]
    ratios = {"call": 3.0, "compute": 1.5, "memory": 1.5, "model 16px": 1.1, "model 24px": 1.4, HEAVIEST: 2.0}
    assert drift_of_ratios(ratios) == pytest.approx(math.sqrt(1.1 * 1.4))
    assert drift_of_ratios({"call": 3.0, "compute": 1.2, "memory": 1.2 / 1.44}) == pytest.approx(1.0)

    data = json.loads(json.dumps(table.data))
    for name in ("compute", "memory"):
        for k in ("ms", "q1", "q3", "min"):
            if k in data["probes"][name]:
                data["probes"][name][k] /= 1.5
    path = tmp_path / "blocks_moved.json"
    path.write_text(json.dumps(data))
    # the two checks are compared as timed back to back; a pair the machine moved between (a shared
    # machine can slow 1.4x in seconds) is timed again, up to three pairs
    for _ in range(3):
        base = check_table(table, rounds=5, warmup=1)
        report = check_table(LatencyTable.load(str(path)), rounds=5, warmup=1)
        if report["drift"] < 1.3 * base["drift"] and report["spread"] > 1.3 * base["spread"] / 1.1:
            break
    models = [v["ratio"] for n, v in report["probes"].items() if in_drift(n, report["probes"])]
    assert len(models) >= 1 and all(n.startswith("model") for n in report["probes"] if in_drift(n, report["probes"]))
    assert report["drift"] == pytest.approx(math.exp(sum(math.log(r) for r in models) / len(models)))
    assert report["drift"] < 1.3 * base["drift"], (report, base)  # the blocks' 1.5x is not in it (noise aside)
    assert report["spread"] > 1.3 * base["spread"] / 1.1, (report, base)  # but the spread sees the blocks move apart


def test_check_times_the_heaviest_calibration_model_and_says_when_it_parts_from_the_drift(table, tmp_path):
    """The heaviest calibration model is timed with the probes, shown but not in the drift; made to
    read 2x slower than at build (its stored timings halved), the verdict says models that heavy run
    slower here; the drift is the same whatever the heaviest model reads."""
    from mobile_cv.latency.probes import HEAVIEST, check_table, in_drift, verdict

    rows = table.data["calibration"]["models"]
    j = max(range(len(rows)), key=lambda i: rows[i]["mparams"])
    data = json.loads(json.dumps(table.data))
    for k in ("ms", "q1", "q3", "min"):
        data["calibration"]["models"][j][k] *= 0.5
    path = tmp_path / "heavy.json"
    path.write_text(json.dumps(data))
    report = check_table(LatencyTable.load(str(path)), rounds=5, warmup=1)
    heavy = report["probes"][HEAVIEST]
    assert not in_drift(HEAVIEST) and heavy["mparams"] == rows[j]["mparams"]
    assert heavy["build_ms"] == pytest.approx(0.5 * rows[j][table.stat])
    drift_probes = [v["ratio"] for n, v in report["probes"].items() if in_drift(n, report["probes"])]
    assert report["drift"] == pytest.approx(math.exp(sum(math.log(r) for r in drift_probes) / len(drift_probes)))
    assert heavy["ratio"] / report["drift"] > 1.07, report  # ~2x: its build-time timings were halved
    line = verdict(LatencyTable.load(str(path)), report)
    assert f"its heaviest calibration model ({rows[j]['mparams']:.2f} M params)" in line and "run slower" in line
    assert "SEARCH.COST.LATENCY_VERIFY retarget" in line


def test_latency_prediction_reads_calibration_models_of_a_one_resolution_table_at_their_size():
    """A table built at one resolution (--resolutions 224) records its calibration models' indices
    without the resolution choice; read in the whole space they are at their own input size, not at
    the space's first (the benchmark's (d) recalibration and refit time their blocks)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lp", os.path.join(ROOT, "benchmarks", "latency_prediction.py"))
    lp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lp)
    net = build_supernet("fbnetv2_f_space", num_classes=10, in_chans=3)
    index = {label: 0 for label in net.choices if label != "resolution"}
    row = {"index": index, "arch": {"input_size": 224}}
    assert lp.calibration_index(net, row)["resolution"] == net.res_sizes.index(224) != 0
    assert lp.calibration_index(net, {"index": {**index, "resolution": 0}, "arch": {"input_size": 160}}) == {
        **index,
        "resolution": net.res_sizes.index(160),
    }


def test_conversion_windows_scores_each_conversion_by_how_a_model_moves_between_bursts(table):
    """benchmarks/conversion_windows.py's scoring on made-up bursts of the tiny table: a factor that
    moves every program alike leaves every conversion still (only the unconverted level moves); one
    model probe jumping 1.5x moves a model converted by that probe by log 1.5, by the model probes and
    references by a share of it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cw", os.path.join(ROOT, "benchmarks", "conversion_windows.py"))
    cw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cw)
    from mobile_cv.latency.probes import is_model_probe
    from mobile_cv.latency.verify import spread_calibration

    d, stat = table.data, table.stat
    rows, models = d["calibration"]["models"], spread_calibration(d, 6)

    def burst(factor, jump=None):
        probes = {k: factor * (1.5 if k == jump else 1.0) for k in d["probes"]}
        return {"probes": probes, "models": {j: factor * rows[j][stat] for j in models}}

    series = cw.converted(d, stat, [burst(1.0), burst(1.3), burst(0.8)], models, 3)
    for s in series.values():
        for c in ("own size", "probes' mean", "models"):
            assert max(s[c]) - min(s[c]) == pytest.approx(0, abs=1e-12), c
        assert max(s["unconverted"]) - min(s["unconverted"]) == pytest.approx(math.log(1.3 / 0.8))
    size = rows[models[0]]["arch"]["input_size"]
    series = cw.converted(d, stat, [burst(1.0), burst(1.0, jump=f"model {size}px")], models, 3)
    n_model_probes = sum(1 for k in d["probes"] if is_model_probe(k))
    moved = {c: abs(series[models[0]][c][1] - series[models[0]][c][0]) for c in cw.CONVERSIONS}
    assert moved["own size"] == pytest.approx(math.log(1.5)) and moved["unconverted"] == 0
    assert moved["models"] == pytest.approx(math.log(1.5) / (n_model_probes + 3))
    assert moved["probes' mean"] == pytest.approx(math.log(1.5) / n_model_probes)
