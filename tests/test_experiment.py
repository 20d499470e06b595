"""Experiment: the cached pieces (alpha sweeps, table rows) are reused across instances, as notebooks do."""
from __future__ import annotations

import json

import pytest

from simo_lite import merging, profiles
from simo_lite.experiment import Experiment


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("exp")


@pytest.fixture(scope="module")
def exp(run_dir):
    return Experiment(profiles.get("smoke"), "seg,depth", seed=0, run_dir=run_dir)


def test_select_alpha_is_cached_on_disk(exp, run_dir, monkeypatch):
    grid = (0.0, 0.5, 1.0)
    alpha, scores = exp.select_alpha("ta", grid=grid)
    assert alpha in grid and set(scores) == set(grid)
    assert alpha == max(scores, key=scores.get)
    files = list((run_dir / "alphas").glob("seg+depth-*.json"))
    stored = json.loads(files[0].read_text())["val_metrics"]
    assert len(files) == 1 and {float(a) for a in stored} == set(grid)
    # the stored per-task metrics are what the scores were computed from
    for a in grid:
        assert scores[a] == pytest.approx(exp.score(stored[str(a)], split="val"))
    assert exp.alpha_sweep("ta", grid=grid)[alpha] == stored[str(alpha)]

    # a second Experiment (the next notebook) must not merge or evaluate again
    again = Experiment(profiles.get("smoke"), "seg,depth", seed=0, run_dir=run_dir)
    monkeypatch.setattr(merging, "merge", lambda *a, **k: pytest.fail("alpha sweep re-run"))
    alpha2, scores2 = again.select_alpha("ta", grid=grid)
    assert alpha2 == alpha and scores2 == scores

    # another grid or method is another sweep
    monkeypatch.undo()
    alpha3, scores3 = again.select_alpha("ta", grid=(0.0, 1.0))
    assert set(scores3) == {0.0, 1.0} and scores3[1.0] == pytest.approx(scores[1.0], rel=1e-6)
    assert len(list((run_dir / "alphas").glob("*.json"))) == 2


def test_row_is_cached_and_consistent(exp, run_dir):
    row = exp.row("ta")
    assert row["row"] == "ta" and set(row["metrics"]) == {"seg", "depth"}
    assert row["delta_m_ratio"] == pytest.approx(exp.score(row["metrics"], kind="ratio"))
    assert row["alpha"] in merging.ALPHA_GRID
    again = Experiment(profiles.get("smoke"), "seg,depth", seed=0, run_dir=run_dir)
    assert again.row("ta") == json.loads(json.dumps(row, default=float))
    with pytest.raises(ValueError, match="unknown row"):
        exp.row("nope")


def test_merge_combinations_single_tasks_are_experts(exp):
    combos = exp.merge_combinations("ta")
    assert sorted(combos) == [1, 2]
    assert [c["tasks"] for c in combos[1]] == [["seg"], ["depth"]]
    for c in combos[1]:
        assert c["mean"] == pytest.approx(1.0)
    (pair,) = combos[2]
    assert set(pair["per_task"]) == {"seg", "depth"}
    assert pair["mean"] == pytest.approx(sum(pair["per_task"].values()) / 2)
    # the pair uses the alpha chosen on validation for the pair, i.e. the "ta" row's merge
    assert pair["per_task"] == pytest.approx(exp.normalized(exp.row("ta")["metrics"]))
