"""Classroom assignments with autograders: ``npllm assignment list | build NAME --out DIR``.

A teacher writes the solution once, marking the parts students write with ``# BEGIN SOLUTION`` /
``# END SOLUTION`` (:mod:`npllm.assignments.markers`); :func:`build` turns it into starter code, a
step-through notebook whose expected outputs come from npllm's reference, a README, and ``grade.py``,
which gradient-checks the student's functions and prints a score per part
(:mod:`npllm.assignments.grading`).  The shipped assignments are listed in
:mod:`npllm.assignments.catalog`: ``rnn``, ``lstm`` and ``attention``.
"""
from __future__ import annotations

import sys

from npllm.assignments.builder import build, render
from npllm.assignments.catalog import ASSIGNMENTS
from npllm.assignments.markers import MarkerError, make_starter, strip_markers

__all__ = ["ASSIGNMENTS", "build", "render", "make_starter", "strip_markers", "MarkerError", "list_text"]


def list_text() -> str:
    """The table ``npllm assignment list`` prints."""
    lines = [f"{'name':<11}{'points':>6}  {'title'}"]
    for assignment in ASSIGNMENTS.values():
        lines.append(f"{assignment.name:<11}{assignment.points:>6}  {assignment.title}")
        functions = list(dict.fromkeys(part.function for part in assignment.parts))
        lines.append(f"{'':<19}functions: {', '.join(functions)}")
    lines.append("\nbuild one with: npllm assignment build NAME --out DIR")
    return "\n".join(lines)
