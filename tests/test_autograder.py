"""The autograder under attack: student code is isolated, hidden cases cannot be copied, results are usable.

Each attack is planted in one function of an otherwise correct submission, so the test can check both
halves of the promise: that part earns nothing, and every other part is still graded (full marks).
Timeouts are short (3 s) so the infinite loop costs little.
"""
import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from npllm.assignments import ASSIGNMENTS, build, grade, grade_submissions
from npllm.assignments.report import gradescope_results

TIMEOUT = 3.0
NAMES = sorted(ASSIGNMENTS)


@pytest.fixture(scope="module")
def solution(tmp_path_factory):
    """The rnn teacher's copy (solutions in place), built once."""
    directory = tmp_path_factory.mktemp("rnn") / "solution"
    build("rnn", directory, solution=True)
    return directory


def plant(directory, tmp_path, body, function="rnn_backward", name="attacked"):
    """A copy of ``directory`` whose ``function`` runs ``body`` (indented code) before anything else."""
    target = tmp_path / name
    shutil.copytree(directory, target)
    module = target / "rnn_layers.py"
    lines = module.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"def {function}("))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].rstrip().endswith('"""')
               and (i > start + 1 or lines[i].count('"""') == 2))
    lines[end + 1:end + 1] = ["    " + line for line in body.strip("\n").splitlines()]
    module.write_text("\n".join(lines) + "\n")
    return target


# Each attack, planted in rnn_backward (part 4).  The other parts must still earn 2 + 4 + 2 points.
ATTACKS = {
    "infinite loop": "while True:\n    pass",
    "sys.exit": "import sys\nsys.exit(0)",
    "os._exit": "import os\nos._exit(0)",
    "segfault": "import ctypes\nctypes.string_at(0)",
    "patching the grader": "from npllm.assignments import grading\ngrading.compare = lambda *args: 0.0\n"
                           "grading.Check.passed = True\nreturn (None,) * 5",
    "importing the reference": "from npllm.layers import rnn_backward as reference\n"
                               "return reference(dhs, cache)",
    "hiding a reference import": "try:\n    import npllm.layers\nexcept BaseException:\n    pass\n"
                                 "return (None,) * 5",
    "removing the import blocker": "import sys\n"
                                   "sys.meta_path[:] = [f for f in sys.meta_path if 'Blocker' not in repr(f)]\n"
                                   "from npllm.layers import rnn_backward as reference\n"
                                   "return reference(dhs, cache)",
    "allocating 800 GB": "import numpy as np\nreturn (np.ones(10**11),) * 5",
    "deleting files": "import pathlib, shutil\nhere = pathlib.Path(__file__).resolve().parent\n"
                      "for path in here.parent.iterdir():\n"
                      "    shutil.rmtree(path) if path.is_dir() else path.unlink()",
}
EXPECTED_LINE = {"infinite loop": "timed out after 3 s", "sys.exit": "called sys.exit(0)", "os._exit": "os._exit",
                 "segfault": "crashed the Python process", "patching the grader": "the reference may not be used",
                 "importing the reference": "the reference may not be used",
                 "hiding a reference import": "the reference may not be used",
                 "removing the import blocker": "the reference may not be used",
                 "allocating 800 GB": "MemoryError", "deleting files": "scratch files"}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_an_attack_earns_nothing_for_its_part_and_the_other_parts_are_graded(solution, tmp_path, attack):
    directory = plant(solution, tmp_path, ATTACKS[attack])
    (tmp_path / "neighbour").mkdir()
    (tmp_path / "neighbour" / "work.txt").write_text("another student's work")
    report = grade("rnn", directory, timeout=TIMEOUT)
    assert [part.score for part in report.parts] == [2, 4, 2, 0], str(report)
    if attack == "allocating 800 GB":      # an exception like any other: reported case by case
        assert all(EXPECTED_LINE[attack] in line for line in report.parts[3].lines)
    else:                                  # the child could not go on: one line for the part
        assert report.parts[3].lines == [report.parts[3].error]
        assert EXPECTED_LINE[attack] in report.parts[3].error, report.parts[3].lines
    # nothing outside the scratch copy was touched: the submission and its neighbours are intact
    assert (tmp_path / "neighbour" / "work.txt").read_text() == "another student's work"
    assert sorted(p.name for p in directory.iterdir()) == sorted(p.name for p in solution.iterdir())


