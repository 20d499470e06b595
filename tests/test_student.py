"""Exercises, auto-checks and student copies of the course notebooks.

- ``simo_lite.student`` on small synthetic notebooks: solution blocks replaced by
  ``raise NotImplementedError`` at the marker's indentation (signature and docstring kept), answers
  by ``None``, outputs cleared, idempotent, clear errors on unbalanced markers;
- every course notebook has 2-4 exercises (a solution cell with a function, then a test cell calling
  its check) and its concept questions, and together they use every check of ``simo_lite.checks`` and
  every question of ``notebooks/questions.yaml``;
- every check passes on the notebook's own solution, and fails (False, a useful message, no
  exception unless ``strict``) on a wrong implementation and on one that raises NotImplementedError;
- the student copies hold no hidden tests (no answer key) and run in the smoke profile under papermill
  without an error, each unsolved check printing "not implemented yet";
- ``pytest --nbval-lax`` on each notebook parameterised for the smoke profile: every cell runs, and
  the cells marked ``# NBVAL_CHECK_OUTPUT`` reproduce their stored output.

The notebook runs share one run directory and one scene cache (module fixtures), so only the first
notebook of a session pretrains the smoke foundation and trains the experts; each stays within the
same 60 s smoke budget as ``tests/test_notebooks.py``.
"""
from __future__ import annotations

import ast
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from simo_lite import checks, course, scenes, student
from simo_lite.classroom import cells as nbcells

NOTEBOOKS = course.notebooks()
SMOKE_BUDGET_S = 60
CHECK_CALL = re.compile(r"checks\.(check_\w+)\((\w+)\)")
READING_CALL = re.compile(r"checks\.check_reading\(\w+, ")          # a reading exercise (tests/test_readings.py)
ANSWER_CALL = re.compile(r'checks\.answer\("(\d\d-q\d+)", (\w+)[,)]')


def _ids(path: Path) -> str:
    return path.stem


# ----------------------------------------------------------------------------------------------
# The generator on synthetic notebooks
# ----------------------------------------------------------------------------------------------
EXERCISE_CELL = '''def f(x):
    """Double x."""
    # BEGIN SOLUTION
    y = 2 * x
    return y
    # END SOLUTION


print(checks.check_something(f))'''


def test_solution_replaced_signature_and_docstring_kept():
    out, n = student.strip_solutions(EXERCISE_CELL)
    assert n == 1
    assert out.splitlines()[:3] == ['def f(x):', '    """Double x."""',
                                    "    raise NotImplementedError('exercise: implement `f`')"]
    assert "2 * x" not in out and "SOLUTION" not in out and out.endswith("print(checks.check_something(f))")
    ns = {}
    exec(out.replace("print(checks.check_something(f))", ""), ns)
    with pytest.raises(NotImplementedError, match="exercise: implement `f`"):
        ns["f"](1)


def test_indentation_of_nested_blocks_and_custom_message():
    src = ("class A:\n    def method(self):\n        if True:\n            # BEGIN SOLUTION: use a loop\n"
           "            return 1\n            # END SOLUTION\n        return 0\n")
    out, n = student.strip_solutions(src)
    assert n == 1
    assert "            raise NotImplementedError('exercise: use a loop')\n        return 0" in out
    two = EXERCISE_CELL + "\n\n" + EXERCISE_CELL.replace("def f", "def g").replace("(f)", "(g)")
    out, n = student.strip_solutions(two)
    assert n == 2 and "implement `f`" in out and "implement `g`" in out
    ast.parse(out)


def test_top_level_answer_becomes_none_and_code_is_refused():
    out, n = student.strip_solutions('# BEGIN SOLUTION\nanswer_q1 = "b"\n# END SOLUTION\ncheck(answer_q1)')
    assert n == 1 and out.splitlines()[0].startswith("answer_q1 = None") and '"b"' not in out
    with pytest.raises(student.SolutionMarkerError, match="may only assign names"):
        student.strip_solutions("# BEGIN SOLUTION\nprint(1)\n# END SOLUTION")


