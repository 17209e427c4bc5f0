"""npllm (numba backend) against PyTorch on the CPU: the same workloads, threads, dtype and shapes, one run.

    pip install -e ".[compare]"          # PyTorch's CPU wheel; never needed by the tests or CI
    python bench/compare_torch.py [--threads N] [--reps R] [--only gpt_step,attention,lstm,generate]
                                  [--same-process]

Rows (float32):
  gpt_step      baby GPT training step (4 layers x 128, T=64, B=12): forward, cross-entropy, backward, AdamW
  attention     causal attention forward+backward, B=H=4, d=64, T=1024 and T=256
  lstm          LSTM forward+backward, B=32, T=64, D=H=256 (gates i, f, g, o in both)
  generate      GPT-2-small shape (124M random weights), KV-cached greedy decoding: 200 new tokens after a
                64-token prompt

Each library runs in a process of its own, as a program using one of them does: two thread pools in one
process (PyTorch's OpenMP workers, npllm's OpenBLAS and Numba workers) take cores from each other, and
PyTorch ships its own ``libgomp.so.1``, which would also become the OpenMP runtime of anything else in
the process.  ``--same-process`` runs both in this process instead (the numbers then include that
interference).  Both processes build the same weights and inputs from the same seeds.

Before anything is timed, each row checks that both libraries compute the same thing (the loss, the
outputs and gradients, the generated tokens); a row that disagrees is reported as INVALID and not timed.
Times are medians over ``--reps`` calls after warm-up, the two libraries taking turns in blocks whose
first call is not timed (:func:`median_times` says why).  The table ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time

import numpy as np

ROWS = ("gpt_step", "attention", "lstm", "generate")


# ------------------------------------------------------------------------------------------------ timing
def timed_block(fn, block: int) -> list:
    """Call ``fn`` ``block`` times; the wall times (s) of all calls but the first.

    The first call of a block pays for the other library's threads still spinning from its turn
    (PyTorch's OpenMP workers, npllm's OpenBLAS and Numba workers), which a program using one library
    never sees; it is run, not timed."""
    fn()
    times = []
    for _ in range(block - 1):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


SETTLE_S = 0.25   # pause before each turn: OpenBLAS's idle threads busy-wait about 0.1 s after a call


def median_times(libraries: dict, key: tuple, reps: int, block: int = 6) -> dict:
    """Median wall time (s) of workload ``key`` in each library over ``reps`` timed calls.

    The libraries take turns, a block of calls each, so that a slow spell of the machine hits both alike;
    each turn starts after a pause (SETTLE_S), so the other library's threads have stopped spinning."""
    times = {name: [] for name in libraries}
    while min(len(t) for t in times.values()) < reps:
        for name, library in libraries.items():
            time.sleep(SETTLE_S)
            times[name] += library.time(key, block)
    return {name: statistics.median(t) for name, t in times.items()}


def close(a, b, rtol) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return bool(np.max(np.abs(a - b), initial=0.0) <= rtol * max(float(np.max(np.abs(b), initial=0.0)), 1e-30))


def t(array, grad=False):
    """A torch tensor holding a copy of an array's data."""
    import torch
    tensor = torch.from_numpy(np.ascontiguousarray(array).copy())
    return tensor.requires_grad_(grad)


# ------------------------------------------------------------------------------------------------ GPT in torch
def torch_gpt_forward(params: dict, idx, n_head: int, cache=None):
    """GPT-2 with npllm's parameter names and (in, out) layouts, written with torch.nn.functional.

    idx (B, T) → logits (B, T, V); ``cache`` (a list of per-layer [k, v] or None) makes it a KV-cached step."""
    import torch
    import torch.nn.functional as F
    B, T = idx.shape
    C = params["wte.weight"].shape[1]
    start = 0 if cache is None or cache[0] is None else cache[0][0].shape[2]
    x = params["wte.weight"][idx] + params["wpe.weight"][start:start + T]
    n_layer = sum(1 for name in params if name.endswith("attn.c_attn.weight"))
    for i in range(n_layer):
        p = f"h.{i}."
        h = F.layer_norm(x, (C,), params[p + "ln_1.weight"], params[p + "ln_1.bias"], 1e-5)
        q, k, v = (h @ params[p + "attn.c_attn.weight"] + params[p + "attn.c_attn.bias"]).split(C, dim=2)
        q, k, v = (z.view(B, T, n_head, C // n_head).transpose(1, 2) for z in (q, k, v))
        if cache is not None:
            if cache[i] is not None:
                k, v = torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2)
            cache[i] = [k, v]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=(T > 1))
        y = y.transpose(1, 2).reshape(B, T, C)
        x = x + y @ params[p + "attn.c_proj.weight"] + params[p + "attn.c_proj.bias"]
        h = F.layer_norm(x, (C,), params[p + "ln_2.weight"], params[p + "ln_2.bias"], 1e-5)
        h = F.gelu(h @ params[p + "mlp.c_fc.weight"] + params[p + "mlp.c_fc.bias"], approximate="tanh")
        x = x + h @ params[p + "mlp.c_proj.weight"] + params[p + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (C,), params["ln_f.weight"], params["ln_f.bias"], 1e-5)
    return x @ params["wte.weight"].T


