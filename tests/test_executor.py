"""The job executors (:mod:`simo_lite.classroom.executor`) and the multi-seed collection.

- the process pool runs jobs in separate worker processes, at the same time, each with the requested
  number of torch threads; results come back in the jobs' order; a failing job is reported by its
  exception and the others finish;
- submitit's local executor (``cluster="local"``: no Slurm here) runs the same jobs;
- the tidy table and its mean ± SD across seeds (:func:`simo_lite.report.tidy_rows`,
  :func:`simo_lite.report.aggregate`) on synthetic row records, checked against numbers computed by hand;
- ``python -m simo_lite.experiment --profile smoke --tasks nyu3 --seeds 0 1 --workers 2 --threads 1``
  writes one run folder per seed and the collection of both seeds (about a minute).
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simo_lite import report
from simo_lite.classroom.executor import Job, run_jobs, worker_info

REPO = Path(__file__).resolve().parent.parent


def _mixed_jobs(threads_job_sleep: float = 0.0) -> list[Job]:
    """worker_info, a job that raises ValueError, worker_info, 2 ** 5: a failure between good jobs."""
    return [Job(worker_info, kwargs={"sleep": threads_job_sleep}), Job(int, ("not a number",)),
            Job(worker_info, kwargs={"sleep": threads_job_sleep}), Job(pow, (2, 5))]


def _check_mixed(results: list, threads: int) -> None:
    assert len(results) == 4
    assert isinstance(results[1], ValueError) and "not a number" in str(results[1])
    assert "ValueError" in results[1].remote_traceback                 # the worker's traceback, as text
    assert results[3] == 32                                             # the jobs after the failure finished
    for r in (results[0], results[2]):
        assert r["threads"] == threads and r["omp"] == str(threads), r


def test_pool_runs_jobs_in_parallel_workers_with_their_threads():
    # OMP_NUM_THREADS=1 in this process: the workers' 2 threads are the executor's doing
    results = run_jobs([Job(worker_info, kwargs={"sleep": 1.5}) for _ in range(4)], executor="pool", workers=2,
                       threads=2)
    pids = {r["pid"] for r in results}
    assert len(pids) == 2 and os.getpid() not in pids, pids
    assert all(r["threads"] == 2 and r["omp"] == "2" for r in results), results
    first, second = sorted(results, key=lambda r: r["start"])[:2]
    assert second["start"] < first["end"], "the first two jobs did not run at the same time"


def test_pool_keeps_the_order_and_reports_a_failing_job():
    results = run_jobs(_mixed_jobs(0.2), executor="pool", workers=2, threads=1)
    _check_mixed(results, threads=1)
    assert all(r["pid"] != os.getpid() for r in (results[0], results[2]))


def test_serial_runs_in_this_process_and_restores_the_threads():
    import torch
    before = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    seen = []
    results = run_jobs(_mixed_jobs(), executor="serial", threads=2, on_done=lambda i, job, r: seen.append(i))
    _check_mixed(results, threads=2)
    assert results[0]["pid"] == os.getpid() and seen == [0, 1, 2, 3]
    assert (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")) == before


def test_submitit_local_executor_runs_the_same_jobs(tmp_path):
    pytest.importorskip("submitit")
    results = run_jobs(_mixed_jobs(), executor="submitit", workers=2, threads=2, folder=tmp_path / "submitit",
                       cluster="local")
    _check_mixed(results, threads=2)
    assert len({results[0]["pid"], results[2]["pid"], os.getpid()}) == 3      # one process per job


def test_run_jobs_rejects_bad_settings():
    with pytest.raises(ValueError, match="valid executors: serial, pool, submitit"):
        run_jobs([Job(pow, (2, 2))], executor="slurm")
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        run_jobs([Job(pow, (2, 2))], workers=0)
    assert run_jobs([], executor="pool") == []


# ---------------------------------------------------------------------------------------------
# the tidy table and its mean ± SD across seeds
# ---------------------------------------------------------------------------------------------
def _record(row: str, seg: float, depth: float, ratio: float, relative: float, alpha: float | None = None) -> dict:
    rec = {"row": row, "tasks": ["seg", "depth"], "metrics": {"seg": seg, "depth": depth},
           "normalized": {"seg": seg / 0.5, "depth": 1.0 / depth}, "delta_m_ratio": ratio,
           "delta_m_relative": relative, "cost": {}}
    return rec if alpha is None else {**rec, "alpha": alpha}


SEEDS = {0: [_record("experts", 0.5, 1.0, 0.0, 0.0), _record("ta+head", 0.40, 1.2, -0.10, -0.20, 0.2)],
         1: [_record("experts", 0.5, 1.0, 0.0, 0.0), _record("ta+head", 0.44, 1.1, -0.06, -0.12, 0.3)],
         2: [_record("experts", 0.5, 1.0, 0.0, 0.0), _record("ta+head", 0.36, 1.3, -0.14, -0.25, 0.0)]}
NAMES = {"seg": "mIoU", "depth": "MAE"}


def _tidy() -> list[dict]:
    return [r for seed, table in SEEDS.items()
            for r in report.tidy_rows(table, run="smoke", seed=seed, metric_names=NAMES)]


def test_tidy_rows_one_row_per_task_and_metric():
    tidy = _tidy()
    assert len(tidy) == 3 * 2 * 2 * 2                   # seeds x rows x tasks x (metric, normalized)
    assert all(tuple(r) == report.TIDY_COLUMNS for r in tidy)
    r = next(r for r in tidy if r["seed"] == 1 and r["row"] == "ta+head" and r["task"] == "depth"
             and r["metric"] == "MAE")
    assert r == {"run": "smoke", "seed": 1, "tasks": "seg+depth", "row": "ta+head", "method": "ta", "fix": "head",
                 "task": "depth", "metric": "MAE", "value": 1.1, "delta_m_ratio": -0.06, "delta_m_relative": -0.12,
                 "alpha": 0.3}
    assert all(r["alpha"] is None for r in tidy if r["row"] == "experts")     # a row without a merge has no alpha
    experts = next(r for r in tidy if r["row"] == "experts")
    assert (experts["method"], experts["fix"]) == ("experts", None)
    assert {r["metric"] for r in tidy if r["task"] == "seg"} == {"mIoU", "normalized"}


def test_aggregate_mean_and_sd_by_hand():
    agg = report.aggregate(_tidy())
    row = next(r for r in agg["rows"] if r["row"] == "ta+head")
    # by hand: Δm ratio -0.10, -0.06, -0.14: mean -0.10; deviations 0, 0.04, -0.04; SD sqrt(0.0032 / 2) = 0.04
    assert row["seeds"] == [0, 1, 2] and row["n"] == 3
    assert row["delta_m_ratio_mean"] == pytest.approx(-0.10) and row["delta_m_ratio_sd"] == pytest.approx(0.04)
    # Δm Eq. 2: -0.20, -0.12, -0.25: mean -0.19; deviations -0.01, 0.07, -0.06; SD sqrt(0.0086 / 2)
    assert row["delta_m_relative_mean"] == pytest.approx(-0.19)
    assert row["delta_m_relative_sd"] == pytest.approx(math.sqrt(0.0086 / 2))
    # per task: seg mIoU 0.40, 0.44, 0.36: mean 0.40, SD 0.04; depth MAE 1.2, 1.1, 1.3: mean 1.2, SD 0.1
    seg = next(t for t in agg["tasks"] if t["row"] == "ta+head" and t["task"] == "seg" and t["metric"] == "mIoU")
    depth = next(t for t in agg["tasks"] if t["row"] == "ta+head" and t["task"] == "depth" and t["metric"] == "MAE")
    assert (seg["mean"], seg["sd"]) == (pytest.approx(0.40), pytest.approx(0.04))
    assert (depth["mean"], depth["sd"]) == (pytest.approx(1.2), pytest.approx(0.1))
    experts = next(r for r in agg["rows"] if r["row"] == "experts")
    assert experts["delta_m_ratio_mean"] == 0 and experts["delta_m_ratio_sd"] == 0
    assert len(agg["rows"]) == 2 and len(agg["tasks"]) == 2 * 2 * 2
    md = report.aggregate_markdown(agg)
    assert "| ta+head | 0.4 ± 0.04 | 1.2 ± 0.1 | -10.0% ± 4.0% | -19.0% ± 6.6% | 0, 1, 2 |" in md, md
    assert "seg mIoU" in md and "mean ± SD over seeds 0, 1, 2" in md


def test_aggregate_of_one_seed_has_no_sd():
    agg = report.aggregate(report.tidy_rows(SEEDS[0], run="smoke", seed=0))
    row = next(r for r in agg["rows"] if r["row"] == "ta+head")
    assert row["n"] == 1 and row["delta_m_ratio_mean"] == -0.10 and row["delta_m_ratio_sd"] is None


def test_write_collection(tmp_path):
    from simo_lite.multiseed import write_collection
    paths = write_collection(_tidy(), tmp_path / "c", title="synthetic")
    assert sorted(paths) == ["aggregate.json", "aggregate.md", "delta_m.png", "results.csv", "results.json"]
    rows = list(csv.DictReader((tmp_path / "c" / "results.csv").open()))
    assert len(rows) == 24 and tuple(rows[0]) == report.TIDY_COLUMNS and rows[0]["fix"] == ""
    assert json.loads((tmp_path / "c" / "results.json").read_text()) == _tidy()
    assert (tmp_path / "c" / "delta_m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# the experiment command line, two seeds in two workers
# ---------------------------------------------------------------------------------------------
def test_experiment_cli_two_seeds_in_two_workers(tmp_path):
    root = tmp_path / "runs"
    env = {**os.environ, "CI": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("SIMO_LITE_RUNS", None)
    res = subprocess.run([sys.executable, "-m", "simo_lite.experiment", "--profile", "smoke", "--tasks", "nyu3",
                          "--seeds", "0", "1", "--workers", "2", "--threads", "1", "--device", "cpu",
                          "--runs-root", str(root)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    assert "on pool: 2 at a time, 1 thread each" in res.stdout
    for seed in (0, 1):
        run = root / f"smoke-{seed}"
        assert (run / "results" / "table-seg+depth+normals.json").exists()
        assert f"--seed {seed}" in json.loads((run / "run-meta.json").read_text())["command"]
    folder = root / "sweeps" / "smoke-nyu3-seeds-0-1"
    tidy = json.loads((folder / "results.json").read_text())
    assert {r["seed"] for r in tidy} == {0, 1} and {r["run"] for r in tidy} == {"smoke"}
    assert {r["tasks"] for r in tidy} == {"seg+depth+normals"}
    for seed in (0, 1):             # each seed's rows are its own run's table
        table = json.loads((root / f"smoke-{seed}" / "results" / "table-seg+depth+normals.json").read_text())
        assert report.tidy_rows(table, run="smoke", seed=seed, metric_names={r["task"]: r["metric"] for r in
                                json.loads((root / f"smoke-{seed}" / "results" /
                                            "training-seg+depth+normals.json").read_text())["rows"]}) \
            == [r for r in tidy if r["seed"] == seed]
    agg = json.loads((folder / "aggregate.json").read_text())
    assert agg["rows"] and all(r["n"] == 2 and r["seeds"] == [0, 1] for r in agg["rows"])
    assert (folder / "results.csv").read_text().startswith(",".join(report.TIDY_COLUMNS) + "\n")
    assert "mean ± SD over seeds 0, 1" in (folder / "aggregate.md").read_text()
    assert (folder / "delta_m.png").stat().st_size > 0
    assert "collected" in res.stdout and str(folder) in res.stdout


# ---------------------------------------------------------------------------------------------
# profile overrides and a subset of rows from the command line
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--set", "nope=1"], "profile field"), (["--set", "realign_steps"], "FIELD=VALUE"),
    (["--set", "head_realign_steps=x"], "takes a int"), (["--set", "repr_realign_steps=-5"], "must not be negative"),
    (["--rows", "ta", "bogus"], "unknown row 'bogus'")])
def test_experiment_cli_rejects_bad_overrides_and_rows(argv, message, capsys):
    from simo_lite import experiment
    with pytest.raises(SystemExit) as e:
        experiment.main(["--profile", "smoke", "--tasks", "nyu3", *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_experiment_cli_overrides_the_realignment_budget_of_chosen_rows(tmp_path, monkeypatch, capsys):
    """``--set head_realign_steps=3 --rows experts ta ta+head``: only those rows, head realignment at 3
    steps per head (the profile's realign_steps untouched for the other fixes), the command recorded."""
    from simo_lite import experiment
    monkeypatch.setenv("CI", "1")
    run = tmp_path / "run"
    experiment.main(["--profile", "smoke", "--tasks", "depth,normals", "--device", "cpu", "--run-dir", str(run),
                     "--set", "head_realign_steps=3", "--rows", "experts", "ta", "ta+head"])
    table = json.loads((run / "results" / "table-depth+normals.json").read_text())
    assert [r["row"] for r in table] == ["experts", "ta", "ta+head"]
    assert table[2]["cost"]["steps"] == 3 * 2                         # 3 steps for each of the 2 heads
    meta = json.loads((run / "run-meta.json").read_text())
    assert "--set head_realign_steps=3" in meta["command"] and "--rows experts ta ta+head" in meta["command"]
