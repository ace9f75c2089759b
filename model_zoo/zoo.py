"""The zoo: entries by name, and models built with their pretrained weights."""

from __future__ import annotations

import fnmatch
import logging
import os
from typing import Any, List, Optional, Tuple, Union

import torch
from tabulate import tabulate
from torch import nn

import mobile_cv
from mobile_cv.arch.arch_registry import arch_def_names, is_arch_file, resolve_arch_def
from mobile_cv.arch.weights import load_state_dict
from mobile_cv.errors import InvalidArgumentTypeError
from mobile_cv.registry import Registry, RegistryError, did_you_mean

from .entry import ZooEntry, ZooEntryError
from .fit import CLASSIFIER, fit_state_dict  # noqa: F401  (CLASSIFIER is read as zoo.CLASSIFIER)
from .folder import hub_folder, is_hub_spec, is_model_folder, load_model_folder
from .hub import ModelZooError, fetch_weights, is_url, read_state_dict

logger = logging.getLogger(__name__)

ZOO = Registry("MODEL_ZOO", contract="a ZooEntry; names unique ignoring case (they double as timm names)")


def register(entry: ZooEntry) -> ZooEntry:
    """Add ``entry`` to the zoo (names are unique, ignoring case: they double as timm names)."""
    if not isinstance(entry, ZooEntry):
        raise InvalidArgumentTypeError(f"register() takes a ZooEntry, got {type(entry).__name__}")
    clash = next((n for n in ZOO.names() if n.lower() == entry.name.lower()), None)
    if clash is not None:
        raise RegistryError(
            f'zoo entry "{entry.name}" clashes with the registered "{clash}" (names are compared ignoring '
            f'case); pick another name, or model_zoo.unregister("{clash}") first'
        )
    ZOO.register(entry.name, entry)
    return entry


def unregister(name: str) -> ZooEntry:
    """Remove and return the entry named ``name``."""
    return ZOO.unregister(get_entry(name).name)


def get_entry(name: str) -> ZooEntry:
    """The entry named ``name`` (case-insensitive, so timm names work too)."""
    names = ZOO.names()
    exact = next((n for n in names if isinstance(name, str) and n.lower() == name.lower()), None)
    if exact is not None:
        return ZOO.get(exact)
    hint = did_you_mean(str(name).lower(), [n.lower() for n in names])  # lookup ignores case, so may the hint
    raise RegistryError(
        f'no zoo entry named "{name}"{hint} ({len(names)} entries; list them with model_zoo.list_models())'
    )


def list_models(pattern: str = "*") -> List[str]:
    """Sorted entry names matching the shell-style ``pattern``, ignoring case (``"fbnetv2*"``)."""
    return [n for n in ZOO.names() if fnmatch.fnmatchcase(n.lower(), pattern.lower())]


def build_entry_model(entry: ZooEntry, num_classes: Optional[int] = None, **overrides: Any) -> mobile_cv.FBNet:
    """The entry's architecture with random weights (``num_classes`` defaults to the entry's)."""
    overrides.setdefault("in_chans", entry.in_chans)
    num_classes = entry.num_classes if num_classes is None else num_classes
    if entry.arch.endswith(".json"):
        model = mobile_cv.build_model(entry.arch_def(), num_classes=num_classes, **overrides)
        model.arch_name = entry.name  # a def from a file has no registered name; errors then name the entry
        return model
    return mobile_cv.build_model(entry.arch, num_classes=num_classes, **overrides)


