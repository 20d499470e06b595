"""Every results table in one place: the row records and their Markdown.

A *row record* is the dict that :meth:`simo_lite.experiment.Experiment.row` stores and
``results/table-<tasks>.json`` lists; this module builds one (:func:`row_record`, also for a
notebook's own rows) and renders lists of them. The same renderer writes each table wherever it
appears:

========================================  =============================================================
table                                     function
========================================  =============================================================
results table (run dir, notebooks)        :func:`results_markdown` (``RUN`` style: row ids)
results table in ``docs/results.md``      :func:`results_markdown` (``DOC`` style: row labels)
training table (run dir)                  :func:`training_markdown`
training table in ``docs/results.md``     :func:`training_summary_markdown`
sweep table (``sweep.md``)                :func:`sweep_markdown`
several seeds: tidy rows, mean ± SD       :func:`tidy_rows`, :func:`aggregate`, :func:`aggregate_markdown`
course report (``report.md``)             :func:`run_report`
the paper's numbers                       :func:`paper_table` (reads ``benchmarks/paper_tables.json``)
========================================  =============================================================

    table = exp.results_table()
    print(report.results_markdown(table, exp.tasks))                # | ta+head | ... |
    print(report.results_markdown(table, exp.tasks, style=report.DOC))  # | TA + head realign | ... |

Importing this module does not import torch (the course runner renders its report without it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .paths import REPO

if TYPE_CHECKING:                    # annotations only: importing this module does not import torch
    from .experiment import Experiment
    from .training import RunRecord

__all__ = ["COST_FIELDS", "TableStyle", "RUN", "DOC", "cost_of", "row_record", "num", "pct", "markdown_table",
           "task_heading", "row_label", "results_markdown", "results_title", "training_markdown",
           "training_summary_markdown", "sweep_markdown", "run_report", "paper_tables", "paper_table",
           "PAPER_TABLES", "TIDY_COLUMNS", "tidy_rows", "aggregate", "aggregate_markdown"]

COST_FIELDS = ("steps", "samples", "trainable_params", "wall_s")
PAPER_TABLES = REPO / "benchmarks" / "paper_tables.json"     # the paper's numbers, quoted once


# ----------------------------------------------------------------------------------------------
# row records
# ----------------------------------------------------------------------------------------------
def cost_of(record: RunRecord | dict | None = None) -> dict:
    """``{steps, samples, trainable_params, wall_s}`` of a ``RunRecord`` (or a dict with those keys);
    all 0 for None (a row that trains nothing)."""
    if record is None:
        return {k: 0 for k in COST_FIELDS}
    if isinstance(record, dict):
        return {k: record[k] for k in COST_FIELDS}
    return {k: getattr(record, k) for k in COST_FIELDS}


def row_record(scorer: Experiment, name: str, metrics: dict, cost: RunRecord | dict | None = None, *,
               tasks: Sequence[str] | None = None, **extra: Any) -> dict:
    """One results-table row: ``{"row", ["tasks"], "metrics", "normalized", "delta_m_ratio",
    "delta_m_relative", "cost", **extra}``.

    ``scorer`` normalises against the experts (an ``Experiment``: its ``normalized(metrics)`` and
    ``score(metrics, kind=...)``); ``cost`` is a ``RunRecord``, a cost dict or None (nothing trained).
    """
    row: dict = {"row": name}
    if tasks is not None:
        row["tasks"] = list(tasks)
    row.update(metrics=metrics, normalized=scorer.normalized(metrics),
               delta_m_ratio=scorer.score(metrics, kind="ratio"),
               delta_m_relative=scorer.score(metrics, kind="relative"), cost=cost_of(cost))
    row.update(extra)
    return row


# ----------------------------------------------------------------------------------------------
# cells
# ----------------------------------------------------------------------------------------------
def num(v: float | None) -> str:
    """A number for a table cell: ints with thousands separators, floats to 4 significant digits;
    "–" for None."""
    if v is None:
        return "–"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.4g}"


def pct(v: float | None, digits: int = 1, sign: bool = True) -> str:
    """A fraction as a percentage string ("+12.3%", or "12.3%" with ``sign=False``); "–" for None."""
    if v is None:
        return "–"
    return f"{100 * v:+.{digits}f}%" if sign else f"{100 * v:.{digits}f}%"


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub Markdown table (no trailing newline); cells are ``str()``-ed, pipes are not escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _arrow(lower: bool | None) -> str:
    return "↓" if lower else "↑" if lower is not None else ""


def task_heading(task: str) -> str:
    """A task's column heading: "seg mIoU ↑" (the task registry's metric and direction); the bare
    name for a task the registry does not know (e.g. in an old results file)."""
    from .tasks import TASKS                 # lazy: the tasks module imports torch
    if task not in TASKS:
        return task
    t = TASKS[task]
    return f"{task} {t.metric_name} {_arrow(t.lower_is_better)}"


def row_label(row_id: str) -> str:
    """The label of a results-table row id ("ta+head" -> "TA + head realign"), from the row, merge and
    fix registries (:func:`simo_lite.rows.row_label`); the id itself when nothing resolves it."""
    from .rows import row_label as label            # lazy: the registries import torch
    try:
        return label(row_id)
    except ValueError:
        return row_id


# ----------------------------------------------------------------------------------------------
# the results table
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableStyle:
    """How :func:`results_markdown` prints a results table.

    Attributes:
        delta_header: heading of the ratio-Δm column.
        count: steps and samples -> cell text.
        wall_digits: decimals of the wall-clock seconds.
        labels: first column shows :func:`row_label` (True) or the row id (False).
    """
    delta_header: str
    count: Callable[[object], str]
    wall_digits: int
    labels: bool


RUN = TableStyle("Δm (ratio, paper tables)", lambda v: "–" if v is None else str(v), 1, False)   # run dir
DOC = TableStyle("Δm (ratio, paper's)", num, 0, True)                                             # docs


def results_title(tasks: Sequence[str], profile: str, seed: int) -> str:
    """The heading of a run's results table."""
    return f"## Results: {', '.join(tasks)} ({profile} profile, seed {seed}, test split)"


