"""The offline autograder (``python -m simo_lite.grade``) on a synthetic class of notebook 00.

- the layouts it accepts: ``<student>_<notebook>.ipynb``, ``<student>/<notebook>.ipynb``, an LMS zip
  (Moodle's ``<name>_<id>_assignsubmission_file_/`` folders), a zip of one folder, a zip per student;
  unknown notebooks, duplicates and files without a student id are reported, never fatal;
- how a submission is rebuilt: solution cells by grade_id (then cell id, else the stub, the last of
  duplicates), every other cell from the source notebook, the parameters injected;
- a class of six, graded with ``--jobs 2`` in a subprocess: fully correct, empty (the release copy), a
  wrong solution and a wrong answer, deleted and retyped locked/test cells, a solution that fails at
  import, a solution that loops forever (a 12 s cell timeout). Every cell of grades.csv and
  failures.csv is checked, and the feedback pages exist.
"""
from __future__ import annotations

import copy
import csv
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nbformat
import pytest

from simo_lite import course
from simo_lite.classroom import cells, grade, student

REPO = Path(__file__).resolve().parent.parent
SOURCE = course.notebooks(["00"])[0]
NAME = SOURCE.name
CELL_TIMEOUT_S = 12
LOOP_AT = "    positives = float(labels.sum())"  # a line of pos_weight's solution: an endless loop goes before it


def _release():
    return student.make_student(nbformat.read(SOURCE, as_version=4), NAME, kind="release")[0]


def _solved(nb=None):
    """The release copy with every solution cell filled in from the source (what a good student hands in)."""
    nb = copy.deepcopy(nb or _release())
    solutions = {cells.grade_id(c): c.source for c in nbformat.read(SOURCE, as_version=4).cells if cells.is_solution(c)}
    for c in nb.cells:
        if cells.is_solution(c):
            c.source = solutions[cells.grade_id(c)]
    return nb


def _cell(nb, gid):
    return next(c for c in nb.cells if cells.grade_id(c) == gid)


