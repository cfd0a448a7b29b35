# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Process-wide memory tuning that the scripts opt into at start-up (a library import never changes it), and the peak
memory of a command (`python -m clipcap.memory --report FILE -- COMMAND...`, which demo.sh prints next to each stage's
time)."""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import subprocess
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def _mallopt():
    """glibc's `mallopt`, or None off glibc (macOS, Windows, musl) or when the environment already tunes malloc (a
    MALLOC_* variable or a preloaded allocator in LD_PRELOAD)."""
    if any(key.startswith("MALLOC_") for key in os.environ) or "malloc" in os.environ.get("LD_PRELOAD", ""):
        return None
    try:
        return ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


def one_malloc_arena() -> bool:
    """One glibc malloc arena (M_ARENA_MAX 1) instead of up to eight per core: each arena keeps what its threads
    freed, so with several the heap holds several peaks' worth of free blocks (100 demo-teacher steps under
    `keep_freed_memory`: 3.97 GB with several arenas, 3.77 GB with one). Alone, with glibc's defaults otherwise, the
    demo teacher's 50 steps (fresh processes, alternated, twice) peaked at 3.45 GB and took 70 to 74 s; with
    `keep_freed_memory` too, 3.73 GB and 62 to 64 s (0.8M page faults instead of 8.0M). `train_clip_teacher.py`
    calls this alone, for the memory; the other scripts `keep_freed_memory`, for the speed. Returns False, changing
    nothing, where `_mallopt` finds no glibc to tune."""
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, 1))


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep the memory torch frees and hand it out again, instead of returning it to the OS.

    glibc serves every block above 32 MiB with a fresh `mmap` and unmaps it on free. Such blocks come and go at every
    step here (a beam-search step's scores are 160 x 50,257 floats; a batch of MobileNetV2 activations is larger), so
    each one pays a page fault for every 4 KiB page it touches, every time. The PyTorch CPU tuning guides preload
    jemalloc or tcmalloc for this; two `mallopt` settings get the same effect from glibc itself: no `mmap` for large
    blocks (M_MMAP_MAX 0) and no trimming of the heap (M_TRIM_THRESHOLD at its maximum), with `one_malloc_arena`.
    The cost: memory the process held at its peak stays with it until it exits, and blocks freed in between are
    reused less tightly (about 0.2 GB more peak RSS in a batch-16 training step). bench/bench_generation.py measures
    the speed in fresh processes, bench/bench_train_step.py the memory. The scripts call this at start-up; a library
    import never does.

    Returns False, changing nothing, off glibc, or when the environment already tunes malloc.
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return all([mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)]) and one_malloc_arena()


def run_with_peak_memory(command: list[str]) -> tuple[int, int]:
    """Run `command` and return its exit status and the peak resident memory, in bytes, of the largest process it
    ran (itself or a child it waited for, as `accelerate launch` waits for its worker): Linux's `ru_maxrss` of this
    process's children. Memory that two processes held at once is not added up."""
    status = subprocess.call(command)
    return status, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a command; write its peak resident memory (bytes) to a file.")
    parser.add_argument("--report", required=True, help="File that gets the peak in bytes.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    status, peak = run_with_peak_memory(command)
    with open(args.report, "w") as report:
        report.write(f"{peak}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
