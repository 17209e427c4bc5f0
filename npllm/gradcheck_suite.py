"""``npllm gradcheck``: gradient-check every op of npllm.layers on several random shapes.

``op_cases(name, rng)`` yields ready-to-check cases (forward, backward, inputs, kwargs, time_axis) for
each op in ``npllm.layers.OPS``; the tests reuse them, so the command and the suite check the same things.
Shapes include batch 1 and sequence length 1; masks and ignore_index are exercised.  Inputs are kept
away from the kinks of ReLU so central differences are meaningful there.
"""
from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np

from npllm import layers as L
from npllm.gradcheck import DEFAULT_TOL, check_op


class Case(NamedTuple):
    label: str
    forward: object
    backward: object
    inputs: list
    kwargs: dict
    time_axis: int | None = None


def _n(rng, *shape):
    return rng.standard_normal(shape)


def _away_from_zero(rng, *shape):
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.1, 0.5, x)   # ReLU has a kink at 0: keep finite differences off it


def _cases_elementwise(name, rng):
    forward, backward = getattr(L, f"{name}_forward"), getattr(L, f"{name}_backward")
    make = _away_from_zero if name == "relu" else _n
    for shape in [(1, 5), (3, 4, 7)]:
        yield Case(f"x{shape}", forward, backward, [make(rng, *shape)], {})
    if name == "gelu":
        yield Case("exact erf form", forward, backward, [_n(rng, 4, 6)], {"approximate": "none"})
    if name == "silu":
        yield Case("x(5,) wide range", forward, backward, [4 * _n(rng, 5)], {})


def _cases(name, rng):
    """Yield the cases for op ``name``."""
    if name in ("tanh", "sigmoid", "relu", "gelu", "silu"):
        yield from _cases_elementwise(name, rng)
    elif name == "linear":
        yield Case("x(1,4)", L.linear_forward, L.linear_backward, [_n(rng, 1, 4), _n(rng, 4, 3), _n(rng, 3)], {})
        yield Case("x(2,5,4)", L.linear_forward, L.linear_backward, [_n(rng, 2, 5, 4), _n(rng, 4, 6), _n(rng, 6)], {})
    elif name == "embedding":
        yield Case("ids(2,5) repeated", L.embedding_forward, L.embedding_backward,
                   [np.array([[1, 3, 3, 0, 6], [6, 6, 2, 1, 0]]), _n(rng, 7, 4)], {})
    elif name in ("softmax", "log_softmax"):
        forward, backward = getattr(L, f"{name}_forward"), getattr(L, f"{name}_backward")
        yield Case("x(1,5)", forward, backward, [_n(rng, 1, 5)], {})
        yield Case("x(3,4,6) axis=1", forward, backward, [_n(rng, 3, 4, 6)], {"axis": 1})
    elif name == "cross_entropy":
        targets = np.array([[0, 4, -100, 2], [3, -100, 1, 1]])
        yield Case("(2,4,5) ignore_index", L.cross_entropy_forward, L.cross_entropy_backward,
                   [_n(rng, 2, 4, 5), targets], {})
        yield Case("(1,1,3)", L.cross_entropy_forward, L.cross_entropy_backward,
                   [_n(rng, 1, 1, 3), np.array([[2]])], {})
    elif name == "layer_norm":
        for shape in [(1, 6), (2, 3, 8)]:
            C = shape[-1]
            yield Case(f"x{shape}", L.layer_norm_forward, L.layer_norm_backward,
                       [_n(rng, *shape), 1 + 0.1 * _n(rng, C), 0.1 * _n(rng, C)], {})
    elif name == "dropout":
        yield Case("p=0.3 training", L.dropout_forward, L.dropout_backward, [_n(rng, 4, 6)],
                   lambda: {"p": 0.3, "rng": np.random.default_rng(3), "training": True})
        yield Case("eval mode", L.dropout_forward, L.dropout_backward, [_n(rng, 2, 3)],
                   {"p": 0.5, "rng": None, "training": False})
    elif name in ("rnn_step", "lstm_step", "gru_step", "rnn", "lstm", "gru"):
        yield from _cases_recurrent(name, rng)
    elif name == "scaled_dot_product_attention":
        yield from _cases_attention(rng)
    elif name == "additive_attention":
        yield from _cases_additive_attention(rng)
    elif name == "multi_head_attention":
        B, T, C = 2, 5, 8
        args = [_n(rng, B, T, C), 0.3 * _n(rng, C, 3 * C), 0.1 * _n(rng, 3 * C), 0.3 * _n(rng, C, C), 0.1 * _n(rng, C)]
        yield Case("causal (2,5,8) 2 heads", L.multi_head_attention_forward, L.multi_head_attention_backward,
                   args, {"n_head": 2, "causal": True})
        yield Case("(1,1,8) 4 heads", L.multi_head_attention_forward, L.multi_head_attention_backward,
                   [a[:1, :1] if a.ndim == 3 else a for a in args], {"n_head": 4})
    elif name == "mlp":
        C, M = 5, 12
        args = [_n(rng, 2, 3, C), 0.5 * _n(rng, C, M), 0.1 * _n(rng, M), 0.5 * _n(rng, M, C), 0.1 * _n(rng, C)]
        yield Case("(2,3,5) width 12, tanh", L.mlp_forward, L.mlp_backward, args, {"approximate": "tanh"})
        yield Case("(4,5) width 12, erf", L.mlp_forward, L.mlp_backward, [_n(rng, 4, C)] + args[1:],
                   {"approximate": "none"})
    elif name in ("rms_norm", "swiglu", "swiglu_mlp", "rope", "rope_attention"):
        yield from _cases_modern_decoder(name, rng)
    else:
        raise KeyError(name)


