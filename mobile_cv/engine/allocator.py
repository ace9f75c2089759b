"""glibc malloc's behaviour for training and search steps (config key ``MALLOC``).

glibc raises its mmap threshold each time a large block is freed, up to 32 MiB, so after the
first steps every activation comes from the heap and what a step frees stays resident, scattered:
the process's resident memory grows to about 1.6x the live tensors (measured on the digits
search: 2.32 GB for 1.47 GB live, benchmarks/memory_estimate.py), which no estimate made from the
tensors themselves can predict. A fixed threshold ("return") maps and unmaps each large tensor:
resident memory follows the live tensors. Which is faster is measured by benchmarks/allocator.py
(docs/benchmarks.md); the setting is applied with ``mallopt`` at start-up, before the model is built.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Dict, Tuple

logger = logging.getLogger("mobile_cv.engine")

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3

MALLOC_SETTINGS: Dict[str, Tuple[Tuple[int, int], ...]] = {
    "default": (),  # glibc's own
    "return": ((M_MMAP_THRESHOLD, 1 << 20), (M_TRIM_THRESHOLD, 1 << 21)),  # large tensors mapped, unmapped on free
    "keep": ((M_MMAP_THRESHOLD, 1 << 25), (M_TRIM_THRESHOLD, 1 << 40), (M_TOP_PAD, 1 << 26)),  # nothing given back
}


def apply_malloc_setting(name: str) -> bool:
    """Set glibc malloc to ``name`` (one of :data:`MALLOC_SETTINGS`); False where it does not
    apply (not glibc, or "default"). Unknown names raise ValueError naming the known ones."""
    if name not in MALLOC_SETTINGS:
        raise ValueError(f"MALLOC {name!r} is not one of {sorted(MALLOC_SETTINGS)}")
    options = MALLOC_SETTINGS[name]
    if not options:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: no mallopt
        logger.info("MALLOC %s: this C library has no mallopt; its allocator is left as it is", name)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for param, value in options:
        if mallopt(param, min(value, 2**31 - 1)) != 1:
            logger.warning("MALLOC %s: mallopt(%d, %d) was refused", name, param, value)
            return False
    return True
