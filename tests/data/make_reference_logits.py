#!/usr/bin/env python
"""Regenerate ``tests/data/reference_logits.json`` with the reference implementation.

The JSON holds the logits that the **reference implementation**, facebookresearch/mobile-vision,
gives for the 9 architectures of ``tests/data/arch_defs.json`` (FBNetV2_F1-F4, L1, L2 and
fbnet_a/b/c). ``tests/arch/test_published.py::test_reference_implementation_logits`` checks that our
builder reproduces them. The recipe, the same on both sides:

* model: upstream's ``FBNet(arch_def, num_classes=10)`` (``mobile_cv.model_zoo.models.fbnet_v2``:
  ``fbnet_builder.unify_arch_def`` + ``FBNetBuilder.build_blocks`` + a global-pool/1x1-conv head),
  converted with ``.double()`` and put in ``.eval()`` mode;
* weights: ``seeded_state_dict(model.state_dict(), seed=0)`` from ``tests/seeded_weights.py``
  (loaded by file path), loaded with ``strict=True``;
* input: ``seeded_input(64, seed=1, batch=2)``, a float64 batch of two 3x64x64 images;
* output: ``{"source", "recipe", "models": {name: {"resolution", "num_classes", "logits"}}}``,
  written with ``json.dumps(..., indent=1)`` plus a newline. ``json`` writes floats with
  ``repr``, so the float64 values round-trip exactly.

This script is **not run in CI** and pytest does not collect it. Upstream's package is also
named ``mobile_cv`` and collides with this project's, so install it into a separate virtual
environment that does not contain this project, and run the script from outside this
repository (its root must not be on ``sys.path``)::

    python3 -m venv /tmp/mv-ref
    /tmp/mv-ref/bin/pip install torch numpy
    # either straight from GitHub ...
    /tmp/mv-ref/bin/pip install "git+https://github.com/facebookresearch/mobile-vision.git"
    # ... or from a clone at a fixed commit (editable: keeps model_info/*.json, gives the commit)
    git clone https://github.com/facebookresearch/mobile-vision.git /tmp/mobile-vision
    git -C /tmp/mobile-vision checkout bfe163fd635500f4467e08a36ee39ad080a1ebfb
    /tmp/mv-ref/bin/pip install -e /tmp/mobile-vision

    cd /tmp
    /tmp/mv-ref/bin/python /path/to/this/repo/tests/data/make_reference_logits.py --check   # compare only
    /tmp/mv-ref/bin/python /path/to/this/repo/tests/data/make_reference_logits.py           # rewrite the JSON

Upstream sometimes needs extra packages at import time (e.g. ``fvcore``, ``iopath`` or
``setuptools`` for ``pkg_resources``); install what the ImportError names. If
``mobile_cv.model_zoo.models.fbnet_v2`` itself does not import, the script builds the same
``FBNet`` module tree from ``mobile_cv.arch.fbnet_v2.fbnet_builder`` directly
(``backbone.stages`` + ``head.conv``, the same state-dict keys).

The committed JSON was made from upstream source files at the commits that its ``"source"``
field lists (see ``tests/data/REFERENCE_LOGITS.md``: the package could not be installed then).
Later upstream commits only add options that are off by default for these ops, so a
regenerated file should agree to float64 rounding. ``--check`` reports the largest difference.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import subprocess
import sys
from typing import Any, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))  # tests/data
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)

RESOLUTION = 64
NUM_CLASSES = 10
WEIGHT_SEED = 0
INPUT_SEED = 1
BATCH = 2
RECIPE = (
    f"tests/seeded_weights.py: seeded_state_dict(seed={WEIGHT_SEED}), "
    f"seeded_input({RESOLUTION}, seed={INPUT_SEED}, batch={BATCH}), float64, eval, num_classes={NUM_CLASSES}"
)


def _drop_this_repo_from_path() -> None:
    """Keep ``import mobile_cv`` from finding this project's package instead of upstream's."""
    repo = os.path.realpath(REPO)
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != repo]


def _import_upstream():
    """Upstream's ``mobile_cv`` package, refusing this project's copy of the name."""
    _drop_this_repo_from_path()
    hint = "install facebookresearch/mobile-vision into a separate virtualenv (see this script's docstring)"
    try:
        import mobile_cv
    except ImportError as e:
        sys.exit(f"cannot import the reference implementation ({e}); {hint}")
    where = os.path.realpath(os.path.dirname(mobile_cv.__file__))
    if where.startswith(os.path.realpath(REPO) + os.sep):
        sys.exit(f"'mobile_cv' resolves to this project's package ({where}), not upstream's; {hint}")
    try:
        from mobile_cv.arch.fbnet_v2 import fbnet_builder
    except ImportError as e:
        sys.exit(f"'mobile_cv' at {where} has no usable FBNet builder ({e}); {hint}")
    return mobile_cv, fbnet_builder


def _load_seeded_weights():
    spec = importlib.util.spec_from_file_location("seeded_weights", os.path.join(TESTS, "seeded_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fbnet_class(fbnet_builder):
    """Upstream's classification ``FBNet`` (model_zoo/models/fbnet_v2.py), or the same module tree
    built from ``fbnet_builder`` when that module does not import (it reads model-info JSON files
    through ``pkg_resources`` at import time)."""
    try:
        from mobile_cv.model_zoo.models.fbnet_v2 import FBNet

        return FBNet, "mobile_cv.model_zoo.models.fbnet_v2.FBNet"
    except Exception as e:  # noqa: BLE001 - any import-time failure: fall back to the builder
        print(f"note: mobile_cv.model_zoo.models.fbnet_v2 does not import ({e!r}); building with fbnet_builder")

    import torch.nn as nn

    class ClsConvHead(nn.Module):  # as upstream's: global average pool, 1x1 conv with bias, flatten
        def __init__(self, input_dim, output_dim):
            super().__init__()
            self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
            self.conv = nn.Conv2d(input_dim, output_dim, 1)

        def forward(self, x):
            return self.conv(self.avg_pool(x)).view(x.size(0), -1)

    class FBNetBackbone(nn.Module):
        def __init__(self, arch_def, dim_in=3):
            super().__init__()
            arch_def = fbnet_builder.unify_arch_def(arch_def, ["blocks"])
            builder = fbnet_builder.FBNetBuilder()
            builder.add_basic_args(**arch_def.get("basic_args", {}))
            self.stages = builder.build_blocks(arch_def["blocks"], dim_in=dim_in)
            self.out_channels = builder.last_depth
            self.arch_def = arch_def

        def forward(self, x):
            return self.stages(x)

    class FBNet(nn.Module):
        def __init__(self, arch_def, dim_in=3, num_classes=1000):
            super().__init__()
            self.backbone = FBNetBackbone(arch_def, dim_in=dim_in)
            self.head = ClsConvHead(self.backbone.out_channels, num_classes)

        def forward(self, x):
            return self.head(self.backbone(x))

    return FBNet, "FBNet rebuilt from mobile_cv.arch.fbnet_v2.fbnet_builder"


def _upstream_arch_defs(names: List[str]) -> Dict[str, Any]:
    """The arch defs from upstream's own model-def registry (``fbnet_modeldef_cls.MODEL_ARCH``,
    filled by the ``fbnet_modeldef_cls_fbnet``/``_fbnetv2`` modules), as JSON-like dicts."""
    import mobile_cv.arch.fbnet_v2.fbnet_modeldef_cls_fbnet  # noqa: F401 - registers fbnet_a/b/c
    import mobile_cv.arch.fbnet_v2.fbnet_modeldef_cls_fbnetv2  # noqa: F401 - registers FBNetV2_*
    from mobile_cv.arch.fbnet_v2.fbnet_modeldef_cls import MODEL_ARCH

    return {name: json.loads(json.dumps(MODEL_ARCH.get(name))) for name in names}


def _upstream_revision(mobile_cv) -> str:
    """The installed upstream commit: pip's direct_url.json (a git URL install), else the clone's HEAD."""
    try:
        from importlib.metadata import distribution

        info = json.loads(distribution("mobile_cv").read_text("direct_url.json") or "{}")
        commit = info.get("vcs_info", {}).get("commit_id")
        if commit:
            return commit
    except Exception:  # noqa: BLE001 - metadata is a nicety
        pass
    try:
        pkg = os.path.dirname(os.path.abspath(mobile_cv.__file__))
        return subprocess.run(
            ["git", "-C", pkg, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except Exception:  # noqa: BLE001
        return "(unknown)"


def _layout_check(fbnet, arch_def: Dict[str, Any], name: str, keys: Dict[str, List]) -> None:
    """With 1000 classes, upstream's state dict must have the published checkpoint layout."""
    if name not in keys:
        return
    own = [[k, list(v.shape)] for k, v in fbnet(copy.deepcopy(arch_def), num_classes=1000).state_dict().items()]
    if own != [[k, list(s)] for k, s in keys[name]]:
        print(f"warning: {name}: the reference state dict differs from tests/data/checkpoint_keys.json")


