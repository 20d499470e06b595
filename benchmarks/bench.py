"""simo_lite benchmarks: every measured figure as a Markdown table on stdout and in one JSON file.

    python benchmarks/bench.py                       # cpu course timings (run or reused) + everything else
    python benchmarks/bench.py --skip-course         # skip the notebook timings (minutes -> ~3 min)
    python benchmarks/bench.py --profile smoke cpu   # time the course in both profiles
    python benchmarks/bench.py --quick --skip-course # tiny sizes, seconds (what the tests run)

(``python -m benchmarks.bench`` is the same.) Sections, keys of ``runs/bench/bench.json``, one module each:

``scenes``        :mod:`benchmarks.scenes_rate`: SIMO-lite Scenes rendering rate, scenes/s at 64 and 128 px.
``course``        :mod:`benchmarks.course_time`: wall-clock of every notebook per profile, from
                  ``<run_dir>/runtimes.json``; the run dir is ``runs/bench/course-<profile>`` and a complete
                  one is reused (``--fresh-course`` re-runs it). Budgets: ``benchmarks.common.BUDGETS``.
``merging``       :mod:`benchmarks.merging_cost`: time and peak memory of task arithmetic, TIES (k=0.2, k=1.0)
                  and TALL masks on random state dicts with ViT-B/16's shapes, for 2, 3 and 5 tasks.
``head_realign``  :mod:`benchmarks.head_realign`: head realignment with cached features against re-running the
                  encoder every step: same batches, same metrics (to a tolerance), time ratio.
``table4``        :mod:`benchmarks.table4`: realignment against joint MTL (the paper's Table 4), read from a
                  course run's ``results/table-<tasks>.json`` (nothing is retrained here).

Each section records its own settings; the file also records the date, host, CPU count, torch version,
device and git commit. It is written atomically.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

if not __package__:                                   # python benchmarks/bench.py: import as the package
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from benchmarks import course_time, head_realign, merging_cost, scenes_rate, table4  # noqa: E402
from benchmarks.common import REPO, SCHEMA_VERSION, env_info, write_json_atomic  # noqa: E402

SECTIONS = ("scenes", "course", "merging", "head_realign", "table4")


def run_section(name: str, fn: Callable[[], dict], results: dict, render: Callable[[dict], str],
                errors: dict) -> dict | None:
    """Run ``fn()`` (a section's ``run``), store it as ``results[name]`` with ``section_wall_s``
    (seconds) and print ``render(section)``; on an exception, record it in ``errors[name]`` and return
    None, so one failing section does not lose the others."""
    print(f"\n## {name}\n", flush=True)
    t0 = time.perf_counter()
    try:
        sec = fn()
    except Exception as e:      # one failing section must not lose the others
        errors[name] = f"{type(e).__name__}: {e}"
        print(f"{name}: FAILED: {errors[name]}", flush=True)
        return None
    sec["section_wall_s"] = time.perf_counter() - t0
    results[name] = sec
    print(render(sec), flush=True)
    return sec


def parser() -> argparse.ArgumentParser:
    """The command line of ``benchmarks/bench.py``."""
    profiles = list(course_time.PROFILES)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", nargs="+", default=["smoke", "cpu"], choices=profiles,
                    help="course profile(s) to time (default: smoke and cpu)")
    ap.add_argument("--skip-course", action="store_true", help="do not run the course (timings of complete "
                    "earlier runs in runs/bench/course-* are still reported)")
    ap.add_argument("--fresh-course", action="store_true", help="re-run the course even if a complete run exists")
    ap.add_argument("--out", default=str(REPO / "runs" / "bench" / "bench.json"))
    ap.add_argument("--course-root", default=str(REPO / "runs" / "bench"),
                    help="course runs go to <course-root>/course-<profile>")
    ap.add_argument("--results-run-dir", default=None,
                    help="run dir whose results/table-*.json feed Table 4 (default: the first with results of "
                         "runs/<profile>-0, larger profiles first, then the course run dirs)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for tests: smoke head realignment, small "
                    "encoder for merging, few scenes")
    ap.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run only these sections")
    ap.add_argument("--merge-tasks", nargs="+", type=int, default=None)
    ap.add_argument("--head-profile", default="cpu", choices=profiles,
                    help="profile whose sizes the head-realignment comparison uses (default cpu; quick: smoke)")
    ap.add_argument("--head-steps", type=int, default=None, help="head realignment steps per head (default 100; "
                    "quick: 4)")
    ap.add_argument("--_merge-case", dest="merge_case", default=None, help=argparse.SUPPRESS)
    return ap


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the wanted sections, print each as Markdown, write the JSON (``--out``) and return it."""
    args = parser().parse_args(argv)
    if args.merge_case:                     # one merging case in this process (as ``-m benchmarks.merging_cost``)
        row = merging_cost.run_spec(json.loads(args.merge_case))
        print(json.dumps(row))
        return row

    wanted = set(args.only or SECTIONS)
    if args.skip_course:
        wanted.discard("course")
    t_all = time.perf_counter()
    out: dict = {"schema": SCHEMA_VERSION, "env": env_info(),
                 "command": "python benchmarks/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "quick": args.quick}
    errors: dict = {}
    e = out["env"]
    print(f"# simo_lite benchmarks\n\n{e['date']} | {e['hostname']} | {e['cpu_model']} | {e['cpu_count']} CPUs "
          f"({e['cpu_usable']} usable) | torch {e['torch']} ({e['torch_threads']} threads) | {e['device']} | "
          f"commit {(e['commit'] or '?')[:12]}{' (dirty)' if e['dirty'] else ''}")

    if "scenes" in wanted:
        kw = scenes_rate.QUICK if args.quick else scenes_rate.FULL
        run_section("scenes", lambda: scenes_rate.run(**kw), out, scenes_rate.markdown, errors)

    profiles_run = list(dict.fromkeys(args.profile)) if "course" in wanted else []
    course = course_time.run(profiles_run, Path(args.course_root), fresh=args.fresh_course, errors=errors,
                             echo=print)
    if course:
        out["course"] = course

    if "merging" in wanted:
        kw = dict(merging_cost.QUICK if args.quick else merging_cost.FULL)
        if args.merge_tasks:
            kw["n_tasks"] = tuple(args.merge_tasks)
        run_section("merging", lambda: merging_cost.run(**kw), out, merging_cost.markdown, errors)

    if "head_realign" in wanted:
        kw = dict(head_realign.QUICK) if args.quick else dict(head_realign.FULL, profile=args.head_profile)
        if args.head_steps:
            kw["steps"] = args.head_steps
        run_section("head_realign", lambda: head_realign.run(**kw), out, head_realign.markdown, errors)

    if "table4" in wanted:
        cands = table4.candidates(args.profile, Path(args.course_root), args.results_run_dir)
        found = table4.find_results_dir(cands)
        if found is None:
            print(f"\n## table4\n\nnot run: no results/table-*.json in {', '.join(str(c) for c in cands)}")
            out["table4"] = table4.not_found(cands)
        else:
            run_section("table4", lambda: table4.run(found), out, table4.markdown, errors)

    out["errors"] = errors
    out["wall_s"] = time.perf_counter() - t_all
    path = write_json_atomic(Path(args.out), out)
    print(f"\nwrote {path} in {out['wall_s']:.0f} s" + (f"; {len(errors)} section(s) failed: {sorted(errors)}"
                                                     if errors else ""))
    return out


if __name__ == "__main__":
    res = main()
    sys.exit(1 if res.get("errors") else 0)
