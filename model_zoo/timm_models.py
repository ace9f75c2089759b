"""Every zoo entry as a timm model: ``timm.create_model("fbnetv2_f1", pretrained=True)``.

``register_timm()`` (run by ``import model_zoo``) registers one timm entrypoint per
entry under the entry's lower-case name, with a ``PretrainedCfg`` holding the
entry's url or file, input size, crop, mean/std, classes, first conv and
classifier. Models are assembled by timm's ``build_model_with_cfg`` (so
``features_only``, ``out_indices``, ``pretrained_cfg_overlay`` work as usual), but
weights are always loaded by this package (``model_zoo.zoo.load_pretrained``):
timm's own loader would cache every published URL under the same ``model.pth``
name and does not check that a download fits before caching it.

``features_only`` returns, for each reduction level (2, 4, 8, 16, 32 for the
published models), the output of the last stage that is still a feature map; the
``ir_pool`` stage, which pools to 1x1, is not a feature level.

The cfg's ``pool_size`` is the spatial size of ``forward_features`` at the cfg's input size,
counted from the arch def: (1, 1) for the FBNetV2 models, whose last
stage (``ir_pool``) pools globally, (7, 7) for fbnet_a/b/c at 224. timm's ``global_pool``
argument (``create_model(..., global_pool="")``, ``reset_classifier(n, "")``) is the head's
(:class:`mobile_cv.arch.builder.ClsConvHead`): ``"avg"`` (default) or ``""`` (no pooling: the feature
map with ``num_classes=0``, or per-position logits of the 1x1-conv classifier). timm's own
tests (``tests/external/run_timm_model_tests.sh``) pass on every model registered here.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Tuple

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, is_model, register_model
from timm.models._builder import resolve_pretrained_cfg
from timm.models._pretrained import PretrainedCfg

import mobile_cv
from mobile_cv.arch.arch_def import unify
from mobile_cv.arch.builder import check_global_pool
from mobile_cv.registry import RegistryError

from . import zoo
from .entry import ZooEntry
from .folder import ARCH_DEF_MODEL
from .hub import ModelZooError

FIRST_CONV = "backbone.stages.xif0_0.conv"

# timm's register_model() reads the pretrained cfgs of a model from its module's ``default_cfgs``.
default_cfgs: Dict[str, Any] = {}
_REGISTERED: Dict[str, ZooEntry] = {}  # timm name -> the entry it was registered from
_REGISTERED_GENERIC: set = set()
GLOBAL_POOL_OPS = ("ir_pool", "ir_pool_hs")  # blocks whose output is 1x1 (see mobile_cv.arch.blocks.IRPoolBlock)


def pool_size(entry: ZooEntry) -> Tuple[int, int]:
    """timm's ``pool_size`` of an entry: (H, W) of ``forward_features`` at the entry's input size.

    From the arch def alone (building ten models at import would cost seconds): every block's
    3x3/5x5 "same" padding maps a side ``s`` to ``ceil(s / stride)``; the ``ir_pool`` blocks pool
    globally. tests/model_zoo/test_model_zoo.py checks it against a forward pass of every registered model.
    """
    side = entry.input_size
    for block in unify(entry.arch_def()):
        side = 1 if block.op in GLOBAL_POOL_OPS else -(-side // block.stride)
    return (side, side)


def pretrained_cfg(entry: ZooEntry) -> PretrainedCfg:
    """The timm pretrained config of a zoo entry."""
    return PretrainedCfg(
        url=entry.url,
        file=entry.weights_path() if entry.is_bundled else None,
        input_size=(entry.in_chans, entry.input_size, entry.input_size),
        pool_size=pool_size(entry),
        crop_pct=entry.crop_pct,
        interpolation=entry.interpolation,
        mean=tuple(entry.mean),
        std=tuple(entry.std),
        num_classes=entry.num_classes,
        first_conv=FIRST_CONV,
        classifier=zoo.CLASSIFIER,
        license=entry.license or None,
        description=f"{entry.name}: top-1 {entry.top1}% on {entry.eval_set}",
    )


def feature_info(model: mobile_cv.FBNet) -> List[Dict[str, Any]]:
    """timm ``feature_info`` of a model: per reduction, the last stage that outputs a feature map.

    Whether a stage pools globally is read off its output shape in a forward pass of
    the backbone at twice the largest reduction (every feature map is then >= 2x2),
    so custom ops need no annotation.
    """
    stages = model.backbone.stage_info
    size = 2 * max(s["reduction"] for s in stages)
    widths: Dict[str, int] = {}
    hooks = [
        model.backbone.get_submodule(s["module"]).register_forward_hook(
            lambda _m, _i, out, key=s["module"]: widths.__setitem__(key, out.shape[-1])
        )
        for s in stages
    ]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model.backbone(torch.zeros(1, model.in_chans, size, size, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    levels: Dict[int, Dict[str, Any]] = {}
    for s in stages:
        if widths[s["module"]] > 1:
            levels[s["reduction"]] = {
                "num_chs": s["num_chs"],
                "reduction": s["reduction"],
                "module": "backbone." + s["module"],
            }
    return list(levels.values())


def _create(entry_name: str, variant: str, pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
    entry = zoo.get_entry(entry_name)
    cfg = resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.pop("pretrained_cfg", None) or pretrained_cfg(entry),
        pretrained_cfg_overlay=kwargs.pop("pretrained_cfg_overlay", None),
    )
    cache_dir = kwargs.pop("cache_dir", None)
    source = cfg.file or cfg.url  # timm's precedence: a file overrides the url
    if pretrained and not source:
        raise ModelZooError(f"{variant}: the pretrained cfg has no url or file; pass pretrained=False")
    own = source is not None and source in (entry.url, entry.weights_path() if entry.is_bundled else None)
    sha256 = entry.sha256 if own else None
    load = (
        (lambda model: zoo.load_pretrained(model, source, sha256, cache_dir, name=entry.name)) if pretrained else None
    )
    return _with_timm(variant, cfg, lambda **kw: zoo.build_entry_model(entry, **kw), kwargs, load=load)


def fbnet_arch_def(pretrained: bool = False, arch_def: Any = None, **kwargs: Any) -> torch.nn.Module:
    """Any arch def as a timm model; what a model folder's config.json names (``model_args``
    holds the arch def), so ``timm.create_model("local-dir:FOLDER", pretrained=True)`` and
    ``"hf-hub:org/name"`` build it and timm loads the folder's ``model.safetensors``."""
    if arch_def is None:
        raise ModelZooError(
            f"{ARCH_DEF_MODEL} builds the arch def it is given: pass arch_def=... (a model folder's config.json "
            f"holds it under model_args; load a folder with timm.create_model('local-dir:FOLDER'))"
        )
    cfg = resolve_pretrained_cfg(
        ARCH_DEF_MODEL,
        pretrained_cfg=kwargs.pop("pretrained_cfg", None),
        pretrained_cfg_overlay=kwargs.pop("pretrained_cfg_overlay", None),
    )
    # timm loads the weights (local-dir: the folder's model.safetensors; hf-hub: downloaded)
    make = lambda **kw: mobile_cv.build_model(arch_def, **kw)  # noqa: E731
    return _with_timm(ARCH_DEF_MODEL, cfg, make, kwargs, timm_loads=pretrained)


