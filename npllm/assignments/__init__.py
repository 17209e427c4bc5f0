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

__all__ = ["ASSIGNMENTS", "build", "render", "make_starter", "strip_markers", "MarkerError", "list_text",
           "run_from_args"]


def list_text() -> str:
    """The table ``npllm assignment list`` prints."""
    lines = [f"{'name':<11}{'points':>6}  {'title'}"]
    for assignment in ASSIGNMENTS.values():
        lines.append(f"{assignment.name:<11}{assignment.points:>6}  {assignment.title}")
        functions = list(dict.fromkeys(part.function for part in assignment.parts))
        lines.append(f"{'':<19}functions: {', '.join(functions)}")
    lines.append("\nbuild one with: npllm assignment build NAME --out DIR")
    return "\n".join(lines)


def run_from_args(args) -> int:
    """``npllm assignment list`` and ``npllm assignment build NAME --out DIR [--solution]``."""
    from npllm.errors import UsageError

    if args.assignment_command == "list":
        print(list_text())
        return 0
    if args.name not in ASSIGNMENTS:
        raise UsageError("NAME", f"unknown assignment {args.name!r}; choose one of {', '.join(ASSIGNMENTS)} "
                                 f"(see npllm assignment list)")
    solution = bool(getattr(args, "solution", False))   # a teacher's copy with the solutions in place
    try:
        written = build(args.name, args.out, solution=solution)
    except (FileExistsError, NotADirectoryError) as exc:
        raise UsageError("--out", str(exc)) from None
    except OSError as exc:
        raise UsageError("--out", f"cannot write {args.out}: {exc.strerror or exc}") from None
    what = "solution" if solution else "starter code"
    print(f"wrote assignment {args.name!r} ({what}) to {args.out}:", file=sys.stderr)
    for path in written:
        print(f"  {path}", file=sys.stderr)
    print(f"students: edit {ASSIGNMENTS[args.name].module}.py, open {args.name}.ipynb, run python grade.py",
          file=sys.stderr)
    return 0
