"""The course's drawn diagrams (``simo_lite.plots``): each returns a figure that names every task.

- ``simo_diagram(tasks)``: one image -> one encoder (the tapped blocks highlighted) -> one head per
  task -> one output per task, with a legend;
- ``merged_under_heads_diagram(tasks)``: the experts' encoders and heads, their task vectors summed into
  one merged encoder that feeds every expert head, with the mismatch in the legend;
- ``budget_tries``: notebook 05's history of budget tries, one point per try, labelled axes and legend.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from simo_lite import plots  # noqa: E402
from simo_lite.tasks import get_tasks  # noqa: E402

TASK_SETS = ["nyu3", "diverse5", "taskonomy5", ("depth",)]


def _texts(fig: Figure) -> list[str]:
    """Every text of the figure: labels, titles, annotations and legend entries."""
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def _legend_labels(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


@pytest.mark.parametrize("diagram", [plots.simo_diagram, plots.merged_under_heads_diagram],
                         ids=["simo_diagram", "merged_under_heads_diagram"])
@pytest.mark.parametrize("tasks", TASK_SETS, ids=str)
def test_diagram_is_a_figure_naming_every_task(diagram, tasks):
    fig = diagram(tasks)
    try:
        assert isinstance(fig, Figure)
        fig.canvas.draw()                                              # the mathtext labels render
        texts = _texts(fig)
        for t in get_tasks(tasks):
            assert any(t in s for s in texts), f"{diagram.__name__}: no label names the task {t!r}"
        assert _legend_labels(fig), f"{diagram.__name__}: no legend"
        assert fig.axes[0].get_title(), f"{diagram.__name__}: no title"
    finally:
        plt.close(fig)


def test_simo_diagram_highlights_the_tapped_blocks():
    fig = plots.simo_diagram("nyu3", depth=8, taps=(1, 3, 5, 7))
    try:
        legend = " ".join(_legend_labels(fig))
        assert "tapped block" in legend and "transformer block" in legend and "task head" in legend
        numbers = [t for t in fig.axes[0].texts if t.get_text() in {str(i) for i in range(1, 9)}]
        assert len(numbers) == 8                                       # every block is numbered
        assert {t.get_text() for t in numbers if t.get_fontweight() == "bold"} == {"2", "4", "6", "8"}
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="taps must be block indices"):
        plots.simo_diagram("nyu3", depth=4, taps=(4,))


def test_merged_diagram_marks_the_mismatch():
    fig = plots.merged_under_heads_diagram("nyu3")
    try:
        legend = " ".join(_legend_labels(fig))
        assert "mismatch" in legend and "merged encoder" in legend and "expert encoder" in legend
        assert any(r"\alpha" in s and r"\tau_t" in s for s in _texts(fig))   # θ₀ + α Σ_t τ_t is written
    finally:
        plt.close(fig)


def test_budget_tries_plots_every_try():
    history = [{"samples": 16, "steps_per_head": 20, "val_delta_m": -0.10},
               {"samples": 8, "steps_per_head": 40, "val_delta_m": -0.05},
               {"samples": 32, "steps_per_head": 20, "val_delta_m": -0.02}]
    fig = plots.budget_tries(history, reference=-0.3)
    try:
        ax = fig.axes[0]
        assert ax.get_xlabel() and ax.get_ylabel()
        assert sum(len(c.get_offsets()) for c in ax.collections) == 3        # one point per try
        assert {"#1", "#2", "#3"} <= {t.get_text() for t in ax.texts}
        labels = _legend_labels(fig)
        assert "20 steps per head" in labels and "40 steps per head" in labels
        assert any("merged" in s for s in labels)
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="no tries"):
        plots.budget_tries([])
