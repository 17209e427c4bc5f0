"""npllm (numba backend) against PyTorch on the CPU: the same workloads, threads, dtype and shapes, one run.

    pip install -e ".[compare]"          # PyTorch's CPU wheel; never needed by the tests or CI
    python bench/compare_torch.py [--threads N] [--reps R] [--only gpt_step,attention,lstm,generate]

Rows (float32):
  gpt_step      baby GPT training step (4 layers x 128, T=64, B=12): forward, cross-entropy, backward, AdamW
  attention     causal attention forward+backward, B=H=4, d=64, T=1024 and T=256
  lstm          LSTM forward+backward, B=32, T=64, D=H=256 (gates i, f, g, o in both)
  generate      GPT-2-small shape (124M random weights), KV-cached greedy decoding: 200 new tokens after a
                64-token prompt

Before anything is timed, each row checks that both libraries compute the same thing from the same
weights and inputs (the loss, the outputs and gradients, the generated tokens); a row that disagrees is
reported as INVALID and not timed.  Times are medians over ``--reps`` calls after warm-up, the two
libraries taking turns in blocks whose first call is not timed (:func:`median_times` says why).  The table ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    sys.exit("bench/compare_torch.py needs PyTorch: pip install -e \".[compare]\" (CPU wheel)")

import npllm
from npllm.backend import ops
from npllm.process import configure

ROWS = ("gpt_step", "attention", "lstm", "generate")


# ------------------------------------------------------------------------------------------------ timing
def median_times(functions: dict, reps: int, block: int = 6) -> dict:
    """Median wall time (s) of each function over ``reps`` timed calls, the libraries taking turns in blocks.

    The first call of each block is run but not timed: it pays for the other library's thread pool
    still spinning from its turn (OpenBLAS's, Numba's or PyTorch's OpenMP workers), which a program
    using one library never sees.  Turns make a slow spell of the machine hit both alike."""
    for fn in functions.values():
        fn()
    times = {name: [] for name in functions}
    while min(len(t) for t in times.values()) < reps:
        for name, fn in functions.items():
            fn()
            for _ in range(block - 1):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def close(a, b, rtol) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return bool(np.max(np.abs(a - b), initial=0.0) <= rtol * max(float(np.max(np.abs(b), initial=0.0)), 1e-30))


def t(array, grad=False):
    """A torch tensor sharing an array's data (a copy when it is not writeable or contiguous)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array).copy())
    return tensor.requires_grad_(grad)


# ------------------------------------------------------------------------------------------------ GPT in torch
def torch_gpt_forward(params: dict, idx, n_head: int, cache=None):
    """GPT-2 with npllm's parameter names and (in, out) layouts, written with torch.nn.functional.

    idx (B, T) → logits (B, T, V); ``cache`` (a list of per-layer [k, v] or None) makes it a KV-cached step."""
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


def row_gpt_step(reps):
    from npllm.models import GPT, GPTConfig
    from npllm.optim import AdamW, default_decay
    config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    model = GPT(config, seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 65, (12, 64)), rng.integers(0, 65, (12, 64))
    params = {name: t(value, grad=True) for name, value in model.params.items()}
    decay = [p for n, p in params.items() if default_decay(n, model.params[n])]
    rest = [p for n, p in params.items() if not default_decay(n, model.params[n])]
    torch_opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                  lr=1e-4, betas=(0.9, 0.99), eps=1e-8)
    npllm_opt = AdamW(lr=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def npllm_step():
        logits, cache = model.forward(x)
        loss, ce_cache = ops.cross_entropy_forward(logits, y)
        npllm_opt.step(model.params, model.backward(ops.cross_entropy_backward(1.0, ce_cache), cache))
        return float(loss)

    def torch_step():
        torch_opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(torch_gpt_forward(params, xt, config.n_head).view(-1, 65), yt.view(-1))
        loss.backward()
        torch_opt.step()
        return loss.item()
    first = (npllm_step(), torch_step()), (npllm_step(), torch_step())
    row = {"workload": "GPT train step 4x128, T=64, B=12", "check": f"losses {first[1][0]:.6f} vs {first[1][1]:.6f}"}
    if not all(abs(a - b) <= 1e-4 * abs(b) for a, b in first):
        return dict(row, note="INVALID: different losses; not timed")
    times = median_times({"npllm": npllm_step, "torch": torch_step}, reps)
    tokens = x.size
    return dict(row, npllm=tokens / times["npllm"], torch=tokens / times["torch"], unit="tokens/s",
                ratio=times["torch"] / times["npllm"])


def row_attention(reps, T):
    B, H, d = 4, 4, 64
    rng = np.random.default_rng(0)
    q, k, v, dout = (rng.standard_normal((B, H, T, d)).astype(np.float32) for _ in range(4))
    qt, kt, vt = t(q, True), t(k, True), t(v, True)
    doutt = torch.from_numpy(dout)

    def npllm_run():
        out, cache = ops.scaled_dot_product_attention_forward(q, k, v, causal=True)
        return (out, *ops.scaled_dot_product_attention_backward(dout, cache))

    def torch_run():
        for z in (qt, kt, vt):
            z.grad = None
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)
        out.backward(doutt)
        return out.detach().numpy(), qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()
    mine, theirs = npllm_run(), torch_run()
    ok = all(close(a, b, 1e-4) for a, b in zip(mine, theirs))
    row = {"workload": f"causal attention fwd+bwd B=H=4 d=64 T={T}", "check": "out, dq, dk, dv within 1e-4"}
    if not ok:
        return dict(row, note="INVALID: outputs or gradients differ; not timed")
    times = median_times({"npllm": npllm_run, "torch": torch_run}, reps)
    return dict(row, npllm=times["npllm"] * 1e3, torch=times["torch"] * 1e3, unit="ms",
                ratio=times["torch"] / times["npllm"])


