"""npllm.backend: selecting an implementation of the hot ops, and dispatching each backward correctly.

Specification: an unknown backend is a clear error; ``use_backend`` restores the previous backend even
when its block raises; a forward runs the selected backend's function (the reference when the backend
lacks the op); a backward goes to whichever backend *made the cache*, whatever is selected when it is
called; every kernel has exactly its reference's signature; and ``import npllm`` never imports numba.
"""
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import npllm
import npllm.layers as ref
from npllm import backend
from npllm.backend import ops


@pytest.fixture(autouse=True)
def restore_backend():
    """Each test starts and ends on the backend that was selected before it."""
    previous = backend.get_backend()
    yield
    backend.set_backend(previous)


def test_unknown_backend_is_a_clear_error_and_changes_nothing():
    backend.set_backend("numpy")
    with pytest.raises(ValueError, match=r"backend must be one of 'numpy', 'numba', 'cuda', got 'nope'"):
        backend.set_backend("nope")
    assert backend.get_backend() == "numpy"


def test_bad_environment_variable_is_named_in_the_error(monkeypatch):
    from npllm.errors import EnvironmentVariableError
    monkeypatch.setattr(backend, "_current", None)
    monkeypatch.setenv("NPLLM_BACKEND", "tpu")
    with pytest.raises(EnvironmentVariableError, match="NPLLM_BACKEND: 'tpu' is not a backend; set it to one of "
                                                      "numpy, numba, cuda") as info:
        backend.get_backend()
    assert info.value.variable == "NPLLM_BACKEND" and "--backend" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_environment_variable_is_reported_by_the_first_op_when_no_backend_was_set(monkeypatch):
    from npllm.errors import EnvironmentVariableError
    monkeypatch.setattr(backend, "_current", None)
    monkeypatch.setenv("NPLLM_BACKEND", "NUMPY ")
    with pytest.raises(EnvironmentVariableError, match="NPLLM_BACKEND: 'NUMPY' is not a backend"):
        ops.matmul(np.ones((2, 2)), np.ones((2, 2)))


def test_unavailable_environment_backend_names_the_variable(monkeypatch):
    from npllm.errors import EnvironmentVariableError

    def unavailable(name):
        raise RuntimeError(f"backend {name!r} is not available: cannot import it")

    monkeypatch.setattr(backend, "_current", None)
    monkeypatch.setattr(backend, "_load", unavailable)
    monkeypatch.setenv("NPLLM_BACKEND", "numba")
    with pytest.raises(EnvironmentVariableError, match="NPLLM_BACKEND: backend 'numba' is not available.*unset it") as info:
        backend.get_backend()
    assert "--backend" not in str(info.value)


def test_empty_environment_variable_means_numpy(monkeypatch):
    monkeypatch.setattr(backend, "_current", None)
    monkeypatch.setenv("NPLLM_BACKEND", "")
    assert backend.get_backend() == "numpy"


def test_environment_variable_selects_the_backend(monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setattr(backend, "_current", None)
    monkeypatch.setenv("NPLLM_BACKEND", "numba")
    assert backend.get_backend() == "numba"


def test_use_backend_restores_the_previous_backend_even_after_an_error():
    pytest.importorskip("numba")
    backend.set_backend("numpy")
    with npllm.use_backend("numba"):
        assert npllm.get_backend() == "numba"
    assert npllm.get_backend() == "numpy"
    with pytest.raises(RuntimeError, match="inside"):
        with npllm.use_backend("numba"):
            raise RuntimeError("inside")
    assert npllm.get_backend() == "numpy"


def test_forward_resolves_to_the_selected_backend():
    kernels = pytest.importorskip("npllm_kernels.cpu")
    with npllm.use_backend("numba"):
        assert ops.scaled_dot_product_attention_forward is kernels.scaled_dot_product_attention_forward
    with npllm.use_backend("numpy"):
        assert ops.scaled_dot_product_attention_forward is ref.scaled_dot_product_attention_forward


def test_op_the_backend_lacks_falls_back_to_the_reference():
    kernels = pytest.importorskip("npllm_kernels.cpu")
    assert not hasattr(kernels, "rnn_step_forward"), "pick another op the numba backend lacks"
    with npllm.use_backend("numba"):
        assert ops.rnn_step_forward is ref.rnn_step_forward
        with pytest.raises(AttributeError, match="no op named 'warp_drive_forward'"):
            ops.warp_drive_forward


def _attention_inputs():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 5, 4)) for _ in range(3))
    return q, k, v, rng.standard_normal((1, 2, 5, 4))


def test_backward_goes_to_the_backend_that_made_the_cache(monkeypatch):
    kernels = pytest.importorskip("npllm_kernels.cpu")
    calls = []
    kernel_backward = kernels.scaled_dot_product_attention_backward

    def spy(dout, cache):
        calls.append(type(cache).__name__)
        return kernel_backward(dout, cache)

    monkeypatch.setattr(kernels, "scaled_dot_product_attention_backward", spy)
    q, k, v, dout = _attention_inputs()
    with npllm.use_backend("numba"):
        _, cache = ops.scaled_dot_product_attention_forward(q, k, v, causal=True)
    with npllm.use_backend("numpy"):                      # switched back before the backward
        grads = ops.scaled_dot_product_attention_backward(dout, cache)
    assert calls == ["FlashAttentionCache"]
    _, ref_cache = ref.scaled_dot_product_attention_forward(q, k, v, causal=True)
    for grad, ref_grad in zip(grads, ref.scaled_dot_product_attention_backward(dout, ref_cache)):
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_reference_cache_goes_to_the_reference_backward_under_numba(monkeypatch):
    kernels = pytest.importorskip("npllm_kernels.cpu")
    monkeypatch.setattr(kernels, "scaled_dot_product_attention_backward",
                        lambda *args: pytest.fail("a reference cache reached the numba backward"))
    q, k, v, dout = _attention_inputs()
    _, ref_cache = ref.scaled_dot_product_attention_forward(q, k, v)
    with npllm.use_backend("numba"):
        dq, _, _ = ops.scaled_dot_product_attention_backward(dout, ref_cache)
    np.testing.assert_array_equal(dq, ref.scaled_dot_product_attention_backward(dout, ref_cache)[0])


def test_every_numba_kernel_has_its_reference_signature():
    kernels = pytest.importorskip("npllm_kernels.cpu")
    names = [n for n in dir(kernels) if n.endswith(("_forward", "_backward")) or n == "matmul"]
    assert {"matmul", "scaled_dot_product_attention_forward", "scaled_dot_product_attention_backward"} <= set(names)
    for name in names:
        assert hasattr(ref, name), f"npllm_kernels.cpu.{name} replaces no reference op"
        assert inspect.signature(getattr(kernels, name)) == inspect.signature(getattr(ref, name)), name


def test_import_npllm_does_not_import_numba():
    code = ("import sys, npllm, npllm.layers, npllm.backend; npllm.get_backend(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'npllm_kernels', 'llvmlite')))")
    env = {k: v for k, v in os.environ.items() if k != "NPLLM_BACKEND"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "[]"