def test_numpy_and_npllm_gradcheck_may_be_used(solution, tmp_path):
    body = "import numpy.linalg\nfrom npllm.gradcheck import relative_error\nassert relative_error(1.0, 1.0) == 0"
    assert grade("rnn", plant(solution, tmp_path, body), timeout=30).score == 12


def test_sys_exit_at_import_fails_every_part_with_one_line_and_grading_still_finishes(solution, tmp_path):
    target = tmp_path / "exits"
    shutil.copytree(solution, target)
    module = target / "rnn_layers.py"
    module.write_text("import sys\nsys.exit(0)\n" + module.read_text())
    results = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "grade.py", "--json", str(results)], cwd=target, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "total 0/12" in done.stdout
    assert "cannot import rnn_layers.py: it called sys.exit(0)" in done.stdout
    assert json.loads(results.read_text())["score"] == 0 and len(json.loads(results.read_text())["tests"]) == 12


def test_returning_the_visible_expected_values_whatever_the_input_fails_the_hidden_cases(solution, tmp_path):
    body = ("import json, numpy as np\n"
            "case = json.load(open('visible_cases.json'))['parts'][2]['cases'][0]['expected'][0]\n"
            "return np.array(case['data']).reshape(case['shape']), None")
    report = grade("rnn", plant(solution, tmp_path, body, function="rnn_forward"), [3], timeout=TIMEOUT)
    visible, *hidden = report.parts[0].cases
    assert visible.passed and not visible.hidden
    assert report.parts[0].score == 0 and all(case.hidden and not case.passed for case in hidden)


def test_hidden_cases_are_drawn_from_the_seed_recorded_in_the_results(solution):
    first, again, other = (grade("rnn", solution, [1], seed=seed) for seed in (7, 7, 8))
    assert first.seed == 7 and "seed 7" in gradescope_results(first)["output"]
    assert first.parts[0].cases[1].lines == again.parts[0].cases[1].lines
    assert grade("rnn", solution, [1]).seed != grade("rnn", solution, [1]).seed   # fresh by default
    assert other.parts[0].score == first.parts[0].score == 2


def test_a_wrong_gradient_gets_partial_credit_with_the_reason(solution, tmp_path):
    target = tmp_path / "half"
    shutil.copytree(solution, target)
    module = target / "rnn_layers.py"
    module.write_text(module.read_text().replace("    db = da.sum(axis=0)\n", "    db = 2 * da.sum(axis=0)\n"))
    part = grade("rnn", target, [2], timeout=TIMEOUT).parts[0]
    assert part.score == 0
    assert "relative error db" in part.lines[1] and "db differs from the expected values" in part.lines[1]
    module.write_text(module.read_text().replace("    h = np.tanh(x @ Wx + h_prev @ Wh + b)\n",
                                                 "    h = np.tanh(x @ Wx + h_prev @ Wh + b) * 2\n"))
    assert "not counted until rnn_step_forward is right" in grade("rnn", target, [2]).parts[0].lines[1]


GRADESCOPE_TOP = {"score", "max_score", "execution_time", "output", "visibility", "stdout_visibility", "tests"}
GRADESCOPE_TEST = {"name", "number", "score", "max_score", "status", "output", "visibility"}


def validate_gradescope(results: dict) -> None:
    assert set(results) == GRADESCOPE_TOP
    assert isinstance(results["score"], (int, float)) and isinstance(results["max_score"], (int, float))
    assert isinstance(results["execution_time"], (int, float)) and isinstance(results["output"], str)
    assert results["visibility"] in {"visible", "hidden", "after_due_date", "after_published"}
    assert results["stdout_visibility"] in {"visible", "hidden", "after_due_date", "after_published"}
    assert results["tests"] and abs(sum(t["score"] for t in results["tests"]) - results["score"]) < 1e-9
    for test in results["tests"]:
        assert set(test) == GRADESCOPE_TEST
        assert isinstance(test["name"], str) and isinstance(test["number"], str)
        assert isinstance(test["output"], str) and test["status"] in {"passed", "failed"}
        assert 0 <= test["score"] <= test["max_score"]
        assert test["visibility"] in {"visible", "after_published"}
    json.dumps(results, allow_nan=False)


