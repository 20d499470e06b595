"""Shared plotting helpers: fixed sizes, titles and axis labels; every function returns the figure.

Show figures with ``Course.show_figure`` (rendered once: shown and saved as PNG in the run directory).
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

__all__ = ["sample_grid", "prediction_grid", "class_frequencies", "metric_curve", "heatmap", "delta_m_bars",
           "simo_diagram", "merged_under_heads_diagram", "budget_tries"]


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


# ----------------------------------------------------------------------------------------------
# Diagrams (drawn, no data): the SIMO model, and the merged encoder under the experts' heads
# ----------------------------------------------------------------------------------------------
_BLOCK, _TAP, _HEAD, _OUT, _IMG = "#c6dbef", "#fd8d3c", "#a1d99b", "#f0f0f0", "#dadaeb"
_EXPERT, _MERGED, _BAD = "#9ecae1", "#fdae6b", "#d62728"


def _tex(name: str) -> str:
    """A task name inside mathtext (``\\mathrm{...}``, underscores escaped)."""
    return r"\mathrm{" + name.replace("_", r"\_") + "}"


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str, fontsize: float = 8,
         **kw: object) -> None:
    """A rounded box with lower-left corner (x, y) and ``text`` at its centre."""
    from matplotlib.patches import FancyBboxPatch
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", facecolor=color,
                                edgecolor=kw.pop("edgecolor", "black"), linewidth=kw.pop("linewidth", 0.8), **kw))
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], color: str = "black", lw: float = 1.0,
           ls: str = "-", rad: float = 0.0) -> None:
    """An arrow from ``start`` to ``end`` (data coordinates)."""
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle="-|>", color=color, lw=lw, linestyle=ls, shrinkA=0, shrinkB=0,
                                connectionstyle=f"arc3,rad={rad}"))


def simo_diagram(tasks: Tasks, depth: int = 12, taps: Sequence[int] | None = None, title: str = "") -> Figure:
    """The SIMO model as a diagram: one image -> one shared encoder (``depth`` blocks, the tapped ones
    highlighted) -> one head per task -> one dense output per task.

    ``taps``: 0-based indices of the blocks the heads read (default: 4 evenly spaced blocks, the last
    included, as the course's encoders)."""
    from matplotlib.patches import Patch
    from .profiles import evenly_spaced_taps
    tasks = get_tasks(tasks)
    taps = tuple(evenly_spaced_taps(depth) if taps is None else taps)
    if not taps or any(not 0 <= i < depth for i in taps):
        raise ValueError(f"taps must be block indices in 0..{depth - 1}, got {taps}")
    n = len(tasks)
    height = max(4.0, 1.0 * n + 1.2)
    mid = height / 2
    fig, ax = plt.subplots(figsize=(11, 0.55 * height + 1.4))
    ax.set_xlim(-0.1, 11.4)
    ax.set_ylim(-0.6, height + 0.5)
    ax.axis("off")

    _box(ax, 0.0, mid - 0.6, 1.3, 1.2, "input image\n$x$\n(3, H, W)", _IMG)
    x0, x1 = 1.9, 6.1                                        # the encoder's blocks span [x0, x1]
    step = (x1 - x0) / depth
    bh = 2.2
    for i in range(depth):
        tapped = i in taps
        _box(ax, x0 + i * step + 0.08 * step, mid - bh / 2, 0.84 * step, bh, "", _TAP if tapped else _BLOCK,
             linewidth=1.4 if tapped else 0.6)
        ax.text(x0 + (i + 0.5) * step, mid - bh / 2 - 0.22, str(i + 1), ha="center", va="top", fontsize=6.5,
                fontweight="bold" if tapped else "normal")
    ax.text((x0 + x1) / 2, mid + bh / 2 + 0.4, r"one shared encoder $f_\theta$ (ViT blocks)", ha="center",
            fontsize=9)
    ax.text((x0 + x1) / 2, mid - bh / 2 - 0.6, "block", ha="center", fontsize=7, color="dimgray")
    _arrow(ax, (1.3, mid), (x0 + 0.08 * step, mid))

    fx = 6.6                                                 # the features: the tapped blocks stacked
    _box(ax, fx, mid - 0.8, 1.15, 1.6, f"features\n$F$\n({len(taps)} taps,\n2C channels)", _TAP, fontsize=7)
    bus = mid + bh / 2 + 0.2
    for i in taps:
        cx = x0 + (i + 0.5) * step
        ax.plot([cx, cx], [mid + bh / 2, bus], color=_TAP, lw=1.2)
    ax.plot([x0 + (taps[0] + 0.5) * step, fx + 0.575], [bus, bus], color=_TAP, lw=1.2)
    _arrow(ax, (fx + 0.575, bus), (fx + 0.575, mid + 0.8), color=_TAP, lw=1.2)

    ys = [height - 0.6 - k * (height - 1.2) / max(n - 1, 1) for k in range(n)] if n > 1 else [mid]
    for t, y in zip(tasks, ys):
        _box(ax, 8.3, y - 0.35, 1.25, 0.7, f"{t} head\n$h_{{{_tex(t)}}}$", _HEAD, fontsize=7.5)
        _arrow(ax, (fx + 1.15, mid), (8.3, y), lw=0.9)
        _box(ax, 10.0, y - 0.35, 1.35, 0.7, f"{t} map\n({get_task(t).channels}, H, W)", _OUT, fontsize=7.5)
        _arrow(ax, (9.55, y), (10.0, y), lw=0.9)
    handles = [Patch(facecolor=_BLOCK, edgecolor="black", label="transformer block"),
               Patch(facecolor=_TAP, edgecolor="black", label="tapped block (read by every head)"),
               Patch(facecolor=_HEAD, edgecolor="black", label="task head (one per task)"),
               Patch(facecolor=_OUT, edgecolor="black", label="dense output (one per task)")]
    ax.legend(handles=handles, loc="lower left", fontsize=7.5, ncol=4, frameon=False, bbox_to_anchor=(0.0, -0.12))
    ax.set_title(title or f"SIMO: one image, one encoder, {n} heads ({', '.join(tasks)})", fontsize=10)
    fig.tight_layout()
    return fig


def merged_under_heads_diagram(tasks: Tasks, title: str = "") -> Figure:
    """Merging in SIMO as a diagram. Left: each expert's encoder θ_t with its own head φ_t (trained
    together). Middle: their task vectors τ_t = θ_t − θ₀ summed into one merged encoder θ₀ + α Σ_t τ_t.
    Right: that merged encoder feeds all the experts' heads, each trained on another encoder's features
    (the mismatch, marked with a red cross)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    tasks = get_tasks(tasks)
    n = len(tasks)
    height = max(4.0, 1.05 * n + 0.8)
    mid = height / 2
    ys = [height - 0.6 - k * (height - 1.2) / max(n - 1, 1) for k in range(n)] if n > 1 else [mid]
    fig, ax = plt.subplots(figsize=(12, 0.6 * height + 1.6))
    ax.set_xlim(-0.1, 12.3)
    ax.set_ylim(-0.8, height + 0.6)
    ax.axis("off")

    ax.text(1.45, height + 0.3, "experts: each encoder with its own head", ha="center", fontsize=9)
    for t, y in zip(tasks, ys):
        _box(ax, 0.0, y - 0.32, 1.15, 0.64, f"{t} head\n$\\phi_{{{_tex(t)}}}$", _HEAD, fontsize=7.5)
        _box(ax, 1.6, y - 0.32, 1.3, 0.64, f"expert encoder\n$\\theta_{{{_tex(t)}}}$", _EXPERT, fontsize=7.5)
        _arrow(ax, (1.6, y), (1.15, y), color="tab:green", lw=1.6)
        ax.text(1.375, y + 0.4, "fits", ha="center", fontsize=6.5, color="tab:green")
        _arrow(ax, (2.9, y), (5.0, mid + 0.35 * (y - mid) / max(height / 2, 1)), color="dimgray", lw=0.9, ls="--")
    ax.text(3.95, ys[0] + 0.45, r"task vectors $\tau_t = \theta_t - \theta_0$", ha="center",
            fontsize=8, color="dimgray")
    _box(ax, 5.0, mid - 0.75, 2.0, 1.5, "merged encoder\n" + r"$\theta_0 + \alpha\,\Sigma_t\,\tau_t$", _MERGED,
         fontsize=8.5)
    ax.text(6.0, mid - 1.0, "one encoder for all tasks", ha="center", va="top", fontsize=7.5)

    ax.text(9.6, height + 0.3, "the experts' heads, kept as they were", ha="center", fontsize=9)
    for t, y in zip(tasks, ys):
        _arrow(ax, (7.0, mid), (8.6, y), color=_BAD, lw=1.2)
        ax.plot([8.25], [mid + (y - mid) * 1.25 / 1.6], marker="X", color=_BAD, markersize=8, linestyle="none")
        _box(ax, 8.6, y - 0.32, 1.2, 0.64, f"{t} head\n$\\phi_{{{_tex(t)}}}$", _HEAD, fontsize=7.5,
             edgecolor=_BAD, linewidth=1.5)
        _box(ax, 10.3, y - 0.32, 1.9, 0.64, f"{t} output, read from\nfeatures this head\nwas not trained on", _OUT,
             fontsize=6.5)
        _arrow(ax, (9.8, y), (10.3, y), lw=0.8)
    handles = [Patch(facecolor=_EXPERT, edgecolor="black", label=r"expert encoder $\theta_t$"),
               Patch(facecolor=_MERGED, edgecolor="black", label=r"merged encoder $\theta_0 + \alpha\,\Sigma_t\,\tau_t$"),
               Patch(facecolor=_HEAD, edgecolor="black", label=r"task head $\phi_t$ (from its expert)"),
               Line2D([], [], color="tab:green", lw=1.6, label="trained together: aligned"),
               Line2D([], [], color="dimgray", lw=0.9, ls="--", label=r"task vector $\tau_t$ into the sum"),
               Line2D([], [], color=_BAD, lw=1.2, marker="X", label="merged features into an expert head: mismatch")]
    ax.legend(handles=handles, loc="lower left", fontsize=7.5, ncol=3, frameon=False, bbox_to_anchor=(0.0, -0.16))
    ax.set_title(title or f"merging {n} experts ({', '.join(tasks)}): one merged encoder under every expert head",
                 fontsize=10)
    fig.tight_layout()
    return fig


def budget_tries(history: Sequence[dict], reference: float | None = None, title: str = "") -> Figure:
    """The budgets tried so far against their validation Δm: one point per try (x: validation images
    used, colour: steps per head, the try's number beside it), and the merged model's validation Δm as
    a dashed line (``reference``, a fraction).

    ``history``: one dict per try with ``samples``, ``steps_per_head`` and ``val_delta_m`` (a fraction)."""
    if not history:
        raise ValueError("budget_tries: no tries to plot yet")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    steps = sorted({h["steps_per_head"] for h in history})
    colors = plt.get_cmap("viridis")(np.linspace(0.1, 0.85, len(steps)))
    for s, color in zip(steps, colors):
        pts = [(k, h) for k, h in enumerate(history, 1) if h["steps_per_head"] == s]
        ax.scatter([h["samples"] for _, h in pts], [100 * h["val_delta_m"] for _, h in pts], color=color, s=36,
                   zorder=3, label=f"{s} steps per head")
        for k, h in pts:
            ax.annotate(f"#{k}", (h["samples"], 100 * h["val_delta_m"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    if reference is not None:
        ax.axhline(100 * reference, color="grey", ls="--", lw=1, label="merged model, no realignment")
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("validation images used for realignment")
    ax.set_ylabel("validation Δm vs experts (%, ratio)")
    ax.set_title(title or f"head realignment: your {len(history)} budget tr{'y' if len(history) == 1 else 'ies'}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Every method's predictions on one image, one column per task, with a key under each column
# ----------------------------------------------------------------------------------------------
def methods_prediction_grid(image: torch.Tensor, rows: dict[str, dict[str, torch.Tensor]], tasks: Tasks,
                            title: str = "", class_names: Sequence[str] | None = None) -> Figure:
    """One test image and every method's prediction of it: one row per entry of ``rows`` (e.g. "target",
    "experts", "MTL", "TA", ...), which maps a label to ``{task: prediction or label of this image}``
    (no batch dimension, in the label's space: class ids, metres, unit normals, ...), one column per task,
    each drawn by the task's visualiser; the input image heads the first column.

    Under each column a key says how to read it: the class colours for ``seg`` (``class_names``, default
    the Scenes classes), a colour bar in metres for ``depth``, a colour disc of camera-frame directions
    for ``normals``, what white and black mean for the binary maps (edges, texture edges, keypoints), a
    grey-level bar for ``shading``, and "RGB" for the colour maps (albedo, autoencoder)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch
    tasks = get_tasks(tasks)
    labels = list(rows)
    if not labels:
        raise ValueError("methods_prediction_grid: no rows to draw")
    missing = [(r, t) for r in labels for t in tasks if t not in rows[r]]
    if missing:
        raise ValueError(f"methods_prediction_grid: rows lack tasks: {missing[:4]}")
    n_rows, n_cols = len(labels), 1 + len(tasks)
    height = 1.75 * n_rows + 1.1
    fig = plt.figure(figsize=(1.9 * n_cols, height))
    grid = fig.add_gridspec(n_rows + 1, n_cols, height_ratios=[1.0] * n_rows + [0.55], hspace=0.12, wspace=0.3,
                            top=1 - 0.6 / height, bottom=0.03)
    ax = fig.add_subplot(grid[0, 0])
    _show(ax, image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy(), "input image")
    for i, label in enumerate(labels):
        for j, t in enumerate(tasks, 1):
            ax = fig.add_subplot(grid[i, j])
            _show(ax, get_task(t).visualize(rows[label][t]), t if i == 0 else None)
            if j == 1:
                ax.set_ylabel(label, fontsize=9)
    for j, t in enumerate(tasks, 1):
        key = fig.add_subplot(grid[n_rows, j])
        if t == "seg":
            n = max(int(max(rows[r][t].max() for r in labels)) + 1, len(class_names or CLASSES))
            names = list(class_names or CLASSES) + [str(k) for k in range(len(class_names or CLASSES), n)]
            colours = get_task(t).visualize(torch.arange(n).reshape(1, n))[0]               # (n, 3)
            key.legend(handles=[Patch(facecolor=colours[k], edgecolor="black", label=names[k]) for k in range(n)],
                       loc="center", fontsize=6.5, ncol=2, frameon=False, title="classes", title_fontsize=7)
            key.axis("off")
        elif t == "depth":
            bar = fig.colorbar(ScalarMappable(Normalize(0.5, 10.0), "magma_r"), cax=key, orientation="horizontal")
            bar.set_label("depth (m)", fontsize=7)
            bar.ax.tick_params(labelsize=6)
            key.set_box_aspect(0.12)
        elif t in ("normals", "shading"):
            if t == "normals":
                v, u = torch.meshgrid(torch.linspace(-1, 1, 41), torch.linspace(-1, 1, 41), indexing="ij")
                inside = u ** 2 + v ** 2 <= 1
                n = torch.stack([u, v, -(1 - u ** 2 - v ** 2).clamp(min=0).sqrt()])           # facing the camera
                disc = get_task(t).visualize(n)
                disc[~inside.numpy()] = 1.0
                _show(key, disc)
                key.set_xlabel("normal direction: x right,\ny down, facing the camera", fontsize=6.5)
                key.set_box_aspect(1)
            else:
                bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), "gray"), cax=key, orientation="horizontal")
                bar.set_label("received light", fontsize=7)
                bar.ax.tick_params(labelsize=6)
                key.set_box_aspect(0.12)
        elif get_task(t).channels == 1 and t != "depth":
            key.legend(handles=[Patch(facecolor="white", edgecolor="black", label=f"1: {t.replace('_', ' ')}"),
                                Patch(facecolor="black", edgecolor="black", label="0: none")],
                       loc="center", fontsize=6.5, frameon=False)
            key.axis("off")
        else:
            key.text(0.5, 0.5, "RGB colour,\nas in the image", ha="center", va="center", fontsize=7)
            key.axis("off")
    fig.add_subplot(grid[n_rows, 0]).axis("off")
    fig.suptitle(title or f"every method on one test image ({', '.join(tasks)})", fontsize=11)
    return fig


