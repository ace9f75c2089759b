"""Architectures and search spaces as data, registered into :mod:`mobile_cv.arch.arch_registry`.

    import arch_defs                       # (mobile_cv imports it: the names below are always there)
    arch_defs.names()                      # every registered arch def
    arch_defs.get("FBNetV2_F1")            # a deep copy of its dict
    arch_defs.register("my_net", my_def)   # then build_model("my_net") works

Each module here holds plain dicts (``ARCH_DEFS`` maps names to them). Search spaces
register in the same table; ``names("model")`` and ``names("space")`` tell them apart.
``get``/``names``/``register`` are the library registry's functions.
"""

from mobile_cv.arch.arch_registry import ARCH_DEFS, arch_def_names, get_arch_def, register_arch_def

from . import fbnet, fbnetv2, spaces

get, names, register = get_arch_def, arch_def_names, register_arch_def

for _module in (fbnetv2, fbnet, spaces):
    for _name, _def in _module.ARCH_DEFS.items():
        if _name not in ARCH_DEFS:  # a second import of this package (e.g. by path) registers nothing twice
            register(_name, _def)

__all__ = ["get", "names", "register"]
