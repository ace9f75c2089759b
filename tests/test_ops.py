"""Registry-driven tests: every registered op and every registered arch."""

import pytest
import torch
from torch import nn

import arch_defs
import mobile_cv
from mobile_cv.ops import OpSpec

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


def test_every_registered_op_is_covered_by_a_registry_driven_test():
    from mobile_cv.search import SEARCH_OPS

    # plain ops: the forward/backward test above; search ops: tests/test_search.py
    untested = [n for n in mobile_cv.OPS.names() if n not in PLAIN_OPS and n not in SEARCH_OPS]
    assert untested == []
