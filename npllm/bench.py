"""``npllm bench``: the kernels and a GPT training step, timed against the NumPy reference.

    npllm bench [--backend numba] [--only matmul,attention,...] [--quick] [--json PATH]

Sections: matmul (every kernel version and BLAS), attention (causal, forward + backward), softmax_ce,
layer_norm, gelu, lstm, the modern decoder's rms_norm, swiglu_mlp and gqa_attention (grouped-query
attention, alone and with RoPE fused in: ``rope_attention``), gpt_step (tokens/s on both backends), breakdown (one GPT step, per op type:
forward and backward time and the activation memory its caches hold) and compile (first-call times).

How it measures, so numbers can be trusted:
* every kernel is **validated against the reference before it is timed** (outputs and gradients; the
  worst error relative to the largest reference entry is printed), and a failing one is not timed;
* **steady state, interleaved**: each function runs once (compile, cache load, warm-up), then the
  reference and the kernel take turns, three calls a turn (the first call after the other side's
  turn pays for OpenBLAS's workers still spinning from it, which a run on one backend never does);
  the table shows the fastest call (the machine at its least disturbed: docs/performance.md,
  other processes and idle-pool effects only ever add time);
* **the same process settings as ``npllm train``**: ``npllm bench`` calls :func:`npllm.process.configure`
  first (glibc keeps freed memory, so steps do not page-fault their activations in again);
* **peak memory** is tracemalloc's peak during one call, above what was allocated before it: NumPy
  reports its arrays to tracemalloc, and the kernels' wrappers allocate outputs and scratch with NumPy.
  Arrays allocated inside ``@njit`` code are invisible to it (ours allocate only small tiles there);
* **compile time** is measured in a subprocess with an empty Numba cache (``NUMBA_CACHE_DIR``), so it is
  the real first-use cost on a new machine; later runs load the cached machine code in milliseconds.

This file is the command (kernel sections, table printing, machine info); the model sections live in
``npllm.bench_model`` and the measuring helpers both use in ``npllm.bench_timing``.

On a machine shared with other work (the load average is recorded with the results), multi-threaded
OpenBLAS can stall badly, and whichever side calls it more looks slow. ``OPENBLAS_NUM_THREADS=1
NUMBA_NUM_THREADS=1 npllm bench`` compares speed per core, which such load barely moves.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time

import numpy as np

from npllm import backend, bench_model
from npllm.bench_timing import as_tuple, max_relative_error, mib, peak_memory, time_interleaved

SECTIONS = ("matmul", "attention", "softmax_ce", "layer_norm", "gelu", "lstm", "rms_norm", "swiglu_mlp", "gqa_attention",
            "gpt_step", "breakdown", "compile")
VALIDATION_TOL = 1e-3      # float32 kernels vs the float32 reference, relative to the largest entry


# ---------------------------------------------------------------- ops: reference vs backend
def _op_pair(kernels, op):
    """(reference forward, backward), (backend forward, backward) or None when the backend lacks the op."""
    import npllm.layers as ref
    names = (f"{op}_forward", f"{op}_backward")
    mine = tuple(getattr(kernels, n, None) for n in names)
    return tuple(getattr(ref, n) for n in names), (mine if all(mine) else None)


def bench_op(kernels, op, args, kwargs, douts, label, budget_s):
    """One table row: validate the backend's forward+backward against the reference, then time both."""
    (ref_fw, ref_bw), pair = _op_pair(kernels, op)
    row = {"shape": label}
    if pair is None:
        return dict(row, note=f"backend has no {op}")
    fw, bw = pair

    def step(forward, backward_fn):
        *outs, cache = forward(*args, **kwargs)
        return tuple(outs) + as_tuple(backward_fn(*douts, cache))

    row["max_rel_error"] = max_relative_error(step(fw, bw), step(ref_fw, ref_bw))
    if not row["max_rel_error"] <= VALIDATION_TOL:
        return dict(row, note="INVALID: kernel disagrees with the reference; not timed")
    best = time_interleaved({"ref": lambda: step(ref_fw, ref_bw), "kernel": lambda: step(fw, bw)}, budget_s)
    row.update(ref_ms=best["ref"] * 1e3, kernel_ms=best["kernel"] * 1e3, speedup=best["ref"] / best["kernel"],
               ref_peak_mib=mib(peak_memory(lambda: step(ref_fw, ref_bw))),
               kernel_peak_mib=mib(peak_memory(lambda: step(fw, bw))))
    return row


