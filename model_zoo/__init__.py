"""Pretrained FBNet/FBNetV2 models.

    import model_zoo
    model_zoo.list_models("fbnetv2*")                        # ['FBNetV2_F1', ..., 'FBNetV2_L2']
    model = model_zoo.create_model("FBNetV2_F1", pretrained=True, num_classes=10)
    entry = model_zoo.get_entry("FBNetV2_F1")                # input_size, resize, mean, std, top1, ...

    import timm                                              # every entry is a timm model too
    timm.create_model("fbnetv2_f1", pretrained=True, features_only=True)

Entries are data (``model_zoo/entries.py``); weights are downloaded once into
``$FBNET_CACHE`` (default ``<torch.hub.get_dir()>/checkpoints/fbnetv2``) or ship in
``model_zoo/weights/``.
"""

from .entries import BUNDLED, PUBLISHED
from .entry import WEIGHTS_DIR, ZooEntry, ZooEntryError
from .hub import (
    CACHE_ENV,
    CheckpointFormatError,
    ChecksumError,
    DownloadError,
    ModelZooError,
    WeightsFormatError,
    default_cache_dir,
    fetch_checkpoint,
    fetch_weights,
    read_state_dict,
)
from .timm_models import register_timm
from .zoo import (
    build_entry_model,
    create_model,
    fit_state_dict,
    format_table,
    get_entry,
    list_models,
    load_pretrained,
    register,
    resolve_model,
    unregister,
)

for summarize_samples in PUBLISHED + BUNDLED:
    register(summarize_samples)
register_timm()

__all__ = [
    "BUNDLED",
    "CACHE_ENV",
    "PUBLISHED",
    "WEIGHTS_DIR",
    "CheckpointFormatError",
    "ChecksumError",
    "DownloadError",
    "ModelZooError",
    "ZooEntry",
    "WeightsFormatError",
    "ZooEntryError",
    "build_entry_model",
    "create_model",
    "default_cache_dir",
    "fetch_checkpoint",
    "fetch_weights",
    "fit_state_dict",
    "format_table",
    "get_entry",
    "list_models",
    "load_pretrained",
    "read_state_dict",
    "register",
    "register_timm",
    "resolve_model",
    "unregister",
]
