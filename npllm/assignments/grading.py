"""The autograder behind a built assignment's ``grade.py``: score a student's functions part by part.

A built assignment directory holds the student's module (``rnn_layers.py``), ``expected.json`` (for
every part: seeded inputs, upstream gradients and the reference's results, written at build time) and
``grade.py``, which makes a :class:`Grader` for its own directory.  For each part:

* *values*: run the student's function on every input and compare each result with the reference
  (``numpy.allclose`` with ``RTOL``/``ATOL``: float64 inputs, so only rounding may differ);
* *gradient check* (backward parts): ``npllm.gradcheck.check_op`` on the student's own forward/backward
  pair; a relative error above ``GRADCHECK_TOL`` fails (a correct float64 backward gives ~1e-10).

A check earns its points only if every input passes.  Any exception is caught and reported in one
line — ``NotImplementedError: <the teacher's hint>`` for code not yet written — so one broken part never
hides the score of the others.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RTOL, ATOL = 1e-6, 1e-9
GRADCHECK_TOL = 1e-6
# How the notebook prints arrays, so a student's output reads like the expected values beside it.
PRINT_OPTIONS = {"precision": 6, "suppress": True, "floatmode": "fixed", "linewidth": 100}
EXPECTED_FILE = "expected.json"


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
    """One graded input of a part: positional inputs, options, upstream gradients, expected results."""
    args: list
    kwargs: dict
    upstream: list
    expected: list


def load_expected(directory=".") -> dict:
    """The parsed expected.json of a built assignment directory."""
    path = Path(directory) / EXPECTED_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run this from the assignment's directory")
    return json.loads(path.read_text(encoding="utf-8"))


def sample(part_number: int, directory=".") -> Sample:
    """The first graded input of part ``part_number`` (what the notebook runs), from expected.json."""
    parts = load_expected(directory)["parts"]
    if not 1 <= part_number <= len(parts):
        raise ValueError(f"part_number must be between 1 and {len(parts)}, got {part_number}")
    case = parts[part_number - 1]["cases"][0]
    return Sample(decode(case["args"]), decode(case["kwargs"]), decode(case.get("upstream", [])),
                  decode(case["expected"]))


class CheckFailed(Exception):
    """A check's readable failure message."""


@dataclass
class PartResult:
    """The outcome of one part: score out of points, and one line per check."""
    number: int
    name: str
    points: int
    score: int = 0
    lines: list = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join([f"part {self.number} {self.name}: {self.score}/{self.points}"] +
                         [f"    {line}" for line in self.lines])


def _as_results(value, count: int, what: str):
    """value as a tuple of ``count`` results, or a CheckFailed saying what came back instead."""
    if count == 1 and not isinstance(value, tuple):
        value = (value,)
    if not isinstance(value, tuple):
        raise CheckFailed(f"must return {what}, got a single {type(value).__name__}")
    if len(value) != count:
        raise CheckFailed(f"must return {count} values ({what}), got {len(value)}")
    return value


def _parameter_name(function, index: int) -> str:
    """The name of positional parameter ``index`` of ``function`` (or "number i+1")."""
    try:
        return list(inspect.signature(function).parameters)[index]
    except (TypeError, ValueError, IndexError):
        return f"number {index + 1}"


def compare(name: str, actual, expected: np.ndarray) -> float:
    """Raise CheckFailed unless ``actual`` matches ``expected``; return the largest difference."""
    if not isinstance(actual, np.ndarray):
        raise CheckFailed(f"{name} must be a numpy array, got {type(actual).__name__}")
    if actual.shape != expected.shape:
        raise CheckFailed(f"{name} has shape {actual.shape}, expected {expected.shape}")
    if not np.all(np.isfinite(actual)):
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(actual))[0])
        raise CheckFailed(f"{name} contains {actual[where]} at index {where} (expected {expected[where]:.6g})")
    difference = np.abs(actual.astype(np.float64) - expected)
    if not np.allclose(actual, expected, rtol=RTOL, atol=ATOL):
        where = tuple(int(i) for i in np.unravel_index(np.argmax(difference), difference.shape))
        raise CheckFailed(f"{name} differs from the expected values: at index {where} expected "
                          f"{expected[where]:.6g}, got {actual[where]:.6g}")
    return float(difference.max()) if difference.size else 0.0


