"""Configs in the detectron2 manner: one commented defaults tree, YAML files, overrides.

    from mobile_cv.config import get_cfg
    cfg = get_cfg()                                  # a clone of the defaults
    cfg.merge_from_file("configs/train_embedded_mnist.yaml")
    cfg.merge_from_list(["SOLVER.EPOCHS", "3"])      # trailing KEY VALUE pairs
    check_config(cfg)
    cfg.freeze()

An unknown key raises :class:`UnknownConfigKeyError` naming the closest real keys.
"""

from .config import CfgNode, ConfigError, UnknownConfigKeyError, check_config, get_cfg
from .ranges import CONFIG_RANGES, FLAG_RANGES, Range, RangeError, check_value, flag_type

__all__ = [
    "CONFIG_RANGES",
    "FLAG_RANGES",
    "CfgNode",
    "ConfigError",
    "Range",
    "RangeError",
    "UnknownConfigKeyError",
    "check_config",
    "check_value",
    "flag_type",
    "get_cfg",
]
