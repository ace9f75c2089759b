"""A new plain block type and its masked form, registered from outside the package, searched."""

import random

import pytest
import torch
from torch import nn

import mobile_cv
from mobile_cv.arch.layers import ConvBNAct
from mobile_cv.arch.ops import OpSpec
from mobile_cv.search import MASKED_BLOCKS, CandidateSpec, SearchBlock, build_supernet, register_masked_block
from mobile_cv.search.masked import Cost, Spatial, apply_mask


class DWSepBlock(nn.Module):
    """Depthwise k x k conv + BN + ReLU, then 1x1 conv + BN (a block type the package does not have)."""

    def __init__(self, in_channels, out_channels, stride=1, kernel_size=3):
        super().__init__()
        self.dw = ConvBNAct(in_channels, in_channels, kernel_size, stride, groups=in_channels, bias=False, act="relu")
        self.pw = ConvBNAct(in_channels, out_channels, 1, bias=False, act=None)
        self.out_channels = out_channels

    def forward(self, x):
        return self.pw(self.dw(x))


class MaskedDWSepBlock(DWSepBlock, SearchBlock):
    """Built at the maximum widths; the depthwise output keeps the input's width, the output is masked."""

    def __init__(self, spec: CandidateSpec):
        DWSepBlock.__init__(self, spec.in_space.max, spec.out_space.max, spec.stride, **spec.fixed)
        self.in_space, self.out_space, self.op, self.stride = spec.in_space, spec.out_space, spec.op, spec.stride

    def forward(self, x, weights):
        y = apply_mask(self.dw(x), self.in_space, weights)
        return apply_mask(self.pw(y), self.out_space, weights)

    def cost(self, spatial: Spatial, weights):
        out = spatial.strided(self.stride)
        cin, cout, area = self.in_space.eff(weights), self.out_space.eff(weights), out.area(weights)
        k = self.dw.conv.kernel_size[0]
        c = Cost()
        c.add(k * k * cin * area, k * k * cin)  # depthwise
        c.add(cin * cout * area, cin * cout)  # 1x1
        return c, out

    def derive_kwargs(self, index, c_in):
        return {}


@pytest.fixture
def dwsep():
    mobile_cv.OPS.register("test_dwsep_k3", OpSpec(DWSepBlock, {"kernel_size": 3}))
    register_masked_block(DWSepBlock)(MaskedDWSepBlock)
    yield
    mobile_cv.OPS.unregister("test_dwsep_k3")
    MASKED_BLOCKS.unregister(f"{DWSepBlock.__module__}.{DWSepBlock.__qualname__}")


def test_a_registered_masked_form_is_searched_exactly(dwsep):
    space = {
        "input_size": 32,
        "basic_args": {"width_divisor": 8},
        "search": {"resolution": [16, 32]},
        "blocks": [
            [["masked-channel", 16, 2, 1, {"op": "conv_k3_hs", "channels": [8, 16]}]],
            [
                [
                    "choice",
                    32,
                    2,
                    2,
                    {"ops": ["ir_k3", "test_dwsep_k3", "skip"], "channels": (16, 32, 8), "expansion": [2, 4]},
                ]
            ],
            [["ir_pool_hs", 64, 1, 1, {"expansion": 4}]],
        ],
    }
    net = build_supernet(space, num_classes=10).eval()
    assert any(type(c) is MaskedDWSepBlock for b in net.search_blocks().values() for c in b.candidates.values())
    g = torch.Generator().manual_seed(0)
    for m in net.modules():  # non-trivial BN statistics, so masked-out channels would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    x = torch.randn(2, 3, 32, 32)
    rng, seen = random.Random(0), set()
    for _ in range(12):
        index = {label: rng.randrange(c.size) for label, c in net.choices.items()}
        w = net.one_hot(index)
        arch = net.derive_arch(w)
        seen |= {row[0] for stage in arch["blocks"] for row in stage}
        model = mobile_cv.build_model(arch, num_classes=10).eval()
        net.copy_to(model, w)
        take = torch.div(torch.arange(arch["input_size"]) * 32, arch["input_size"], rounding_mode="floor")
        with torch.no_grad():
            torch.testing.assert_close(net(x, w), model(x[:, :, take][:, :, :, take]), atol=1e-5, rtol=1e-5)
        flops, params = mobile_cv.count_flops_params(model, arch["input_size"])
        assert net.expected_cost("flops", w).item() == pytest.approx(flops, rel=1e-5)
        assert net.expected_cost("params", w).item() == pytest.approx(params, rel=1e-5)
    assert "test_dwsep_k3" in seen
