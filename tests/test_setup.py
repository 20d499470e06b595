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
