"""Release copies of the course notebooks for a class, in nbgrader's format, validated both ways.

    python -m simo_lite.assign                   # all notebooks -> notebooks/release/, then validate
    python -m simo_lite.assign --only 03 04      # some of them
    python -m simo_lite.assign --no-validate     # write only
    python -m simo_lite.assign --check           # validate the sources and the copies, write nothing

A release copy is what students receive (``make assignment``): the solutions replaced by stubs, as in
the student copies (:mod:`simo_lite.classroom.student`), the hidden tests removed, every output
cleared, and nbgrader's cell metadata kept, so the locked cells are read-only in JupyterLab and the
copy can also go through nbgrader. Before writing, the source notebooks are checked statically:
nbgrader's metadata rules and the course's (:func:`simo_lite.classroom.cells.check_notebook`), and
every concept question against ``notebooks/questions.yaml`` (same text, same options).

Validation runs the grader (:mod:`simo_lite.classroom.grade`, exercise cells only, each test cell's
public check and hidden tests as two steps) on two submissions of every notebook, one after the other
in one kernel per notebook (half the start-up time). A notebook with reading exercises (its graded
cells read the run's numbers with ``checks.run_results``) runs whole instead, lesson included, in the
smoke profile and a temporary run folder, so those exercises have a run to read:

(a) the source notebook itself: every test cell must pass and no cell may raise;
(b) its release copy: every test cell must fail, in its hidden tests only: the stubs, the exercise
    imports and the public checks must run without an error (so a student's notebook never crashes).

Generating is idempotent (the same sources give byte-identical copies), and a copy that was edited or
run is never overwritten: the command names each such file and why and exits with status 1, unless
``--force`` (which first moves it to ``<name>.bak-<N>.ipynb``).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

import nbformat

from .cells import check_notebook, grade_id, is_test, split_hidden
from .student import NOTEBOOK_DIR, SolutionMarkerError, StudentWorkError, _books, generate

__all__ = ["RELEASE_DIR", "AssignmentError", "check_sources", "release", "validate", "main"]

RELEASE_DIR = NOTEBOOK_DIR / "release"
_RELEASE = "@release"          # validation: the grade_id suffix of the release copy's twin cells


class AssignmentError(RuntimeError):
    """The sources break a rule, or a release copy does not validate; the message lists every problem."""

    def __init__(self, problems: list[str], what: str = "problem"):
        self.problems = problems
        super().__init__(f"{len(problems)} {what}{'s' if len(problems) != 1 else ''}:\n"
                         + "\n".join(f"  {p}" for p in problems))


def _question_markdown(number: str, q: dict) -> str:
    return f"**Question {number}.** {q['question']}\n\n" + "\n".join(f"- ({k}) {v}" for k, v in q["options"].items())


def check_sources(only: Iterable[str | int] | None = None, source_dir: str | Path | None = None) -> list[str]:
    """Every problem of the source notebooks ([] when none): nbgrader metadata, markers, questions."""
    import ast

    from .questions import questions
    problems = []
    source_dir = Path(source_dir) if source_dir else NOTEBOOK_DIR
    try:
        known = questions(source_dir / "questions.yaml") if (source_dir / "questions.yaml").is_file() else None
    except ValueError as e:
        return [str(e)]
    if known is None:
        problems.append(f"{source_dir / 'questions.yaml'}: missing")
        known = {}
    asked = set()
    books = _books(only, source_dir)
    for path in books:
        nb = nbformat.read(path, as_version=4)
        problems += check_notebook(nb, path.name)
        for k, cell in enumerate(nb.cells):
            if not is_test(cell):
                continue
            public = split_hidden(cell.source)[0]
            for node in ast.walk(ast.parse(public)):
                if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "answer"):
                    continue
                qid = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
                opts = {kw.arg: kw.value.value for kw in node.keywords if isinstance(kw.value, ast.Constant)}
                where = f"{path.name}, cell {k} ({grade_id(cell)})"
                q = known.get(qid)
                if q is None:
                    problems.append(f"{where}: question {qid!r} is not in questions.yaml")
                    continue
                asked.add(qid)
                if q["notebook"] != path.stem:
                    problems.append(f"{where}: questions.yaml files {qid} under {q['notebook']}, not {path.stem}")
                if "".join(q["options"]) != opts.get("options"):
                    problems.append(f"{where}: options={opts.get('options')!r}, questions.yaml has "
                                    f"{''.join(q['options'])!r}")
                statement = next((c for c in nb.cells if grade_id(c) == f"{grade_id(cell)}-statement"), None)
                expected = _question_markdown(qid.split("-q")[1], q)
                if statement is None or statement.source.strip() != expected:
                    problems.append(f"{where}: the question's markdown cell differs from questions.yaml; it should be:"
                                    f"\n{expected}")
    stems = {p.stem for p in books}
    problems += [f"questions.yaml: {qid} is asked in no notebook" for qid in sorted(set(known) - asked)
                 if known[qid]["notebook"] in stems]
    return problems


def release(out_dir: str | Path = RELEASE_DIR, only: Sequence[str | int] | None = None, force: bool = False,
            quiet: bool = False, source_dir: str | Path | None = None) -> dict[str, int]:
    """Check the sources, then write the release copies (see :func:`simo_lite.classroom.student.generate`)."""
    problems = check_sources(only, source_dir)
    if problems:
        raise AssignmentError(problems, "problem in the source notebooks")
    return generate(out_dir, only, quiet=quiet, force=force, kind="release", source_dir=source_dir)


def validate(only: Iterable[str | int] | None = None, out_dir: str | Path = RELEASE_DIR, jobs: int | None = None,
             cell_timeout: float = 120, quiet: bool = False, progress: bool | None = None,
             source_dir: str | Path | None = None) -> list[dict]:
    """Grade every source notebook (must score full marks) and its release copy in ``out_dir`` (must
    fail every test in its hidden tests only). Returns one row per notebook; raises
    :class:`AssignmentError` listing every problem."""
    import copy as _copy

    from .cells import is_solution, nbgrader, results_read
    from .grade import Options, Submission, run_many
    out_dir = Path(out_dir)
    books = _books(only, source_dir)
    jobs = jobs or min(2, os.cpu_count() or 1)
    opts = Options(source_dir=Path(source_dir) if source_dir else NOTEBOOK_DIR, split_hidden=True,
                   cell_timeout=cell_timeout, timeout=max(300.0, 4 * cell_timeout))
    # a notebook whose exercises read the run's results (checks.run_results) runs whole, lesson included, in
    # one smoke run folder of its own validation, so its reading exercises have this run's numbers to read
    run_opts = dataclasses.replace(opts, scope="notebook", run_dir=tempfile.mkdtemp(prefix="simo-lite-validate-"),
                                   timeout=max(opts.timeout, 900.0))
    tasks, problems = [], []
    for path in books:
        copy = out_dir / path.name
        if not copy.exists():
            raise FileNotFoundError(f"{copy}: write the release copies first (python -m simo_lite.assign)")
        source, released = nbformat.read(path, as_version=4), nbformat.read(copy, as_version=4)
        stubs = {grade_id(c): c.source for c in released.cells if is_solution(c)}
        # one notebook holding both: the graded cells with the solutions, then again with the release's stubs
        both, submitted = _copy.deepcopy(source), _copy.deepcopy(source)
        for c in source.cells:
            if is_solution(c) or is_test(c):
                for nb, stub in ((both, False), (submitted, True)):
                    twin = _copy.deepcopy(c)
                    twin.metadata["nbgrader"] = {**nbgrader(c), "grade_id": grade_id(c) + _RELEASE}
                    twin["id"] = f"{c.get('id', 'cell')}{_RELEASE}"
                    if stub and is_solution(c):
                        if grade_id(c) not in stubs:
                            problems.append(f"{path.name} (release copy): solution cell {grade_id(c)} is missing")
                        twin.source = stubs.get(grade_id(c), "")
                    nb.cells.append(twin)
        both.metadata.setdefault("simo_lite", {})["name"] = path.name
        tasks.append((Submission("validation", path.name, submitted, str(copy), source=both),
                      run_opts if results_read(source) else opts))
    t0 = time.perf_counter()
    try:
        results = run_many(tasks, jobs=jobs, progress=progress, desc="validating")
    finally:
        shutil.rmtree(run_opts.run_dir, ignore_errors=True)
    rows = []
    for path, result in zip(books, results):
        name = path.name
        def mine(items, release):
            return [x for x in items if (x["grade_id"] or "").endswith(_RELEASE) == release]
        src = {"failures": mine(result["failures"], False), "tests": mine(result["tests"], False),
               "seconds": result["seconds"], "max": sum(t["max"] for t in mine(result["tests"], False))}
        rel = {"tests": mine(result["tests"], True), "units": mine(result["units"], True)}
        for t in rel["tests"]:
            t["grade_id"] = t["grade_id"][:-len(_RELEASE)]
        for u in rel["units"]:
            u["grade_id"] = u["grade_id"][:-len(_RELEASE)]
        for f in src["failures"]:
            problems.append(f"{name} (with its solutions): {f['grade_id']}: {f['exception']}: {f['message']}"
                            + (f" [{f['line']}]" if f["line"] else ""))
        passed = sum(t["passed"] for t in src["tests"])
        failed = sum(not t["passed"] for t in rel["tests"])
        for t in rel["tests"]:
            if t["passed"]:
                problems.append(f"{name} (release copy): test {t['grade_id']} passes on the stubs: its hidden tests "
                                f"must fail without a solution")
        for u in rel["units"]:
            if u["status"] != "ok" and u["kind"] != "test-hidden":
                problems.append(f"{name} (release copy): {u['grade_id'] or 'a cell'} ({u['kind']}) raised "
                                f"{u['error']}: a student's notebook must run without an error")
        if not rel["tests"] or not src["tests"]:
            problems.append(f"{name}: no test cells")
        rows.append({"notebook": name, "tests": len(src["tests"]), "points": src["max"], "source_passed": passed,
                     "release_failed": failed, "seconds": src["seconds"]})
    if not quiet:
        print(f"validated {len(books)} notebook(s) in {time.perf_counter() - t0:.1f} s ({jobs} job(s)):")
        for r in rows:
            print(f"  {r['notebook']:36s} {r['tests']} tests, {r['points']:g} points | with solutions: "
                  f"{r['source_passed']}/{r['tests']} pass | release copy: {r['release_failed']}/{r['tests']} fail "
                  f"| {r['seconds']:.1f} s")
    if problems:
        raise AssignmentError(problems, "validation problem")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Command line of ``python -m simo_lite.assign``: check the sources, write the release copies to
    ``--out`` and validate them (``--check``: validate only); exits with an error message on a problem."""
    ap = argparse.ArgumentParser(prog="python -m simo_lite.assign", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(RELEASE_DIR), help="output folder (default: notebooks/release)")
    ap.add_argument("--only", nargs="+", help="notebook numbers, e.g. 03 04")
    ap.add_argument("--force", action="store_true",
                    help="regenerate copies that were edited or run (each is first moved to <name>.bak-<N>.ipynb)")
    ap.add_argument("--no-validate", action="store_true", help="write the copies without running them")
    ap.add_argument("--check", action="store_true", help="check the sources and validate the copies; write nothing")
    ap.add_argument("--jobs", type=int, default=None, help="notebooks validated at once (default: 2)")
    ap.add_argument("--cell-timeout", type=float, default=120, help="seconds per cell when validating (default 120)")
    args = ap.parse_args(argv)
    try:
        if args.check:
            problems = check_sources(args.only)
            if problems:
                raise AssignmentError(problems, "problem in the source notebooks")
        else:
            report = release(args.out, args.only, force=args.force)
            print(f"{sum(report.values())} solutions removed from {len(report)} notebooks -> {args.out}")
        if not args.no_validate:
            validate(args.only, args.out, jobs=args.jobs, cell_timeout=args.cell_timeout)
    except (AssignmentError, SolutionMarkerError, StudentWorkError, ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
