"""benchmarks.budget4x: the 4x-budget section reads its inputs and reports the pre-registered criteria as measured."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import budget4x as b4
from benchmarks.evidence import NYU

EXPERTS_1X = {"seg": 0.50, "depth": 0.60, "normals": 15.0}
EXPERTS_4X = {"seg": 0.55, "depth": 0.48, "normals": 14.8}


def _tidy(dm: dict[str, list[float]]) -> list[dict]:
    """Evidence rows: the experts' per-task values for seeds 0-2 and one Δm per (row, seed)."""
    rows = [{"run": "cpu", "seed": s, "tasks": NYU, "row": "experts", "task": t, "value": v, "delta_m_ratio": 0.0}
            for s in range(3) for t, v in EXPERTS_1X.items()]
    rows += [{"run": "cpu", "seed": s, "tasks": NYU, "row": r, "task": "seg", "value": 0.0, "delta_m_ratio": x}
             for r, xs in dm.items() for s, x in enumerate(xs)]
    return rows


def _inputs(tmp_path: Path, ta4x: float, ta1x: list[float]) -> dict:
    dm1 = {"mtl": [-0.07, -0.06, -0.08], "mtl4x": [0.16, 0.15, 0.17], "ta": ta1x, "ties": [-0.42] * 3,
           "ta+head": [-0.23, -0.22, -0.24], "ta+repr": [-0.235, -0.225, -0.24], "ties+head": [-0.20] * 3,
           "ties+repr": [-0.21] * 3, "ta+bn": [-0.34] * 3, "ties+bn": [-0.35] * 3}
    table = [{"row": "experts", "metrics": EXPERTS_4X, "delta_m_ratio": 0.0}]
    dm4 = {"ta": ta4x, "ties": -0.45, "ta+head": -0.25, "ta+repr": -0.26, "ties+head": -0.22, "ties+repr": -0.23,
           "ta+bn": -0.36, "ties+bn": -0.37, "zeroshot": -0.55}
    table += [{"row": k, "metrics": {}, "delta_m_ratio": v, "alpha": 0.2} for k, v in dm4.items()]
    paths = {"table": tmp_path / "table.json", "evidence": tmp_path / "ev.json", "mtl": tmp_path / "mtl.json"}
    paths["table"].write_text(json.dumps(table))
    paths["evidence"].write_text(json.dumps(_tidy(dm1)))
    mtl = {"name": "mtl-seg+depth+normals", "test": {"seg": 0.55, "depth": 0.48, "normals": 14.8},
           "val_tail": 0.004, "steps": 3350, "wall_s": 10.0}
    paths["mtl"].write_text(json.dumps({"models": {"mtl@k": mtl}}))
    conv = {}
    for t, tail in (("seg", 0.004), ("normals", 0.012), ("depth", 0.005)):
        p = tmp_path / f"conv-{t}.json"
        p.write_text(json.dumps({"runs": [{"budget": 3200, "tail": tail, "test": {t: EXPERTS_4X[t]}, "wall_s": 1.0}]}))
        conv[t] = p
    paths["conv"] = conv
    return paths


def test_the_section_reports_every_criterion_as_measured(tmp_path: Path) -> None:
    p = _inputs(tmp_path, ta4x=-0.50, ta1x=[-0.406, -0.40, -0.41])
    res = b4.run(p["table"], p["conv"], p["mtl"], p["evidence"])
    verdicts = {c["id"]: c["verdict"] for c in res["criteria"]}
    assert [c["id"] for c in res["criteria"]] == ["E1", "E2", "E3", "E4", "E5", "E6"]
    assert verdicts["E1"] == "fails"                          # normals' tail 1.2 % >= 1 %
    assert verdicts["E2"] == "fails"                          # normals only 1.3 % better than 1x
    assert res["expert_gain"]["seg"] == pytest.approx(0.10)
    assert res["expert_gain"]["normals"] == pytest.approx(0.2 / 15.0)
    assert verdicts["E3"] == "holds"                          # -50 % <= -40.6 % - 2 pp, change 9.4 pp > SD
    assert verdicts["E4"] == "holds"                          # head recovers +25 pp
    assert verdicts["E5"] == "holds"                          # head - repr = +1 pp
    assert res["dm_4x"]["mtl"] == pytest.approx(0.0)          # the MTL metrics equal the 4x experts'
    assert verdicts["E6"] == "holds"
    assert res["dm_1x"]["ta"] == pytest.approx(-0.406)
    text = b4.markdown(res)
    assert "| E3 |" in text and "**holds**" in text and "-50.0 %" in text


def test_a_change_smaller_than_the_seed_sd_is_unresolved(tmp_path: Path) -> None:
    # the 1x TA row varies by several pp across seeds; the 4x TA is 3 pp lower (past the -2 pp threshold)
    p = _inputs(tmp_path, ta4x=-0.436, ta1x=[-0.406, -0.46, -0.36])
    res = b4.run(p["table"], p["conv"], p["mtl"], p["evidence"])
    e3 = next(c for c in res["criteria"] if c["id"] == "E3")
    assert res["sd_1x"]["ta"] > 0.03
    assert e3["verdict"] == "unresolved"


def test_task_vector_norm_is_the_l2_norm_of_the_difference() -> None:
    pre = {"w": torch.zeros(2, 2), "b": torch.ones(3), "steps": torch.tensor([1])}
    enc = {"w": torch.full((2, 2), 3.0), "b": torch.ones(3), "steps": torch.tensor([5])}
    assert b4.task_vector_norm(enc, pre) == pytest.approx(6.0)     # sqrt(4 * 9); integer tensors ignored


