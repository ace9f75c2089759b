"""DMaskingNAS supernet: equivalence with derived models, effective-shape cost,
gradients, derivation, containment of the released models, and bad spaces."""

import itertools
import json
import math
import os
import random

import pytest
import torch
from torch import nn

import arch_defs
import mobile_cv
from arch_defs.spaces import FBNETV2_OPS
from mobile_cv import ArchDefError
from mobile_cv.arch.arch_def import format_arch_def_py, load_arch_def_file
from mobile_cv.search import CostLoss, build_supernet
from tests.helpers import DATA

PUBLISHED = {m["name"]: m for m in json.load(open(os.path.join(DATA, "published_models.json")))["models"]}


def space(*rows, resolution=None, input_size=32):
    d = {"input_size": input_size, "basic_args": {"width_divisor": 8}, "blocks": [list(r) for r in rows]}
    if resolution is not None:
        d["search"] = {"resolution": resolution}
    return d


STEM = [["masked-channel", 16, 2, 1, {"op": "conv_k3_hs", "channels": (8, 16, 8)}]]
HEAD = [["ir_pool_hs", 64, 1, 1, {"expansion": 4}]]
SPACES = {
    # each searches one dimension, then all together
    "channels": space(
        STEM,
        [["masked-channel", 32, 2, 2, {"op": "ir_k3_sehsig_hs", "channels": (8, 32, 8), "expansion": 3}]],
        [["masked-channel", 48, 1, 1, {"op": "ir_k5", "channels": [16, 32, 48], "expansion": 2}]],
        HEAD,
    ),
    "expansion": space(
        [["conv_k3_hs", 16, 2, 1]],
        [["ir_k3_sehsig_hs", 24, 2, 2, {"expansion": [0.5, 1, 2, 4]}]],
        [["ir_k5_hs", 24, 1, 1, {"expansion": (1.0, 3.0, 0.5)}]],
        HEAD,
    ),
    "resolution": space(
        [["conv_k3_hs", 16, 2, 1]],
        [["ir_k3_hs", 24, 2, 2, {"expansion": 3}]],
        [["conv_k1_hs", 64, 1, 1]],  # no pooling stage: outputs are placed back with interspersed zeros
        resolution=[8, 16, 24, 32],
    ),
    "all": space(
        STEM,
        [["choice", 24, 1, 2, {"ops": FBNETV2_OPS, "channels": (8, 24, 8), "expansion": [1, 2, 4]}]],
        [
            [
                "choice",
                32,
                2,
                2,
                {"ops": FBNETV2_OPS, "channels": (16, 32, 8), "expansion": (2, 6, 2)},
                {"zero_last_bn_gamma": True},
            ]
        ],
        [["masked-channel", 128, 1, 1, {"op": "ir_pool_hs", "channels": [64, 128], "expansion": 6}]],
        resolution=[16, 24, 32],
    ),
}