class Grader:
    """Grades the student module of one built assignment directory against its expected.json."""

    def __init__(self, directory):
        self.directory = Path(directory).resolve()
        self.spec = load_expected(self.directory)
        self.module_path = self.directory / f"{self.spec['module']}.py"
        self._module = None

    # ------------------------------------------------------------------ helpers
    def _load_module(self):
        """Import the student's module from its file (once per grader)."""
        if self._module is None:
            if str(self.directory) not in sys.path:
                sys.path.insert(0, str(self.directory))   # the student's module may import its neighbours
            spec = importlib.util.spec_from_file_location(self.spec["module"], self.module_path)
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except FileNotFoundError:
                raise CheckFailed(f"{self.module_path.name} not found in {self.directory}") from None
            except Exception as exc:
                raise CheckFailed(f"cannot import {self.module_path.name}: {self._describe(exc)}") from None
            self._module = module
        return self._module

    def _function(self, name: str):
        function = getattr(self._load_module(), name, None)
        if not callable(function):
            raise CheckFailed(f"{self.module_path.name} defines no function {name}")
        return function

    def _describe(self, exc: BaseException, function: str | None = None) -> str:
        """One line for an exception: its type and message, and where in the student's file it happened
        (for a NotImplementedError only when it comes from another function than ``function``)."""
        if isinstance(exc, SyntaxError) and exc.lineno:   # its str() already ends with "(file, line n)"
            return f"{type(exc).__name__}: {exc.msg} ({Path(exc.filename or '').name}, line {exc.lineno})"
        text = f"{type(exc).__name__}: {exc}"
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == self.module_path]
        if not frames:
            return text
        if isinstance(exc, NotImplementedError):
            return text if frames[-1].name == function else f"{text} (in {frames[-1].name})"
        return f"{text} ({self.module_path.name}, line {frames[-1].lineno}, in {frames[-1].name})"

    def _run_forward(self, part: dict, function: str, case: dict):
        """Call the student's forward on a case; return (results without the cache, cache)."""
        args, kwargs = decode(case["args"]), decode(case["kwargs"])
        before = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        names = part["forward_outputs"]
        results = _as_results(self._function(function)(*args, **kwargs), len(names) + 1,
                              ", ".join(names + ["cache"]))
        for index, (arg, original) in enumerate(zip(args, before)):
            if isinstance(arg, np.ndarray) and not np.array_equal(arg, original):
                raise CheckFailed(f"{function} modified its input {_parameter_name(self._function(function), index)} "
                                  f"in place (compute new arrays instead)")
        return results[:-1], results[-1]

    def _cache_for_backward(self, part: dict, case: dict):
        """The cache of the student's forward, for a backward part.

        If the forward fails, the backward cannot be run; but when the backward is still the starter's
        ``raise NotImplementedError(hint)``, its own hint is the more useful message, so we ask it first.
        """
        try:
            return self._run_forward(part, part["forward"], case)[1]
        except Exception as forward_error:
            try:
                self._function(part["function"])(*decode(case["upstream"]), None)
            except NotImplementedError as exc:
                raise CheckFailed(self._describe(exc, part["function"])) from None
            except Exception:
                pass
            reason = forward_error if isinstance(forward_error, CheckFailed) else self._describe(forward_error)
            raise CheckFailed(f"needs a working {part['forward']} first: {reason}") from None

    # ------------------------------------------------------------------ checks
    def _check_values(self, part: dict) -> str:
        worst = 0.0
        for case in part["cases"]:
            expected = decode(case["expected"])
            if part["kind"] == "forward":
                results, _ = self._run_forward(part, part["function"], case)
            else:
                cache = self._cache_for_backward(part, case)
                names = part["outputs"]
                results = _as_results(self._function(part["function"])(*decode(case["upstream"]), cache),
                                      len(names), ", ".join(names))
            for name, actual, wanted in zip(part["outputs"], results, expected):
                worst = max(worst, compare(name, actual, wanted))
        return f"ok ({len(part['cases'])} inputs, largest difference {worst:.1e})"

    def _check_gradients(self, part: dict) -> str:
        from npllm.gradcheck import check_op

        forward, backward = self._function(part["forward"]), self._function(part["function"])
        worst = 0.0
        names = part["outputs"]
        for case in part["cases"]:
            # Run the pair once first: a clear message if the forward is broken, and no gradient may be
            # missing (check_op skips a None gradient, which would let an unwritten one pass).
            grads = _as_results(backward(*decode(case["upstream"]), self._cache_for_backward(part, case)),
                                len(names), ", ".join(names))
            for name, grad in zip(names, grads):
                if not isinstance(grad, np.ndarray):
                    raise CheckFailed(f"{name} must be a numpy array, got {type(grad).__name__}")
            report = check_op(forward, backward, decode(case["args"]), decode(case["kwargs"]),
                              tol=GRADCHECK_TOL, time_axis=part["time_axis"], op=part["function"])
            if not report.passed:
                failing = [f"d{r.name} {r.relative_error:.1e}" for r in report.results if not r.passed]
                message = (f"relative error {', '.join(failing) or f'{report.max_error:.1e}'} "
                           f"(must be <= {GRADCHECK_TOL:g})")
                if report.first_bad_step is not None:
                    message += f"; the first output time step that disagrees is t={report.first_bad_step}"
                raise CheckFailed(message)
            worst = max(worst, report.max_error)
        return f"ok (largest relative error {worst:.1e})"

    # ------------------------------------------------------------------ public
    def grade_part(self, number: int) -> PartResult:
        """Run every check of part ``number`` (1-based)."""
        part = self.spec["parts"][number - 1]
        result = PartResult(number, part["name"], part["value_points"] + part["gradcheck_points"])
        checks = [("gradient check", part["gradcheck_points"], self._check_gradients),
                  ("values", part["value_points"], self._check_values)]
        for label, points, check in checks:
            if not points:
                continue
            heading = f"{label} ({points} pt{'s' if points > 1 else ''}):"
            try:
                outcome = check(part)
            except CheckFailed as failure:
                result.lines.append(f"{heading} {failure}")
            except Exception as exc:   # the student's code may raise anything: report it, grade on
                result.lines.append(f"{heading} {self._describe(exc, part['function'])}")
            else:
                result.score += points
                result.lines.append(f"{heading} {outcome}")
        return result

    def grade(self, parts=None) -> list:
        """PartResults for the given part numbers (default: all)."""
        numbers = parts or range(1, len(self.spec["parts"]) + 1)
        return [self.grade_part(number) for number in numbers]

    def check_part(self, number: int) -> None:
        """For pytest: raise AssertionError with the part's report unless it earns full marks."""
        result = self.grade_part(number)
        assert result.score == result.points, "\n" + str(result)

    def main(self, argv=None) -> int:
        """``python grade.py [--part N] [--json FILE]``: print a score per part and the total."""
        parser = argparse.ArgumentParser(description=f"Grade {self.module_path.name} "
                                                     f"(assignment {self.spec['assignment']!r}).")
        parser.add_argument("--part", type=int, action="append", choices=range(1, len(self.spec["parts"]) + 1),
                            help="grade only this part (repeatable)")
        parser.add_argument("--json", help="also write Gradescope-style results to this file")
        args = parser.parse_args(argv)
        print(f"npllm autograder: assignment {self.spec['assignment']!r}, grading {self.module_path.name}\n")
        results = self.grade(args.part)
        for result in results:
            print(result)
        score, total = sum(r.score for r in results), sum(r.points for r in results)
        print(f"\ntotal {score}/{total}")
        if args.json:
            tests = [{"name": f"part {r.number} {r.name}", "score": r.score, "max_score": r.points,
                      "output": "\n".join(r.lines)} for r in results]
            Path(args.json).write_text(json.dumps({"score": score, "max_score": total, "tests": tests}, indent=1))
        return 0 if score == total else 1