__all__.append("methods_prediction_grid")


# ----------------------------------------------------------------------------------------------
# Notebook 04: the feature drift of a merged encoder, one panel per statistic
# ----------------------------------------------------------------------------------------------
def drift_panels(layers: Sequence[str], panels: dict[str, dict[str, Sequence[float]]],
                 ylabels: dict[str, str] | None = None, reference: dict[str, float] | None = None,
                 title: str = "", ncols: int = 3) -> Figure:
    """The feature drift of a merged encoder against each expert, in one figure: one panel per statistic,
    x = the tapped layers, one line per task (the same colour for a task in every panel).

    ``layers``: the L tapped layers in order, as x-axis labels (e.g. ``["block 1", "block 3", ...]``).
    ``panels``: ``{panel title, in words: {task: L values, one per layer}}``, e.g.
    ``{"linear CKA, merged vs expert": {"seg": [0.98, 0.95, 0.91, 0.84], ...}, ...}``.
    ``ylabels``: ``{panel title: y-axis label}`` (default: none). ``reference``: ``{panel title: y}``
    draws a dashed grey line at ``y``, "merged = expert" (1.0 for CKA and ratios, 0.0 for shifts).
    ``ncols``: panels per row. One legend for the figure, below the panels: the tasks, and the
    reference line when there is one. Raises ValueError when ``panels`` is empty, a panel has no
    curve, or a curve does not have one value per layer."""
    from matplotlib.lines import Line2D
    if not panels:
        raise ValueError("drift_panels: no statistic to plot (panels is empty)")
    n_layers = len(layers)
    for name, curves in panels.items():
        if not curves:
            raise ValueError(f"drift_panels: panel {name!r} has no curve")
        for task, ys in curves.items():
            if len(ys) != n_layers:
                raise ValueError(f"drift_panels: panel {name!r}, task {task!r}: {len(ys)} values for {n_layers} layers")
    ncols = max(1, min(ncols, len(panels)))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.7 * ncols, 2.9 * nrows + 0.7), squeeze=False)
    tasks = list(dict.fromkeys(t for curves in panels.values() for t in curves))
    colors = {t: plt.get_cmap("tab10")(i % 10) for i, t in enumerate(tasks)}
    x = np.arange(n_layers)
    for ax, (name, curves) in zip(axes.flat, panels.items()):
        for task, ys in curves.items():
            ax.plot(x, [float(v) for v in ys], marker="o", ms=3, color=colors[task], label=task)
        if reference and name in reference:
            ax.axhline(reference[name], color="grey", ls="--", lw=0.9)
        ax.set_xticks(x)
        ax.set_xticklabels(list(layers), fontsize=8)
        ax.set_xlabel("tapped layer", fontsize=8)
        if ylabels and name in ylabels:
            ax.set_ylabel(ylabels[name], fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles = [Line2D([], [], color=colors[t], marker="o", ms=3, label=t) for t in tasks]
    if reference:
        handles.append(Line2D([], [], color="grey", ls="--", lw=0.9, label="merged = expert"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False,
               title="expert of the task", title_fontsize=8)
    fig.suptitle(title or "feature drift of the merged encoder against each expert, per tapped layer", fontsize=11)
    fig.tight_layout(rect=(0, 0.1 if nrows == 1 else 0.06, 1, 1))
    return fig


__all__.append("drift_panels")
