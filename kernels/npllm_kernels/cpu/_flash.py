"""The flash-attention loops (Numba) behind ``attention.py``'s ops; see that module for the algorithm.

Every tensor is a C-contiguous 3-D array (batch, T, columns) and each head reads a block of columns:
head h of q is ``q3[b, t, q_off + h·d : q_off + (h+1)·d]``, and so on for k, v, the output and the
gradients; head bh = b · n_head + h of all B·H indexes lse and, as (bh // mask_heads, bh % mask_heads),
the mask. This covers every caller without copies: contiguous (B, H, T, d) inputs are (B·H, T, d) with
n_head = 1; ``split_heads`` views of a (B, T, H·d) array are that array with n_head = H; and
multi-head attention passes its (B, T, 3C) q|k|v projection three times with offsets 0, C and 2C and
writes dq|dk|dv into one (B, T, 3C) gradient the same way. The loops copy each tile they multiply into per-worker scratch
(``np.dot`` wants contiguous operands; a tile is a few KiB, copied once per use).

Grouped-query heads (k and v with Hkv = H / group heads): query head bh (of all B·H) reads kv head
bh // group (of all B·Hkv), found in k3/v3 with ``kv_heads`` heads per row. The backward runs one work
item per kv head and sweeps the group's query heads inside it, so each dK/dV row is the sum over its
group, written by one thread (no races, no repeated K/V).

RoPE (``has_rope``): q and k tiles are rotated as they are copied into scratch (``_copy_rotated_rows``,
cos/sin tables (1 or B, T, d/2) indexed by time), so the products see R(p) q and R(p) k and no rotated
copy exists; the backward rotates dQ and dK back (by −angle) where they are written.

Causal tiles on the diagonal: each row only exponentiates the keys it may see (``_n_visible``) and
zeroes the rest, instead of writing −inf there and exponentiating all of them.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from npllm_kernels.cpu._math import KERNEL_FASTMATH, fast_exp

BLOCK_Q = 64    # queries per tile; a 64 × 128 score tile is 32 KiB in float32 and stays in L1 (48 KiB)
BLOCK_K = 128   # keys per tile
COMPILE_FLAGS = dict(fastmath=KERNEL_FASTMATH, error_model="numpy")   # also for the serial twins
_OPTIONS = dict(cache=True, **COMPILE_FLAGS)


@njit(**_OPTIONS)
def _copy_head_rows(src, t0, n, col, scale, dst):
    """dst (n, w) = src[t0 : t0 + n, col : col + w] · scale, src one batch row (T, columns)."""
    w = dst.shape[1]
    for r in range(n):
        s, out = src[t0 + r, col:col + w], dst[r]
        for c in range(w):
            out[c] = s[c] * scale


@njit(**_OPTIONS)
def _copy_rotated_rows(src, t0, n, col, scale, cos, sin, interleaved, dst):
    """dst (n, w) = R(p_t) src[t, col : col + w] · scale for t = t0 … t0 + n − 1; cos, sin (T, w/2) of
    this batch row. Pairs (i, i + w/2) ("rotate half"), or (2i, 2i + 1) when ``interleaved``."""
    w = dst.shape[1]
    half = w // 2
    for r in range(n):
        s, out = src[t0 + r, col:col + w], dst[r]
        c_row, s_row = cos[t0 + r], sin[t0 + r]
        if interleaved:
            for i in range(half):
                a, b = s[2 * i], s[2 * i + 1]
                out[2 * i] = (a * c_row[i] - b * s_row[i]) * scale
                out[2 * i + 1] = (a * s_row[i] + b * c_row[i]) * scale
        else:
            for i in range(half):
                a, b = s[i], s[half + i]
                out[i] = (a * c_row[i] - b * s_row[i]) * scale
                out[half + i] = (b * c_row[i] + a * s_row[i]) * scale


@njit(**_OPTIONS)
def _unrotate_rows(dst, t0, n, col, w, cos, sin, interleaved):
    """dst[t, col : col + w] = R(p_t)ᵀ dst[t, col : col + w] in place (the rotation by −angle: a gradient
    with respect to rotated values becomes one with respect to the unrotated ones)."""
    half = w // 2
    for r in range(n):
        out = dst[t0 + r, col:col + w]
        c_row, s_row = cos[t0 + r], sin[t0 + r]
        if interleaved:
            for i in range(half):
                a, b = out[2 * i], out[2 * i + 1]
                out[2 * i] = a * c_row[i] + b * s_row[i]
                out[2 * i + 1] = b * c_row[i] - a * s_row[i]
        else:
            for i in range(half):
                a, b = out[i], out[half + i]
                out[i] = a * c_row[i] + b * s_row[i]
                out[half + i] = b * c_row[i] - a * s_row[i]


@njit(**_OPTIONS)
def _put_scaled_rows(src, scale, dst, t0, col, accumulate):
    """dst[t0 + r, col : col + w] = (or +=, when ``accumulate``) src[r] · scale for each row r of src (n, w)."""
    w = src.shape[1]
    for r in range(src.shape[0]):
        s, out = src[r], dst[t0 + r, col:col + w]
        if accumulate:
            for c in range(w):
                out[c] += s[c] * scale
        else:
            for c in range(w):
                out[c] = s[c] * scale


@njit(**_OPTIONS)
def _row_max(row, start):
    """max(start, max(row)).  Four running maxima: one alone is a chain of dependent compares (each
    waits for the previous); four independent chains let the CPU overlap them (docs/performance.md,
    "Flash attention").
    LLVM will not vectorize a float max reduction unless told there are no NaNs (``nnan``), which we
    do not promise."""
    m0 = m1 = m2 = m3 = start
    n = row.shape[0]
    full = n - n % 4
    for c in range(0, full, 4):
        m0 = max(m0, row[c])
        m1 = max(m1, row[c + 1])
        m2 = max(m2, row[c + 2])
        m3 = max(m3, row[c + 3])
    for c in range(full, n):
        m0 = max(m0, row[c])
    return max(max(m0, m1), max(m2, m3))


@njit(**_OPTIONS)
def _apply_mask(s, bh, mask_heads, i0, j0, mask, mstr):
    """s[r, c] = −inf where the boolean mask forbids query i0 + r of head bh (over all B·H heads, of
    which mask_heads per batch row) to see key j0 + c."""
    rows, cols = s.shape
    b, h = bh // mask_heads, bh % mask_heads
    for r in range(rows):
        base = b * mstr[0] + h * mstr[1] + (i0 + r) * mstr[2] + j0 * mstr[3]
        for c in range(cols):
            if not mask[base + c * mstr[3]]:
                s[r, c] = -np.inf


@njit(**_OPTIONS)
def _n_visible(causal, i, j0, cols, offset):
    """How many of keys j0 … j0 + cols − 1 query i may see (causal: keys j ≤ i + offset)."""
    return min(cols, max(0, i + offset - j0 + 1)) if causal else cols


@njit(parallel=True, **_OPTIONS)
def forward_kernel(q3, q_off, k3, k_off, v3, v_off, n_head, kv_heads, group, d, dv, scale, mask, mstr, mask_heads,
                   has_mask, causal, rope_cos, rope_sin, interleaved, has_rope, o3, o_off, lse, scratch):
    """Writes o3's head blocks (B, Tq, ·) and lse (B·H, Tq); scratch is (workers, forward_scratch_size).
    q3, o3 hold ``n_head`` heads per row, k3, v3 ``kv_heads``; query head bh reads kv head bh // group."""
    B, Tq, Tk = q3.shape[0], q3.shape[1], k3.shape[1]
    offset = Tk - Tq                                    # causal: query i sees keys j ≤ i + offset
    n_workers = scratch.shape[0]
    n_q_tiles = (Tq + BLOCK_Q - 1) // BLOCK_Q
    one = q3.dtype.type(1.0)
    # One head per row of k3 and v3 (a contiguous (B·H, T, d) input), not rotated: a tile of keys or
    # values is already a contiguous block that BLAS can read, so it is not copied. Each query tile
    # reads every key tile before it, so at T = 1024 the copies moved 74 MB per call.
    kv_rows_are_tiles = not has_rope and k3.shape[2] == d and v3.shape[2] == dv
    for worker in prange(n_workers):
        buf = scratch[worker]
        q_buf, k_buf = buf[:BLOCK_Q * d], buf[BLOCK_Q * d:(BLOCK_Q + BLOCK_K) * d]
        at = (BLOCK_Q + BLOCK_K) * d
        v_buf, s_buf = buf[at:at + BLOCK_K * dv], buf[at + BLOCK_K * dv:at + BLOCK_K * dv + BLOCK_Q * BLOCK_K]
        at += BLOCK_K * dv + BLOCK_Q * BLOCK_K
        pv_buf, acc_buf = buf[at:at + BLOCK_Q * dv], buf[at + BLOCK_Q * dv:at + 2 * BLOCK_Q * dv]
        at += 2 * BLOCK_Q * dv
        m, l = buf[at:at + BLOCK_Q], buf[at + BLOCK_Q:at + 2 * BLOCK_Q]
        # Work items in order (head by head, a head's query tiles last to first: under causal masking
        # the costliest first), dealt out like cards in a snake: 0, 1, …, n−1, n−1, …, 1, 0, 0, 1, …
        # Round-robin gave one of two threads every even tile and the other every odd one: at T = 256
        # a 40/60 split of the work, and the forward was no faster on two threads than on one.
        n_items = B * n_head * n_q_tiles
        me = np.int64(worker)
        for deal in range((n_items + n_workers - 1) // n_workers):
            item = deal * n_workers + me + (deal % 2) * (n_workers - 1 - 2 * me)
            if item >= n_items:
                continue
            bh, i0 = item // n_q_tiles, (n_q_tiles - 1 - item % n_q_tiles) * BLOCK_Q
            b, h = bh // n_head, bh % n_head
            bkv = bh // group                                   # the kv head this query head reads
            kb, kh = bkv // kv_heads, bkv % kv_heads
            pb = bh // mask_heads if rope_cos.shape[0] > 1 else 0   # row of the RoPE tables
            rows = min(BLOCK_Q, Tq - i0)
            q_tile = q_buf[:rows * d].reshape((rows, d))
            if has_rope:                                        # R(p) q · 1/√d
                _copy_rotated_rows(q3[b], i0, rows, q_off + h * d, scale, rope_cos[pb], rope_sin[pb],
                                   interleaved, q_tile)
            else:
                _copy_head_rows(q3[b], i0, rows, q_off + h * d, scale, q_tile)   # fold 1/√d into Q once
            acc = acc_buf[:rows * dv].reshape((rows, dv))
            m[:] = -np.inf
            l[:] = 0
            key_stop = min(Tk, i0 + rows + offset) if causal else Tk   # later keys: masked for every row
            # All keys in one tile (short sequences): P V goes straight into acc, with nothing to rescale.
            one_tile = key_stop <= BLOCK_K
            if not one_tile:
                acc[:] = 0
            for j0 in range(0, max(key_stop, 0), BLOCK_K):
                cols = min(BLOCK_K, key_stop - j0)
                if kv_rows_are_tiles:                   # the rows j0 … j0 + cols are one contiguous block
                    k_tile, v_tile = k3[kb, j0:j0 + cols], v3[kb, j0:j0 + cols]
                else:
                    k_tile, v_tile = k_buf[:cols * d].reshape((cols, d)), v_buf[:cols * dv].reshape((cols, dv))
                    if has_rope:
                        _copy_rotated_rows(k3[kb], j0, cols, k_off + kh * d, one, rope_cos[pb], rope_sin[pb],
                                           interleaved, k_tile)
                    else:
                        _copy_head_rows(k3[kb], j0, cols, k_off + kh * d, one, k_tile)
                    _copy_head_rows(v3[kb], j0, cols, v_off + kh * dv, one, v_tile)
                s = s_buf[:rows * cols].reshape((rows, cols))
                np.dot(q_tile, k_tile.T, s)                             # scores (rows, cols), BLAS
                if has_mask:
                    _apply_mask(s, bh, mask_heads, i0, j0, mask, mstr)
                for r in range(rows):
                    row = s[r]
                    seen = _n_visible(causal, i0 + r, j0, cols, offset)
                    row_max = _row_max(row[:seen], m[r])
                    if seen == 0 or row_max == -np.inf:   # nothing allowed yet: contributes nothing
                        row[:] = 0
                        continue
                    alpha = fast_exp(m[r] - row_max)      # rescales the old sums (0 when m was −inf)
                    total = s.dtype.type(0)
                    visible = row[:seen]
                    for c in range(seen):
                        p = fast_exp(visible[c] - row_max)
                        visible[c] = p
                        total += p
                    row[seen:] = 0
                    l[r] = l[r] * alpha + total
                    m[r] = row_max
                    if not one_tile:
                        for c in range(dv):
                            acc[r, c] *= alpha
                if one_tile:
                    np.dot(s, v_tile, acc)                              # P V, BLAS
                else:
                    pv = pv_buf[:rows * dv].reshape((rows, dv))
                    np.dot(s, v_tile, pv)                               # P V for this tile, BLAS
                    acc += pv
            col = o_off + h * dv
            for r in range(rows):
                out = o3[b, i0 + r, col:col + dv]
                if l[r] > 0:
                    inv = 1 / l[r]
                    for c in range(dv):
                        out[c] = acc[r, c] * inv
                    lse[bh, i0 + r] = m[r] + np.log(l[r])
                else:                                     # fully masked query: zeros, L = −inf
                    out[:] = 0
                    lse[bh, i0 + r] = -np.inf


def forward_scratch_size(d, dv):
    """Scratch elements one forward worker needs: q, k, v, score, P·V and accumulator tiles, m and l."""
    return (BLOCK_Q + BLOCK_K) * (d + dv) + BLOCK_Q * BLOCK_K + BLOCK_Q * dv + 2 * BLOCK_Q


def backward_scratch_size(Tq, d, dv, group=1):
    """Scratch elements one backward worker needs: the group's Q, dO and D, P and dS strips, tiles."""
    return group * Tq * (d + dv + 1) + 2 * Tq * BLOCK_K + 2 * BLOCK_K * (d + dv) + BLOCK_Q * d


def backward_block_k(Tk):
    """Keys per backward tile: 64 up to 512 keys, else BLOCK_K.  A causal key tile's first query tile
    sees only part of it, and the backward computes that tile whole: at T = 256, 128-key tiles did
    12 blocks of 64 × 64 work for 8 useful ones, 64-key tiles 10 (backward 3.1 → 2.7 ms); from
    T = 1024 on the wider tiles' faster products win again (docs/performance.md)."""
    return 64 if Tk <= 512 else BLOCK_K


@njit(parallel=True, **_OPTIONS)
def backward_kernel(q3, q_off, k3, k_off, v3, v_off, o3, o_off, do3, do_off, lse, n_head, kv_heads, group, d, dv,
                    scale, mask, mstr, mask_heads, has_mask, causal, rope_cos, rope_sin, interleaved, has_rope,
                    dq3, dq_off, dk3, dk_off, dv3, dv_off, dq_parts, scratch, block_k):
    """Writes the head blocks of dq3 (B, Tq, ·), dk3 and dv3 (B, Tk, ·), in key tiles of block_k ≤ BLOCK_K.

    One work item per kv head (dq written in place) when dq_parts has no rows; otherwise one per
    (kv head, key tile), each worker summing dq into its own dq_parts[worker] (B·H, Tq, d), and the
    parts are added into dq3 at the end. An item sweeps the ``group`` query heads that read its kv head,
    writing dK and dV for the first and adding the others' to them."""
    B, Tq, Tk = q3.shape[0], q3.shape[1], k3.shape[1]
    BH = B * n_head
    BKV = BH // group
    offset = Tk - Tq
    n_workers = scratch.shape[0]
    n_k_tiles = (Tk + block_k - 1) // block_k
    per_tile = dq_parts.shape[0] > 0
    n_items = BKV * n_k_tiles if per_tile else BKV
    one = q3.dtype.type(1.0)
    for worker in prange(n_workers):
        buf = scratch[worker]
        q_group = buf[:group * Tq * d].reshape((group, Tq, d))
        at = group * Tq * d
        do_group = buf[at:at + group * Tq * dv].reshape((group, Tq, dv))
        at += group * Tq * dv
        dot_group = buf[at:at + group * Tq].reshape((group, Tq))
        at += group * Tq
        p_buf, ds_buf = buf[at:at + Tq * BLOCK_K], buf[at + Tq * BLOCK_K:at + 2 * Tq * BLOCK_K]
        at += 2 * Tq * BLOCK_K
        k_buf, v_buf = buf[at:at + BLOCK_K * d], buf[at + BLOCK_K * d:at + BLOCK_K * (d + dv)]
        at += BLOCK_K * (d + dv)
        dk_buf, dv_buf = buf[at:at + BLOCK_K * d], buf[at + BLOCK_K * d:at + BLOCK_K * (d + dv)]
        at += BLOCK_K * (d + dv)
        tmp_buf = buf[at:at + BLOCK_Q * d]
        for item in range(worker, n_items, n_workers):
            bkv = item // n_k_tiles if per_tile else item
            kb, kh = bkv // kv_heads, bkv % kv_heads
            pb = bkv * group // mask_heads if rope_cos.shape[0] > 1 else 0   # row of the RoPE tables
            cos, sin = rope_cos[pb], rope_sin[pb]
            first_tile = item % n_k_tiles if per_tile else 0
            last_tile = first_tile + 1 if per_tile else n_k_tiles
            # One key tile that every query sees (causal with Tk ≥ Tq, or no causal mask): each dq row
            # gets exactly one contribution, so it is written, not zeroed and then accumulated.
            dq_direct = not per_tile and n_k_tiles == 1 and (not causal or offset >= 0)
            for g in range(group):
                bh = bkv * group + g
                b, h = bh // n_head, bh % n_head
                q_all, do_all, row_dot = q_group[g], do_group[g], dot_group[g]
                # This head's Q (rotated, and scaled by 1/√d, as the forward used it), dO, D = rowsum(dO ⊙ O).
                if has_rope:
                    _copy_rotated_rows(q3[b], 0, Tq, q_off + h * d, scale, cos, sin, interleaved, q_all)
                else:
                    _copy_head_rows(q3[b], 0, Tq, q_off + h * d, scale, q_all)
                _copy_head_rows(do3[b], 0, Tq, do_off + h * dv, one, do_all)
                o_col = o_off + h * dv
                for i in range(Tq):
                    o_row, do_row = o3[b, i, o_col:o_col + dv], do_all[i]
                    total = q3.dtype.type(0)
                    for c in range(dv):
                        total += do_row[c] * o_row[c]
                    row_dot[i] = total
                if not per_tile and not dq_direct:
                    dq_col = dq_off + h * d
                    for i in range(Tq):
                        dq3[b, i, dq_col:dq_col + d] = 0
            dk_col, dv_col = dk_off + kh * d, dv_off + kh * dv
            for j0 in range(first_tile * block_k, min(Tk, last_tile * block_k), block_k):
                cols = min(block_k, Tk - j0)
                # Under causal masking the first query that sees key j0 is i = j0 − offset.
                i_start = (max(0, j0 - offset) // BLOCK_Q) * BLOCK_Q if causal else 0
                if i_start >= Tq:                  # no query sees these keys: dK = dV = 0
                    for r in range(cols):
                        dk3[kb, j0 + r, dk_col:dk_col + d] = 0
                        dv3[kb, j0 + r, dv_col:dv_col + dv] = 0
                    continue
                k_tile, v_tile = k_buf[:cols * d].reshape((cols, d)), v_buf[:cols * dv].reshape((cols, dv))
                if has_rope:
                    _copy_rotated_rows(k3[kb], j0, cols, k_off + kh * d, one, cos, sin, interleaved, k_tile)
                else:
                    _copy_head_rows(k3[kb], j0, cols, k_off + kh * d, one, k_tile)
                _copy_head_rows(v3[kb], j0, cols, v_off + kh * dv, one, v_tile)
                dv_tile, dk_tile = dv_buf[:cols * dv].reshape((cols, dv)), dk_buf[:cols * d].reshape((cols, d))
                for g in range(group):
                    bh = bkv * group + g
                    b, h = bh // n_head, bh % n_head
                    q_all, do_all, row_dot = q_group[g], do_group[g], dot_group[g]
                    dq_col = dq_off + h * d
                    # P and dS for this key tile and every query that sees it: a (Tq − i_start) × cols
                    # column strip, O(T) memory, so dV and dK come out of one product each at the end.
                    p_strip = p_buf[:(Tq - i_start) * cols].reshape((Tq - i_start, cols))
                    ds_strip = ds_buf[:(Tq - i_start) * cols].reshape((Tq - i_start, cols))
                    for i0 in range(i_start, Tq, BLOCK_Q):
                        rows = min(BLOCK_Q, Tq - i0)
                        p = p_strip[i0 - i_start:i0 - i_start + rows]
                        ds = ds_strip[i0 - i_start:i0 - i_start + rows]
                        np.dot(q_all[i0:i0 + rows], k_tile.T, p)                    # scores S
                        np.dot(do_all[i0:i0 + rows], v_tile.T, ds)                  # dP = dO Vᵀ
                        if has_mask:
                            _apply_mask(p, bh, mask_heads, i0, j0, mask, mstr)
                        for r in range(rows):               # P = exp(S − L), dS = P ⊙ (dP − D), one pass
                            p_row, ds_row = p[r], ds[r]
                            row_lse, row_d = lse[bh, i0 + r], row_dot[i0 + r]
                            seen = _n_visible(causal, i0 + r, j0, cols, offset)
                            if row_lse == -np.inf:                                  # fully masked query
                                seen = 0
                            p_visible, ds_visible = p_row[:seen], ds_row[:seen]
                            for c in range(seen):
                                prob = fast_exp(p_visible[c] - row_lse)
                                p_visible[c] = prob
                                ds_visible[c] = prob * (ds_visible[c] - row_d)
                            p_row[seen:] = 0
                            ds_row[seen:] = 0
                        tmp_q = tmp_buf[:rows * d].reshape((rows, d))
                        np.dot(ds, k_tile, tmp_q)                                   # dQ += dS K / √d
                        # (Two loops rather than one over ``a if per_tile else b``: that expression has a
                        # layout-generic type, and the loop over it was several times slower.)
                        if per_tile:
                            _put_scaled_rows(tmp_q, scale, dq_parts[worker, bh], i0, 0, True)
                        else:                               # the only key tile: written, no zeroing first
                            _put_scaled_rows(tmp_q, scale, dq3[b], i0, dq_col, not dq_direct)
                    # dV = Σ_g P_gᵀ dO_g and dK = Σ_g dS_gᵀ Q_g / √d over the group's query heads.
                    np.dot(p_strip.T, do_all[i_start:Tq], dv_tile)
                    np.dot(ds_strip.T, q_all[i_start:Tq], dk_tile)
                    _put_scaled_rows(dv_tile, one, dv3[kb], j0, dv_col, g > 0)
                    _put_scaled_rows(dk_tile, one, dk3[kb], j0, dk_col, g > 0)
                if has_rope:                        # dK with respect to k, not R(p) k
                    _unrotate_rows(dk3[kb], j0, cols, dk_col, d, cos, sin, interleaved)
            if has_rope and not per_tile:           # this item's dQ rows are complete: rotate them back
                for g in range(group):
                    bh = bkv * group + g
                    b, h = bh // n_head, bh % n_head
                    _unrotate_rows(dq3[b], 0, Tq, dq_off + h * d, d, cos, sin, interleaved)
    if per_tile:                                    # add the workers' dq parts (in worker order)
        for bh in range(BH):
            b, h = bh // n_head, bh % n_head
            dq_col = dq_off + h * d
            for i in range(Tq):
                dst = dq3[b, i, dq_col:dq_col + d]
                # Loops, not ``dst[:] = 0``: outside the prange, parallel=True turns an array expression
                # into a parallel region of its own, one per row (T = 512 took 60 ms instead of 1).
                for c in range(d):
                    total = dq_parts[0, bh, i, c]
                    for w in range(1, n_workers):
                        total += dq_parts[w, bh, i, c]
                    dst[c] = total
            if has_rope:
                pb = bh // mask_heads if rope_cos.shape[0] > 1 else 0
                _unrotate_rows(dq3[b], 0, Tq, dq_col, d, rope_cos[pb], rope_sin[pb], interleaved)
