"""Build an assignment directory: student starter code, expected values, a notebook, a README, a grader.

``build("rnn", "hw3")`` writes

    hw3/rnn_layers.py   the solution with each BEGIN/END SOLUTION region replaced by
                        ``raise NotImplementedError("<hint>")`` (``solution=True``: the solution itself)
    hw3/expected.json   every part's seeded inputs and the reference's results (npllm.layers, now)
    hw3/rnn.ipynb       a step-through notebook: each function on a sample input, with the output it
                        should produce shown beside it
    hw3/README.md       the task, the parts and points, the expected output on the sample inputs
    hw3/grade.py        the autograder (``python grade.py`` or ``pytest grade.py``)

The output is a pure function of the assignment and the installed npllm: seeded inputs, floats
written with every digit, no timestamps — building twice gives byte-identical files.  Existing files
are never overwritten with different content, so a rebuild cannot destroy a student's work.
"""
from __future__ import annotations

import inspect
import json
from importlib import resources
from pathlib import Path

import numpy as np

from npllm.assignments.catalog import ASSIGNMENTS, Assignment, Part
from npllm.assignments.grading import GRADCHECK_TOL, PRINT_OPTIONS, encode
from npllm.assignments.markers import make_starter, strip_markers

SEED = 2017   # with the part and case numbers, seeds every input and upstream gradient


def _data(name: str, filename: str) -> str:
    return resources.files("npllm.assignments").joinpath(name, filename).read_text(encoding="utf-8")


def _template(filename: str) -> str:
    return resources.files("npllm.assignments").joinpath("templates", filename).read_text(encoding="utf-8")


def _forward_outputs(assignment: Assignment, part: Part) -> tuple:
    """Names of the results of the forward a part calls (its own outputs for a forward part)."""
    if part.forward is None:
        return part.outputs
    return next(p.outputs for p in assignment.parts if p.function == part.forward)


def _cases(assignment: Assignment, number: int, part: Part) -> list:
    """Seeded inputs of a part and the reference's results on them (encoded for JSON)."""
    cases = []
    for case in range(part.n_cases):
        rng = np.random.default_rng([SEED, number, case])
        args, kwargs = part.make_inputs(rng, case)
        forward = assignment.reference[part.forward or part.function]
        results = forward(*args, **kwargs)
        outputs, cache = list(results[:-1]), results[-1]
        entry = {"args": encode(args), "kwargs": encode(kwargs)}
        if part.kind == "forward":
            entry["expected"] = encode(outputs)
        else:
            upstream = [rng.standard_normal(output.shape) for output in outputs]
            grads = assignment.reference[part.function](*upstream, cache)
            entry["upstream"] = encode(upstream)
            entry["expected"] = encode(list(grads if isinstance(grads, tuple) else (grads,)))
        cases.append(entry)
    return cases


def expected_spec(assignment: Assignment) -> dict:
    """Everything the grader and the notebook read: parts, points, inputs and expected results."""
    from npllm import __version__

    parts = []
    for number, part in enumerate(assignment.parts, start=1):
        parts.append({"number": number, "function": part.function, "label": part.label, "name": part.name,
                      "task": part.task,
                      "kind": part.kind, "forward": part.forward, "time_axis": part.time_axis,
                      "outputs": list(part.outputs), "forward_outputs": list(_forward_outputs(assignment, part)),
                      "value_points": part.value_points, "gradcheck_points": part.gradcheck_points,
                      "cases": _cases(assignment, number, part)})
    return {"assignment": assignment.name, "title": assignment.title, "module": assignment.module,
            "npllm_version": __version__, "parts": parts}


# ---------------------------------------------------------------------------------- rendering
def _format(name: str, array: np.ndarray) -> str:
    with np.printoptions(**PRINT_OPTIONS):
        return f"{name} =\n{array}"