def compute(arch_source: str) -> Tuple[Dict[str, Any], str]:
    mobile_cv, fbnet_builder = _import_upstream()
    import torch

    seeded = _load_seeded_weights()
    fbnet, how = _fbnet_class(fbnet_builder)
    with open(os.path.join(HERE, "arch_defs.json")) as f:
        ours = json.load(f)
    names = list(ours)
    try:
        theirs = _upstream_arch_defs(names)
    except Exception as e:  # noqa: BLE001
        if arch_source == "upstream":
            raise
        print(f"note: upstream's model-def registry is not usable ({e!r}); not cross-checking arch_defs.json")
        theirs = None
    if theirs is not None:
        differ = [n for n in names if theirs[n] != ours[n]]
        if differ:
            print(f"warning: tests/data/arch_defs.json differs from upstream's registry for {differ}")
    arch_defs = theirs if arch_source == "upstream" else ours
    with open(os.path.join(HERE, "checkpoint_keys.json")) as f:
        keys = json.load(f)

    models = {}
    for name in names:
        _layout_check(fbnet, arch_defs[name], name, keys)
        model = fbnet(copy.deepcopy(arch_defs[name]), num_classes=NUM_CLASSES).double().eval()
        model.load_state_dict(seeded.seeded_state_dict(model.state_dict(), seed=WEIGHT_SEED), strict=True)
        with torch.no_grad():
            logits = model(seeded.seeded_input(RESOLUTION, seed=INPUT_SEED, batch=BATCH))
        assert logits.dtype == torch.float64 and tuple(logits.shape) == (BATCH, NUM_CLASSES), logits.shape
        models[name] = {"resolution": RESOLUTION, "num_classes": NUM_CLASSES, "logits": logits.tolist()}
        print(f"{name}: max |logit| {logits.abs().max().item():.6g}")
    source = (
        f"facebookresearch/mobile-vision (mobile_cv) FBNet builder, installed package at commit "
        f"{_upstream_revision(mobile_cv)} ({how}; arch defs from "
        f"{'upstream fbnet_modeldef_cls.MODEL_ARCH' if arch_source == 'upstream' else 'tests/data/arch_defs.json'})"
    )
    return models, source


