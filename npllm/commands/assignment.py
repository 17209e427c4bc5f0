"""``npllm assignment list | build NAME --out DIR [--solution]``: classroom assignments for teachers."""
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


def run(args) -> int:
    """List the assignments, or build one."""
    from npllm.assignments import ASSIGNMENTS, build, list_text
    if args.assignment_command == "list":
        print(list_text())
        return 0
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
