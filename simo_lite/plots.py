"""Shared plotting helpers: fixed sizes, titles and axis labels; every function returns the figure.

Save figures with ``Course.save_figure`` so they land in the run directory as PNG as well.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .scenes import CLASSES
from .tasks import get_task, get_tasks
from .types import Split, Tasks

__all__ = ["sample_grid", "prediction_grid", "class_frequencies", "metric_curve", "heatmap", "delta_m_bars"]


def _rows(n: int, available: int) -> int:
    """``n`` rows of a grid, checked against the ``available`` images (a clear error instead of an IndexError)."""
    if not 1 <= n <= available:
        raise ValueError(f"n must be in 1..{available} (the images given), got {n}")
    return n


def _show(ax, img, title=None):
    ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def sample_grid(data: Split, n: int = 4, tasks: Tasks = ("seg", "depth", "normals", "edges", "albedo"),
                title: str = "") -> Figure:
    """n scenes as rows; columns: the image, then every label rendered by its task's visualiser."""
    tasks = get_tasks(tasks)
    n = _rows(n, len(data["image"]))
    fig, axes = plt.subplots(n, 1 + len(tasks), figsize=(1.7 * (1 + len(tasks)), 1.7 * n), squeeze=False)
    for i in range(n):
        _show(axes[i, 0], data["image"][i].permute(1, 2, 0).numpy(), "image" if i == 0 else None)
        for j, t in enumerate(tasks, 1):
            _show(axes[i, j], get_task(t).visualize(data[t][i]), t if i == 0 else None)
    fig.suptitle(title or f"{n} scenes and their labels", fontsize=11)
    fig.tight_layout()
    return fig


def prediction_grid(images: torch.Tensor, rows: dict[str, dict[str, torch.Tensor]], task: str, n: int = 4,
                    title: str = "") -> Figure:
    """For one task: the input, then one column per entry of ``rows``, which maps a label (e.g. 'target',
    'expert', 'merged') to ``{task: predictions or labels (N, ...)}``, each drawn by the task's visualiser."""
    t = get_task(task)
    names = list(rows)
    n = _rows(n, min([len(images), *(len(r[task]) for r in rows.values())]))
    fig, axes = plt.subplots(n, 1 + len(names), figsize=(1.7 * (1 + len(names)), 1.7 * n), squeeze=False)
    for i in range(n):
        _show(axes[i, 0], images[i].permute(1, 2, 0).numpy(), "image" if i == 0 else None)
        for j, name in enumerate(names, 1):
            _show(axes[i, j], t.visualize(rows[name][task][i]), name if i == 0 else None)
    fig.suptitle(title or f"{task}: predictions", fontsize=11)
    fig.tight_layout()
    return fig


def class_frequencies(seg: torch.Tensor, title: str = "pixel share per class",
                      names: Sequence[str] | None = None) -> Figure:
    """Bar chart of the fraction of labelled pixels of each class in ``seg`` (N, H, W).

    ``names``: the class names (default: the Scenes classes); ignored pixels (-1) are not counted, and
    classes beyond ``names`` are shown by their id."""
    names = list(CLASSES if names is None else names)
    labelled = seg.flatten()
    labelled = labelled[labelled >= 0]
    counts = torch.bincount(labelled, minlength=len(names)).double()
    freq = counts / max(labelled.numel(), 1)
    names += [str(i) for i in range(len(names), len(counts))]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(names, freq.numpy(), color="tab:blue")
    ax.set_ylabel("fraction of pixels")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def metric_curve(x: Sequence[float], ys: dict[str, Sequence[float]], xlabel: str, ylabel: str, title: str,
                 mark_x: float | None = None) -> Figure:
    """Line plot of one or more curves sharing x (e.g. normalised performance against alpha)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, y in ys.items():
        ax.plot(x, y, marker="o", ms=3, label=name)
    if mark_x is not None:
        ax.axvline(mark_x, color="grey", ls="--", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def heatmap(matrix: Sequence[Sequence[float]] | np.ndarray | torch.Tensor, row_labels: Sequence[str],
            col_labels: Sequence[str], title: str, cbar_label: str = "", fmt: str = ".2f",
            cmap: str = "viridis") -> Figure:
    """Annotated heatmap (seaborn) of a 2-D array."""
    import seaborn as sns
    matrix = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(col_labels), 0.8 + 0.6 * len(row_labels)))
    sns.heatmap(matrix, annot=True, fmt=fmt, xticklabels=col_labels, yticklabels=row_labels, cmap=cmap, ax=ax,
                cbar_kws={"label": cbar_label})
    ax.set_title(title)
    fig.tight_layout()
    return fig


def delta_m_bars(tidy: Sequence[dict], kind: str = "ratio", title: str = "") -> Figure:
    """Bar plot (seaborn) of Δm per results-table row, the mean over seeds with SD error bars (sample SD;
    none for a single seed), one bar colour per task set (per run and task set when there are several runs).

    ``tidy``: tidy rows (:func:`simo_lite.report.tidy_rows`; each seed's Δm counts once per row);
    ``kind``: ``"ratio"`` (the paper's tables) or ``"relative"`` (Eq. 2)."""
    import pandas as pd
    import seaborn as sns
    if kind not in ("ratio", "relative"):
        raise ValueError(f"kind must be 'ratio' or 'relative', got {kind!r}")
    seen, points = set(), []
    runs = {r["run"] for r in tidy}
    for r in tidy:
        key = (r["run"], r["seed"], r["tasks"], r["row"])
        if key in seen or r[f"delta_m_{kind}"] is None:
            continue
        seen.add(key)
        points.append({"row": r["row"], "Δm (%)": 100 * r[f"delta_m_{kind}"],
                       "tasks": r["tasks"] if len(runs) == 1 else f"{r['run']}: {r['tasks']}"})
    if not points:
        raise ValueError("no Δm values to plot: the tidy rows are empty")
    df = pd.DataFrame(points)
    n_rows = df["row"].nunique()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * n_rows * max(1, df["tasks"].nunique()) + 2), 3.8))
    sns.barplot(data=df, x="row", y="Δm (%)", hue="tasks", errorbar="sd", capsize=0.15, ax=ax)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("")
    ax.set_ylabel(f"Δm ({'ratio' if kind == 'ratio' else 'Eq. 2'}, %)")
    n_seeds = len({r["seed"] for r in tidy})
    ax.set_title(title or f"Δm per row: mean ± SD over {n_seeds} seed{'s' if n_seeds != 1 else ''}")
    ax.tick_params(axis="x", labelrotation=45)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.legend(fontsize=8, title="")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig
