"""Tools other than train/search/eval refusing a user's input in one line: space_size's bad spaces,
export's output under a file."""

import pytest

from tests.helpers import _load_tool, one_error_line

SPACE_SIZE_CASES = {
    "unknown_space": (["nosuch"], ("nosuch", "registered")),
    "plain_model": (["FBNetV2_F1"], ("FBNetV2_F1", "nothing to search")),
    "folder": (["{dir}"], ("is a folder",)),
    "bad_json": (["{bad}"], ("bad.json", "JSON")),
}


@pytest.mark.parametrize("case", sorted(SPACE_SIZE_CASES))
def test_space_size_errors_are_one_line(case, capfd, tmp_path):
    (tmp_path / "bad.json").write_text("{")
    argv, words = SPACE_SIZE_CASES[case]
    argv = [a.format(dir=tmp_path, bad=tmp_path / "bad.json") for a in argv]
    capfd.readouterr()
    assert _load_tool("space_size").main(argv) == 2
    one_error_line(capfd.readouterr().err, *words)


@pytest.mark.parametrize("under", ["file", "file_itself"])
def test_export_out_under_a_file(under, capfd, tmp_path):
    (tmp_path / "f").write_text("keep")
    out = tmp_path / "f" / "x" if under == "file" else tmp_path / "f"
    capfd.readouterr()
    rc = _load_tool("export").main(["fbnet_a", "--formats", "torchscript", "--resolution", "32", "--out", str(out)])
    assert rc == 2
    line = one_error_line(capfd.readouterr().err, str(tmp_path / "f"), "is a file")
    assert "--resume" not in line  # an export has nothing to resume
    assert (tmp_path / "f").read_text() == "keep"
