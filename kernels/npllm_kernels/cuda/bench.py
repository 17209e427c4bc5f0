"""GPU benchmarks for ``npllm bench --backend cuda``: matmul GFLOP/s and attention forward+backward ms.

    from npllm_kernels.cuda import bench
    tables = bench.run()                 # {"gpu": [...], "matmul": [...], "attention": [...], "cross_entropy": [...]}

As in llm.c's dev/cuda drivers, every kernel version is **validated against the NumPy reference before
it is timed**, and one that disagrees is reported, not timed. The data is copied to the GPU once; the
timed calls are the device-resident functions (``*_device``), so no host↔device copy is timed.

Timing: after a warm-up call (which compiles), ``inner`` back-to-back calls are timed with
``cuda.synchronize()`` on both sides, ``reps`` times; the best is reported (other work on the machine
only ever adds time). Each call allocates its outputs with ``cuda.device_array``, as in training.

* matmul: float32 n×n×n at n = 1024…8192, every version (v1 only up to 2048: it would take seconds),
  against cuBLAS through CuPy when CuPy is importable (ratio ``v3_vs_cublas``). Validation at large n
  compares a few sampled rows of C with NumPy (float64), since a full CPU matmul at 8192 is slow.
* attention: B=4, H=12, d=64, causal, forward + backward ms at T = 1024…8192. Validated on one
  (batch, head) slice against the reference; the reference is timed on the CPU up to T = 2048 (its
  three T×T buffers make larger T impractical there).
* cross_entropy: B·T = 4096 rows at V = 50257, each forward version + the backward.
* gqa_attention: the attention section with grouped-query heads, B=4, H=32 query heads over Hkv=8 kv
  heads (Llama 3 8B's grouping), d=64, T = 1024…8192; validated on one kv head's group of query heads.
* rms_norm: B·T = 4096 rows of C = 4096 (Llama 3 8B's hidden size), forward + backward.
"""
from __future__ import annotations

import time

import numpy as np
from numba import cuda

from npllm_kernels.cuda import MODULES, scaled_dot_product_attention_backward_device
from npllm_kernels.cuda._device import SIMULATOR
from npllm_kernels.cuda import scaled_dot_product_attention_forward_device, cross_entropy_backward_device

VALIDATION_TOL = 1e-3     # float32 kernels vs a float64 reference, relative to the largest entry
MATMUL_SIZES = (1024, 2048, 4096, 8192)
ATTENTION_SIZES = (1024, 2048, 4096, 8192)
ATTENTION_SHAPE = dict(B=4, H=12, d=64)
GQA_SHAPE = dict(B=4, H=32, Hkv=8, d=64)
RMS_NORM_SHAPE = (4096, 4096)
CE_SHAPE = (4096, 50257)


