"""The config system: defaults, YAML files, command-line overrides and their errors."""

import glob
import os
import re

import pytest

from mobile_cv.config import ConfigError, UnknownConfigKeyError, check_config, get_cfg
from mobile_cv.engine import setup_cfg
from tests.helpers import ROOT

DEFAULTS = os.path.join(ROOT, "mobile_cv", "config", "defaults.py")


def test_get_cfg_returns_a_fresh_clone_with_a_version():
    cfg = get_cfg()
    assert cfg.VERSION == 1
    cfg.SOLVER.BASE_LR = 123.0
    assert get_cfg().SOLVER.BASE_LR != 123.0


def test_issue_keys_exist():
    keys = set(get_cfg().all_keys())
    for key in [
        "MODEL.ARCH",
        "MODEL.NUM_CLASSES",
        "MODEL.IN_CHANS",
        "MODEL.DROP_RATE",
        "DATA.NAME",
        "DATA.ROOT",
        "DATA.INPUT_SIZE",
        "DATA.VAL_FRACTION",
        "DATA.TEST_FRACTION",
        "DATA.NUM_WORKERS",
        "DATA.LIMIT",
        "SOLVER.EPOCHS",
        "SOLVER.BATCH_SIZE",
        "SOLVER.BASE_LR",
        "SOLVER.MOMENTUM",
        "SOLVER.WEIGHT_DECAY",
        "SOLVER.WARMUP_EPOCHS",
        "SOLVER.LR_SCHEDULER",
        "SOLVER.LABEL_SMOOTHING",
        "SOLVER.EMA.ENABLED",
        "SOLVER.EMA.DECAY",
        "SEARCH.SPACE",
        "SEARCH.MODE",
        "SEARCH.EPOCHS",
        "SEARCH.WARMUP_EPOCHS",
        "SEARCH.WEIGHT_SPLIT",
        "SEARCH.TEMPERATURE.INIT",
        "SEARCH.TEMPERATURE.FINAL",
        "SEARCH.ALPHA.OPTIMIZER",
        "SEARCH.ALPHA.LR",
        "SEARCH.ALPHA.WEIGHT_DECAY",
        "SEARCH.WEIGHTS.MOMENTUM",
        "SEARCH.WEIGHTS.LR",
        "SEARCH.WEIGHTS.WEIGHT_DECAY",
        "SEARCH.COST.KIND",
        "SEARCH.COST.FORM",
        "SEARCH.COST.FBNET_SCALE",
        "SEARCH.COST.FBNET_EXPONENT",
        "SEARCH.COST.TARGET",
        "SEARCH.COST.TARGET_WEIGHT",
        "OUTPUT_DIR",
        "SEED",
        "DEVICE",
        "SEARCH.SAMPLED_CHOICES",
        "SEARCH.RECOMPUTE_BLOCKS",
        "SEARCH.ALPHA.SCHEDULE",
        "SEARCH.COST.TOLERANCE",
        "SEARCH.COST.EXPONENT",
    ]:
        assert key in keys, key
    cfg = get_cfg()
    assert (cfg.SEARCH.TEMPERATURE.INIT, cfg.SEARCH.TEMPERATURE.FINAL, cfg.SEARCH.WEIGHT_SPLIT) == (5.0, 0.5, 0.8)
    assert (cfg.SEARCH.ALPHA.LR, cfg.SEARCH.ALPHA.WEIGHT_DECAY, cfg.SEARCH.ALPHA.SCHEDULE) == (0.04, 0.0, "spread")
    assert list(cfg.SEARCH.SAMPLED_CHOICES) == ["resolution"] and cfg.SEARCH.COST.TOLERANCE == 0.05
    assert (cfg.SEARCH.WEIGHTS.LR, cfg.SEARCH.WEIGHTS.MOMENTUM, cfg.SEARCH.WEIGHTS.WEIGHT_DECAY) == (0.1, 0.9, 1e-4)


def test_every_key_is_commented():
    """Each assignment sits in a block (no blank line) that starts with a comment, or has its own."""
    lines = open(DEFAULTS).read().splitlines()
    for i, line in enumerate(lines):
        if not re.match(r"_C(\.\w+)+ = ", line) or "_YacsNode()" in line:
            continue
        j = i
        while j > 0 and lines[j - 1].strip() and not lines[j - 1].lstrip().startswith("#"):
            j -= 1
        assert "#" in line or (j > 0 and lines[j - 1].lstrip().startswith("#")), f"uncommented: {line}"


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))))
def test_shipped_configs_load(path):
    cfg = setup_cfg(path)
    assert cfg.is_frozen() and cfg.OUTPUT_DIR.startswith("output/")