def _write(nb, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


# ----------------------------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------------------------
def test_discover_layouts(tmp_path):
    rel = _release()
    root = tmp_path / "subs"
    _write(rel, root / f"alice_{NAME}")                                  # <student>_<notebook>
    _write(rel, root / "bob" / NAME)                                     # <student>/<notebook>
    _write(rel, root / "carol" / "assignment1" / "renamed.ipynb")        # nbgrader layout, renamed: metadata
    _write(rel, root / f"doejane_123_456_{NAME[:-6]}-1.ipynb")          # Canvas, a resubmission
    _write(rel, root / NAME)                                             # no student id
    _write(rel, root / "bob" / f"copy of {NAME}")                        # a second one by bob
    _write(nbformat.v4.new_notebook(), root / "zoe_notes.ipynb")         # not a course notebook
    (root / "readme.txt").write_text("ignored")
    lms = tmp_path / "lms"
    _write(rel, lms / "Dave Roe_1002_assignsubmission_file_" / NAME)
    _write(rel, lms / "Erin Moe_1003_assignsubmission_file_" / NAME)
    with zipfile.ZipFile(root / "moodle.zip", "w") as z:
        for f in lms.rglob("*.ipynb"):
            z.write(f, f.relative_to(lms))
    with zipfile.ZipFile(root / "frank.zip", "w") as z:                  # one student's zip of one folder
        z.write(root / "bob" / NAME, f"frank/{NAME}")
    with zipfile.ZipFile(root / "gina.zip", "w") as z:                   # one student's zip, flat
        z.write(root / "bob" / NAME, NAME)
    subs, problems = grade.discover(root, unpack_dir=tmp_path / "unpacked")
    assert [(s.student, s.notebook) for s in subs] == [
        ("Dave Roe_1002", NAME), ("Erin Moe_1003", NAME), ("alice", NAME), ("bob", NAME), ("carol", NAME),
        ("doejane_123_456", NAME), ("frank", NAME), ("gina", NAME)]
    why = sorted((p["exception"], p["line"]) for p in problems)
    assert why == [("Duplicate", f"bob/copy of {NAME}"), ("NoStudentId", NAME),
                   ("UnknownNotebook", "zoe_notes.ipynb")], why
    # an LMS zip given directly, whose entries all sit in one folder
    with zipfile.ZipFile(tmp_path / "class.zip", "w") as z:
        for f in lms.rglob("*.ipynb"):
            z.write(f, "download/" + str(f.relative_to(lms)))
    subs, problems = grade.discover(tmp_path / "class.zip", unpack_dir=tmp_path / "unpacked2")
    assert [s.student for s in subs] == ["Dave Roe_1002", "Erin Moe_1003"] and not problems


def test_rebuild_takes_only_solution_cells_from_the_submission():
    source = nbformat.read(SOURCE, as_version=4)
    sub = _solved()
    _cell(sub, "00-q1-solution").source = 'answer_q1 = "c"'
    sub.cells.remove(_cell(sub, "00-pos_weight"))                              # a deleted test cell
    _cell(sub, "00-q2").source = "pass  # retyped"                               # a retyped test cell
    dup = copy.deepcopy(_cell(sub, "00-q2-solution"))
    dup.source, dup["id"] = 'answer_q2 = "a"', "dup"
    sub.cells.append(dup)                                                        # a duplicated solution cell
    lost = _cell(sub, "00-depth_to_normals-solution")
    lost.metadata.pop("nbgrader")                                                # metadata lost: matched by id
    lost.source = "def depth_to_normals(d, f):\n    return 0"
    sub.cells.remove(_cell(sub, "00-pos_weight-solution"))                     # a missing solution: the stub
    nb, notes = grade.rebuild(source, sub, "exercises", {"profile": "smoke", "seed": 3, "nope": 1})
    by = {cells.grade_id(c): c for c in nb.cells if cells.grade_id(c)}
    assert by["00-q1-solution"].source == 'answer_q1 = "c"' and by["00-q2-solution"].source == 'answer_q2 = "a"'
    assert by["00-depth_to_normals-solution"].source.endswith("return 0")
    assert "raise NotImplementedError" in by["00-pos_weight-solution"].source
    for gid in ("00-pos_weight", "00-q2", "00-exercise-imports"):
        assert by[gid].source == _cell(source, gid).source and cells.HIDDEN_BEGIN in by["00-q2"].source
    assert [c.get("id") for c in nb.cells[:3]] == [next(c for c in source.cells if "parameters" in
                                                        c.metadata.get("tags", [])).get("id"),
                                                   "grader-parameters", "grader-seed"]
    assert nb.cells[1].source.splitlines()[1:] == ["profile = 'smoke'", "seed = 3"]
    assert all(cells.is_graded_cell(c) for c in nb.cells[3:])               # exercise scope: nothing of the lesson
    assert len(notes) == 3 and any("last one was graded" in n for n in notes)
    assert any("cell id" in n for n in notes) and any("empty exercise" in n for n in notes)
    full, _ = grade.rebuild(source, sub, "notebook", {"profile": "smoke"})
    assert len(full.cells) == len(source.cells) + 2


# ----------------------------------------------------------------------------------------------
# A synthetic class
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    base = tmp_path_factory.mktemp("class")
    subs = base / "submissions"
    rel = _release()
    _write(_solved(rel), subs / f"alice_{NAME}")                               # fully correct
    _write(rel, subs / "bob" / NAME)                                            # empty: the release copy
    wrong = _solved(rel)
    sol = _cell(wrong, "00-pos_weight-solution")
    sol.source = sol.source.replace("return (labels.numel() - positives) / positives",
                                    "return positives / (labels.numel() - positives)")
    _cell(wrong, "00-q1-solution").source = '# your answer\nanswer_q1 = "b"'
    deleted = _solved(rel)
    deleted.cells.remove(_cell(deleted, "00-pos_weight"))                     # test cell deleted
    deleted.cells.remove(_cell(deleted, "00-exercise-imports"))                 # locked cell deleted
    _cell(deleted, "00-q2").source = "print('I changed the test')"              # test cell retyped
    lms = base / "lms"
    _write(wrong, lms / "Carol Doe_1001_assignsubmission_file_" / NAME)
    _write(deleted, lms / "Dave Roe_1002_assignsubmission_file_" / NAME)
    subs.mkdir(exist_ok=True)
    with zipfile.ZipFile(subs / "moodle-download.zip", "w") as z:
        for f in sorted(lms.rglob("*.ipynb")):
            z.write(f, f.relative_to(lms))
    broken = _solved(rel)
    sol = _cell(broken, "00-depth_to_normals-solution")
    sol.source = "import nonexistent_module_xyz\n" + sol.source
    _write(broken, subs / f"erin-{NAME}")                                       # fails at import
    loops = _solved(rel)
    sol = _cell(loops, "00-pos_weight-solution")
    sol.source = sol.source.replace(LOOP_AT, "    while True:\n        pass\n" + LOOP_AT)
    _write(loops, subs / "frank" / NAME)                                        # loops forever
    _write(nbformat.v4.new_notebook(), subs / "zoe_notes.ipynb")                # not a course notebook
    out = base / "graded"
    env = {**os.environ, "CI": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "simo_lite.grade", str(subs), "--out", str(out), "--jobs", "2",
                           "--cell-timeout", str(CELL_TIMEOUT_S)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(proc.stdout)
    print(f"graded 6 submissions in {elapsed:.1f} s: {6 / elapsed:.2f} submissions/s on 2 jobs")
    return out, proc


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_grades_csv(graded_class):
    out, _ = graded_class
    assert _rows(out / "grades.csv") == [
        ["student", "notebook", "total", "max", "00-pos_weight", "00-miou", "00-depth_to_normals", "00-q1", "00-q2"],
        ["Carol Doe_1001", NAME, "5", "8", "0", "2", "2", "0", "1"],  # inverted weight, wrong q1
        ["Dave Roe_1002", NAME, "8", "8", "2", "2", "2", "1", "1"],   # deleted/retyped cells restored: all right
        ["alice", NAME, "8", "8", "2", "2", "2", "1", "1"],
        ["bob", NAME, "0", "8", "0", "0", "0", "0", "0"],
        ["erin", NAME, "6", "8", "2", "2", "0", "1", "1"],            # import error in one solution cell
        ["frank", NAME, "6", "8", "0", "2", "2", "1", "1"],           # infinite loop: that test only
    ]


def test_failures_csv(graded_class):
    out, _ = graded_class
    assert_weight = 'line 4: assert ok_weight, "pos_weight: the check above failed"'
    def q(n, k):
        return f'line 3: assert checks.answer("00-q{n}", answer_q{n}, key="{k}"), "00-q{n}: wrong or missing answer"'
    assert _rows(out / "failures.csv") == [
        ["student", "notebook", "grade_id", "exception", "message", "line"],
        ["Carol Doe_1001", NAME, "00-pos_weight", "AssertionError", "pos_weight: the check above failed",
         assert_weight],
        ["Carol Doe_1001", NAME, "00-q1", "AssertionError", "00-q1: wrong or missing answer", q(1, "a")],
        ["bob", NAME, "00-pos_weight", "AssertionError", "pos_weight: the check above failed", assert_weight],
        ["bob", NAME, "00-miou", "AssertionError", "miou: the check above failed",
         'line 3: assert ok_miou, "miou: the check above failed"'],
        ["bob", NAME, "00-depth_to_normals", "AssertionError", "depth_to_normals: the check above failed",
         'line 3: assert ok_normals, "depth_to_normals: the check above failed"'],
        ["bob", NAME, "00-q1", "AssertionError", "00-q1: wrong or missing answer", q(1, "a")],
        ["bob", NAME, "00-q2", "AssertionError", "00-q2: wrong or missing answer", q(2, "c")],
        ["erin", NAME, "00-depth_to_normals-solution", "ModuleNotFoundError",
         "No module named 'nonexistent_module_xyz'", "line 1: import nonexistent_module_xyz"],
        ["erin", NAME, "00-depth_to_normals", "NameError", "name 'depth_to_normals' is not defined",
         "line 1: ok_normals = checks.check_normals_from_depth(depth_to_normals)"],
        ["frank", NAME, "00-pos_weight", "CellTimeoutError",
         f"the cell ran longer than {CELL_TIMEOUT_S} s and was interrupted", ""],
        ["", "zoe_notes.ipynb", "", "UnknownNotebook", "not one of the course notebooks (00, 01, 02, 03, 04, 05, 06, "
         "07, 08)", "zoe_notes.ipynb"],
    ]


def test_feedback_and_graded_notebooks(graded_class):
    out, proc = graded_class
    pages = sorted(p.name for p in (out / "feedback").glob("*.html"))
    assert pages == ["Carol Doe_1001.html", "Dave Roe_1002.html", "alice.html", "bob.html", "erin.html", "frank.html"]
    carol = (out / "feedback" / "Carol Doe_1001.html").read_text()
    assert "5 / 8" in carol and "00-q1: 0 / 1 points" in carol and "pos_weight: the check above failed" in carol
    assert "BEGIN HIDDEN TESTS" not in carol and "key=" not in carol          # the hidden code is not shown
    frank = nbformat.read(out / "graded" / "frank" / NAME, as_version=4)
    assert any(o.get("ename") == "CellTimeoutError" for c in frank.cells if c.cell_type == "code" for o in c.outputs)
    assert "graded 6 submission(s) of 6 student(s)" in proc.stdout and "zoe_notes.ipynb" in proc.stdout


def test_submission_timeout_skips_the_rest(tmp_path):
    """A per-submission budget smaller than the work: what is left is skipped and scores 0."""
    loops = _solved()
    sol = _cell(loops, "00-pos_weight-solution")
    sol.source = sol.source.replace(LOOP_AT, "    while True:\n        pass\n" + LOOP_AT)
    t0 = time.perf_counter()
    r = grade.grade_notebook(SOURCE, loops, grade.Options(cell_timeout=60, timeout=8), student="slow")
    assert time.perf_counter() - t0 < 8 + 15                  # the budget, then the probe and the kernel's shutdown
    assert r["total"] == 0 and r["max"] == 8
    kinds = {f["grade_id"]: f["exception"] for f in r["failures"]}
    assert kinds["00-pos_weight"] in ("CellTimeoutError", "SubmissionTimeout")        # cut by the budget
    assert kinds["00-q2"] == "SubmissionTimeout" and kinds["00-depth_to_normals"] == "SubmissionTimeout"
    assert "not run: the submission used its 8 s" in {f["message"] for f in r["failures"]}


def test_no_submissions_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "simo_lite.grade", str(tmp_path / "empty"), "--out",
                           str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CI": "1"})
    assert proc.returncode == 1 and "no submission of a course notebook" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_feedback_without_nbconvert(tmp_path, monkeypatch):
    """Without nbconvert the feedback is plain HTML with the same content."""
    monkeypatch.setitem(sys.modules, "nbconvert", None)                       # import nbconvert -> ImportError
    result = {"student": "a<b", "notebook": NAME, "total": 1.0, "max": 6.0, "notes": ["00-q1-solution: missing"],
              "tests": [{"grade_id": "00-q1", "points": 1.0, "max": 1.0, "passed": True, "output": "✓ right\n",
                         "error": None},
                        {"grade_id": "00-q2", "points": 0.0, "max": 1.0, "passed": False, "output": "",
                         "error": {"exception": "AssertionError", "message": "00-q2: wrong", "line": ""}}],
              "executed": None}
    [page] = grade.write_feedback([result], tmp_path)
    text = page.read_text()
    assert page.name == "a_b.html" and "a&lt;b" in text and "1 / 6" in text and "AssertionError: 00-q2: wrong" in text