def randomize_bn(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def subsample(x, size):
    take = torch.div(torch.arange(size) * x.shape[-1], size, rounding_mode="floor")
    return x[:, :, take][:, :, :, take]


@pytest.mark.parametrize("mode", ["dmasking", "conventional"])
@pytest.mark.parametrize("which", list(SPACES))
def test_one_hot_supernet_equals_derived_model(which, mode):
    net = build_supernet(SPACES[which], num_classes=10, mode=mode).eval()
    randomize_bn(net)
    assert net.choices, "the space must have choices"
    x = torch.randn(2, 3, 32, 32)
    rng = random.Random(0)
    outputs = []
    for _ in range(6):
        index = {label: rng.randrange(c.size) for label, c in net.choices.items()}
        w = net.one_hot(index)
        arch = net.derive_arch(w)
        model = mobile_cv.build_model(arch, num_classes=10).eval()
        net.copy_to(model, w)
        with torch.no_grad():
            y_super = net(x, w)
            y_derived = model(subsample(x, arch["input_size"]))
        torch.testing.assert_close(y_super, y_derived, atol=1e-5, rtol=1e-5)
        outputs.append(y_super)
        flops, params = mobile_cv.count_flops_params(model, arch["input_size"])
        assert net.expected_cost("flops", w).item() == pytest.approx(flops, rel=1e-5)
        assert net.expected_cost("params", w).item() == pytest.approx(params, rel=1e-5)
    assert any(not torch.allclose(outputs[0], y) for y in outputs[1:])  # different choices really differ


@pytest.mark.parametrize(
    "space_name,models",
    [
        ("fbnetv2_f_space", ["FBNetV2_F1", "FBNetV2_F2", "FBNetV2_F3", "FBNetV2_F4"]),
        ("fbnetv2_p_space", ["FBNetV2_F4"]),
        ("fbnetv2_l_space", ["FBNetV2_L1", "FBNetV2_L2"]),
    ],
)
def test_spaces_contain_released_models(space_name, models):
    net = build_supernet(space_name)
    for name in models:
        w = net.one_hot(net.encode(arch_defs.get(name)))
        derived = net.derive_arch(w)
        pub = PUBLISHED[name]
        assert derived["input_size"] == pub["resolution"]
        flops, params = mobile_cv.count_flops_params(mobile_cv.build_model(derived), pub["resolution"])
        assert flops == pytest.approx(pub["flops_m"], rel=1e-6)
        assert params == pytest.approx(pub["params_m"], rel=1e-5)
        assert net.expected_cost("flops", w).item() == pytest.approx(pub["flops_m"], rel=1e-5)
        assert net.expected_cost("params", w).item() == pytest.approx(pub["params_m"], rel=1e-5)
        # the same blocks once identity skips (stride 1, same width) are dropped
        ours = [(r[0], r[1]) for st in derived["blocks"] for r in st]
        released = [(r[0], r[1]) for st in arch_defs.get(name)["blocks"] for r in st]
        ours_no_id = [b for i, b in enumerate(ours) if not (b[0] == "skip" and i and ours[i - 1][1] == b[1])]
        released_no_id = [
            b for i, b in enumerate(released) if not (b[0] == "skip" and i and released[i - 1][1] == b[1])
        ]
        assert ours_no_id == released_no_id


def test_encode_refuses_an_architecture_outside_the_space():
    net = build_supernet("fbnetv2_f_space")
    with pytest.raises(ArchDefError, match="does not contain"):
        net.encode(arch_defs.get("FBNetV2_L1"))


@pytest.mark.parametrize("source", ["ce", "cost"])
def test_every_alpha_gets_a_gradient(source):
    torch.manual_seed(0)
    net = build_supernet(SPACES["all"], num_classes=10).train()
    randomize_bn(net)  # zero_last_bn_gamma would silence residual branches at init
    w = net.sample_mixing()
    if source == "ce":
        loss = nn.functional.cross_entropy(net(torch.randn(4, 3, 32, 32), w), torch.tensor([0, 1, 2, 3]))
    else:
        loss = net.expected_cost("flops", w) + net.expected_cost("params", w)
    loss.backward()
    missing = [
        label for label in net.choices if net.alpha(label).grad is None or net.alpha(label).grad.abs().sum() == 0
    ]
    assert missing == []


def test_fbnet_and_target_losses_push_cost_down_or_to_target():
    net = build_supernet(SPACES["all"], num_classes=10)
    ce = torch.tensor(2.0)
    cost = net.expected_cost("flops")
    (CostLoss("fbnet")(ce, cost)).backward()
    grads = {k: net.alpha(k).grad.clone() for k in net.choices}
    # the FBNet form raises the loss with the cost: gradient descent favours cheaper options
    chan = grads["xif1_0.channels"]
    assert chan[0] < chan[-1]
    loss = CostLoss("target", target=0.5 * cost.item())
    assert loss(ce, cost).item() > loss(ce, torch.tensor(0.5 * cost.item())).item()
    with pytest.raises(ValueError, match="positive target"):
        CostLoss("target")


def test_parameter_split_and_temperature():
    net = build_supernet(SPACES["all"], num_classes=10)
    arch, weights = net.arch_parameters(), net.weight_parameters()
    ids_a, ids_w = {id(p) for p in arch}, {id(p) for p in weights}
    assert len(arch) == len(net.choices) and not (ids_a & ids_w)
    assert ids_a | ids_w == {id(p) for p in net.parameters()}
    net.eval()
    assert all(torch.equal(a, b) for a, b in zip(net.sample_mixing().values(), net.sample_mixing().values()))
    net.train()
    w1, w2 = net.sample_mixing(), net.sample_mixing()
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)  # Gumbel noise in train mode
    net.set_temperature(0.01)
    with torch.no_grad():
        net.alpha("resolution").copy_(torch.tensor([0.0, 1.0, 0.0]))
    assert net.sample_mixing(noise=False)["resolution"][1] > 0.999
    with pytest.raises(ValueError):
        net.set_temperature(0)