def results_markdown(table: list[dict], tasks: Sequence[str], *, style: TableStyle = RUN,
                     label: Callable[[str], str] | None = None) -> str:
    """Row records as a Markdown table (no trailing newline): per task "metric (normalised %)", then
    Δm (ratio), Δm (Eq. 2), steps, samples, trainable params and wall-clock seconds.

    ``label`` overrides how the first column names a row (default: ``style.labels``)."""
    if label is None:
        label = row_label if style.labels else str
    rows = []
    for r in table:
        c = r.get("cost", {})
        cells = [f"{num(r['metrics'][t])} ({pct(r['normalized'][t], sign=False)})" for t in tasks]
        wall = c.get("wall_s")
        rows.append([label(r["row"])] + cells
                    + [pct(r["delta_m_ratio"]), pct(r["delta_m_relative"]), style.count(c.get("steps")),
                       style.count(c.get("samples")), num(c.get("trainable_params")),
                       "–" if wall is None else f"{wall:.{style.wall_digits}f}"])
    return markdown_table(["method"] + [task_heading(t) for t in tasks]
                          + [style.delta_header, "Δm (Eq. 2)", "steps", "samples", "trainable params", "wall s"],
                          rows)


# ----------------------------------------------------------------------------------------------
# the training table
# ----------------------------------------------------------------------------------------------
def training_markdown(tr: dict) -> str:
    """A run's training table (``Experiment.training_table``'s JSON ``tr``), with its heading and a
    trailing newline: per task the linear probe, expert and MTL metrics with the expert's cost, then
    MTL's cost."""
    head = (f"## Training: probe, experts and MTL ({', '.join(tr['tasks'])}; {tr['profile']} profile, "
            f"seed {tr['seed']}, test split)")
    rows = []
    for r in tr["rows"]:
        c = r["cost"]
        rows.append([f"expert-{r['task']}", r["task"], f"{r['metric']} {_arrow(r['lower_is_better'])}",
                     num(r["probe"]), num(r["expert"]), num(r["mtl"]), c["steps"], c["samples"],
                     f"{c['trainable_params']:,}", f"{c['wall_s']:.0f}"])
    table = markdown_table(["model", "task", "metric", "linear probe", "expert (LP→FT)", "MTL", "steps", "samples",
                            "trainable params", "wall s"], rows)
    c = tr["mtl_cost"]
    mtl = f"| mtl | all | | | | | {c['steps']} | {c['samples']} | {c['trainable_params']:,} | {c['wall_s']:.0f} |"
    return f"{head}\n\n{table}\n{mtl}\n"


def training_summary_markdown(tr: dict) -> str:
    """The training table as ``docs/results.md`` prints it (no trailing newline): per task the probe,
    expert and joint MTL metrics with the expert's steps, trainable parameters and wall-clock, then MTL's."""
    rows = []
    for r in tr["rows"]:
        c = r["cost"]
        rows.append([r["task"], f"{r['metric']} {_arrow(r['lower_is_better'])}", num(r["probe"]),
                     num(r["expert"]), num(r["mtl"]), num(c["steps"]), num(c["trainable_params"]),
                     f"{c['wall_s']:.0f}"])
    c = tr["mtl_cost"]
    rows.append(["MTL (all heads)", "", "", "", "", num(c["steps"]), num(c["trainable_params"]), f"{c['wall_s']:.0f}"])
    return markdown_table(["task", "metric", "linear probe", "expert (LP→FT)", "joint MTL", "steps",
                           "trainable params", "wall s"], rows)