def row_lstm(reps):
    from npllm.layers import init_lstm
    B, T, D, H = 32, 64, 256, 256
    rng = np.random.default_rng(0)
    p = init_lstm(D, H, rng, dtype=np.float32)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    h0 = np.zeros((B, H), np.float32)
    dhs = rng.standard_normal((B, T, H)).astype(np.float32)
    lstm = torch.nn.LSTM(D, H, batch_first=True)
    with torch.no_grad():                                        # PyTorch stores (4H, D), gates i, f, g, o
        lstm.weight_ih_l0.copy_(torch.from_numpy(p["Wx"].T.copy()))
        lstm.weight_hh_l0.copy_(torch.from_numpy(p["Wh"].T.copy()))
        lstm.bias_ih_l0.copy_(torch.from_numpy(p["b"]))
        lstm.bias_hh_l0.zero_()
    xt, dhst = t(x, True), torch.from_numpy(dhs)

    def npllm_run():
        hs, cs, cache = ops.lstm_forward(x, h0, h0, p["Wx"], p["Wh"], p["b"])
        return (hs, *ops.lstm_backward(dhs, None, cache))

    def torch_run():
        xt.grad = None
        lstm.zero_grad(set_to_none=True)
        hs, _ = lstm(xt)
        hs.backward(dhst)
        return hs.detach().numpy(), xt.grad.numpy(), lstm.weight_ih_l0.grad.numpy().T
    mine, theirs = npllm_run(), torch_run()
    ok = close(mine[0], theirs[0], 1e-4) and close(mine[1], theirs[1], 1e-3) and close(mine[4], theirs[2], 1e-3)
    row = {"workload": "LSTM fwd+bwd B=32 T=64 D=H=256", "check": "hs, dx, dWx within 1e-3"}
    if not ok:
        return dict(row, note="INVALID: outputs or gradients differ; not timed")
    times = median_times({"npllm": npllm_run, "torch": torch_run}, reps)
    return dict(row, npllm=times["npllm"] * 1e3, torch=times["torch"] * 1e3, unit="ms",
                ratio=times["torch"] / times["npllm"])


def row_generate(reps):
    from npllm.generate import generate
    from npllm.models import GPT, GPTConfig
    config = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    model = GPT(config, seed=0)
    params = {name: torch.from_numpy(value) for name, value in model.params.items()}
    prompt = np.random.default_rng(0).integers(0, 50257, (1, 64))
    new = 200

    def npllm_run():
        return generate(model, prompt, new, temperature=0)[0, 64:]

    @torch.no_grad()
    def torch_run():
        cache = [None] * config.n_layer
        tokens = torch.from_numpy(prompt)
        logits = torch_gpt_forward(params, tokens, config.n_head, cache)
        out = []
        for _ in range(new):
            token = logits[:, -1].argmax(-1, keepdim=True)
            out.append(int(token))
            logits = torch_gpt_forward(params, token, config.n_head, cache)
        return np.array(out)
    mine, theirs = npllm_run(), torch_run()
    agree = int(np.argmax(np.concatenate([mine != theirs, [True]])))
    row = {"workload": "GPT-2 124M KV-cached greedy, 64 + 200 tokens", "check": f"first {agree} tokens identical"}
    if agree < 20:              # random weights: near-ties may flip a later argmax in float32, not the first ones
        return dict(row, note="INVALID: the generated tokens differ from the start; not timed")
    times = median_times({"npllm": npllm_run, "torch": torch_run}, reps, block=2)
    return dict(row, npllm=new / times["npllm"], torch=new / times["torch"], unit="tokens/s",
                ratio=times["torch"] / times["npllm"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both libraries")
    parser.add_argument("--reps", type=int, default=15, help="timed calls per library and row")
    parser.add_argument("--only", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    args = parser.parse_args()
    rows = [name.strip() for name in args.only.split(",") if name.strip()]
    torch.set_num_threads(args.threads)
    configure("numba", blas_threads=args.threads)
    import numba
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    results = []
    for name in rows:
        if name == "attention":
            results += [row_attention(args.reps, 1024), row_attention(args.reps, 256)]
        else:
            results.append({"gpt_step": row_gpt_step, "lstm": row_lstm, "generate": row_generate}[name](
                max(3, args.reps // 5) if name == "generate" else args.reps))
    print(f"{'workload':<46}{'npllm':>12}{'torch':>12}  {'unit':<9}{'ratio':>7}  check")
    for r in results:
        if "note" in r:
            print(f"{r['workload']:<46}{r['note']}")
            continue
        print(f"{r['workload']:<46}{r['npllm']:>12,.1f}{r['torch']:>12,.1f}  {r['unit']:<9}{r['ratio']:>6.2f}x  {r['check']}")
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads,
               "npllm": npllm.__version__, "torch": torch.__version__, "numpy": np.__version__}
    print(json.dumps({"rows": results, "machine": machine}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
