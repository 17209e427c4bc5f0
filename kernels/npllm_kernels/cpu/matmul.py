"""Matrix multiply C = A @ B in Numba, built up the way fast GEMMs are (Goto & van de Geijn 2008, BLIS).

    C[i, j] = Σ_k A[i, k] B[k, j]        A (M, K), B (K, N), C (M, N); 2·M·N·K flops

Each version changes one thing (reference: NumPy's ``a @ b``, i.e. BLAS):

v1: naive triple loop i, j, k: one dot product per output, B read down a column (a stride of N
    elements), so most multiply-adds wait on a cache miss. Serial.
v2: cache tiling and loop order i, k, j: the innermost loop is ``C[i, :] += A[i, k] * B[k, :]`` along
    contiguous rows, which LLVM turns into SIMD fused multiply-adds; a TILE_K × TILE_N block of B is
    reused from L2 by all TILE_M rows of a task. ``prange`` over row blocks. Bound by the loads and stores
    of C's row (one load + one store per FMA), not by arithmetic.
v3: packing + a register-blocked micro-kernel. B is packed once, transposed, into K-panels of KC rows
    whose rows are contiguous; each task packs its MC × KC block of A the same way. The micro-kernel
    computes a 4 × 4 block of C as 16 dot products over KC: per step it loads 4 values of A and 4 of B
    and does 16 multiply-adds, all 16 sums live in SIMD registers (a sum over k is a reduction, which
    ``fastmath`` ``reassoc`` lets LLVM vectorize), and nothing is stored until the end. The loop body is
    8 vector loads + 16 vector FMAs, so on data in L1 it runs at the FMA units' peak; packing and the
    tails of the reductions cost the rest. Tiles of C (MC × NC, each written by one task: no races) are
    dealt round-robin to one loop per thread. Default.

NumPy's BLAS (OpenBLAS's hand-written 512-bit kernels, packing overlapped with compute) beats v3 at
every shape measured (docs/performance.md, "Matmul ladder"), so :func:`matmul`, what the "numba"
backend's ``ops.matmul`` runs, is NumPy's ``@`` behind the reference's checks. The versions stay
callable (``VERSIONS``, timed by ``npllm bench --only matmul``) as a worked example of what makes a
matmul fast.

Threads: Numba's pool (see ``_threads``) for ``prange``; the kernel never calls BLAS.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from npllm.layers._validate import check_float, check_matmul_operands, check_same_dtype
from npllm_kernels.cpu._math import KERNEL_FASTMATH

# v2 tiles: a TILE_K × TILE_N block of B (256 KiB in float32) stays in L2 while TILE_M rows of A pass by.
TILE_M, TILE_K, TILE_N = 64, 256, 256
# v3 blocking, from the inside out:
MR = NR = 4   # micro-kernel block: 16 accumulators + 8 loaded vectors fit the 32 SIMD registers of AVX-512
KC = 512      # K-panel: 4 + 4 packed rows of KC floats (16 KiB in float32) stay in L1 (48 KiB)
MC = 64       # rows of A per task: MC × KC (128 KiB) stays in L2 while the task sweeps NC columns of B
NC = 256      # columns of C per task: M/MC × N/NC tasks give prange enough work to balance 2+ cores


@njit(cache=True, fastmath=KERNEL_FASTMATH)
def _matmul_v1_kernel(a, b, c):
    M, K = a.shape
    N = b.shape[1]
    for i in range(M):
        for j in range(N):
            total = a.dtype.type(0)
            for k in range(K):
                total += a[i, k] * b[k, j]     # b[k, j]: a new cache line every step
            c[i, j] = total


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH)
def _matmul_v2_kernel(a, b, c):
    M, K = a.shape
    N = b.shape[1]
    for block in prange((M + TILE_M - 1) // TILE_M):
        i_start, i_stop = block * TILE_M, min(M, block * TILE_M + TILE_M)
        for k_start in range(0, K, TILE_K):
            k_stop = min(K, k_start + TILE_K)
            for j_start in range(0, N, TILE_N):
                j_stop = min(N, j_start + TILE_N)
                width = j_stop - j_start
                for i in range(i_start, i_stop):
                    c_row = c[i, j_start:j_stop]
                    for k in range(k_start, k_stop):
                        a_ik = a[i, k]
                        b_row = b[k, j_start:j_stop]
                        # Indexing row views from 0 (not c[i, j] from j_start) lets LLVM see the index
                        # is never negative, so no wrap-around branch blocks vectorization.
                        for j in range(width):          # contiguous: SIMD loads, FMAs, stores
                            c_row[j] += a_ik * b_row[j]


@njit(cache=True, parallel=True)
def _pack_b_panels(b, panels):
    """panels[p, j, :kc] = b[p*KC : p*KC + kc, j]: each K-panel of B transposed, rows contiguous."""
    K, N = b.shape
    n_col_blocks = (N + 31) // 32
    for task in prange(panels.shape[0] * n_col_blocks):
        panel, col_block = task // n_col_blocks, task % n_col_blocks
        k_base = panel * KC
        # Transpose 32 × 32 squares so both the reads and the writes touch few cache lines at a time.
        for k_start in range(k_base, min(K, k_base + KC), 32):
            for j in range(col_block * 32, min(N, col_block * 32 + 32)):
                for k in range(k_start, min(K, k_start + 32)):
                    panels[panel, j, k - k_base] = b[k, j]


@njit(cache=True, fastmath=KERNEL_FASTMATH)
def _micro_kernel(a_pack, row, b_pack, col, kc, c, c_row, c_col):
    """c[c_row:+4, c_col:+4] += a_pack[row:+4, :kc] @ b_pack[col:+4, :kc].T with 16 register sums."""
    zero = a_pack.dtype.type(0)
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
    # LLVM vectorizes this loop over p: each s becomes a vector of partial sums (8 floats wide), each
    # line of four products becomes a vector FMA, and the 16 vectors are reduced once after the loop.
    for p in range(kc):
        a0, a1, a2, a3 = a_pack[row, p], a_pack[row + 1, p], a_pack[row + 2, p], a_pack[row + 3, p]
        b0, b1, b2, b3 = b_pack[col, p], b_pack[col + 1, p], b_pack[col + 2, p], b_pack[col + 3, p]
        s00 += a0 * b0; s01 += a0 * b1; s02 += a0 * b2; s03 += a0 * b3
        s10 += a1 * b0; s11 += a1 * b1; s12 += a1 * b2; s13 += a1 * b3
        s20 += a2 * b0; s21 += a2 * b1; s22 += a2 * b2; s23 += a2 * b3
        s30 += a3 * b0; s31 += a3 * b1; s32 += a3 * b2; s33 += a3 * b3
    i, j = c_row, c_col
    c[i, j] += s00
    c[i, j + 1] += s01
    c[i, j + 2] += s02
    c[i, j + 3] += s03
    c[i + 1, j] += s10
    c[i + 1, j + 1] += s11
    c[i + 1, j + 2] += s12
    c[i + 1, j + 3] += s13
    c[i + 2, j] += s20
    c[i + 2, j + 1] += s21
    c[i + 2, j + 2] += s22
    c[i + 2, j + 3] += s23
    c[i + 3, j] += s30
    c[i + 3, j + 1] += s31
    c[i + 3, j + 2] += s32
    c[i + 3, j + 3] += s33


@njit(cache=True, fastmath=KERNEL_FASTMATH)
def _edge_dot(a_pack, row, b_pack, col, kc):
    """One dot product a_pack[row, :kc] · b_pack[col, :kc], for the rows/columns left over by 4 × 4 blocks."""
    total = a_pack.dtype.type(0)
    for p in range(kc):
        total += a_pack[row, p] * b_pack[col, p]
    return total


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH)
def _matmul_v3_kernel(a, b_panels, c, a_packs):
    M, K = a.shape
    N = c.shape[1]
    n_row_blocks, n_col_blocks = (M + MC - 1) // MC, (N + NC - 1) // NC
    n_workers = a_packs.shape[0]
    # One loop per thread, each with its own packing buffer a_packs[worker], allocated once by the
    # caller: no malloc/free per task in the hot loop, and the memory shows up in tracemalloc.
    for worker in prange(n_workers):
        for task in range(worker, n_row_blocks * n_col_blocks, n_workers):   # one MC × NC tile of C
            _matmul_v3_task(a, b_panels, c, a_packs[worker], task, n_col_blocks)


@njit(cache=True, fastmath=KERNEL_FASTMATH)
def _matmul_v3_task(a, b_panels, c, a_pack, task, n_col_blocks):
    """C[i0:i0+MC, j0:j0+NC] = A[i0:i0+MC, :] @ B[:, j0:j0+NC], one K-panel at a time."""
    M, K = a.shape
    N = c.shape[1]
    i0 = (task // n_col_blocks) * MC
    j0 = (task % n_col_blocks) * NC
    rows, j_stop = min(MC, M - i0), min(N, j0 + NC)
    for panel in range(b_panels.shape[0]):
        k0 = panel * KC
        kc = min(KC, K - k0)
        for r in range(rows):                              # pack this task's block of A
            for p in range(kc):
                a_pack[r, p] = a[i0 + r, k0 + p]
        b_pack = b_panels[panel]                           # (N, KC)
        full_rows = rows - rows % MR
        full_stop = j_stop - (j_stop - j0) % NR
        # 4 packed B rows (16 KiB) stay in L1 while the MC rows of A stream past from L2.
        for j in range(j0, full_stop, NR):
            for r in range(0, full_rows, MR):
                _micro_kernel(a_pack, r, b_pack, j, kc, c, i0 + r, j)
        for r in range(full_rows, rows):                   # leftover rows (M not a multiple of 4)
            for j in range(j0, j_stop):
                c[i0 + r, j] += _edge_dot(a_pack, r, b_pack, j, kc)
        for r in range(full_rows):                         # leftover columns
            for j in range(full_stop, j_stop):
                c[i0 + r, j] += _edge_dot(a_pack, r, b_pack, j, kc)


def _check_pair(a, b):
    """Validate a (M, K) and b (K, N) for the 2-D kernels."""
    check_float("a", a, 2, "(M, K)")
    check_float("b", b, 2, "(K, N)")
    check_same_dtype(a=a, b=b)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"a's columns must equal b's rows (K), got a {a.shape} and b {b.shape}")


def matmul_v1(a, b):
    """Naive triple loop.  a (M, K), b (K, N) → (M, N)."""
    _check_pair(a, b)
    c = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    _matmul_v1_kernel(np.ascontiguousarray(a), np.ascontiguousarray(b), c)
    return c


def matmul_v2(a, b):
    """Cache-tiled, i-k-j order, vectorized axpy inner loop.  a (M, K), b (K, N) → (M, N)."""
    _check_pair(a, b)
    c = np.zeros((a.shape[0], b.shape[1]), dtype=a.dtype)
    _matmul_v2_kernel(np.ascontiguousarray(a), np.ascontiguousarray(b), c)
    return c


def matmul_v3(a, b):
    """Packed panels + 4 × 4 register-blocked micro-kernel.  a (M, K), b (K, N) → (M, N)."""
    _check_pair(a, b)
    K, N = b.shape
    b_panels = np.zeros((max(1, (K + KC - 1) // KC), N, KC), dtype=b.dtype)   # (panels, N, KC)
    _pack_b_panels(np.ascontiguousarray(b), b_panels)
    c = np.zeros((a.shape[0], N), dtype=a.dtype)
    a_packs = np.empty((numba.get_num_threads(), MC, KC), dtype=a.dtype)    # one per thread
    _matmul_v3_kernel(np.ascontiguousarray(a), b_panels, c, a_packs)
    return c


VERSIONS = {"v1": matmul_v1, "v2": matmul_v2, "v3": matmul_v3}
matmul_kernel = matmul_v3


def matmul(a, b):
    """a @ b with the reference's contract (``check_matmul_operands``).  a (..., M, K) or (K,),
    b (..., K, N) or (K,) → (..., M, N); NumPy's BLAS, faster than every version above."""
    check_matmul_operands(a, b)
    return a @ b
