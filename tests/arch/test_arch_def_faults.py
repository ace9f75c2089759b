"""Bad arch defs, as a user meets them: a file that does not load, a row that does not build, a custom
op that raises; each refused in one line before anything is written (tests/helpers.py: what every
fault test checks)."""

import json

import pytest

from mobile_cv import OPS, build_model
from mobile_cv.errors import UserError
from tests.helpers import TRAIN, one_error_line, snapshot, train_args

ARCH_FILE_CASES = {
    "invalid_json": ("a.json", b'{"blocks": [', ("a.json", "JSON")),
    "nan_in_json": ("a.json", b'{"input_size": NaN, "blocks": [[["conv_k3", 8, 2, 1]]]}', ("a.json", "NaN", "finite")),
    "py_syntax_error": ("a.py", b"ARCH_DEF = {'blocks': [\n", ("a.py", "SyntaxError")),
    "py_not_utf8": ("a.py", b"ARCH_DEF = '\xff\xfe'\n", ("a.py", "not valid Python")),
    "json_not_utf8": ("a.json", b'{"blocks": "\xff"}', ("a.json", "UTF-8")),
    "py_raises": ("a.py", b"ARCH_DEF = 1 / 0\n", ("a.py", "ZeroDivisionError")),
    "py_no_arch_def": ("a.py", b"X = 1\n", ("a.py", "ARCH_DEF")),
}


@pytest.mark.parametrize("case", sorted(ARCH_FILE_CASES))
def test_bad_arch_file(case, tool, tmp_path):
    name, content, words = ARCH_FILE_CASES[case]
    (tmp_path / name).write_bytes(content)
    out = tmp_path / "out"
    rc, err = tool("train", "MODEL.ARCH", tmp_path / name, "OUTPUT_DIR", out, *TRAIN)
    assert rc == 2
    one_error_line(err, *words)
    assert not out.exists()  # refused before anything was written


ARCH_ROW_CASES = {
    "unknown_op": ([["conv_k3", 8, 2, 1]], [["ir_k9", 16, 2, 1]], ("ir_k9", "stage 1")),
    "bool_as_string": ([["conv_k3", 8, 2, 1, {"bias": "False"}]], [], ("bias", "true or false")),
    "infinite_number": ([["conv_k3", 8, 2, 1]], [["ir_k3", 16, 2, 1, {"expansion": 1e999}]], ("Infinity", "finite")),
    "zero_channels": ([["conv_k3", 0, 2, 1]], [], ("out_channels",)),
    "bad_stride": ([["conv_k3", 8, 3.5, 1]], [], ("stride",)),
}


@pytest.mark.parametrize("case", sorted(ARCH_ROW_CASES))
def test_bad_arch_row(case, tool, tmp_path):
    s0, s1, words = ARCH_ROW_CASES[case]
    arch = {"input_size": 32, "blocks": [s0] + ([s1] if s1 else [])}
    (tmp_path / "a.json").write_text(json.dumps(arch))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    rc, err = tool("train", "MODEL.ARCH", tmp_path / "a.json", "OUTPUT_DIR", out, *TRAIN)
    assert rc == 2
    one_error_line(err, *words)
    assert snapshot(out) == before


def test_unknown_arch_name_suggests(tool, tmp_path):
    rc, err = tool("train", "MODEL.ARCH", "FBNetV2_F9", "OUTPUT_DIR", tmp_path / "o", *TRAIN)
    assert rc == 2
    one_error_line(err, "FBNetV2_F9", "FBNetV2_F")


def test_input_size_below_stride(tool, files, tmp_path):
    rc, err = tool("train", *train_args(files, tmp_path / "o"), "DATA.INPUT_SIZE", "4")
    assert rc == 2
    one_error_line(err, "DATA.INPUT_SIZE 4", "stride 8")
    assert not (tmp_path / "o").exists()


def test_non_finite_numbers_in_python_arch_defs():
    for bad in (float("nan"), float("inf"), -1.0, True):
        with pytest.raises(UserError, match="width_mult must be a positive finite number"):
            build_model("FBNetV2_F1", width_mult=bad)
    arch = {"input_size": 32, "blocks": [[["conv_k3", 8, 2, 1]], [["ir_k3", 16, 2, 1, {"expansion": float("inf")}]]]}
    with pytest.raises(UserError, match="kwarg 'expansion' must be a finite number"):
        build_model(arch)


def test_exception_in_custom_op_names_op_and_row():
    def broken_op(c_in, c_out, stride, **kw):
        raise ZeroDivisionError("my op divides by zero")

    OPS.register("faults_broken_op", broken_op)
    arch = {"input_size": 32, "blocks": [[["conv_k3", 8, 2, 1]], [["faults_broken_op", 8, 1, 1]]]}
    with pytest.raises(UserError) as e:
        build_model(arch)
    msg = str(e.value)
    assert "faults_broken_op" in msg and "ZeroDivisionError" in msg and "stage 1" in msg and "\n" not in msg