@pytest.mark.parametrize("source, message", [
    ("def f():\n    # END SOLUTION\n    pass", "without a matching"),
    ("def f():\n    # BEGIN SOLUTION\n    return 1", "never closed"),
    ("def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION", "inside the solution block"),
])
def test_unbalanced_markers_error(source, message):
    with pytest.raises(student.SolutionMarkerError, match=message):
        student.strip_solutions(source, "nb.ipynb, cell 3")
    with pytest.raises(student.SolutionMarkerError, match=r"nb\.ipynb, cell 3, line \d"):
        student.strip_solutions(source, "nb.ipynb, cell 3")


def test_make_student_clears_outputs_and_is_idempotent():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# title", id="m"),
                nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\n" + EXERCISE_CELL, id="c", execution_count=3,
                                          outputs=[nbformat.v4.new_output("stream", text="✓ passed\n")])]
    copy, n = student.make_student(nb, "00_toy.ipynb")
    assert n == 1 and nb.cells[1].outputs and "BEGIN SOLUTION" in nb.cells[1].source    # the input is untouched
    code = [c for c in copy.cells if c.cell_type == "code"]
    assert code[0].outputs == [] and code[0].execution_count is None
    assert "NBVAL_CHECK_OUTPUT" not in code[0].source and "raise NotImplementedError" in code[0].source
    assert "Student copy" in copy.cells[0].source and "00_toy.ipynb" in copy.cells[0].source
    again, n2 = student.make_student(nb, "00_toy.ipynb")
    assert n2 == 1 and nbformat.writes(again) == nbformat.writes(copy)
    assert student.count_solutions(copy) == 0


def test_generate_reports_and_is_idempotent(tmp_path, capsys):
    report = student.generate(tmp_path, only=["03"])
    printed = capsys.readouterr().out
    source = nbformat.read(NOTEBOOKS[3], as_version=4)
    assert report == {"03_merging.ipynb": student.count_solutions(source)} and report["03_merging.ipynb"] >= 2
    assert f"03_merging.ipynb: removed {report['03_merging.ipynb']} solutions" in printed
    first = (tmp_path / "03_merging.ipynb").read_bytes()
    student.generate(tmp_path, only=["03"], quiet=True)
    assert (tmp_path / "03_merging.ipynb").read_bytes() == first
    copy = nbformat.read(tmp_path / "03_merging.ipynb", as_version=4)
    assert student.count_solutions(copy) == 0
    assert all(c.outputs == [] for c in copy.cells if c.cell_type == "code")


# ----------------------------------------------------------------------------------------------
# The exercises of the course notebooks
# ----------------------------------------------------------------------------------------------
def _exercises(nb) -> list[tuple[str, str, str]]:
    """(check name, function name, solution cell source) of every exercise: a test cell calling a check on the
    function of the solution cell before it (nbgrader grade_id ``NN-<fn>-solution`` then ``NN-<fn>``)."""
    found = []
    solutions = {nbcells.grade_id(c): c.source for c in nb.cells if nbcells.is_solution(c)}
    for cell in nb.cells:
        public = nbcells.split_hidden(cell.source)[0]
        if nbcells.is_test(cell) and CHECK_CALL.search(public):
            check, fn = CHECK_CALL.search(public).groups()
            found.append((check, fn, solutions.get(f"{nbcells.grade_id(cell)}-solution", "")))
    return found


def _questions(nb) -> list[tuple[str, str]]:
    """(question id, answer variable) of every public ``checks.answer`` call (the hidden tests' are left out)."""
    return [m.groups() for c in nb.cells if c.cell_type == "code"
            for m in ANSWER_CALL.finditer(nbcells.split_hidden(c.source)[0])]


def _solution(source: str, fn_name: str):
    """The solution function of an exercise cell, defined on its own (module-level imports only)."""
    tree = ast.parse(source)
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    ns = {"torch": torch, "math": math, "np": np, "scenes": scenes}
    exec(compile(ast.Module(body=defs, type_ignores=[]), fn_name, "exec"), ns)
    return ns[fn_name]


