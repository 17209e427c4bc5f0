"""``npllm bench``: the kernels and a GPT training step, timed against the NumPy reference.

    npllm bench [--backend numba] [--only matmul,attention,...] [--quick] [--json PATH]

Sections: matmul (every kernel version and BLAS), attention (causal, forward + backward), softmax_ce,
layer_norm, gelu, lstm, gpt_step (tokens/s on both backends), breakdown (one GPT step, per op type:
forward and backward time and the activation memory its caches hold) and compile (first-call times).

How it measures, so numbers can be trusted:
* every kernel is **validated against the reference before it is timed** (outputs and gradients; the
  worst error relative to the largest reference entry is printed), and a failing one is not timed;
* **steady state, interleaved**: each function runs once (compile, cache load, warm-up), then the
  reference and the kernel take turns; the table shows the fastest of the runs (the machine at its
  least disturbed: PERF-NOTES lessons 4-5, other processes and idle-pool effects only ever add time);
* **peak memory** is tracemalloc's peak during one call, above what was allocated before it: NumPy
  reports its arrays to tracemalloc, and the kernels' wrappers allocate outputs and scratch with NumPy.
  Arrays allocated inside ``@njit`` code are invisible to it (ours allocate only small tiles there);
* **compile time** is measured in a subprocess with an empty Numba cache (``NUMBA_CACHE_DIR``), so it is
  the real first-use cost on a new machine; later runs load the cached machine code in milliseconds.

On a machine shared with other work (the load average is recorded with the results), multi-threaded
OpenBLAS can stall badly, and whichever side calls it more looks slow. ``OPENBLAS_NUM_THREADS=1
NUMBA_NUM_THREADS=1 npllm bench`` compares speed per core, which such load barely moves.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict

import numpy as np

from npllm import backend
from npllm.errors import UsageError

SECTIONS = ("matmul", "attention", "softmax_ce", "layer_norm", "gelu", "lstm", "gpt_step", "breakdown", "compile")
VALIDATION_TOL = 1e-3      # float32 kernels vs the float32 reference, relative to the largest entry


# ---------------------------------------------------------------- measuring
def time_interleaved(functions: dict, budget_s: float = 2.0, max_reps: int = 100) -> dict:
    """Best wall time (s) of each function, running them in turns after one warm-up call each."""
    first = {}
    for name, fn in functions.items():
        start = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - start
    reps = int(min(max_reps, max(3, budget_s / max(sum(first.values()), 1e-9))))
    best = dict(first)
    for _ in range(reps):
        for name, fn in functions.items():
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


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _mib(n_bytes):
    return n_bytes / 2**20


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
        return tuple(outs) + _as_tuple(backward_fn(*douts, cache))

    row["max_rel_error"] = max_relative_error(step(fw, bw), step(ref_fw, ref_bw))
    if not row["max_rel_error"] <= VALIDATION_TOL:
        return dict(row, note="INVALID: kernel disagrees with the reference; not timed")
    best = time_interleaved({"ref": lambda: step(ref_fw, ref_bw), "kernel": lambda: step(fw, bw)}, budget_s)
    row.update(ref_ms=best["ref"] * 1e3, kernel_ms=best["kernel"] * 1e3, speedup=best["ref"] / best["kernel"],
               ref_peak_mib=_mib(peak_memory(lambda: step(ref_fw, ref_bw))),
               kernel_peak_mib=_mib(peak_memory(lambda: step(fw, bw))))
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
                    row[f"{key}_peak_mib"] = _mib(peak_memory(lambda: bw(dout, fw(q, k, v, causal=True)[1])))
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


# ---------------------------------------------------------------- GPT training step
GPT_SIZES = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
GPT_BATCH = 12


def _gpt_setup(quick):
    from npllm.models import GPT, GPTConfig
    from npllm.optim import AdamW
    sizes = dict(GPT_SIZES, n_layer=2, n_embd=64) if quick else GPT_SIZES
    model = GPT(GPTConfig(**sizes), seed=0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, sizes["vocab_size"], (GPT_BATCH, sizes["block_size"]))
    y = rng.integers(0, sizes["vocab_size"], (GPT_BATCH, sizes["block_size"]))
    return model, AdamW(lr=1e-4), x, y, sizes


def _train_step(model, optimizer, x, y):
    """Forward, fused/reference cross-entropy, backward and an AdamW update, as ``npllm train`` does."""
    from npllm.backend import ops
    logits, cache = model.forward(x)
    loss, ce_cache = ops.cross_entropy_forward(logits, y)
    grads = model.backward(ops.cross_entropy_backward(1.0, ce_cache), cache)
    optimizer.step(model.params, grads)
    return float(loss)


def section_gpt_step(backend_name, quick):
    """Tokens/s of a GPT training step (forward, cross-entropy, backward, AdamW) on numpy and the backend."""
    model, optimizer, x, y, sizes = _gpt_setup(quick)
    initial = {k: v.copy() for k, v in model.params.items()}
    losses = {}
    for name in ("numpy", backend_name):          # same first-step loss on both backends: validation
        model.params.update({k: v.copy() for k, v in initial.items()})
        with backend.use_backend(name):
            losses[name] = _model_loss(model, x, y)
    row = {"shape": f"n_layer={sizes['n_layer']} n_head={sizes['n_head']} n_embd={sizes['n_embd']} "
                    f"block={sizes['block_size']} batch={GPT_BATCH}",
           "loss_numpy": losses["numpy"], f"loss_{backend_name}": losses[backend_name]}
    if abs(losses["numpy"] - losses[backend_name]) > 1e-4 * abs(losses["numpy"]):
        return [dict(row, note="INVALID: the backends disagree on the loss; not timed")]

    def step_on(name):
        def run():
            with backend.use_backend(name):
                _train_step(model, optimizer, x, y)
        return run
    best = time_interleaved({"numpy": step_on("numpy"), backend_name: step_on(backend_name)},
                            2.0 if quick else 10.0)
    tokens = x.size
    for name, seconds in best.items():
        row[f"{name}_ms"] = seconds * 1e3
        row[f"{name}_tokens_per_s"] = tokens / seconds
        row[f"{name}_peak_mib"] = _mib(peak_memory(step_on(name)))
    row["speedup"] = best["numpy"] / best[backend_name]
    return [row]


def _model_loss(model, x, y):
    from npllm.backend import ops
    logits, _ = model.forward(x)
    return float(ops.cross_entropy_forward(logits, y)[0])


class _TimedOps:
    """Stands in for ``npllm.backend.ops`` inside the model: times every op and keeps each cache."""

    def __init__(self, ops):
        self._ops, self.seconds, self.caches = ops, defaultdict(float), defaultdict(list)

    def __getattr__(self, op_name):
        fn = getattr(self._ops, op_name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            self.seconds[op_name] += time.perf_counter() - start
            if op_name.endswith("_forward"):
                self.caches[op_name.removesuffix("_forward")].append(_as_tuple(result)[-1])
            return result
        return timed


def _arrays_in(obj):
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _arrays_in(item)


def _cache_bytes(caches_by_op, params):
    """Bytes each op type's caches keep alive: each buffer counted once, parameters not at all."""
    seen = {id(p) for p in params.values()}
    totals = {}
    for op, caches in caches_by_op.items():
        total = 0
        for array in _arrays_in(caches):
            owner = array
            while isinstance(owner.base, np.ndarray):
                owner = owner.base
            if id(owner) not in seen:
                seen.add(id(owner))
                total += owner.nbytes
        totals[op] = total
    return totals


