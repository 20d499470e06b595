"""``simo_lite.plots.drift_panels``: notebook 04's one multi-panel drift figure.

One panel per statistic (titled in words), x = the tapped layers, one line per task in the same colour in
every panel, an optional dashed "merged = expert" reference per panel, one figure legend; clear errors on
empty or ragged input.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from simo_lite import plots  # noqa: E402

LAYERS = ["block 1", "block 3", "block 5", "block 7"]
PANELS = {
    "linear CKA, merged vs expert": {"seg": [0.99, 0.97, 0.93, 0.88], "depth": [0.98, 0.95, 0.9, 0.86]},
    "mean shift, relative to the expert's mean": {"seg": [0.2, 0.15, 0.12, 0.1], "depth": [0.3, 0.2, 0.1, 0.1]},
    "mean shift, absolute": {"seg": [1.0, 2.0, 3.0, 4.0], "depth": [1.5, 2.5, 3.5, 4.5]},
    "mean token norm, merged / expert": {"seg": [1.0, 1.02, 1.05, 1.1], "depth": [1.0, 1.01, 1.03, 1.04]},
}


@pytest.fixture
def fig():
    f = plots.drift_panels(LAYERS, PANELS, ylabels={"mean shift, absolute": "||Δμ||"},
                           reference={"linear CKA, merged vs expert": 1.0, "mean token norm, merged / expert": 1.0},
                           title="drift of the merged encoder", ncols=3)
    yield f
    plt.close(f)


def test_one_panel_per_statistic_with_its_title_and_layers(fig):
    assert isinstance(fig, Figure)
    shown = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in shown] == list(PANELS)                      # 4 panels on a 2 x 3 grid
    assert len(fig.axes) == 6 and len(shown) == 4
    for ax in shown:
        assert [t.get_text() for t in ax.get_xticklabels()] == LAYERS
        assert ax.get_xlabel() == "tapped layer"
    assert shown[2].get_ylabel() == "||Δμ||" and shown[0].get_ylabel() == ""
    assert fig._suptitle.get_text() == "drift of the merged encoder"


def test_one_line_per_task_same_colour_everywhere_and_reference_lines(fig):
    shown = [ax for ax in fig.axes if ax.axison]
    colours = {}
    for ax, (name, curves) in zip(shown, PANELS.items()):
        data = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
        dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
        assert [ln.get_label() for ln in data] == list(curves)
        for ln, (task, ys) in zip(data, curves.items()):
            assert list(ln.get_ydata()) == pytest.approx(ys)
            assert colours.setdefault(task, ln.get_color()) == ln.get_color()
        assert len(dashed) == (1 if name in ("linear CKA, merged vs expert", "mean token norm, merged / expert") else 0)
    assert colours["seg"] != colours["depth"]


def test_one_figure_legend_with_the_tasks_and_the_reference(fig):
    assert len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["seg", "depth", "merged = expert"]
    fig.savefig(io.BytesIO(), format="png")                                     # it renders


def test_no_reference_no_reference_entry_and_one_row():
    f = plots.drift_panels(LAYERS[:2], {"CKA": {"normals": [0.9, 0.8]}})
    try:
        assert [t.get_text() for t in f.legends[0].get_texts()] == ["normals"]
        assert len(f.axes) == 1 and f.axes[0].get_title() == "CKA"
        assert "feature drift" in f._suptitle.get_text()                          # a default title in words
    finally:
        plt.close(f)


@pytest.mark.parametrize("panels, message", [
    ({}, "panels is empty"),
    ({"CKA": {}}, "has no curve"),
    ({"CKA": {"seg": [0.9, 0.8, 0.7]}}, "3 values for 4 layers"),
])
def test_bad_input_is_refused_with_a_clear_message(panels, message):
    with pytest.raises(ValueError, match=message):
        plots.drift_panels(LAYERS, panels)
