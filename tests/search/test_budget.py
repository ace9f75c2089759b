"""Budgeted derivation, vectorised costs, scale-free cost losses, hard sampling, checkpointing."""

import copy

import pytest
import torch
from torch import nn

import mobile_cv
from mobile_cv.search import CostLoss, build_supernet
from mobile_cv.search.budget import (
    BudgetError,
    BudgetTable,
    batch_cost,
    enumerate_all,
    index_log_prob,
    log_probs,
    sample_within,
)
from mobile_cv.search.mixed import frozen_bn_statistics

# small enough to enumerate (23,328 assignments), with every kind of choice
SMALL = {
    "input_size": 32,
    "basic_args": {"width_divisor": 8},
    "search": {"resolution": [16, 24, 32]},
    "blocks": [
        [["masked-channel", 16, 2, 1, {"op": "conv_k3_hs", "channels": [8, 16]}]],
        [["choice", 24, 1, 2, {"ops": ["ir_k3", "ir_k5_hs", "skip"], "channels": (8, 24, 8), "expansion": [1, 2, 4]}]],
        [["choice", 32, 2, 1, {"ops": ["ir_k3_sehsig_hs", "skip"], "channels": (16, 32, 16), "expansion": [2, 6]}]],
        [["masked-channel", 64, 1, 1, {"op": "ir_pool_hs", "channels": [32, 64], "expansion": 4}]],
    ],
}


@pytest.fixture(scope="module")
def small():
    net = build_supernet(SMALL, num_classes=10)
    every = list(enumerate_all(net))
    batch = {label: torch.tensor([ix[label] for ix in every]) for label in net.choices}
    return net, BudgetTable(net, "flops"), batch, batch_cost(net, "flops", batch)