def _cases_recurrent(name, rng):
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[name.removesuffix("_step")]
    base = name.removesuffix("_step")
    forward, backward = getattr(L, f"{name}_forward"), getattr(L, f"{name}_backward")
    for B, T, D, H in [(1, 1, 3, 4), (2, 4, 3, 5)]:
        weights = [0.5 * _n(rng, D, gates * H), 0.5 * _n(rng, H, gates * H)]
        biases = [0.1 * _n(rng, gates * H)] * (2 if base == "gru" else 1)
        biases = [0.1 * _n(rng, gates * H) for _ in biases]
        states = [_n(rng, B, H)] * (2 if base == "lstm" else 1)
        states = [_n(rng, B, H) for _ in states]
        if name.endswith("_step"):
            yield Case(f"B={B} D={D} H={H}", forward, backward, [_n(rng, B, D), *states, *weights, *biases], {})
        else:
            yield Case(f"B={B} T={T} D={D} H={H}", forward, backward, [_n(rng, B, T, D), *states, *weights, *biases],
                       {}, time_axis=1)


def _cases_attention(rng):
    f, b = L.scaled_dot_product_attention_forward, L.scaled_dot_product_attention_backward
    yield Case("causal Tq=Tk=5", f, b, [_n(rng, 2, 2, 5, 4), _n(rng, 2, 2, 5, 4), _n(rng, 2, 2, 5, 3)], {"causal": True})
    yield Case("Tq=1 Tk=1", f, b, [_n(rng, 1, 1, 1, 4), _n(rng, 1, 1, 1, 4), _n(rng, 1, 1, 1, 4)], {})
    mask = rng.random((2, 1, 3, 6)) > 0.4
    mask[0, 0, 1] = False                                    # a fully masked query row
    yield Case("mask + fully masked row, Tq=3 Tk=6", f, b,
               [_n(rng, 2, 2, 3, 4), _n(rng, 2, 2, 6, 4), _n(rng, 2, 2, 6, 5)], {"mask": mask})
    yield Case("causal Tq=2 < Tk=6 (cached keys)", f, b,
               [_n(rng, 1, 2, 2, 4), _n(rng, 1, 2, 6, 4), _n(rng, 1, 2, 6, 4)], {"causal": True})
    # Grouped-query attention: dk and dv sum over the query heads of their group.
    yield Case("GQA causal H=4 Hkv=1 (multi-query)", f, b,
               [_n(rng, 2, 4, 5, 3), _n(rng, 2, 1, 5, 3), _n(rng, 2, 1, 5, 2)], {"causal": True})
    mask = rng.random((2, 4, 3, 5)) > 0.4
    mask[1, 2, 0] = False                                    # a fully masked query row
    yield Case("GQA mask H=4 Hkv=2, Tq=3 Tk=5", f, b,
               [_n(rng, 2, 4, 3, 4), _n(rng, 2, 2, 5, 4), _n(rng, 2, 2, 5, 3)], {"mask": mask})
    yield Case("GQA causal H=Hkv=3, Tq=2 < Tk=4", f, b,
               [_n(rng, 1, 3, 2, 4), _n(rng, 1, 3, 4, 4), _n(rng, 1, 3, 4, 4)], {"causal": True})