def test_relative_gain_follows_the_metric_direction() -> None:
    assert b4.relative_gain(0.6, 0.5, lower_is_better=False) == pytest.approx(0.2)
    assert b4.relative_gain(0.4, 0.5, lower_is_better=True) == pytest.approx(0.2)
    assert b4.relative_gain(0.6, 0.5, lower_is_better=True) == pytest.approx(-0.2)


def test_the_results_page_shows_the_section_only_when_it_was_run(tmp_path: Path) -> None:
    from benchmarks import render_results
    from benchmarks.common import write_json_atomic
    p = _inputs(tmp_path, ta4x=-0.50, ta1x=[-0.406, -0.40, -0.41])
    write_json_atomic(tmp_path / "b4.json", b4.run(p["table"], p["conv"], p["mtl"], p["evidence"]))
    text = "\n".join(render_results.budget4x_md(tmp_path / "none.json", tmp_path / "b4.json", tmp_path / "none.json"))
    assert "nyu3 at a matched 4× budget" in text and "| E6 |" in text
    assert render_results.budget4x_md(tmp_path / "none.json", tmp_path / "none.json", tmp_path / "none.json") == []


def test_the_diverse_set_reports_f1_to_f6_with_the_two_sd_rule(tmp_path: Path) -> None:
    from benchmarks.evidence import DIVERSE
    e1 = {"autoencoder": 0.070, "depth": 0.55, "normals": 14.5, "keypoints": 0.258, "texture_edges": 0.657}
    e4 = {"autoencoder": 0.060, "depth": 0.47, "normals": 14.0, "keypoints": 0.260, "texture_edges": 0.660}
    rows = [{"seed": s, "tasks": DIVERSE, "row": "experts", "task": t, "value": v, "delta_m_ratio": 0.0}
            for s in range(3) for t, v in e1.items()]
    dm1 = {"mtl": [-0.065, -0.055, -0.075], "ta": [-0.59, -0.54, -0.64], "ta+head": [-0.16, -0.15, -0.17],
           "ta+repr": [-0.17, -0.15, -0.16], "ta+lora": [-0.20, -0.19, -0.21]}
    rows += [{"seed": s, "tasks": DIVERSE, "row": r, "task": "depth", "value": 0.0, "delta_m_ratio": x}
             for r, xs in dm1.items() for s, x in enumerate(xs)]
    (tmp_path / "ev.json").write_text(json.dumps(rows))
    table = [{"row": "experts", "metrics": e4, "delta_m_ratio": 0.0}] + [
        {"row": k, "metrics": {}, "delta_m_ratio": v}
        for k, v in {"ta": -0.60, "ta+head": -0.20, "ta+repr": -0.10, "ta+lora": -0.12}.items()]
    (tmp_path / "t.json").write_text(json.dumps(table))
    mtl = {"name": "mtl-autoencoder+depth+normals+keypoints+texture_edges", "test": e4, "val_tail": 0.002,
           "steps": 3350, "wall_s": 1.0}
    (tmp_path / "m.json").write_text(json.dumps({"models": {"x": mtl}}))
    conv = {}
    for t in ("autoencoder", "keypoints", "texture_edges"):
        (tmp_path / f"c-{t}.json").write_text(json.dumps({"runs": [{"budget": 3200, "tail": 0.005,
                                                                    "test": {t: e4[t]}, "wall_s": 1.0}]}))
        conv[t] = tmp_path / f"c-{t}.json"
    res = b4.run(tmp_path / "t.json", conv, tmp_path / "m.json", tmp_path / "ev.json", set_name="taskonomy5")
    v = {c["id"]: c["verdict"] for c in res["criteria"]}
    assert [c["id"] for c in res["criteria"]] == ["F1", "F2", "F3", "F4", "F5", "F6"]
    assert v["F1"] == "holds"
    assert v["F2"] == "holds"                       # autoencoder 14 % better, the others within 1 %
    assert v["F3"] == "fails"                       # MTL 0 %: 10 pp above -10 %, SD 1 pp
    assert v["F4"] == "unresolved"                  # -60 %: 5 pp past -55 %, but the 1x SD is 5 pp
    assert v["F5"] == "holds"                       # +10 pp, SD of the paired gap 1 pp
    assert v["F6"] == "fails"                       # best adapter ta+repr -10 % below MTL's 0 %
    with pytest.raises(ValueError, match="task sets"):
        b4.run(tmp_path / "t.json", conv, tmp_path / "m.json", tmp_path / "ev.json", set_name="diverse5")


def test_expert_folders_refuses_an_ambiguous_folder(tmp_path: Path) -> None:
    for name in ("expert-seg-aaa", "expert-seg-bbb", "expert-depth-ccc"):
        (tmp_path / name).mkdir()
    with pytest.raises(ValueError, match="2 expert folders of 'seg'"):
        b4.expert_folders(tmp_path, ["seg", "depth"])
    assert b4.expert_folders(tmp_path, ["depth"]) == {"depth": tmp_path / "expert-depth-ccc"}
    assert b4.expert_folders(tmp_path, ["normals"]) is None


def test_the_figure_draws_every_curve_with_its_tail_in_the_legend(tmp_path: Path) -> None:
    res = {"set": "nyu3", "convergence": {
        "seg": {"tail": 0.004, "budget": 3200, "val_loss": [[0, 1.0], [1600, 0.7], [3200, 0.69]]},
        "depth": {"tail": 0.012, "budget": 3200, "val_loss": [[0, 2.0], [3200, 1.5]]}}}
    out = b4.plot(res, tmp_path / "f.png")
    assert out.is_file() and out.stat().st_size > 1000