def _with_timm(variant: str, cfg, make_model, kwargs: Dict[str, Any], load=None, timm_loads: bool = False):
    """timm's ``build_model_with_cfg`` around ``make_model(**model_kwargs)``: timm's global pool
    name checked, our weights loaded by ``load(model)`` (or by timm itself: ``timm_loads``), the
    feature levels (``features_only``) where the model has them."""
    if kwargs.get("features_only") and "out_indices" not in kwargs:
        # timm would default to 5 levels; small custom archs have fewer
        chans = {"in_chans": kwargs["in_chans"]} if "in_chans" in kwargs else {}
        kwargs["out_indices"] = tuple(range(len(feature_info(make_model(num_classes=0, **chans)))))

    def build(global_pool: str = "avg", **model_kwargs: Any) -> mobile_cv.FBNet:
        model = make_model(**model_kwargs)
        model.head.global_pool = check_global_pool(global_pool)
        if load is not None:
            load(model)
        model.feature_info = feature_info(model)
        return model

    return build_model_with_cfg(
        build,
        variant,
        pretrained=timm_loads,
        pretrained_cfg=cfg,
        feature_cfg={"feature_cls": "hook", "no_rewrite": True},
        **kwargs,
    )


def _register_arch_def_model() -> None:
    if ARCH_DEF_MODEL in _REGISTERED_GENERIC:
        return
    default_cfgs.update(
        generate_default_cfgs({ARCH_DEF_MODEL: PretrainedCfg(first_conv=FIRST_CONV, classifier=zoo.CLASSIFIER)})
    )
    register_model(fbnet_arch_def)
    _REGISTERED_GENERIC.add(ARCH_DEF_MODEL)


def _entrypoint(entry: ZooEntry):
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
        return _create(entry.name, entry.timm_name, pretrained, **kwargs)

    # register_model() names the model after the function and looks up its module's default_cfgs
    entrypoint.__name__ = entrypoint.__qualname__ = entry.timm_name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{entry.name} from the FBNet model zoo ({entry.input_size}px, {entry.source} weights)."
    return entrypoint


def register_timm() -> List[str]:
    """Register every zoo entry with timm; returns the timm names (re-)registered now.

    Idempotent: call it again after ``model_zoo.register(...)`` to expose new or
    changed entries. timm has no way to unregister, so the timm name of an entry
    removed from the zoo stays (and fails with the zoo's "no entry" error).
    """
    _register_arch_def_model()
    added = []
    for name in zoo.list_models():
        entry = zoo.get_entry(name)
        previous = _REGISTERED.get(entry.timm_name)
        if previous == entry:
            continue
        if previous is None and is_model(entry.timm_name):
            raise RegistryError(
                f'zoo entry "{entry.name}": timm already has a model named "{entry.timm_name}"; rename the entry'
            )
        default_cfgs.update(generate_default_cfgs({entry.timm_name: pretrained_cfg(entry)}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # replacing our own, changed entry is intended
            register_model(_entrypoint(entry))
        _REGISTERED[entry.timm_name] = entry
        added.append(entry.timm_name)
    return added


def registered_names() -> List[str]:
    """The timm names registered by :func:`register_timm` so far, sorted."""
    return sorted(_REGISTERED)