SOLUTIONS = {check: _solution(src, fn) for path in NOTEBOOKS
             for check, fn, src in _exercises(nbformat.read(path, as_version=4))}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_has_exercises_and_questions(path):
    nb = nbformat.read(path, as_version=4)
    student.count_solutions(nb)                                           # balanced markers, or it raises
    exercises = _exercises(nb)
    # 2-4 exercises after the "## Exercises" heading; the lesson's build cells (the learner writes the
    # mechanism where it is taught) are graded the same way but not counted
    start = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith("## Exercises"))
    tests_after = [c for c in nb.cells[start:] if nbcells.is_test(c) and (CHECK_CALL.search(public := nbcells.split_hidden(c.source)[0])
                                                                           or READING_CALL.search(public))]
    assert 2 <= len(tests_after) <= 4, f"{path.name}: {len(tests_after)} exercises after '## Exercises', expected 2-4"
    for check, fn, src in exercises:
        assert hasattr(checks, check), f"{path.name}: unknown check {check}"
        tree = ast.parse(src)
        defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == fn]
        assert defs, f"{path.name}: {check}({fn}) but the cell defines no function {fn}"
        body = src.splitlines()[defs[0].lineno - 1:defs[0].end_lineno]
        assert any(line.strip() == student.BEGIN for line in body), f"{path.name}: the solution of {fn} is not in it"
        assert ast.get_docstring(defs[0]), f"{path.name}: {fn} needs a docstring (it stays in the student copy)"
    questions = _questions(nb)
    assert len(questions) >= 1 and all(q.startswith(path.name[:2]) for q, _ in questions), questions
    assert sum("NBVAL_CHECK_OUTPUT" in c.source.split("\n")[0] for c in nb.cells) >= 1


def test_every_check_and_question_is_used_once():
    used = [check for path in NOTEBOOKS for check, _, _ in _exercises(nbformat.read(path, as_version=4))]
    assert sorted(used) == sorted(f"check_{n}" for n in checks.CHECKS)
    asked = [q for path in NOTEBOOKS for q, _ in _questions(nbformat.read(path, as_version=4))]
    assert sorted(asked) == sorted(checks.QUESTIONS)


# ----------------------------------------------------------------------------------------------
# The checks
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


# typical mistakes, with a word the check's message should contain
MISTAKES = {                      # (every key a check of checks.CHECKS: test_mistakes_name_real_checks)
    "check_normals_from_depth": (lambda d, fov: -SOLUTIONS["check_normals_from_depth"](d, fov), "away from the camera"),
    "check_ties_elect_sign": (lambda s: torch.sign(torch.sign(s).sum(0)), "sign of the sum"),
    "check_task_vector": (lambda pre, ft: {k: ft[k].float() - v.float() for k, v in pre.items()}, "unexpected key"),
    "check_linear_cka": (lambda x, y: float((y.T @ x).pow(2).sum() / ((x.T @ x).norm() * (y.T @ y).norm())), "expected"),
}


def test_mistakes_name_real_checks():
    assert set(MISTAKES) <= {f"check_{n}" for n in checks.CHECKS}


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_check_passes_on_the_solution(name, capsys):
    assert getattr(checks, name)(SOLUTIONS[name], strict=True) is True
    assert capsys.readouterr().out.startswith("✓ passed")


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_check_fails_on_a_wrong_function(name, capsys):
    solution = SOLUTIONS[name]
    wrong = lambda *a, **k: _perturb(solution(*a, **k))                   # noqa: E731
    assert getattr(checks, name)(wrong) is False
    out = capsys.readouterr().out
    assert out.startswith("✗") and len(out.split(":", 1)[1].strip()) > 20, out    # says what is wrong
    with pytest.raises(AssertionError):
        getattr(checks, name)(wrong, strict=True)
    capsys.readouterr()
    if name in MISTAKES:
        mistake, word = MISTAKES[name]
        assert getattr(checks, name)(mistake) is False
        out = capsys.readouterr().out
        assert word in out, out


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_check_reports_not_implemented_and_errors(name, capsys):
    def todo(*args, **kwargs):
        raise NotImplementedError("exercise: implement `todo`")

    def broken(*args, **kwargs):
        raise ValueError("boom")

    assert getattr(checks, name)(todo) is False
    assert "not implemented yet: replace the `raise NotImplementedError` line in `todo`" in capsys.readouterr().out
    assert getattr(checks, name)(broken) is False
    assert "your function raised ValueError: boom" in capsys.readouterr().out
    assert getattr(checks, name)(None) is False
    assert "expected a function" in capsys.readouterr().out