def _rng_arrays(seed, *shapes, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def section_attention(kernels, quick):
    """Causal attention forward+backward, B=4 H=4 d=64, T=128…2048 timed; peak memory up to T=4096."""
    B, H, d = 4, 4, 64
    rows = []
    for T in ((128, 256) if quick else (128, 256, 512, 1024, 2048)):
        q, k, v, dout = _rng_arrays(T, (B, H, T, d), (B, H, T, d), (B, H, T, d), (B, H, T, d))
        rows.append(bench_op(kernels, "scaled_dot_product_attention", (q, k, v), {"causal": True}, (dout,),
                             f"B={B} H={H} T={T} d={d} causal", 1.0 if quick else 3.0))
    if not quick:   # memory only (the reference needs 3 (B, H, T, T) buffers: 3 GiB at T = 4096)
        (ref_fw, ref_bw), pair = _op_pair(kernels, "scaled_dot_product_attention")
        for T in (4096,):
            q, k, v, dout = _rng_arrays(T, (B, H, T, d), (B, H, T, d), (B, H, T, d), (B, H, T, d))
            row = {"shape": f"B={B} H={H} T={T} d={d} causal (memory only)"}
            for key, (fw, bw) in (("ref", (ref_fw, ref_bw)), ("kernel", pair or (None, None))):
                if fw is not None:
                    row[f"{key}_peak_mib"] = mib(peak_memory(lambda: bw(dout, fw(q, k, v, causal=True)[1])))
            rows.append(row)
    return rows


def section_softmax_ce(kernels, quick):
    """Fused softmax-cross-entropy forward+backward on B·T=4096 rows, V=65 (characters) and 50257 (GPT-2)."""
    rows = []
    for N, V in ((1024, 65),) if quick else ((4096, 65), (4096, 50257)):
        logits, = _rng_arrays(V, (N, V))
        targets = np.random.default_rng(0).integers(0, V, N)
        rows.append(bench_op(kernels, "cross_entropy", (logits, targets), {}, (1.0,), f"B·T={N} V={V}",
                             1.0 if quick else 4.0))
    return rows


def section_layer_norm(kernels, quick):
    """Layer norm forward+backward on B·T=4096 rows of C=128 and 768."""
    rows = []
    for N, C in ((1024, 128),) if quick else ((4096, 128), (4096, 768)):
        x, gamma, beta, dy = _rng_arrays(C, (N, C), (C,), (C,), (N, C))
        rows.append(bench_op(kernels, "layer_norm", (x, gamma, beta), {}, (dy,), f"B·T={N} C={C}", 2.0))
    return rows


def section_gelu(kernels, quick):
    """GELU (tanh) forward+backward on the MLP activations, B·T=4096 × 4C."""
    rows = []
    for N, C in ((1024, 512),) if quick else ((4096, 512), (4096, 3072)):
        x, dy = _rng_arrays(C, (N, C), (N, C))
        rows.append(bench_op(kernels, "gelu", (x,), {"approximate": "tanh"}, (dy,), f"B·T={N} 4C={C} tanh", 2.0))
    return rows


def section_rms_norm(kernels, quick):
    """RMSNorm forward+backward on B·T=4096 rows of C=512 and 2048 (Llama's hidden sizes, small and 1B-ish)."""
    rows = []
    for N, C in ((1024, 128),) if quick else ((4096, 512), (4096, 2048)):
        x, weight, dy = _rng_arrays(C, (N, C), (C,), (N, C))
        rows.append(bench_op(kernels, "rms_norm", (x, weight), {}, (dy,), f"B·T={N} C={C}", 2.0))
    return rows


def section_swiglu_mlp(kernels, quick):
    """Llama's SwiGLU MLP forward+backward, B·T=2048 rows, C=512, intermediate 1376 (≈ 8C/3, as Llama)."""
    N, C, I = (256, 64, 172) if quick else (2048, 512, 1376)
    x, W_gate, W_up, W_down, dy = _rng_arrays(I, (N, C), (C, I), (C, I), (I, C), (N, C))
    for W in (W_gate, W_up, W_down):
        W *= 0.05
    return [bench_op(kernels, "swiglu_mlp", (x, W_gate, W_up, W_down), {}, (dy,), f"B·T={N} C={C} I={I}",
                     1.0 if quick else 3.0)]


def section_gqa_attention(kernels, quick):
    """Causal grouped-query attention forward+backward, B=4, H=8 query heads over Hkv=2 kv heads, d=64:
    scaled_dot_product_attention, and rope_attention (RoPE on q and k, then the same attention)."""
    B, H, Hkv, d = 4, 8, 2, 64
    rows = []
    for T in ((128,) if quick else (256, 1024)):
        q, k, v, dout = _rng_arrays(T, (B, H, T, d), (B, Hkv, T, d), (B, Hkv, T, d), (B, H, T, d))
        label = f"B={B} H={H} Hkv={Hkv} T={T} d={d} causal"
        rows.append(bench_op(kernels, "scaled_dot_product_attention", (q, k, v), {"causal": True}, (dout,),
                             f"attention {label}", 1.0 if quick else 3.0))
        rows.append(bench_op(kernels, "rope_attention", (q, k, v, np.arange(T)), {"causal": True}, (dout,),
                             f"rope_attention {label}", 1.0 if quick else 3.0))
        if hasattr(kernels, "rope_attention_forward"):
            rows.append(_fused_rope_row(kernels, q, k, v, dout, f"fusion: {label}", 1.0 if quick else 3.0))
    return rows


def _fused_rope_row(kernels, q, k, v, dout, label, budget_s):
    """The backend's rope_attention against the same backend's rope then attention (what fusing saves);
    "ref_ms" is the unfused pair here, both on the backend."""
    import npllm.layers as ref
    positions = np.arange(q.shape[2])
    rope_fw = getattr(kernels, "rope_forward", ref.rope_forward)
    rope_bw = getattr(kernels, "rope_backward", ref.rope_backward)

    def unfused():
        rq, q_cache = rope_fw(q, positions)
        rk, k_cache = rope_fw(k, positions)
        out, cache = kernels.scaled_dot_product_attention_forward(rq, rk, v, causal=True)
        dq, dk, dv = kernels.scaled_dot_product_attention_backward(dout, cache)
        return out, rope_bw(dq, q_cache), rope_bw(dk, k_cache), dv

    def fused():
        out, cache = kernels.rope_attention_forward(q, k, v, positions, causal=True)
        return (out,) + tuple(kernels.rope_attention_backward(dout, cache))

    row = {"shape": label, "max_rel_error": max_relative_error(fused(), unfused())}
    if not row["max_rel_error"] <= VALIDATION_TOL:
        return dict(row, note="INVALID: fused and unfused disagree; not timed")
    best = time_interleaved({"unfused": unfused, "fused": fused}, budget_s)
    row.update(ref_ms=best["unfused"] * 1e3, kernel_ms=best["fused"] * 1e3, speedup=best["unfused"] / best["fused"],
               ref_peak_mib=mib(peak_memory(unfused)), kernel_peak_mib=mib(peak_memory(fused)),
               note="ref = rope then attention on this backend")
    return row


def section_lstm(kernels, quick):
    """LSTM over a sequence, forward+backward (BPTT), B=32 T=64 D=H=256."""
    B, T, D, H = (8, 16, 64, 64) if quick else (32, 64, 256, 256)
    x, h0, c0, Wx, Wh, b, dhs = _rng_arrays(0, (B, T, D), (B, H), (B, H), (D, 4 * H), (H, 4 * H), (4 * H,), (B, T, H))
    Wx *= 0.05
    Wh *= 0.05
    return [bench_op(kernels, "lstm", (x, h0, c0, Wx, Wh, b), {}, (dhs, None), f"B={B} T={T} D={D} H={H}", 3.0)]


def section_matmul(kernels, quick):
    """n³ float32 products: BLAS and every kernel version (validated first), ms and GFLOP/s."""
    module = sys.modules.get(kernels.__name__ + ".matmul")       # kernels.matmul is the function
    versions = getattr(module, "VERSIONS", None) or {"kernel": kernels.matmul}
    rows = []
    for n in (128, 256) if quick else (256, 512, 1024, 2048):
        a, b = _rng_arrays(n, (n, n), (n, n))
        expected = a.astype(np.float64) @ b.astype(np.float64)
        functions = {"blas": lambda: a @ b}
        row = {"shape": f"{n}x{n}x{n} float32"}
        for name, fn in versions.items():
            if name == "v1" and n > 512:
                continue                         # about 1 GFLOP/s: seconds per call, nothing to learn
            error = max_relative_error([fn(a, b)], [expected])
            row[f"{name}_max_rel_error"] = error
            if error <= VALIDATION_TOL:
                functions[name] = (lambda f: lambda: f(a, b))(fn)
        best = time_interleaved(functions, 1.0 if quick else 3.0)
        for name, seconds in best.items():
            row[f"{name}_ms"] = seconds * 1e3
            row[f"{name}_gflops"] = 2 * n**3 / seconds / 1e9
        default = "v3" if "v3" in best else next(iter(k for k in best if k != "blas"), "blas")
        row["kernel_vs_blas"] = best["blas"] / best[default]
        rows.append(row)
    return rows


# ---------------------------------------------------------------- driver
def machine_info() -> dict:
    """CPU, SIMD width, core count, library versions and thread pools: what the numbers depend on."""
    info = {"python": platform.python_version(), "numpy": np.__version__, "cores": os.cpu_count()}
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        info["cpu"] = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                            if line.startswith("model name")), platform.processor())
        flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines()
                          if line.startswith("flags")), []))
        info["simd"] = ("AVX-512 (512-bit)" if "avx512f" in flags else "AVX2 (256-bit)" if "avx2" in flags
                        else "SSE/other")
        info["fma"] = "fma" in flags
    except OSError:
        info["cpu"] = platform.processor()
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = [f"{p['internal_api']} {p['version']} ({p['num_threads']} threads, {p.get('architecture')})"
                        for p in threadpool_info() if p["user_api"] == "blas"]
    except ImportError:
        pass
    if "numba" in sys.modules:
        import numba
        info["numba"] = numba.__version__
        info["numba_threads"] = numba.get_num_threads()
        try:
            info["numba_threading_layer"] = numba.threading_layer()
        except ValueError:
            info["numba_threading_layer"] = f"{numba.config.THREADING_LAYER} (not started)"
    return info


