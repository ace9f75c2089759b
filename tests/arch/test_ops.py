"""Registry-driven tests: every registered op and every registered arch."""

import itertools

import pytest
import torch
from torch import nn

import arch_defs
import mobile_cv
from mobile_cv.arch.ops import OpSpec

PLAIN_OPS = [n for n in mobile_cv.OPS.names() if isinstance(mobile_cv.OPS.get(n), OpSpec)]
PUBLISHED_OP_NAMES = [
    "conv_k1",
    "conv_k3",
    "conv_k3_hs",
    "ir_k3",
    "ir_k3_g2",
    "ir_k3_hs",
    "ir_k3_sehsig_hs",
    "ir_k5",
    "ir_k5_g2",
    "ir_k5_hs",
    "ir_k5_sehsig",
    "ir_k5_sehsig_hs",
    "ir_pool_hs",
    "skip",
    "ir_k3_se",
    "ir_k5_se",
    "ir_k3_sehsig",
    "ir_k5_se_hs",
]


def test_published_op_names_are_registered():
    missing = [n for n in PUBLISHED_OP_NAMES if n not in mobile_cv.OPS]
    assert not missing


def _every_param_has_grad(module: nn.Module):
    return [n for n, p in module.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]


@pytest.mark.parametrize("op", PLAIN_OPS)
@pytest.mark.parametrize("in_c,out_c,stride", [(8, 16, 2), (16, 16, 1)])
def test_every_plain_op_forward_backward(op, in_c, out_c, stride):
    torch.manual_seed(0)
    kwargs = {"expansion": 2} if "ir_" in op else {}
    block = mobile_cv.OPS.get(op)(in_c, out_c, stride, **kwargs).train()
    x = torch.randn(2, in_c, 8, 8, requires_grad=True)
    y = block(x)
    expected_hw = 1 if op.startswith("ir_pool") else 8 // stride
    assert y.shape == (2, out_c, expected_hw, expected_hw)
    (y.square().mean() + y.mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert _every_param_has_grad(block) == []


@pytest.mark.parametrize("name", arch_defs.names("model"))
def test_every_registered_arch_builds_and_runs_at_its_input_size(name):
    model = mobile_cv.build_model(name, num_classes=10).eval()
    size = arch_defs.get(name)["input_size"]
    with torch.no_grad():
        y = model(torch.randn(1, 3, size, size))
    assert y.shape == (1, 10) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["FBNetV2_F1", "fbnet_a"])
def test_every_parameter_of_a_model_gets_a_gradient(name):
    torch.manual_seed(0)
    model = mobile_cv.build_model(name, num_classes=10).train()
    # zero_last_bn_gamma starts residual branches at 0: perturb so every path carries gradient
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    loss = nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([1, 2]))
    loss.backward()
    assert _every_param_has_grad(model) == []


@pytest.mark.parametrize("name", ["FBNetV2_F1", "fbnet_a"])
def test_torchscript_scripting_matches_eager(name):
    model = mobile_cv.build_model(name, num_classes=10).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


def test_width_and_depth_multipliers():
    base = mobile_cv.build_model("FBNetV2_F1")
    wide = mobile_cv.build_model("FBNetV2_F1", width_mult=1.5)
    deep = mobile_cv.build_model("FBNetV2_F1", depth_mult=2.0)
    shallow = mobile_cv.build_model("FBNetV2_F1", depth_mult=0.5)
    f0, p0 = mobile_cv.count_flops_params(base, 128)
    assert mobile_cv.count_flops_params(wide, 128)[0] > 1.5 * f0
    n = lambda m: len(m.backbone.stages)  # noqa: E731
    assert n(deep) > n(base) > n(shallow)
    # every stage keeps at least one block; widths stay multiples of 8
    assert len({s["stage"] for s in shallow.backbone.stage_info}) == len(base.backbone.stage_info)
    assert all(row[1] % 8 == 0 for stage in wide.arch_def["blocks"] for row in stage)


def test_custom_op_registration_and_use_in_arch_def():
    @mobile_cv.OPS.register("test_dw_only")
    def build(in_channels, out_channels, stride, kernel_size=3):
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2))

    try:
        arch = {"input_size": 32, "blocks": [[["conv_k3", 8, 2, 1]], [["test_dw_only", 16, 2, 2, {"kernel_size": 5}]]]}
        model = mobile_cv.build_model(arch, num_classes=3)
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
        assert model.backbone.stages.xif1_1[0].kernel_size == (5, 5)
        assert model.backbone.stages.xif1_1[0].stride == (1, 1)  # repeats after the first use stride 1
    finally:
        mobile_cv.OPS.unregister("test_dw_only")