def test_answer(capsys):
    """Without the key only the format is checked; with it (a hidden test) right/wrong and every option's why."""
    q = checks.QUESTIONS["03-q1"]
    assert "answer" not in q and set(q["explanations"]) == set(q["options"])
    key, wrong = "b", "a"                                        # the key as the source notebook's hidden test has it
    assert checks.answer("03-q1", "(B) ", options="abc") is True
    out = capsys.readouterr().out
    assert "recorded" in out and q["options"]["b"] in out and "right" not in out and q["explanations"]["b"] not in out
    assert checks.answer("03-q1", key, key=key) is True
    out = capsys.readouterr().out
    assert "✓ 03-q1: right" in out and all(why in out for why in q["explanations"].values())
    assert checks.answer("03-q1", f"({wrong.upper()})", key=key) is False
    out = capsys.readouterr().out
    assert "not quite" in out and q["explanations"][wrong] in out
    assert checks.answer("03-q1", None, options="abc") is False
    out = capsys.readouterr().out
    assert "not answered yet" in out and q["explanations"]["b"] not in out
    assert checks.answer("03-q1", "z", options="abc") is False and "not an option" in capsys.readouterr().out
    assert checks.answer("03-q1", 2) is False and "not an option" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        checks.answer("03-q1", wrong, key=key, strict=True)
    with pytest.raises(KeyError, match="unknown question"):
        checks.answer("99-q1", "a")
    assert all(set(q["explanations"]) == set(q["options"]) for q in checks.QUESTIONS.values())


def test_answer_without_the_questions_file(tmp_path, monkeypatch, capsys):
    """A release copy on a machine without notebooks/questions.yaml: the letters come from ``options``."""
    monkeypatch.setenv("SIMO_LITE_QUESTIONS", str(tmp_path / "missing.yaml"))
    assert checks.questions() == {}
    assert checks.answer("03-q1", "c", options="abc") is True and "recorded" in capsys.readouterr().out
    assert checks.answer("03-q1", "d", options="abc") is False and "not an option" in capsys.readouterr().out
    assert checks.answer("03-q1", "b", key="b") is True


def test_questions_file_refuses_an_answer_key(tmp_path):
    from simo_lite.classroom import questions
    bad = tmp_path / "questions.yaml"
    bad.write_text("03_merging:\n  03-q1:\n    question: q?\n    options: {a: x, b: y}\n"
                   "    explanations: {a: x., b: y.}\n    answer: b\n")
    with pytest.raises(ValueError, match="does not belong in this file"):
        questions.questions(bad)


