"""Classroom assignments with an isolated autograder: ``npllm assignment list | build | grade``.

A teacher writes the solution once, marking the parts students write with ``# BEGIN SOLUTION`` /
``# END SOLUTION`` (:mod:`npllm.assignments.markers`); :func:`build` turns it into starter code, a
notebook with nbgrader metadata, a README and ``grade.py`` (:mod:`npllm.assignments.builder`).
:func:`grade` scores one submission (:mod:`npllm.assignments.grading`): student code runs only in
child processes (:mod:`npllm.assignments.sandbox`), on visible cases and on hidden cases drawn at
grading time; :func:`grade_submissions` grades a class into a CSV and Gradescope results files
(:mod:`npllm.assignments.batch`).  The shipped assignments are listed in
:mod:`npllm.assignments.catalog`: ``rnn``, ``lstm``, ``attention``, ``gpt``, ``llama`` and
``gradcheck``.
"""
from __future__ import annotations

from npllm.assignments.autograder import grade
from npllm.assignments.batch import grade_submissions
from npllm.assignments.builder import build, render
from npllm.assignments.catalog import ASSIGNMENTS
from npllm.assignments.markers import MarkerError, make_starter, strip_markers

__all__ = ["ASSIGNMENTS", "build", "render", "grade", "grade_submissions", "make_starter", "strip_markers",
           "MarkerError", "list_text"]


def list_text() -> str:
    """The table ``npllm assignment list`` prints."""
    lines = [f"{'name':<11}{'points':>6}  {'title'}"]
    for assignment in ASSIGNMENTS.values():
        lines.append(f"{assignment.name:<11}{assignment.points:>6}  {assignment.title}")
        functions = list(dict.fromkeys(part.function for part in assignment.parts))
        lines.append(f"{'':<19}functions: {', '.join(functions)}")
    lines.append("\nbuild one with: npllm assignment build NAME --out DIR\n"
                 "grade a class with: npllm assignment grade SUBMISSIONS_DIR --assignment NAME --out grades.csv")
    return "\n".join(lines)