def _check_masked_row(block, x, net, labels, widths):
    """Every combination of the options of ``labels`` gives ``max(widths)`` channels at stride 2,
    zero beyond the chosen width (the row's ``.channels`` choice); the outputs in product order."""
    outs = []
    for index in itertools.product(*(range(net.choices[label].size) for label in labels)):
        w = net.one_hot(dict(zip(labels, index)))
        with torch.no_grad():
            y = block(x, w)
        c = widths[index[labels.index("xif1_0.channels")]]
        assert y.shape == (x.shape[0], max(widths), x.shape[-2] // 2, x.shape[-1] // 2), (index, tuple(y.shape))
        assert y[:, c:].abs().sum() == 0 and y[:, :c].abs().sum() > 0, (index, c)  # masked to the chosen width
        outs.append(y)
    return outs


def _tiny_arch(row, **top):
    # stem 8 channels at stride 1, then the row under test (block xif1_0) at stride 2, on 16x16 inputs
    return {"input_size": 16, "blocks": [[["conv_k3", 8, 1, 1]], [row]], **top}


@pytest.mark.parametrize("name", mobile_cv.OPS.names())
def test_every_registered_op_name_builds_with_its_channels_and_stride(name):
    """Every name in the registry, looked up by name, builds a block with the row's output
    channels and stride on a tiny input (search ops through a supernet). A newly registered
    op that no branch below knows how to build fails here instead of going untested."""
    from mobile_cv.search import SEARCH_OPS, build_supernet
    from mobile_cv.search.masked import SearchBlock
    from mobile_cv.search.mixed import MixedBlock, SubsampledRes

    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    if name in PLAIN_OPS:
        kwargs = {"expansion": 2} if "expansion" in (mobile_cv.OPS.get(name).accepted_kwargs() or ()) else {}
        model = mobile_cv.build_model(_tiny_arch([name, 24, 2, 1, kwargs]), num_classes=3).eval()
        block = model.backbone.stages.xif1_0
        with torch.no_grad():
            y = block(model.backbone.stages.xif0_0(x))
        assert y.shape[:2] == (2, 24)
        # stride 2 halves 16x16 to 8x8; the pooling IR block ends in a global pool
        assert y.shape[-2:] == ((1, 1) if name.startswith("ir_pool") else (8, 8))
        return
    assert name in SEARCH_OPS, f"registered op {name!r} is neither a plain OpSpec nor a known search op"
    if name == "masked-channel":
        row = ["masked-channel", 24, 2, 1, {"op": "ir_k3_se", "channels": [8, 16, 24], "expansion": 2}]
        net = build_supernet(_tiny_arch(row), num_classes=3).eval()
        block = net.search_blocks()["xif1_0"]
        assert isinstance(block, MixedBlock) and len(block.candidates) == 1
        assert isinstance(next(iter(block.candidates.values())), SearchBlock)
        with torch.no_grad():
            stem = net.search_blocks()["xif0_0"](x, net.one_hot({}))
        _check_masked_row(block, stem, net, ["xif1_0.channels"], [8, 16, 24])
    elif name == "choice":
        row = ["choice", 24, 2, 1, {"ops": ["ir_k3", "ir_k5_hs", "skip"], "channels": [8, 24], "expansion": 2}]
        net = build_supernet(_tiny_arch(row), num_classes=3).eval()
        block = net.search_blocks()["xif1_0"]
        assert isinstance(block, MixedBlock) and set(block.candidates) == {"ir_k3", "ir_k5_hs", "skip"}
        with torch.no_grad():
            stem = net.search_blocks()["xif0_0"](x, net.one_hot({}))
        outs = _check_masked_row(block, stem, net, ["xif1_0.op", "xif1_0.channels"], [8, 24])
        # (op, channels) in product order: the three block types at full width differ
        full = [outs[1], outs[3], outs[5]]
        assert not torch.allclose(full[0], full[1]) and not torch.allclose(full[0], full[2])
    else:  # subsampled-res: the resolution search over the whole body
        space = _tiny_arch(["ir_k3", 24, 2, 1, {"expansion": 2}], search={"resolution": [8, 16]})
        net = build_supernet(space, num_classes=3).eval()
        assert isinstance(net.body, SubsampledRes) and net.body.sizes == (8, 16)
        for i, size in enumerate((8, 16)):
            w = net.one_hot({"resolution": i})
            with torch.no_grad():
                y = net.body(x, w)
                # independently: the blocks on a plain strided subsample of the input
                plain = x[:, :, :: 16 // size, :: 16 // size]
                for b in net.search_blocks().values():
                    plain = b(plain, w)
            assert y.shape == (2, 24, 8, 8) and plain.shape == (2, 24, size // 2, size // 2)
            # the output keeps the full-size grid; a global pool sees the subsampled body's mean
            torch.testing.assert_close(y.mean((2, 3)), plain.mean((2, 3)), rtol=1e-5, atol=1e-6)