def _describe_inputs(assignment: Assignment, part: dict) -> str:
    """'x (2, 3), h_prev (2, 4), ...; options: causal=True, mask bool (2, 1, 4, 4)' for case 0."""
    case = part["cases"][0]
    forward = assignment.reference[part["forward"] or part["function"]]
    names = list(inspect.signature(forward).parameters)
    shapes = [f"{name} {tuple(arg['shape'])}" for name, arg in zip(names, case["args"])]
    options = [f"{key} {value['dtype']} {tuple(value['shape'])}" if isinstance(value, dict) else f"{key}={value}"
               for key, value in case["kwargs"].items()]
    text = ", ".join(shapes)
    if part["kind"] == "backward":
        text += "; upstream " + ", ".join(f"d{name} {tuple(u['shape'])}"
                                          for name, u in zip(part["forward_outputs"], case["upstream"]))
    return text + (f"; options: {', '.join(options)}" if options else "")


def _expected_block(part: dict) -> str:
    from npllm.assignments.grading import decode

    arrays = decode(part["cases"][0]["expected"])
    return "```\n" + "\n".join(_format(name, array) for name, array in zip(part["outputs"], arrays)) + "\n```"


def _points(part: dict) -> str:
    total = part["value_points"] + part["gradcheck_points"]
    if part["gradcheck_points"]:
        return f"{total} ({part['gradcheck_points']} gradient check + {part['value_points']} values)"
    return str(total)


def _part_code(module: str, part: dict) -> str:
    """The notebook cell that runs a part's function on its sample input and prints the results."""
    outputs = ", ".join(part["outputs"])
    lines = [f"s = sample({part['number']})   # part {part['number']}'s first graded input, from expected.json"]
    if part["kind"] == "forward":
        lines.append(f"{outputs}, cache = {module}.{part['function']}(*s.args, **s.kwargs)")
    else:
        targets = outputs + ("," if len(part["outputs"]) == 1 else "")   # "dx," unpacks a 1-tuple
        lines += [f"*_, cache = {module}.{part['forward']}(*s.args, **s.kwargs)",
                  f"{targets} = {module}.{part['function']}(*s.upstream, cache)"]
    lines.append("print(" + ", ".join(f'"{name} =", {name}' for name in part["outputs"]) + ', sep="\\n")')
    return "\n".join(lines)


def _gradcheck_code(module: str, part: dict) -> str:
    time_axis = f", time_axis={part['time_axis']}" if part["time_axis"] is not None else ""
    return ("# The gradient check grade.py runs: relative errors near 1e-10 mean your backward is right.\n"
            f"print(check_op({module}.{part['forward']}, {module}.{part['function']}, s.args, s.kwargs{time_axis}, "
            f"tol={GRADCHECK_TOL:g}))")


def render_readme(assignment: Assignment, spec: dict) -> str:
    """README.md of the built assignment."""
    module = assignment.module
    rows = "\n".join(f"| {p['number']} | `{p['name']}` | {p['task']} | {_points(p)} |" for p in spec["parts"])
    sections = []
    for part in spec["parts"]:
        sections.append(f"### Part {part['number']}: `{part['name']}`\n\nInput: {_describe_inputs(assignment, part)}."
                        f"\n\nExpected output:\n\n{_expected_block(part)}\n")
    return (f"# Assignment: {assignment.title}\n\n{_data(assignment.name, 'intro.md').strip()}\n\n"
            f"## Files\n\n"
            f"- `{module}.py` — write your code here: replace each `raise NotImplementedError(...)`.\n"
            f"- `{assignment.name}.ipynb` — a step-through notebook: runs each function on a sample input and "
            f"shows the output it should produce.\n"
            f"- `grade.py` — the autograder: `python grade.py` prints a score per part, `pytest grade.py` runs "
            f"one test per part.\n"
            f"- `expected.json` — the graded inputs and the reference's results (computed by npllm "
            f"{spec['npllm_version']} when this assignment was built).\n\n"
            f"You need npllm installed (`pip install -e <path to the npllm checkout>`): the grader uses "
            f"`npllm.gradcheck`.\n\n"
            f"## Parts ({assignment.points} points)\n\n"
            f"| part | function | task | points |\n|---|---|---|---|\n{rows}\n\n"
            f"A backward part is checked twice: against numerical gradients of *your* forward "
            f"(`npllm.gradcheck.check_op`), and against the reference's gradients for fixed upstream gradients.\n\n"
            f"## Expected output on the sample inputs\n\nThe notebook prints your output on these inputs; "
            f"the grader also uses a second input with other sizes.\n\n" + "\n".join(sections))


