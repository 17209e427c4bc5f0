"""Matplotlib figures written to PNG files: loss curves, attention maps, gradient-check errors.

matplotlib is imported inside each function, so ``import npllm`` stays light.  The figures are built
with ``matplotlib.figure.Figure`` and rendered by the Agg canvas directly rather than through pyplot:
this works without a display, never switches the backend of the user's session (a notebook keeps its
inline plots), and registers nothing in pyplot's global figure list, so a figure is freed as soon as the
function returns (no ``plt.close`` to forget, no leak in a long training run).

``save_figure`` is the one exception: it writes a figure the caller drew with pyplot (the tutorials do),
so it is the one place that touches pyplot, to show that figure inline in a notebook or close it.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np


def _new_figure(width: float, height: float):
    """A Figure attached to an Agg canvas (headless, outside pyplot's global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def save_figure(fig, filename: str | os.PathLike, dpi: int = 110) -> None:
    """Write a pyplot figure as a PNG (path relative to the cwd); in a notebook, also show it inline."""
    import matplotlib.pyplot as plt

    fig.savefig(filename, dpi=dpi, bbox_inches="tight")
    print(f"saved {filename}")
    # Under Jupyter, show it as the cell's output; in a script, close it so pyplot drops the figure
    # (a script that draws many figures would otherwise keep them all alive).  Returns None so a
    # call ending a notebook cell prints no stray value.
    if "ipykernel" in sys.modules:
        plt.show()
    else:
        plt.close(fig)


def _save(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    figure.clear()   # drop the artists now; the figure itself is garbage once we return
    return path


def plot_loss_curve(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str | None = None,
                    log_scale: bool = False) -> Path:
    """Train and validation loss against step from rows of {"step", "train_loss", "val_loss"}; writes a PNG.

    A row's ``val_loss`` (or ``train_loss``) may be missing or None: validation runs every eval interval
    only.  ``log_scale=True`` puts the loss axis on a log scale (useful when the loss falls by orders of
    magnitude early on).
    """
    if len(rows) == 0:
        raise ValueError("rows: expected at least one row with a 'step', got an empty sequence")
    curves = {}
    for key, label in (("train_loss", "train"), ("val_loss", "val")):
        points = [(row["step"], row[key]) for row in rows if row.get(key) is not None]
        if points:
            curves[label] = points
    if not curves:
        raise ValueError("rows: no row has a 'train_loss' or 'val_loss' to plot")
    figure = _new_figure(7, 4.5)
    axes = figure.add_subplot()
    for label, points in curves.items():
        steps, losses = zip(*points)
        # Validation points are sparse (one per eval interval): show the markers so none hides in a line.
        axes.plot(steps, losses, label=label, marker="o" if label == "val" else None, markersize=3)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats/token)")
    if log_scale:
        axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    axes.legend()
    axes.set_title(title or "loss")
    figure.tight_layout()
    return _save(figure, path)


def plot_attention(weights: np.ndarray, x_labels: Sequence[str], y_labels: Sequence[str],
                   path: str | os.PathLike, title: str | None = None) -> Path:
    """Heatmap of attention weights (Tq, Tk): rows are queries (y_labels, Tq), columns keys (x_labels, Tk)."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2:
        raise ValueError(f"weights: expected shape (Tq, Tk), got {weights.shape}")
    n_query, n_key = weights.shape
    if len(x_labels) != n_key:
        raise ValueError(f"x_labels: expected {n_key} labels (one per key), got {len(x_labels)}")
    if len(y_labels) != n_query:
        raise ValueError(f"y_labels: expected {n_query} labels (one per query), got {len(y_labels)}")
    # Scale the figure with the number of tokens so labels stay readable, within sensible bounds.
    width = min(max(3 + 0.35 * n_key, 4), 20)
    height = min(max(2.5 + 0.35 * n_query, 3.5), 20)
    figure = _new_figure(width, height)
    axes = figure.add_subplot()
    image = axes.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=max(1e-12, weights.max()))
    # repr shows a newline or a tab as \n, \t instead of breaking the tick label.
    x_ticks = [repr(str(label))[1:-1] for label in x_labels]
    y_ticks = [repr(str(label))[1:-1] for label in y_labels]
    long_labels = max(map(len, x_ticks), default=0) > 2
    axes.set_xticks(range(n_key), x_ticks, rotation=90 if long_labels else 0, fontsize=8)
    axes.set_yticks(range(n_query), y_ticks, fontsize=8)
    axes.set_xlabel("key")
    axes.set_ylabel("query")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_title(title or "attention weights")
    figure.tight_layout()
    return _save(figure, path)


_NAME_FIELDS = ("name", "op", "param", "label")
_ERROR_FIELDS = ("max_error", "rel_error", "relative_error", "error")


def _field(row: Any, fields: Sequence[str], what: str):
    for field in fields:
        if isinstance(row, Mapping) and field in row:
            return row[field]
        if not isinstance(row, Mapping) and hasattr(row, field):
            return getattr(row, field)
    raise ValueError(f"report_rows: each row needs {what} field (one of {list(fields)}), got {row!r}")


def _names_and_errors(report_rows) -> tuple[list[str], np.ndarray]:
    """Accept (names, errors), rows (dicts or objects with name/max_error), or a report with .rows."""
    if hasattr(report_rows, "rows") and not isinstance(report_rows, Mapping):
        report_rows = report_rows.rows
    if (isinstance(report_rows, tuple) and len(report_rows) == 2
            and not isinstance(report_rows[0], (Mapping, str)) and isinstance(report_rows[0], Sequence)):
        names, errors = report_rows
    else:
        rows = list(report_rows)
        names = [_field(row, _NAME_FIELDS, "a name") for row in rows]
        errors = [_field(row, _ERROR_FIELDS, "an error") for row in rows]
    names = [str(name) for name in names]
    errors = np.asarray(errors, dtype=np.float64)
    if errors.shape != (len(names),):
        raise ValueError(f"errors: expected {len(names)} numbers (one per name), got shape {errors.shape}")
    if len(names) == 0:
        raise ValueError("report_rows: nothing to plot (no rows)")
    return names, errors


def plot_gradcheck_errors(report_rows, path: str | os.PathLike, tol: float, title: str | None = None) -> Path:
    """Bar chart of relative errors (log axis) with the tolerance line; bars above tol are red.

    report_rows: ``(names, errors)``, or rows — dicts or objects with a name (``name``/``op``/``param``)
    and an error (``max_error``/``rel_error``/``error``) — or a report object with ``.rows``.
    A zero error is drawn at the bottom of the axis; a NaN/inf error as a full-height hatched bar.
    """
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol: expected a finite number > 0, got {tol}")
    names, errors = _names_and_errors(report_rows)
    finite = np.isfinite(errors)
    positive = errors[finite & (errors > 0)]
    # A log axis cannot show 0: put the floor two decades under the smallest positive value (or tol).
    floor = min(positive.min() if positive.size else tol, tol) / 100
    ceiling = max(positive.max() if positive.size else tol, tol) * 100
    heights = np.where(finite, np.maximum(errors, floor), ceiling)
    colors = ["tab:green" if ok and err <= tol else "tab:red" for ok, err in zip(finite, errors)]
    figure = _new_figure(min(max(4, 0.45 * len(names) + 2), 24), 4.5)
    axes = figure.add_subplot()
    bottom = floor / 10   # bars start under the floor so a zero error still shows as a stub
    bars = axes.bar(range(len(names)), heights - bottom, bottom=bottom, color=colors)
    for bar, error in zip(bars, errors):
        if not np.isfinite(error) or error == 0:
            if not np.isfinite(error):
                bar.set_hatch("//")   # not a number: the check itself broke, not merely a large error
            axes.annotate(f"{error:g}", (bar.get_x() + bar.get_width() / 2, bar.get_height() + bottom),
                          xytext=(0, -12 if np.isfinite(error) else -24), textcoords="offset points",
                          ha="center", fontsize=8, color="white" if not np.isfinite(error) else "black")
    axes.axhline(tol, color="black", linestyle="--", linewidth=1)
    axes.annotate(f"tol {tol:g}", (1.0, tol), xycoords=("axes fraction", "data"), xytext=(4, 0),
                  textcoords="offset points", va="center", fontsize=8)
    axes.set_yscale("log")
    axes.set_ylim(bottom, ceiling)
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    axes.set_ylabel("relative error")
    axes.set_title(title or f"gradient check ({int(np.sum(finite & (errors <= tol)))}/{len(names)} pass)")
    figure.tight_layout()
    return _save(figure, path)
