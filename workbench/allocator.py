"""glibc's malloc, tuned for torch on the CPU: keep freed memory for the next step instead of handing it back.

A training or attack step frees and re-allocates the same activation buffers (megabytes each) every batch. By
default glibc returns such blocks to the kernel (mmap'd blocks, or a trimmed heap top), and the next step takes
them back one zeroed page at a time: on CNN-6 at batch 128, about 20k page faults a step and 6-8% of its CPU
time in the kernel (benchmarks/malloc_tuning.py). Serving blocks up to 32 MiB from the heap and trimming it
only past 1 GiB of free memory removes those faults; the process keeps its peak heap instead.

Linux with glibc only; elsewhere, or where the user set glibc's own MALLOC_*_ variables, nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 1 << 30
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Tune this process's allocator as above; True when it took effect."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl or another libc: leave it alone
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success. Setting either threshold turns glibc's dynamic ones off, so set both.
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
