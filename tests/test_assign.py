"""Assignments in nbgrader's format: the sources' cells, the hidden tests, release copies validated both ways.

- every source notebook follows nbgrader's metadata rules and the course's (one solution cell, then its
  test cell with hidden tests; markers alone on their lines), and its question cells match
  ``notebooks/questions.yaml``;
- the answer key is in no module, object or file of the installed package: ``import simo_lite`` and
  walk every module with pkgutil;
- the hidden tests of each exercise catch what the public check cannot see: run on their own (the
  public verdict forced to "passed"), they pass on the solution and fail on a wrong function and on the
  stub; each question's hidden test fails on every other letter and on no answer;
- ``python -m simo_lite.assign`` writes release copies byte-identically on a re-run, never overwrites a
  copy that was edited or run without ``--force``, and names the file;
- validation, both ways, on every notebook: the sources (solutions) pass every test cell, the release
  copies (stubs) fail every test cell, in their hidden tests only, without any other error.
"""
from __future__ import annotations

import importlib
import math
import os
import pkgutil
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

import simo_lite
from simo_lite import checks, course, scenes
from simo_lite.classroom import assign, cells, student

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = course.notebooks()
KEY = re.compile(r'checks\.answer\("(\d\d-q\d+)", (answer_q\d+), key="([a-z])"\)')


def _ids(path: Path) -> str:
    return path.stem


def _keys() -> dict[str, str]:
    """The answer key, read from the source notebooks' hidden tests (the only place it is written)."""
    keys = {}
    for path in NOTEBOOKS:
        for c in nbformat.read(path, as_version=4).cells:
            for m in KEY.finditer(cells.split_hidden(c.source)[1] if cells.is_test(c) else ""):
                keys[m.group(1)] = m.group(3)
    return keys


def test_sources_follow_the_rules():
    assert assign.check_sources() == []
    keys = _keys()
    assert sorted(keys) == sorted(checks.questions())


def test_nbgrader_metadata_of_every_exercise():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        tests, sols = cells.test_cells(nb), cells.solution_cells(nb)
        assert len(tests) == len(sols) >= 4, path.name
        for c in tests:
            assert cells.nbgrader(c) == {"grade": True, "grade_id": cells.grade_id(c), "locked": True,
                                         "points": cells.points(c), "schema_version": 3, "solution": False,
                                         "task": False}
            assert cells.points(c) in (1, 2)
        for c in sols:
            assert cells.nbgrader(c) == {"grade": False, "grade_id": cells.grade_id(c), "locked": False,
                                         "schema_version": 3, "solution": True, "task": False}
        imports = [c for c in nb.cells if cells.grade_id(c) == f"{path.name[:2]}-exercise-imports"]
        assert len(imports) == 1 and cells.is_locked(imports[0]) and imports[0].cell_type == "code"


def test_check_notebook_reports_broken_cells():
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    sol = next(c for c in nb.cells if cells.is_solution(c))
    test = next(c for c in nb.cells if cells.is_test(c))
    test.source = test.source.replace(cells.HIDDEN_END, "")                           # unclosed
    sol.source += "\nx = 1  # END SOLUTION here"                                        # nbgrader would see it
    other = next(c for c in nb.cells if cells.is_test(c) and c is not test)
    other.metadata["nbgrader"]["grade_id"] = cells.grade_id(test)                        # duplicate
    problems = "\n".join(cells.check_notebook(nb, NOTEBOOKS[0].name))
    assert "never closed" in problems and "alone on its line" in problems and "duplicate grade_id" in problems


