"""bench/compare_torch.py without PyTorch: its timing turns, its worker processes and npllm's workloads.

The comparison itself needs PyTorch, which the tests never install; what can break without it is
tested here: the first call of a block is not timed, the libraries take turns, a workload built in a
worker process gives the same check as in this one, and a missing PyTorch is a one-line exit.
"""
import importlib
import pathlib
import sys

import numpy as np
import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def compare():
    # Imported by name from bench/ (on sys.path, which spawned worker processes inherit), so that the
    # workers can find the function they run.
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("compare_torch")
    finally:
        sys.path.remove(str(BENCH))


def test_timed_block_runs_every_call_and_times_all_but_the_first(compare):
    calls = []
    times = compare.timed_block(lambda: calls.append(1), 6)
    assert len(calls) == 6 and len(times) == 5 and all(t >= 0 for t in times)


def test_median_times_takes_turns_until_each_library_has_its_reps(compare, monkeypatch):
    monkeypatch.setattr(compare, "SETTLE_S", 0.0)
    order = []

    class Fake:
        def __init__(self, name, seconds):
            self.name, self.seconds = name, seconds

        def time(self, key, block):
            order.append(self.name)
            return [self.seconds] * (block - 1)

    medians = compare.median_times({"npllm": Fake("npllm", 2.0), "torch": Fake("torch", 3.0)}, ("x",), reps=12)
    assert medians == {"npllm": 2.0, "torch": 3.0}
    assert order == ["npllm", "torch"] * 3          # 5 timed calls a turn: three turns each reach 12


def test_a_worker_process_builds_the_same_workload_as_this_one(compare):
    key = ("attention", 16)
    here = compare.InProcess("npllm", 1).build(key)
    worker = compare.InWorker("npllm", 1)
    try:
        there = worker.build(key)
        assert len(worker.time(key, 3)) == 2
    finally:
        worker.close()
    assert len(here) == len(there) == 4              # out, dq, dk, dv
    for a, b in zip(here, there):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_an_error_in_a_worker_names_the_library(compare):
    worker = compare.InWorker("npllm", 1)
    try:
        with pytest.raises(RuntimeError, match="npllm: KeyError"):
            worker.build(("no_such_row",))
    finally:
        worker.close()


def test_without_pytorch_the_script_says_how_to_install_it(compare, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)   # makes ``import torch`` raise ImportError
    monkeypatch.setattr(sys, "argv", ["compare_torch.py", "--only", "attention"])
    with pytest.raises(SystemExit, match=r'pip install -e "\.\[compare\]"'):
        compare.main()
