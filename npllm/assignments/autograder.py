"""Grade one submission: every part's cases in a child process, judged here (``grade("rnn", "hw3")``).

See :mod:`npllm.assignments.grading` for what is measured and how points are split, and
:mod:`npllm.assignments.sandbox` for how student code is isolated.
"""
from __future__ import annotations

import secrets
import time
from pathlib import Path

from npllm.assignments.catalog import ASSIGNMENTS
from npllm.assignments.grading import Check, CaseResult, GradeReport, PartResult
from npllm.assignments.plans import make_plan
from npllm.assignments.sandbox import DEFAULT_TIMEOUT, run_calls


def grade_part(assignment, number: int, submission, seed: int, timeout: float = DEFAULT_TIMEOUT) -> PartResult:
    """Grade part ``number`` (1-based) of ``assignment`` on ``submission`` (a directory or a file)."""
    part = assignment.parts[number - 1]
    result = PartResult(number, part.name, part.points)
    cases = [(index, False) for index in range(part.n_visible)] + [(index, True) for index in range(part.n_hidden)]
    # One child for all cases of the part: one interpreter start, and one time limit for the part.
    plans, calls, arrays = [], [], {}
    for position, (index, hidden) in enumerate(cases):
        plan = make_plan(assignment, part, number, index, hidden, seed, prefix=f"c{position}.")
        plans.append(plan)
        calls += plan.calls
        arrays.update(plan.arrays)
    child = run_calls(submission, assignment.module, calls, arrays, timeout,
                      assignment.provided_sources(harness=True))
    result.seconds = child.seconds
    if child.error:
        result.error = child.error
    weights = {"values": part.value_points / part.n_hidden, "gradcheck": part.gradcheck_points / part.n_hidden}
    for plan, (index, hidden) in zip(plans, cases):
        points = sum(weights[kind] for kind in plan.kinds) if hidden else 0.0
        case = CaseResult(number, index, hidden, plan.description, round(points, 6))
        case.checks = [Check(kind, False, child.error) for kind in plan.kinds] if child.error else _judge(plan, child)
        for check in case.checks:
            label = check.label or ("gradient check" if check.kind == "gradcheck" else check.kind)
            if hidden:
                worth = weights[check.kind]
                label += f" ({worth:g} pt{'s' if worth != 1 else ''})"
                case.score += worth if check.passed else 0.0
            case.lines.append(f"{label}: {check.message}")
        case.score = round(case.score, 6)
        result.cases.append(case)
    return result


def locate_module(submission, module: str) -> Path | None:
    """The folder to grade: ``submission`` itself when it is a file or holds ``<module>.py``, else the
    shallowest folder below it that does (a zip unpacked into a folder of its own), else None."""
    submission = Path(submission)
    if submission.is_file() or (submission / f"{module}.py").is_file():
        return submission
    matches = sorted(submission.rglob(f"{module}.py"), key=lambda p: (len(p.parts), str(p)))
    return matches[0].parent if matches else None


def _judge(plan, child) -> list:
    """plan.judge(child); results too odd to judge (a shape that breaks a formula, ...) fail the case."""
    try:
        return plan.judge(child)
    except (ValueError, TypeError, IndexError, FloatingPointError) as exc:
        reason = f"results the grader could not judge ({type(exc).__name__}: {exc})"
        return [Check(kind, False, reason) for kind in plan.kinds]


def grade(name: str, submission, parts=None, timeout: float = DEFAULT_TIMEOUT,
          seed: int | None = None) -> GradeReport:
    """Grade ``submission`` (a directory holding the student's module, or the module file itself) for
    assignment ``name``; ``parts``: part numbers (default all); ``seed``: the hidden cases' seed
    (default: a fresh one, recorded in the report)."""
    if name not in ASSIGNMENTS:
        raise KeyError(f"unknown assignment {name!r}; choose one of {', '.join(ASSIGNMENTS)}")
    assignment = ASSIGNMENTS[name]
    seed = secrets.randbits(32) if seed is None else int(seed)
    numbers = list(parts or range(1, len(assignment.parts) + 1))
    for number in numbers:
        if not 1 <= number <= len(assignment.parts):
            raise ValueError(f"part must be between 1 and {len(assignment.parts)}, got {number}")
    if not Path(submission).exists():
        raise FileNotFoundError(f"{submission} does not exist")
    submission = locate_module(submission, assignment.module) or submission   # none: each part says so
    started = time.perf_counter()
    results = [grade_part(assignment, number, submission, seed, timeout) for number in numbers]
    return GradeReport(name, seed, results, round(time.perf_counter() - started, 3))