# ----------------------------------------------------------------------------------------------
# sweeps and the course report
# ----------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def sweep_markdown(rows: list[dict]) -> str:
    """The sweep table (with a trailing newline): one row per combination, its parameters, status and
    collected results (every key any row has, in first-seen order), its run folder last."""
    cols = [c for c in dict.fromkeys(c for r in rows for c in r) if c != "run_dir"]
    lines = ["| " + " | ".join(cols) + " | run |", "|" + "---|" * (len(cols) + 1)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")).replace("|", "/") for c in cols)
                     + f" | {Path(r['run_dir']).name} |")
    return "\n".join(lines) + "\n"


def run_report(out: str | Path) -> str:
    """The course run's ``report.md`` text: runtimes (``runtimes.json``), every ``results/*.md`` table,
    and links to the figures."""
    out = Path(out)
    lines = [f"# simo_lite course run: {out.name}", ""]
    rt = out / "runtimes.json"
    if rt.exists():
        lines += ["## Runtimes", "", "| notebook | seconds |", "|---|---|"]
        for k, v in json.loads(rt.read_text()).items():
            lines.append(f"| {k} | {v:.0f} |")
        lines.append("")
    for md in sorted((out / "results").glob("*.md")):
        lines += [md.read_text().strip(), ""]
    figs = sorted((out / "figures").glob("*.png"))
    if figs:
        lines += ["## Figures", ""] + [f"- [{f.name}](figures/{f.name})" for f in figs]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# several seeds: the tidy table and its mean ± SD
# ----------------------------------------------------------------------------------------------
TIDY_COLUMNS = ("run", "seed", "tasks", "row", "method", "fix", "task", "metric", "value", "delta_m_ratio",
                "delta_m_relative", "alpha")


def tidy_rows(table: Sequence[dict], *, run: str, seed: int, metric_names: dict[str, str] | None = None) -> list[dict]:
    """Row records (one results table) as tidy rows, one per (row, task, metric), with :data:`TIDY_COLUMNS`.

    ``run`` names the run's configuration without its seed (``smoke``, ``smoke-merge_method=ties``),
    so the rows of one configuration at several seeds aggregate together; ``tasks`` is the table's
    task names joined by ``+``; ``method`` / ``fix`` split the row id (``ta+head`` -> ``ta``, ``head``;
    ``fix`` None for a row without one). Each task gives two rows: its metric (named by
    ``metric_names[task]``, e.g. from the training table; else ``"metric"``) and ``"normalized"``
    (its fraction of the expert's). ``delta_m_ratio`` / ``delta_m_relative`` are the row's, repeated, and so
    is ``alpha``, the merge's scaling (chosen on val, or fixed) where the row merges with one, else None."""
    names = metric_names or {}
    out = []
    for r in table:
        tasks = list(r.get("tasks") or r["metrics"])
        method, _, fix = r["row"].partition("+")
        base = {"run": run, "seed": seed, "tasks": "+".join(tasks), "row": r["row"], "method": method,
                "fix": fix or None}
        for t in tasks:
            for metric, value in ((names.get(t, "metric"), r["metrics"].get(t)),
                                  ("normalized", (r.get("normalized") or {}).get(t))):
                out.append({**base, "task": t, "metric": metric, "value": value,
                            "delta_m_ratio": r.get("delta_m_ratio"), "delta_m_relative": r.get("delta_m_relative"),
                            "alpha": r.get("alpha")})
    return out


