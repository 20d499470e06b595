"""``table4`` section: realignment against joint MTL (the paper's Table 4): steps, samples, trainable
parameters, |D|, wall-clock and Δm, read from a course run's ``results/table-<tasks>.json`` (nothing
is retrained here)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from benchmarks.common import REPO, md_table


def rows_with_cost() -> tuple[str, ...]:
    """The results-table rows that train something, in ``simo_lite.experiment.ROWS`` order: the experts,
    joint MTL and every realignment (a merge with a fix that trains, ``fixes.Fix.trains``); the plain
    merges and BN re-estimation (forward passes only) train nothing."""
    from simo_lite.experiment import ROWS
    from simo_lite.fixes import FIXES
    from simo_lite.rows import row_spec
    return tuple(r for r in ROWS if r in ("experts", "mtl")
                 or (row_spec(r).fix is not None and FIXES[row_spec(r).fix].trains))


def candidates(profiles: Sequence[str], course_root: Path, results_run_dir: str | Path | None = None) -> list:
    """Run dirs to take the table from, in order: ``results_run_dir`` alone when given, else
    ``runs/<profile>-0`` then ``<course_root>/course-<profile>``, larger profiles (not smoke) first."""
    if results_run_dir:
        return [results_run_dir]
    order = sorted(profiles, key=lambda p: p == "smoke")
    return [REPO / "runs" / f"{p}-0" for p in order] + [Path(course_root) / f"course-{p}" for p in order]


def find_results_dir(candidates: Sequence[str | Path]) -> Path | None:
    """The first of ``candidates`` with a ``results/table-*.json``, or None."""
    for c in candidates:
        if c and (Path(c) / "results").is_dir() and any((Path(c) / "results").glob("table-*.json")):
            return Path(c)
    return None


def not_found(candidates: Sequence[str | Path]) -> dict:
    """The section recorded when no candidate has results: no sets, and the dirs searched."""
    return {"run_dir": None, "sets": [], "searched": [str(c) for c in candidates]}


def run(run_dir: Path, profile: str | None = None) -> dict:
    """Cost rows of every ``results/table-<tasks>.json`` in ``run_dir`` (written by
    ``Experiment.results_table``: course notebook 07, or ``python -m simo_lite.experiment``).

    Returns ``{"run_dir", "sets": [{"tasks", "profile", "source", "n_train", "n_val", "D_source",
    "rows": [{"row", "steps", "samples", "trainable_params", "wall_s" (seconds), "D" (distinct labelled
    images), "delta_m_ratio", "delta_m_relative", "per_expert_steps", "pct_of_mtl": {key: % of MTL's}}]}]}``.
    ``profile`` (default: found from the run's files or its name) gives |D| where notebook 07's
    record does not."""
    from simo_lite import profiles
    run_dir = Path(run_dir)
    res = run_dir / "results"
    sets = []
    for path in sorted(res.glob("table-*.json")):
        table = {r["row"]: r for r in json.loads(path.read_text())}
        tasks = path.stem[len("table-"):]
        prof = profile or profile_of(run_dir, tasks)
        n_train = n_val = D_source = None
        nb07 = res / "07_joint_mtl.json"
        if nb07.exists():
            j = json.loads(nb07.read_text())
            if "+".join(j.get("tasks", [])) == tasks:
                n_train, n_val, D_source = j.get("n_train"), j.get("n_realign"), str(nb07)
        if n_train is None and prof in profiles.PROFILES:
            n_train, n_val = profiles.PROFILES[prof].n_train, profiles.PROFILES[prof].n_val
            D_source = f"the {prof} profile (n_train, n_val)"
        n_tasks = len(tasks.split("+"))
        rows = []
        for name in rows_with_cost():
            if name not in table:
                continue
            r = table[name]
            c = r["cost"]
            D = n_train if name in ("experts", "mtl") else n_val
            rows.append({"row": name, "steps": c["steps"], "samples": c["samples"],
                         "trainable_params": c["trainable_params"], "wall_s": c["wall_s"], "D": D,
                         "delta_m_ratio": r["delta_m_ratio"], "delta_m_relative": r["delta_m_relative"],
                         "per_expert_steps": c["steps"] / n_tasks if name == "experts" else None})
        mtl = next((r for r in rows if r["row"] == "mtl"), None)
        for r in rows:
            r["pct_of_mtl"] = None if mtl is None else {
                k: (100 * r[k] / mtl[k] if mtl[k] else None) for k in ("steps", "samples", "trainable_params",
                                                                     "wall_s", "D") if r[k] is not None}
        sets.append({"tasks": tasks, "profile": prof, "source": str(path), "n_train": n_train, "n_val": n_val,
                     "D_source": D_source, "rows": rows})
    return {"run_dir": str(run_dir), "sets": sets}


def profile_of(run_dir: Path, tasks: str) -> str | None:
    """The profile a run dir's results were made with: from its ``training-<tasks>.json``, notebook 07's
    or 05's record, else its name (``<profile>-N`` or ``.../course-<profile>``); None if unknown."""
    from simo_lite.profiles import PROFILES
    tr = run_dir / "results" / f"training-{tasks}.json"
    if tr.exists():
        return json.loads(tr.read_text()).get("profile")
    for nb in ("07_joint_mtl.json", "05_head_realignment.json"):
        p = run_dir / "results" / nb
        if p.exists():
            return json.loads(p.read_text()).get("profile")
    head = run_dir.name.split("-")
    if head and head[0] in PROFILES:
        return head[0]
    if len(head) > 1 and head[-1] in PROFILES:      # runs/bench/course-<profile>
        return head[-1]
    return None


def markdown(section: dict) -> str:
    """One Markdown table per task set (steps, samples, trainable params, |D|, wall s, each with its % of
    MTL's, and Δm), headed by its source; "not run: ..." when the section has no sets."""
    parts = []
    for s in section["sets"]:
        rows = []
        for r in s["rows"]:
            p = r["pct_of_mtl"] or {}

            def cell(v, k, fmt):
                return f"{fmt(v)} ({p[k]:.0f}%)" if p.get(k) is not None and r["row"] != "mtl" else fmt(v)
            steps = cell(r["steps"], "steps", lambda v: f"{v:,}")
            if r["per_expert_steps"] is not None:
                steps += f"; {r['per_expert_steps']:,.0f} per expert"
            rows.append([r["row"], steps,
                         cell(r["samples"], "samples", lambda v: f"{v:,}"),
                         cell(r["trainable_params"], "trainable_params", lambda v: f"{v:,}"),
                         cell(r["D"], "D", lambda v: "–" if v is None else f"{v:,}"),
                         cell(r["wall_s"], "wall_s", lambda v: f"{v:.1f}"),
                         f"{100 * r['delta_m_ratio']:+.1f}%"])
        parts.append(f"{s['tasks']} ({s['profile']} profile), from `{s['source']}`; percentages of MTL's; the "
                     f"experts row sums steps, samples and wall-clock over the experts, trainable params are "
                     f"one expert's\n\n"
                     + md_table(["row", "steps", "samples", "trainable params", "\\|D\\|", "wall s", "Δm (ratio)"],
                                rows))
    return "\n\n".join(parts) if parts else "not run: no results/table-*.json in " + str(section["run_dir"])