def load_pretrained(
    model: nn.Module,
    source: str,
    sha256: Optional[str] = None,
    cache_dir: Optional[str] = None,
    force_download: bool = False,
    name: Optional[str] = None,
) -> None:
    """Load a checkpoint file or URL into ``model`` (see :func:`fit_state_dict` for what is adapted).

    Args:
        model: the model to fill.
        source: a local checkpoint path or an http(s) URL (downloaded once into the cache).
        sha256: expected digest of the file, if known.
        cache_dir: cache folder for URLs (default: ``$FBNET_CACHE`` or under the torch hub dir).
        force_download: download a URL even if it is cached.
        name: readable prefix for the cache file name.
    """
    if is_url(source):
        state_dict = fetch_weights(
            source, cache_dir, sha256, name, force_download, prepare=lambda sd: fit_state_dict(model, sd, source)
        )
    elif os.path.isfile(source):
        state_dict = fit_state_dict(model, read_state_dict(source, sha256), source)
    elif os.path.isdir(source):
        raise ModelZooError(f"pretrained source {source!r} is a folder; give the weights file itself")
    else:
        raise ModelZooError(f"pretrained source {source!r} is neither an existing file nor an http(s) URL")
    load_state_dict(model, state_dict, strict=True, source=source)


def _pretrained_source(entry: ZooEntry, pretrained: Union[bool, str, os.PathLike]) -> Tuple[str, Optional[str]]:
    """``(file or URL, expected sha256)`` for ``create_model``'s ``pretrained`` argument."""
    if pretrained is True:
        return (entry.url if entry.url else entry.weights_path()), entry.sha256
    if isinstance(pretrained, (str, os.PathLike)):
        source = os.fspath(pretrained)
        if is_url(source):
            return source, entry.sha256 if source == entry.url else None
        if entry.is_bundled and os.path.isfile(source) and os.path.samefile(source, entry.weights_path()):
            return source, entry.sha256
        return source, None
    raise InvalidArgumentTypeError(
        f"pretrained must be False, True, a checkpoint path or an http(s) URL, got {pretrained!r}"
    )


def create_model(
    name: Union[str, os.PathLike],
    pretrained: Union[bool, None, str, os.PathLike] = None,
    num_classes: Optional[int] = None,
    cache_dir: Optional[str] = None,
    force_download: bool = False,
    **overrides: Any,
) -> mobile_cv.FBNet:
    """Build a zoo model, optionally with pretrained weights; or the model of a model folder.

    Args:
        name: a zoo entry (``model_zoo.list_models()``), case-insensitive; or a model folder
            (``config.json`` + ``model.safetensors``, see :mod:`model_zoo.folder`) as a path or as
            ``"hf-hub:org/name[@revision]"``: its architecture is rebuilt from ``config.json`` and
            its weights are loaded unless ``pretrained=False``.
        pretrained: None (the default: a model folder's weights, a zoo entry's random
            initialisation); False (random weights); True (the entry's weights: downloaded once
            into the cache, or the bundled file); a checkpoint path; or an http(s) URL.
            Weight files are ``.safetensors`` files or load with ``torch.load(weights_only=True)``; EMA weights
            (``model_ema``) are preferred over ``state_dict``; a ``module.`` prefix is removed.
        num_classes: classifier outputs (default: the entry's). When it differs from
            the checkpoint's, the classifier is not loaded (logged).
        cache_dir: download cache (default: ``$FBNET_CACHE``, else
            ``<torch.hub.get_dir()>/checkpoints/fbnetv2``).
        force_download: download again even if the file is cached.
        **overrides: passed to :func:`mobile_cv.build_model` (``in_chans``, ``drop_rate``, ...).

    Returns:
        The model, in training mode like any fresh ``nn.Module``; call ``.eval()`` for inference.
    """
    if is_hub_spec(name) or is_model_folder(name):
        if pretrained not in (None, True, False):
            raise ModelZooError(f"{name}: a model folder carries its own weights; pretrained must be True or False")
        folder = hub_folder(name, cache_dir, force_download) if is_hub_spec(name) else os.fspath(name)
        return load_model_folder(folder, pretrained is not False, num_classes, **overrides)
    entry = get_entry(name)
    model = build_entry_model(entry, num_classes, **overrides)
    if not pretrained:  # None (the default) and False: a zoo entry's random initialisation
        return model
    source, sha256 = _pretrained_source(entry, pretrained)
    load_pretrained(model, source, sha256, cache_dir, force_download, name=entry.name)
    return model


