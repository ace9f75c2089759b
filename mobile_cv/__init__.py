"""mobile_cv: FBNet/FBNetV2 models and the DMaskingNAS search, built from arch defs.

import mobile_cv
model = mobile_cv.build_model("FBNetV2_F1", num_classes=1000)
flops_m, params_m = mobile_cv.count_flops_params(model, 128)

@mobile_cv.OPS.register("my_op")
def build_my_op(in_channels, out_channels, stride, **kwargs): ...
"""

# the published arch defs and this project's search spaces register themselves (data, not
# library code: a plain import, after everything they use is defined)
import importlib as _importlib
import sys as _sys

import arch_defs  # noqa: E402, F401, I001

from . import search  # noqa: F401  (registers masked-channel, choice, subsampled-res in OPS)
from .arch.arch_def import ArchDefError, scale_arch_def, unify
from .arch.builder import FBNet, build_model
from .arch.flops import count_flops_params
from .arch.fuse import fuse_for_inference
from .arch.ops import OPS
from .arch.weights import CheckpointMismatchError, WeightsMismatchError, load_state_dict
from .errors import UserError
from .registry import Registry, RegistryError
from .version import __version__

# The model layer's modules lived at the top level in 0.1 (mobile_cv.builder, ...): those paths
# still import, as the same module objects.
for _old, _new in {
    "arch_def": "arch_def",
    "arch_registry": "arch_registry",
    "blocks": "blocks",
    "builder": "builder",
    "checkpoint": "weights",
    "flops": "flops",
    "fuse": "fuse",
    "layers": "layers",
    "ops": "ops",
}.items():
    _sys.modules[f"{__name__}.{_old}"] = _importlib.import_module(f".arch.{_new}", __name__)

__all__ = [
    "__version__",
    "OPS",
    "Registry",
    "RegistryError",
    "UserError",
    "ArchDefError",
    "CheckpointMismatchError",
    "WeightsMismatchError",
    "FBNet",
    "build_model",
    "count_flops_params",
    "fuse_for_inference",
    "load_state_dict",
    "scale_arch_def",
    "unify",
]
