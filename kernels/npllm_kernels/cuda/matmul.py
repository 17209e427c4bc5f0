"""Matrix multiply C = A @ B on the GPU, written in three steps (after llm.c's dev/cuda/matmul_forward.cu).

Reference: ``npllm.layers.matmul`` (NumPy's BLAS), float arrays (..., M, K) @ (..., K, N) → (..., M, N).
Every kernel works on a batch of matrices, (batch, M, K) @ (batch, K, N); the batch is grid axis z.

v1: naive. One thread per element of C reads a row of A and a column of B straight from global
    memory: 2K loads for 2K flops, so the kernel waits on memory (about 1 flop per 4 bytes).
v2: shared-memory tiling. A block of TILE×TILE threads stages a TILE×TILE tile of A and one of B in
    shared memory, then every thread reuses each staged element TILE times; global traffic falls by
    TILE×. Each FMA still needs two shared-memory loads, which is now the limit.
v3: register tiling. A block of 16×16 threads computes a BLOCK_M×BLOCK_N (128×128) tile of C; each
    thread owns THREAD_M×THREAD_N (8×8) outputs held in registers. Per step along K a thread loads
    8 values of A and 8 of B from shared memory into registers and does 64 FMAs with them: 8 FMAs per
    shared load instead of 1/2, which lets the arithmetic units, not the memory, set the pace.

Floats are created through ``dtype.type(...)``: a bare Python ``0.0`` is a float64 and would silently
turn a float32 kernel into (slow) double-precision arithmetic; the PTX test checks that it never does.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from npllm.layers._validate import check_matmul_operands
from npllm_kernels.cuda._device import ceil_div, check_ndim, device_float

# v1 and v2: square thread blocks of TILE×TILE threads, one output element each.
TILE = 16
# v3: block tile of C, K-step staged in shared memory, outputs per thread (threads = 16×16 = 256).
BLOCK_M, BLOCK_N, BLOCK_K = 128, 128, 8
THREAD_M, THREAD_N = 8, 8
THREADS_Y, THREADS_X = BLOCK_M // THREAD_M, BLOCK_N // THREAD_N
THREADS_V3 = THREADS_Y * THREADS_X
LOADS_A = BLOCK_M * BLOCK_K // THREADS_V3   # elements of the A tile each thread stages
LOADS_B = BLOCK_K * BLOCK_N // THREADS_V3


@cuda.jit
def matmul_kernel_v1(a, b, c):
    """c[z] = a[z] @ b[z]: thread (x, y) computes c[z, y, x] alone.  a (Z, M, K), b (Z, K, N), c (Z, M, N)."""
    col, row = cuda.grid(2)   # x indexes columns so neighbouring threads read neighbouring b and c
    z = cuda.blockIdx.z
    M, K = a.shape[1], a.shape[2]
    N = b.shape[2]
    if row < M and col < N:
        acc = c.dtype.type(0)
        for k in range(K):
            acc += a[z, row, k] * b[z, k, col]
        c[z, row, col] = acc


@cuda.jit
def matmul_kernel_v2(a, b, c):
    """c[z] = a[z] @ b[z] through TILE×TILE shared-memory tiles (launch with TILE×TILE threads)."""
    a_tile = cuda.shared.array((TILE, TILE), dtype=a.dtype)
    b_tile = cuda.shared.array((TILE, TILE), dtype=b.dtype)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    col, row = cuda.grid(2)
    z = cuda.blockIdx.z
    M, K = a.shape[1], a.shape[2]
    N = b.shape[2]
    zero = c.dtype.type(0)
    acc = zero
    for k0 in range(0, K, TILE):
        # Out-of-range threads still help load (zeros pad the partial tiles) and must reach both
        # barriers: a syncthreads that some threads of the block skip is undefined behaviour.
        a_tile[ty, tx] = a[z, row, k0 + tx] if row < M and k0 + tx < K else zero
        b_tile[ty, tx] = b[z, k0 + ty, col] if k0 + ty < K and col < N else zero
        cuda.syncthreads()                   # the tiles are complete before anyone reads them
        for kk in range(TILE):
            acc += a_tile[ty, kk] * b_tile[kk, tx]
        cuda.syncthreads()                   # everyone is done reading before the next load
    if row < M and col < N:
        c[z, row, col] = acc


@cuda.jit
def matmul_kernel_v3(a, b, c):
    """c[z] = a[z] @ b[z]; each of 16×16 threads computes an 8×8 block of a 128×128 tile of C."""
    # A's tile is stored transposed (k, m) so the inner loop reads a column of it as a contiguous row.
    a_tile = cuda.shared.array((BLOCK_K, BLOCK_M), dtype=a.dtype)
    b_tile = cuda.shared.array((BLOCK_K, BLOCK_N), dtype=b.dtype)
    acc = cuda.local.array((THREAD_M, THREAD_N), dtype=c.dtype)   # fully unrolled → registers
    a_reg = cuda.local.array(THREAD_M, dtype=a.dtype)
    b_reg = cuda.local.array(THREAD_N, dtype=b.dtype)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    tid = ty * THREADS_X + tx
    z = cuda.blockIdx.z
    row0, col0 = cuda.blockIdx.y * BLOCK_M, cuda.blockIdx.x * BLOCK_N
    M, K = a.shape[1], a.shape[2]
    N = b.shape[2]
    zero = c.dtype.type(0)
    for i in range(THREAD_M):
        for j in range(THREAD_N):
            acc[i, j] = zero
    for k0 in range(0, K, BLOCK_K):
        # Stage the tiles: 256 threads copy 128×8 + 8×128 elements, LOADS_A and LOADS_B each.
        for e in range(LOADS_A):
            idx = tid + e * THREADS_V3
            m, kk = idx // BLOCK_K, idx % BLOCK_K
            inside = row0 + m < M and k0 + kk < K
            a_tile[kk, m] = a[z, row0 + m, k0 + kk] if inside else zero
        for e in range(LOADS_B):
            idx = tid + e * THREADS_V3
            kk, n = idx // BLOCK_N, idx % BLOCK_N      # consecutive threads read consecutive columns
            inside = k0 + kk < K and col0 + n < N
            b_tile[kk, n] = b[z, k0 + kk, col0 + n] if inside else zero
        cuda.syncthreads()
        for kk in range(BLOCK_K):
            # Thread (ty, tx) owns rows ty + 16 i and columns tx + 16 j of the tile: a warp then reads
            # 16 consecutive b_tile entries (no bank conflicts) and 2 broadcast a_tile entries.
            for i in range(THREAD_M):
                a_reg[i] = a_tile[kk, ty + i * THREADS_Y]
            for j in range(THREAD_N):
                b_reg[j] = b_tile[kk, tx + j * THREADS_X]
            for i in range(THREAD_M):
                for j in range(THREAD_N):
                    acc[i, j] += a_reg[i] * b_reg[j]
        cuda.syncthreads()
    for i in range(THREAD_M):
        row = row0 + ty + i * THREADS_Y
        for j in range(THREAD_N):
            col = col0 + tx + j * THREADS_X
            if row < M and col < N:
                c[z, row, col] = acc[i, j]


def _check_operands(a, b):
    """Device (Z, M, K) and (Z, K, N) operands → (Z, M, N) output shape."""
    check_ndim(a, "a", 3, "(batch, M, K)")
    check_ndim(b, "b", 3, "(batch, K, N)")
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ValueError(f"a (batch, M, K) and b (batch, K, N) must agree in batch and K, "
                         f"got a {tuple(a.shape)} and b {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise TypeError(f"a and b must share one dtype, got a={a.dtype}, b={b.dtype}")
    return a.shape[0], a.shape[1], b.shape[2]


def _launcher(kernel, block, tile_m, tile_n):
    def launch(a, b):
        a, b = device_float(a, "a"), device_float(b, "b")
        single = len(a.shape) == 2 and len(b.shape) == 2     # plain matrices: a batch of one
        if single:
            a, b = a.reshape(1, *a.shape), b.reshape(1, *b.shape)
        Z, M, N = _check_operands(a, b)
        c = cuda.device_array((Z, M, N), dtype=a.dtype)
        if M and N and Z:
            grid = (ceil_div(N, tile_n), ceil_div(M, tile_m), Z)
            kernel[grid, block](a, b, c)
        return c.reshape(M, N) if single else c
    return launch


matmul_v1 = _launcher(matmul_kernel_v1, (TILE, TILE), TILE, TILE)
matmul_v2 = _launcher(matmul_kernel_v2, (TILE, TILE), TILE, TILE)
matmul_v3 = _launcher(matmul_kernel_v3, (THREADS_X, THREADS_Y), BLOCK_M, BLOCK_N)
for _version, _fn in (("v1", matmul_v1), ("v2", matmul_v2), ("v3", matmul_v3)):
    _fn.__name__ = f"matmul_{_version}"
    _fn.__doc__ = (f"Device C = A @ B with kernel {_version}: a (batch, M, K), b (batch, K, N) device "
                   "arrays (or NumPy, copied once; or both 2-D) → c (batch, M, N) (or (M, N)) device array.")

VERSIONS = {"v1": matmul_v1, "v2": matmul_v2, "v3": matmul_v3}
DEFAULT_VERSION = "v3"
matmul_device = VERSIONS[DEFAULT_VERSION]


def matmul(a, b):
    """a @ b on the GPU (NumPy in and out) with the reference's contract (``check_matmul_operands``).
    a (..., M, K) or (K,), b (..., K, N) or (K,) → (..., M, N)."""
    check_matmul_operands(a, b)
    dtype = np.result_type(a, b)   # NumPy's promotion: float32 @ float64 is float64
    # A vector is a 1-row (a) or 1-column (b) matrix whose extra axis is dropped again, as in NumPy.
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    M, K, N = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    a3 = np.broadcast_to(a2.astype(dtype, copy=False), batch + (M, K)).reshape(-1, M, K)   # (Z, M, K)
    b3 = np.broadcast_to(b2.astype(dtype, copy=False), batch + (K, N)).reshape(-1, K, N)   # (Z, K, N)
    c = matmul_device(a3, b3).copy_to_host().reshape(batch + (M, N))
    if a.ndim == 1:
        c = c[..., 0, :]
    if b.ndim == 1:
        c = c[..., 0]
    return c
