"""Several seeds: the experiment CLI's job per seed, and the collection of every run's results tables.

``python -m simo_lite.experiment --seeds 0 1 2 --workers 2`` runs :func:`run_seed` once per seed
through :func:`simo_lite.classroom.executor.run_jobs` (one run directory per seed, named as the course
names it) and :func:`write_collection` writes what they computed to ``<runs folder>/sweeps/<name>/``;
``python -m simo_lite.course sweep`` collects the results tables its notebooks wrote the same way.

==================  ===========================================================================
file                content
==================  ===========================================================================
``results.json``    the tidy table: one row per (run, seed, task set, row, task, metric),
``results.csv``     columns :data:`simo_lite.report.TIDY_COLUMNS`
``aggregate.json``  mean ± SD across seeds per (run, task set, row), and per task
``aggregate.md``    the same as Markdown tables (:func:`simo_lite.report.aggregate_markdown`)
``delta_m.png``     Δm per row, mean with SD error bars (:func:`simo_lite.plots.delta_m_bars`)
==================  ===========================================================================

The table of one run is read from ``results/table-<tasks>.json`` and its metric names from the
``training-<tasks>.json`` beside it. Importing this module does not import torch.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from . import report
from .atomic import write_text

if TYPE_CHECKING:
    import torch

    from .profiles import Profile

__all__ = ["COLLECTION_DIR", "run_seed", "run_seeds", "metric_names", "read_tables", "tidy_of_seed", "write_collection"]

COLLECTION_DIR = "sweeps"           # <runs folder>/sweeps/<name>/


def run_seed(prof: Profile, task_sets: Sequence[str], seed: int, device: str | torch.device, run_dir: str | Path,
             command: str, progress: bool | None = None, rows: Sequence[str] | None = None) -> dict:
    """Every results table of one seed (the experiment CLI's work): for each task set, train what is
    missing, write and print the training and results tables into ``run_dir``; then ``run-meta.json``
    (``command``). Logs each artifact it recomputes (logger ``simo_lite.store``); ``progress``: bars
    (default: off under ``CI``). Returns ``{"seed", "run_dir", "wall_s", "tables": [{"tasks", "table"
    (row records), "metric_names"}]}``. ``rows``: the results-table rows (default: every row).
    Module-level and picklable: a job for the executors."""
    import torch

    from .course import write_run_meta
    from .experiment import Experiment
    from .profiles import resolve_device
    run_dir = Path(run_dir)
    device = resolve_device(device)
    progress = not os.environ.get("CI") if progress is None else progress
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    pkg_log = logging.getLogger("simo_lite")
    pkg_log.addHandler(handler)
    old_level = pkg_log.level
    pkg_log.setLevel(logging.INFO)
    tables = []
    start = time.perf_counter()
    try:
        torch.manual_seed(seed)
        for tasks in task_sets:
            t0 = time.perf_counter()
            exp = Experiment(prof, tasks, seed, device, run_dir, progress=progress)
            training = exp.training_table()
            table = exp.results_table(rows) if rows else exp.results_table()
            print(exp.to_markdown(table))
            print(f"{tasks}: {time.perf_counter() - t0:.0f} s; tables in {run_dir / 'results'}\n")
            tables.append({"tasks": tasks, "table": table, "metric_names": metric_names(training)})
    finally:
        pkg_log.removeHandler(handler)
        pkg_log.setLevel(old_level)
    write_run_meta(run_dir, command)
    return {"seed": seed, "run_dir": str(run_dir), "wall_s": time.perf_counter() - start, "tables": tables}


def run_seeds(prof: Profile, task_sets: Sequence[str], seeds: Sequence[int], device: str,
              run_dirs: dict[int, Path], commands: dict[int, str], *, run: str, name: str,
              root: str | Path | None = None, executor: str = "serial", workers: int = 1,
              threads: int | None = None, rows: Sequence[str] | None = None) -> list[int]:
    """:func:`run_seed` for every seed (into ``run_dirs[seed]``, recording ``commands[seed]``) through
    :func:`simo_lite.classroom.executor.run_jobs`, then :func:`write_collection` of every seed that
    finished into ``<root>/sweeps/<name>/`` (``root``: the runs folder), with ``run`` (the
    configuration's name, :func:`simo_lite.course.run_label`) in each tidy row; prints the mean ± SD
    tables. Returns the seeds that failed (each reported on stderr with its traceback)."""
    from .classroom.executor import Job, default_threads, run_jobs
    from .paths import runs_root
    folder = (Path(root) if root else runs_root()) / COLLECTION_DIR / name
    in_workers = executor != "serial"
    shown = threads if threads is not None or not in_workers else default_threads(workers)
    print(f"seeds {', '.join(map(str, seeds))} of {', '.join(task_sets)} ({prof.name} profile) on {executor}"
          + (f": {min(workers, len(seeds))} at a time" if in_workers else "")
          + (f", {shown} thread{'s' if shown != 1 else ''} each" if shown is not None else "")
          + f"; run folders {', '.join(str(run_dirs[s]) for s in seeds)}", flush=True)
    jobs = [Job(run_seed, (prof, list(task_sets), s, device, str(run_dirs[s]), commands[s]),
                {"rows": list(rows) if rows else None, **({"progress": False} if in_workers else {})},
                name=f"seed {s}") for s in seeds]
    failed: list[int] = []

    def done(i: int, job: Job, result: object) -> None:
        seed = seeds[i]
        if isinstance(result, BaseException):
            failed.append(seed)
            print(f"== seed {seed} FAILED: {type(result).__name__}: {result}\n"
                  f"{getattr(result, 'remote_traceback', '')}", file=sys.stderr, flush=True)
        else:
            print(f"== seed {seed} done in {result['wall_s']:.0f} s: {result['run_dir']}", flush=True)

    results = run_jobs(jobs, executor=executor, workers=workers, threads=threads, folder=folder / ".submitit",
                       on_done=done)
    tidy = []
    for r in results:
        if not isinstance(r, BaseException):
            tidy += tidy_of_seed(r, run)
    if tidy:
        paths = write_collection(tidy, folder, title=f"{run}: {', '.join(task_sets)}, seeds "
                                                     f"{', '.join(str(s) for s in seeds if s not in failed)}")
        print(paths["aggregate.md"].read_text())
        print(f"collected {len(tidy)} tidy rows of {len(seeds) - len(failed)} of {len(seeds)} seeds in {folder}: "
              f"{', '.join(paths)}")
    if failed:
        print(f"{len(failed)} of {len(seeds)} seeds failed: {', '.join(map(str, sorted(failed)))}", file=sys.stderr)
    return sorted(failed)


def metric_names(training: dict | None) -> dict[str, str]:
    """``{task: metric name}`` of a training table (``Experiment.training_table``'s JSON); ``{}`` for None."""
    return {r["task"]: r["metric"] for r in (training or {}).get("rows", [])}


def read_tables(run_dir: str | Path, names: Sequence[str] | None = None) -> list[tuple[list[dict], dict[str, str]]]:
    """The results tables of a run directory: ``[(row records, {task: metric name})]``, one per
    ``results/table-<tasks>.json`` (only the file names in ``names``, when given), metric names from
    the ``training-<tasks>.json`` beside it, else from the task registry (which imports torch)."""
    res = Path(run_dir) / "results"
    out = []
    for f in sorted(res.glob("table-*.json")):
        if names is not None and f.name not in names:
            continue
        records = json.loads(f.read_text())
        if not isinstance(records, list):
            continue
        training = res / ("training-" + f.name[len("table-"):])
        if training.exists():
            names_of = metric_names(json.loads(training.read_text()))
        else:                           # a notebook's table without its training table
            from .tasks import TASKS
            names_of = {t: TASKS[t].metric_name for r in records for t in r.get("metrics", {}) if t in TASKS}
        out.append((records, names_of))
    return out


def tidy_of_seed(result: dict, run: str) -> list[dict]:
    """The tidy rows (:func:`simo_lite.report.tidy_rows`) of one :func:`run_seed` result."""
    rows = []
    for t in result["tables"]:
        rows += report.tidy_rows(t["table"], run=run, seed=result["seed"], metric_names=t["metric_names"])
    return rows


def _csv(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(report.TIDY_COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in report.TIDY_COLUMNS})
    return buf.getvalue()


def write_collection(tidy: Sequence[dict], folder: str | Path, title: str = "", plot: bool = True) -> dict[str, Path]:
    """Write the tidy rows and their mean ± SD across seeds to ``folder`` (see the module's table of
    files, each written atomically); ``title`` heads ``aggregate.md``. Returns ``{file name: path}``.
    The plot is skipped (``plot=False``, or no Δm to plot)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    agg = report.aggregate(tidy)
    paths = {"results.json": write_text(folder / "results.json", json.dumps(list(tidy), indent=1, default=float)),
             "results.csv": write_text(folder / "results.csv", _csv(tidy)),
             "aggregate.json": write_text(folder / "aggregate.json", json.dumps(agg, indent=1, default=float)),
             "aggregate.md": write_text(folder / "aggregate.md", (f"# {title}\n\n" if title else "")
                                        + report.aggregate_markdown(agg))}
    if plot and any(r.get("delta_m_ratio") is not None for r in tidy):
        import matplotlib
        if "matplotlib.pyplot" not in sys.modules:     # no display needed: a worker or a terminal
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .plots import delta_m_bars
        fig = delta_m_bars(tidy)
        tmp = folder / ".delta_m.png.tmp"
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(fig)
        os.replace(tmp, folder / "delta_m.png")
        paths["delta_m.png"] = folder / "delta_m.png"
    return paths
