"""BN folding is exact; ExecuTorch .pte files (fp32 and int8) reproduce the eager model in ExecuTorch's runtime.

The ExecuTorch tests skip where executorch is not installed (``pip install -e .[test]`` installs it).
"""

import importlib.util
import os

import pytest
import torch

import mobile_cv
from mobile_cv.arch.arch_registry import arch_def_names
from mobile_cv.arch.fuse import count_batchnorms
from mobile_cv.export import ExportError, export_and_check, export_executorch, export_executorch_int8
from model_zoo import resolve_model
from tests.helpers import ROOT

FP32_ATOL = 1e-4
FOLD_ATOL = 1e-5
MNIST_CONFIG = os.path.join(ROOT, "configs", "train_embedded_mnist.yaml")
SEARCHED_ARCH = os.path.join(ROOT, "model_zoo", "weights", "mnist_dmasking_1p5m.json")


def randomize_batchnorms(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random running statistics and affine parameters, so folding them is far from the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g) * 0.5)
    return model.eval()


def load_tool():
    spec = importlib.util.spec_from_file_location("export_tool", os.path.join(ROOT, "tools", "export.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.mark.parametrize("arch", arch_def_names("model"))
def test_folding_is_exact_on_every_released_arch(arch):
    model = randomize_batchnorms(mobile_cv.build_model(arch, num_classes=10)).train()
    bns = count_batchnorms(model)
    folded = mobile_cv.fuse_for_inference(model)
    assert bns > 0 and count_batchnorms(folded) == 0 and not folded.training
    assert count_batchnorms(model) == bns and model.training  # the original is untouched
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model.eval()(x), folded(x)
    assert expected.abs().max() > 0.1  # not a trivially tiny output
    torch.testing.assert_close(got, expected, atol=FOLD_ATOL, rtol=0)


@pytest.mark.parametrize(
    "spec,size",
    [("FBNetV2_F1", 64), (SEARCHED_ARCH, 24)],
    ids=["FBNetV2_F1", "searched_mnist_arch"],
)
def test_fp32_pte_matches_eager_in_executorch(spec, size, tmp_path):
    pytest.importorskip("executorch")
    from mobile_cv.export import run_executorch

    model, name = resolve_model(spec, num_classes=10)
    randomize_batchnorms(model)
    results = export_and_check(model, str(tmp_path), name, size, formats=["executorch"], batch=3)
    r = results["executorch"]
    print(f"{name}: .pte {r.size_bytes} bytes, max abs diff vs eager {r.max_abs_diff:.3g}")
    assert r.path.endswith(f"{name}.pte") and r.size_bytes == os.path.getsize(r.path)
    assert r.max_abs_diff <= FP32_ATOL
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(run_executorch(r.path, x), model(x), atol=FP32_ATOL, rtol=0)


def test_int8_pte_of_the_bundled_model_keeps_top1_on_the_held_out_digits(tmp_path):
    """Calibrated on 256 train digits, checked on all 1000 val+test digits (the fp32 .pte too, for its size)."""
    pytest.importorskip("executorch")
    model, name = resolve_model("mnist_dmasking_1p5m", pretrained=True)
    results = export_and_check(
        model, str(tmp_path), name, model.input_size, formats=["executorch"], int8=True, calib_data=MNIST_CONFIG
    )
    fp32, int8 = results["executorch"], results["executorch_int8"]
    acc = int8.accuracy
    print(
        f"eager top-1 {acc.eager_top1:.2f}%, int8 .pte {acc.exported_top1:.2f}% on {acc.images} digits; agreement "
        f"{acc.agreement:.2f}%; fp32 .pte {fp32.size_bytes} bytes (max abs diff {fp32.max_abs_diff:.3g}), "
        f"int8 .pte {int8.size_bytes} bytes"
    )
    assert fp32.max_abs_diff <= FP32_ATOL
    assert int8.path.endswith(f"{name}_int8.pte") and acc.source.startswith("val+test of")
    assert acc.images == 1000
    assert acc.eager_top1 >= 97.0 and acc.loss <= 1.0 and acc.agreement >= 98.0
    assert int8.size_bytes < 0.5 * fp32.size_bytes


def test_tool_exports_a_searched_arch_with_its_weights_to_executorch(tmp_path, capsys):
    """The command line end to end on the bundled arch file and weights, as a search + training leave them
    (calibrating on 64 train digits only, to stay quick)."""
    pytest.importorskip("executorch")
    weights = os.path.join(ROOT, "model_zoo", "weights", "mnist_dmasking_1p5m.pth")
    args = [SEARCHED_ARCH, "--weights", weights, "--num-classes", "10", "--in-chans", "1", "--format", "executorch"]
    args += ["--int8", "--calib-data", MNIST_CONFIG, "--calib-images", "64", "--out", str(tmp_path)]
    code = load_tool().main(args)
    printed = capsys.readouterr().out
    print(printed)
    assert code == 0, printed
    assert "max abs diff vs eager" in printed and "on 1000 images (val+test of" in printed
    assert printed.count(" ok ") == 2
    assert sorted(os.listdir(tmp_path)) == ["mnist_dmasking_1p5m.pte", "mnist_dmasking_1p5m_int8.pte"]


def test_int8_refuses_random_calibration_unless_allowed(tmp_path, capsys):
    pytest.importorskip("executorch")
    model, _ = resolve_model(SEARCHED_ARCH, num_classes=10)
    with pytest.raises(ValueError, match="needs real calibration images"):
        export_executorch_int8(model, torch.zeros(1, 3, 24, 24), str(tmp_path / "x.pte"))
    assert not (tmp_path / "x.pte").exists()
    tool = load_tool()
    assert tool.main([SEARCHED_ARCH, "--format", "executorch", "--int8", "--out", str(tmp_path)]) == 2
    assert "--calib-data" in capsys.readouterr().err
    # the data must fit the model: MNIST digits have one channel, this model takes three
    assert tool.main([SEARCHED_ARCH, "--format", "executorch", "--int8", "--calib-data", MNIST_CONFIG]) == 2
    assert "1 channel(s), the model takes 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main([SEARCHED_ARCH, "--int8", "--formats", "onnx"])  # int8 is an ExecuTorch export
    assert tool.main([SEARCHED_ARCH, "--int8", "--out", str(tmp_path)]) == 2  # ExecuTorch by default here
    assert "--calib-data" in capsys.readouterr().err


class DataDependentGate(torch.nn.Module):
    def forward(self, x):
        return x * 2 if x.mean() > 0 else x


class BesselGate(torch.nn.Module):
    def forward(self, x):
        return x * torch.special.bessel_j0(x)  # not in the core ATen opset ExecuTorch lowers


@pytest.mark.parametrize(
    "bad,expected",
    [
        (DataDependentGate, "at torch.export: data-dependent Python control flow"),
        (BesselGate, "operator aten.special_bessel_j0.default"),
    ],
)
def test_an_unexportable_op_gives_an_error_naming_it(bad, expected, tmp_path):
    pytest.importorskip("executorch")
    arch = {
        "input_size": 32,
        "basic_args": {"width_divisor": 8},
        "blocks": [[["conv_k3_hs", 8, 2, 1]], [["ir_k3", 16, 2, 1]]],
    }
    model = mobile_cv.build_model(arch, num_classes=10).eval()
    model.backbone.stages.xif1_0.dw.act = bad()
    with pytest.raises(ExportError) as e:
        export_executorch(model, torch.zeros(1, 3, 32, 32), str(tmp_path / "bad.pte"))
    message = str(e.value)
    print(message)
    assert expected in message
    assert f"in module 'backbone.stages.xif1_0.dw.act' ({__name__}.{bad.__name__})" in message
    assert not (tmp_path / "bad.pte").exists()