def compare(models: Dict[str, Any], path: str) -> bool:
    """Whether ``models`` agree with the JSON at ``path`` (relative 1e-9 of each model's largest logit)."""
    with open(path) as f:
        stored = json.load(f)["models"]
    ok = sorted(stored) == sorted(models)
    if not ok:
        print(f"different models: stored {sorted(stored)}, computed {sorted(models)}")
    for name in sorted(set(stored) & set(models)):
        a = [v for row in stored[name]["logits"] for v in row]
        b = [v for row in models[name]["logits"] for v in row]
        scale = max(abs(v) for v in a)
        err = max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else math.inf
        fits = err <= 1e-9 * scale and {k: v for k, v in stored[name].items() if k != "logits"} == {
            k: v for k, v in models[name].items() if k != "logits"
        }
        ok &= fits
        print(f"{name}: max abs difference {err:.3g} (largest logit {scale:.4g}) {'ok' if fits else 'MISMATCH'}")
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(HERE, "reference_logits.json"), help="the JSON to write")
    p.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    p.add_argument(
        "--arch-source",
        choices=("json", "upstream"),
        default="json",
        help="arch defs from tests/data/arch_defs.json (default, as the committed file) or upstream's registry",
    )
    p.add_argument("--source", help='the "source" text to record (default: the installed upstream commit)')
    args = p.parse_args(argv)

    models, source = compute(args.arch_source)
    if args.check:
        return 0 if compare(models, args.out) else 1
    text = json.dumps({"source": args.source or source, "recipe": RECIPE, "models": models}, indent=1) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
