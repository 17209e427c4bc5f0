# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 9. Writing a Numba CPU kernel: naive loop → loop order → tiles → threads
#
# The NumPy reference is clear but leaves speed on the table wherever an op is not one big BLAS call.
# npllm's `numba` backend (`npllm_kernels.cpu`) replaces hot ops with kernels compiled by
# [Numba](https://numba.readthedocs.io): Python functions decorated with `@njit` are compiled to machine
# code by LLVM on their first call. This tutorial writes a matrix multiply
#
# $$ C_{ij} = \sum_{k} A_{ik} B_{kj}, \qquad A \in \mathbb{R}^{M\times K},\ B \in \mathbb{R}^{K\times N},\ 2MNK \text{ flops}, $$
#
# four times, changing one thing each time, the way llm.c's `dev/cuda` and npllm's kernels are versioned.
# The rules of the game: **validate every version against the reference before timing it**, report
# compile time separately from run time, and measure in GFLOP/s so sizes compare.

# %%
import os
import sys
import time

import matplotlib
import numba
import numpy as np
from numba import njit, prange

if "ipykernel" not in sys.modules:      # run as a script: draw into PNG files, never open a window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

from npllm.layers import matmul as reference_matmul
from npllm.plots import save_figure

FAST = os.environ.get("NPLLM_FAST") == "1"   # the test-suite sets it: smaller matrices
print(f"numba {numba.__version__}, {numba.get_num_threads()} threads")

# %% [markdown]
# ## Version 1: the naive triple loop
#
# Exactly the formula: for each output, a dot product of a row of $A$ with a column of $B$. Numba
# compiles it to a tight loop — no interpreter overhead — but the loop over $k$ walks **down a column**
# of the row-major $B$: each step jumps $N$ floats ahead, into a new cache line, and the reduction into
# one scalar `total` cannot use SIMD (that would reorder the additions).

# %%
@njit
def matmul_naive(a, b, c):
    """c = a @ b with the loops i, j, k.  a (M, K), b (K, N), c (M, N) written in place."""
    M, K = a.shape
    N = b.shape[1]
    for i in range(M):
        for j in range(N):
            total = a.dtype.type(0)          # a float32 zero: a bare 0.0 would be float64 arithmetic
            for k in range(K):
                total += a[i, k] * b[k, j]
            c[i, j] = total


# %% [markdown]
# ## Version 2: swap two loops
#
# Order the loops $i, k, j$: the innermost loop becomes $C_{i,:} \mathrel{+}= A_{ik} B_{k,:}$ — it reads
# a **row** of $B$ and a row of $C$, both contiguous, and each iteration is independent. LLVM turns it
# into SIMD fused multiply-adds (8 floats at a time with AVX2). Same arithmetic, different memory order.

# %%
@njit
def matmul_ikj(a, b, c):
    """c = a @ b with the loops i, k, j (contiguous inner loop).  c must start at zero."""
    M, K = a.shape
    N = b.shape[1]
    for i in range(M):
        for k in range(K):
            a_ik = a[i, k]
            for j in range(N):
                c[i, j] += a_ik * b[k, j]


# %% [markdown]
# ## Version 3: tiles that fit in the cache
#
# Version 2 streams all of $B$ ($K \times N$ floats) through the cache for every row of $A$. When $B$ is
# larger than the L2 cache, every row re-reads it from memory. **Tiling** splits $k$ and $j$ into blocks
# so a `TILE_K × TILE_N` block of $B$ (here 128 × 256 floats = 128 KiB) is reused by a whole block of
# `TILE_M` rows before moving on.
#
# One detail decides whether this is fast: index the inner loop through **row views starting at 0**
# (`c_row[j]` for `j in range(width)`), not as `c[i, j]` for `j in range(j0, j1)`. NumPy semantics make a
# negative index wrap around, so for `c[i, j]` Numba must emit a "negative?" check per element unless it
# can prove `j ≥ 0` — and LLVM will not vectorise a loop with that branch. `range(width)` starts at 0,
# which settles it. (Version 2 gets away with `c[i, j]` because its range starts at the constant 0.)

# %%
TILE_M, TILE_K, TILE_N = 32, 128, 256


