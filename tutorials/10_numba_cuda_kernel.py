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
# # 10. Writing a Numba CUDA kernel
#
# A GPU runs one function — a **kernel** — on thousands of threads at once. Threads are grouped in
# **blocks** (up to 1,024 threads, which share a fast on-chip **shared memory** and can wait for each
# other); blocks form a **grid**. Each thread finds its piece of work from its coordinates. With
# `numba.cuda`, kernels are Python functions decorated with `@cuda.jit`, compiled to GPU code (PTX).
#
# This tutorial writes a first kernel, draws which thread computes what, then writes a matrix multiply
# twice — one thread per output, then with shared-memory tiles — validates both against the NumPy
# reference and compares them with npllm's own CUDA kernels (`npllm_kernels.cuda`).
#
# **No GPU?** The next cell turns on Numba's **CUDA simulator** (`NUMBA_ENABLE_CUDASIM=1`) *before*
# `numba.cuda` is imported — the variable is read only at import. The simulator runs every GPU thread as
# a Python thread: the same code, the same indexing and synchronisation rules, so it is a faithful way to
# learn and to test kernels — but it is thousands of times slower than a GPU, so the shapes here are tiny
# and the timing section runs only on a real GPU.

# %%
import os
import shutil
import sys

HAS_GPU = shutil.which("nvidia-smi") is not None or os.path.exists("/dev/nvidia0")
if not HAS_GPU and "NUMBA_ENABLE_CUDASIM" not in os.environ:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"   # must happen before `from numba import cuda`
    print("No NVIDIA GPU found: running the kernels in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1).")
    print("(In a notebook, restart the kernel first if numba.cuda was already imported.)")

import time

import matplotlib
import numpy as np
from numba import cuda

if "ipykernel" not in sys.modules:      # run as a script: draw into PNG files, never open a window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

from npllm.layers import matmul as reference_matmul
from npllm.plots import save_figure

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
FAST = os.environ.get("NPLLM_FAST") == "1"
device_name = "Numba CUDA simulator" if SIMULATOR else cuda.get_current_device().name
print("device:", device_name.decode() if isinstance(device_name, bytes) else device_name)

# %% [markdown]
# ## A first kernel: $y = a x + y$
#
# `cuda.grid(1)` is this thread's global index, `blockIdx.x * blockDim.x + threadIdx.x`. The grid is
# rounded up to whole blocks, so the last block usually has threads with no element to work on: every
# kernel **checks its bounds**. A kernel returns nothing; it writes into arrays. The launch
# `kernel[blocks, threads_per_block](...)` chooses the grid.
#
# Memory is explicit: `cuda.to_device` copies to the GPU once, `copy_to_host` copies back once. (Passing
# NumPy arrays straight to a kernel also works, but then Numba copies them in and out at *every* launch —
# in a loop, that traffic costs more than the kernel.)

# %%
@cuda.jit
def axpy_kernel(a, x, y):
    """y[i] += a * x[i] for every i (one thread each)."""
    i = cuda.grid(1)
    if i < x.shape[0]:                  # the grid may be larger than the array
        y[i] += a * x[i]


n = 1000
x = np.arange(n, dtype=np.float32)
y = np.ones(n, dtype=np.float32)
threads_per_block = 128
blocks = (n + threads_per_block - 1) // threads_per_block      # 8 blocks = 1024 threads for 1000 items
x_device, y_device = cuda.to_device(x), cuda.to_device(y)
axpy_kernel[blocks, threads_per_block](np.float32(2.0), x_device, y_device)
result = y_device.copy_to_host()
np.testing.assert_allclose(result, 2.0 * x + 1.0)
print(f"{blocks} blocks x {threads_per_block} threads = {blocks * threads_per_block} threads "
      f"for {n} elements; y = 2x + 1  ✓")

# %% [markdown]
# ## Who computes what
#
# For a matrix, use a 2-D grid: `col, row = cuda.grid(2)`. By convention `x` indexes columns, so
# neighbouring threads (consecutive `threadIdx.x`) touch neighbouring memory addresses of a row-major
# array and the hardware merges their loads into one transaction ("coalescing"). The kernel below just
# records, for every element of a 20 × 28 output, the block that computed it — with 8 × 8 blocks, a grid
# of 4 blocks along x (columns) by 3 along y (rows), whose last column and row of blocks hang over the
# edge. Each block is labelled with its `(blockIdx.x, blockIdx.y)`.

