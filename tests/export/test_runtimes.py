"""mobile_cv.export.runtimes: each runtime registered once, used by export, latency tables and benchmarks."""

import io

import pytest
import torch

import mobile_cv
from mobile_cv import export
from mobile_cv.export.errors import ExportSettingsError
from mobile_cv.export.runtimes import RUNTIMES, Runtime, get_runtime, timed_runtimes
from mobile_cv.latency.runtimes import RUNTIMES as LATENCY_RUNTIMES


def tiny():
    arch = {"input_size": 16, "blocks": [[["conv_k3_hs", 8, 2, 1]], [["ir_k3", 8, 1, 1, {"expansion": 2}]]]}
    return mobile_cv.build_model(arch, num_classes=3).eval()


def test_the_formats_and_the_timed_runtimes_are_the_registry():
    assert export.FORMATS == ("torchscript", "onnx", "executorch", "pt2")
    assert LATENCY_RUNTIMES == timed_runtimes() == ("executorch", "onnxruntime", "eager")


@pytest.mark.parametrize("name", RUNTIMES.registered())
def test_every_runtime_compiles_loads_and_runs_like_eager(name):
    rt = get_runtime(name)
    try:
        rt.require()
    except export.RuntimeUnavailableError as e:
        pytest.skip(str(e))
    model, x = tiny(), torch.randn(1, 3, 16, 16)
    rt.set_threads(1)
    out = rt.load(rt.compile(mobile_cv.fuse_for_inference(model), x), x, threads=1)()
    out = out[0] if isinstance(out, (list, tuple)) else out
    with torch.no_grad():
        assert torch.allclose(torch.as_tensor(out), model(x), atol=1e-4)


def test_a_runtime_registered_by_a_user_is_an_export_format(tmp_path):
    class Saved(Runtime):  # a state-dict file: the smallest runtime there is
        format, file = "state", ".sd"

        def compile(self, folded, example, int8=False, **options):
            buffer = io.BytesIO()
            torch.save(folded, buffer)
            return buffer.getvalue()

        def check(self, path, model, inputs):
            with torch.no_grad():
                return float((torch.load(path, weights_only=False)(inputs) - model(inputs)).abs().max())

    RUNTIMES.register("state", Saved)
    try:
        results = export.export_and_check(tiny(), str(tmp_path), "m", 16, formats=["state"])
    finally:
        RUNTIMES.unregister("state")
    assert results["state"].path.endswith("m.sd") and results["state"].max_abs_diff < 1e-5
    with pytest.raises(ExportSettingsError, match="unknown export format 'state'; valid"):
        export.export_and_check(tiny(), str(tmp_path), "m", 16, formats=["state"])