@njit
def matmul_tiled(a, b, c):
    """c = a @ b in TILE_M × TILE_K × TILE_N blocks, i-k-j order inside a block.  c must start at zero."""
    M, K = a.shape
    N = b.shape[1]
    for i0 in range(0, M, TILE_M):
        for k0 in range(0, K, TILE_K):
            for j0 in range(0, N, TILE_N):
                j1 = min(j0 + TILE_N, N)
                for i in range(i0, min(i0 + TILE_M, M)):
                    c_row = c[i, j0:j1]                 # views indexed from 0: see the note below
                    for k in range(k0, min(k0 + TILE_K, K)):
                        a_ik = a[i, k]
                        b_row = b[k, j0:j1]
                        for j in range(j1 - j0):
                            c_row[j] += a_ik * b_row[j]


# %% [markdown]
# ## Version 4: threads
#
# `parallel=True` and `prange` hand the iterations of one loop to Numba's thread pool. Parallelise over
# **blocks of rows**: each thread owns its rows of $C$, so no two threads ever write the same element —
# no locks, no races. (Parallelising the $k$ loop instead would make threads add into the same $C_{ij}$
# at once: a race that gives wrong answers only sometimes.)

# %%
@njit(parallel=True)
def matmul_parallel(a, b, c):
    """matmul_tiled with the row blocks spread over threads.  c must start at zero."""
    M, K = a.shape
    N = b.shape[1]
    for block in prange((M + TILE_M - 1) // TILE_M):   # each thread owns rows [i0, i0 + TILE_M) of c
        i0 = block * TILE_M
        for k0 in range(0, K, TILE_K):
            for j0 in range(0, N, TILE_N):
                j1 = min(j0 + TILE_N, N)
                for i in range(i0, min(i0 + TILE_M, M)):
                    c_row = c[i, j0:j1]                 # views indexed from 0: see the note below
                    for k in range(k0, min(k0 + TILE_K, K)):
                        a_ik = a[i, k]
                        b_row = b[k, j0:j1]
                        for j in range(j1 - j0):
                            c_row[j] += a_ik * b_row[j]


# %% [markdown]
# ## Validate, then time
#
# Every version runs first on an awkward shape (not a multiple of any tile) and must match the NumPy
# reference (`npllm.layers.matmul`, i.e. BLAS) to float32 accuracy; only then is it timed. The first call
# of a Numba function compiles it for the argument types — we report that time separately. npllm's own
# kernels (`npllm_kernels.cpu.matmul`, with `cache=True` so they compile once per machine) and BLAS are
# timed the same way.

# %%
def as_kernel(inplace_kernel):
    """Wrap an in-place kernel(a, b, c) as a function (a, b) -> c (c allocated with zeros)."""
    def run(a, b):
        c = np.zeros((a.shape[0], b.shape[1]), dtype=a.dtype)
        inplace_kernel(a, b, c)
        return c
    return run


def best_time(function, a, b, repeats):
    """The fastest of `repeats` runs, in seconds (the minimum is the least disturbed by other work)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function(a, b)
        times.append(time.perf_counter() - started)
    return min(times)


versions = {"1 naive (i, j, k)": as_kernel(matmul_naive), "2 loop order (i, k, j)": as_kernel(matmul_ikj),
            "3 tiled": as_kernel(matmul_tiled), "4 tiled + threads": as_kernel(matmul_parallel)}
try:
    from npllm_kernels.cpu.matmul import VERSIONS as library_versions
    versions.update({f"npllm_kernels {name}": kernel for name, kernel in library_versions.items()})
except ImportError:                       # the kernels package is not installed: time ours only
    print("npllm_kernels is not importable; skipping the library's kernels")
versions["NumPy / BLAS (reference)"] = reference_matmul

rng = np.random.default_rng(0)
odd_a = rng.standard_normal((70, 300)).astype(np.float32)      # 70, 300, 130: no tile divides them
odd_b = rng.standard_normal((300, 130)).astype(np.float32)
odd_reference = odd_a.astype(np.float64) @ odd_b.astype(np.float64)
compile_seconds = {}
for name, kernel in versions.items():
    started = time.perf_counter()
    result = kernel(odd_a, odd_b)                               # first call: compiles (Numba) and runs
    compile_seconds[name] = time.perf_counter() - started
    np.testing.assert_allclose(result, odd_reference, rtol=1e-4, atol=1e-3, err_msg=name)
print("every version matches the reference on a (70, 300) @ (300, 130) product  ✓")

# %%
size = 256 if FAST else 512
a = rng.standard_normal((size, size)).astype(np.float32)
b = rng.standard_normal((size, size)).astype(np.float32)
flops = 2.0 * size ** 3
rows = []
for name, kernel in versions.items():
    repeats = 1 if name.startswith(("1", "npllm_kernels v1")) else 3   # the naive loops are slow
    seconds = best_time(kernel, a, b, repeats)
    rows.append((name, compile_seconds[name], seconds, flops / seconds / 1e9))
print(f"\n{size} x {size} x {size}, float32, {numba.get_num_threads()} threads")
print(f"{'version':<28}{'first call (s)':>15}{'run (ms)':>11}{'GFLOP/s':>10}")
for name, first, seconds, gflops in rows:
    print(f"{name:<28}{first:>15.2f}{seconds * 1e3:>11.1f}{gflops:>10.1f}")

# %% [markdown]
# What to look for (your numbers depend on the CPU and the matrix size):
#
# - **Version 1 → 2** is usually the largest single step: the same loops in another order, now SIMD and
#   cache-friendly.
# - **Version 3** matters once $B$ no longer fits in the cache; at small sizes it can even be slower (the
#   extra loop bookkeeping).
# - **Version 4** scales with the number of cores — at best ×2 on a 2-core machine.
# - **BLAS** is still far ahead: it packs panels of $A$ and $B$ into contiguous buffers, keeps a block of
#   $C$ in registers (npllm_kernels' v3 does both), and is tuned in assembly for each CPU. That is why
#   npllm's `numba` backend still calls BLAS for plain matrix products and spends its kernels on what
#   BLAS cannot do: fusing softmax, masking and attention, or layer norm, into one pass over memory.

# %%
names = [row[0] for row in rows]
gflops = [row[3] for row in rows]
colours = ["tab:blue"] * 4 + ["tab:orange"] * (len(rows) - 5) + ["tab:gray"]
fig, axes = plt.subplots(figsize=(9, 4))
bars = axes.barh(names[::-1], gflops[::-1], color=colours[::-1])
axes.bar_label(bars, fmt="%.1f", padding=3, fontsize=8)
axes.set_xscale("log")
axes.set_xlim(min(gflops) / 2, max(gflops) * 3)      # room for the labels
axes.set_xlabel("GFLOP/s (log scale)")
axes.set_title(f"float32 matmul {size}³ on {numba.get_num_threads()} threads: this tutorial (blue), "
               "npllm_kernels (orange), BLAS (gray)", fontsize=9)
save_figure(fig, "09_numba_matmul.png")

# %% [markdown]
# ## Check: every kernel agrees with the reference on the timed matrices too

# %%
reference = reference_matmul(a.astype(np.float64), b.astype(np.float64))
for name, kernel in versions.items():
    if name.startswith("1"):
        continue                          # the naive loop was validated above; it is slow at this size
    np.testing.assert_allclose(kernel(a, b), reference, rtol=1e-4, atol=1e-3, err_msg=name)
print(f"{len(versions) - 1} kernels match the reference on {size}³  ✓")

# %% [markdown]
# ## Summary
#
# - `@njit` compiles a Python function on first call; write loops over NumPy arrays with explicit types
#   (`a.dtype.type(0)`, not `0.0`) and the result runs at compiled speed.
# - Memory order decides speed: make the innermost loop walk contiguous memory with independent
#   iterations, so LLVM can use SIMD.
# - Tile the loops so the data a block reuses stays in the cache.
# - `prange` over independent output blocks uses every core without races.
# - Validate every version against the reference before timing it; time steady state, not the compile.
#
# ## Exercises
#
# 1. Print `matmul_ikj.inspect_asm(matmul_ikj.signatures[0])` and look for `vfmadd` instructions on
#    `ymm` registers: that is the SIMD inner loop. Are there any in `matmul_naive`?
# 2. Try `@njit(fastmath=True)` on `matmul_naive`. Why does allowing reassociation let LLVM vectorise the
#    dot product, and what does it change in the result?
# 3. Vary `TILE_K` and `TILE_N` (64 … 1024) at `size = 1024`. Where is the optimum, and how does it relate
#    to your CPU's L1/L2 sizes (`lscpu`)?
# 4. Read `npllm_kernels/cpu/matmul.py`'s v3 (packing and a 4 × 4 register-blocked micro-kernel) and
#    explain each of its steps with the vocabulary of this tutorial.