def test_derived_arch_def_round_trips_through_json_and_py(tmp_path):
    net = build_supernet("mnist_small_space", num_classes=10, in_chans=1)
    arch = net.derive_arch()
    (tmp_path / "a.json").write_text(json.dumps(arch))
    (tmp_path / "a.py").write_text(format_arch_def_py(arch))
    for f in ("a.json", "a.py"):
        loaded = load_arch_def_file(str(tmp_path / f))
        assert loaded == json.loads(json.dumps(arch))
        model = mobile_cv.build_model(loaded, num_classes=10, in_chans=1)
        assert model(torch.randn(1, 1, arch["input_size"], arch["input_size"])).shape == (1, 10)


def test_channel_choice_is_shared_by_a_rows_repeats_and_sizes_are_reported():
    net = build_supernet(SPACES["channels"], num_classes=10)
    assert [c.label for c in net.choices.values() if c.kind == "channels"] == [
        "xif0_0.channels",
        "xif1_0.channels",
        "xif2_0.channels",
    ]


def _distinct_architectures(net):
    """Brute force: derive and build every combination of options; count the distinct networks
    (resolution, block types, and every weight's shape)."""
    seen = set()
    for index in itertools.product(*(range(c.size) for c in net.choices.values())):
        arch = net.derive_arch(net.one_hot(dict(zip(net.choices, index))))
        model = mobile_cv.build_model(arch, num_classes=10)
        ops = tuple(r[0] for stage in arch["blocks"] for r in stage)
        shapes = tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())
        seen.add((arch["input_size"], ops, shapes))
    return len(seen)


# hidden widths at width_divisor 8: 16 * 1.04 = 16.64 rounds to 16 like 16 * 1, so 3 options, 2 architectures
COLLIDING = space([["conv_k3_hs", 16, 2, 1]], [["ir_k3_hs", 24, 2, 1, {"expansion": [1, 1.04, 2]}]], HEAD)


@pytest.mark.parametrize(
    "which,count",
    [
        ("channels", 2 * 4 * 3),  # (8, 16) x (8, 16, 24, 32) shared by both repeats x (16, 32, 48)
        ("expansion", 4 * 4 * 5),  # hidden widths 8/16/32/64 x 16/24/48/96 x 24/40/48/64/72: all distinct
        ("colliding", 2),
    ],
)
def test_space_size_is_the_number_of_distinct_architectures(which, count):
    net = build_supernet(COLLIDING if which == "colliding" else SPACES[which], num_classes=10)
    assert _distinct_architectures(net) == count  # enumerated, not computed from the choices
    assert net.log10_size() == pytest.approx(math.log10(count), abs=1e-12)


def test_search_ops_are_registered_and_refuse_plain_builds():
    for name in ("masked-channel", "choice", "subsampled-res"):
        assert name in mobile_cv.OPS
    with pytest.raises(ArchDefError, match="build_supernet"):
        mobile_cv.build_model(space(STEM, HEAD))
    with pytest.raises(ArchDefError, match="'fbnetv2_f_space' is a search space.*build_supernet"):
        mobile_cv.build_model("fbnetv2_f_space")


BAD = [
    ({"channels": ()}, "range must be \\(min, max, step\\)"),
    ({"channels": []}, "the list is empty"),
    ({"channels": (32, 16, 8)}, "is inverted"),
    ({"channels": (16, 32, 5)}, "step 5 does not divide"),
    ({"channels": [16, 48]}, "option 48 is above the row's maximum 32"),
    ({"channels": (16, 32, 8), "expansion": (4, 2, 1)}, "expansion range .* is inverted"),
    ({"channels": [0, 16]}, "must be positive"),
]


@pytest.mark.parametrize("kwargs,needle", BAD)
def test_bad_channel_and_expansion_choices(kwargs, needle):
    row = ["choice", 32, 2, 1, {"ops": ["ir_k3", "skip"], **kwargs}]
    with pytest.raises(ArchDefError, match=needle) as e:
        build_supernet(space(STEM, [row], HEAD))
    assert "stage 1, row 0" in str(e.value)


def test_unknown_candidate_op():
    row = ["choice", 32, 2, 1, {"ops": ["ir_k3", "ir_k5_sse"], "channels": (16, 32, 8)}]
    with pytest.raises(ArchDefError, match='unknown candidate op "ir_k5_sse"; did you mean "ir_k5_se"'):
        build_supernet(space(STEM, [row], HEAD))


@pytest.mark.parametrize(
    "resolution,needle",
    [
        ([16, 48], "resolution option 48 is larger than the input \\(32\\)"),
        ([16, 24.5], "non-integer positions"),
        ([], "non-empty list"),
        ([1, 32], "below the network's total stride"),
    ],
)
def test_bad_resolution_options(resolution, needle):
    with pytest.raises(ArchDefError, match=needle):
        build_supernet(space(STEM, HEAD, resolution=resolution))


