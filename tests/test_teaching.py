"""What makes the notebooks teach (the course's teaching rules, checked on every notebook):

- no exercise is solved in an earlier cell: in the student copy, every solution block (the code between
  ``BEGIN SOLUTION`` / ``END SOLUTION`` in the source) is compared with every other cell; a block whose
  long lines (>= 20 characters, whitespace-normalised) stand, half or more of them, in another cell of
  the student copy fails;
- the method notebooks (02, 05, 06, 07, 08) hold a training loop the learner writes (``backward()`` and an optimiser
  ``step()`` inside a solution block);
- every notebook typesets its math (LaTeX in its Markdown);
- every recap is a code cell tagged ``recap`` whose output quotes numbers of the run's results
  (checked on the smoke run in tests/test_notebooks.py, with :func:`recap_numbers_found` below).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nbformat
import pytest

from simo_lite import course
from simo_lite.classroom import student

NOTEBOOKS = course.notebooks()
# the notebooks whose method is trained: experts, both fixes, MTL, the per-layer merging coefficients
METHOD_NOTEBOOKS = ("02", "05", "06", "07", "08")
MIN_LINE = 20


def _ids(path: Path) -> str:
    return path.name[:2]


def _norm(line: str) -> str:
    return re.sub(r"\s+", " ", line.split("#", 1)[0] if not line.lstrip().startswith("#") else line).strip()


def solution_blocks(source: str) -> list[list[str]]:
    """The lines between each ``BEGIN SOLUTION`` / ``END SOLUTION`` pair of a cell's source."""
    blocks, cur = [], None
    for line in source.splitlines():
        if "BEGIN SOLUTION" in line:
            cur = []
        elif "END SOLUTION" in line:
            if cur is not None:
                blocks.append(cur)
            cur = None
        elif cur is not None:
            cur.append(line)
    return blocks


def _gid(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def repeated_solutions(source_nb, student_nb) -> list[str]:
    """'grade_id: k of n lines in cell j' for each solution block of ``source_nb`` whose long lines stand,
    half or more of them, in one other cell of ``student_nb`` (the solution's own cell, the student-copy
    cell with the same nbgrader grade_id, is skipped; the copy may add cells, such as its opening note)."""
    problems = []
    cell_lines = [({_norm(l) for l in c.source.splitlines()}, _gid(c)) for c in student_nb.cells]
    for i, cell in enumerate(source_nb.cells):
        for block in solution_blocks(cell.source if cell.cell_type == "code" else ""):
            long = [_norm(l) for l in block if len(_norm(l)) >= MIN_LINE]
            if not long:
                continue
            own = _gid(cell)
            for j, (lines, gid) in enumerate(cell_lines):
                if (own is not None and gid == own) or (own is None and j == i):
                    continue
                found = sum(l in lines for l in long)
                if 2 * found >= len(long):
                    gid = cell.metadata.get("nbgrader", {}).get("grade_id", f"cell {i}")
                    problems.append(f"{gid}: {found} of {len(long)} solution lines in cell {j}")
    return problems


def test_repeated_solutions_finds_a_transcribed_block():
    sol = nbformat.v4.new_code_cell("def ex(a, b):\n    # BEGIN SOLUTION\n    total_of_everything = a + b * 2 - 1\n"
                                    "    return total_of_everything\n    # END SOLUTION")
    sol.metadata["nbgrader"] = {"grade_id": "00-ex-solution"}
    src = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("def lesson(a, b):\n    total_of_everything = a + b * 2 - 1\n    return total_of_everything"),
        sol])
    stub = nbformat.v4.new_code_cell("def ex(a, b):\n    raise NotImplementedError")
    stub.metadata["nbgrader"] = {"grade_id": "00-ex-solution"}
    stu = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("a note"), src.cells[0], stub])
    assert repeated_solutions(src, stu) == ["00-ex-solution: 2 of 2 solution lines in cell 1"]
    stu.cells[1] = nbformat.v4.new_code_cell("print('nothing to copy here')")
    assert repeated_solutions(src, stu) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_no_exercise_is_solved_in_an_earlier_cell_of_the_student_copy(path):
    source = nbformat.read(path, as_version=4)
    copy, _ = student.make_student(nbformat.read(path, as_version=4), path.name)
    problems = repeated_solutions(source, copy)
    assert not problems, f"{path.name}: solutions readable elsewhere in the student copy:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name[:2] in METHOD_NOTEBOOKS], ids=_ids)