def _cases_modern_decoder(name, rng):
    """Llama's ops: RMSNorm, SwiGLU (elementwise and the fused MLP), RoPE and RoPE fused with attention."""
    if name == "rms_norm":
        for shape in [(1, 6), (2, 3, 8)]:
            yield Case(f"x{shape}", L.rms_norm_forward, L.rms_norm_backward,
                       [_n(rng, *shape), 1 + 0.1 * _n(rng, shape[-1])], {})
        yield Case("small x, eps=1e-2 matters", L.rms_norm_forward, L.rms_norm_backward,
                   [0.05 * _n(rng, 3, 4), _n(rng, 4)], {"eps": 1e-2})
    elif name == "swiglu":
        yield Case("(2,3,7)", L.swiglu_forward, L.swiglu_backward, [2 * _n(rng, 2, 3, 7), _n(rng, 2, 3, 7)], {})
        yield Case("(1,4)", L.swiglu_forward, L.swiglu_backward, [_n(rng, 1, 4), _n(rng, 1, 4)], {})
    elif name == "swiglu_mlp":
        C, I = 5, 11
        weights = [0.5 * _n(rng, C, I), 0.5 * _n(rng, C, I), 0.5 * _n(rng, I, C)]
        f, b = L.swiglu_mlp_forward, L.swiglu_mlp_backward
        yield Case("(2,3,5) intermediate 11", f, b, [_n(rng, 2, 3, C), *weights], {})
        yield Case("(1,5)", f, b, [_n(rng, 1, C), *weights], {})
    elif name == "rope":
        f, b = L.rope_forward, L.rope_backward
        yield Case("rotate half, positions 0..4", f, b, [_n(rng, 2, 3, 5, 6), np.arange(5)], {})
        yield Case("rotate half, offset 7 (KV cache), theta=500", f, b, [_n(rng, 1, 2, 3, 8), np.arange(7, 10)],
                   {"theta": 500.0})
        yield Case("interleaved, (B,T) non-contiguous positions", f, b,
                   [_n(rng, 2, 2, 4, 4), np.array([[0, 1, 5, 6], [3, 9, 10, 40]])], {"interleaved": True})
        yield Case("rotate half, (B,T) positions, T=1", f, b, [_n(rng, 2, 1, 1, 2), np.array([[12], [0]])], {})
    elif name == "rope_attention":
        f, b = L.rope_attention_forward, L.rope_attention_backward
        yield Case("causal GQA H=4 Hkv=2, positions 0..4", f, b,
                   [_n(rng, 2, 4, 5, 4), _n(rng, 2, 2, 5, 4), _n(rng, 2, 2, 5, 3), np.arange(5)], {})
        yield Case("interleaved, multi-query, offset 7, theta=500", f, b,
                   [_n(rng, 1, 2, 3, 6), _n(rng, 1, 1, 3, 6), _n(rng, 1, 1, 3, 2), np.arange(7, 10)],
                   {"theta": 500.0, "interleaved": True})
        mask = rng.random((2, 1, 4, 4)) > 0.3
        mask[1, 0, 2] = False                                    # a fully masked query row
        yield Case("(B,T) positions, mask + fully masked row, not causal", f, b,
                   [_n(rng, 2, 2, 4, 4), _n(rng, 2, 2, 4, 4), _n(rng, 2, 2, 4, 4), np.array([[0, 1, 5, 6], [3, 9, 10, 40]])],
                   {"causal": False, "mask": mask})
        yield Case("T=1", f, b, [_n(rng, 1, 2, 1, 2), _n(rng, 1, 2, 1, 2), _n(rng, 1, 2, 1, 2), np.array([4])], {})


