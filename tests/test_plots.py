"""Specification of npllm.plots: each figure lands as a real PNG and leaves no figure behind."""
import subprocess
import sys
import types
from typing import NamedTuple

import numpy as np
import pytest

from npllm.plots import plot_attention, plot_gradcheck_errors, plot_loss_curve, save_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1000   # a real rendered figure, not just a header


def open_pyplot_figures():
    import matplotlib.pyplot as plt
    return plt.get_fignums()


def test_loss_curve_with_sparse_validation_writes_png(tmp_path):
    rows = [{"step": s, "train_loss": 4.0 / (1 + s), "val_loss": 4.2 / (1 + s) if s % 10 == 0 else None}
            for s in range(0, 50)]
    rows.append({"step": 50, "train_loss": 0.1})   # val_loss may be missing entirely
    before = open_pyplot_figures()
    path = plot_loss_curve(rows, tmp_path / "sub" / "loss.png", title="tiny run")
    assert path == tmp_path / "sub" / "loss.png"
    assert_png(path)
    assert open_pyplot_figures() == before


def test_loss_curve_log_scale(tmp_path):
    rows = [{"step": s, "train_loss": 10.0 ** -s, "val_loss": None} for s in range(5)]
    assert_png(plot_loss_curve(rows, tmp_path / "loss.png", log_scale=True))


def test_loss_curve_rejects_rows_without_losses(tmp_path):
    with pytest.raises(ValueError, match="rows"):
        plot_loss_curve([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no row has"):
        plot_loss_curve([{"step": 0, "val_loss": None}], tmp_path / "x.png")


def test_attention_heatmap_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((4, 6))
    weights = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    keys = list("hello\n")
    path = plot_attention(weights, keys, ["q0", "q1", "q2", "q3"], tmp_path / "attn.png", title="head 0")
    assert_png(path)


def test_attention_rejects_label_count_mismatch(tmp_path):
    with pytest.raises(ValueError, match="x_labels: expected 3 labels"):
        plot_attention(np.full((2, 3), 1 / 3), ["a", "b"], ["x", "y"], tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"weights: expected shape \(Tq, Tk\)"):
        plot_attention(np.zeros((1, 2, 3)), ["a"] * 3, ["x"] * 2, tmp_path / "a.png")


def test_gradcheck_errors_from_names_and_errors(tmp_path):
    names = ["linear", "layer_norm", "lstm", "attention", "broken"]
    errors = [1e-10, 3e-9, 0.0, 2e-3, float("nan")]   # a zero and a NaN must still draw on a log axis
    assert_png(plot_gradcheck_errors((names, errors), tmp_path / "gc.png", tol=1e-6))


class Row(NamedTuple):
    name: str
    max_error: float


def test_gradcheck_errors_from_rows_dicts_and_objects(tmp_path):
    rows = [{"name": "tanh", "max_error": 1e-11}, {"name": "gelu", "max_error": 5e-8}]
    assert_png(plot_gradcheck_errors(rows, tmp_path / "gc_dicts.png", tol=1e-7))
    objects = [Row("rnn", 1e-9), Row("gru", 2e-5)]
    assert_png(plot_gradcheck_errors(objects, tmp_path / "gc_rows.png", tol=1e-7))


def test_gradcheck_errors_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="tol"):
        plot_gradcheck_errors((["a"], [1.0]), tmp_path / "x.png", tol=0)
    with pytest.raises(ValueError, match="errors: expected 2 numbers"):
        plot_gradcheck_errors((["a", "b"], [1.0]), tmp_path / "x.png", tol=1e-6)
    with pytest.raises(ValueError, match="each row needs an error field"):
        plot_gradcheck_errors([{"name": "a"}], tmp_path / "x.png", tol=1e-6)


def pyplot_figure():
    import matplotlib
    matplotlib.use("Agg")   # headless, whatever the test machine's default backend
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(figsize=(3, 2))
    axes.plot([0, 1, 2], [2, 0, 1])
    return plt, fig


def test_save_figure_writes_png_in_the_current_directory_and_closes_the_figure(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)   # a script, not a notebook
    plt, fig = pyplot_figure()
    assert fig.number in plt.get_fignums()
    assert save_figure(fig, "curve.png") is None   # nothing for a notebook cell to echo
    assert_png(tmp_path / "curve.png")
    assert capsys.readouterr().out == "saved curve.png\n"
    assert fig.number not in plt.get_fignums()


def test_save_figure_in_a_notebook_shows_the_figure_instead_of_closing_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    plt, fig = pyplot_figure()
    shown = []
    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: shown.append(True))
    save_figure(fig, "inline.png", dpi=50)
    assert_png(tmp_path / "inline.png")
    assert shown == [True]
    assert fig.number in plt.get_fignums()   # pyplot's inline backend shows, then closes it itself
    plt.close(fig)


def test_importing_plots_does_not_import_matplotlib():
    code = "import sys, npllm, npllm.plots; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
