"""What a grading run writes: the text report, Gradescope's results.json, and ``grade.py``'s command line.

Gradescope's autograder reads ``results.json`` (https://gradescope-autograders.readthedocs.io, "Autograder
Specifications"); :func:`gradescope_results` writes exactly its fields: ``score``, ``max_score``,
``execution_time``, ``output``, ``visibility``, ``stdout_visibility`` and ``tests`` — one test per case
of each part, with ``name``, ``number``, ``score``, ``max_score``, ``status``, ``output`` and
``visibility``.  Hidden cases are ``"after_published"``: students see them once grades are released.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from npllm.assignments.autograder import grade
from npllm.assignments.grading import GradeReport
from npllm.assignments.sandbox import DEFAULT_TIMEOUT


def gradescope_results(report: GradeReport) -> dict:
    """The results.json dictionary of one graded submission."""
    tests = []
    for part in report.parts:
        for position, case in enumerate(part.cases, start=1):
            output = part.error or "\n".join(case.lines)
            tests.append({"name": f"part {part.number} {part.name}: {case.name}",
                          "number": f"{part.number}.{position}",
                          "score": case.score, "max_score": case.points,
                          "status": "passed" if case.passed and not part.error else "failed",
                          "output": f"{case.description}\n{output}",
                          "visibility": "after_published" if case.hidden else "visible"})
    return {"score": report.score, "max_score": report.max_score, "execution_time": report.execution_time,
            "output": f"npllm autograder, assignment {report.assignment!r}: {report.score:g}/{report.max_score:g}. "
                      f"Visible cases are the notebook's (worth no points); hidden cases were drawn with "
                      f"seed {report.seed}.",
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}


def write_results(report: GradeReport, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(gradescope_results(report), indent=1) + "\n", encoding="utf-8")


def check_part(name: str, number: int, directory) -> None:
    """For ``pytest grade.py``: raise AssertionError with the part's report unless it earns full marks."""
    part = grade(name, directory, [number]).parts[0]
    assert part.score == part.points, "\n" + str(part)


def main(name: str, directory, argv=None) -> int:
    """``python grade.py [--submission PATH] [--part N] [--json FILE] [--timeout S] [--seed N]``.

    Prints a score per part and the total; exit status 0 whenever grading ran (whatever the score),
    2 when the grader itself could not run (a bad flag, npllm missing pieces, an unwritable --json).
    """
    parser = argparse.ArgumentParser(description=f"Grade the assignment {name!r} in {directory}.")
    parser.add_argument("--submission", help="grade this folder or .py file instead of this folder's module "
                                             "(Gradescope: /autograder/submission)")
    parser.add_argument("--part", type=int, action="append", help="grade only this part (repeatable)")
    parser.add_argument("--json", help="also write Gradescope's results.json to this file")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds each part may run before it is stopped (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--seed", type=int, help="the hidden cases' seed (default: a fresh one)")
    args = parser.parse_args(argv)
    try:
        if args.timeout <= 0:
            raise ValueError(f"--timeout must be > 0, got {args.timeout:g}")
        report = grade(name, args.submission or directory, args.part, args.timeout, args.seed)
        print(f"npllm autograder: assignment {name!r}\n")
        print(report)
        if args.json:
            write_results(report, args.json)
    except (KeyError, ValueError, OSError) as exc:
        print(f"grade.py: the grader could not run: {exc}", file=sys.stderr)
        return 2
    return 0