# ------------------------------------------------------------------------------------------------ workloads
# Each builder makes one workload for one library from fixed seeds, so both libraries (in their own
# processes) start from the same weights and inputs; it returns (fn, check): fn runs one timed call,
# check holds what the other library's must agree with.
GPT_STEP = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
GPT2_SMALL = dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
LSTM_SHAPE = dict(B=32, T=64, D=256, H=256)
PROMPT, NEW_TOKENS = 64, 200


def _gpt(shape):
    from npllm.models import GPT, GPTConfig
    return GPT(GPTConfig(**shape), seed=0)


def _gpt_step_batch():
    rng = np.random.default_rng(0)
    return rng.integers(0, GPT_STEP["vocab_size"], (12, 64)), rng.integers(0, GPT_STEP["vocab_size"], (12, 64))


def npllm_gpt_step():
    from npllm.backend import ops
    from npllm.optim import AdamW
    model, (x, y), optimizer = _gpt(GPT_STEP), _gpt_step_batch(), AdamW(lr=1e-4)

    def step():
        logits, cache = model.forward(x)
        loss, ce_cache = ops.cross_entropy_forward(logits, y)
        optimizer.step(model.params, model.backward(ops.cross_entropy_backward(1.0, ce_cache), cache))
        return float(loss)
    return step, [step(), step()]          # the loss before and after one AdamW step


def torch_gpt_step():
    import torch
    import torch.nn.functional as F
    from npllm.optim import default_decay
    model, (x, y) = _gpt(GPT_STEP), _gpt_step_batch()
    params = {name: t(value, grad=True) for name, value in model.params.items()}
    decay = [p for n, p in params.items() if default_decay(n, model.params[n])]
    rest = [p for n, p in params.items() if not default_decay(n, model.params[n])]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                  lr=1e-4, betas=(0.9, 0.99), eps=1e-8)
    xt, yt, V = torch.from_numpy(x), torch.from_numpy(y), GPT_STEP["vocab_size"]

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(torch_gpt_forward(params, xt, GPT_STEP["n_head"]).view(-1, V), yt.view(-1))
        loss.backward()
        optimizer.step()
        return loss.item()
    return step, [step(), step()]


def _attention_inputs(T):
    rng = np.random.default_rng(0)
    return [rng.standard_normal((4, 4, T, 64)).astype(np.float32) for _ in range(4)]     # q, k, v, dout


def npllm_attention(T):
    from npllm.backend import ops
    q, k, v, dout = _attention_inputs(T)

    def run():
        out, cache = ops.scaled_dot_product_attention_forward(q, k, v, causal=True)
        return (out, *ops.scaled_dot_product_attention_backward(dout, cache))
    return run, list(run())


def torch_attention(T):
    import torch
    import torch.nn.functional as F
    q, k, v, dout = _attention_inputs(T)
    qt, kt, vt, doutt = t(q, True), t(k, True), t(v, True), torch.from_numpy(dout)

    def run():
        for z in (qt, kt, vt):
            z.grad = None
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)
        out.backward(doutt)
        return out.detach().numpy(), qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()
    return run, [a.copy() for a in run()]


def _lstm_inputs():
    from npllm.layers import init_lstm
    B, T, D, H = (LSTM_SHAPE[n] for n in "BTDH")
    rng = np.random.default_rng(0)
    p = init_lstm(D, H, rng, dtype=np.float32)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    dhs = rng.standard_normal((B, T, H)).astype(np.float32)
    return p, x, dhs


def npllm_lstm():
    from npllm.backend import ops
    p, x, dhs = _lstm_inputs()
    h0 = np.zeros((x.shape[0], p["Wh"].shape[0]), np.float32)

    def run():
        hs, cs, cache = ops.lstm_forward(x, h0, h0, p["Wx"], p["Wh"], p["b"])
        return (hs, *ops.lstm_backward(dhs, None, cache))
    hs, dx, dh0, dc0, dWx, dWh, db = run()
    return run, [hs, dx, dWx]


