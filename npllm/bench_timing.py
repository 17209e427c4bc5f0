"""The measuring helpers ``npllm bench`` shares between its kernel and model sections.

Steady state, interleaved timing (best of turns after one warm-up call each), tracemalloc peak memory
above what existed before a call, and the worst error relative to the largest reference entry; see
``npllm.bench``'s docstring for why each is measured this way.
"""
from __future__ import annotations

import time
import tracemalloc

import numpy as np


# ---------------------------------------------------------------- measuring

def time_interleaved(functions: dict, budget_s: float = 2.0, max_reps: int = 100, block: int = 3) -> dict:
    """Best wall time (s) of each function, run in turns of ``block`` calls after one warm-up call each.

    Turns, so that a slow spell of the machine hits every function alike. Blocks of calls, because a
    function that ran multi-threaded BLAS leaves OpenBLAS's workers spinning for a while (docs/performance.md,
    "Threads"): the call right after it, if it runs on other threads (Numba's), pays for that, which a
    training run on one backend never does. The best call of a block is the steady state.
    """
    first = {}
    for name, fn in functions.items():
        start = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - start
    turns = int(min(max_reps, max(3, budget_s / max(block * sum(first.values()), 1e-9))))
    best = dict(first)
    for _ in range(turns):
        for name, fn in functions.items():
            for _ in range(block):
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def peak_memory(fn) -> int:
    """Bytes allocated at the peak of one call to fn (tracemalloc), above what existed before it."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def max_relative_error(actual, desired) -> float:
    """max |actual − desired| over all arrays, relative to the largest |desired| entry of each."""
    worst = 0.0
    for a, d in zip(actual, desired):
        if a is None and d is None:
            continue
        a, d = np.asarray(a, dtype=np.float64), np.asarray(d, dtype=np.float64)
        scale = max(float(np.max(np.abs(d), initial=0.0)), 1e-30)
        worst = max(worst, float(np.max(np.abs(a - d), initial=0.0)) / scale)
    return worst


def as_tuple(x):
    """x itself when it is a tuple, else (x,): an op's backward returns one gradient or several."""
    return x if isinstance(x, tuple) else (x,)


def mib(n_bytes):
    """Bytes → MiB (2**20 bytes)."""
    return n_bytes / 2**20
