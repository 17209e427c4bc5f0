"""The step-through notebook of a built assignment, with nbgrader-compatible cell metadata.

Per part: a markdown cell (the task, the visible case's input and its expected output), a cell that
runs the student's function on the visible case, for a backward part a gradient-check cell, and a
locked, graded test cell (``check_part``: the isolated grader on that part, hidden cases included).
Every cell carries ``metadata.nbgrader`` (schema 3: ``grade_id``, ``grade``, ``solution``, ``locked``,
``task``, and ``points`` on graded cells), so the notebook can go through nbgrader as it is; the
student's answers live in the module file, so the only solution cell is the closing notes cell.
"""
from __future__ import annotations

import inspect
import json

import numpy as np

from npllm.assignments.grading import GRADCHECK_TOL, PRINT_OPTIONS, VISIBLE_FILE, decode


def _format(name: str, array: np.ndarray) -> str:
    with np.printoptions(**PRINT_OPTIONS):
        return f"{name} =\n{array}"


def describe_inputs(assignment, part: dict) -> str:
    """'x (2, 3), h_prev (2, 4), ...; options: causal=True, mask bool (2, 1, 4, 4)' for the visible case."""
    case = part["cases"][0]
    forward = assignment.reference[part["forward"] or part["function"]]
    names = list(inspect.signature(forward).parameters)
    shapes = [f"{name} {tuple(arg['shape'])}" if isinstance(arg, dict) else f"{name}={arg!r}"
              for name, arg in zip(names, case["args"])]
    options = [f"{key} {value['dtype']} {tuple(value['shape'])}" if isinstance(value, dict) else f"{key}={value}"
               for key, value in case["kwargs"].items()]
    text = ", ".join(shapes)
    if part["kind"] == "backward":
        text += "; upstream " + ", ".join(f"d{name} {tuple(u['shape'])}"
                                          for name, u in zip(part["forward_outputs"], case["upstream"]))
    return text + (f"; options: {', '.join(options)}" if options else "")


def expected_block(part: dict) -> str:
    arrays = decode(part["cases"][0]["expected"])
    return "```\n" + "\n".join(_format(name, array) for name, array in zip(part["outputs"], arrays)) + "\n```"


def _points(part: dict) -> int:
    return part["value_points"] + part["gradcheck_points"]


def _part_code(module: str, part: dict) -> str:
    """The notebook cell that runs a part's function on its visible case and prints the results."""
    outputs = ", ".join(part["outputs"])
    forward = (part["forward"] or "").rpartition(".")[2]
    owner = "provided" if part["forward"] and part["forward"].startswith("provided:") else module
    if owner == "provided":
        owner = part["forward"].partition(":")[2].rpartition(".")[0]
    lines = [f"s = sample({part['number']})   # part {part['number']}'s visible case, from {VISIBLE_FILE}"]
    if part["kind"] == "forward":
        results = f"{outputs}, cache" if part["returns_cache"] else outputs
        lines.append(f"{results} = {module}.{part['function']}(*s.args, **s.kwargs)")
    else:
        # One gradient comes back as the array itself (npllm.layers' convention), several as a tuple.
        lines += [f"*_, cache = {owner}.{forward}(*s.args, **s.kwargs)",
                  f"{outputs} = {module}.{part['function']}(*s.upstream, cache)"]
    lines.append("print(" + ", ".join(f'"{name} =", {name}' for name in part["outputs"]) + ', sep="\\n")')
    return "\n".join(lines)


def _gradcheck_code(module: str, part: dict) -> str:
    forward = part["forward"].partition(":")[2] if ":" in part["forward"] else f"{module}.{part['forward']}"
    time_axis = f", time_axis={part['time_axis']}" if part["time_axis"] is not None else ""
    return ("# A gradient check like grade.py's: relative errors near 1e-10 mean your backward is right.\n"
            f"print(check_op({forward}, {module}.{part['function']}, s.args, s.kwargs{time_axis}, "
            f"tol={GRADCHECK_TOL:g}))")


def _cell(kind: str, cell_id: str, text: str, *, grade: bool = False, solution: bool = False,
          locked: bool = True, points: int | None = None) -> dict:
    nbgrader = {"grade": grade, "grade_id": cell_id, "locked": locked, "schema_version": 3,
                "solution": solution, "task": False}
    if points is not None:
        nbgrader["points"] = points
    cell = {"cell_type": kind, "id": cell_id, "metadata": {"nbgrader": nbgrader},
            "source": text.splitlines(keepends=True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def render_notebook(assignment, spec: dict, intro: str, solution: bool = False) -> str:
    """The step-through notebook (nbformat 4.5 JSON)."""
    module = assignment.module
    options = ", ".join(f"{key}={value!r}" for key, value in PRINT_OPTIONS.items())
    provided = "".join(f"import {filename.removesuffix('.py')}\n" for filename in assignment.provided)
    title = assignment.title + (" (TEACHER'S COPY, with solutions)" if solution else "")
    cells = [
        _cell("markdown", "intro", f"# {title}\n\n{intro.strip()}\n\n"
              f"Write your code in `{module}.py` (edits are reloaded automatically), run each part's cells "
              f"and compare the printed values with the expected ones. Each part ends with a locked test "
              f"cell: the grader on that part, hidden cases included. `python grade.py` gives your score."),
        _cell("code", "setup", "%load_ext autoreload\n%autoreload 2\nimport sys\n\nimport numpy as np\n\n"
              f"import {module}\n{provided}from npllm.assignments.grading import sample\n"
              f"from npllm.assignments.report import check_part\nfrom npllm.gradcheck import check_op\n\n"
              f"np.set_printoptions({options})"),
    ]
    for part, graded in zip(spec["parts"], assignment.parts):
        n = part["number"]
        task = part["task"][:1].upper() + part["task"][1:]
        text = f"## Part {n}: `{part['name']}` — {_points(part)} points\n\n{task}."
        if part["cases"]:
            text += (f"\n\nInput: {describe_inputs(assignment, part)}. Your output should be close to:\n\n"
                     f"{expected_block(part)}")
        cells.append(_cell("markdown", f"part-{n}", text))
        if part["cases"]:
            cells.append(_cell("code", f"part-{n}-run", _part_code(module, part), locked=False))
            if part["gradcheck_points"]:
                cells.append(_cell("code", f"part-{n}-gradcheck", _gradcheck_code(module, part), locked=False))
        elif graded.notebook:
            cells.append(_cell("code", f"part-{n}-run", graded.notebook.format(module=module), locked=False))
        cells.append(_cell("code", f"part-{n}-test", f"# Locked test cell: part {n}, graded as grade.py does.\n"
                           f"check_part({assignment.name!r}, {n}, '.')", grade=True, points=_points(part)))
    cells.append(_cell("markdown", "grade", "## Your score\n\nAll parts, with the points of each hidden case:"))
    cells.append(_cell("code", "grade-run", "!{sys.executable} grade.py   # the Python running this notebook"))
    cells.append(_cell("markdown", "notes", "## Your notes\n\nWhat was hard, what you checked, what you would "
                       "try next (not graded automatically).", solution=True, locked=False))
    notebook = {"cells": cells,
                "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                             "language_info": {"name": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
