"""Every CUDA kernel compiles to PTX for sm_80 (A100) and sm_90 (H100) without a GPU, and ptxas likes it.

Compilation needs NVIDIA's NVVM (the ``[cuda]`` extra installs it with nvidia-cuda-nvcc); the test skips
with the reason when it is absent. It runs ``python -m npllm_kernels.cuda.ptx`` in subprocesses (one per
dtype, in parallel) because this pytest process may have the CUDA simulator on, which replaces the compiler.

Besides compiling, it checks what a reader of the kernels is promised:
* float32 kernels contain no float64 instruction (a stray Python float literal would add some);
* where ptxas is available: no register spills; registers × threads per block within an SM's 65,536
  (else the launch fails); static shared memory within the 48 KiB a block may use without opting in.
The table of registers, spills and shared memory is printed.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cuda
pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install -e .[cuda])")

ROOT = Path(__file__).resolve().parents[1]
NO_NVVM_EXIT = 3
SHARED_LIMIT = 48 * 1024
REGISTERS_PER_SM = 65536
MAIN_KERNELS = {"matmul_v3", "softmax_v3", "softmax_backward", "cross_entropy_forward_v2", "cross_entropy_backward",
                "attention_forward_d64", "attention_dq_d64", "attention_dkv_d64",
                "rms_norm_forward", "rms_norm_backward", "rms_norm_dweight", "rope"}


@pytest.fixture(scope="module")
def ptx_rows():
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "kernels"), env.get("PYTHONPATH", "")])
    jobs = [subprocess.Popen([sys.executable, "-m", "npllm_kernels.cuda.ptx", "--json", "--dtype", dtype], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for dtype in ("float32", "float64")]
    rows = []
    for job in jobs:
        stdout, stderr = job.communicate(timeout=600)
        if job.returncode == NO_NVVM_EXIT:
            pytest.skip(stderr.strip())
        assert job.returncode == 0, stderr[-3000:]
        rows += json.loads(stdout)
    return rows


def test_every_kernel_compiles_to_ptx_for_sm80_and_sm90(ptx_rows, capsys):
    from npllm_kernels.cuda.ptx import format_table
    with capsys.disabled():
        print("\n" + format_table(ptx_rows))
    kernels = {row["kernel"] for row in ptx_rows}
    assert MAIN_KERNELS <= kernels
    combos = {(row["kernel"], row["dtype"], row["cc"]) for row in ptx_rows}
    assert len(combos) == len(kernels) * 2 * 2   # every kernel × {float32, float64} × {sm_80, sm_90}
    assert all(row["ptx_lines"] > 0 for row in ptx_rows)


def test_float32_ptx_has_no_float64_arithmetic(ptx_rows):
    offenders = [(row["kernel"], row["cc"]) for row in ptx_rows
                 if row["dtype"] == "float32" and row["f64_instructions"]]
    assert offenders == []


def test_ptxas_reports_no_spills_and_every_block_fits_an_sm(ptx_rows):
    if "registers" not in ptx_rows[0]:
        pytest.skip("ptxas not found (pip install nvidia-cuda-nvcc): registers and spills not checked")
    spills = [(row["kernel"], row["dtype"], row["cc"]) for row in ptx_rows if row["spill_stores"] or row["spill_loads"]]
    assert spills == []
    too_big = [(row["kernel"], row["dtype"], row["cc"]) for row in ptx_rows
               if row["registers"] * row["threads"] > REGISTERS_PER_SM or row["shared_bytes"] > SHARED_LIMIT]
    assert too_big == []
