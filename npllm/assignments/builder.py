"""Build an assignment directory: student starter code, visible cases, a notebook, a README, a grader.

``build("rnn", "hw3")`` writes

    hw3/rnn_layers.py        the solution with each BEGIN/END SOLUTION region replaced by
                             ``raise NotImplementedError("<hint>")`` (``solution=True``: the teacher's
                             copy, the solution itself under a "TEACHER'S COPY" banner)
    hw3/visible_cases.json   each part's visible case: seeded inputs and the reference's results.  The
                             graded (hidden) cases are drawn and computed only when grading, so no
                             shipped file holds their answers.
    hw3/rnn.ipynb            a step-through notebook with nbgrader metadata: each function on its
                             visible case, the output it should produce, and a locked test cell per part
    hw3/README.md            the task, the parts and points, the expected output on the visible cases
    hw3/grade.py             the autograder (``python grade.py`` or ``pytest grade.py``)

plus the assignment's provided helper files (a training loop, layers to check), unchanged.

The output is a pure function of the assignment and the installed npllm: seeded inputs, floats
written with every digit, no timestamps — building twice gives byte-identical files.  Existing files
are never overwritten with different content, so a rebuild cannot destroy a student's work.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from npllm.assignments.catalog import ASSIGNMENTS, Assignment
from npllm.assignments.grading import SEED, VISIBLE_FILE, encode
from npllm.assignments.markers import make_starter, strip_markers
from npllm.assignments.notebook import describe_inputs, expected_block, render_notebook
from npllm.assignments.plans import reference_case

TEACHER_BANNER = ("# TEACHER'S COPY: this file holds the solutions. Hand out the starter build instead\n"
                  "# (npllm assignment build NAME --out DIR, without --solution).\n")


def _data(name: str, filename: str) -> str:
    return resources.files("npllm.assignments").joinpath(name, filename).read_text(encoding="utf-8")


def _template(filename: str) -> str:
    return resources.files("npllm.assignments").joinpath("templates", filename).read_text(encoding="utf-8")


def visible_spec(assignment: Assignment) -> dict:
    """Every part's description and its visible cases (inputs and the reference's results, encoded)."""
    from npllm import __version__

    parts = []
    for number, part in enumerate(assignment.parts, start=1):
        cases = []
        if part.plan is None:
            for index in range(part.n_visible):
                _, args, kwargs, _, upstream, expected, _ = reference_case(assignment, part, number, index,
                                                                           False, SEED)
                cases.append({"args": encode(args), "kwargs": encode(kwargs), "upstream": encode(upstream),
                              "expected": encode(expected)})
        parts.append({"number": number, "function": part.function, "label": part.label, "name": part.name,
                      "task": part.task, "kind": part.kind, "forward": part.forward, "time_axis": part.time_axis,
                      "outputs": list(part.outputs), "forward_outputs": list(part.forward_outputs or part.outputs),
                      "value_points": part.value_points, "gradcheck_points": part.gradcheck_points,
                      "returns_cache": part.returns_cache, "n_hidden": part.n_hidden, "cases": cases})
    return {"assignment": assignment.name, "title": assignment.title, "module": assignment.module,
            "npllm_version": __version__, "parts": parts}


def _points(part: dict) -> str:
    total = part["value_points"] + part["gradcheck_points"]
    if part["gradcheck_points"]:
        return f"{total} ({part['gradcheck_points']} gradient check + {part['value_points']} values)"
    return str(total)


TEACHER_WORKFLOW = """## For the teacher

This is the teacher's copy: `{module}.py` holds the solutions (`python grade.py` scores full marks).

1. Build the student copy: `npllm assignment build {name} --out {name}-student` (starter code, this
   README without this section, the notebook, `visible_cases.json` and `grade.py`). Hand out that folder.
