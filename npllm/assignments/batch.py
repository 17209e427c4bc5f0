"""Grade a class: every submission in a folder, one CSV row per student and each student's results.json.

``grade_submissions("submissions", "rnn", "grades.csv")`` reads ``submissions/`` as one entry per
student: a subfolder (holding the module, e.g. ``alice/rnn_layers.py``, at any depth) or a single
``.py`` file (``bob.py``, graded as ``rnn_layers.py``).  Each is graded exactly as ``grade.py`` grades
(:func:`npllm.assignments.grading.grade`: child processes, scratch copies, per-part time limits), with
its own fresh seed for the hidden cases.  It writes

    grades.csv                              student, points per part, total, max, status, seed
    grades_results/<student>/results.json   Gradescope's format (npllm.assignments.report)

A submission that cannot be graded (no module file, an unreadable file) gets a row with 0 points and
a status saying why; the batch always finishes with one row per student.
"""
from __future__ import annotations

import csv
from pathlib import Path

from npllm.assignments.autograder import grade, locate_module
from npllm.assignments.catalog import ASSIGNMENTS
from npllm.assignments.grading import GradeReport
from npllm.assignments.report import write_results
from npllm.assignments.sandbox import DEFAULT_TIMEOUT


def find_submissions(submissions_dir, module: str) -> dict:
    """{student: path to grade}: a folder holding ``<module>.py`` or a single ``.py`` file per student."""
    root = Path(submissions_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory of submissions")
    found = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_dir():
            found[entry.name] = locate_module(entry, module)
        elif entry.suffix == ".py":
            found[entry.stem] = entry
    return found


def _status(report: GradeReport) -> str:
    problems = [f"part {p.number}: {p.error}" for p in report.parts if p.error]
    return "graded" if not problems else "graded; " + "; ".join(problems)


def grade_submissions(submissions_dir, assignment: str, out_csv, timeout: float = DEFAULT_TIMEOUT,
                      seed: int | None = None) -> list:
    """Grade every submission in ``submissions_dir`` for ``assignment``; write ``out_csv`` and each
    student's results.json (in ``<csv stem>_results/<student>/`` beside the CSV); return the rows."""
    if assignment not in ASSIGNMENTS:
        raise KeyError(f"unknown assignment {assignment!r}; choose one of {', '.join(ASSIGNMENTS)}")
    spec = ASSIGNMENTS[assignment]
    submissions = find_submissions(submissions_dir, spec.module)
    out_csv = Path(out_csv)
    results_dir = out_csv.parent / f"{out_csv.stem}_results"
    part_columns = [f"part {n} {part.name}" for n, part in enumerate(spec.parts, start=1)]
    header = ["student", *part_columns, "total", "max", "status", "seed"]
    rows = []
    for student, path in submissions.items():
        if path is None:
            rows.append(dict(zip(header, [student, *[0] * len(part_columns), 0, spec.points,
                                          f"missing {spec.module}.py", ""])))
            continue
        try:
            report = grade(assignment, path, timeout=timeout, seed=seed)
        except OSError as exc:     # an unreadable submission (permissions, a broken file): say so, go on
            rows.append(dict(zip(header, [student, *[0] * len(part_columns), 0, spec.points,
                                          f"could not be graded: {exc}", ""])))
            continue
        write_results(report, results_dir / student / "results.json")
        rows.append(dict(zip(header, [student, *[f"{p.score:g}" for p in report.parts], f"{report.score:g}",
                                      f"{report.max_score:g}", _status(report), report.seed])))
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return rows
