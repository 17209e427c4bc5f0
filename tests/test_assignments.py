"""npllm.assignments: solution markers, the builder, the autograder and the ``npllm assignment`` CLI."""
import json
from importlib import resources
import shutil
import subprocess
import sys

import numpy as np
import pytest

from npllm import layers
from npllm.assignments import ASSIGNMENTS, MarkerError, build, grade, make_starter, strip_markers
from npllm.assignments.grading import decode
from npllm.commands import main

NAMES = sorted(ASSIGNMENTS)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every assignment built twice: {name: {"starter": dir, "solution": dir}} (read-only use)."""
    root = tmp_path_factory.mktemp("assignments")
    return {name: {kind: build(name, root / kind / name, solution=kind == "solution")[0].parent
                   for kind in ("starter", "solution")} for name in NAMES}


def copy_of(directory, tmp_path):
    """A private copy of a built assignment, for tests that edit the student's module."""
    target = tmp_path / directory.name
    shutil.copytree(directory, target)
    return target


# ----------------------------------------------------------------------------- markers
SOLUTION = '''def f(x):
    """Doc."""
    y = 1
    # BEGIN SOLUTION hint: "add \\"one\\" to y"
    y = y + 1
    if y:
        y += x
    # END SOLUTION
    return y


class A:
    def g(self):
        # BEGIN SOLUTION
        return 2
        # END SOLUTION
'''


def test_make_starter_replaces_each_region_by_a_raise_at_its_indentation():
    starter = make_starter(SOLUTION)
    assert '    raise NotImplementedError("add \\"one\\" to y")\n    return y\n' in starter
    assert '        raise NotImplementedError("write this part of g")\n' in starter
    assert "y = y + 1" not in starter and "SOLUTION" not in starter
    namespace = {}
    exec(starter, namespace)
    with pytest.raises(NotImplementedError, match='add "one" to y'):
        namespace["f"](1)


def test_strip_markers_keeps_the_solution_code_and_drops_the_marker_lines():
    solution = strip_markers(SOLUTION)
    assert "SOLUTION" not in solution and "y = y + 1" in solution
    namespace = {}
    exec(solution, namespace)
    assert namespace["f"](3) == 5 and namespace["A"]().g() == 2


@pytest.mark.parametrize("source, message", [
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n", "sol.py:2: BEGIN SOLUTION inside"),
    ("x = 1\n# END SOLUTION\n", "sol.py:2: END SOLUTION without"),
    ("# BEGIN SOLUTION\nx = 1\n", "sol.py:1: BEGIN SOLUTION is never closed"),
    ("x = 1\n", "sol.py: no BEGIN SOLUTION"),
    ("# BEGIN SOLUTION hint: unquoted\n# END SOLUTION\n", "sol.py:1: malformed marker"),
], ids=["nested", "end-without-begin", "unclosed", "no-region", "unquoted-hint"])
def test_malformed_markers_are_errors_naming_the_line(source, message):
    with pytest.raises(MarkerError, match=message):
        make_starter(source, "sol.py")


# ----------------------------------------------------------------------------- builder
def test_build_writes_starter_notebook_readme_grader_and_visible_cases(built):
    for name, dirs in built.items():
        assignment = ASSIGNMENTS[name]
        files = sorted(p.name for p in dirs["starter"].iterdir())
        assert files == sorted(["README.md", "visible_cases.json", "grade.py", f"{assignment.module}.py",
                                f"{name}.ipynb", *assignment.provided])
        starter = (dirs["starter"] / f"{assignment.module}.py").read_text()
        assert "NotImplementedError" in starter and "SOLUTION" not in starter
        assert "NotImplementedError" not in (dirs["solution"] / f"{assignment.module}.py").read_text()


def test_the_teachers_copy_is_clearly_marked_and_the_students_is_not(built):
    for name, dirs in built.items():
        module = ASSIGNMENTS[name].module
        assert (dirs["solution"] / f"{module}.py").read_text().startswith("# TEACHER'S COPY")
        assert "TEACHER'S COPY" in (dirs["solution"] / "README.md").read_text().splitlines()[0]
        assert "npllm assignment grade" in (dirs["solution"] / "README.md").read_text()
        for filename in (f"{module}.py", "README.md", f"{name}.ipynb"):
            assert "TEACHER" not in (dirs["starter"] / filename).read_text()