def _timed_step(gpt_module, model, x, y):
    """One forward + cross-entropy + backward with every op timed → (seconds per op, cache bytes per op)."""
    from npllm.backend import ops
    original, timed = gpt_module.ops, _TimedOps(gpt_module.ops)
    gpt_module.ops = timed
    try:
        logits, cache = model.forward(x)
        memory = _cache_bytes(timed.caches, model.params)
        start = time.perf_counter()
        _, ce_cache = ops.cross_entropy_forward(logits, y)
        dlogits = ops.cross_entropy_backward(1.0, ce_cache)
        timed.seconds["cross_entropy_forward+backward"] = time.perf_counter() - start
        model.backward(dlogits, cache)
    finally:
        gpt_module.ops = original
    return timed.seconds, memory


def section_breakdown(backend_name, quick):
    """Per op type in one GPT step: forward and backward ms (best of several steps) and cache MiB."""
    import npllm.models.gpt as gpt_module
    model, optimizer, x, y, _ = _gpt_setup(quick)
    rows = {}
    for name in ("numpy", backend_name):
        with backend.use_backend(name):
            _train_step(model, optimizer, x, y)                       # warm-up (and compile)
            best = {}
            for _ in range(3 if quick else 7):
                seconds, memory = _timed_step(gpt_module, model, x, y)
                best = {op: min(s, best.get(op, s)) for op, s in seconds.items()}
        for op_name, seconds in best.items():
            op, _, direction = op_name.rpartition("_")
            entry = rows.setdefault(op, {"op": op})
            entry[f"{name}_{direction}_ms"] = seconds * 1e3
            entry[f"{name}_activation_mib"] = _mib(memory.get(op, 0))
    return sorted(rows.values(), key=lambda r: -r.get("numpy_forward_ms", 0) - r.get("numpy_backward_ms", 0))


