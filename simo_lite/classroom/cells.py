"""nbgrader cell metadata and the marked regions of the course notebooks' cells.

Every exercise and concept question of a source notebook is a run of cells carrying nbgrader's cell
metadata (``metadata.nbgrader``, schema version 3), so nbgrader can use the notebooks as they are:

========================  =======  ========  ======  ======  ==========================================
cell                      grade    solution  locked  points  grade_id
========================  =======  ========  ======  ======  ==========================================
exercise imports (code)   false    false     true    --      ``NN-exercise-imports``
statement (markdown)      false    false     true    --      ``NN-<name>-statement``
solution (code)           false    true      false   --      ``NN-<name>-solution``
test (code)               true     false     true    N       ``NN-<name>`` (one grades.csv column each)
========================  =======  ========  ======  ======  ==========================================

``<name>`` is the exercise's function (``pixel_shares``) or the question (``q1``); every cell also has
``schema_version: 3`` and ``task: false``. A test cell holds the public check (``checks.check_*`` or
``checks.answer``) and then the hidden tests between ``### BEGIN HIDDEN TESTS`` and
``### END HIDDEN TESTS``, which copies for students leave out and the grader restores. A cell takes
part in grading exactly when it carries this metadata: the grader runs the parameters cell, then
only these cells, so a test cell may depend only on its solution cell and the imports cell.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import nbformat

__all__ = ["SCHEMA_VERSION", "HIDDEN_BEGIN", "HIDDEN_END", "HiddenTestError", "nbgrader", "grade_id",
           "is_solution", "is_test", "is_locked", "is_graded_cell", "points", "solution_meta", "test_meta",
           "locked_meta", "split_hidden", "strip_hidden", "check_notebook", "test_cells", "solution_cells",
           "results_read"]

SCHEMA_VERSION = 3
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
_RUN_RESULTS = re.compile(r"""checks\.run_results\(\s*["']([\w\-]+)["']""")
_GRADE_ID = re.compile(r"^[A-Za-z0-9_\-]+$")          # what nbgrader accepts in a grade id
# nbgrader finds its delimiters anywhere in a line; ours must be alone on theirs, so both tools agree
_NBGRADER_WORDS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


class HiddenTestError(ValueError):
    """Unbalanced or nested ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS`` markers."""


def nbgrader(cell: Mapping[str, Any]) -> dict:
    """The cell's nbgrader metadata ({} when it has none)."""
    return dict(cell.get("metadata", {}).get("nbgrader") or {})


def grade_id(cell: Mapping[str, Any]) -> str | None:
    """The cell's nbgrader ``grade_id``, or None."""
    return nbgrader(cell).get("grade_id")


def is_solution(cell: Mapping[str, Any]) -> bool:
    """An nbgrader solution cell (the learner writes here)."""
    return bool(nbgrader(cell).get("solution"))


def is_test(cell: Mapping[str, Any]) -> bool:
    """An autograded test cell: graded, not a solution."""
    m = nbgrader(cell)
    return bool(m.get("grade")) and not m.get("solution")


def is_locked(cell: Mapping[str, Any]) -> bool:
    """A cell nbgrader marks read-only (statements, tests, the exercise imports)."""
    return bool(nbgrader(cell).get("locked"))


def is_graded_cell(cell: Mapping[str, Any]) -> bool:
    """Any cell with nbgrader's solution, grade or locked flag (the cells the grader runs)."""
    m = nbgrader(cell)
    return bool(m.get("grade") or m.get("solution") or m.get("locked"))


def points(cell: Mapping[str, Any]) -> float:
    """The points the cell is worth (0 when it sets none)."""
    return float(nbgrader(cell).get("points") or 0)


def _meta(grade_id: str, grade: bool, solution: bool, locked: bool, points: float | None = None) -> dict:
    m = {"grade": grade, "grade_id": grade_id, "locked": locked}
    if points is not None:
        m["points"] = points
    m.update({"schema_version": SCHEMA_VERSION, "solution": solution, "task": False})
    return m


def solution_meta(grade_id: str) -> dict:
    """An autograded answer cell: the learner writes here."""
    return _meta(grade_id, grade=False, solution=True, locked=False)


def test_meta(grade_id: str, points: float) -> dict:
    """An autograder test cell: read-only, worth ``points`` when it runs without an error."""
    return _meta(grade_id, grade=True, solution=False, locked=True, points=points)


def locked_meta(grade_id: str) -> dict:
    """A read-only cell (a statement, the exercise imports)."""
    return _meta(grade_id, grade=False, solution=False, locked=True)


def split_hidden(source: str, where: str = "cell") -> tuple[str, str]:
    """(the source without its hidden-test regions, the hidden regions' lines joined).

    Raises :class:`HiddenTestError` on an END without BEGIN, a nested BEGIN or an unclosed region."""
    public, hidden, inside = [], [], None
    for i, line in enumerate(source.split("\n")):
        stripped = line.strip()
        if stripped == HIDDEN_BEGIN:
            if inside is not None:
                raise HiddenTestError(f"{where}, line {i + 1}: `{HIDDEN_BEGIN}` inside the region opened on "
                                      f"line {inside + 1}")
            inside = i
        elif stripped == HIDDEN_END:
            if inside is None:
                raise HiddenTestError(f"{where}, line {i + 1}: `{HIDDEN_END}` without a matching `{HIDDEN_BEGIN}`")
            inside = None
        elif inside is None:
            public.append(line)
        else:
            hidden.append(line)
    if inside is not None:
        raise HiddenTestError(f"{where}, line {inside + 1}: `{HIDDEN_BEGIN}` is never closed by `{HIDDEN_END}`")
    while public and not public[-1].strip():
        public.pop()
    return "\n".join(public), "\n".join(hidden)


def strip_hidden(source: str, where: str = "cell") -> tuple[str, int]:
    """The source without its hidden-test regions, and how many there were."""
    n = sum(line.strip() == HIDDEN_BEGIN for line in source.split("\n"))
    return (split_hidden(source, where)[0] if n else source), n


def test_cells(nb: nbformat.NotebookNode) -> list:
    """The notebook's autograded test cells, in order."""
    return [c for c in nb.cells if is_test(c)]


def solution_cells(nb: nbformat.NotebookNode) -> list:
    """The notebook's solution cells, in order."""
    return [c for c in nb.cells if is_solution(c)]


def results_read(nb: nbformat.NotebookNode) -> list[str]:
    """The results files (``<run_dir>/results/<name>.json``, by name) that the notebook's graded cells
    read with ``checks.run_results``: its reading exercises, which grade against the run's numbers."""
    return list(dict.fromkeys(m.group(1) for c in nb.cells if c.cell_type == "code" and is_graded_cell(c)
                              for m in _RUN_RESULTS.finditer(c.source)))


def check_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> list[str]:
    """What is wrong with a source notebook's nbgrader cells ([] when nothing): the rules nbgrader
    enforces (unique, well-formed grade ids; points on test cells; solution regions only in solution
    cells, hidden tests only in test cells) and the course's own (every solution cell is followed by
    its test cell, ``NN-<name>-solution`` then ``NN-<name>``; markers alone on their lines)."""
    from .student import BEGIN, END, SolutionMarkerError, strip_solutions

    problems, seen = [], {}
    prefix = name[:2]
    for k, cell in enumerate(nb.cells):
        where = f"{name}, cell {k} ({cell.get('id', '?')})"
        m = nbgrader(cell)
        lines = cell.source.split("\n")
        for i, line in enumerate(lines):
            if any(w in line for w in _NBGRADER_WORDS) and line.strip() not in (BEGIN, END, HIDDEN_BEGIN, HIDDEN_END) \
                    and not line.strip().startswith(BEGIN + ":"):
                problems.append(f"{where}, line {i + 1}: a marker must be alone on its line "
                                f"(nbgrader would see one here): {line.strip()!r}")
        has_solution = any(line.strip().startswith(BEGIN) for line in lines)
        has_hidden = any(line.strip() == HIDDEN_BEGIN for line in lines)
        if cell.cell_type == "code":
            try:
                strip_solutions(cell.source, where)
                split_hidden(cell.source, where)
            except (SolutionMarkerError, HiddenTestError) as e:
                problems.append(str(e))
        if has_solution and not is_solution(cell):
            problems.append(f"{where}: a solution region in a cell that is not an nbgrader solution cell")
        if has_hidden and not is_test(cell):
            problems.append(f"{where}: hidden tests in a cell that is not an nbgrader test cell")
        if not m:
            continue
        if m.get("schema_version") != SCHEMA_VERSION:
            problems.append(f"{where}: nbgrader schema_version {m.get('schema_version')!r}, expected {SCHEMA_VERSION}")
        for key in ("grade", "solution", "locked", "grade_id", "task"):
            if key not in m:
                problems.append(f"{where}: nbgrader metadata lacks {key!r}")
        gid = m.get("grade_id") or ""
        if not _GRADE_ID.match(gid):
            problems.append(f"{where}: grade_id {gid!r}: use letters, digits, '_' and '-'")
        elif not gid.startswith(prefix + "-"):
            problems.append(f"{where}: grade_id {gid!r} should start with the notebook's number, '{prefix}-'")
        if gid in seen:
            problems.append(f"{where}: duplicate grade_id {gid!r} (also cell {seen[gid]})")
        seen[gid] = k
        if m.get("task"):
            problems.append(f"{where}: task cells are not used by the course")
        if is_test(cell):
            if cell.cell_type != "code":
                problems.append(f"{where}: a test cell must be a code cell")
            if not (isinstance(m.get("points"), (int, float)) and m["points"] > 0):
                problems.append(f"{where}: test cell {gid!r} needs points > 0")
            if not has_hidden:
                problems.append(f"{where}: test cell {gid!r} has no hidden tests")
        if is_solution(cell):
            if cell.cell_type != "code":
                problems.append(f"{where}: solution cells are code cells in this course")
            if not has_solution:
                problems.append(f"{where}: solution cell {gid!r} has no `{BEGIN}` region")
            if not gid.endswith("-solution"):
                problems.append(f"{where}: a solution cell's grade_id ends in '-solution', got {gid!r}")
            test_id = gid[:-len("-solution")]
            later = [grade_id(c) for c in nb.cells[k + 1:] if is_test(c)]
            if not later or later[0] != test_id:
                problems.append(f"{where}: solution {gid!r} must be followed by its test cell {test_id!r}")
    return problems
