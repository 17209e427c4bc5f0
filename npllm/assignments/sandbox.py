"""Run a student's code in a child process, in a scratch copy of the submission, with a time limit.

:func:`run_calls` is the only way the grader runs student code: it copies the submission into a fresh
temporary directory, writes the calls and their input arrays there, starts ``_child.py`` with a fresh
interpreter (``sys.executable``) in its own process group, and reads back plain arrays (``.npz``
loaded with ``allow_pickle=False``) and one status line per call.  Whatever the student's code does —
loop forever, call ``sys.exit`` or ``os._exit``, crash the interpreter, delete files in its working
directory, patch the grader, import the reference — it happens in the child, and the grader sees only
a :class:`ChildResult` whose ``error`` says so in one line.

This is isolation from mistakes and casual cheating, not a security sandbox: a child can still read
and write any file its user may (by absolute path) or use the network.  Run untrusted batches in a
container or as a separate user.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHILD = Path(__file__).with_name("_child.py")
SCRATCH_DAMAGED = 75   # _child.py's exit status when the scratch files it writes to are gone
DEFAULT_TIMEOUT = 60.0
MEMORY_LIMIT = 4 * 1024 ** 3   # bytes of address space per child (Python and numpy need ~0.1 GiB)
# What the scratch copy leaves out: caches and the grader's own outputs, never the student's code.
_IGNORE = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", ".git", "*.pyc")
# One BLAS thread per child: classrooms grade many submissions on shared machines.
_THREADS = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                   "NUMBA_NUM_THREADS")}


@dataclass
class ChildResult:
    """What one child reported: ``error`` (one line) when it died, timed out, never reported, or stopped
    early (the module did not import, sys.exit, the reference); otherwise ``errors`` (call id -> one
    line, or None when the call worked) and the saved arrays."""
    error: str | None = None
    errors: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    seconds: float = 0.0
    stdout: str = ""

    def call_error(self, call_id: str) -> str | None:
        return self.error or self.errors.get(call_id, "the call was not made")

    def results(self, call_id: str) -> list:
        """The arrays call ``call_id`` returned (without its cache), in order."""
        arrays, index = [], 0
        while f"{call_id}.{index}" in self.outputs:
            arrays.append(self.outputs[f"{call_id}.{index}"])
            index += 1
        return arrays


def _copy_submission(source: Path, target: Path, module: str) -> None:
    """A scratch copy: a directory is copied whole; a single file becomes ``<module>.py``."""
    if source.is_dir():
        shutil.copytree(source, target, ignore=_IGNORE, symlinks=True)
    else:
        target.mkdir()
        shutil.copyfile(source, target / f"{module}.py")


def _death(returncode: int, stderr: str) -> str:
    """One line for a child that ended without reporting."""
    if returncode == SCRATCH_DAMAGED:
        return "the student code deleted or damaged the grader's scratch files"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the student code crashed the Python process ({name})"
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
    if "MemoryError" in last:
        return "the student code ran out of memory"
    return (f"the student code ended the process (exit status {returncode}) before the part finished: "
            f"sys.exit and os._exit are not allowed")


def run_calls(submission, module: str, calls: list, arrays: dict, timeout: float = DEFAULT_TIMEOUT,
              provided: dict | None = None, memory_limit: int | None = MEMORY_LIMIT) -> ChildResult:
    """Make ``calls`` (see ``_child.py``) on the student's ``module`` in a child process.

    submission: the student's directory (or a single ``.py`` file, used as ``<module>.py``);
    arrays: name -> numpy array, the inputs the calls refer to; provided: filename -> source of the
    teacher's helper modules the calls may use (copied from the grader, never from the submission);
    timeout: wall-clock seconds before the child (and anything it started) is killed; memory_limit:
    bytes of address space the child may use (None: no limit; POSIX only).
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="npllm-grade-", ignore_cleanup_errors=True) as scratch:
        work = Path(scratch)
        _copy_submission(Path(submission), work / "submission", module)
        (work / "provided").mkdir()
        for filename, source in (provided or {}).items():
            (work / "provided" / filename).write_text(source, encoding="utf-8")
        (work / "request.json").write_text(json.dumps({"module": module, "calls": calls,
                                                                   "memory_limit": memory_limit}), encoding="utf-8")
        np.savez(work / "inputs.npz", **arrays)
        env = {**os.environ, **_THREADS, "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("PYTHONSTARTUP", None)
        with open(work / "stdout.txt", "wb") as out, open(work / "stderr.txt", "wb") as err:
            process = subprocess.Popen([sys.executable, str(CHILD), str(work)], cwd=work, env=env,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                       start_new_session=os.name == "posix")
            try:
                process.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(process)
        stdout = _tail(work / "stdout.txt")
        if timed_out:
            return ChildResult(f"timed out after {timeout:g} s (an infinite loop?)",
                               seconds=time.perf_counter() - started, stdout=stdout)
        if not all((work / name).is_file() for name in ("request.json", "inputs.npz")):
            return ChildResult("the student code deleted the grader's scratch files (outside its own folder)",
                               seconds=time.perf_counter() - started, stdout=stdout)
        result_file = work / "result.json"
        try:
            report = json.loads(result_file.read_text(encoding="utf-8"))
            with np.load(work / "outputs.npz", allow_pickle=False) as saved:
                outputs = {key: saved[key] for key in saved.files}
        except (OSError, ValueError, KeyError):
            reason = _death(process.returncode, _tail(work / "stderr.txt"))
            return ChildResult(reason, seconds=time.perf_counter() - started, stdout=stdout)
        return ChildResult(report.get("fatal"), report.get("errors", {}), outputs, time.perf_counter() - started,
                           stdout)


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the child and whatever it started (its own process group), then reap it."""
    if os.name == "posix":
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    elif process.poll() is None:
        process.kill()
    process.wait()


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", errors="replace")
