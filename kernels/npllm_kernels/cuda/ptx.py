"""Compile every CUDA kernel to PTX without a GPU, and ask ptxas what each costs in registers and spills.

``numba.cuda.compile_ptx`` needs NVIDIA's NVVM library (the ``nvidia-nvvm`` wheel that
``nvidia-cuda-nvcc`` brings) but no GPU and no driver. ``ptxas`` (in the ``nvidia-cuda-nvcc`` wheel)
then assembles the PTX for one architecture and, with ``-v``, reports per kernel:

* registers per thread: more registers → fewer threads resident on an SM (lower occupancy);
* spill stores/loads: registers that did not fit and went to slow local memory;
* stack frame: local arrays that live in local memory (L1-cached, but not registers);
* shared memory per block.

The report also counts float64 instructions in each float32 kernel: a stray Python float literal turns
float32 arithmetic into (on most GPUs far slower) float64 arithmetic, and this catches it.

Run it as ``python -m npllm_kernels.cuda.ptx`` (prints a table; ``--json`` prints JSON; ``--dtype``
picks one dtype). It must run without NUMBA_ENABLE_CUDASIM=1: the simulator replaces the compiler.
The table also shows threads per block; registers × threads must stay within an SM's 65,536
registers or the launch fails ("too many resources requested").
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from numba import cuda, types
from numba.cuda import dispatcher as _dispatcher

from npllm_kernels.cuda import MODULES
from npllm_kernels.cuda._device import SIMULATOR

matmul, softmax, cross_entropy = MODULES["matmul"], MODULES["softmax"], MODULES["cross_entropy"]
attention, attention_backward = MODULES["attention"], MODULES["attention_backward"]
rms_norm, rope = MODULES["rms_norm"], MODULES["rope"]

ARCHITECTURES = ((8, 0), (9, 0))
HEAD_DIMS = (64, 128)          # GPT-2's head size, and the largest the attention kernels accept
REGISTERS_PER_SM = 65536       # a block whose threads need more registers than this cannot launch


def kernel_signatures(dtype):
    """(name, python function, argument types, threads per block) for every kernel, floats of ``dtype``."""
    f = types.float32 if dtype == "float32" else types.float64
    vec, mat, cube = f[::1], f[:, ::1], f[:, :, ::1]
    ids, i64, flag = types.int64[::1], types.int64, types.boolean
    mask = types.boolean[:, :, :, ::1]
    row_threads = MODULES["softmax"].ROW_THREADS
    rows = [(f"matmul_{v}", getattr(matmul, f"matmul_kernel_{v}"), (cube, cube, cube),
             matmul.THREADS_V3 if v == "v3" else matmul.TILE ** 2) for v in ("v1", "v2", "v3")]
    rows.append(("softmax_v1", softmax.softmax_kernel_v1, (mat, mat), softmax.ROWS_PER_BLOCK_V1))
    rows += [(f"softmax_{v}", getattr(softmax, f"softmax_kernel_{v}"), (mat, mat), row_threads) for v in ("v2", "v3")]
    rows.append(("softmax_backward", softmax.softmax_backward_kernel, (mat, mat, mat), row_threads))
    rows.append(("cross_entropy_forward_v1", cross_entropy.cross_entropy_forward_kernel_v1,
                 (mat, ids, i64, vec, vec), cross_entropy.ROWS_PER_BLOCK_V1))
    rows.append(("cross_entropy_forward_v2", cross_entropy.cross_entropy_forward_kernel_v2,
                 (mat, ids, i64, vec, vec), row_threads))
    rows.append(("cross_entropy_mean", cross_entropy.mean_over_kept_kernel, (vec, ids, i64, vec, ids), row_threads))
    rows.append(("cross_entropy_backward", cross_entropy.cross_entropy_backward_kernel,
                 (f, mat, ids, i64, vec, ids, mat), cross_entropy.BACKWARD_TILE[0] * cross_entropy.BACKWARD_TILE[1]))
    rows.append(("attention_delta", attention_backward.attention_delta_kernel, (cube, cube, mat),
                 attention_backward.DELTA_THREADS))
    rows.append(("rms_norm_forward", rms_norm.rms_norm_forward_kernel, (mat, vec, f, mat, vec), row_threads))
    rows.append(("rms_norm_backward", rms_norm.rms_norm_backward_kernel, (mat, mat, vec, vec, mat), row_threads))
    rows.append(("rms_norm_dweight", rms_norm.rms_norm_dweight_kernel, (mat, mat, vec, vec), rms_norm.COLUMN_THREADS))
    rows.append(("rope", rope.rope_kernel, (cube, cube, cube, f, flag, i64, cube), rope.THREADS))
    itemsize = 4 if dtype == "float32" else 8
    common = (cube, cube, cube, mask, flag, flag, i64, i64, f)
    backward_common = (cube, cube, cube, cube, mat, mat, mask, flag, flag, i64, i64, f)
    for d in HEAD_DIMS:
        block, d_pad, dv_pad = attention.forward_config(itemsize, d, d)
        rows.append((f"attention_forward_d{d}", attention.forward_kernel(block, d_pad, dv_pad), common + (cube, mat),
                     block))
        block, d_pad, dv_pad = attention_backward.backward_config(itemsize, d, d)
        rows.append((f"attention_dq_d{d}", attention_backward.dq_kernel(block, d_pad, dv_pad),
                     backward_common + (cube,), block))
        rows.append((f"attention_dkv_d{d}", attention_backward.dkv_kernel(block, d_pad, dv_pad),
                     backward_common + (cube, cube), block))
    return [(name, kernel.py_func, signature, threads) for name, kernel, signature, threads in rows]


def find_ptxas():
    """Path of ptxas, preferring the one in NVIDIA's pip wheels (the same release as the NVVM that wrote
    the PTX: an older ptxas rejects a newer PTX ``.version``), then CUDA_HOME, then PATH; None if absent."""
    candidates = []
    try:
        import nvidia   # namespace package of NVIDIA's wheels: nvidia/cu13/bin or nvidia/cuda_nvcc/bin
        for root in nvidia.__path__:
            candidates += sorted(glob.glob(os.path.join(root, "*", "bin", "ptxas")))
    except ImportError:
        pass
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.path.join(os.environ["CUDA_HOME"], "bin", "ptxas"))
    candidates.append(shutil.which("ptxas") or "")
    return next((path for path in candidates if path and os.access(path, os.X_OK)), None)


def ptxas_report(ptxas, ptx, cc):
    """Registers, spills, stack frame and shared memory that ptxas reports for one kernel's PTX."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as handle:
            handle.write(ptx)
        result = subprocess.run([ptxas, f"-arch=sm_{cc[0]}{cc[1]}", "-v", path, "-o", os.devnull],
                                capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"ptxas failed for sm_{cc[0]}{cc[1]}: {result.stderr.strip()}")
    text = result.stderr

    def number(pattern):
        match = re.search(pattern, text)
        return int(match.group(1)) if match else 0
    return {"registers": number(r"Used (\d+) registers"), "spill_stores": number(r"(\d+) bytes spill stores"),
            "spill_loads": number(r"(\d+) bytes spill loads"), "stack_bytes": number(r"(\d+) bytes stack frame"),
            "shared_bytes": number(r"(\d+) bytes smem")}