# ----------------------------------------------------------------------------------------------
# Student copies and nbval, in the smoke profile
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_env(tmp_path_factory):
    """A shared run directory and scene cache, and the environment of the notebook kernels."""
    base = tmp_path_factory.mktemp("student-smoke")
    env = {"CI": "1", "OMP_NUM_THREADS": "1", "SIMO_LITE_CACHE": str(base / "cache")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)                                                # papermill's kernels inherit it
    yield {"base": base, "run_dir": base / "run", "env": {**os.environ}}
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def student_dir(smoke_env):
    out = smoke_env["base"] / "student"
    student.generate(out, quiet=True)
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_copies_hold_no_hidden_tests_and_lock_the_tests(path, tmp_path):
    """Student and release copies: no hidden test (they hold the key), no solution, locked cells read-only."""
    nb = nbformat.read(path, as_version=4)
    for kind in ("student", "release"):
        copy, n = student.make_student(nb, path.name, kind=kind)
        text = nbformat.writes(copy)
        assert n == student.count_solutions(nb) and student.count_solutions(copy) == 0
        assert "HIDDEN TESTS" not in text and "SOLUTION" not in text and not re.search(r"key=\\?\"[a-e]\\?\"", text)
        tests = [c for c in copy.cells if nbcells.is_test(c)]
        assert tests and all(c.metadata["editable"] is False and c.metadata["deletable"] is False for c in tests)
        assert all("editable" not in c.metadata for c in copy.cells if nbcells.is_solution(c))
        assert copy.metadata["simo_lite"]["student_copy"]["kind"] == kind
        assert ("Assignment" if kind == "release" else "Student copy") in copy.cells[0].source


def _error_outputs(nb) -> list[str]:
    return [f"cell {k}: {o.get('ename')}: {o.get('evalue')}" for k, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error"]


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_student_copy_runs_in_smoke_profile(path, student_dir, smoke_env):
    import papermill as pm

    target = smoke_env["base"] / "executed-student" / path.name
    target.parent.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(student_dir / path.name), str(target), kernel_name="python3", progress_bar=False,
                            parameters={"profile": "smoke", "run_dir": str(smoke_env["run_dir"]),
                                        "show_progress": False},
                            cwd=str(path.parent), execution_timeout=SMOKE_BUDGET_S, log_output=False,
                            shutdown_kernel="immediate")
    except Exception as e:  # noqa: BLE001 -- papermill's execution error names the failing cell
        errors = _error_outputs(nbformat.read(target, as_version=4)) if target.exists() else []
        pytest.fail(f"student copy of {path.name} failed: {type(e).__name__}: {str(e)[:500]}\n" + "\n".join(errors))
    elapsed = time.perf_counter() - t0
    nb = nbformat.read(target, as_version=4)
    assert not _error_outputs(nb)
    exercise_cells = [c for c in nb.cells if c.cell_type == "code" and CHECK_CALL.search(c.source)]
    assert exercise_cells and all("not implemented yet" in _text(c) for c in exercise_cells), \
        [_text(c) for c in exercise_cells]
    answer_cells = [c for c in nb.cells if c.cell_type == "code" and ANSWER_CALL.search(c.source)]
    assert all("not answered yet" in _text(c) for c in answer_cells)
    assert elapsed < SMOKE_BUDGET_S, f"student copy of {path.name}: {elapsed:.1f} s (budget {SMOKE_BUDGET_S} s)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_nbval_smoke(path, smoke_env):
    """nbval-lax on the notebook parameterised for smoke: all cells run; NBVAL_CHECK_OUTPUT cells match."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(path))                                   # papermill's reader adds empty tags
    marked = [c for c in nb.cells if c.cell_type == "code" and "# NBVAL_CHECK_OUTPUT" in c.source.split("\n")]
    assert marked and all(c.outputs for c in marked), \
        f"{path.name}: NBVAL_CHECK_OUTPUT cells need stored outputs: python -m simo_lite.student --store-nbval-outputs"
    nb = parameterize_notebook(nb, {"profile": "smoke", "run_dir": str(smoke_env["run_dir"]), "show_progress": False})
    folder = smoke_env["base"] / "nbval" / path.stem
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / path.name)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
                           "--nbval-cell-timeout", str(SMOKE_BUDGET_S), str(folder / path.name)],
                          cwd=folder, env=smoke_env["env"], capture_output=True, text=True, timeout=4 * SMOKE_BUDGET_S)
    assert proc.returncode == 0, f"{path.name}: nbval failed\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert time.perf_counter() - t0 < 2 * SMOKE_BUDGET_S