def torch_lstm():
    import torch
    p, x, dhs = _lstm_inputs()
    lstm = torch.nn.LSTM(x.shape[2], dhs.shape[2], batch_first=True)
    with torch.no_grad():                                        # PyTorch stores (4H, D), gates i, f, g, o
        lstm.weight_ih_l0.copy_(torch.from_numpy(p["Wx"].T.copy()))
        lstm.weight_hh_l0.copy_(torch.from_numpy(p["Wh"].T.copy()))
        lstm.bias_ih_l0.copy_(torch.from_numpy(p["b"]))
        lstm.bias_hh_l0.zero_()
    xt, dhst = t(x, True), torch.from_numpy(dhs)

    def run():
        xt.grad = None
        lstm.zero_grad(set_to_none=True)
        hs, _ = lstm(xt)
        hs.backward(dhst)
        return hs.detach().numpy(), xt.grad.numpy(), lstm.weight_ih_l0.grad.numpy().T
    return run, [a.copy() for a in run()]


def _prompt():
    return np.random.default_rng(0).integers(0, GPT2_SMALL["vocab_size"], (1, PROMPT))


def npllm_generate():
    from npllm.generate import generate
    model, prompt = _gpt(GPT2_SMALL), _prompt()

    def run():
        return generate(model, prompt, NEW_TOKENS, temperature=0)[0, PROMPT:]
    return run, run()


def torch_generate():
    import torch
    model, prompt = _gpt(GPT2_SMALL), _prompt()
    params = {name: torch.from_numpy(value) for name, value in model.params.items()}

    @torch.no_grad()
    def run():
        cache = [None] * GPT2_SMALL["n_layer"]
        logits = torch_gpt_forward(params, torch.from_numpy(prompt), GPT2_SMALL["n_head"], cache)
        out = []
        for _ in range(NEW_TOKENS):
            token = logits[:, -1].argmax(-1, keepdim=True)
            out.append(int(token))
            logits = torch_gpt_forward(params, token, GPT2_SMALL["n_head"], cache)
        return np.array(out)
    return run, run()


WORKLOADS = {"npllm": dict(gpt_step=npllm_gpt_step, attention=npllm_attention, lstm=npllm_lstm,
                           generate=npllm_generate),
             "torch": dict(gpt_step=torch_gpt_step, attention=torch_attention, lstm=torch_lstm,
                           generate=torch_generate)}


# ------------------------------------------------------------------------------------------------ libraries
def set_up(library: str, threads: int) -> None:
    """Give the library ``threads`` threads (npllm: its numba backend, BLAS and Numba pools)."""
    if library == "torch":
        import torch
        torch.set_num_threads(threads)
    else:
        import numba

        from npllm.process import configure
        configure("numba", blas_threads=threads)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


class InProcess:
    """A library's workloads run in this process (``--same-process``)."""

    def __init__(self, library: str, threads: int):
        self.library, self.workloads = library, {}
        set_up(library, threads)

    def build(self, key: tuple):
        name, *args = key
        self.workloads[key], check = WORKLOADS[self.library][name](*args)
        return check

    def time(self, key: tuple, block: int) -> list:
        return timed_block(self.workloads[key], block)

    def close(self):
        self.workloads.clear()


def _serve(connection, library: str, threads: int) -> None:
    """A worker process: run ``InProcess`` commands sent over ``connection`` until told to stop."""
    here = InProcess(library, threads)
    while True:
        command, *args = connection.recv()
        if command == "stop":
            break
        try:
            connection.send(("ok", getattr(here, command)(*args)))
        except Exception as error:            # reported by the parent, with the library's name
            connection.send(("error", f"{type(error).__name__}: {error}"))


class InWorker:
    """A library's workloads run in a process of its own (spawned: nothing inherited but the arguments)."""

    def __init__(self, library: str, threads: int):
        self.library = library
        context = multiprocessing.get_context("spawn")
        self.connection, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs, library, threads), daemon=True)
        self.process.start()

    def _ask(self, *message):
        self.connection.send(message)
        status, value = self.connection.recv()
        if status == "error":
            raise RuntimeError(f"{self.library}: {value}")
        return value

    def build(self, key: tuple):
        return self._ask("build", key)

    def time(self, key: tuple, block: int) -> list:
        return self._ask("time", key, block)

    def close(self):
        self.connection.send(("stop",))
        self.process.join(timeout=30)


