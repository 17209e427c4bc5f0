"""What the autograder measures and reports: cases, checks, comparisons and the results of a run.

For each part of an assignment (:mod:`npllm.assignments.catalog`) the grader draws test cases:

* *visible* cases, seeded at build time — the notebook shows their inputs and expected outputs, so a
  student can compare; they are reported but worth no points;
* *hidden* cases, drawn now from a fresh seed (recorded in the results), whose expected values the
  reference (``npllm.layers``) computes now, in the grader's process: no shipped file holds them, and a
  function that ignores its input and returns the visible expected values fails them.

All cases of a part run in one child process (:func:`npllm.assignments.sandbox.run_calls`) that
hands back plain arrays; every comparison is made in the grader's process (:mod:`npllm.assignments.plans`
says what each case calls and how it is judged, :mod:`npllm.assignments.autograder` runs a grading).
A hidden case earns, each on its own:

* *values*: the student's results equal the reference's (``numpy.allclose`` with ``RTOL``/``ATOL``:
  float64, so only rounding may differ);
* *gradient check* (backward parts): the student's backward agrees with central differences of the
  student's own forward, along a random direction per input (for sequence ops, also per output time
  step, locating a BPTT error).  It counts only when that forward's outputs are right — a forward and
  backward that both return zeros agree with each other too.

A part's points are split evenly over its hidden cases; a part whose child times out, exits or
crashes scores 0 with one line saying so, and the other parts are graded as usual.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RTOL, ATOL = 1e-6, 1e-9
GRADCHECK_TOL = 1e-6
GRADCHECK_EPS = 1e-6
SEED = 2017   # with the part and case numbers, seeds the visible cases (the notebook's inputs)
# How the notebook prints arrays, so a student's output reads like the expected values beside it.
PRINT_OPTIONS = {"precision": 6, "suppress": True, "floatmode": "fixed", "linewidth": 100}
VISIBLE_FILE = "visible_cases.json"


def encode(value):
    """JSON-able form of an input/result: arrays become {dtype, shape, data}; floats keep every digit."""
    if isinstance(value, np.ndarray):
        return {"dtype": str(value.dtype), "shape": list(value.shape), "data": value.reshape(-1).tolist()}
    if isinstance(value, dict):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode(value):
    """The inverse of :func:`encode`."""
    if isinstance(value, dict):
        if set(value) == {"dtype", "shape", "data"}:
            return np.array(value["data"], dtype=value["dtype"]).reshape(value["shape"])
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


@dataclass
class Sample:
    """A visible case of a part: positional inputs, options, upstream gradients, expected results."""
    args: list
    kwargs: dict
    upstream: list
    expected: list


def sample(part_number: int, directory=".") -> Sample:
    """The visible case of part ``part_number`` (what the notebook runs), from visible_cases.json."""
    path = Path(directory) / VISIBLE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run this from the assignment's directory")
    parts = json.loads(path.read_text(encoding="utf-8"))["parts"]
    if not 1 <= part_number <= len(parts):
        raise ValueError(f"part_number must be between 1 and {len(parts)}, got {part_number}")
    case = parts[part_number - 1]["cases"][0]
    return Sample(decode(case["args"]), decode(case["kwargs"]), decode(case.get("upstream", [])),
                  decode(case["expected"]))


class CheckFailed(Exception):
    """A check's readable failure message."""


def compare(name: str, actual, expected: np.ndarray) -> float:
    """Raise CheckFailed unless ``actual`` matches ``expected``; return the largest difference."""
    if actual is None:
        raise CheckFailed(f"{name} is missing")
    if actual.shape != expected.shape:
        raise CheckFailed(f"{name} has shape {actual.shape}, expected {expected.shape}")
    if not np.all(np.isfinite(actual)):
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(actual))[0])
        raise CheckFailed(f"{name} contains {actual[where]} at index {where} (expected {expected[where]:.6g})")
    difference = np.abs(actual.astype(np.float64) - expected)
    if not np.allclose(actual, expected, rtol=RTOL, atol=ATOL):
        where = tuple(int(i) for i in np.unravel_index(np.argmax(difference), difference.shape))
        raise CheckFailed(f"{name} differs from the expected values: at index {where} expected "
                          f"{expected[where]:.6g}, got {actual[where]:.6g} (largest difference "
                          f"{difference.max():.1e})")
    return float(difference.max()) if difference.size else 0.0


def compare_all(names, actual: list, expected: list) -> str:
    """compare() every result; the success message."""
    if len(actual) != len(expected):
        raise CheckFailed(f"returned {len(actual)} results, expected {len(expected)} ({', '.join(names)})")
    worst = max([compare(n, a, e) for n, a, e in zip(names, actual, expected)] + [0.0])
    return f"ok (largest difference {worst:.1e})"


# ----------------------------------------------------------------------------------- results
@dataclass
class Check:
    """One scored check of one case: ``kind`` ("values" or "gradcheck") picks its points; ``message``
    says why; ``label`` names it in reports (default: the kind)."""
    kind: str
    passed: bool
    message: str
    label: str = ""


@dataclass
class CaseResult:
    """One test case of a part: its checks, the points it is worth and the points it earned."""
    part: int
    case: int
    hidden: bool
    description: str
    points: float
    score: float = 0.0
    checks: list = field(default_factory=list)
    lines: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    @property
    def name(self) -> str:
        return f"{'hidden' if self.hidden else 'visible'} case {self.case + 1}"


@dataclass
class PartResult:
    """The outcome of one part: its cases, and a line for the part as a whole when its child failed."""
    number: int
    name: str
    points: float
    cases: list = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return round(sum(case.score for case in self.cases), 6)

    @property
    def lines(self) -> list:
        """One line per case: its score (visible cases: passed or not), and why a check failed."""
        lines = [self.error] if self.error else []
        for case in self.cases:
            if self.error:
                continue
            scored = f"{case.score:g}/{case.points:g}" if case.hidden else ("passed" if case.passed else "failed")
            detail = "; ".join(case.lines)
            where = "" if case.passed else f" on {case.description}"
            lines.append(f"{case.name} {scored}{where} — {detail}")
        return lines

    def __str__(self) -> str:
        return "\n".join([f"part {self.number} {self.name}: {self.score:g}/{self.points:g}"] +
                         [f"    {line}" for line in self.lines])


@dataclass
class GradeReport:
    """Everything one grading run found: the parts, the hidden cases' seed, the time it took."""
    assignment: str
    seed: int
    parts: list
    execution_time: float = 0.0

    @property
    def score(self) -> float:
        return round(sum(p.score for p in self.parts), 6)

    @property
    def max_score(self) -> float:
        return round(sum(p.points for p in self.parts), 6)

    def __str__(self) -> str:
        body = "\n".join(str(part) for part in self.parts)
        return f"{body}\n\ntotal {self.score:g}/{self.max_score:g}   (hidden cases drawn with seed {self.seed})"


# ----------------------------------------------------------------------------------- grading
def case_inputs(part, part_number: int, case: int, hidden: bool, seed: int):
    """(rng, args, kwargs) of a case; the rng then draws whatever else the case needs."""
    rng = np.random.default_rng([seed if hidden else SEED, part_number, case, int(hidden)])
    args, kwargs = part.make_inputs(rng, case)
    return rng, args, kwargs
