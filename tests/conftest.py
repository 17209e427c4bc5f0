"""Shared test setup: hypothesis profiles and the CUDA simulator switch.

* Hypothesis: ``deadline=None`` because Numba compiles on a kernel's first call; the ``ci`` profile
  (chosen when ``CI`` is set) is derandomized so a CI run is reproducible.
* CUDA: without a GPU, the CUDA tests run in Numba's simulator.  The variable must be set before
  ``numba.cuda`` is first imported, hence here, at collection time.
"""
import os
import shutil

from hypothesis import HealthCheck, settings

settings.register_profile("dev", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

if "NUMBA_ENABLE_CUDASIM" not in os.environ and not (shutil.which("nvidia-smi") or os.path.exists("/dev/nvidia0")):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
