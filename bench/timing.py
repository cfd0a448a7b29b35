"""Timing helper shared by the benchmarks: medians after a warm-up, raw times kept."""

import statistics
import time


def median_seconds(function, repeats: int) -> tuple[float, list[float]]:
    """Median wall seconds of `function()` over `repeats` runs after one warm-up run, and the runs themselves."""
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times
