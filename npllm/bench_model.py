"""``npllm bench``'s model sections: a GPT training step, its per-op breakdown, and kernel compile times.

gpt_step times a whole step (forward, cross-entropy, backward, AdamW) on numpy and the backend after
checking both give the same loss; breakdown times each op type inside one step by swapping the model's
``ops`` for a timing proxy; compile runs ``first_call_times`` in fresh processes with an empty, then a
filled, Numba cache. ``npllm.bench`` is the command that runs them and prints their tables.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np

from npllm import backend
from npllm.bench_timing import as_tuple, mib, peak_memory, time_interleaved


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
        row[f"{name}_peak_mib"] = mib(peak_memory(step_on(name)))
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
                self.caches[op_name.removesuffix("_forward")].append(as_tuple(result)[-1])
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
            entry[f"{name}_activation_mib"] = mib(memory.get(op, 0))
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
        "multi_head_attention": ((a(1, 8, 8), a(8, 24), a(24), a(8, 8), a(8)), {"n_head": 2, "causal": True},
                                 (a(1, 8, 8),)),
        "mlp": ((a(4, 8), a(8, 32), a(32), a(32, 8), a(8)), {}, (a(4, 8),)),
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
    code = (f"import json; from npllm.bench_model import first_call_times; "
            f"print(json.dumps(first_call_times({backend_name!r})))")
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