def test_build_is_reproducible_byte_for_byte(built, tmp_path):
    for name, dirs in built.items():
        again = build(name, tmp_path / name)
        for path in again:
            assert path.read_bytes() == (dirs["starter"] / path.name).read_bytes(), path.name
        build(name, tmp_path / name)          # rebuilding into the same directory changes nothing


def test_build_never_overwrites_a_changed_file(tmp_path):
    build("rnn", tmp_path)
    (tmp_path / "rnn_layers.py").write_text("# a student's work\n")
    with pytest.raises(FileExistsError, match="rnn_layers.py already exists"):
        build("rnn", tmp_path)
    assert (tmp_path / "rnn_layers.py").read_text() == "# a student's work\n"


def test_visible_cases_hold_the_reference_results_on_their_inputs_and_nothing_else(built):
    spec = json.loads((built["lstm"]["starter"] / "visible_cases.json").read_text())
    for part in spec["parts"]:
        assert len(part["cases"]) == 1 and part["n_hidden"] >= 2     # the graded cases are not shipped
        for case in part["cases"]:
            args, kwargs = decode(case["args"]), decode(case["kwargs"])
            *outputs, cache = getattr(layers, part["forward"] or part["function"])(*args, **kwargs)
            if part["kind"] == "backward":
                outputs = getattr(layers, part["function"])(*decode(case["upstream"]), cache)
            for actual, expected in zip(outputs, decode(case["expected"])):
                np.testing.assert_array_equal(actual, expected)   # stored with every digit


def test_readme_and_notebook_show_the_expected_values_of_the_first_input(built):
    directory = built["rnn"]["starter"]
    spec = json.loads((directory / "visible_cases.json").read_text())
    h = decode(spec["parts"][0]["cases"][0]["expected"])[0]
    with np.printoptions(precision=6, suppress=True, floatmode="fixed", linewidth=100):
        shown = f"h =\n{h}"
    assert shown in (directory / "README.md").read_text()
    notebook = json.loads((directory / "rnn.ipynb").read_text())
    assert shown in "".join("".join(cell["source"]) for cell in notebook["cells"])


@pytest.mark.parametrize("name", ["attention", "llama"])
def test_notebook_code_cells_run_on_the_solution_and_print_the_expected_values(built, capsys, monkeypatch, name):
    directory = built[name]["solution"]
    monkeypatch.chdir(directory)
    monkeypatch.syspath_prepend(str(directory))
    notebook = json.loads((directory / f"{name}.ipynb").read_text())
    namespace = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":   # IPython magics and shell escapes are not Python
            exec("\n".join(l for l in "".join(cell["source"]).splitlines() if not l.startswith(("%", "!"))),
                 namespace)
    printed = capsys.readouterr().out
    readme = (directory / "README.md").read_text()
    for block in readme.split("```")[1::2]:           # every expected-output block appears in the output
        assert block.strip() in printed
    assert "FAIL" not in printed
    sys.modules.pop(ASSIGNMENTS[name].module, None)


def test_notebook_is_valid_nbformat(built):
    nbformat = pytest.importorskip("nbformat")
    nbformat.validate(nbformat.read(str(built["rnn"]["starter"] / "rnn.ipynb"), as_version=4))


def test_notebook_cells_carry_nbgrader_metadata_with_locked_graded_test_cells(built):
    for name in NAMES:
        notebook = json.loads((built[name]["starter"] / f"{name}.ipynb").read_text())
        metadata = [cell["metadata"]["nbgrader"] for cell in notebook["cells"]]
        ids = [m["grade_id"] for m in metadata]
        assert len(ids) == len(set(ids))
        for m in metadata:
            assert {"grade", "grade_id", "locked", "solution", "schema_version"} <= set(m)
        tests = [m for m in metadata if m["grade"]]
        assert [m["points"] for m in tests] == [part.points for part in ASSIGNMENTS[name].parts]
        assert all(m["locked"] and not m["solution"] for m in tests)


