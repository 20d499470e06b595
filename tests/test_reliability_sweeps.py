"""Reliability matrix of the sweep runner (``python -m simo_lite.course sweep grid.yaml``), issue 11.

Every row is a case from the issue and its expected outcome, checked on what the user sees: the sweep
is started as a command in a subprocess (``sys.executable -m simo_lite.course sweep``, env ``CI=1``)
and the assertions read its exit code, stderr, stdout and the table it writes. Either a clear error
whose message names the valid values, before anything runs, or a table whose every row carries the
results of its own run. Everything goes under a temporary folder (``SIMO_LITE_RUNS`` / ``--run-dir``).

One grid executes notebooks (03 in the smoke profile, three combinations, one of them failing in its
set-up cell); every other row fails before a kernel starts.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simo_lite import course

REPO = course.REPO


def _env(root: Path) -> dict:
    return {**os.environ, "CI": "1", "SIMO_LITE_RUNS": str(root), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def sweep_cli(*args, root: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simo_lite.course", "sweep", *map(str, args)], cwd=REPO,
                          env=_env(root), capture_output=True, text=True, timeout=timeout)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


VALID_03 = sorted(course.notebook_parameters(course.NOTEBOOK_DIR / "03_merging.ipynb"))

# (row id, issue row, grid file text, extra arguments, texts the terminal must show)
ERROR_ROWS = [
    ("typo-key", "2: a typo'd key only warned and ran duplicate combinations under other labels",
     "merge_methd: [ta, ties]\n", ["--only", "03"],
     ["unknown parameter 'merge_methd' (did you mean 'merge_method'?)", "valid parameters: " + ", ".join(VALID_03)]),
    ("empty-list", "2: merge_method: [] crashed with FileNotFoundError",
     "merge_method: []\nties_k: [0.2]\n", ["--only", "03"], ["'merge_method' has an empty list of values",
                                                            "zero runs"]),
    ("not-a-list", "2: a grid that is not parameter -> list",
     "merge_method: ties\n", ["--only", "03"], ["expected a mapping of parameter -> list of values"]),
    ("repeated-value", "2: the same combination twice under two labels",
     "ties_k: [0.2, 0.2]\n", ["--only", "03"], ["'ties_k' lists 0.2 more than once"]),
    ("same-run-twice", "2: two values that are one run (alpha 1 and 1.0) share one folder",
     "alpha: [1, 1.0]\n", ["--only", "03"], ["'alpha' lists 1.0 more than once"]),
    ("sweeps-run-dir", "2: each combination's folder is the sweep's to choose",
     "run_dir: [a, b]\n", ["--only", "03"], ["run_dir cannot be swept"]),
    ("unknown-dataset", "4: -p dataset imagenet gave KeyError",
     "dataset: [imagenet]\n", ["--only", "03"], ["unknown dataset 'imagenet'", "valid datasets: scenes, nyuv2, cityscapes"]),
    ("parameter-of-another-notebook", "2/5: a name the selected notebooks do not declare",
     "ties_k: [0.2, 0.5]\n", ["--only", "00"], ["unknown parameter 'ties_k'", "00_scenes"]),
    ("unknown-notebook", "4: --only 09",
     "ties_k: [0.2]\n", ["--only", "09"], ["no notebook numbered 09", "valid notebook numbers: 00, 01"]),
    ("huge-grid-needs-yes", "2: a 2,000-run grid started without saying how many runs",
     "ties_k: [" + ", ".join(f"{(i + 1) / 1000:.3f}" for i in range(1000)) + "]\nmerge_method: [ta, ties]\n",
     ["--only", "03"], ["has 2000 combinations", "pass --yes"]),
    ("sweep-dir-is-a-file", "4: a run dir that is a file",
     "ties_k: [0.2]\n", ["--only", "03", "--run-dir", "{file}"], ["is a file, not a folder"]),
    ("missing-grid-file", "4: a grid file that does not exist",
     None, ["--only", "03"], ["cannot read grid file"]),
]


@pytest.mark.parametrize("row", ERROR_ROWS, ids=[r[0] for r in ERROR_ROWS])
def test_sweep_error_rows(row, tmp_path):
    """Reliability matrix: exit 2, one clear message naming the valid values, no traceback, before
    anything runs: no run folder, no table."""
    _, _issue, grid, extra, texts = row
    grid_file = tmp_path / "grid.yaml"
    if grid is not None:
        grid_file.write_text(grid)
    (tmp_path / "a-file").write_text("x")
    root = tmp_path / "runs"
    res = sweep_cli(grid_file, *[a.format(file=tmp_path / "a-file") for a in extra], root=root)
    assert res.returncode == 2, (res.returncode, res.stderr, res.stdout)
    for t in texts:
        assert t in res.stderr, f"{t!r} not in stderr:\n{res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    assert not root.exists(), f"the sweep wrote {_files(root)}"
    if "--yes" in " ".join(texts):
        assert "sweep grid: 2000 runs (1000 ties_k x 2 merge_method)" in res.stdout, res.stdout


def test_sweep_refuses_a_folder_holding_another_run(tmp_path):
    """Row 2: a reused sweep folder mixed in earlier results; a combination's folder that holds a run
    made with other parameters stops the sweep before anything runs."""
    base = tmp_path / "sweep"
    clash = base / "smoke-0-merge_method=ties"
    clash.mkdir(parents=True)
    (clash / "run-params.json").write_text(json.dumps({"profile": "smoke", "seed": 1, "dataset": "scenes"}))
    grid = tmp_path / "grid.yaml"
    grid.write_text("merge_method: [ties]\n")
    res = sweep_cli(grid, "--only", "03", "--run-dir", base, root=tmp_path / "runs")
    assert res.returncode == 2 and "holds a run made with other parameters" in res.stderr, res.stderr
    assert "seed 1 there, 0 here" in res.stderr
    assert _files(base) == ["smoke-0-merge_method=ties", "smoke-0-merge_method=ties/run-params.json"]


def test_sweep_grid_tables_each_run_and_survives_a_failure(tmp_path):
    """Rows 2 and 3 (the README's ``sweep grid.yaml``). Before: a row labelled ``ties_k 0.5`` carried the
    03 results of a ``ties_k 0.2`` run from a reused folder, a failure mid-grid wrote no table, and the
    error was a blank ``PapermillExecutionError:``. Now: the count is printed first; every combination
    runs in a folder named by its parameters (with run-params.json); results planted in a reused folder
    and an old-layout ``<base>/0`` folder are never collected; the failing combination (``ties_k 7``)
    is marked in the table with the notebook's own error and the next one still runs; exit code 1."""
    base = tmp_path / "sweep"
    # stale files of an earlier sweep: the old layout (folder per index) and a reused combination folder
    (base / "0" / "results").mkdir(parents=True)
    (base / "0" / "results" / "03_merging.json").write_text(json.dumps({"ties_k": 0.2, "stale_marker": 1}))
    reused = base / "smoke-0-merge_method=ties,ties_k=0.5"
    (reused / "results").mkdir(parents=True)
    (reused / "run-params.json").write_text(json.dumps({"profile": "smoke", "seed": 0, "dataset": "scenes",
                                                        "merge_method": "ties", "ties_k": 0.5}))
    (reused / "results" / "99_stale.json").write_text(json.dumps({"stale_marker": 1}))
    (reused / "results" / "03_merging.json").write_text(json.dumps({"ties_k": 0.2, "stale_marker": 1}))
    grid = tmp_path / "grid.yaml"
    grid.write_text("merge_method: [ties]\nties_k: [0.5, 7, 0.2]\n")

    res = sweep_cli(grid, "--only", "03", "--run-dir", base, "--collect", "ties_k", root=tmp_path / "runs")
    assert res.returncode == 1, (res.stderr, res.stdout)
    assert res.stdout.startswith("sweep grid: 3 runs (1 merge_method x 3 ties_k)"), res.stdout[:300]
    assert "03_merging.ipynb failed in cell" in res.stderr and "ValueError: ties_k must be" in res.stderr, res.stderr
    assert "1 of 3 sweep runs failed" in res.stderr and "Traceback" not in res.stderr
    rows = json.loads((base / "sweep.json").read_text())
    assert [(r["ties_k"], r["status"].split(":")[0]) for r in rows] == [(0.5, "ok"), (7, "failed"), (0.2, "ok")]
    assert "ValueError: ties_k must be" in rows[1]["status"]
    for r in rows:
        out = Path(r["run_dir"])
        assert out.parent == base and json.loads((out / "run-params.json").read_text())["seed"] == 0
        if r["status"] == "ok":                       # the row's numbers are its own run's
            assert r["03_merging.ties_k"] == r["ties_k"]
        assert not any("stale" in k or k.startswith("99_") for k in r), r
    assert Path(rows[2]["run_dir"]).name == "smoke-0-merge_method=ties"          # ties_k 0.2 is the default
    assert Path(rows[1]["run_dir"]).name == "smoke-0-merge_method=ties,ties_k=7.0"
    table = (base / "sweep.md").read_text()
    assert "stale" not in table and table.count("\n") == 2 + 3
    assert (Path(rows[1]["run_dir"]) / "03_merging.failed.ipynb").exists()
    assert not list(base.rglob("*.tmp")) and not list(base.rglob(".*running*"))