def test_results_json_has_exactly_gradescopes_fields_and_hidden_cases_after_published(solution, tmp_path):
    report = grade("rnn", plant(solution, tmp_path, "while True:\n    pass"), timeout=TIMEOUT)
    results = gradescope_results(report)
    validate_gradescope(results)
    assert results["score"] == 8 and results["max_score"] == 12
    hidden = [t for t in results["tests"] if t["visibility"] == "after_published"]
    assert hidden and all("hidden" in t["name"] for t in hidden)
    assert all(t["max_score"] == 0 for t in results["tests"] if t["visibility"] == "visible")
    assert [t["status"] for t in results["tests"] if t["number"].startswith("4.")] == ["failed"] * 3


def test_batch_grading_writes_one_csv_row_and_one_results_json_per_student(solution, tmp_path):
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    starter = tmp_path / "starter"
    build("rnn", starter)
    shutil.copytree(solution, submissions / "ada")
    shutil.copytree(starter, submissions / "bob")
    (submissions / "cy.py").write_text((solution / "rnn_layers.py").read_text())      # a single file
    nested = submissions / "dee" / "hw3"
    nested.mkdir(parents=True)
    shutil.copy(solution / "rnn_layers.py", nested)                                     # zipped with a folder
    (submissions / "eve").mkdir()                                                        # nothing handed in
    for student, attack in [("fay", "infinite loop"), ("gus", "sys.exit"), ("hal", "segfault"),
                            ("ivy", "importing the reference"), ("jo", "deleting files")]:
        attacked = plant(solution, tmp_path, ATTACKS[attack], name=student)
        shutil.move(str(attacked), submissions / student)
    rows = grade_submissions(submissions, "rnn", tmp_path / "out" / "grades.csv", timeout=TIMEOUT)
    with open(tmp_path / "out" / "grades.csv", newline="") as handle:
        table = {row["student"]: row for row in csv.DictReader(handle)}
    assert len(rows) == len(table) == 10
    totals = {student: float(row["total"]) for student, row in table.items()}
    assert totals == {"ada": 12, "bob": 0, "cy": 12, "dee": 12, "eve": 0, "fay": 8, "gus": 8, "hal": 8,
                      "ivy": 8, "jo": 8}
    assert table["eve"]["status"] == "missing rnn_layers.py"
    assert "part 4: timed out" in table["fay"]["status"] and table["ada"]["status"] == "graded"
    assert table["ada"]["part 2 rnn_step_backward"] == "4"
    for student in set(table) - {"eve"}:
        validate_gradescope(json.loads((tmp_path / "out" / "grades_results" / student / "results.json").read_text()))