def test_other_bad_rows():
    with pytest.raises(ArchDefError, match='needs an "op" kwarg'):
        build_supernet(space(STEM, [["masked-channel", 32, 1, 1, {"channels": (16, 32, 8)}]], HEAD))
    with pytest.raises(ArchDefError, match="grouped convs and channel shuffle"):
        build_supernet(space(STEM, [["masked-channel", 32, 1, 1, {"op": "ir_k3_g2", "channels": (16, 32, 8)}]]))
    with pytest.raises(ArchDefError, match="no candidate op .* accepts kwarg 'expnsion'"):
        build_supernet(space(STEM, [["choice", 32, 1, 1, {"ops": ["ir_k3", "skip"], "expnsion": 2}]]))
    with pytest.raises(ArchDefError, match="unknown 'search' key 'resolutions'"):
        build_supernet({**space(STEM, HEAD), "search": {"resolutions": [16]}})
    with pytest.raises(ArchDefError, match="mode must be one of"):
        build_supernet(space(STEM, HEAD), mode="naive")


def test_custom_op_in_a_search_space():
    @mobile_cv.OPS.register("test_sep_k3")
    def build(in_channels, out_channels, stride):
        return nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels),
            nn.Conv2d(in_channels, out_channels, 1),
        )

    try:
        sp = space(
            [["conv_k3_hs", 16, 2, 1]],
            [["choice", 32, 2, 1, {"ops": ["ir_k3", "test_sep_k3"], "channels": (16, 32, 16)}]],
            HEAD,
        )
        net = build_supernet(sp, num_classes=10).eval()
        w = net.one_hot({"xif1_0.op": 1, "xif1_0.channels": 1})
        arch = net.derive_arch(w)
        assert arch["blocks"][1][0][0] == "test_sep_k3"
        model = mobile_cv.build_model(arch, num_classes=10).eval()
        net.copy_to(model, w)
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(net(x, w), model(x), atol=1e-5, rtol=1e-5)
        flops, params = mobile_cv.count_flops_params(model, 32)
        assert net.expected_cost("flops", w).item() == pytest.approx(flops, rel=1e-5)
    finally:
        mobile_cv.OPS.unregister("test_sep_k3")


@pytest.mark.parametrize("sampled", [[], ["resolution"], ["op", "resolution"]])
def test_search_steps_compute_only_the_gradients_they_step(sampled):
    """The weight step computes no gradient towards alpha and the alpha step none for the weights
    (work each would throw away); the alpha step's gradients equal a full backward pass's."""
    import copy
    from types import SimpleNamespace

    from mobile_cv.config import get_cfg
    from mobile_cv.engine import SearchStep, build_search_optimizers
    from mobile_cv.search.mixed import frozen_bn_statistics

    cfg = get_cfg()
    cfg.SEARCH.SAMPLED_CHOICES = sampled
    torch.manual_seed(0)
    net = build_supernet("mnist_small_space", num_classes=10, in_chans=1)
    randomize_bn(net)
    w_opt, a_opt, _ = build_search_optimizers(cfg, net, 1)
    cost_loss = CostLoss("target", target=0.3)
    step = SearchStep(cfg, net, net, (cost_loss, lambda g: net.expected_cost("flops", g)), (w_opt, a_opt), None)
    step.trainer = SimpleNamespace(where="test", epoch=0)
    seen = {}
    for name, opt in (("weights", w_opt), ("alpha", a_opt)):
        opt.step = lambda name=name, f=opt.step: (seen.__setitem__(name, [p.grad for p in net.parameters()]), f())[1]
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    is_alpha = [any(p is a for a in net.arch_parameters()) for p in net.parameters()]

    step.weight_step(x, y)
    assert all(g is None for g, a in zip(seen["weights"], is_alpha) if a)
    assert any(g is not None for g, a in zip(seen["weights"], is_alpha) if not a)

    ref = copy.deepcopy(net)
    torch.manual_seed(1)
    step.alpha_step(x, y, "test")
    assert all(g is None for g, a in zip(seen["alpha"], is_alpha) if not a)
    torch.manual_seed(1)
    with frozen_bn_statistics(ref):
        g = ref.sample_mixing(hard=sampled)
        loss = cost_loss(nn.functional.cross_entropy(ref(x, g), y), ref.expected_cost("flops", g))
        loss.backward()  # every gradient, the weights' too
    got = [g for g, a in zip(seen["alpha"], is_alpha) if a]
    want = [p.grad for p, a in zip(ref.parameters(), is_alpha) if a]
    assert all(g is not None for g in got) and len(got) == len(net.choices)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-5, atol=1e-9)