def test_method_notebooks_have_a_training_loop_the_learner_writes(path):
    nb = nbformat.read(path, as_version=4)
    loops = ["\n".join(b) for c in nb.cells if c.cell_type == "code" for b in solution_blocks(c.source)
             if ".backward()" in "\n".join(b) and ".step()" in "\n".join(b)]
    assert loops, f"{path.name}: no solution block with backward() and an optimiser step()"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_every_notebook_typesets_its_math(path):
    nb = nbformat.read(path, as_version=4)
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert re.search(r"\$[^$\n]*\\[a-zA-Z]+[^$\n]*\$", md), f"{path.name}: no LaTeX in its Markdown"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_the_recap_is_a_computed_cell(path):
    nb = nbformat.read(path, as_version=4)
    heads = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.lstrip().startswith("## Recap")]
    assert len(heads) == 1, f"{path.name}: expected one '## Recap' heading"
    nxt = nb.cells[heads[0] + 1]
    assert nxt.cell_type == "code" and "recap" in nxt.metadata.get("tags", []), \
        f"{path.name}: the cell after '## Recap' must be a code cell tagged 'recap'"


# ----------------------------------------------------------------------------------------------
# the recap's numbers (used on the executed smoke notebooks by tests/test_notebooks.py)
# ----------------------------------------------------------------------------------------------
def _numbers(obj) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)] if math.isfinite(obj) else []
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in _numbers(x)]
    if isinstance(obj, (list, tuple)):
        return [v for x in obj for v in _numbers(x)]
    return []


def recap_numbers_found(text: str, results: list) -> list[str]:
    """The numbers written in ``text`` (with a decimal point) that some value of ``results`` gives when
    rounded to the same decimals, as such or as a percentage (x 100), sign ignored."""
    values = [abs(v) for v in _numbers(results)]
    found = []
    for m in re.finditer(r"(?<![\w.])[-−+]?(\d+\.\d+)", text):
        s = m.group(1)
        d = len(s.split(".")[1])
        x = float(s)
        if any(round(v, d) == round(x, d) or round(100 * v, d) == round(x, d) for v in values):
            found.append(s)
    return found


def test_recap_numbers_found_matches_rounded_values():
    results = [{"delta_m": -0.31234, "alpha": 0.4, "nested": {"x": [2.5, float("nan")]}}]
    text = "TA loses 31.2 % (Δm −0.312) at α = 0.40; 2.50 s; and 9.99 is nobody's"
    assert recap_numbers_found(text, results) == ["31.2", "0.312", "0.40", "2.50"]


def recap_output(executed) -> str:
    """The text of the recap cell's outputs (markdown or plain text) of an executed notebook."""
    for c in executed.cells:
        if c.cell_type == "code" and "recap" in c.metadata.get("tags", []):
            parts = []
            for out in c.get("outputs", []):
                data = out.get("data", {})
                parts.append(data.get("text/markdown") or data.get("text/plain") or out.get("text", ""))
            return "\n".join(p if isinstance(p, str) else "".join(p) for p in parts)
    return ""


def check_recap(executed, run_dir: Path, name: str, minimum: int = 3) -> None:
    """Fail unless the executed notebook's recap quotes >= ``minimum`` numbers of the run's results JSON."""
    results = [json.loads(p.read_text()) for p in sorted((run_dir / "results").glob(f"{name[:2]}_*.json"))]
    assert results, f"{name}: no results/{name[:2]}_*.json in {run_dir}"
    text = recap_output(executed)
    found = recap_numbers_found(text, results)
    assert len(found) >= minimum, (f"{name}: the recap quotes {len(found)} number(s) of the run's results "
                                   f"({found}); it needs {minimum}. Recap output:\n{text[:800]}")