# %%
@cuda.jit
def which_block_kernel(out):
    """out[row, col] = the linear index of the block of the thread that owns (row, col)."""
    col, row = cuda.grid(2)
    if row < out.shape[0] and col < out.shape[1]:
        out[row, col] = cuda.blockIdx.y * cuda.gridDim.x + cuda.blockIdx.x


TILE = 8
owner = cuda.to_device(np.full((20, 28), -1, dtype=np.int32))
grid = ((28 + TILE - 1) // TILE, (20 + TILE - 1) // TILE)       # (blocks along x = columns, along y = rows)
which_block_kernel[grid, (TILE, TILE)](owner)
owner = owner.copy_to_host()
assert (owner >= 0).all()                                        # every element was written exactly once
fig, axes = plt.subplots(figsize=(7, 5))
axes.imshow(owner, cmap="tab20", interpolation="nearest")
for block in range(grid[0] * grid[1]):
    rows, cols = np.nonzero(owner == block)
    axes.text(cols.mean(), rows.mean(), f"blockIdx\n({block % grid[0]}, {block // grid[0]})", ha="center",
              va="center", fontsize=8)
axes.set_xticks(np.arange(0, 29, TILE) - 0.5, np.arange(0, 29, TILE))
axes.set_yticks(np.arange(0, 21, TILE) - 0.5, np.arange(0, 21, TILE))
axes.grid(color="white", linewidth=2)
axes.set_title(f"a 20 x 28 output on a {grid[0]} x {grid[1]} grid of {TILE} x {TILE} blocks\n"
               "(threads past the edge of the last blocks do nothing)")
axes.set_xlabel("column (cuda.grid x)")
axes.set_ylabel("row (cuda.grid y)")
save_figure(fig, "10_cuda_grid.png")

# %% [markdown]
# ## Matmul, version 1: one thread per output
#
# Thread $(i, j)$ computes $C_{ij} = \sum_k A_{ik} B_{kj}$ alone, reading a row of $A$ and a column of
# $B$ from global memory: $2K$ loads for $2K$ flops. GPU arithmetic is far faster than its memory, so
# this kernel spends its time waiting for loads.

# %%
@cuda.jit
def matmul_naive_kernel(a, b, c):
    """c = a @ b; thread (col, row) computes c[row, col].  a (M, K), b (K, N), c (M, N)."""
    col, row = cuda.grid(2)
    if row < c.shape[0] and col < c.shape[1]:
        total = c.dtype.type(0)          # float32 zero: a bare 0.0 would make the loop float64 (slow)
        for k in range(a.shape[1]):
            total += a[row, k] * b[k, col]
        c[row, col] = total


# %% [markdown]
# ## Matmul, version 2: shared-memory tiles
#
# The threads of a block compute a `TILE × TILE` tile of $C$. They walk along $K$ one tile at a time:
# together they **stage** a tile of $A$ and a tile of $B$ in shared memory (each thread loads one element
# of each), **wait** (`cuda.syncthreads()`) until the whole tile is there, then each thread reads `TILE`
# values of each staged tile — every global load is now reused `TILE` times. A second `syncthreads()`
# stops anyone from overwriting the tiles while others still read them. Threads outside the matrix
# load zeros, so partial tiles at the edges need no special case — but they must still reach every
# `syncthreads()`, which is why the bounds check comes at the *end*.

# %%
@cuda.jit
def matmul_tiled_kernel(a, b, c):
    """c = a @ b through TILE x TILE shared-memory tiles (launch with TILE x TILE threads per block)."""
    a_tile = cuda.shared.array((TILE, TILE), dtype=a.dtype)
    b_tile = cuda.shared.array((TILE, TILE), dtype=b.dtype)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    col, row = cuda.grid(2)
    M, K = a.shape
    N = b.shape[1]
    zero = c.dtype.type(0)
    total = zero
    for k0 in range(0, K, TILE):
        a_tile[ty, tx] = a[row, k0 + tx] if row < M and k0 + tx < K else zero
        b_tile[ty, tx] = b[k0 + ty, col] if k0 + ty < K and col < N else zero
        cuda.syncthreads()                   # the tiles are complete
        for k in range(TILE):
            total += a_tile[ty, k] * b_tile[k, tx]
        cuda.syncthreads()                   # everyone is done reading before the next load
    if row < M and col < N:
        c[row, col] = total


def launch(kernel, a_device, b_device):
    """Run a 2-D matmul kernel on device arrays with TILE x TILE blocks; return c on the device."""
    M, N = a_device.shape[0], b_device.shape[1]
    c_device = cuda.device_array((M, N), dtype=a_device.dtype)
    blocks = ((N + TILE - 1) // TILE, (M + TILE - 1) // TILE)
    kernel[blocks, (TILE, TILE)](a_device, b_device, c_device)
    return c_device


# %% [markdown]
# ## Validate against the reference
#
# On shapes that are multiples of nothing (19 × 23 @ 23 × 17), so every edge case runs. npllm's CUDA
# kernels — v1 naive, v2 tiled, v3 register-tiled, each validated the same way in its tests — run on
# the same input when `npllm_kernels.cuda` is available.

# %%
rng = np.random.default_rng(0)
a = rng.standard_normal((19, 23)).astype(np.float32)
b = rng.standard_normal((23, 17)).astype(np.float32)
reference = reference_matmul(a.astype(np.float64), b.astype(np.float64))
a_device, b_device = cuda.to_device(a), cuda.to_device(b)     # copied once, used by every version

ours = {"naive (one thread per output)": matmul_naive_kernel, "shared-memory tiles": matmul_tiled_kernel}
results = {name: launch(kernel, a_device, b_device).copy_to_host() for name, kernel in ours.items()}
try:
    from npllm_kernels.cuda.matmul import VERSIONS as library_versions
    for name, version in library_versions.items():
        results[f"npllm_kernels {name}"] = version(a, b)
except ImportError as exc:                # numba-cuda or the kernels package missing
    print(f"npllm_kernels.cuda is not available ({exc}); checking this tutorial's kernels only")
for name, result in results.items():
    error = np.abs(result - reference).max()
    print(f"{name:<32} max |C - reference| = {error:.1e}")

# %% [markdown]
# ## Timing (real GPU only)
#
# On a GPU, time steady state with the inputs already on the device and a `cuda.synchronize()` before
# reading the clock (launches are asynchronous). The simulator's timings would measure Python threads,
# not a GPU, so this cell only runs on real hardware.

# %%
if SIMULATOR:
    print("simulator: skipping the timings (run this notebook on a machine with an NVIDIA GPU)")
else:
    size = 1024 if FAST else 2048
    big_a = cuda.to_device(rng.standard_normal((size, size)).astype(np.float32))
    big_b = cuda.to_device(rng.standard_normal((size, size)).astype(np.float32))
    for name, kernel in ours.items():
        launch(kernel, big_a, big_b)                                  # compile and warm up
        cuda.synchronize()
        started = time.perf_counter()
        for _ in range(5):
            launch(kernel, big_a, big_b)
        cuda.synchronize()
        seconds = (time.perf_counter() - started) / 5
        print(f"{name:<32} {size}³: {seconds * 1e3:8.2f} ms, {2 * size ** 3 / seconds / 1e12:6.2f} TFLOP/s")
    print("npllm bench --backend cuda --only matmul times npllm_kernels' versions the same way")

# %% [markdown]
# ## Check: every kernel matches the reference

# %%
for name, result in results.items():
    np.testing.assert_allclose(result, reference, rtol=1e-4, atol=1e-4, err_msg=name)
print(f"{len(results)} CUDA matmul kernels match the NumPy reference  ✓")

# %% [markdown]
# ## Summary
#
# - A kernel is one function run by every thread of a grid of blocks; each thread derives its work from
#   `cuda.grid(...)` and checks its bounds.
# - Copy data to the device once, launch many kernels on device arrays, copy results back once.
# - Shared memory lets a block stage data once and reuse it many times; `cuda.syncthreads()` separates
#   "everyone writes" from "everyone reads", and every thread of the block must reach it.
# - Without a GPU, `NUMBA_ENABLE_CUDASIM=1` (set before importing `numba.cuda`) runs the same kernels as
#   Python threads: slow, but exact for learning and testing.
#
# ## Exercises
#
# 1. Move the bounds check of `matmul_tiled_kernel` to the top (`if row >= M or col >= N: return`). Why
#    can that hang or corrupt the result on a real GPU when the shape is not a multiple of `TILE`?
# 2. Write a row-softmax kernel: one block per row, threads striding over the columns, a shared-memory
#    reduction for the maximum and for the sum. Validate it against `npllm.layers.softmax`.
# 3. Change `TILE` to 16 and 32. On a GPU, how does the speed change, and what limits it (shared memory
#    per block, threads per block)?
# 4. Read `npllm_kernels/cuda/matmul.py`'s v3: each thread computes an 8 × 8 block of outputs in
#    registers. Why does that reduce shared-memory traffic per multiply-add?