# ----------------------------------------------------------------------------- grading
@pytest.mark.parametrize("name", NAMES)
def test_starter_scores_zero_with_each_parts_own_hint(built, name):
    report = grade(name, built[name]["starter"])
    source = (built[name]["starter"] / f"{ASSIGNMENTS[name].module}.py").read_text()
    assert report.score == 0
    for part in report.parts:
        if ASSIGNMENTS[name].parts[part.number - 1].plan is not None:
            continue     # a part graded its own way says which function to write (see test_autograder.py)
        for line in part.lines:
            assert "NotImplementedError: " in line, line
            hint = line.split("NotImplementedError: ", 1)[1].split(";")[0]
            # the hint raised by the part's own function, not by a helper it calls
            function_source = source.split(f"def {part.name.split()[0]}(", 1)[1].split("\ndef ", 1)[0]
            assert hint in function_source


@pytest.mark.parametrize("name", NAMES)
def test_solution_scores_full_marks(built, name):
    report = grade(name, built[name]["solution"])
    assert report.score == report.max_score == ASSIGNMENTS[name].points
    assert all(case.passed for part in report.parts for case in part.cases)


def test_grade_py_prints_a_score_per_part_and_exits_0_whatever_the_score(built, tmp_path):
    report = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "grade.py", "--json", str(report)], cwd=built["rnn"]["starter"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "part 1 rnn_step_forward: 0/2" in lines and any(line.startswith("total 0/12") for line in lines)
    results = json.loads(report.read_text())
    assert results["score"] == 0 and results["max_score"] == 12 and len(results["tests"]) == 12
    done = subprocess.run([sys.executable, "grade.py"], cwd=built["rnn"]["solution"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "total 12/12" in done.stdout


def test_grade_py_exits_2_when_the_grader_cannot_run(built):
    done = subprocess.run([sys.executable, "grade.py", "--part", "9"], cwd=built["rnn"]["starter"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "could not run" in done.stderr and "part must be between 1 and 4" in done.stderr


def test_grade_py_runs_under_pytest_one_test_per_part(built):
    def run(kind):
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "grade.py"],
                              cwd=built["lstm"][kind], capture_output=True, text=True, timeout=300).stdout

    assert "4 passed" in run("solution")
    starter = run("starter")
    assert "4 failed" in starter and "NotImplementedError: " in starter


def test_a_bptt_bug_is_located_at_the_first_time_step(built, tmp_path):
    directory = copy_of(built["rnn"]["solution"], tmp_path)
    module = directory / "rnn_layers.py"
    module.write_text(module.read_text().replace("dhs[:, t] + dh_next", "dhs[:, t]"))
    report = grade("rnn", directory)
    assert [p.score for p in report.parts] == [2, 4, 2, 0]
    assert "the first output time step that disagrees is t=1" in report.parts[3].lines[1]


def test_masking_after_the_softmax_loses_the_mask_parts_only(built, tmp_path):
    directory = copy_of(built["attention"]["solution"], tmp_path)
    module = directory / "attention_layers.py"
    module.write_text(module.read_text().replace("allowed = allowed & mask", "pass"))
    report = grade("attention", directory)
    assert [p.score for p in report.parts] == [2, 0, 4, 0]
    assert "out differs from the expected values" in report.parts[1].lines[0]


def llama_with(built, tmp_path, old, new):
    """A copy of the llama solution with one line of it replaced."""
    directory = copy_of(built["llama"]["solution"], tmp_path)
    module = directory / "llama_layers.py"
    assert old in module.read_text()
    module.write_text(module.read_text().replace(old, new))
    return directory


def test_rope_with_interleaved_pairs_loses_the_forward_parts_and_the_gradient_check_of_the_backward(built,
                                                                                                   tmp_path):
    directory = llama_with(built, tmp_path,
                           "    a, b = x[..., :half], x[..., half:]\n"
                           "    y = np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)\n",
                           "    a, b = x[..., 0::2], x[..., 1::2]\n"
                           "    y = np.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(x.shape)\n")
    report = grade("llama", directory)
    assert [p.score for p in report.parts] == [0, 0, 2, 4, 4], str(report)
    assert "y differs from the expected values" in report.parts[0].lines[1]
    # the backward's own values are right (it only needs cos and sin), but its check waits for the forward
    assert "gradient check (1 pt): not counted until rope_forward is right" in report.parts[2].lines[1]


def test_rope_backward_by_plus_the_angle_fails_its_gradient_check_with_the_reason(built, tmp_path):
    directory = llama_with(built, tmp_path, "[da * cos + db * sin, db * cos - da * sin]",
                           "[da * cos - db * sin, db * cos + da * sin]")
    part = grade("llama", directory, [3]).parts[0]
    assert part.score == 0
    assert "relative error dx" in part.lines[1] and "dx differs from the expected values" in part.lines[1]


def test_rms_norm_backward_with_layer_norms_mean_term_fails_on_dx_only(built, tmp_path):
    directory = llama_with(built, tmp_path, "dx = (g - xhat", "dx = (g - g.mean(axis=-1, keepdims=True) - xhat")
    part = grade("llama", directory, [4]).parts[0]
    assert part.score == 0
    assert "relative error dx" in part.lines[1] and "dweight" not in part.lines[1].split("values")[0]
    assert "dx differs from the expected values" in part.lines[1]


def test_rope_positions_per_batch_row_without_a_head_axis_lose_the_offsets_cases_only(built, tmp_path):
    directory = llama_with(built, tmp_path, "    if positions.ndim == 2:\n        angles = angles[:, None]", "")
    report = grade("llama", directory, [1, 2, 3])
    assert [p.score for p in report.parts] == [2, 0, 2], str(report)   # rope_backward's case 2 has (B, T)
    assert "y has shape (3, 3, 5, 4), expected (3, 1, 5, 4)" in report.parts[1].lines[2]


def test_an_in_place_update_and_a_syntax_error_are_reported_readably(built, tmp_path):
    directory = copy_of(built["rnn"]["solution"], tmp_path)
    module = directory / "rnn_layers.py"
    solution = module.read_text()
    module.write_text(solution.replace("    h = np.tanh(", "    x *= 2\n    h = np.tanh("))
    assert "modified its input x in place" in grade("rnn", directory, [1]).parts[0].lines[0]
    module.write_text(solution + "\ndef broken(:\n")
    line = grade("rnn", directory, [1]).parts[0].lines[0]
    assert "cannot import rnn_layers.py: SyntaxError" in line and f"line {solution.count(chr(10)) + 2}" in line


# ----------------------------------------------------------------------------- command line
def test_cli_list_names_every_assignment(capsys):
    assert main(["assignment", "list"]) == 0
    out = capsys.readouterr().out
    for name, assignment in ASSIGNMENTS.items():
        assert name in out and assignment.title in out


def test_cli_build_writes_the_starter(tmp_path, capsys):
    assert main(["assignment", "build", "attention", "--out", str(tmp_path / "hw")]) == 0
    assert (tmp_path / "hw" / "attention_layers.py").exists()


def test_cli_unknown_name_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["assignment", "build", "transformer", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "NAME" in err and "'transformer'" in err and "rnn" in err


def test_cli_refuses_an_out_path_that_is_a_file_or_holds_other_work(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["assignment", "build", "rnn", "--out", str(target)]) == 2
    assert "--out" in capsys.readouterr().err
    build("rnn", tmp_path / "hw")
    (tmp_path / "hw" / "grade.py").write_text("# edited\n")
    assert main(["assignment", "build", "rnn", "--out", str(tmp_path / "hw")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--out" in err and "grade.py already exists" in err


def test_shipped_solutions_have_one_region_per_graded_function():
    for name, assignment in ASSIGNMENTS.items():
        source = resources.files("npllm.assignments").joinpath(name, f"{assignment.module}.py").read_text()
        graded = {part.function for part in assignment.parts if f"def {part.function}(" in source}
        assert source.count("# BEGIN SOLUTION") == len(graded)


def test_a_missing_gradient_earns_no_gradient_check_points(built, tmp_path):
    directory = copy_of(built["rnn"]["solution"], tmp_path)
    module = directory / "rnn_layers.py"
    module.write_text(module.read_text().replace("    db = da.sum(axis=0)\n", "    db = None\n"))
    part = grade("rnn", directory, [2]).parts[0]
    assert part.score == 0 and "db must be a numpy array, got NoneType" in part.lines[0]
