"""Helpers the per-op test files share: backends, the gradient-check table, kernel-vs-reference comparisons.

* ``backend_param`` / ``load_backend``: the backends by name ("numpy" is the reference ``npllm.layers``,
  "numba" ``npllm_kernels.cpu``, "cuda" ``npllm_kernels.cuda``, marked ``cuda`` and skipped without
  numba-cuda); ``KERNEL_BACKENDS`` parametrizes conftest's ``backend`` fixture over the kernel backends.
* ``gradcheck_cases`` / ``assert_passes_gradient_check``: the float64 cases of ``npllm.gradcheck_suite`` for
  some ops of ``npllm.layers.OPS``, with ids "<op>-<case label>", and the check each must pass: the
  backward agrees with central differences to a relative error of 1e-7.
* ``assert_close`` / ``assert_kernel_matches_reference``: a Numba kernel against the reference evaluated in
  float64 on the same inputs.  Tolerances (``RTOL``): float64 1e-10, float32 1e-4, relative to each entry or
  to the size of the terms it is computed from (``scale``; by default the largest entry of the expected
  array), since an entry that is a sum cancelling to ~0 carries the rounding error of its terms.  The
  reference in float64 is the exact answer up to rounding, so the reference's own float32 rounding does
  not count against the kernel; the kernel's output dtype must still be the input's.
* ``assert_cuda_matches`` / ``random_array``: a CUDA kernel against the reference in the same dtype, in
  Numba's CUDA simulator when there is no GPU.  float64 kernels sum in a different order than NumPy, so
  rtol 1e-10; float32 rtol 1e-4 (a few ulps times the row length), with a small atol for entries that
  cancel to ~0.
"""
import numpy as np
import pytest

import npllm.layers as ref
from npllm.gradcheck_suite import check_case, op_cases

RTOL = {np.float32: 1e-4, np.float64: 1e-10}
CUDA_TOLERANCE = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
NUMBA_CUDA_MISSING = "numba-cuda is not installed (pip install -e .[cuda])"


# ---------------------------------------------------------------- backends


def backend_param(name):
    """A pytest parameter for one backend, with its name as the id (and the ``cuda`` mark for CUDA)."""
    return pytest.param(name, id=name, marks=pytest.mark.cuda if name == "cuda" else ())


KERNEL_BACKENDS = [backend_param("numba"), backend_param("cuda")]


def load_backend(name):
    """The module holding the backend's ops, each with the reference's name and signature."""
    if name == "numpy":
        return ref
    if name == "numba":
        import npllm_kernels.cpu
        return npllm_kernels.cpu
    pytest.importorskip("numba.cuda", reason=NUMBA_CUDA_MISSING)
    return pytest.importorskip("npllm_kernels.cuda")


def kernel_module(name, op=None):
    """``load_backend(name)`` for a kernel backend, skipping the test when it lacks ``<op>_forward``."""
    module = load_backend(name)
    if op is not None and not hasattr(module, f"{op}_forward"):
        pytest.skip(f"backend {name} has no {op}")
    return module


# ---------------------------------------------------------------- the gradient-check table


def gradcheck_cases(*ops):
    """The float64 gradient-check cases of ``npllm.gradcheck_suite`` for ``ops`` (names in ``layers.OPS``)."""
    cases = [(name, case) for name in ops for case in op_cases(name, np.random.default_rng(1))]
    return [pytest.param(name, case, id=f"{name}-{case.label}") for name, case in cases]


def assert_passes_gradient_check(case):
    """The case's backward agrees with central differences in float64 (relative error ≤ 1e-7)."""
    report = check_case(case)
    assert report.passed, str(report)
    assert report.max_error <= 1e-7


# ---------------------------------------------------------------- Numba kernels against the reference


def as_float64(a):
    """A float array in float64 (the reference's exact answer); anything else (ids, None, scalars) as is."""
    return a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a


def assert_close(actual, desired, dtype, name="", scale=None):
    """actual has ``dtype``, desired's shape, and entries within RTOL of desired's or of ``scale``."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.dtype == dtype, f"{name}: dtype {actual.dtype}, expected {np.dtype(dtype)}"
    assert actual.shape == desired.shape, f"{name}: shape {actual.shape} vs {desired.shape}"
    if scale is None:
        scale = float(np.max(np.abs(desired), initial=0.0))
    np.testing.assert_allclose(actual, desired.astype(dtype), rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                               err_msg=name)


def assert_same_bad_values(actual, desired, dtype):
    """NaN and ±inf exactly where desired has them, the finite entries within RTOL of the largest one."""
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(desired))
    np.testing.assert_array_equal(np.isinf(actual), np.isinf(desired))
    finite = np.isfinite(desired)
    np.testing.assert_allclose(actual[finite], desired[finite], rtol=RTOL[dtype],
                               atol=RTOL[dtype] * float(np.max(np.abs(desired[finite]), initial=0.0)))


def assert_kernel_matches_reference(kernel, op, inputs, kwargs, douts, dtype, out_scales=None, grad_scales=None):
    """``kernel``'s ``<op>_forward`` + ``<op>_backward`` against the reference's (in float64); the inputs
    and upstream gradients must stay unchanged."""
    kernel_fw, kernel_bw = getattr(kernel, f"{op}_forward"), getattr(kernel, f"{op}_backward")
    ref_fw, ref_bw = getattr(ref, f"{op}_forward"), getattr(ref, f"{op}_backward")
    originals = [np.copy(x) for x in inputs + douts]
    *outs, cache = kernel_fw(*inputs, **kwargs)
    *ref_outs, ref_cache = ref_fw(*[as_float64(x) for x in inputs], **kwargs)
    for k, (out, ref_out, scale) in enumerate(zip(outs, ref_outs, out_scales or [None] * len(outs))):
        assert_close(out, ref_out, dtype, f"{op} output {k}", scale)
    grads = kernel_bw(*douts, cache)
    ref_grads = ref_bw(*[as_float64(d) for d in douts], ref_cache)
    grads, ref_grads = (grads, ref_grads) if isinstance(grads, tuple) else ((grads,), (ref_grads,))
    assert len(grads) == len(ref_grads)
    for k, (grad, ref_grad, scale) in enumerate(zip(grads, ref_grads, grad_scales or [None] * len(grads))):
        assert_close(grad, ref_grad, dtype, f"{op} gradient {k}", scale)
    for before, after in zip(originals, inputs + douts):
        np.testing.assert_array_equal(after, before, err_msg=f"{op} modified an input")


# ---------------------------------------------------------------- CUDA kernels against the reference


def assert_cuda_matches(actual, desired, dtype):
    """actual and desired both have ``dtype`` and one shape, and agree to CUDA_TOLERANCE."""
    assert actual.dtype == desired.dtype == np.dtype(dtype)
    assert actual.shape == desired.shape
    np.testing.assert_allclose(actual, desired, **CUDA_TOLERANCE[dtype])


def random_array(rng, shape, dtype, scale=1.0):
    """Standard normal entries times ``scale``, in ``dtype``."""
    return (scale * rng.standard_normal(shape)).astype(dtype)
