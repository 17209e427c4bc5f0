"""``npllm assignment list | build NAME --out DIR [--solution] | grade SUBMISSIONS_DIR --assignment NAME
--out grades.csv [--timeout S]``: classroom assignments for teachers."""
from __future__ import annotations

import sys

from npllm.errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("assignment", help="classroom assignments: list, or build starter code + grader")
    asub = p.add_subparsers(dest="assignment_command", required=True, parser_class=type(p))
    asub.add_parser("list", help="show the assignments that ship with npllm")
    b = asub.add_parser("build", help="write student starter code and its grading tests")
    b.add_argument("name")
    b.add_argument("--out", required=True, help="output directory")
    b.add_argument("--solution", action="store_true", help="write the solution in place (a teacher's copy)")
    g = asub.add_parser("grade", help="grade a folder of submissions (one subfolder or .py file per student)")
    g.add_argument("submissions", metavar="SUBMISSIONS_DIR")
    g.add_argument("--assignment", required=True, help="the assignment's name (see npllm assignment list)")
    g.add_argument("--out", required=True, help="the CSV to write (one row per student); each student's "
                                                "results.json goes beside it, in <stem>_results/")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds each part may run (default 60)")


def run(args) -> int:
    """List the assignments, or build one."""
    from npllm.assignments import ASSIGNMENTS, build, list_text
    if args.assignment_command == "list":
        print(list_text())
        return 0
    if args.assignment_command == "grade":
        return _grade(args)
    if args.name not in ASSIGNMENTS:
        raise UsageError("NAME", f"unknown assignment {args.name!r}; choose one of {', '.join(ASSIGNMENTS)} "
                                 f"(see npllm assignment list)")
    try:
        written = build(args.name, args.out, solution=args.solution)
    except (FileExistsError, NotADirectoryError) as exc:
        raise UsageError("--out", str(exc)) from None
    except OSError as exc:
        raise UsageError("--out", f"cannot write {args.out}: {exc.strerror or exc}") from None
    except ValueError as exc:      # e.g. an existing file that is not UTF-8
        raise UsageError("--out", str(exc)) from None
    what = "solution" if args.solution else "starter code"
    print(f"wrote assignment {args.name!r} ({what}) to {args.out}:", file=sys.stderr)
    for path in written:
        print(f"  {path}", file=sys.stderr)
    print(f"students: edit {ASSIGNMENTS[args.name].module}.py, open {args.name}.ipynb, run python grade.py",
          file=sys.stderr)
    return 0


def _grade(args) -> int:
    """Grade every submission in SUBMISSIONS_DIR; one CSV row per student."""
    from pathlib import Path

    from npllm.assignments import ASSIGNMENTS, grade_submissions
    if args.assignment not in ASSIGNMENTS:
        raise UsageError("--assignment", f"unknown assignment {args.assignment!r}; choose one of "
                                         f"{', '.join(ASSIGNMENTS)}")
    if not Path(args.submissions).is_dir():
        raise UsageError("SUBMISSIONS_DIR", f"{args.submissions} is not a directory of submissions")
    if not args.timeout > 0:
        raise UsageError("--timeout", f"must be > 0 seconds, got {args.timeout:g}")
    if Path(args.out).is_dir():
        raise UsageError("--out", f"{args.out} is a directory; name the CSV file to write")
    try:
        rows = grade_submissions(args.submissions, args.assignment, args.out, timeout=args.timeout)
    except OSError as exc:
        raise UsageError("--out", f"cannot write {args.out}: {exc.strerror or exc}") from None
    for row in rows:
        print(f"{row['student']:<24}{row['total']:>6}/{row['max']}  {row['status']}", file=sys.stderr)
    print(f"graded {len(rows)} submissions: {args.out}", file=sys.stderr)
    return 0