# ------------------------------------------------------------------------------------------------ rows
def compare(libraries, key, reps, workload, agree, check, per_second=None, block=6):
    """One table row: build ``key`` in both libraries, test ``agree(npllm's, torch's)`` (a row that
    disagrees is not timed), then time them. ``per_second``: the row is that many units per second
    (tokens/s), else milliseconds per call."""
    mine, theirs = (libraries[name].build(key) for name in ("npllm", "torch"))
    row = {"workload": workload, "check": check(mine, theirs)}
    if not agree(mine, theirs):
        return dict(row, note="INVALID: the two libraries disagree; not timed")
    times = median_times(libraries, key, reps, block)
    rate = (lambda s: per_second / s) if per_second else (lambda s: s * 1e3)
    return dict(row, npllm=rate(times["npllm"]), torch=rate(times["torch"]),
                unit="tokens/s" if per_second else "ms", ratio=times["torch"] / times["npllm"])


def _first_difference(mine, theirs):
    return int(np.argmax(np.concatenate([mine != theirs, [True]])))


def row_gpt_step(libraries, reps):
    return compare(libraries, ("gpt_step",), reps, "GPT train step 4x128, T=64, B=12",
                   agree=lambda a, b: all(abs(x - y) <= 1e-4 * abs(y) for x, y in zip(a, b)),
                   check=lambda a, b: f"losses {a[1]:.6f} vs {b[1]:.6f}", per_second=12 * 64)


def row_attention(libraries, reps, T):
    return compare(libraries, ("attention", T), reps, f"causal attention fwd+bwd B=H=4 d=64 T={T}",
                   agree=lambda a, b: all(close(x, y, 1e-4) for x, y in zip(a, b)),
                   check=lambda a, b: "out, dq, dk, dv within 1e-4")


def row_lstm(libraries, reps):
    return compare(libraries, ("lstm",), reps, "LSTM fwd+bwd B=32 T=64 D=H=256",
                   agree=lambda a, b: all(close(x, y, tol) for x, y, tol in zip(a, b, (1e-4, 1e-3, 1e-3))),
                   check=lambda a, b: "hs, dx, dWx within 1e-3")


def row_generate(libraries, reps):
    # Random weights: near-ties may flip a later argmax in float32, not the first ones.
    return compare(libraries, ("generate",), reps, "GPT-2 124M KV-cached greedy, 64 + 200 tokens",
                   agree=lambda a, b: _first_difference(a, b) >= 20,
                   check=lambda a, b: f"first {_first_difference(a, b)} tokens identical",
                   per_second=NEW_TOKENS, block=2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both libraries")
    parser.add_argument("--reps", type=int, default=15, help="timed calls per library and row")
    parser.add_argument("--only", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--same-process", action="store_true",
                        help="run both libraries in this process (their thread pools then interfere)")
    args = parser.parse_args()
    rows = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"--only: unknown rows {unknown}; choose from {','.join(ROWS)}")
    try:
        import torch
    except ImportError:
        sys.exit("bench/compare_torch.py needs PyTorch: pip install -e \".[compare]\" (CPU wheel)")
    import npllm
    make = InProcess if args.same_process else InWorker
    libraries = {name: make(name, args.threads) for name in ("npllm", "torch")}
    results = []
    try:
        for name in rows:
            if name == "attention":
                results += [row_attention(libraries, args.reps, 1024), row_attention(libraries, args.reps, 256)]
            elif name == "generate":
                results.append(row_generate(libraries, max(3, args.reps // 5)))
            else:
                results.append({"gpt_step": row_gpt_step, "lstm": row_lstm}[name](libraries, args.reps))
    finally:
        for library in libraries.values():
            library.close()
    print(f"{'workload':<46}{'npllm':>12}{'torch':>12}  {'unit':<9}{'ratio':>7}  check")
    for r in results:
        if "note" in r:
            print(f"{r['workload']:<46}{r['note']}")
            continue
        print(f"{r['workload']:<46}{r['npllm']:>12,.1f}{r['torch']:>12,.1f}  {r['unit']:<9}{r['ratio']:>6.2f}x  {r['check']}")
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads,
               "npllm": npllm.__version__, "torch": torch.__version__, "numpy": np.__version__,
               "processes": "one" if args.same_process else "one per library"}
    print(json.dumps({"rows": results, "machine": machine}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
