"""Every tutorial runs top to bottom as a script (NPLLM_FAST=1) from a copy of tutorials/, writes its
figures into the current directory, is indexed in tutorials/README.md, and converts to a notebook."""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

TUTORIALS_DIR = Path(__file__).resolve().parents[1] / "tutorials"
TUTORIALS = sorted(TUTORIALS_DIR.glob("[0-9][0-9]_*.py"))
# The PNG files each tutorial must write (the figures its text refers to).
FIGURES = {
    "01_softmax_cross_entropy": ["01_softmax_cross_entropy.png"],
    "02_embeddings": ["02_embeddings.png"],
    "03_rnn_bptt": ["03_rnn_bptt.png"],
    "04_lstm": ["04_lstm_gradient_flow.png"],
    "05_attention": ["05_attention.png"],
    "06_gpt": ["06_gpt_loss.png", "06_gpt_attention.png"],
    "07_seq2seq_attention": ["07_seq2seq_loss.png", "07_seq2seq_alignment.png"],
    "08_gradient_checking": ["08_gradcheck_epsilon.png", "08_gradcheck_bugs.png"],
    "09_numba_cpu_kernel": ["09_numba_matmul.png"],
    "10_numba_cuda_kernel": ["10_cuda_grid.png"],
    "11_gpt2_to_llama": ["11_rope.png", "11_gpt_vs_llama_loss.png"],
}
TIME_LIMIT = 120          # seconds per tutorial under NPLLM_FAST=1 (they take 2-20 s on 2 cores)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_every_tutorial_is_listed_here_and_indexed_in_the_readme():
    assert [path.stem for path in TUTORIALS] == list(FIGURES)
    readme = (TUTORIALS_DIR / "README.md").read_text(encoding="utf-8")
    for path in TUTORIALS:
        assert f"]({path.name})" in readme, f"{path.name} is not linked from tutorials/README.md"
        for figure in FIGURES[path.stem]:
            assert figure in readme


@pytest.mark.parametrize("tutorial", TUTORIALS, ids=[path.stem for path in TUTORIALS])
def test_tutorial_runs_as_a_script_and_writes_its_figures(tutorial, tmp_path):
    workdir = tmp_path / "tutorials"
    shutil.copytree(TUTORIALS_DIR, workdir, ignore=shutil.ignore_patterns("*.png", "__pycache__"))
    env = dict(os.environ, NPLLM_FAST="1", MPLBACKEND="Agg",
               # The tutorials multiply small matrices; a multi-threaded BLAS only adds spinning threads
               # that fight for the CI runner's two cores (docs/performance.md).
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("NPLLM_BACKEND", None)            # the tutorials are about the NumPy reference
    started = time.perf_counter()
    done = subprocess.run([sys.executable, tutorial.name], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=TIME_LIMIT)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, (f"{tutorial.name} failed after {seconds:.1f} s:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    for figure in FIGURES[tutorial.stem]:
        path = workdir / figure
        assert path.exists(), f"{tutorial.name} did not write {figure}"
        assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 5_000
        assert f"saved {figure}" in done.stdout


@pytest.mark.parametrize("tutorial", TUTORIALS, ids=[path.stem for path in TUTORIALS])
def test_tutorial_is_a_percent_format_notebook_with_summary_and_exercises(tutorial):
    text = tutorial.read_text(encoding="utf-8")
    assert text.count("# %% [markdown]") >= 5 and re.search(r"^# %%$", text, re.MULTILINE)
    assert "## Summary" in text and "## Exercises" in text and "## Check" in text
    assert "import npllm" in text or "from npllm" in text


def test_tutorials_convert_to_notebooks(tmp_path):
    jupytext = pytest.importorskip("jupytext")
    for tutorial in TUTORIALS:
        notebook = jupytext.read(tutorial)
        kinds = [cell.cell_type for cell in notebook.cells]
        assert kinds[0] == "markdown" and kinds.count("code") >= 5, tutorial.name
        assert any("$" in cell.source for cell in notebook.cells if cell.cell_type == "markdown")
        jupytext.write(notebook, tmp_path / f"{tutorial.stem}.ipynb")