def _mean_sd(values: list) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1) of the numbers in ``values``; SD None below two."""
    import statistics
    xs = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not xs:
        return None, None
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None


def aggregate(tidy: Sequence[dict]) -> dict:
    """Mean ± SD across seeds of tidy rows (:func:`tidy_rows`), in first-seen order:

    ``{"rows": [{run, tasks, row, method, fix, seeds, n, delta_m_ratio_mean, delta_m_ratio_sd,
    delta_m_relative_mean, delta_m_relative_sd}], "tasks": [{run, tasks, row, method, fix, task, metric,
    seeds, n, mean, sd}]}``: one entry per (run, task set, row), and one per (run, task set, row, task,
    metric). SD is the sample standard deviation (n - 1 in the denominator), None for a single seed;
    each seed counts once."""
    rows: dict[tuple, dict] = {}
    tasks: dict[tuple, dict] = {}
    for r in tidy:
        key = (r["run"], r["tasks"], r["row"])
        g = rows.setdefault(key, {"head": {k: r[k] for k in ("run", "tasks", "row", "method", "fix")}, "seeds": {}})
        g["seeds"].setdefault(r["seed"], (r["delta_m_ratio"], r["delta_m_relative"]))
        t = tasks.setdefault(key + (r["task"], r["metric"]), {"head": {**g["head"], "task": r["task"],
                                                                       "metric": r["metric"]}, "seeds": {}})
        t["seeds"].setdefault(r["seed"], r["value"])
    out_rows = []
    for g in rows.values():
        ratio = _mean_sd([v[0] for v in g["seeds"].values()])
        relative = _mean_sd([v[1] for v in g["seeds"].values()])
        out_rows.append({**g["head"], "seeds": sorted(g["seeds"]), "n": len(g["seeds"]),
                         "delta_m_ratio_mean": ratio[0], "delta_m_ratio_sd": ratio[1],
                         "delta_m_relative_mean": relative[0], "delta_m_relative_sd": relative[1]})
    out_tasks = []
    for t in tasks.values():
        mean, sd = _mean_sd(list(t["seeds"].values()))
        out_tasks.append({**t["head"], "seeds": sorted(t["seeds"]), "n": len(t["seeds"]), "mean": mean, "sd": sd})
    return {"rows": out_rows, "tasks": out_tasks}


def _pm(mean: float | None, sd: float | None, percent: bool) -> str:
    """``mean ± sd`` for a cell (percentages with ``percent``); the mean alone without an SD."""
    if mean is None:
        return "–"
    text = pct(mean) if percent else num(mean)
    if sd is None:
        return text
    return f"{text} ± {pct(sd, sign=False) if percent else num(sd)}"


def aggregate_markdown(agg: dict) -> str:
    """:func:`aggregate`'s result as Markdown (with a trailing newline): per (run, task set) a heading and
    a table with, per row, every task's metric (mean ± SD), Δm (ratio) and Δm (Eq. 2) (mean ± SD) and
    the seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in agg["rows"]:
        groups.setdefault((r["run"], r["tasks"]), []).append(r)
    per_task = {(t["run"], t["tasks"], t["row"], t["task"]): t for t in agg["tasks"] if t["metric"] != "normalized"}
    parts = []
    for (run, tasks), rows in groups.items():
        names = tasks.split("+")
        metric = {n: next((t["metric"] for k, t in per_task.items() if k[:2] == (run, tasks) and k[3] == n), "metric")
                  for n in names}
        seeds = sorted({s for r in rows for s in r["seeds"]})
        body = []
        for r in rows:
            cells = []
            for n in names:
                t = per_task.get((run, tasks, r["row"], n))
                cells.append(_pm(t["mean"], t["sd"], False) if t else "–")
            body.append([r["row"]] + cells + [_pm(r["delta_m_ratio_mean"], r["delta_m_ratio_sd"], True),
                                              _pm(r["delta_m_relative_mean"], r["delta_m_relative_sd"], True),
                                              ", ".join(map(str, r["seeds"]))])
        parts.append(f"## {run}: {tasks} (mean ± SD over seeds {', '.join(map(str, seeds))}, test split)\n\n"
                     + markdown_table(["method"] + [f"{n} {metric[n]}" for n in names]
                                      + ["Δm (ratio)", "Δm (Eq. 2)", "seeds"], body))
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------
# the paper's numbers
# ----------------------------------------------------------------------------------------------
def paper_tables(path: str | Path | None = None) -> dict:
    """The paper's quoted tables: the parsed ``benchmarks/paper_tables.json`` of the repository
    (``{"source", "delta_note", "tables": {key: table}}``)."""
    path = Path(path) if path is not None else PAPER_TABLES
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"the paper's tables are not at {path} (they ship with the repository, "
                                f"benchmarks/paper_tables.json)") from None


def paper_table(key: str, path: str | Path | None = None) -> dict:
    """One of the paper's tables ("table1" ... "table4") from :func:`paper_tables`, e.g. Table 1:
    ``{"title", "dataset", "ours", "tasks": [{"key", "name", "lower_is_better"}], "rows": {row id:
    {"metrics", "normalized" (None for the experts), "delta" (None where the paper prints "–")}}}``."""
    tables = paper_tables(path)["tables"]
    if key not in tables:
        raise KeyError(f"no paper table {key!r}; available: {', '.join(tables)}")
    return tables[key]
