"""smallcap's benchmark runner: `python -m benchmarks [name ...]` prints one JSON line per figure.

Every figure is a ratio against a reference measured in the same run, so noisy machines still give
comparable numbers. Benchmarks live in modules of this package that define `run(rounds) -> Iterator[dict]`.
"""
from __future__ import annotations

import gc
import statistics
import time
from typing import Any, Callable


def medians(rounds: int, alternate: bool = False, **fns: Callable[[], Any]) -> dict[str, float]:
    """Median seconds of each function, each timed once per round in turn, so a noisy stretch of the machine
    hits all of them alike (`alternate`: every other round in reverse order, so none always runs first).
    Cyclic garbage is collected before each timed call (untimed), so no function pays for collecting what the
    previous one left (vectorbt's portfolio objects leave cycles holding large arrays; `timeit` keeps the
    collector out of its timings for the same reason)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(rounds):
        for k, f in (list(fns.items())[::-1] if alternate and i % 2 else fns.items()):
            gc.collect()
            t = time.perf_counter(); f(); times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}
