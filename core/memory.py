"""How worker processes use memory: freed blocks kept for reuse instead of faulted in again."""

from __future__ import annotations

import ctypes
import ctypes.util

#: glibc's `mallopt` parameters (malloc.h) and the values `reuse_freed_memory` sets: blocks up
#: to 32 MiB (the largest glibc allows) come from the heap, which keeps up to 64 MiB free.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD, _TRIM_THRESHOLD = 32 << 20, 64 << 20


def reuse_freed_memory() -> None:
    """In a worker process, let malloc keep the large blocks it frees for the next task.

    Inference allocates and frees tensors of megabytes per image batch. When glibc returns
    each to the system (mmap/munmap, or trimming the heap) the next batch page-faults its
    memory in again, and that costs as much as the convolutions: MobileNetV2 on batches of
    16 at 224 px ran 1.3x slower without this in a plain pool worker, and 2.8x slower in a
    Dask worker, whose nanny sets `MALLOC_TRIM_THRESHOLD_`, which also freezes glibc's
    adaptive mmap threshold at 128 KiB (measured on this project's 2-core machine). A no-op
    where the C library has no `mallopt` (not glibc).
    """
    libc_name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(libc_name), "mallopt", None) if libc_name else None
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