def _cell(kind: str, cell_id: str, text: str) -> dict:
    lines = text.splitlines(keepends=True)
    cell = {"cell_type": kind, "id": cell_id, "metadata": {}, "source": lines}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def render_notebook(assignment: Assignment, spec: dict) -> str:
    """The step-through notebook (nbformat 4.5 JSON)."""
    module = assignment.module
    options = ", ".join(f"{key}={value!r}" for key, value in PRINT_OPTIONS.items())
    cells = [
        _cell("markdown", "intro", f"# {assignment.title}\n\n{_data(assignment.name, 'intro.md').strip()}\n\n"
              f"Write your code in `{module}.py` (edits are reloaded automatically), run each part's cells "
              f"and compare the printed values with the expected ones. `python grade.py` gives your score."),
        _cell("code", "setup", "%load_ext autoreload\n%autoreload 2\nimport sys\n\nimport numpy as np\n\n"
              f"import {module}\nfrom npllm.assignments.grading import sample\n"
              f"from npllm.gradcheck import check_op\n\n"
              f"np.set_printoptions({options})"),
    ]
    for part in spec["parts"]:
        n = part["number"]
        cells.append(_cell("markdown", f"part-{n}",
                           f"## Part {n}: `{part['name']}` — {_points(part)} points\n\n{part['task'].capitalize()}."
                           f"\n\nInput: {_describe_inputs(assignment, part)}. Your output should be close to:\n\n"
                           f"{_expected_block(part)}"))
        cells.append(_cell("code", f"part-{n}-run", _part_code(module, part)))
        if part["gradcheck_points"]:
            cells.append(_cell("code", f"part-{n}-gradcheck", _gradcheck_code(module, part)))
    cells.append(_cell("markdown", "grade", "## Your score\n\nThe same checks, on more inputs:"))
    cells.append(_cell("code", "grade-run", "!{sys.executable} grade.py   # the Python running this notebook"))
    notebook = {"cells": cells,
                "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                             "language_info": {"name": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def render_grader(assignment: Assignment, spec: dict) -> str:
    """grade.py: one pytest test per part, and a main that prints the scores."""
    tests = []
    for part in spec["parts"]:
        suffix = f"_{part['label']}" if part["label"] else ""
        tests.append(f"\n\ndef test_part_{part['number']}_{part['function']}{suffix}():\n"
                     f"    GRADER.check_part({part['number']})\n")
    return _template("grade.py.template").format(name=assignment.name, title=assignment.title,
                                                 module=assignment.module, tests="".join(tests))


def render(name: str, solution: bool = False) -> dict:
    """The files of assignment ``name``: {filename: text}."""
    assignment = ASSIGNMENTS[name]
    filename = f"{assignment.module}.py"
    source = _data(name, filename)
    code = strip_markers(source, filename) if solution else make_starter(source, filename)
    spec = expected_spec(assignment)
    return {filename: code,
            "expected.json": json.dumps(spec, indent=1) + "\n",
            f"{name}.ipynb": render_notebook(assignment, spec),
            "README.md": render_readme(assignment, spec),
            "grade.py": render_grader(assignment, spec)}


def build(name: str, out_dir, solution: bool = False) -> list:
    """Write assignment ``name`` into ``out_dir``; return the paths written.

    Raises KeyError for an unknown name, and FileExistsError (naming the file) when a file is already
    there with other content — nothing is written then.
    """
    files = render(name, solution)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} is a file, not a directory")
    for filename, text in files.items():
        path = out_dir / filename
        # Compared as bytes: a file that is not UTF-8 (or not a file) is other content, not a crash.
        if path.exists() and not (path.is_file() and path.read_bytes() == text.encode("utf-8")):
            raise FileExistsError(f"{path} already exists with other content (a student's work?); "
                                  f"build into an empty directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in files.items():
        path = out_dir / filename
        path.write_text(text, encoding="utf-8", newline="\n")
        written.append(path)
    return written