def test_a_space_whose_choices_all_have_one_option_says_so():
    space = {
        "input_size": 32,
        "search": {"resolution": [32]},
        "blocks": [[["masked-channel", 16, 2, 1, {"op": "conv_k3_hs", "channels": [16]}]]],
    }
    with pytest.raises(ArchDefError, match="every search row and the resolution search have a single option"):
        build_supernet(space, num_classes=10)


def test_importing_the_engine_leaves_the_users_matplotlib_backend_and_plots_still_write(tmp_path):
    """A notebook's backend is the user's: the search plots use matplotlib's object API (no pyplot)."""
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg'); import mobile_cv.engine, mobile_cv.search.plots as p; "
        "from mobile_cv.search.choices import Choice; "
        "h = [{'epoch': e, 'probs': {'c': [0.5, 0.5]}, 'expected_flops': 1.0, 'derived_flops_m': 1.0, "
        "'weights_acc1': 50.0, 'val_acc1': 40.0} for e in range(2)]; "
        f"p.plot_search(h, [Choice('c', (1, 2), 'channels')], {str(tmp_path)!r}); print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "svg"
    assert (tmp_path / "probabilities.png").stat().st_size > 1000 and (tmp_path / "cost_accuracy.png").exists()


@pytest.mark.parametrize("sampling", ["alpha", "uniform"])
def test_weights_sampled_choices_run_one_block_type_in_the_weight_step_only(sampling):
    """SEARCH.WEIGHTS.SAMPLED_CHOICES ["op"]: the weight step trains one block type per block (the
    unchosen candidates get no gradient), drawn from alpha or uniformly; the alpha step still mixes
    every block type."""
    from types import SimpleNamespace

    from mobile_cv.config import get_cfg
    from mobile_cv.engine import SearchStep, build_search_optimizers

    cfg = get_cfg()
    cfg.SEARCH.WEIGHTS.SAMPLED_CHOICES, cfg.SEARCH.WEIGHTS.SAMPLING = ["op"], sampling
    torch.manual_seed(0)
    net = build_supernet("mnist_small_space", num_classes=10, in_chans=1)
    w_opt, a_opt, _ = build_search_optimizers(cfg, net, 1)
    step = SearchStep(
        cfg, net, net, (CostLoss("target", target=0.3), lambda g: net.expected_cost("flops", g)), (w_opt, a_opt), None
    )
    step.trainer = SimpleNamespace(where="test", epoch=0)
    trained = {}
    w_opt.step = lambda f=w_opt.step: (trained.update(weights=_candidates_with_grads(net)), f())[1]
    a_opt.step = lambda f=a_opt.step: (trained.update(alpha=[p.grad is not None for p in net.arch_parameters()]), f())[
        1
    ]
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    step.weight_step(x, y)
    mixed = {b: c for b, c in trained["weights"].items() if c is not None}
    assert mixed and all(len(c) <= 1 for c in mixed.values())  # one block type (none for a skip) per block
    step.alpha_step(x, y, "test")
    assert all(trained["alpha"])  # every op's alpha gets a gradient: the mixture ran


def _candidates_with_grads(net):
    """Per mixed block: the names of its candidates whose weights have a gradient (None: no mixture)."""
    out = {}
    for name, block in net.search_blocks().items():
        cands = getattr(block, "candidates", None)
        if cands is None or len(cands) == 1:
            out[name] = None
            continue
        out[name] = [c for c, m in cands.items() if any(p.grad is not None for p in m.parameters())]
    return out


def test_uniform_sampling_draws_every_option_equally_often_whatever_alpha():
    torch.manual_seed(0)
    net = build_supernet("mnist_small_space", num_classes=10, in_chans=1).train()
    label = next(k for k, c in net.choices.items() if c.kind == "op")
    with torch.no_grad():
        net.alpha(label).copy_(torch.tensor([20.0, 0.0, 0.0, 0.0]))  # alpha all but certain of option 0
    counts = torch.zeros(4)
    for _ in range(400):
        g = net.sample_mixing(hard=["resolution"], uniform=["op"])
        assert sorted(g[label].tolist()) == [0.0, 0.0, 0.0, 1.0] and g.chosen[label] == int(g[label].argmax())
        counts += g[label]
    assert counts.min() > 70  # 100 expected each; alpha's favourite would take ~all 400
    assert net.sample_mixing(hard=["op"])[label].argmax() == 0  # the alpha-drawn sample follows alpha