def randomize_alpha(net, seed, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.copy_(torch.randn(a.shape, generator=g) * scale)


def test_batched_costs_equal_one_at_a_time_and_the_counted_model(small):
    net, _, batch, costs = small
    for j in (0, 777, 5000, len(costs) - 1):
        index = {label: int(v[j]) for label, v in batch.items()}
        one = net.expected_cost("flops", net.one_hot(index)).item()
        arch = net.derive_arch(net.one_hot(index))
        counted, _ = mobile_cv.count_flops_params(mobile_cv.build_model(arch, num_classes=10), arch["input_size"])
        assert costs[j].item() == pytest.approx(one, rel=1e-6)
        assert costs[j].item() == pytest.approx(counted, rel=1e-6)


def test_extremes_are_exact(small):
    net, table, _, costs = small
    assert table.extremes() == pytest.approx((costs.min().item(), costs.max().item()), rel=1e-9)
    for largest in (False, True):
        index, cost = table.extreme(largest)
        assert net.expected_cost("flops", net.one_hot(index)).item() == pytest.approx(cost, rel=1e-6)


def test_budgeted_derivation_is_the_brute_force_optimum(small):
    """On every (alpha, target) pair: in budget, exact cost reported, and no in-budget assignment
    is more probable (the DP rounds costs internally; the claimed gap on this space is zero)."""
    net, table, batch, costs = small
    lo, hi = costs.min().item(), costs.max().item()
    checked = 0
    for seed in range(8):
        randomize_alpha(net, seed)
        logp = log_probs(net)
        total = sum(logp[label][batch[label]] for label in net.choices)
        for frac in (0.05, 0.2, 0.5, 0.8):
            target = lo + frac * (hi - lo)
            inside = (costs >= 0.95 * target) & (costs <= 1.05 * target)
            index, cost, lp = table.most_probable_within(target, 0.05, logp)
            assert 0.95 * target <= cost <= 1.05 * target
            assert cost == pytest.approx(net.expected_cost("flops", net.one_hot(index)).item(), rel=1e-6)
            assert lp == pytest.approx(index_log_prob(index, logp))
            assert lp == pytest.approx(total[inside].max().item(), abs=1e-9)
            checked += 1
    assert checked == 32


def test_budgeted_derivation_returns_the_argmax_when_it_is_within_budget(small):
    net, table, _, _ = small
    randomize_alpha(net, 3)
    argmax = net.argmax()
    cost = net.expected_cost("flops", net.one_hot(argmax)).item()
    index, got, _ = table.most_probable_within(cost * 1.02, 0.05, log_probs(net))
    assert index == argmax and got == pytest.approx(cost, rel=1e-6)


def test_budget_outside_the_space_is_a_clear_error(small):
    _, table, _, costs = small
    with pytest.raises(BudgetError, match=r"no architecture of the space costs 0\.001 MFLOPs.*spans"):
        table.most_probable_within(0.001, 0.05, log_probs(build_supernet(SMALL, num_classes=10)))
    with pytest.raises(BudgetError, match="pick a target in that range"):
        table.most_probable_within(costs.max().item() * 2, 0.05, log_probs(build_supernet(SMALL, num_classes=10)))


def test_random_architectures_within_budget_are_distinct_and_in_the_window(small):
    net, _, _, _ = small
    drawn = sample_within(net, "flops", 0.5, 0.05, 6, seed=1)
    archs = {repr(net.derive_arch(net.one_hot(index))) for index, _ in drawn}
    assert len(archs) == 6
    for index, cost in drawn:
        assert 0.475 <= cost <= 0.525
        assert net.expected_cost("flops", net.one_hot(index)).item() == pytest.approx(cost, rel=1e-6)
    with pytest.raises(BudgetError, match="only"):
        sample_within(net, "flops", 0.5, 0.0, 1, max_draws=4096)


def _alpha_gradient(net, form, unit, x, y):
    """d loss / d alpha with the cost counted in ``unit`` x MFLOPs (target 0.4 MFLOPs in that unit)."""
    g = net.sample_mixing(noise=False)
    ce = nn.functional.cross_entropy(net(x, g), y)  # depends on alpha too
    cost = net.expected_cost("flops", g) * unit
    loss = CostLoss(form, target=0.4 * unit)(ce, cost)
    return torch.cat(torch.autograd.grad(loss, net.arch_parameters()))


@pytest.mark.parametrize("form", ["target", "relative"])
def test_scale_free_cost_gives_the_same_alpha_gradient_at_any_cost_unit(form):
    """The same search step with costs in MFLOPs (x1) and in kFLOPs (x1000): the alpha gradient
    (cross-entropy and cost together) points the same way."""
    torch.manual_seed(0)
    net = build_supernet(SMALL, num_classes=10).eval()
    randomize_alpha(net, 0, scale=0.5)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    g1, g1000 = _alpha_gradient(net, form, 1.0, x, y), _alpha_gradient(net, form, 1000.0, x, y)
    assert g1.abs().sum() > 0
    assert nn.functional.cosine_similarity(g1, g1000, dim=0).item() == pytest.approx(1.0, abs=1e-6)
    # the FBNet form is not: log(cost) ** 0.6 re-weighs cost against cross-entropy with the unit
    f1, f1000 = _alpha_gradient(net, "fbnet", 1000.0, x, y), _alpha_gradient(net, "fbnet", 1e6, x, y)
    assert nn.functional.cosine_similarity(f1, f1000, dim=0).item() < 1 - 1e-5  # float error is ~1e-7


def test_target_loss_pulls_the_cost_to_the_target_from_both_sides():
    net = build_supernet(SMALL, num_classes=10)
    start = net.expected_cost("flops").item()
    for target, moves in ((start / 2, "down"), (start * 2, "up")):
        with torch.no_grad():
            for a in net.arch_parameters():
                a.zero_()
        loss = CostLoss("target", target=target)(torch.tensor(1.0), net.expected_cost("flops"))
        grads = torch.autograd.grad(loss, net.arch_parameters())
        with torch.no_grad():
            for a, gr in zip(net.arch_parameters(), grads):
                a -= 0.5 * gr  # one gradient-descent step on alpha
        after = net.expected_cost("flops").item()
        assert (after < start) if moves == "down" else (after > start)
    with pytest.raises(ValueError, match="positive target"):
        CostLoss("target")


def test_hard_sampling_runs_one_candidate_per_block_and_one_resolution():
    net = build_supernet(SMALL, num_classes=10).train()
    calls = []
    candidates = [(name, m) for name, m in net.named_modules() if name.split(".")[-2:-1] == ["candidates"]]
    hooks = [m.register_forward_hook(lambda m, i, o, n=name: calls.append(n)) for name, m in candidates]
    g = net.sample_mixing(hard=("op", "resolution"))
    out = net(torch.randn(2, 3, 32, 32), g)
    blocks = len(net.body.blocks)
    assert len(calls) == blocks  # one candidate per block, one resolution
    for h in hooks:
        h.remove()
    nn.functional.cross_entropy(out, torch.tensor([1, 2])).backward()
    for label in ("xif1_0.op", "resolution", "xif1_0.channels"):
        assert net.alpha(label).grad is not None and net.alpha(label).grad.abs().sum() > 0, label
    for label, c in net.choices.items():
        if c.kind in ("op", "resolution"):
            assert sorted(g[label].detach().tolist()) == [0.0] * (c.size - 1) + [1.0]


def test_checkpointing_blocks_gives_the_same_gradients_and_bn_statistics():
    torch.manual_seed(0)
    base = build_supernet(SMALL, num_classes=10).train()
    randomize_alpha(base, 1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    results = []
    for checkpoint in (False, True):
        net = copy.deepcopy(base)
        net.recompute_blocks = checkpoint
        nn.functional.cross_entropy(net(x, net.sample_mixing(noise=False)), y).backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        stats = {n: b.clone() for n, b in net.named_buffers() if "running" in n}
        results.append((grads, stats))
    (g0, s0), (g1, s1) = results
    assert g0.keys() == g1.keys() and any(k.startswith("alphas.") for k in g0)
    for k in g0:
        torch.testing.assert_close(g0[k], g1[k], rtol=1e-5, atol=1e-7)
    for k in s0:  # updated once per step, not again by the recomputation
        torch.testing.assert_close(s0[k], s1[k])


def test_frozen_bn_statistics_keeps_running_stats_and_normalises_with_batch_stats():
    net = build_supernet(SMALL, num_classes=10).train()
    before = {n: b.clone() for n, b in net.named_buffers() if "running" in n}
    x = torch.randn(4, 3, 32, 32)
    with frozen_bn_statistics(net):
        out = net(x, net.sample_mixing(noise=False))
    assert all(torch.equal(before[n], b) for n, b in net.named_buffers() if "running" in n)
    torch.testing.assert_close(out, net(x, net.sample_mixing(noise=False)))  # same batch-stat forward
    assert any(not torch.equal(before[n], b) for n, b in net.named_buffers() if "running" in n)


def test_budgeted_search_finds_the_one_architecture_hidden_behind_a_more_probable_one(small):
    """The window holds one architecture (3.090016 MFLOPs) and it shares its DP cell (same output
    width, same rounded cost) with the argmax just above the window (3.090272 MFLOPs). The cell's
    most probable member misses the window; the search must still find the one inside (the DP
    before the rewrite decoded only cells' most probable members and reported no architecture)."""
    net, table, batch, costs = small
    argmax = {"xif0_0.channels": 0, "xif1_0.channels": 2, "xif1_0.op": 1, "xif1_0.expansion": 2, "xif1_1.op": 0}
    argmax.update({"xif1_1.expansion": 2, "xif2_0.channels": 1, "xif2_0.op": 0, "xif2_0.expansion": 0})
    argmax.update({"xif3_0.channels": 0, "resolution": 2})
    with torch.no_grad():
        for label, c in net.choices.items():
            net.alpha(label).copy_(4.0 * nn.functional.one_hot(torch.tensor(argmax[label]), c.size).float())
    target, tolerance = 3.0837871999999997, 0.002061361432462023
    lo, hi = target * (1 - tolerance), target * (1 + tolerance)
    inside = (costs >= lo) & (costs <= hi)
    assert int(inside.sum()) == 1 and net.argmax() == argmax
    assert hi < net.expected_cost("flops", net.one_hot(argmax)).item() < hi + 3e-4
    logp = log_probs(net)
    index, cost, lp = table.most_probable_within(target, tolerance, logp)
    assert lo <= cost <= hi and cost == pytest.approx(costs[inside].item(), rel=1e-9)
    total = sum(logp[label][batch[label]] for label in net.choices)
    assert lp == pytest.approx(total[inside].item(), abs=1e-9) == index_log_prob(index, logp)


def test_budgeted_search_proves_an_empty_window_and_names_the_nearest_costs(small):
    net, table, _, costs = small
    ordered = torch.unique(costs)
    gaps = ordered[1:] - ordered[:-1]
    j = int(gaps.argmax())  # the widest gap between two neighbouring costs of the space
    below, above = ordered[j].item(), ordered[j + 1].item()
    target = (below + above) / 2
    tolerance = 0.3 * (above - below) / target
    with pytest.raises(BudgetError, match="no architecture of the space is within") as e:
        table.most_probable_within(target, tolerance, log_probs(net))
    assert f"{below:.4g} MFLOPs" in str(e.value) and f"{above:.4g} MFLOPs" in str(e.value)