def resolve_model(
    spec: str,
    checkpoint: Optional[str] = None,
    pretrained: bool = False,
    num_classes: Optional[int] = None,
    cache_dir: Optional[str] = None,
    in_chans: Optional[int] = None,
) -> Tuple[mobile_cv.FBNet, str]:
    """``(model in eval mode, name)`` from a zoo name, a registered arch, an arch-def ``.json``/``.py`` file,
    or a model folder (a path or ``hf-hub:org/name``, with its weights).

    Zoo entries win over registered archs of the same name; files and archs resolve through
    :func:`mobile_cv.arch.arch_registry.resolve_arch_def`.

    Args:
        checkpoint: a checkpoint file to load (``torch.load(weights_only=True)``).
        pretrained: load the zoo entry's own weights (zoo names only).
        num_classes: classifier outputs (default: the entry's, else 1000).
        cache_dir: download cache for ``pretrained``.
        in_chans: input channels (default: the entry's, else 3; 1 for a model trained on the MNIST digits).
    """
    entry = None if is_arch_file(spec) else _zoo_entry(spec)
    chans = {} if in_chans is None else {"in_chans": in_chans}
    if is_hub_spec(spec) or is_model_folder(spec):
        model = create_model(spec, num_classes=num_classes, cache_dir=cache_dir, **chans)
        name = model.arch_name or os.path.basename(os.path.normpath(spec))
    elif entry is not None:
        model = create_model(entry.name, pretrained=pretrained, num_classes=num_classes, cache_dir=cache_dir, **chans)
        name = entry.name
    else:
        if pretrained:
            raise ZooEntryError(
                f"{spec!r} is not a zoo entry, so it has no pretrained weights; pass a checkpoint instead"
            )
        try:
            arch, _ = resolve_arch_def(spec)
        except RegistryError:
            known = sorted(set(list_models()) | set(arch_def_names("model")))
            raise RegistryError(
                f'"{spec}" is neither a zoo entry nor a registered arch{did_you_mean(spec, known)}, nor a .json/.py '
                f"arch-def file (list them with: python tools/model_zoo.py list; python tools/flops.py)"
            ) from None
        model = mobile_cv.build_model(arch, num_classes=1000 if num_classes is None else num_classes, **chans)
        name = os.path.splitext(os.path.basename(spec))[0] if is_arch_file(spec) else spec
    if checkpoint:
        load_pretrained(model, checkpoint)
    return model.eval(), name


def _zoo_entry(spec: str) -> Optional[ZooEntry]:
    try:
        return get_entry(spec)
    except RegistryError:
        return None


def format_table(names: List[str], markdown: bool = False) -> str:
    """The zoo table of ``names``: resolution, MFLOPs, Mparams, top-1 and where the weights come from."""
    header = ("name", "resolution", "MFLOPs", "Mparams", "top-1 (%)", "weights")
    rows = []
    for entry in (get_entry(n) for n in names):
        rows.append(
            (
                entry.name,
                f"{entry.input_size}x{entry.input_size}",
                "-" if entry.flops_m is None else f"{entry.flops_m:.2f}",
                "-" if entry.params_m is None else f"{entry.params_m:.4f}",
                "-" if entry.top1 is None else f"{entry.top1:.2f}",
                entry.source,
            )
        )
    return tabulate(rows, headers=header, tablefmt="github" if markdown else "plain", disable_numparse=True)


def computed_flops_params(entry: ZooEntry) -> Tuple[float, float]:
    """``(MFLOPs, Mparams)`` of the entry's model counted now (to check the recorded ones)."""
    with torch.no_grad():
        return mobile_cv.count_flops_params(build_entry_model(entry), entry.input_size)