# ----------------------------------------------------------------------------------------------
# The key is not in the package
# ----------------------------------------------------------------------------------------------
def _walk(obj, seen: set, depth: int = 0):
    """Every dict, list, tuple or set reachable from ``obj`` through containers (and module-level objects)."""
    if depth > 6 or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, dict):
        yield obj
        for k, v in obj.items():
            yield from _walk(v, seen, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            yield from _walk(v, seen, depth + 1)


def test_no_answer_key_in_the_installed_package():
    keys = _keys()
    assert len(keys) == 18
    modules = [importlib.import_module(m.name) for m in pkgutil.walk_packages(simo_lite.__path__, "simo_lite.")]
    assert any(m.__name__ == "simo_lite.classroom.checks.nb03" for m in modules)
    seen: set = set()
    for module in [simo_lite, *modules]:
        for name, value in vars(module).items():
            for d in _walk(value, seen):
                assert "answer" not in d, f"{module.__name__}.{name}: a dict with an answer"
                qids = [k for k in d if isinstance(k, str) and re.fullmatch(r"\d\d-q\d+", k)]
                for qid in qids:
                    assert not (isinstance(d[qid], str) and len(d[qid].strip("() ")) == 1), \
                        f"{module.__name__}.{name}: maps {qid} to a letter"
    assert all("answer" not in q for q in checks.QUESTIONS.values())
    # no file of the package (code, data, anything) names a question at all, let alone its letter
    root = Path(simo_lite.__file__).parent
    for f in root.rglob("*"):
        if f.is_file() and "__pycache__" not in f.parts:
            text = f.read_text(errors="ignore")
            assert not re.search(r"\b\d\d-q\d+\b", text), f"{f}: names a concept question"
    assert not any(f.name.endswith((".yaml", ".json")) for f in root.rglob("*") if "__pycache__" not in f.parts)


# ----------------------------------------------------------------------------------------------
# The hidden tests catch what the public check does not see
# ----------------------------------------------------------------------------------------------
def _perturb(x):
    """A wrong answer close to the right one: the first entry or value changed."""
    if isinstance(x, torch.Tensor):
        y = x.clone().reshape(-1)
        y[0] = ~y[0] if y.dtype == torch.bool else y[0] + 1
        return y.reshape(x.shape)
    if isinstance(x, dict):
        k = next(iter(x))
        return {**x, k: _perturb(x[k])}
    if isinstance(x, bool):
        return not x
    return x + 1 if isinstance(x, int) else x * 1.1 + 0.1


def _exercise_tests():
    """(notebook, grade_id, function name, ok variable, solution source, hidden source) of every exercise."""
    out = []
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        sols = {cells.grade_id(c): c.source for c in nb.cells if cells.is_solution(c)}
        for c in cells.test_cells(nb):
            public, hidden = cells.split_hidden(c.source)
            m = re.search(r"^(ok_\w+) = checks\.check_\w+\((\w+)\)$", public, re.M)
            if m:
                out.append((path.name, cells.grade_id(c), m.group(2), m.group(1), sols[cells.grade_id(c) + "-solution"],
                            hidden))
    return out


EXERCISES = _exercise_tests()


def _namespace():
    return {"torch": torch, "math": math, "np": np, "scenes": scenes, "checks": checks}


@pytest.mark.parametrize("nb,gid,fn,ok,solution,hidden", EXERCISES, ids=[e[1] for e in EXERCISES])
def test_hidden_tests_catch_a_wrong_function(nb, gid, fn, ok, solution, hidden):
    ns = _namespace()
    exec(compile(solution, gid, "exec"), ns)
    right = ns[fn]
    exec(compile(hidden, gid, "exec"), {**_namespace(), fn: right, ok: True})           # the solution passes
    wrong = lambda *a, **k: _perturb(right(*a, **k))                                     # noqa: E731
    with pytest.raises(Exception):                                                       # a wrong result fails
        exec(compile(hidden, gid, "exec"), {**_namespace(), fn: wrong, ok: True})
    stub_ns = _namespace()
    exec(compile(student.strip_solutions(solution)[0], gid, "exec"), stub_ns)
    with pytest.raises(NotImplementedError):                                             # the stub fails
        exec(compile(hidden, gid, "exec"), {**_namespace(), fn: stub_ns[fn], ok: True})
    with pytest.raises(AssertionError, match="the check above failed"):                  # so does the public verdict
        exec(compile(hidden, gid, "exec"), {**_namespace(), fn: right, ok: False})


def test_question_hidden_tests_accept_only_the_key(capsys):
    keys = _keys()
    for path in NOTEBOOKS:
        for c in cells.test_cells(nbformat.read(path, as_version=4)):
            hidden = cells.split_hidden(c.source)[1]
            m = KEY.search(hidden)
            if not m:
                continue
            qid, var, key = m.groups()
            assert keys[qid] == key
            letters = checks.questions()[qid]["options"]
            exec(compile(hidden, qid, "exec"), {"checks": checks, var: f"({key.upper()})"})
            for wrong in [*(k for k in letters if k != key), None, "z"]:
                with pytest.raises(AssertionError, match=f"{qid}: wrong or missing answer"):
                    exec(compile(hidden, qid, "exec"), {"checks": checks, var: wrong})
    capsys.readouterr()


# ----------------------------------------------------------------------------------------------
# python -m simo_lite.assign
# ----------------------------------------------------------------------------------------------
def _cli(*args, timeout=600):
    env = {**os.environ, "CI": "1"}
    return subprocess.run([sys.executable, "-m", "simo_lite.assign", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_release_is_byte_identical_and_never_overwrites_work(tmp_path):
    out = tmp_path / "release"
    first = _cli("--out", str(out), "--only", "00", "03", "--no-validate")
    assert first.returncode == 0, first.stderr
    files = {p.name: p.read_bytes() for p in out.glob("*.ipynb")}
    assert sorted(files) == ["00_scenes.ipynb", "03_merging.ipynb"]
    again = _cli("--out", str(out), "--only", "00", "03", "--no-validate")
    assert again.returncode == 0 and again.stdout.count("[unchanged]") == 2, again.stdout
    assert {p.name: p.read_bytes() for p in out.glob("*.ipynb")} == files
    copy = nbformat.read(out / "03_merging.ipynb", as_version=4)
    assert "Assignment" in copy.cells[0].source and "HIDDEN TESTS" not in nbformat.writes(copy)
    assert [cells.grade_id(c) for c in copy.cells if cells.is_test(c)] == \
        [cells.grade_id(c) for c in nbformat.read(NOTEBOOKS[3], as_version=4).cells if cells.is_test(c)]
    sol = next(c for c in copy.cells if cells.is_solution(c))                   # a student writes a solution
    sol.source = sol.source.replace("raise NotImplementedError", "return {}  # mine\n    raise NotImplementedError")
    nbformat.write(copy, out / "03_merging.ipynb")
    edited = (out / "03_merging.ipynb").read_bytes()
    kept = _cli("--out", str(out), "--only", "00", "03", "--no-validate")
    assert kept.returncode == 1
    assert "03_merging.ipynb: edited since it was generated" in kept.stderr and "--force" in kept.stderr
    assert "00_scenes.ipynb" not in kept.stderr
    assert (out / "03_merging.ipynb").read_bytes() == edited
    forced = _cli("--out", str(out), "--only", "03", "--force", "--no-validate")
    assert forced.returncode == 0, forced.stderr
    assert (out / "03_merging.bak-1.ipynb").read_bytes() == edited
    assert (out / "03_merging.ipynb").read_bytes() == files["03_merging.ipynb"]


def test_release_refuses_the_source_folder():
    res = _cli("--out", "notebooks", "--only", "03", "--no-validate")
    assert res.returncode == 1 and "source folder" in res.stderr


def test_release_copies_validate_both_ways(tmp_path, capsys):
    """Every notebook: the sources pass every test cell, the release copies fail every one (hidden tests only)."""
    out = tmp_path / "release"
    assign.release(out, quiet=True)
    t0 = time.perf_counter()
    rows = assign.validate(out_dir=out, jobs=2, progress=False)
    elapsed = time.perf_counter() - t0
    print(capsys.readouterr().out)
    assert [r["notebook"] for r in rows] == [p.name for p in NOTEBOOKS]
    for r in rows:
        assert r["source_passed"] == r["tests"] == r["release_failed"] >= 4, r
    print(f"validated {len(rows)} notebooks both ways in {elapsed:.1f} s")


def test_validation_catches_a_test_that_a_stub_passes(tmp_path):
    """A test cell whose hidden tests do not fail without a solution is reported (and nothing is hidden)."""
    src = tmp_path / "src"
    src.mkdir()
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    test = next(c for c in nb.cells if cells.grade_id(c) == "00-q2")
    test.source = cells.split_hidden(test.source)[0] + f"\n{cells.HIDDEN_BEGIN}\npass\n{cells.HIDDEN_END}"
    nbformat.write(nb, src / NOTEBOOKS[0].name)
    (src / "questions.yaml").write_text((REPO / "notebooks" / "questions.yaml").read_text())
    out = tmp_path / "release"
    assign.release(out, quiet=True, source_dir=src)
    with pytest.raises(assign.AssignmentError, match="00-q2 passes on the stubs"):
        assign.validate(out_dir=out, jobs=1, progress=False, quiet=True, source_dir=src)
