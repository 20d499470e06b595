"""``course.setup(globals())``: one set-up call per notebook that validates every parameter."""
from __future__ import annotations

import re

import nbformat
import pytest

from simo_lite import course, params


def test_namespace_setup_checks_every_parameter_and_writes_back_auto_values(tmp_path):
    ns = {"profile": "smoke", "seed": 2, "tasks": "nyu3", "ties_k": 0.5, "n_show": 0, "adapter_rank": 4,
          "realign_samples": 0, "run_dir": str(tmp_path / "r"), "show_progress": False, "unrelated": object()}
    ctx = course.setup(ns)
    assert ctx.profile.name == "smoke" and ctx.seed == 2 and ctx.run_dir == tmp_path / "r"
    assert ns["n_show"] == ctx.params["n_show"] == params.N_SHOW_AUTO      # 0 (auto) replaced by the value used
    assert ctx.tasks == ("seg", "depth", "normals")
    exp = ctx.experiment()
    assert (exp.tasks, exp.ties_k, exp.adapter_rank, exp.realign_samples) == (ctx.tasks, 0.5, 4, None)
    assert exp._data is None and exp._foundation is None                   # lazy: nothing loaded yet
    assert ctx.experiment("diverse5").tasks[-1] == "albedo"


def test_namespace_setup_gives_the_keyword_errors(tmp_path):
    with pytest.raises(ValueError, match=r"ties_k must be a number in \(0, 1\]"):
        course.setup({"profile": "smoke", "ties_k": "abc", "run_dir": str(tmp_path)})
    with pytest.raises(ValueError, match="must be one of ta, ties in this notebook"):
        course.setup({"profile": "smoke", "merge_method": "dare", "run_dir": str(tmp_path)},
                     restrict={"merge_method": ("ta", "ties")})
    with pytest.raises(ValueError, match=r"both in the namespace and as keyword arguments"):
        course.setup({"profile": "smoke", "seed": 1, "run_dir": str(tmp_path)}, seed=3)


def test_same_course_from_the_namespace_and_from_keywords(tmp_path):
    kw = dict(profile="smoke", seed=1, tasks="nyu3", alpha=-1.0, n_show=2, run_dir=str(tmp_path))
    a, b = course.setup(dict(kw)), course.setup(**kw)
    assert (a.profile, a.seed, a.run_dir, a.params) == (b.profile, b.seed, b.run_dir, b.params)


@pytest.mark.parametrize("path", course.notebooks(), ids=lambda p: p.name[:2])
def test_every_notebook_sets_up_in_one_call(path):
    nb = nbformat.read(path, as_version=4)
    calls = [c.source for c in nb.cells if c.cell_type == "code" and "setup(" in c.source]
    assert len(calls) == 1, f"{path.name}: {len(calls)} set-up cells"
    lines = [ln for ln in calls[0].splitlines() if ln.strip() and not re.match(r"(import|from) ", ln)]
    assert any(re.match(r"ctx = (simo_lite\.)?course\.setup\(globals\(\)", ln) for ln in lines), lines
    assert len(lines) <= 4, f"{path.name}: the set-up cell has {len(lines)} lines besides imports: {lines}"


def test_show_figure_renders_once_saves_the_png_and_shows_the_same_bytes(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    from IPython.core.interactiveshell import InteractiveShell

    ctx = course.setup(profile="cpu", run_dir=str(tmp_path / "r"))
    renders = []
    fig, ax = plt.subplots(figsize=(4, 2))
    ax.plot([0, 1], [1, 0], label="line")
    ax.legend()
    orig = fig.savefig
    monkeypatch.setattr(fig, "savefig", lambda *a, **k: (renders.append(k), orig(*a, **k))[1])

    # outside IPython: saved, the figure stays open for the caller
    path = ctx.show_figure(fig, "demo", notebook="09")
    assert path == tmp_path / "r" / "figures" / "09-demo.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert plt.fignum_exists(fig.number) and len(renders) == 1 and renders[0]["dpi"] == ctx.figure_dpi == 110
    assert renders[0]["bbox_inches"] == "tight"
    assert not list(path.parent.glob(".*.tmp"))                               # atomic: no temporary left

    # in a kernel: one more render, shown as that PNG at 100 px per inch, then closed
    shown = []
    shell = InteractiveShell.instance()
    try:
        monkeypatch.setattr("IPython.display.display", lambda obj, **k: shown.append(obj))
        ctx.show_figure(fig, "demo", notebook="09")
    finally:
        InteractiveShell.clear_instance()
    assert len(renders) == 2 and len(shown) == 1 and not plt.fignum_exists(fig.number)
    png = path.read_bytes()
    width_px = int.from_bytes(png[16:20], "big")
    assert shown[0].data == png and shown[0].width == round(width_px * 100 / ctx.FIGURE_DPI)
    smoke = course.setup(profile="smoke", run_dir=str(tmp_path / "s"))  # the test profile: one draw, 72 dpi
    fig, ax = plt.subplots(figsize=(4, 2))
    png = smoke.save_figure(fig, "demo").read_bytes()
    assert smoke.figure_dpi == 72 and int.from_bytes(png[16:20], "big") == 4 * 72
    plt.close(fig)
