"""Keep freed memory in the process heap (glibc): large tensors allocated every epoch are then reused
instead of being mapped afresh and page-faulted in, which doubled the time per epoch of Citeseer's COIN
(its 3703×3703 weight gradient is 55 MB)."""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: the largest value mallopt's C int takes (2³⁶ was silently truncated to 0 by ctypes)
TRIM_THRESHOLD = 2**31 - 1


def keep_freed_memory() -> bool:
    """mallopt(M_MMAP_MAX, 0) and the largest trim threshold (2³¹ − 1 bytes: mallopt takes a C int; a larger
    Python int is silently truncated by ctypes — 2³⁶ became 0, which trimmed the heap on every free and
    page-faulted ~30,000 pages back in every epoch of a 20-member COIN). False where mallopt is unavailable.

    Equivalent to starting Python with MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]  # overflow now raises instead of truncating
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False