def _print_table(title, rows):
    print(f"\n== {title} ==")
    if not rows:
        print("(nothing measured)")
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_format(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def _format(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1e}" if 0 < abs(value) < 0.01 else f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


_KERNEL_SECTIONS = {"matmul": section_matmul, "attention": section_attention, "softmax_ce": section_softmax_ce,
                    "layer_norm": section_layer_norm, "gelu": section_gelu, "lstm": section_lstm,
                    "rms_norm": section_rms_norm, "swiglu_mlp": section_swiglu_mlp,
                    "gqa_attention": section_gqa_attention}
_MODEL_SECTIONS = {"gpt_step": bench_model.section_gpt_step, "breakdown": bench_model.section_breakdown,
                   "compile": bench_model.section_compile}


# The CUDA backend times its kernels on device-resident arrays in its own driver (no host↔device copy
# in the timed region); these are its section names for ours.
_CUDA_SECTIONS = {"matmul": "matmul", "attention": "attention", "softmax_ce": "cross_entropy", "rms_norm": "rms_norm",
                  "gqa_attention": "gqa_attention"}


def _run_section(name, backend_name, kernels, quick):
    if backend_name == "cuda" and name in _CUDA_SECTIONS:
        from npllm_kernels.cuda import bench as cuda_bench
        return cuda_bench.run((_CUDA_SECTIONS[name],), quick=quick)[_CUDA_SECTIONS[name]]
    if name in _KERNEL_SECTIONS:
        return _KERNEL_SECTIONS[name](kernels, quick)
    if name == "compile" and backend_name != "numba":
        return [{"kernel": "all", "note": "compile times are measured for the numba backend"}]
    return _MODEL_SECTIONS[name](backend_name, quick)


def run(backend_name="numba", only=None, quick=False) -> dict:
    """Run the chosen sections, print their tables, and return everything as a dict.

    By default every section runs; ``quick`` uses small shapes and leaves out "compile" (two fresh
    processes compiling every kernel: about a minute) unless ``only`` names it.
    """
    kernels = backend._load(backend_name)
    sections = only or [s for s in SECTIONS if not (quick and s == "compile")]
    results = {"backend": backend_name, "quick": quick, "sections": {}}
    for name in sections:
        start = time.perf_counter()
        rows = _run_section(name, backend_name, kernels, quick)
        results["sections"][name] = rows
        _print_table(f"{name} ({backend_name} vs numpy reference; {time.perf_counter() - start:.0f} s)", rows)
    results["machine"] = machine_info()
    print("\nmachine: " + json.dumps(results["machine"]))
    return results