def test_shipped_configs_cover_the_three_datasets():
    names = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.yaml"))}
    for ds in ("embedded_mnist", "imagenet", "cifar10"):
        assert {f"search_{ds}.yaml", f"train_{ds}.yaml"} <= names


def test_command_line_overrides_and_coercion():
    cfg = setup_cfg(
        "", ["SOLVER.BASE_LR", "1", "DATA.LIMIT", "64", "MODEL.ARCH", "out/arch_def.json", "SOLVER.EMA.ENABLED", "True"]
    )
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.DATA.LIMIT == 64 and cfg.MODEL.ARCH == "out/arch_def.json" and cfg.SOLVER.EMA.ENABLED is True


def test_yaml_number_without_dot_is_read_as_a_float(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("SOLVER:\n  WEIGHT_DECAY: 1e-4\n  BASE_LR: 1\n")  # PyYAML reads 1e-4 as a string
    cfg = get_cfg()
    cfg.merge_from_file(str(f))
    assert cfg.SOLVER.WEIGHT_DECAY == 1e-4 and cfg.SOLVER.BASE_LR == 1.0


def test_unknown_key_on_the_command_line_names_the_closest_keys():
    with pytest.raises(UnknownConfigKeyError) as e:
        setup_cfg("", ["SOLVER.BASE_RL", "0.1"])
    msg = str(e.value)
    assert '"SOLVER.BASE_RL"' in msg and "does not exist" in msg and '"SOLVER.BASE_LR"' in msg
    assert isinstance(e.value, KeyError)  # code catching yacs' KeyError still works


def test_unknown_key_without_its_group_is_found_by_its_last_part():
    with pytest.raises(UnknownConfigKeyError) as e:
        setup_cfg("", ["TEMPERATURE_INIT", "3"])
    assert '"SEARCH.TEMPERATURE.INIT"' in str(e.value)


def test_unknown_key_in_a_file_names_the_file_and_closest_keys(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("SEARCH:\n  COST:\n    TARGT: 5\n")
    with pytest.raises(UnknownConfigKeyError) as e:
        setup_cfg(str(f))
    msg = str(e.value)
    assert '"SEARCH.COST.TARGT"' in msg and str(f) in msg and '"SEARCH.COST.TARGET"' in msg


@pytest.mark.parametrize(
    "opts,needle",
    [
        (["DATA.LIMIT", "abc"], "DATA.LIMIT (command line): expected type int"),
        (["SOLVER.EPOCHS", "1.5"], "SOLVER.EPOCHS (command line): expected type int"),
        (["SOLVER", "3"], "is a group of keys"),
        (["SOLVER.EPOCHS"], "KEY VALUE pairs"),
        (["VERSION", "2"], "VERSION 2"),
        (["DEVICE", "gpu"], "DEVICE must be one of ['auto', 'cpu', 'cuda']"),
        (["SEARCH.COST.FORM", "targte"], 'did you mean "target"'),
        (["SEARCH.WEIGHT_SPLIT", "1.0"], "SEARCH.WEIGHT_SPLIT must be a finite float in (0, 1)"),
        (["SOLVER.BATCH_SIZE", "0"], "SOLVER.BATCH_SIZE must be an int in [1, 1048576]"),
        (["SOLVER.EPOCHS", "3", "--resume"], "put flags first"),
    ],
)
def test_bad_values_are_explained(opts, needle):
    with pytest.raises(ConfigError) as e:
        setup_cfg("", opts)
    assert needle in str(e.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        setup_cfg(str(tmp_path / "nope.yaml"))
    f = tmp_path / "list.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        setup_cfg(str(f))


def test_dumped_config_round_trips(tmp_path):
    cfg = setup_cfg("", ["SOLVER.EPOCHS", "3", "SEARCH.COST.TARGET", "12.5", "DATA.NAME", "cifar10"])
    f = tmp_path / "config.yaml"
    f.write_text(cfg.dump())
    again = get_cfg()
    again.merge_from_file(str(f))
    check_config(again)
    assert again.flat_items() == cfg.flat_items()


def test_frozen_config_refuses_changes():
    cfg = setup_cfg()
    with pytest.raises(AttributeError):
        cfg.SOLVER.EPOCHS = 3


def test_renamed_keys_still_work_with_a_deprecation_line(caplog):
    """SEARCH.COST.ALPHA/BETA (FBNet's coefficients) became FBNET_SCALE/FBNET_EXPONENT: "alpha" means
    the architecture logits only. The old names set the new keys for one release, with a warning."""
    import logging

    logging.getLogger("mobile_cv").addHandler(caplog.handler)
    try:
        cfg = get_cfg()
        cfg.merge_from_list(["SEARCH.COST.ALPHA", "0.3", "SEARCH.COST.BETA", "0.5"])
    finally:
        logging.getLogger("mobile_cv").removeHandler(caplog.handler)
    assert (cfg.SEARCH.COST.FBNET_SCALE, cfg.SEARCH.COST.FBNET_EXPONENT) == (0.3, 0.5)
    assert "SEARCH.COST.ALPHA (command line) is renamed SEARCH.COST.FBNET_SCALE" in caplog.text
    assert "ALPHA" not in cfg.SEARCH.COST and "BETA" not in cfg.SEARCH.COST


def test_a_config_holds_only_what_differs_from_its_base(tmp_path):
    """_BASE_ (detectron2's convention): the base first, then the file; a path relative to the file."""
    (tmp_path / "base.yaml").write_text("SEARCH:\n  EPOCHS: 7\n  COST:\n    TARGET: 0.3\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("_BASE_: ../base.yaml\nSEARCH:\n  COST:\n    TARGET: 0.5\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(tmp_path / "sub" / "child.yaml"))
    assert (cfg.SEARCH.EPOCHS, cfg.SEARCH.COST.TARGET) == (7, 0.5)
    (tmp_path / "base.yaml").write_text("_BASE_: sub/child.yaml\n")
    with pytest.raises(ConfigError, match="leads back to itself"):
        get_cfg().merge_from_file(str(tmp_path / "sub" / "child.yaml"))
    (tmp_path / "lone.yaml").write_text("_BASE_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"lone.yaml'.*_BASE_ 'nowhere.yaml' does not exist"):
        get_cfg().merge_from_file(str(tmp_path / "lone.yaml"))


def test_the_latency_configs_are_their_flops_configs_but_the_cost():
    for name in ("search_embedded_mnist", "search_imagenet"):
        flops, latency = get_cfg(), get_cfg()
        flops.merge_from_file(os.path.join(ROOT, "configs", f"{name}.yaml"))
        latency.merge_from_file(os.path.join(ROOT, "configs", f"{name}_latency.yaml"))
        differ = {k for k, v in latency.flat_items() if dict(flops.flat_items())[k] != v}
        assert "SEARCH.COST.KIND" in differ and all(k.startswith("SEARCH.COST.") or k == "OUTPUT_DIR" for k in differ)


def test_a_renamed_key_still_works_with_a_warning(caplog):
    cfg = get_cfg()
    cfg.merge_from_list(["SEARCH.CHECKPOINT_BLOCKS", "True"])  # the name before "checkpoint" meant one thing
    assert cfg.SEARCH.RECOMPUTE_BLOCKS is True and "renamed SEARCH.RECOMPUTE_BLOCKS" in caplog.text


@pytest.mark.parametrize("key", ["SOLVER.CHANNELS_LAST", "SEARCH.CHANNELS_LAST"])
def test_channels_last_takes_true_false_or_auto_and_auto_is_resolved_per_device(key, tmp_path):
    import torch

    from mobile_cv.engine.precision import CHANNELS_LAST_MEASURED, resolve_channels_last

    assert get_cfg()[key.split(".")[0]].CHANNELS_LAST == "auto"
    for text, value in (("True", True), ("False", False), ("auto", "auto")):
        cfg = setup_cfg("", [key, text])
        assert cfg[key.split(".")[0]].CHANNELS_LAST == value
    # a dumped config with a bool reads back, and "auto" on top of it too
    path = tmp_path / "c.yaml"
    path.write_text(setup_cfg("", [key, "True"]).dump())
    assert setup_cfg(str(path), [key, "auto"])[key.split(".")[0]].CHANNELS_LAST == "auto"
    for bad in ("1", "yes"):
        with pytest.raises(ConfigError, match=re.escape(key)):
            setup_cfg("", [key, bad])
    kind = "train" if key.startswith("SOLVER") else "search"
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_channels_last("auto", cpu, kind) is CHANNELS_LAST_MEASURED[("cpu", kind)]
    assert resolve_channels_last("auto", cuda, kind) is False  # not measured there: off
    assert resolve_channels_last(False, cpu, kind) is False and resolve_channels_last(True, cuda, kind) is True


def test_malloc_settings_are_one_list_and_bad_values_are_one_line():
    from mobile_cv.config.defaults import CHOICES
    from mobile_cv.engine.allocator import MALLOC_SETTINGS
    from mobile_cv.engine.memory import ALLOCATOR_OVERHEAD

    assert set(CHOICES["MALLOC"]) == set(MALLOC_SETTINGS) == set(ALLOCATOR_OVERHEAD)
    for bad in ("0", "-1", "jemalloc", "keep,return"):
        with pytest.raises(ConfigError, match="MALLOC"):
            setup_cfg("", ["MALLOC", bad])
