"""Notebook tests: every course notebook runs end to end in the smoke profile under papermill.

For each ``notebooks/NN_*.ipynb`` this checks, on the notebook executed by the course runner
(``simo_lite.course.run``) into a fresh run directory:

- the run completes and no cell has an error output (papermill also fails on any error);
- the ``parameters`` cell exists and holds only ``name = <literal>`` assignments, so papermill
  overrides work (it injects values after that cell and never re-runs expressions);
- at least one figure was saved as PNG under ``<run_dir>/figures``;
- the recap quotes numbers of the run's results JSON (tests/test_teaching.py, ``check_recap``);
- the smoke run stays within its time budget (kernel start-up included).

Rendered scenes are cached in a per-test directory (``SIMO_LITE_CACHE``), so every notebook is
timed on a cold cache, as a learner's first run would be.
"""
from __future__ import annotations

import ast
import os
import time
from pathlib import Path

import nbformat
import pytest

from simo_lite import course

NOTEBOOKS = course.notebooks()          # notebooks/[0-9][0-9]_*.ipynb, in order
SMOKE_BUDGET_S = 60                     # per notebook, smoke profile, kernel start-up included
PROFILE = os.environ.get("SIMO_LITE_TEST_PROFILE", "smoke")     # make test-gpu: "gpu"
BUDGET_S = SMOKE_BUDGET_S if PROFILE == "smoke" else course.NOTEBOOK_BUDGET_S[PROFILE]


def _ids(path: Path) -> str:
    return path.stem


def _is_literal(node: ast.expr) -> bool:
    """A constant (number, string, bool, None), or a negative number such as ``-1`` (parsed as -(1))."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
        return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool)
    return isinstance(node, ast.Constant)


def _check_parameters_cell(nb, name: str) -> None:
    """Exactly one cell tagged ``parameters``; every statement in it is ``name = <constant>``."""
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name}: expected one code cell tagged 'parameters', found {len(cells)}"
    tree = ast.parse(cells[0].source)
    assert tree.body, f"{name}: the parameters cell is empty"
    for stmt in tree.body:
        line = ast.get_source_segment(cells[0].source, stmt)
        assert isinstance(stmt, ast.Assign), f"{name}: parameters cell may only assign literals, found: {line}"
        assert len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name), \
            f"{name}: assign one plain name per line in the parameters cell, found: {line}"
        assert _is_literal(stmt.value), \
            f"{name}: parameters must be literals (derived values go in the next cell), found: {line}"


def _error_outputs(nb) -> list[str]:
    """'cell k: Ename: message' for every error output of an executed notebook."""
    return [f"cell {k}: {out.get('ename')}: {out.get('evalue')}"
            for k, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_parameters_cell_is_literal(path):
    """Static check of the source notebook (fast; the smoke run below repeats it on the output)."""
    _check_parameters_cell(nbformat.read(path, as_version=4), path.name)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs_in_profile(path, tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "1")                                   # progress bars off in the kernel too
    if PROFILE == "smoke":
        monkeypatch.setenv("OMP_NUM_THREADS", "1")                  # tiny smoke tensors: threads only add overhead
    monkeypatch.setenv("SIMO_LITE_CACHE", str(tmp_path / "cache"))  # cold, isolated scene cache
    run_dir = tmp_path / "run"
    executed_path = run_dir / path.name

    t0 = time.perf_counter()
    try:
        out = course.run(profile=PROFILE, only=[path.name[:2]], run_dir=str(run_dir))
    except SystemExit as e:                                         # the runner exits on a failing cell
        errors = _error_outputs(nbformat.read(executed_path, as_version=4)) if executed_path.exists() else []
        pytest.fail(f"{path.name} failed in the {PROFILE} profile: {e}\n" + "\n".join(errors)
                    + f"\nexecuted notebook: {executed_path}")
    elapsed = time.perf_counter() - t0

    assert Path(out) == run_dir
    executed = nbformat.read(executed_path, as_version=4)
    errors = _error_outputs(executed)
    assert not errors, f"{path.name}: error outputs:\n" + "\n".join(errors)
    _check_parameters_cell(executed, path.name)
    pngs = sorted((run_dir / "figures").rglob("*.png"))
    assert pngs, f"{path.name}: no PNG figure written under {run_dir / 'figures'}"
    from test_teaching import check_recap                          # the recap quotes the run's results
    check_recap(executed, run_dir, path.name)
    assert elapsed < BUDGET_S, f"{path.name}: {PROFILE} run took {elapsed:.1f} s (budget {BUDGET_S} s)"
    print(f"{path.name}: {PROFILE} run {elapsed:.1f} s, {len(pngs)} figure(s)")