2. Collect one folder per student (or just each student's `{module}.py`, named after the student) into
   one directory, e.g. `submissions/alice/{module}.py`, `submissions/bob.py`.
3. Grade them all: `npllm assignment grade submissions --assignment {name} --out grades.csv
   [--timeout 60]`. Every student's code runs in a child process, in a scratch copy of the
   submission, with a time limit per part, and without access to npllm's reference; `grades.csv` has
   one row per student (points per part, total, status) and `grades_results/<student>/results.json`
   holds Gradescope's format.
4. Gradescope: `gradescope/` holds `setup.sh` and `run_autograder`; zip them with `grade.py` and an
   npllm wheel as `gradescope/README.md` says, and upload the zip as the autograder. Students submit
   `{module}.py`; `run_autograder` runs `python grade.py --submission /autograder/submission --json
   /autograder/results/results.json`, and students see the hidden cases once you publish the grades.

Hidden cases are drawn with a fresh seed at every grading run (the seed is in the results);
`python grade.py --seed N` reproduces a run.
"""


GRADESCOPE_SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, when it builds the autograder image.  Put an npllm wheel beside it
# (pip wheel <your npllm checkout> --no-deps -w .) or install npllm from wherever you keep it.
set -e
apt-get update && apt-get install -y python3 python3-pip
pip3 install numpy
pip3 install /autograder/source/npllm-*.whl
"""

GRADESCOPE_RUN = """#!/usr/bin/env bash
# Gradescope runs this for every submission: the student's files are in /autograder/submission.
cd /autograder/source
python3 grade.py --submission /autograder/submission --json /autograder/results/results.json
"""

GRADESCOPE_README = """# Gradescope autograder for the npllm assignment "{name}"

Zip `setup.sh`, `run_autograder`, `grade.py` (the same in the teacher's and the student's copy: it
grades whatever `--submission` names) and an npllm wheel, all at the top level of the zip:

    cd gradescope && cp ../grade.py . && pip wheel <your npllm checkout> --no-deps -w .
    zip autograder.zip setup.sh run_autograder grade.py npllm-*.whl

Students submit `{module}.py`. Every part runs in its own child process with a 60 s limit; the
results list one test per case, hidden cases visible to students after you publish the grades.
"""


def gradescope_files(assignment: Assignment) -> dict:
    """The teacher's copy's gradescope/ folder: setup.sh, run_autograder and how to zip them."""
    return {"gradescope/setup.sh": GRADESCOPE_SETUP, "gradescope/run_autograder": GRADESCOPE_RUN,
            "gradescope/README.md": GRADESCOPE_README.format(name=assignment.name, module=assignment.module)}


def render_readme(assignment: Assignment, spec: dict, solution: bool = False) -> str:
    """README.md of the built assignment (the teacher's copy adds the teacher's workflow)."""
    module = assignment.module
    rows = "\n".join(f"| {p['number']} | `{p['name']}` | {p['task']} | {_points(p)} |" for p in spec["parts"])
    sections = []
    for part in spec["parts"]:
        if part["cases"]:
            sections.append(f"### Part {part['number']}: `{part['name']}`\n\nInput: "
                            f"{describe_inputs(assignment, part)}.\n\nExpected output:\n\n{expected_block(part)}\n")
    provided = "".join(f"- `{filename}` — provided: read it, use it, do not change it (the grader uses its "
                       f"own copy).\n" for filename in assignment.provided)
    title = f"# Assignment: {assignment.title}" + (" (TEACHER'S COPY, with solutions)" if solution else "")
    return (f"{title}\n\n{_data(assignment.name, 'intro.md').strip()}\n\n"
            + (TEACHER_WORKFLOW.format(name=assignment.name, module=module) + "\n" if solution else "")
            + f"## Files\n\n"
            f"- `{module}.py` — write your code here: replace each `raise NotImplementedError(...)`.\n"
            f"- `{assignment.name}.ipynb` — a step-through notebook: runs each function on its visible case and "
            f"shows the output it should produce.\n{provided}"
            f"- `grade.py` — the autograder: `python grade.py` prints a score per part, `pytest grade.py` runs "
            f"one test per part.\n"
            f"- `{VISIBLE_FILE}` — the visible cases' inputs and the reference's results (npllm "
            f"{spec['npllm_version']}).\n\n"
            f"You need npllm installed (`pip install -e <path to the npllm checkout>`).\n\n"
            f"## Parts ({assignment.points} points)\n\n"
            f"| part | function | task | points |\n|---|---|---|---|\n{rows}\n\n"
            f"## How you are graded\n\n"
            f"Each part is run on its visible case (the notebook's, worth no points) and on hidden cases "
            f"drawn afresh each time the grader runs, whose expected values the reference computes then: "
            f"the points are split over the hidden cases. A function that returns the visible case's "
            f"expected output whatever its input scores nothing. A backward part is checked twice: "
            f"against central differences of *your* forward (counted once your forward is right), and "
            f"against the reference's gradients. Your code runs in a separate process with a time limit "
            f"per part (60 s by default), in a copy of your folder; npllm's own layers (`npllm.layers`, "
            f"`npllm.models`) may not be imported — numpy may.\n\n"
            f"## Expected output on the visible cases\n\n" + "\n".join(sections))


def render_grader(assignment: Assignment, spec: dict) -> str:
    """grade.py: one pytest test per part, and a main that prints the scores."""
    tests = []
    for part in spec["parts"]:
        suffix = f"_{part['label']}" if part["label"] else ""
        tests.append(f"\n\ndef test_part_{part['number']}_{part['function']}{suffix}():\n"
                     f"    check_part({assignment.name!r}, {part['number']}, HERE)\n")
    return _template("grade.py.template").format(name=assignment.name, title=assignment.title,
                                                 module=assignment.module, tests="".join(tests))


def render(name: str, solution: bool = False) -> dict:
    """The files of assignment ``name``: {filename: text}."""
    assignment = ASSIGNMENTS[name]
    filename = f"{assignment.module}.py"
    source = _data(name, filename)
    code = TEACHER_BANNER + strip_markers(source, filename) if solution else make_starter(source, filename)
    spec = visible_spec(assignment)
    files = {filename: code, VISIBLE_FILE: json.dumps(spec, indent=1) + "\n",
             f"{name}.ipynb": render_notebook(assignment, spec, _data(name, "intro.md"), solution),
             "README.md": render_readme(assignment, spec, solution),
             "grade.py": render_grader(assignment, spec)}
    files.update(assignment.provided_sources())
    if solution:
        files.update(gradescope_files(assignment))
    return files


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
        if path.exists() and path.read_bytes() != text.encode("utf-8"):
            raise FileExistsError(f"{path} already exists with other content (a student's work?); "
                                  f"build into an empty directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in files.items():
        path = out_dir / filename
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        if text.startswith("#!"):
            path.chmod(0o755)
        written.append(path)
    return written