class _TargetDevice:
    """Stands in for the GPU when a kernel calls a ``@cuda.jit(device=True)`` function."""

    def __init__(self, cc):
        self.compute_capability = cc


@contextlib.contextmanager
def _no_gpu_needed(cc):
    """Let compile_ptx compile device functions without a GPU.

    numba-cuda (0.30) compiles a device function that a kernel calls for the *current device's* compute
    capability, which asks the driver, which fails on a machine without a GPU although nothing else in
    compile_ptx needs one. For the duration of the compile we answer that question with the target.
    """
    original = _dispatcher.get_current_device
    _dispatcher.get_current_device = lambda: _TargetDevice(cc)
    try:
        yield
    finally:
        _dispatcher.get_current_device = original


def compile_all(architectures=ARCHITECTURES, dtypes=("float32", "float64")):
    """Compile every kernel for each architecture and dtype; one dict per (kernel, dtype, cc)."""
    if SIMULATOR:
        raise RuntimeError("PTX cannot be compiled under NUMBA_ENABLE_CUDASIM=1; unset it and run again")
    ptxas = find_ptxas()
    rows = []
    for dtype in dtypes:
        for name, function, signature, threads in kernel_signatures(dtype):
            for cc in architectures:
                with _no_gpu_needed(cc):
                    ptx, _ = cuda.compile_ptx(function, signature, cc=cc)
                row = {"kernel": name, "dtype": dtype, "cc": f"sm_{cc[0]}{cc[1]}", "threads": threads,
                       "ptx_lines": ptx.count("\n"),
                       "f64_instructions": len(re.findall(r"^\s*[a-z][\w.]*\.f64\b", ptx, re.MULTILINE))}
                if ptxas:
                    row.update(ptxas_report(ptxas, ptx, cc))
                rows.append(row)
    return rows


def format_table(rows) -> str:
    """The rows as an aligned text table."""
    columns = ["kernel", "dtype", "cc", "threads", "registers", "spill_stores", "spill_loads", "stack_bytes", "shared_bytes",
               "f64_instructions"]
    columns = [c for c in columns if any(c in row for row in rows)]
    widths = {c: max(len(c), *(len(str(row.get(c, ""))) for row in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns) for row in rows]
    return "\n".join(lines)


NO_NVVM_EXIT = 3   # exit status when NVVM is missing (tests skip on it)


def nvvm_available() -> bool:
    """Whether NVIDIA's NVVM library (which compile_ptx needs) can be loaded."""
    from numba.cuda.cudadrv import nvvm
    return nvvm.is_available()


def main(argv=None) -> int:
    """``python -m npllm_kernels.cuda.ptx [--json] [--dtype float32|float64]``: print the report."""
    parser = argparse.ArgumentParser(prog="python -m npllm_kernels.cuda.ptx", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    parser.add_argument("--dtype", choices=("float32", "float64"), action="append",
                        help="only this dtype (repeatable; default both)")
    args = parser.parse_args(argv)
    if not nvvm_available():
        print("NVVM not found: pip install nvidia-cuda-nvcc (it brings nvidia-nvvm), or set CUDA_HOME",
              file=sys.stderr)
        return NO_NVVM_EXIT
    rows = compile_all(dtypes=tuple(args.dtype or ("float32", "float64")))
    print(json.dumps(rows) if args.json else format_table(rows))
    if not find_ptxas():
        print("ptxas not found: registers and spills not reported", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