# ---------------------------------------------------------------- compile time
def _tiny_cases(dtype):
    """Small inputs for each op: (args, kwargs, upstream gradients)."""
    a = lambda *shape: np.random.default_rng(0).standard_normal(shape).astype(dtype)  # noqa: E731
    return {
        "scaled_dot_product_attention": ((a(1, 2, 8, 4), a(1, 2, 8, 4), a(1, 2, 8, 4)), {"causal": True},
                                         (a(1, 2, 8, 4),)),
        "cross_entropy": ((a(4, 7), np.arange(4)), {}, (1.0,)),
        "layer_norm": ((a(4, 8), a(8), a(8)), {}, (a(4, 8),)),
        "gelu": ((a(4, 8),), {}, (a(4, 8),)),
        "lstm": ((a(2, 3, 4), a(2, 5), a(2, 5), a(4, 20), a(5, 20), a(20)), {}, (a(2, 3, 5), None)),
        "embedding": ((np.array([0, 2, 2]), a(3, 4)), {}, (a(3, 4),)),
    }


def first_call_times(backend_name="numba") -> dict:
    """Seconds of each kernel's first forward+backward (float32, then float64) in this process."""
    start = time.perf_counter()
    kernels = backend._load(backend_name)
    times = {"import": time.perf_counter() - start}
    versions = getattr(sys.modules.get(kernels.__name__ + ".matmul"), "VERSIONS", {})
    for dtype in (np.float32, np.float64):
        suffix = np.dtype(dtype).name
        for name, fn in versions.items():
            start = time.perf_counter()
            fn(np.ones((5, 6), dtype), np.ones((6, 7), dtype))
            times[f"matmul_{name} {suffix}"] = time.perf_counter() - start
        for op, (args, kwargs, douts) in _tiny_cases(dtype).items():
            forward, backward_fn = getattr(kernels, f"{op}_forward", None), getattr(kernels, f"{op}_backward", None)
            if forward is None or backward_fn is None:
                continue
            start = time.perf_counter()
            backward_fn(*douts, forward(*args, **kwargs)[-1])
            times[f"{op} {suffix}"] = time.perf_counter() - start
        if hasattr(kernels, "adamw_update"):
            p, g = np.ones((3, 4), dtype), np.ones((3, 4), dtype)
            start = time.perf_counter()
            kernels.adamw_update(p, g, np.zeros_like(p), np.zeros_like(p), 1e-3, 0.9, 0.99, 1e-8, 0.1, 1)
            times[f"adamw_update {suffix}"] = time.perf_counter() - start
    return times


def section_compile(backend_name, quick):
    """First-call times in fresh processes: with an empty Numba cache (compile), then with it filled (load)."""
    code = f"import json; from npllm.bench import first_call_times; print(json.dumps(first_call_times({backend_name!r})))"
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        runs = []
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            if done.returncode != 0:
                return [{"kernel": "all", "note": f"failed: {done.stderr.strip().splitlines()[-1:]}"}]
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    compiled, cached = runs
    return [{"kernel": name, "compile_s": compiled[name], "cached_s": cached.get(name)} for name in compiled]


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
                    "layer_norm": section_layer_norm, "gelu": section_gelu, "lstm": section_lstm}
_MODEL_SECTIONS = {"gpt_step": section_gpt_step, "breakdown": section_breakdown, "compile": section_compile}


# The CUDA backend times its kernels on device-resident arrays in its own driver (no host↔device copy
# in the timed region); these are its section names for ours.
_CUDA_SECTIONS = {"matmul": "matmul", "attention": "attention", "softmax_ce": "cross_entropy"}


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
    from npllm.train import keep_freed_memory
    keep_freed_memory()              # as ``npllm train`` does: time steps under the same malloc settings
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


def run_from_args(args) -> int:
    """``npllm bench``: parse --only, check --backend, run, and write --json if asked."""
    only = None
    if args.only:
        only = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in only if s not in SECTIONS]
        if unknown or not only:
            raise UsageError("--only", f"unknown section {', '.join(map(repr, unknown)) or '(empty)'}; "
                                       f"choose from {', '.join(SECTIONS)}")
    try:
        backend._load(backend._check_name(args.backend))
    except (ValueError, RuntimeError) as exc:
        raise UsageError("--backend", str(exc)) from None
    results = run(args.backend, only, args.quick)
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        except OSError as exc:
            raise UsageError("--json", f"cannot write {args.json}: {exc.strerror}") from None
    return 0
