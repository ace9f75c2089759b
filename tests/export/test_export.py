"""TorchScript and ONNX exports reproduce the eager model (onnxruntime for ONNX)."""

import importlib.util
import json
import os

import onnx
import pytest
import torch

import mobile_cv
from mobile_cv.export import ONNX_MIN_OPSET, check_onnx, default_formats, export_and_check, export_onnx, to_onnx
from mobile_cv.export.runtimes import RUNTIMES, RuntimeUnavailableError
from mobile_cv.export.to_onnx import DYNAMO_OPSET
from model_zoo import resolve_model
from tests.helpers import ROOT

ATOL = 1e-4


def load_tool():
    spec = importlib.util.spec_from_file_location("export_tool", os.path.join(ROOT, "tools", "export.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_fbnetv2_f1_exports_match_eager(tmp_path):
    torch.manual_seed(0)
    model, name = resolve_model("FBNetV2_F1")
    # TorchScript and the TorchScript-based ONNX exporter: still there, asked for by name
    formats = ("torchscript", "onnx")
    results = export_and_check(model, str(tmp_path), name, 128, formats, batch=2, onnx_exporter="torchscript")
    assert set(results) == {"torchscript", "onnx"}
    for fmt, r in results.items():
        print(f"{fmt}: max abs diff {r.max_abs_diff:.3g}")
        assert os.path.isfile(r.path) and r.max_abs_diff <= ATOL
    assert results["onnx"].path.endswith("FBNetV2_F1.onnx")
    opset = {o.domain: o.version for o in onnx.load(results["onnx"].path).opset_import}[""]
    assert opset >= ONNX_MIN_OPSET


def test_tool_exports_an_arch_def_file_with_its_weights(tmp_path, capsys):
    """A derived arch def (as a search writes it) plus its trained weights, end to end."""
    arch = {
        "input_size": 32,
        "basic_args": {"width_divisor": 8},
        "blocks": [
            [["conv_k3_hs", 8, 2, 1]],
            [["ir_k5_sehsig", 16, 2, 2, {"expansion": 3}]],
            [["ir_pool_hs", 64, 1, 1, {"expansion": 4}]],
        ],
    }
    arch_file = tmp_path / "arch_def.json"
    arch_file.write_text(json.dumps(arch))
    trained = mobile_cv.build_model(arch, num_classes=10)
    torch.save({"model_ema": {"module." + k: v for k, v in trained.state_dict().items()}}, tmp_path / "model.pth")
    out = tmp_path / "export"
    code = load_tool().main(
        [str(arch_file), "--weights", str(tmp_path / "model.pth"), "--num-classes", "10", "--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert sorted(os.listdir(out)) == ["arch_def.onnx", "arch_def.pt2", "arch_def.pte"]  # the default formats
    assert printed.count(" ok ") == 3
    loaded = torch.export.load(str(out / "arch_def.pt2")).module()
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(loaded(x), trained.eval()(x), atol=ATOL, rtol=0)


TINY = {
    "input_size": 32,
    "basic_args": {"width_divisor": 8},
    "blocks": [[["conv_k3_hs", 8, 2, 1]], [["ir_k3_sehsig", 16, 2, 1, {"expansion": 3}]], [["ir_pool_hs", 32, 1, 1]]],
}


def onnx_opset(path):
    return {o.domain: o.version for o in onnx.load(path).opset_import}[""]


def test_default_formats_are_the_ones_to_deploy_from_where_installed(tmp_path, monkeypatch):
    """ExecuTorch, .pt2 and ONNX (the dynamo exporter: opset 18) by default; TorchScript only by name;
    a format whose packages are missing drops out of the default."""
    assert default_formats() == ("executorch", "pt2", "onnx")  # all three installed by the test extra
    model = mobile_cv.build_model(TINY, num_classes=10)
    results = export_and_check(model, str(tmp_path), "tiny", 32)
    assert set(results) == {"executorch", "pt2", "onnx"}
    assert all(r.max_abs_diff <= ATOL for r in results.values()), results
    assert onnx_opset(results["onnx"].path) == DYNAMO_OPSET
    assert not any(name.endswith(".pt") for name in os.listdir(tmp_path))

    def missing(self, int8=False):
        raise RuntimeUnavailableError("executorch is not installed")

    monkeypatch.setattr(RUNTIMES.get("executorch"), "require", missing)
    assert default_formats() == ("pt2", "onnx")


@pytest.mark.parametrize("why", ["onnxscript missing", "dynamo export fails"])
def test_onnx_falls_back_to_the_torchscript_exporter_with_one_line(why, tmp_path, monkeypatch, caplog):
    model = mobile_cv.fuse_for_inference(mobile_cv.build_model(TINY, num_classes=10).eval())
    if why == "onnxscript missing":
        real = to_onnx.importlib.util.find_spec
        monkeypatch.setattr(to_onnx.importlib.util, "find_spec", lambda n, *a: None if n == "onnxscript" else real(n))
        said = "needs the onnxscript package"
    else:

        def fails(*args):
            raise RuntimeError("no lowering for aten::made_up\nmore lines")

        monkeypatch.setattr(to_onnx, "_dynamo_bytes", fails)
        said = "failed on this model (RuntimeError: no lowering for aten::made_up)"
    path = str(tmp_path / "tiny.onnx")
    with caplog.at_level("WARNING", logger="mobile_cv.export"):
        export_onnx(model, torch.zeros(1, 3, 32, 32), path)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "mobile_cv.export"]
    assert said in line and "TorchScript-based exporter" in line
    assert onnx_opset(path) == ONNX_MIN_OPSET  # the older exporter's file
    assert check_onnx(path, model, torch.randn(2, 3, 32, 32)) <= ATOL


def test_tool_fails_when_outputs_differ_and_on_bad_input(tmp_path, capsys, monkeypatch):
    tool = load_tool()
    # a real export whose check reports outputs apart from eager's: a difference stood in, as
    # onnxruntime can match eager bit for bit (it did, after other tests had run in this process)
    monkeypatch.setattr(RUNTIMES.get("onnxruntime"), "check", lambda self, path, model, inputs: 0.5)
    args = ["fbnet_a", "--formats", "onnx", "--resolution", "64", "--atol", "1e-3", "--out", str(tmp_path)]
    assert tool.main(args) == 3
    out = capsys.readouterr().out
    assert "FAILED" in out and "max abs diff vs eager 0.5" in out
    assert tool.main(["FBNetV2_F9", "--out", str(tmp_path)]) == 2
    assert 'neither a zoo entry nor a registered arch; did you mean "FBNetV2_F' in capsys.readouterr().err
    assert tool.main(["FBNetV2_F1", "--checkpoint", str(tmp_path / "none.pth"), "--out", str(tmp_path)]) == 2


def test_onnx_opset_below_17_is_refused(tmp_path):
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_onnx(torch.nn.Identity(), torch.zeros(1), str(tmp_path / "x.onnx"), opset=13)


@pytest.mark.parametrize("name", ["FBNetV2_F1", "fbnet_a"])
def test_a_pt2_round_trip_equals_eager_at_any_batch(name, tmp_path):
    """torch.export's program, saved and loaded back (torch.export.load), on batches of 1 and 3."""
    model = mobile_cv.build_model(name).eval()
    results = export_and_check(model, str(tmp_path), name, 64, formats=["pt2"])
    assert results["pt2"].max_abs_diff < ATOL and results["pt2"].path.endswith(".pt2")
    loaded = torch.export.load(results["pt2"].path).module()
    for batch in (1, 3):
        x = torch.randn(batch, 3, 64, 64)
        torch.testing.assert_close(loaded(x), model(x), atol=ATOL, rtol=0)
