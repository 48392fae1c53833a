"""Keep freed memory in the process heap (glibc): large tensors allocated every epoch are then reused
instead of being mapped afresh and page-faulted in, which doubled the time per epoch of Citeseer's COIN
(its 3703×3703 weight gradient is 55 MB)."""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """mallopt(M_MMAP_MAX, 0) and a 64 GiB trim threshold; False where glibc's mallopt is unavailable.

    Equivalent to starting Python with MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 36))
    except (OSError, AttributeError):
        return False
