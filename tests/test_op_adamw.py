"""The fused AdamW kernel (npllm_kernels.cpu.adamw_update) against the NumPy reference in npllm.optim."""
import inspect

import numpy as np
import pytest
from numpy.testing import assert_allclose

from npllm import optim
from npllm.backend import use_backend
from npllm_kernels import cpu

TOLERANCE = {np.float32: 1e-6, np.float64: 1e-12}


def _state(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(shape).astype(dtype)
    return param, np.zeros_like(param), np.zeros_like(param), rng


def test_signature_matches_the_reference():
    assert inspect.signature(cpu.adamw_update) == inspect.signature(optim.adamw_update)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("shape", [(1,), (7, 5), (3, 4, 33)])
def test_five_steps_match_the_reference(dtype, weight_decay, shape):
    ref_p, ref_m, ref_v, rng = _state(shape, dtype, 0)
    ker_p, ker_m, ker_v = ref_p.copy(), ref_m.copy(), ref_v.copy()
    for step in range(1, 6):
        grad = rng.standard_normal(shape).astype(dtype)
        args = (3e-2, 0.9, 0.99, 1e-8, weight_decay, step)
        optim.adamw_update(ref_p, grad, ref_m, ref_v, *args)
        cpu.adamw_update(ker_p, grad, ker_m, ker_v, *args)
    for got, want in ((ker_p, ref_p), (ker_m, ref_m), (ker_v, ref_v)):
        assert got.dtype == dtype
        # Values are O(1): atol = rtol covers a param that an update carries across zero (cancellation).
        assert_allclose(got, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def test_non_contiguous_grad_is_read_and_non_contiguous_param_is_refused():
    param, m, v, rng = _state((4, 6), np.float64, 1)
    grad = np.asfortranarray(rng.standard_normal((4, 6)))
    want_p, want_m, want_v = param.copy(), m.copy(), v.copy()
    optim.adamw_update(want_p, grad, want_m, want_v, 1e-2, 0.9, 0.999, 1e-8, 0.0, 1)
    cpu.adamw_update(param, grad, m, v, 1e-2, 0.9, 0.999, 1e-8, 0.0, 1)
    assert_allclose(param, want_p, rtol=1e-12)
    with pytest.raises(ValueError, match="param"):
        cpu.adamw_update(np.ones((6, 4)).T, grad, m, v, 1e-2, 0.9, 0.999, 1e-8, 0.0, 1)
    with pytest.raises(ValueError, match="m:"):
        cpu.adamw_update(param, grad, m[:2], v, 1e-2, 0.9, 0.999, 1e-8, 0.0, 1)


def test_adamw_optimizer_uses_the_kernel_under_the_numba_backend():
    def run(backend_name):
        params = {"w": np.linspace(-1, 1, 12).reshape(3, 4), "b": np.linspace(0, 1, 4)}
        opt = optim.AdamW(lr=1e-2, weight_decay=0.1)
        rng = np.random.default_rng(2)
        with use_backend(backend_name):
            for _ in range(3):
                opt.step(params, {k: rng.standard_normal(p.shape) for k, p in params.items()})
        return params
    ref, fused = run("numpy"), run("numba")
    for name in ref:
        assert_allclose(fused[name], ref[name], rtol=1e-12)