def _cases_additive_attention(rng):
    f, b = L.additive_attention_forward, L.additive_attention_backward
    B, Tk, Hq, Hk, A = 3, 5, 4, 6, 3
    mask = np.ones((B, Tk), dtype=bool)
    mask[1, 3:] = False                                      # a padded source
    mask[2] = False                                          # a fully masked row
    weights = [0.5 * _n(rng, Hq, A), 0.5 * _n(rng, Hk, A), _n(rng, A)]
    yield Case("one query, mask + fully masked row", f, b, [_n(rng, B, Hq), _n(rng, B, Tk, Hk), *weights],
               {"mask": mask})
    yield Case("Tq=4 queries, no mask", f, b, [_n(rng, 2, 4, Hq), _n(rng, 2, 3, Hk), *weights], {}, time_axis=1)
    yield Case("from projections, Tq=2", L.additive_attention_projected_forward,
               L.additive_attention_projected_backward,
               [_n(rng, B, 2, A), _n(rng, B, Tk, Hk), _n(rng, B, Tk, A), _n(rng, A)], {"mask": mask})


def op_cases(name, rng=None):
    """All cases for op ``name`` (a name in ``npllm.layers.OPS``) as a list of :class:`Case`."""
    if name not in L.OPS:
        raise ValueError(f"--op must be one of: {', '.join(L.OPS)}; got {name!r}")
    return list(_cases(name, rng if rng is not None else np.random.default_rng(0)))


def check_case(case: Case, tol=DEFAULT_TOL):
    """Run :func:`npllm.gradcheck.check_op` on one case."""
    return check_op(case.forward, case.backward, case.inputs, case.kwargs, tol=tol, time_axis=case.time_axis,
                    op=case.forward.__name__.removesuffix("_forward"))


def _on_backend(case: Case, module) -> Case | None:
    """The same case run through ``module``'s kernels, or None when the backend lacks this op."""
    name = case.forward.__name__
    forward = getattr(module, name, None)
    backward = getattr(module, name.removesuffix("_forward") + "_backward", None)
    if forward is None or backward is None:
        return None
    return case._replace(forward=forward, backward=backward)


def run(ops=None, tol=DEFAULT_TOL, seed=0, out=None, backend="numpy") -> bool:
    """Check ``ops`` (default: all), print one table row per (op, input), return True if all pass.

    With ``backend`` "numba" or "cuda", the ops that backend implements are checked through its kernels'
    forward and backward (float64), the others are left out of the table.
    """
    out = out or sys.stdout
    module = None
    if backend != "numpy":
        from npllm.backend import _load
        module = _load(backend)
    rng = np.random.default_rng(seed)
    rows = []
    for name in ops or L.OPS:
        worst = {}
        for case in op_cases(name, rng):
            if module is not None:
                case = _on_backend(case, module)
                if case is None:
                    continue
            report = check_case(case, tol)
            for r in report.results:
                worst[r.name] = max(worst.get(r.name, 0.0), r.relative_error)
            if report.per_step is not None:
                worst["(per step)"] = max(worst.get("(per step)", 0.0), max(report.per_step))
        rows.extend((name, inp, err) for inp, err in worst.items())
    print(f"backend: {backend}", file=out)
    print(f"{'op':<30}{'input':<12}{'max rel error':>14}  result", file=out)
    for name, inp, err in rows:
        print(f"{name:<30}{inp:<12}{err:>14.2e}  {'pass' if err <= tol else 'FAIL'}", file=out)
    failed = [r for r in rows if r[2] > tol]
    print(f"{len(rows) - len(failed)}/{len(rows)} gradients within relative error {tol:g} "
          f"(float64 central differences over several shapes per op)", file=out)
    return bool(rows) and not failed