def relative_error(actual, desired) -> float:
    """max |actual − desired| / max |desired| (0-safe)."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    return float(np.max(np.abs(actual - desired), initial=0.0) / max(np.max(np.abs(desired), initial=0.0), 1e-30))


def time_device(fn, reps: int = 5, inner: int = 3) -> float:
    """Best seconds per call of ``fn`` (device work included: synchronised before and after)."""
    fn()
    cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        cuda.synchronize()
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / inner)
    return best


def _cupy():
    try:
        import cupy
        return cupy
    except ImportError:
        return None


def gpu_info() -> list:
    """One row naming the device and the library versions the figures come from."""
    import numba
    row = {"device": "CUDA simulator", "numba": numba.__version__}
    try:
        if SIMULATOR:
            raise RuntimeError("NUMBA_ENABLE_CUDASIM=1: timings are meaningless")
        device = cuda.get_current_device()
        name = getattr(device, "name", b"")
        row["device"] = name.decode() if isinstance(name, bytes) else str(name)
        row["compute_capability"] = ".".join(map(str, device.compute_capability))
    except Exception as exc:   # the simulator's device object has fewer attributes
        row["device_error"] = str(exc)
    try:
        import numba_cuda
        row["numba_cuda"] = numba_cuda.__version__
    except (ImportError, AttributeError):
        pass
    cupy = _cupy()
    row["cupy"] = cupy.__version__ if cupy else None
    return [row]


def section_matmul(sizes=MATMUL_SIZES, reps=5, inner=3) -> list:
    """float32 GFLOP/s of every matmul version (and cuBLAS via CuPy), each validated first."""
    matmul_module, cupy = MODULES["matmul"], _cupy()
    rows = []
    for n in sizes:
        rng = np.random.default_rng(n)
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        a_dev, b_dev = cuda.to_device(a[None]), cuda.to_device(b[None])        # (1, n, n): one batch
        sample = np.unique(np.linspace(0, n - 1, 8).astype(int))              # rows checked against NumPy
        expected = a[sample].astype(np.float64) @ b.astype(np.float64)
        row = {"shape": f"{n}x{n}x{n} float32"}
        for name, fn in matmul_module.VERSIONS.items():
            if name == "v1" and n > 2048:
                continue
            error = relative_error(fn(a_dev, b_dev).copy_to_host()[0][sample], expected)
            row[f"{name}_max_rel_error"] = error
            if error > VALIDATION_TOL:
                row[f"{name}_note"] = "INVALID: disagrees with the reference; not timed"
                continue
            seconds = time_device(lambda: fn(a_dev, b_dev), reps, inner)
            row[f"{name}_ms"], row[f"{name}_gflops"] = seconds * 1e3, 2 * n**3 / seconds / 1e9
        if cupy is not None:
            a_cp, b_cp = cupy.asarray(a_dev[0]), cupy.asarray(b_dev[0])          # zero-copy views
            seconds = time_device(lambda: cupy.matmul(a_cp, b_cp), reps, inner)
            row["cublas_ms"], row["cublas_gflops"] = seconds * 1e3, 2 * n**3 / seconds / 1e9
            if "v3_gflops" in row:
                row["v3_vs_cublas"] = row["v3_gflops"] / row["cublas_gflops"]
        rows.append(row)
    return rows


def section_attention(sizes=ATTENTION_SIZES, shape=None, reps=3, inner=3, reference_up_to=2048) -> list:
    """Causal attention forward+backward ms on the GPU (and the NumPy reference's on the CPU); ``shape`` may
    give Hkv < H (grouped-query heads)."""
    import npllm.layers as ref
    shape = shape or ATTENTION_SHAPE
    B, H, d = shape["B"], shape["H"], shape["d"]
    Hkv = shape.get("Hkv", H)
    G = H // Hkv                                               # query heads per kv head
    rows = []
    for T in sizes:
        rng = np.random.default_rng(T)
        q, dout = (rng.standard_normal((B, H, T, d)).astype(np.float32) for _ in range(2))
        k, v = (rng.standard_normal((B, Hkv, T, d)).astype(np.float32) for _ in range(2))
        q_dev, k_dev, v_dev, dout_dev = (cuda.to_device(x) for x in (q, k, v, dout))
        row = {"shape": f"B={B} H={H}{f' Hkv={Hkv}' if Hkv != H else ''} T={T} d={d} causal float32"}

        def forward_backward():
            out, cache = scaled_dot_product_attention_forward_device(q_dev, k_dev, v_dev, causal=True)
            return (out,) + scaled_dot_product_attention_backward_device(dout_dev, cache)
        # Validate on one batch row's first kv head and its G query heads: groups are independent, and the
        # reference's T×T buffers stay small.
        got = [x.copy_to_host()[:1, :G if i == 0 or i == 1 else 1] for i, x in enumerate(forward_backward())]
        out_ref, cache_ref = ref.scaled_dot_product_attention_forward(q[:1, :G], k[:1, :1], v[:1, :1], causal=True)
        want = (out_ref,) + ref.scaled_dot_product_attention_backward(dout[:1, :G], cache_ref)
        row["max_rel_error"] = max(relative_error(g, w) for g, w in zip(got, want))
        if row["max_rel_error"] > VALIDATION_TOL:
            rows.append(dict(row, note="INVALID: disagrees with the reference; not timed"))
            continue
        row["forward_ms"] = time_device(
            lambda: scaled_dot_product_attention_forward_device(q_dev, k_dev, v_dev, causal=True), reps, inner) * 1e3
        row["forward_backward_ms"] = time_device(forward_backward, reps, inner) * 1e3
        if T <= reference_up_to:
            start = time.perf_counter()
            out_ref, cache_ref = ref.scaled_dot_product_attention_forward(q, k, v, causal=True)
            ref.scaled_dot_product_attention_backward(dout, cache_ref)
            row["reference_cpu_ms"] = (time.perf_counter() - start) * 1e3
            row["speedup_vs_cpu_reference"] = row["reference_cpu_ms"] / row["forward_backward_ms"]
        rows.append(row)
    return rows


def section_cross_entropy(shape=CE_SHAPE, reps=5, inner=3) -> list:
    """Fused softmax-cross-entropy forward (each version) and backward ms at GPT-2's vocabulary."""
    import npllm.layers as ref
    N, V = shape
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((N, V)).astype(np.float32)
    targets = rng.integers(0, V, N)
    logits_dev, targets_dev = cuda.to_device(logits), cuda.to_device(targets)
    loss_ref, cache_ref = ref.cross_entropy_forward(logits, targets)
    dlogits_ref = ref.cross_entropy_backward(1.0, cache_ref)
    row = {"shape": f"B·T={N} V={V} float32"}
    for name, fn in MODULES["cross_entropy"].VERSIONS.items():
        loss, cache = fn(logits_dev, targets_dev)
        error = max(relative_error(loss.copy_to_host()[0], loss_ref),
                    relative_error(cross_entropy_backward_device(1.0, cache).copy_to_host(), dlogits_ref))
        row[f"{name}_max_rel_error"] = error
        if error > VALIDATION_TOL:
            row[f"{name}_note"] = "INVALID: disagrees with the reference; not timed"
            continue
        row[f"{name}_forward_ms"] = time_device(lambda: fn(logits_dev, targets_dev), reps, inner) * 1e3
        row["backward_ms"] = time_device(lambda: cross_entropy_backward_device(1.0, cache), reps, inner) * 1e3
    return [row]


def section_rms_norm(shape=RMS_NORM_SHAPE, reps=5, inner=3) -> list:
    """RMSNorm forward and forward+backward ms (float32), validated against the reference first."""
    import npllm.layers as ref
    from npllm_kernels.cuda.rms_norm import rms_norm_backward_device, rms_norm_forward_device
    N, C = shape
    rng = np.random.default_rng(0)
    x, weight, dy = (rng.standard_normal(s).astype(np.float32) for s in ((N, C), (C,), (N, C)))
    x_dev, weight_dev, dy_dev = (cuda.to_device(a) for a in (x, weight, dy))

    def forward_backward():
        y, cache = rms_norm_forward_device(x_dev, weight_dev)
        return (y,) + rms_norm_backward_device(dy_dev, cache)
    y_ref, cache_ref = ref.rms_norm_forward(x.astype(np.float64), weight.astype(np.float64))
    want = (y_ref,) + ref.rms_norm_backward(dy.astype(np.float64), cache_ref)
    row = {"shape": f"B·T={N} C={C} float32",
           "max_rel_error": max(relative_error(g.copy_to_host(), w) for g, w in zip(forward_backward(), want))}
    if row["max_rel_error"] > VALIDATION_TOL:
        return [dict(row, note="INVALID: disagrees with the reference; not timed")]
    row["forward_ms"] = time_device(lambda: rms_norm_forward_device(x_dev, weight_dev), reps, inner) * 1e3
    row["forward_backward_ms"] = time_device(forward_backward, reps, inner) * 1e3
    return [row]


SECTIONS = {"matmul": section_matmul, "attention": section_attention, "cross_entropy": section_cross_entropy,
            "gqa_attention": section_attention, "rms_norm": section_rms_norm}   # gqa_attention: with GQA_SHAPE


def run(sections=("matmul", "attention", "cross_entropy"), quick=False) -> dict:
    """Run the named sections; ``quick`` uses the two smallest sizes. Returns {section: rows}, plus "gpu"."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown CUDA bench sections {sorted(unknown)}; choose from {sorted(SECTIONS)}")
    tables = {"gpu": gpu_info()}
    for name in sections:
        if name == "matmul":
            tables[name] = section_matmul(MATMUL_SIZES[:2] if quick else MATMUL_SIZES)
        elif name == "attention":
            tables[name] = section_attention(ATTENTION_SIZES[:2] if quick else ATTENTION_SIZES)
        elif name == "gqa_attention":
            tables[name] = section_attention(ATTENTION_SIZES[:2] if quick else ATTENTION_SIZES, GQA_SHAPE)
        elif name == "rms_norm":
            tables[name] = section_rms_norm((1024, 1024) if quick else RMS_NORM_SHAPE)
        else:
            tables[name] = section_cross_entropy((1024, 50257) if quick else CE_SHAPE)
    return tables
