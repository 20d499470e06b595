"""Reading exercises: the learner interprets numbers of their own run, and the check accepts a range.

The run's results file, the public check of an answer's form, and each reading exercise's answer key
(the source notebook's solution and hidden tests, run on runs with known numbers: right readings
pass, readings off by more than the tolerance fail, the student copy's stubs fail). The exercises
against a real run: tests/test_notebooks.py executes 05 and 07 with their solutions.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import pytest

from simo_lite import checks, course, student
from simo_lite.classroom import cells as nbcells
from simo_lite.classroom.grade import Options, missing_run_results

NOTEBOOKS = {p.name[:2]: p for p in course.notebooks()}


def _write(run_dir: Path, name: str, results: dict) -> Path:
    path = run_dir / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results))
    return path


# ----------------------------------------------------------------------------------------------
# run_results: the run's saved results, for the notebook's parameters
# ----------------------------------------------------------------------------------------------
def test_run_results_reads_the_parameters_run(tmp_path, capsys):
    path = _write(tmp_path / "run", "05_head_realignment", {"profile": "smoke", "seed": 3, "delta_m": {"x": 1}})
    got = checks.run_results("05_head_realignment", {"profile": "smoke", "seed": 3, "run_dir": str(tmp_path / "run")})
    assert got["delta_m"] == {"x": 1}
    assert str(path) in capsys.readouterr().out


def test_run_results_default_folder_is_setups(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMO_LITE_RUNS", str(tmp_path))
    folder = course.default_run_dir("smoke", 2)
    assert folder.parent == tmp_path
    _write(folder, "07_joint_mtl", {"profile": "smoke", "seed": 2, "best_fix": "ta+repr"})
    assert checks.run_results("07_joint_mtl", {"profile": "smoke", "seed": 2, "run_dir": ""})["best_fix"] == "ta+repr"


def test_run_results_says_what_is_missing_and_refuses_another_run(tmp_path):
    ns = {"profile": "cpu", "seed": 1, "run_dir": str(tmp_path), "merge_method": "ta"}
    with pytest.raises(checks.ReadingError, match=r"does not exist.*Results.*make course PROFILE=cpu"):
        checks.run_results("05_head_realignment", ns)
    _write(tmp_path, "05_head_realignment", {"profile": "cpu", "seed": 0, "merge_method": "ties"})
    with pytest.raises(checks.ReadingError, match=r"another run's results: seed 0 there, 1 here, merge_method 'ties'"):
        checks.run_results("05_head_realignment", ns)


# ----------------------------------------------------------------------------------------------
# check_reading: the form of an answer, never its value
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,kwargs,ok,word", [
    (None, {}, False, "not answered yet"),
    (0.5, {"lo": 0, "hi": 1}, True, "answered"),
    (3, {}, True, "answered"),
    (1.5, {"lo": 0, "hi": 1}, False, "outside"),
    (float("nan"), {}, False, "finite"),
    (True, {}, False, "expected a number"),
    ("12", {}, False, "expected a number"),
    ("noise", {"choices": ("noise",), "numbers": True}, True, "answered"),
    (0.4, {"choices": ("noise",), "numbers": True}, True, "answered"),
    (1608.5, {"unit": "points"}, True, "answered"),                   # no bound: a tiny run's Δm can pass 100 %
    (0.4, {"choices": ("noise",)}, False, "expected one of"),
    ("nois", {"choices": ("noise",)}, False, "is not one of"),
    (False, {"choices": (True, False)}, True, "answered"),
    (0, {"choices": (True, False)}, False, "expected one of"),
    (1.0, {"choices": ("ta+head", "ta+repr")}, False, "expected one of"),
])
def test_check_reading_judges_the_form(value, kwargs, ok, word, capsys):
    assert checks.check_reading(value, "the reading", **kwargs) is ok
    assert word in capsys.readouterr().out
    if not ok:
        with pytest.raises(AssertionError, match=word):
            checks.check_reading(value, "the reading", strict=True, **kwargs)


def test_within():
    assert checks.within(1.2, 1.0, 0.25) and not checks.within(1.3, 1.0, 0.25)
    assert not checks.within("1.0", 1.0, 1) and not checks.within(True, 1.0, 1) and not checks.within(math.nan, 1.0, 1)


# ----------------------------------------------------------------------------------------------
# The reading exercises of the notebooks, on runs with known numbers
# ----------------------------------------------------------------------------------------------
def _reading_exercises() -> list[tuple[str, str, str, str]]:
    """(notebook number, grade_id, solution source, test source) of every test cell with a check_reading."""
    out = []
    for nn, path in NOTEBOOKS.items():
        nb = nbformat.read(path, as_version=4)
        sols = {nbcells.grade_id(c): c.source for c in nb.cells if nbcells.is_solution(c)}
        out += [(nn, nbcells.grade_id(c), sols[nbcells.grade_id(c) + "-solution"], c.source)
                for c in nbcells.test_cells(nb) if "checks.check_reading(" in nbcells.split_hidden(c.source)[0]]
    return out


READINGS = _reading_exercises()


def _dm(merged, bn, head):
    return {"delta_m": {"merged": {"ratio": merged}, "bn_reestimated": {"ratio": bn}, "head_realigned": {"ratio": head}}}


def _mtl_run(d, samples):
    return {"merge_method": "ta", "delta_m_ratio": d,
            "cost": {"experts": {"samples": 60_000}, "mtl": {"samples": 30_000}, **{n: {"samples": s} for n, s in samples.items()}}}


# per notebook: (a run, its right answers, wrong readings: each one answer changed[, other accepted readings])
CASES = {
    "05": [
        (_dm(-0.30, -0.20, -0.10), {"head_gain_points": 20.0, "bn_share": 0.5},
         [{"head_gain_points": 21.0}, {"head_gain_points": 0.2}, {"bn_share": 0.6}, {"bn_share": "noise"},
          {"bn_share": 50.0}]),
        (_dm(-0.100, -0.050, -0.095), {"head_gain_points": 0.5, "bn_share": "noise"},
         [{"bn_share": 10.0}, {"head_gain_points": -0.5}]),
        (_dm(-0.036, -0.160, 1.120), {"head_gain_points": 115.6, "bn_share": -0.124 / 1.156},   # a tiny run: +116 pt
         [{"bn_share": 0.5}, {"head_gain_points": 11.56}]),
        (_dm(-0.100, -0.095, -0.091), {"head_gain_points": 0.9, "bn_share": "noise"},   # near the noise line:
         [{"bn_share": 0.9}], [{"head_gain_points": 1.05, "bn_share": 0.5}]),          # a rounded number too
    ],
    "06": [
        ({"budget_steps": {"50": {"ratio": -0.20}, "100": {"ratio": -0.12}, "200": {"ratio": -0.05}}},
         {"last_change_points": 7.0, "verdict": "rising"},
         [{"last_change_points": 15.0}, {"last_change_points": 0.07}, {"verdict": "flat"}, {"verdict": "falling"}]),
        ({"budget_steps": {"200": {"ratio": -0.080}, "25": {"ratio": -0.30}, "100": {"ratio": -0.075}}},   # any order
         {"last_change_points": -0.5, "verdict": "flat"},
         [{"verdict": "falling"}, {"last_change_points": 0.5}]),
        ({"budget_steps": {"100": {"ratio": -0.050}, "200": {"ratio": -0.061}}},        # -1.1 points: at the line
         {"last_change_points": -1.1, "verdict": "falling"},
         [{"verdict": "rising"}, {"last_change_points": -2.0}], [{"last_change_points": -1.0, "verdict": "flat"}]),
    ],
    "08": [
        ({"merge_combinations_mean": {"1": 1.0, "2": 0.49, "3": 0.45, "4": 0.45, "5": 0.46},
          "paper_fig1": {"SIMO": [1.0, 0.39, 0.22, 0.18, 0.15], "SISO": [1.0, 0.9, 0.87, 0.87, 0.83, 0.81, 0.83, 0.82]}},
         {"retention": 0.46 ** 0.25, "loses_less_than_paper": True},
         [{"retention": 0.46}, {"retention": 0.46 ** 0.25 - 0.05}, {"loses_less_than_paper": False}]),
        ({"merge_combinations_mean": {"3": 0.2, "1": 0.9, "2": 0.5},                    # any order, a steep fall
          "paper_fig1": {"SIMO": [1.0, 0.39, 0.22, 0.18, 0.15]}},
         {"retention": (0.2 / 0.9) ** 0.5, "loses_less_than_paper": False},
         [{"loses_less_than_paper": True}, {"retention": 0.2 / 0.9}]),
        ({"merge_combinations_mean": {"1": 1.0, "5": 0.155}, "paper_fig1": {"SIMO": [1.0, 0.39, 0.22, 0.18, 0.15]}},
         {"retention": 0.155 ** 0.25, "loses_less_than_paper": True},                   # equal to the paper's, in rounding
         [{"retention": 0.5}], [{"retention": 0.155 ** 0.25, "loses_less_than_paper": False}]),
    ],
    "07": [
        (_mtl_run({"ta": -0.30, "ta+head": -0.10, "ta+repr": -0.05, "ta+lora": -0.08, "mtl": -0.02, "experts": 0.0},
                  {"ta+head": 10_000, "ta+repr": 40_000, "ta+lora": 40_000}),
         {"efficient_fix": "ta+head", "efficient_gain": 2.0, "same_as_best": False},
         [{"efficient_fix": "ta+repr"}, {"efficient_gain": 2.5}, {"efficient_gain": 0.02}, {"same_as_best": True},
          {"efficient_fix": "ties+head"}]),
        (_mtl_run({"ta": -0.30, "ta+head": -0.25, "ta+repr": -0.05, "mtl": -0.02, "experts": 0.0},
                  {"ta+head": 20_000, "ta+repr": 20_000}),
         {"efficient_fix": "ta+repr", "efficient_gain": 1.25, "same_as_best": True},
         [{"efficient_fix": "ta+head"}, {"same_as_best": False}, {"efficient_gain": 1.5}]),
    ],
}


def _namespace(run):
    return {"checks": checks, "math": math, "run": run}


@pytest.mark.parametrize("nn,gid,solution,test", READINGS, ids=[r[1] for r in READINGS])
def test_reading_answer_key(nn, gid, solution, test, capsys):
    assert nn in CASES, f"{gid}: a reading exercise without cases here"
    stub = student.strip_solutions(solution)[0]
    for run, right, wrongs, *also in CASES[nn]:
        ns = _namespace(run)
        exec(compile(solution, gid, "exec"), ns)                       # the source's solution reads the run
        assert {k: ns[k] for k in right} == pytest.approx(right), (gid, run)
        exec(compile(test, gid, "exec"), ns)                           # and passes the public and hidden tests
        exec(compile(test, gid, "exec"), {**_namespace(run), **right})  # so do the right readings, typed in
        for other in (also[0] if also else []):
            exec(compile(test, gid, "exec"), {**_namespace(run), **other})
        for wrong in wrongs:
            with pytest.raises(AssertionError):
                exec(compile(test, gid, "exec"), {**_namespace(run), **right, **wrong})
        stub_ns = _namespace(run)
        exec(compile(stub, gid, "exec"), stub_ns)                      # the student copy's stubs: None
        assert all(stub_ns[k] is None for k in right) and not any(k.startswith("_") for k in stub_ns if k in stub)
        with pytest.raises(AssertionError, match="the check above failed"):
            exec(compile(test, gid, "exec"), stub_ns)
    assert "not answered yet" in capsys.readouterr().out


def test_reading_exercises_follow_the_results_they_read():
    """Each notebook with reading exercises saves its results before the cell that loads them, and both
    notebooks the course says have them do."""
    assert sorted({nn for nn, *_ in READINGS}) == ["05", "06", "07", "08"]
    for nn in ("05", "06", "07", "08"):
        nb = nbformat.read(NOTEBOOKS[nn], as_version=4)
        name = NOTEBOOKS[nn].stem
        assert nbcells.results_read(nb) == [name]
        saved = next(i for i, c in enumerate(nb.cells) if f'ctx.save_results("{name}"' in c.source)
        loads = [i for i, c in enumerate(nb.cells) if "checks.run_results(" in c.source]
        assert loads and all(i > saved and nbcells.is_locked(nb.cells[i]) for i in loads), (nn, saved, loads)


def test_grader_names_the_missing_run(tmp_path):
    names = ["05_head_realignment.ipynb", "03_merging.ipynb"]
    opts = Options(profile="smoke", seed=0, run_dir=str(tmp_path))
    assert missing_run_results(names, opts) == [("05_head_realignment.ipynb",
                                                 tmp_path / "results" / "05_head_realignment.json")]
    _write(tmp_path, "05_head_realignment", {"profile": "smoke", "seed": 0})
    assert missing_run_results(names, opts) == []
    assert missing_run_results(names, Options(scope="notebook", run_dir=str(tmp_path / "none"))) == []


def test_grader_grades_a_typed_in_reading_against_the_run(tmp_path):
    """Exercise cells only (the default scope), no lesson: the reading exercise of 07 is graded against the
    results file of the run the grader is pointed at; a missing run fails the cell that loads it, and
    with it only the reading exercise."""
    from simo_lite.classroom.grade import grade_notebook

    source = NOTEBOOKS["07"]
    release = student.make_student(nbformat.read(source, as_version=4), source.name, kind="release")[0]
    run, right, _ = CASES["07"][0][:3]
    answer = next(c for c in release.cells if nbcells.grade_id(c) == "07-efficient_fix-solution")
    answer.source = "\n".join(f"{k} = {v!r}" for k, v in right.items())
    _write(tmp_path / "run", "07_joint_mtl", {"profile": "smoke", "seed": 0, **run})
    ok = grade_notebook(source, release, Options(profile="smoke", run_dir=str(tmp_path / "run")), student="ann")
    passed = {t["grade_id"]: t["passed"] for t in ok["tests"]}
    assert passed["07-efficient_fix"] is True, ok["failures"]
    answer.source = answer.source.replace('"ta+head"', '"ta+repr"').replace("'ta+head'", "'ta+repr'")
    wrong = grade_notebook(source, release, Options(profile="smoke", run_dir=str(tmp_path / "run")), student="bo")
    fails = {f["grade_id"]: f["message"] for f in wrong["failures"]}
    assert "does not have the largest gain" in fails["07-efficient_fix"]
    none = grade_notebook(source, release, Options(profile="smoke", run_dir=str(tmp_path / "empty")), student="cy")
    fails = {f["grade_id"]: (f["exception"], f["message"]) for f in none["failures"]}
    assert fails["07-run-results"][0] == "ReadingError" and "does not exist" in fails["07-run-results"][1]
    assert {t["grade_id"]: t["passed"] for t in none["tests"]} == {**passed, "07-efficient_fix": False}
