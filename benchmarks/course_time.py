"""``course`` section: wall-clock of every course notebook per profile, against the budgets in
:data:`benchmarks.common.BUDGETS`.

The timings come from ``<run_dir>/runtimes.json``, written by ``python -m simo_lite.course run``; the run
dir is ``<course-root>/course-<profile>`` and a complete one is reused (``fresh=True`` re-runs it).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from benchmarks.common import BUDGETS, REPO, env_info, md_table, write_json_atomic

PROFILES = ("smoke", "cpu", "gpu")        # the profiles bench.py can time, in report order


def notebook_names() -> list[str]:
    """File names of the course notebooks, in course order (:func:`simo_lite.course.notebooks`)."""
    from simo_lite import course
    return [p.name for p in course.notebooks()]


def course_command(profile: str, run_dir: Path) -> list[str]:
    """The argv that runs the whole course in ``profile`` into ``run_dir`` (this interpreter)."""
    return [sys.executable, "-m", "simo_lite.course", "run", "--profile", profile, "--run-dir", str(run_dir)]


def notebook_budget_s(profile: str) -> float | None:
    """The per-notebook time budget of ``profile`` in seconds (smoke only; None for the others)."""
    return BUDGETS["smoke_notebook_s"] if profile == "smoke" else None


def course_budget_s(profile: str) -> float | None:
    """The whole course's time budget of ``profile`` in seconds (cpu only; None for the others)."""
    return BUDGETS["cpu_course_s"] if profile == "cpu" else None


def read_timings(profile: str, run_dir: Path, names: list[str] | None = None) -> dict | None:
    """The timings of a complete course run in ``run_dir``, or None if ``runtimes.json`` is missing or
    lacks a notebook of ``names`` (default: every course notebook).

    Returns ``{"profile", "run_dir", "rows": [{"notebook", "wall_s", "budget_s", "pass"}], "total_s",
    "total_budget_s", "total_pass", "measured_at" (ISO date), "host", "cpu_count", "command"}``; times
    in seconds; ``pass`` is None where the profile has no per-notebook budget, and ``total_pass`` is
    every notebook's verdict where it has no whole-course budget."""
    path = Path(run_dir) / "runtimes.json"
    if not path.exists():
        return None
    runtimes = json.loads(path.read_text())
    names = names if names is not None else notebook_names()
    if not set(names) <= set(runtimes):
        return None
    meta_path = Path(run_dir) / "bench-meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    per_nb = {n: float(runtimes[n]) for n in names}
    total = sum(per_nb.values())
    budget = notebook_budget_s(profile)
    rows = [{"notebook": n, "wall_s": s, "budget_s": budget, "pass": None if budget is None else s <= budget}
            for n, s in per_nb.items()]
    budget_total = course_budget_s(profile)
    mtime = _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).isoformat(timespec="seconds")
    return {"profile": profile, "run_dir": str(run_dir), "rows": rows, "total_s": total,
            "total_budget_s": budget_total,
            "total_pass": (total <= budget_total) if budget_total else all(r["pass"] for r in rows),
            "measured_at": meta.get("date", mtime), "host": meta.get("hostname"), "cpu_count": meta.get("cpu_count"),
            "command": meta.get("command", " ".join(["python"] + course_command(profile, run_dir)[1:]))}


def run_profile(profile: str, run_dir: Path, fresh: bool = False) -> dict:
    """Run the course in ``profile`` into ``run_dir`` (reusing a complete earlier run unless ``fresh``).

    Returns :func:`read_timings`' dict plus ``reused`` (and ``process_wall_s``, seconds of the whole
    course process, when run now); on failure ``{"profile", "run_dir", "error", "command", "rows": [],
    "reused": False}``. The scene cache is the run dir's own (``<run_dir>/cache``), so a fresh run
    renders its data like a fresh clone does; ``<run_dir>/bench-meta.json`` records the environment.
    """
    run_dir = Path(run_dir)
    names = notebook_names()
    if not fresh:
        done = read_timings(profile, run_dir, names)
        if done is not None:
            done["reused"] = True
            return done
    if run_dir.exists():                           # partial or forced: start clean so nothing is reused
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    env = {**os.environ, "CI": "1", "SIMO_LITE_CACHE": str(run_dir / "cache"), "PYTHONUNBUFFERED": "1"}
    cmd = course_command(profile, run_dir)
    info = env_info()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env)
    wall = time.perf_counter() - t0
    shown = " ".join(["python"] + cmd[1:])
    write_json_atomic(run_dir / "bench-meta.json", {**info, "command": shown, "returncode": proc.returncode,
                                                    "wall_s": wall})
    out = read_timings(profile, run_dir, names)
    if proc.returncode != 0 or out is None:
        return {"profile": profile, "run_dir": str(run_dir), "error": f"course run failed (exit {proc.returncode})",
                "command": shown, "rows": [], "reused": False}
    out.update(reused=False, process_wall_s=wall)
    return out


def run(profiles: Sequence[str], course_root: Path, fresh: bool = False, errors: dict | None = None,
        echo: Callable[..., object] | None = None) -> dict:
    """``{profile: timings}``: the course run now in each of ``profiles`` (:func:`run_profile`), and the
    complete earlier runs of the other :data:`PROFILES` found in ``<course_root>/course-<profile>``
    (marked ``reused``). A profile whose run raises is left out and its error goes to
    ``errors["course-<profile>"]``. ``echo`` (e.g. ``print``) receives each profile's Markdown."""
    errors = {} if errors is None else errors
    say = echo or (lambda *a, **k: None)
    course: dict = {}
    for p in PROFILES:
        run_dir = Path(course_root) / f"course-{p}"
        if p in profiles:
            say(f"\n## course ({p})\n", flush=True)
            try:
                course[p] = run_profile(p, run_dir, fresh=fresh)
            except Exception as ex:
                errors[f"course-{p}"] = f"{type(ex).__name__}: {ex}"
                continue
            say(profile_markdown(course[p]), flush=True)
        else:
            done = read_timings(p, run_dir) if run_dir.exists() else None
            if done is not None:
                done["reused"] = True
                course[p] = done
                say(f"\n## course ({p}, earlier run)\n\n{profile_markdown(done)}", flush=True)
    return course


def profile_markdown(sec: dict) -> str:
    """One profile's timings: a line on where they come from, then a Markdown table (notebook, seconds,
    budget, verdict, and the total); or the error line of a failed run."""
    if sec.get("error"):
        return f"{sec['profile']}: {sec['error']} (`{sec['command']}`)"
    rows = []
    for r in sec["rows"]:
        verdict = "–" if r["pass"] is None else ("pass" if r["pass"] else "FAIL")
        rows.append([r["notebook"], f"{r['wall_s']:.1f}", "–" if r["budget_s"] is None else f"{r['budget_s']:.0f}",
                     verdict])
    tb = sec.get("total_budget_s")
    total_verdict = "pass" if sec["total_pass"] else "FAIL"
    rows.append(["**total**", f"{sec['total_s']:.1f}", f"{tb:.0f}" if tb else "–", total_verdict])
    head = (f"profile `{sec['profile']}`, {'reused' if sec.get('reused') else 'run now'}; measured "
            f"{sec.get('measured_at', '?')}; `{sec['command']}`")
    return head + "\n\n" + md_table(["notebook", "seconds", "budget s", "verdict"], rows)


def markdown(section: dict) -> str:
    """Every profile of the section (``{profile: timings}``), each as :func:`profile_markdown`, blank
    line separated."""
    return "\n\n".join(profile_markdown(sec) for sec in section.values())
