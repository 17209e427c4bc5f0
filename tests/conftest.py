"""Shared test setup: hypothesis profiles, the CUDA simulator switch, and the fixtures the op files share.

* Hypothesis: ``deadline=None`` because Numba compiles on a kernel's first call; the ``ci`` profile
  (chosen when ``CI`` is set) is derandomized so a CI run is reproducible.
* CUDA: without a GPU, the CUDA tests run in Numba's simulator.  The variable must be set before
  ``numba.cuda`` is first imported, hence here, at collection time.
* ``backend`` (scipy's ``xp`` fixture): each kernel backend's module of ops, ids "numba" and "cuda" (marked
  ``cuda``, skipped without numba-cuda).  ``@pytest.mark.parametrize("backend", [backend_param("numpy"),
  ...], indirect=True)`` picks others, the reference "numpy" included.  Helpers: ``tests/_helpers.py``.
* ``cuda_kernels``: ``npllm_kernels.cuda`` for tests of the CUDA kernels themselves (mark them ``cuda``).
* ``one_numba_thread`` / ``parallel_on_any_size``: make the Numba kernels take their serial or parallel
  versions.

Layout: ``tests/test_op_<family>.py`` holds everything about one op family (reference values, errors,
gradient checks, every backend's kernels, bad values); see each file's docstring.
"""
import os
import shutil
import sys

import pytest
from hypothesis import HealthCheck, settings

from _helpers import KERNEL_BACKENDS, NUMBA_CUDA_MISSING, load_backend

settings.register_profile("dev", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

if "NUMBA_ENABLE_CUDASIM" not in os.environ and not (shutil.which("nvidia-smi") or os.path.exists("/dev/nvidia0")):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"


@pytest.fixture(scope="module", params=KERNEL_BACKENDS)
def backend(request):
    """The module of one backend's ops (module scope, so hypothesis tests may use it too)."""
    return load_backend(request.param)


@pytest.fixture
def cuda_kernels():
    """npllm_kernels.cuda, with the simulator's threads handing the GIL over fast.

    The simulator's threads hand the GIL over at barriers; a short switch interval makes that ~4× faster.
    """
    pytest.importorskip("numba.cuda", reason=NUMBA_CUDA_MISSING)
    kernels = pytest.importorskip("npllm_kernels.cuda")
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield kernels
    sys.setswitchinterval(previous)


@pytest.fixture
def one_numba_thread():
    """Run the test with one Numba thread (the kernels then take their serial twins), then restore."""
    import numba
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(previous)


@pytest.fixture
def parallel_on_any_size(monkeypatch):
    """Make the kernels take their parallel versions even on the small shapes tests use."""
    from npllm_kernels.cpu import _threads
    monkeypatch.setattr(_threads, "PARALLEL_MIN_WORK", 0)
