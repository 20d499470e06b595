"""The course on real-data fixtures: notebooks run end to end on NYUv2 / Cityscapes files in the MTAN
layout with a timm backbone loaded from a local weights file, through the notebook parameters alone."""
from __future__ import annotations

import json

import nbformat
import pytest

from simo_lite import course, fixtures


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return fixtures.write_fixtures(tmp_path_factory.mktemp("fixtures"))


def _params(fx, dataset: str, tasks: str | None = None) -> dict:
    params = {"dataset": dataset, "data_dir": str(fx[dataset]), "backbone": fx["backbone"],
              "weights": str(fx["weights"]), "n_show": 2}
    return params if tasks is None else {**params, "tasks": tasks}


def _errors(path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    return [o.get("evalue", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def test_merging_and_results_notebooks_on_nyuv2_fixture(fx, tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "1")
    out = course.run("smoke", only=["00", "01", "03", "07"], params=_params(fx, "nyuv2", "nyu3"),
                     run_dir=str(tmp_path / "run"), timeout_s=120)
    # 00 (Scenes rendering) and 01 (the course's own foundation encoder) do not apply and are skipped
    runtimes = json.loads((out / "runtimes.json").read_text())
    assert set(runtimes) == {"03_merging.ipynb", "07_joint_mtl.ipynb"}
    for name in runtimes:
        assert _errors(out / name) == []
    table = json.loads((out / "results" / "table-seg+depth+normals.json").read_text())
    rows = {r["row"]: r for r in table}
    assert {"experts", "mtl", "ta", "ties", "ta+head", "ta+repr"} <= set(rows)
    for r in rows.values():
        assert set(r["metrics"]) == {"seg", "depth", "normals"}
    # the backbone came from the fixture file: its hash is what named the experts' checkpoints
    models = sorted(p.name for p in (out / "models").iterdir())
    assert any(m.startswith("expert-seg-") for m in models) and any(m.startswith("mtl-") for m in models)
    assert (out / "figures").glob("03-*.png")


def test_cityscapes_fixture_notebook(fx, tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "1")
    # no tasks given: the runner uses the dataset's labelled tasks (and a smaller set for 08's comparison)
    out = course.run("smoke", only=["05", "08"], params=_params(fx, "cityscapes"),
                     run_dir=str(tmp_path / "run"), timeout_s=120)
    assert _errors(out / "05_head_realignment.ipynb") == [] and _errors(out / "08_task_relationships.ipynb") == []
    res = json.loads((out / "results" / "05_head_realignment.json").read_text())
    assert set(res["experts"]) == {"seg", "depth"}
    rel = json.loads((out / "results" / "08_task_relationships.json").read_text())
    assert rel["tasks"] == ["seg", "depth"] and rel["compare_tasks"] == ["seg"]


def test_scenes_only_notebooks_are_skipped_by_parameter():
    assert course._scenes_only("00", {"dataset": "nyuv2"})
    assert not course._scenes_only("00", {"dataset": "scenes"})
    assert course._scenes_only("01", {"backbone": "vit_small_patch14_dinov2.lvd142m"})
    assert not course._scenes_only("01", {})
    assert not course._scenes_only("03", {"dataset": "nyuv2", "backbone": "x"})
