"""The pre-registered verdicts (benchmarks/evidence.py): the 2-SD rule, paired differences, >= 3 seeds."""
from __future__ import annotations

from benchmarks import evidence as ev

D, N = ev.DIVERSE, ev.NYU


def _tidy(values: dict[tuple[str, str], list[float]]) -> list[dict]:
    rows = []
    for (tasks, row), xs in values.items():
        for seed, x in enumerate(xs):
            rows.append({"run": "cpu", "seed": seed, "tasks": tasks, "row": row, "task": "t", "metric": "m",
                         "value": 0.0, "delta_m_ratio": x, "delta_m_relative": x})
    return rows


def test_threshold_and_direction_verdicts_follow_the_two_sd_rule():
    st = ev._stats({0: -0.20, 1: -0.21, 2: -0.19})
    assert ev.threshold_verdict(st, -0.10, below=True) == "holds"
    assert ev.threshold_verdict(st, -0.30, below=True) == "fails"
    assert ev.threshold_verdict(ev._stats({0: -0.05, 1: -0.15, 2: -0.10}), -0.10, below=True) == "unresolved"
    assert ev.threshold_verdict(ev._stats({0: -0.2, 1: -0.2}), -0.10, below=True) == "unresolved"   # 2 seeds
    assert ev.direction_verdict(ev._stats({0: 0.03, 1: 0.031, 2: 0.029})) == "positive"
    assert ev.direction_verdict(ev._stats({0: 0.01, 1: -0.01, 2: 0.005})) == "unresolved"


def test_criteria_on_a_made_up_sweep():
    tidy = _tidy({(D, "mtl"): [-0.20, -0.22, -0.21], (D, "ta"): [-0.60, -0.62, -0.61],
                  (D, "ta+head"): [-0.30, -0.31, -0.32], (D, "ta+repr"): [-0.15, -0.16, -0.17],
                  (N, "ta+head"): [-0.05, -0.06, -0.05], (N, "ta+repr"): [-0.04, -0.05, -0.045],
                  (N, "mtl"): [-0.02, -0.03, -0.02]})
    got = {c["id"]: c["verdict"] for c in ev.criteria(tidy)}
    # R1 MTL -21 % <= -10 %; R2 TA -61 % <= -55 %; R3 gap +15 pp and 14 pp more than nyu3's +1 pp;
    # R4 best adapter (ta+repr, -16 %) vs MTL (-21 %): +5 pp, past 2 SD; R5 |gap| on nyu3 ~1 pp <= 2 pp
    assert got == {"R1": "holds", "R2": "holds", "R3": "holds", "R4": "holds", "R5": "holds"}
    tidy_fail = _tidy({(D, "mtl"): [-0.01, -0.02, -0.015], (D, "ta"): [-0.2, -0.21, -0.22]})
    got = {c["id"]: c["verdict"] for c in ev.criteria(tidy_fail)}
    assert got["R1"] == "fails" and got["R2"] == "fails" and got["R3"] == "unresolved"


def test_markdown_lists_every_criterion_and_row():
    tidy = _tidy({(D, "mtl"): [-0.2, -0.21, -0.22], (N, "mtl"): [-0.05, -0.06, -0.04]})
    md = ev.markdown(ev.evaluate(tidy))
    for rid in ("R1", "R2", "R3", "R4", "R5"):
        assert f"| {rid} |" in md
    assert "-21.0 ± 1.0 % (n = 3)" in md and "MTL loses more on the diverse set" in md


def test_alphas_per_seed_show_a_merge_that_fell_back_to_the_foundation():
    tidy = _tidy({(D, "ta"): [-0.55, -0.64, -0.59], (N, "ta"): [-0.4, -0.37, -0.35], (N, "mtl"): [-0.05] * 3})
    for r in tidy:
        if r["row"] == "ta":
            r["alpha"] = {(D, 0): 0.2, (D, 1): 0.0, (N, 0): 0.2, (N, 1): 0.3}.get((r["tasks"], r["seed"]))
    lines = ev.alphas_table(tidy)
    assert lines == [[N, "ta", "0.2", "0.3", "–"], [D, "ta", "0.2", "0", "–"]]     # seed 2: no alpha recorded
    md = ev.markdown(ev.evaluate(tidy))
    assert "| seed 0 | seed 1 | seed 2 |" in md and "no merge beat the foundation" in md
    assert "no merge beat" not in ev.markdown(ev.evaluate(_tidy({(D, "mtl"): [-0.2, -0.21, -0.22]})))


def test_evidence_cache_saves_and_restores_rows_without_overwriting(tmp_path):
    from benchmarks import evidence_cache as ec
    runs, data = tmp_path / "runs", tmp_path / "data"
    (runs / "cpu-1" / "rows").mkdir(parents=True)
    (runs / "cpu-1" / "rows" / "row-ta-abc.json").write_text('{"row": "ta"}')
    (runs / "cpu-1" / "rows" / "notes.txt").write_text("not a record")
    ec.main(["save", "--seeds", "1", "--runs", str(runs), "--data", str(data)])
    assert [p.name for p in (data / "seed-1" / "rows").iterdir()] == ["row-ta-abc.json"]
    fresh = tmp_path / "fresh"
    (fresh / "cpu-1" / "rows").mkdir(parents=True)
    (fresh / "cpu-1" / "rows" / "row-ta-abc.json").write_text('{"row": "newer"}')
    (data / "seed-1" / "alphas").mkdir()
    (data / "seed-1" / "alphas" / "alpha-ta-def.json").write_text("{}")
    ec.main(["restore", "--seeds", "1", "--runs", str(fresh), "--data", str(data)])
    assert (fresh / "cpu-1" / "rows" / "row-ta-abc.json").read_text() == '{"row": "newer"}'   # kept
    assert (fresh / "cpu-1" / "alphas" / "alpha-ta-def.json").is_file()
    assert not list((fresh / "cpu-1").rglob(".*.tmp"))


def test_add_rows_replaces_the_named_rows_only():
    from benchmarks import evidence_cache
    tidy = _tidy({(N, "mtl"): [-0.05] * 3, (N, "mtl4x"): [0.1]})
    extra = _tidy({(N, "mtl4x"): [0.16], (N, "experts"): [0.0]})
    out = evidence_cache.add_rows(tidy, extra, ["mtl4x"])
    assert [r["delta_m_ratio"] for r in out if r["row"] == "mtl4x"] == [0.16]       # replaced, not duplicated
    assert sum(r["row"] == "mtl" for r in out) == 3 and not any(r["row"] == "experts" for r in out)


def test_add_rows_names_a_missing_sweep_file(tmp_path, capsys):
    import pytest

    from benchmarks import evidence_cache
    table = tmp_path / "table.json"
    table.write_text("[]\n")
    with pytest.raises(SystemExit):
        evidence_cache.main(["add-rows", str(tmp_path / "missing.json"), "--table", str(table)])
    assert "not found" in capsys.readouterr().err and table.read_text() == "[]\n"
