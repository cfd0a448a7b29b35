# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Process-wide memory tuning that the scripts opt into at start-up (a library import never changes it)."""

from __future__ import annotations

import ctypes
import os

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep the memory torch frees and hand it out again, instead of returning it to the OS.

    glibc serves every block above 32 MiB with a fresh `mmap` and unmaps it on free. Such blocks come and go at every
    step here (a beam-search step's scores are 160 x 50,257 floats; a batch of MobileNetV2 activations is larger), so
    each one pays a page fault for every 4 KiB page it touches, every time. The PyTorch CPU tuning guides preload
    jemalloc or tcmalloc for this; two `mallopt` settings get the same effect from glibc itself: no `mmap` for large
    blocks (M_MMAP_MAX 0) and no trimming of the heap (M_TRIM_THRESHOLD at its maximum). The cost: memory the process
    held at its peak stays with it until it exits, and blocks freed in between are reused less tightly (about 0.2 GB
    more peak RSS in a batch-16 training step). bench/bench_generation.py measures the speed in fresh processes,
    bench/bench_train_step.py the memory. The scripts call this at start-up; a library import never does.

    Returns False, changing nothing, off glibc, or when the environment already tunes malloc (a MALLOC_* variable or
    a preloaded allocator in LD_PRELOAD).
    """
    if any(key.startswith("MALLOC_") for key in os.environ) or "malloc" in os.environ.get("LD_PRELOAD", ""):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
