"""One range table, every tool (issue 18): every numeric config key and every numeric flag of every
tool has one range in mobile_cv.config (CONFIG_RANGES, FLAG_RANGES), and a value outside it is
refused in one line before anything is written."""

import os

import pytest

from tests.helpers import ROOT, SEARCH, TRAIN, _load_tool, one_error_line, train_args

ALL_TOOLS = sorted(
    os.path.splitext(f)[0]
    for f in os.listdir(os.path.join(ROOT, "tools"))
    if f.endswith(".py") and not f.startswith("_")  # tools/__init__.py: the package of the installed commands
)


def _parsers(name):
    """Every argparse parser tools/<name>.py builds (subcommands included), caught at parse time."""
    import argparse

    module = _load_tool(name)
    caught = []
    real = argparse.ArgumentParser.parse_args

    def catch(self, *a, **k):
        caught.append(self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = catch
    try:
        with pytest.raises(SystemExit):
            module.main([])
    finally:
        argparse.ArgumentParser.parse_args = real
    parsers, todo = [], list(caught)
    while todo:
        p = todo.pop()
        parsers.append(p)
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo.extend(a.choices.values())
    return parsers


def test_every_numeric_config_key_has_one_range():
    from mobile_cv.config import CONFIG_RANGES, get_cfg

    numeric = {
        k
        for k, v in get_cfg().flat_items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "VERSION"
    }
    assert numeric == set(CONFIG_RANGES), (sorted(numeric - set(CONFIG_RANGES)), sorted(set(CONFIG_RANGES) - numeric))


@pytest.mark.parametrize("name", ALL_TOOLS)
def test_every_numeric_flag_of_every_tool_is_range_checked(name):
    from mobile_cv.config import FLAG_RANGES

    flags = 0
    for parser in _parsers(name):
        for a in parser._actions:
            numeric_default = isinstance(a.default, (int, float)) and not isinstance(a.default, bool)
            if a.type in (int, float) or (numeric_default and a.type is None and a.nargs != 0):
                pytest.fail(f"tools/{name}.py {a.option_strings}: a number without flag_type (no range check)")
            if hasattr(a.type, "flag_range"):
                flags += 1
                assert a.type.flag_range is FLAG_RANGES[a.option_strings[0]], a.option_strings
                if a.default is not None:  # the default itself is valid
                    values = a.default if isinstance(a.default, (list, tuple)) else [a.default]
                    assert all(a.type.flag_range.contains(v) for v in values), (a.option_strings, a.default)
    if name in ("export", "flops", "latency_table", "demo"):
        assert flags > 0


def _outside(r):
    """A value just outside range ``r``, and one of the wrong type."""
    if r.lo_open or r.lo > -1e300:
        low = r.lo if r.lo_open else (r.lo - 1 if r.kind is int else r.lo - max(abs(r.lo), 1) * 0.5)
        return [low, "'abc'"]
    return [r.hi + 1, "'abc'"]


def _config_outside_cases():
    from mobile_cv.config import CONFIG_RANGES

    cases = []
    for key, r in sorted(CONFIG_RANGES.items()):
        for v in _outside(r):
            cases.append((key, str(v)))
        if r.hi < 1e300:
            cases.append((key, str(r.hi * 10 + 1 if r.kind is float else int(r.hi) + 1)))
    return cases


@pytest.mark.parametrize("key,value", _config_outside_cases())
def test_every_config_key_out_of_range_is_one_line(key, value, tool, files, tmp_path):
    name = "search" if key.startswith("SEARCH.") else "train"
    base = ["SEARCH.SPACE", files / "space.json", *SEARCH] if name == "search" else train_args(files, "x")[:2] + TRAIN
    rc, err = tool(name, *base, "OUTPUT_DIR", tmp_path / "o", key, value)
    assert rc == 2
    one_error_line(err, key)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_in_a_yaml_file_are_refused(value, tool, files, tmp_path):
    (tmp_path / "c.yaml").write_text(f"SOLVER:\n  BASE_LR: {value}\n")
    rc, err = tool("train", "--config-file", tmp_path / "c.yaml", *train_args(files, tmp_path / "o"))
    assert rc == 2
    one_error_line(err, "SOLVER.BASE_LR", "finite")
    assert not (tmp_path / "o").exists()


def _flag_cases():
    from mobile_cv.config import FLAG_RANGES

    cases = []
    for name in ALL_TOOLS:
        for parser in _parsers(name):
            for a in parser._actions:
                if hasattr(a.type, "flag_range"):
                    r, flag = a.type.flag_range, a.option_strings[0]
                    prog = parser.prog.split()[1:]  # a subcommand's name
                    low = r.lo if r.lo_open else r.lo - 1
                    for v in (low, "abc", "nan", "inf", r.hi * 10 + 1 if r.hi < 1e300 else None):
                        if v is not None:
                            cases.append((name, tuple(prog), flag, str(v), a.nargs))
    assert {c[2] for c in cases} == set(FLAG_RANGES)  # the table holds no flag no tool has
    return cases


REQUIRED = {"export": ["FBNetV2_F1"], "latency_table": ["mnist_small_space", "--out", "t.json"]}


@pytest.mark.parametrize("name,prog,flag,value,nargs", _flag_cases())
def test_every_flag_out_of_range_is_one_line(name, prog, flag, value, nargs, capfd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    n = nargs if isinstance(nargs, int) else 1
    argv = [*prog, *REQUIRED.get(name, []), flag, *([value] * n)]
    capfd.readouterr()
    with pytest.raises(SystemExit) as e:
        _load_tool(name).main(argv)
    assert e.value.code == 2
    line = one_error_line(capfd.readouterr().err, flag)
    assert "must be" in line
    assert os.listdir(tmp_path) == []