def test_cli_grade_writes_the_csv_and_refuses_bad_flags_in_one_line(solution, tmp_path, capsys):
    from npllm.commands import main

    submissions = tmp_path / "submissions"
    submissions.mkdir()
    (submissions / "ada.py").write_text((solution / "rnn_layers.py").read_text())
    out = tmp_path / "grades.csv"
    assert main(["assignment", "grade", str(submissions), "--assignment", "rnn", "--out", str(out)]) == 0
    assert "ada" in out.read_text() and (tmp_path / "grades_results" / "ada" / "results.json").exists()
    for argv, flag in [([str(submissions), "--assignment", "transformer"], "--assignment"),
                       ([str(tmp_path / "nowhere"), "--assignment", "rnn"], "SUBMISSIONS_DIR"),
                       ([str(submissions), "--assignment", "rnn", "--timeout", "0"], "--timeout")]:
        capsys.readouterr()
        assert main(["assignment", "grade", *argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and flag in err


def test_a_gpt_whose_attention_passes_no_gradient_fails_the_training_part(tmp_path):
    directory = tmp_path / "gpt"
    build("gpt", directory, solution=True)
    module = directory / "gpt_layers.py"
    zeros = ("    dx, dW_qkv, db_qkv, dW_out, db_out = (np.zeros_like(a) for a in (x, W_qkv, W_qkv[0], W_out, "
             "W_out[0]))\n")
    module.write_text(module.read_text().replace("    dx = dqkv @ W_qkv.T\n", zeros))
    train = grade("gpt", directory, [4], timeout=60).parts[0]
    assert train.score == 0 and "too high" in train.lines[0] and "re-scored with npllm's layers" in train.lines[0]


def test_a_rope_that_ignores_theta_passes_the_visible_case_and_fails_the_hidden_case_that_changes_it(tmp_path):
    directory = tmp_path / "llama"
    build("llama", directory, solution=True)
    module = directory / "llama_layers.py"
    module.write_text(module.read_text().replace("1.0 / theta ** (", "1.0 / 10000.0 ** ("))
    part = grade("llama", directory, [1], timeout=60).parts[0]
    visible, first, second = part.cases
    assert visible.passed and first.passed and not second.passed and part.score == 1
    assert "theta=100.0" in second.description and "y differs from the expected values" in part.lines[2]


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gradcheck") / "solution"
    build("gradcheck", directory, solution=True)
    return directory


def test_the_shipped_softmax_backward_is_the_one_the_solution_checker_flags(checker, monkeypatch):
    monkeypatch.syspath_prepend(str(checker))
    import gradient_checker
    import layers_to_check as provided

    rng = np.random.default_rng(0)
    x, W, b = rng.standard_normal((2, 3)), rng.standard_normal((3, 4)), rng.standard_normal(4)
    errors = {name: max(gradient_checker.check_layer(getattr(provided, f"{name}_forward"),
                                                     getattr(provided, f"{name}_backward"), inputs,
                                                     rng.standard_normal(shape)))
              for name, inputs, shape in [("affine", [x, W, b], (2, 4)), ("sigmoid", [x], (2, 3)),
                                          ("softmax", [x], (2, 3))]}
    assert errors["affine"] < 1e-8 and errors["sigmoid"] < 1e-8 and errors["softmax"] > 1e-2


@pytest.mark.parametrize("old, new, part, message", [
    ("        x[index] = original                      # restore", "        pass  # no restore", 1,
     "x was left changed"),
    ("    return [relative_error(grad, numerical_gradient(loss, x, h)) for grad, x in zip(grads, inputs)]",
     "    return [0.0] * len(inputs)", 3, "wanted dW above 0.001"),
])
def test_a_checker_that_misses_its_job_loses_that_part(checker, tmp_path, old, new, part, message):
    target = tmp_path / "checker"
    shutil.copytree(checker, target)
    module = target / "gradient_checker.py"
    assert old in module.read_text()
    module.write_text(module.read_text().replace(old, new))
    report = grade("gradcheck", target, timeout=30)
    assert report.parts[part - 1].score == 0 and any(message in line for line in report.parts[part - 1].lines)
    assert [report.parts[1].score, report.parts[3].score] == [3, 4]   # the parts that do not use it


def test_the_teachers_copy_has_a_gradescope_autograder_that_grades_the_submission_folder(solution, tmp_path):
    run_autograder = (solution / "gradescope" / "run_autograder").read_text()
    assert "grade.py --submission /autograder/submission --json /autograder/results/results.json" in run_autograder
    assert (solution / "gradescope" / "setup.sh").stat().st_mode & 0o111
    submission = tmp_path / "submission"       # what a student uploads: the starter module, unchanged
    build("rnn", tmp_path / "starter")
    submission.mkdir()
    shutil.copy(tmp_path / "starter" / "rnn_layers.py", submission)
    results = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "grade.py", "--submission", str(submission), "--json", str(results)],
                          cwd=solution, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    validate_gradescope(json.loads(results.read_text()))
    assert json.loads(results.read_text())["score"] == 0     # the submission was graded, not the solution
    nested = tmp_path / "zipped" / "hw3"                      # uploaded as a zip with a folder inside
    nested.mkdir(parents=True)
    shutil.copy(solution / "rnn_layers.py", nested)
    done = subprocess.run([sys.executable, "grade.py", "--submission", str(tmp_path / "zipped"), "--json",
                           str(results)], cwd=tmp_path / "starter", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and json.loads(results.read_text())["score"] == 12
