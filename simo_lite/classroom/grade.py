"""The offline autograder: run a class's submissions, restore the tests, write grades and feedback.

    python -m simo_lite.grade SUBMISSIONS [--out DIR] [--jobs N] [--scope exercises|notebook]
                              [--profile smoke] [--seed 0] [--cell-timeout 120] [--timeout 900]

``SUBMISSIONS`` is a folder or a ``.zip`` (an LMS download); inside, in any mix:

- ``<student>/<NN_name>.ipynb`` (or deeper, nbgrader's ``<student>/<assignment>/<NN_name>.ipynb``):
  the student is the first folder (a Moodle folder ``Jane Doe_123456_assignsubmission_file_`` gives
  ``Jane Doe_123456``);
- ``<student><sep><NN_name>.ipynb`` with any text around the notebook's name, e.g.
  ``alice_03_merging.ipynb`` or Canvas's ``doejane_123456_7890123_03_merging-1.ipynb``: the student is
  the text before the notebook's name;
- ``.zip`` files, unpacked (under ``<out>/unpacked/``) and read by the same rules; a zip whose
  entries all sit in one folder is read from inside that folder.

The notebook a file holds is read from its metadata (release and student copies record their source),
else from its name. Files of no course notebook, unreadable files and duplicates are listed, never fatal.

How a submission is graded. The grader rebuilds the notebook from the *source* notebook (the course's
``notebooks/``, with solutions and hidden tests): every cell comes from the source except the solution
cells (nbgrader ``solution: true``), which come from the submission, matched by ``grade_id`` (then by
cell id when a student's editor dropped the metadata; the stub when the cell is missing, the last one
when it is duplicated). So a deleted, duplicated or retyped test or locked cell changes nothing, and
the hidden tests, which hold the answer key, come from the source notebooks, never from the package.
The parameters cell is followed by an injected one (``profile``, ``seed``, ``show_progress=False``,
``run_dir``) and a cell seeding ``random``, numpy and torch. ``--scope exercises`` (the default) runs
only the parameters and the nbgrader cells (imports, solutions, tests: seconds per notebook, any
profile); ``--scope notebook`` runs the whole rebuilt notebook in ``--profile`` (smoke by default;
the lesson cells then run too, in a run directory shared by the batch, ``--run-dir``). Reading
exercises (Exercise 1 of 05-08: the student interprets numbers of the run, checked within a range) read the
run's saved results (``checks.run_results``); under ``--scope exercises`` these come from the
grader's run of the same ``--profile`` and ``--seed`` (``runs/<profile>-<seed>``, made once with
``make course PROFILE=...``, or ``--run-dir``), which on a CPU has the students' numbers; the grader
warns before it starts when that run is missing.

Each submission runs in its own Jupyter kernel of this Python (the project's environment) with
``PYTHONHASHSEED``, ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` fixed (``--threads``), a per-cell
timeout (the cell is interrupted, the rest still runs) and a per-submission one (cells left when it
runs out score 0). A kernel that dies or hangs is restarted and the cells before re-run. A test cell
scores its ``points`` when it runs without an error, else 0. Nothing a submission does stops the
batch; ``--jobs N`` grades N submissions at once (processes), with a progress bar (off under CI).

Written to ``--out`` (default ``runs/grades/<SUBMISSIONS name>/``):

- ``grades.csv``: student, notebook, total, max, then one column per test ``grade_id``;
- ``failures.csv``: student, notebook, grade_id, exception, message (its first line) and line (the
  first line of the traceback inside the cell: ``line 3: assert ok_shares, ...``), one row per failed
  or skipped cell, and one per file that could not be graded;
- ``feedback/<student>.html``: per notebook and test, the points and what the cell printed (nbconvert's
  HTML exporter, plain HTML without nbconvert); the hidden tests' source is left out, their messages
  are shown;
- ``graded/<student>/<notebook>``: the executed, rebuilt notebooks.
"""
from __future__ import annotations

import argparse
import ast
import copy
import csv
import html
import io
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import nbformat

from .cells import grade_id, is_graded_cell, is_solution, is_test, points, split_hidden
from .student import NOTEBOOK_DIR, REPO, strip_solutions

__all__ = ["Options", "Submission", "discover", "rebuild", "grade_notebook", "grade", "main", "missing_run_results",
           "DEFAULT_CELL_TIMEOUT_S", "DEFAULT_TIMEOUT_S", "SCOPES"]

DEFAULT_CELL_TIMEOUT_S = 120        # torch on a CPU: the slowest check builds a small ViT with PEFT
DEFAULT_TIMEOUT_S = 900
SCOPES = ("exercises", "notebook")
GRADES_CSV, FAILURES_CSV = "grades.csv", "failures.csv"
FAILURE_COLUMNS = ["student", "notebook", "grade_id", "exception", "message", "line"]
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CELL_LINE = re.compile(r"Cell In\[\d+\], line (\d+)")
_MOODLE = re.compile(r"_assignsubmission_\w*$")
_PROBE_TIMEOUT_S = 10


# ----------------------------------------------------------------------------------------------
# What to grade
# ----------------------------------------------------------------------------------------------
@dataclass
class Submission:
    student: str
    notebook: str            # the source notebook's file name, e.g. "03_merging.ipynb"
    path: object             # the file to read (or a notebook node)
    origin: str              # where it came from, for messages (its path in the folder or zip)
    source: object = None    # the source notebook (path or node) when not <source_dir>/<notebook>


@dataclass
class Options:
    source_dir: Path = NOTEBOOK_DIR
    scope: str = "exercises"
    profile: str = "smoke"
    seed: int = 0
    run_dir: str = ""
    cell_timeout: float = DEFAULT_CELL_TIMEOUT_S
    timeout: float = DEFAULT_TIMEOUT_S
    threads: int = 1
    split_hidden: bool = False      # run each test cell's public part and hidden tests as two cells
    extra_env: dict = field(default_factory=dict)


def _course_notebooks(source_dir: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(Path(source_dir).glob("[0-9][0-9]_*.ipynb"))}


def _which_notebook(path: Path, names: list[str]) -> str | None:
    """The course notebook a submitted file holds: its metadata's source, else its file name."""
    try:
        meta = nbformat.read(path, as_version=4).metadata.get("simo_lite", {}).get("student_copy", {})
        if meta.get("source") in names:
            return meta["source"]
    except Exception:  # noqa: BLE001 -- unreadable: decided by its name, and reported when graded
        pass
    stems = sorted((n[:-len(".ipynb")] for n in names if n[:-len(".ipynb")] in path.name), key=len)
    return stems[-1] + ".ipynb" if stems else None


def _unpack(zip_path: Path, into: Path) -> Path:
    """Extract a zip (entries that would land outside ``into`` are skipped); returns the folder."""
    target = into / zip_path.stem
    n = 1
    while target.exists():
        n += 1
        target = into / f"{zip_path.stem}-{n}"
    target.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as z:
        for info in z.infolist():
            dest = (target / info.filename).resolve()
            if info.is_dir() or not str(dest).startswith(str(target.resolve()) + os.sep):
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
    entries = [p for p in target.iterdir() if not _ignored(p.name)]
    if len(entries) == 1 and entries[0].is_dir():           # a zip of one folder: read from inside it ...
        inner = entries[0]
        books = [p for p in inner.iterdir() if p.is_file() and p.suffix.lower() == ".ipynb"]
        # ... unless that folder is a student's (``alice/03_merging.ipynb``: no student in the file names)
        if any(p.is_dir() and not _ignored(p.name) for p in inner.iterdir()) \
                or (books and all(_name_prefix(p.name) for p in books)):
            return inner
    return target


def _name_prefix(name: str) -> str:
    """The text before a notebook name ``NN_word`` in a file name ("" when it starts with one)."""
    m = re.search(r"\d\d_[a-z]", name)
    return name[:m.start()].strip(" _-.") if m else name


def _ignored(name: str) -> bool:
    return name.startswith(".") or name in ("__MACOSX", ".ipynb_checkpoints")


def discover(submissions: str | Path, source_dir: str | Path = NOTEBOOK_DIR,
             unpack_dir: str | Path | None = None) -> tuple[list[Submission], list[dict]]:
    """The submissions under a folder or in a zip, and the files that are not (as failure rows).

    Returns (submissions sorted by student and notebook, problems), a problem being a failures.csv
    row. Zips are extracted into ``unpack_dir`` (a temporary folder by default, left in place)."""
    root = Path(submissions)
    names = list(_course_notebooks(source_dir))
    unpack_dir = Path(unpack_dir) if unpack_dir else Path(tempfile.mkdtemp(prefix="simo-lite-unpacked-"))
    found: dict[tuple[str, str], Submission] = {}
    problems: list[dict] = []

    def problem(student, notebook, origin, exception, message):
        problems.append({"student": student, "notebook": notebook, "grade_id": "", "exception": exception,
                         "message": message, "line": origin})

    def walk(base: Path, shown: str, prefix: tuple[str, ...] = (), zip_student: str = ""):
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            rel = path.relative_to(base).parts if path != base else (path.name,)
            if any(_ignored(part) for part in rel):
                continue
            parts = prefix + rel
            origin = "/".join([shown, *rel]) if shown else "/".join(rel)
            if path.suffix.lower() == ".zip":
                try:
                    inner = _unpack(path, unpack_dir)
                except (zipfile.BadZipFile, OSError) as e:
                    problem("", "", origin, type(e).__name__, f"not a readable zip: {e}")
                    continue
                walk(inner, origin, parts[:-1], zip_student=path.stem)
                continue
            if path.suffix.lower() != ".ipynb":
                continue
            notebook = _which_notebook(path, names)
            if notebook is None:
                problem("", path.name, origin, "UnknownNotebook",
                        f"not one of the course notebooks ({', '.join(n[:2] for n in names)})")
                continue
            if len(parts) > 1:
                student = _MOODLE.sub("", parts[0]).strip()
            else:
                stem = notebook[:-len(".ipynb")]
                student = path.stem.split(stem)[0].strip(" _-.") if stem in path.stem else path.stem
                student = student or zip_student         # alice.zip holding 03_merging.ipynb
            if not student:
                problem("", notebook, origin, "NoStudentId",
                        "no student id: name the file <student>_<notebook>.ipynb or put it in a <student>/ folder")
                continue
            key = (student, notebook)
            if key in found:
                problem(student, notebook, origin, "Duplicate",
                        f"a second submission of {notebook} by {student}: graded {found[key].origin}, not this one")
                continue
            found[key] = Submission(student, notebook, path, origin)

    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder or zip")
    if root.is_file() and root.suffix.lower() == ".zip":
        walk(_unpack(root, unpack_dir), root.name)
    elif root.is_file():
        walk(root, "")
    else:
        walk(root, "")
    order = {n: i for i, n in enumerate(names)}
    subs = sorted(found.values(), key=lambda s: (s.student, order[s.notebook]))
    return subs, problems


# ----------------------------------------------------------------------------------------------
# The notebook that is run
# ----------------------------------------------------------------------------------------------
def _parameter_names(cell) -> list[str]:
    try:
        tree = ast.parse(cell.source)
    except SyntaxError:
        return []
    return [t.id for s in tree.body if isinstance(s, ast.Assign) for t in s.targets if isinstance(t, ast.Name)]


SEED_CELL = """# injected by the grader: every random generator starts from the notebook's seed
import random as _random
_random.seed(seed)
try:
    import numpy as _np
    _np.random.seed(seed)
    import torch as _torch
    _torch.manual_seed(seed)
except ImportError:
    pass"""


def rebuild(source: nbformat.NotebookNode, submitted: nbformat.NotebookNode | None = None, scope: str = "exercises",
            parameters: dict | None = None,
            ) -> tuple[object, list[str]]:
    """The notebook to run for a submission, and notes on what was taken from where.

    ``source``: the source notebook (solutions and hidden tests); ``submitted``: the student's notebook
    (None: nothing submitted, every solution is the stub). Every cell is the source's, except each
    solution cell, taken from ``submitted`` by ``grade_id``, else by cell id, else the stub. ``scope``
    "exercises" keeps the parameters cell and the nbgrader cells only. ``parameters`` are injected
    after the parameters cell (those it defines), followed by a seeding cell."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    nb = copy.deepcopy(source)
    by_gid: dict[str, list] = {}
    by_id: dict[str, object] = {}
    for c in (submitted.cells if submitted is not None else []):
        if grade_id(c):
            by_gid.setdefault(grade_id(c), []).append(c)
        if c.get("id"):
            by_id.setdefault(c["id"], c)
    notes, cells = [], []
    parameters = dict(parameters or {})
    injected = False
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        is_params = cell.cell_type == "code" and "parameters" in tags
        if is_solution(cell):
            gid = grade_id(cell)
            same = [c for c in by_gid.get(gid, []) if c.cell_type == cell.cell_type]
            mine = same[-1] if same else None
            if len(same) > 1:
                notes.append(f"{gid}: {len(same)} cells carry this grade_id; the last one was graded")
            other = by_id.get(cell.get("id"))
            if mine is None and other is not None and not grade_id(other) and other.cell_type == cell.cell_type:
                mine = other
                notes.append(f"{gid}: matched by its cell id (its nbgrader metadata was lost)")
            if mine is None:
                cell.source = strip_solutions(cell.source, gid)[0]
                if submitted is not None:
                    notes.append(f"{gid}: not in the submission; graded the empty exercise")
            else:
                cell.source = mine.source
        elif scope == "exercises" and not (is_params or is_graded_cell(cell)):
            continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("editable", None)
        cell.metadata.pop("deletable", None)
        cells.append(cell)
        if is_params and not injected:
            cells += _injected(set(_parameter_names(cell)), parameters)
            injected = True
    if not injected:
        cells = _injected(None, parameters) + cells
    nb.cells = cells
    return nb, notes


def _injected(known: set[str] | None, parameters: dict) -> list:
    values = {k: v for k, v in parameters.items() if known is None or k in known}
    out = []
    if values:
        src = "# injected by the grader\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items())
        out.append(nbformat.v4.new_code_cell(src, id="grader-parameters",
                                             metadata={"tags": ["injected-parameters"]}))
    if known is None or "seed" in known:
        out.append(nbformat.v4.new_code_cell(SEED_CELL, id="grader-seed"))
    return out


# ----------------------------------------------------------------------------------------------
# Running it
# ----------------------------------------------------------------------------------------------
def _error_of(cell) -> dict | None:
    """{exception, message, line} of a cell's first error output, or None."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            tb = _ANSI.sub("", "\n".join(out.get("traceback", [])))
            m = _CELL_LINE.search(tb)
            line = ""
            if m:
                k = int(m.group(1))
                src = cell.source.split("\n")
                line = f"line {k}: {src[k - 1].strip()}" if 0 < k <= len(src) else f"line {k}"
            evalue = (out.get("evalue") or "").strip()
            return {"exception": out.get("ename", "Error"), "message": evalue.split("\n")[0], "line": line}
    return None


def _text_of(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
        elif out.get("output_type") == "error":
            parts.append(f"{out.get('ename')}: {out.get('evalue')}\n")
    return "".join(parts)


class _Kernel:
    """One Jupyter kernel running a notebook's cells one by one, with timeouts and restarts."""

    def __init__(self, cwd: Path, env: dict, log_path: Path):
        self.cwd, self.env, self.log_path = cwd, env, log_path
        self.client = None
        self._log = None

    def start(self):
        from nbclient import NotebookClient

        from ..course import _kernel_manager_class
        self._log = open(self.log_path, "a")
        # nbclient stores each executed cell into its notebook: a scratch one, so the graded notebook's
        # cells are only changed where this module writes them
        scratch = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("")])
        self.client = NotebookClient(scratch, timeout=DEFAULT_CELL_TIMEOUT_S, allow_errors=True,
                                     kernel_name="python3", record_timing=False, interrupt_on_timeout=False,
                                     shutdown_kernel="immediate",   # graceful waits 1.5-2.8 s per kernel
                                     kernel_manager_class=_kernel_manager_class(self._log),
                                     resources={"metadata": {"path": str(self.cwd)}})
        self.client.km = self.client.create_kernel_manager()
        self.client.start_new_kernel(env=self.env, cwd=str(self.cwd))
        self.client.start_new_kernel_client()

    def close(self):
        if self.client is not None:
            try:
                self.client._cleanup_kernel()
            except Exception:  # noqa: BLE001 -- a dead kernel may fail to shut down cleanly
                pass
            self.client = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self):
        self.close()
        self.start()

    def run(self, cell, timeout: float) -> str:
        """Execute ``cell``; "ok" (errors, if any, are in its outputs), "timeout" or "dead"."""
        from nbclient.exceptions import CellTimeoutError, DeadKernelError
        from nbclient.util import run_sync
        self.client.timeout = max(1, int(round(timeout)))
        self.client.nb.cells = [cell]
        try:
            self.client.execute_cell(cell, 0)
            return "ok"
        except CellTimeoutError:
            try:
                run_sync(self.client.km.interrupt_kernel)()
            except Exception:  # noqa: BLE001
                pass
            return "timeout"
        except DeadKernelError:
            return "dead"

    def responsive(self) -> bool:
        probe = nbformat.v4.new_code_cell("pass")
        return self.run(probe, _PROBE_TIMEOUT_S) == "ok" and not _error_of(probe)


def _kernel_env(opts: Options) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": str(opts.seed), "OMP_NUM_THREADS": str(opts.threads),
           "MKL_NUM_THREADS": str(opts.threads), "CI": "1"}
    questions = Path(opts.source_dir) / "questions.yaml"
    if questions.is_file():
        env["SIMO_LITE_QUESTIONS"] = str(questions.resolve())
    env.update({k: str(v) for k, v in opts.extra_env.items()})
    return env


def _units(nb, split: bool) -> list[tuple[int, object, str]]:
    """(cell index, cell to execute, kind) in order; with ``split`` a test cell gives two units."""
    units = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        kind = "test" if is_test(cell) else "solution" if is_solution(cell) else "other"
        if kind == "test" and split:
            public, hidden = split_hidden(cell.source, grade_id(cell) or "")
            units.append((i, nbformat.v4.new_code_cell(public), "test-public"))
            if hidden.strip():
                units.append((i, nbformat.v4.new_code_cell(hidden), "test-hidden"))
        else:
            units.append((i, cell, kind))
    return units


def grade_notebook(source_path: str | Path | nbformat.NotebookNode,
                   submitted: str | Path | nbformat.NotebookNode | None = None, opts: Options | None = None,
                   student: str = "", workdir: str | Path | None = None) -> dict:
    """Grade one submission of one notebook; never raises on anything the submission does.

    ``source_path``: the source notebook's path (or the notebook itself); ``submitted``: a path, a
    notebook node, or None (nothing submitted). Returns a dict: student,
    notebook, total, max, tests [{grade_id, points, max, passed, output, error}], failures (rows of
    failures.csv), units [{grade_id, kind, status, error}], notes, seconds, executed (the notebook)."""
    opts = opts or Options()
    t0 = time.perf_counter()
    if isinstance(source_path, (str, Path)):
        source_path = Path(source_path)
        source, name = nbformat.read(source_path, as_version=4), source_path.name
    else:
        source, name = copy.deepcopy(source_path), source_path.metadata.get("simo_lite", {}).get("name", "notebook")
    result = {"student": student, "notebook": name, "total": 0.0, "tests": [], "failures": [], "units": [],
              "notes": [], "seconds": 0.0, "executed": None}
    tests = [c for c in source.cells if is_test(c)]
    result["max"] = sum(points(c) for c in tests)

    def fail(gid, exception, message, line=""):
        result["failures"].append({"student": student, "notebook": name, "grade_id": gid, "exception": exception,
                                   "message": message, "line": line})

    if isinstance(submitted, (str, Path)):
        try:
            submitted = nbformat.read(submitted, as_version=4)
        except Exception as e:  # noqa: BLE001 -- not a notebook: graded as an empty submission
            fail("", type(e).__name__, f"the submitted file is not a readable notebook: {str(e).splitlines()[0][:200]}")
            submitted = nbformat.v4.new_notebook()
    params = {"profile": opts.profile, "seed": opts.seed, "show_progress": False}
    if opts.run_dir:
        params["run_dir"] = str(opts.run_dir)
    nb, notes = rebuild(source, submitted, opts.scope, params)
    result["notes"] = notes
    status: dict[int, str] = {}            # cell index -> "ok" / "error" / "timeout" / "dead" / "skipped"
    errors: dict[int, dict] = {}
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="simo-lite-grade-")) if own else Path(workdir)
    cwd = work if opts.scope == "exercises" else Path(opts.source_dir)
    kernel = _Kernel(cwd, _kernel_env(opts), work / "kernel.log")
    deadline = time.monotonic() + opts.timeout
    units = _units(nb, opts.split_hidden)
    try:
        try:
            kernel.start()
        except Exception as e:  # noqa: BLE001
            for i, _, _ in units:
                status[i] = "skipped"
            fail("", type(e).__name__, f"the kernel did not start: {str(e).splitlines()[0][:200] if str(e) else ''}")
            units = []
        prelude: list[tuple[int, object]] = []
        for i, cell, kind in units:
            left = deadline - time.monotonic()
            if left <= 0:
                status[i] = "skipped"
                errors.setdefault(i, {"exception": "SubmissionTimeout", "line": "",
                                      "message": f"not run: the submission used its {opts.timeout:g} s"})
                result["units"].append({"grade_id": grade_id(nb.cells[i]), "kind": kind, "status": "skipped",
                                        "error": "SubmissionTimeout"})
                continue
            outcome = kernel.run(cell, min(opts.cell_timeout, left))
            err = _error_of(cell)
            if outcome == "timeout":
                err = {"exception": "CellTimeoutError", "line": "",
                       "message": f"the cell ran longer than {min(opts.cell_timeout, left):.0f} s and was interrupted"}
                cell.outputs.append(nbformat.v4.new_output("error", ename=err["exception"], evalue=err["message"],
                                                           traceback=[]))
            elif outcome == "dead":
                err = {"exception": "DeadKernelError", "line": "",
                       "message": "the kernel died while running this cell (restarted for the cells after it)"}
            if outcome != "ok" and not (outcome == "timeout" and kernel.responsive()):
                try:
                    kernel.restart()
                    for _, pcell in prelude:
                        kernel.run(copy.deepcopy(pcell), max(1.0, min(opts.cell_timeout, deadline - time.monotonic())))
                except Exception as e:  # noqa: BLE001
                    err = err or {"exception": type(e).__name__, "line": "",
                                  "message": "the kernel could not be restarted"}
                    deadline = time.monotonic()          # nothing more can run: the rest is skipped
            if kind == "other" and err is None:
                prelude.append((i, cell))
            if opts.split_hidden and kind.startswith("test-"):
                target = nb.cells[i]
                if kind == "test-public":
                    target.outputs = []
                target.outputs = list(target.outputs) + list(cell.outputs)
            if err is not None:
                errors.setdefault(i, err)
                status[i] = "error"
            else:
                status.setdefault(i, "ok")
            result["units"].append({"grade_id": grade_id(nb.cells[i]), "kind": kind,
                                    "status": "ok" if err is None else "error",
                                    "error": err["exception"] if err else None})
    finally:
        kernel.close()
        if own:
            shutil.rmtree(work, ignore_errors=True)
    for i, cell in enumerate(nb.cells):
        if i in errors:
            e = errors[i]
            fail(grade_id(cell) or f"cell:{cell.get('id', i)}", e["exception"], e["message"], e["line"])
        if is_test(cell):
            passed = status.get(i) == "ok"
            pts = points(cell) if passed else 0.0
            result["total"] += pts
            result["tests"].append({"grade_id": grade_id(cell), "points": pts, "max": points(cell), "passed": passed,
                                    "output": _text_of(cell), "error": errors.get(i)})
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["executed"] = nbformat.writes(nb)
    return result


def _grade_one(task: tuple) -> dict:
    """Process-pool entry point: (submission, options) -> result; never raises."""
    sub, opts = task
    try:
        source = sub.source if sub.source is not None else Path(opts.source_dir) / sub.notebook
        result = grade_notebook(source, sub.path, opts, student=sub.student)
        result["notebook"] = sub.notebook
        for f in result["failures"]:
            f["notebook"] = sub.notebook
        return result
    except Exception as e:  # noqa: BLE001 -- a grader bug must not stop the batch either
        return {"student": sub.student, "notebook": sub.notebook, "total": 0.0, "max": 0.0, "tests": [],
                "units": [], "notes": [], "seconds": 0.0, "executed": None,
                "failures": [{"student": sub.student, "notebook": sub.notebook, "grade_id": "",
                              "exception": type(e).__name__, "message": str(e).split("\n")[0], "line": ""}]}


def run_many(tasks: list[tuple], jobs: int = 1, progress: bool | None = None, desc: str = "grading") -> list[dict]:
    """Run ``_grade_one`` on every (submission, options) task, ``jobs`` at a time; results in order."""
    from tqdm import tqdm
    if progress is None:
        progress = not os.environ.get("CI")
    bar = tqdm(total=len(tasks), desc=desc, unit="notebook", disable=not progress, file=sys.stderr)
    results: list[dict | None] = [None] * len(tasks)
    try:
        if jobs <= 1 or len(tasks) <= 1:
            for k, task in enumerate(tasks):
                results[k] = _grade_one(task)
                bar.update()
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed
            main_file = getattr(sys.modules.get("__main__"), "__file__", None)
            # spawn re-imports the main module in every worker: a main read from stdin cannot be, so fork there
            method = "spawn" if main_file and os.path.exists(main_file) or os.name == "nt" else "fork"
            with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)),
                                     mp_context=multiprocessing.get_context(method)) as pool:
                futures = {pool.submit(_grade_one, task): k for k, task in enumerate(tasks)}
                for fut in as_completed(futures):
                    k = futures[fut]
                    try:
                        results[k] = fut.result()
                    except Exception as e:  # noqa: BLE001 -- a worker process died
                        sub = tasks[k][0]
                        results[k] = {"student": sub.student, "notebook": sub.notebook, "total": 0.0, "max": 0.0,
                                      "tests": [], "units": [], "notes": [], "seconds": 0.0, "executed": None,
                                      "failures": [{"student": sub.student, "notebook": sub.notebook, "grade_id": "",
                                                    "exception": type(e).__name__,
                                                    "message": "the grading process died", "line": ""}]}
                    bar.update()
    finally:
        bar.close()
    return results


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------
def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}".rstrip("0")


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def write_grades(results: list[dict], out: Path, source_dir: Path) -> Path:
    """Write ``<out>/grades.csv`` (student, notebook, total, max, then one column per test ``grade_id`` of
    the graded notebooks, in course order) from :func:`grade_notebook` results; returns its path."""
    order = list(_course_notebooks(source_dir))
    columns: list[str] = []
    for name in order:
        if any(r["notebook"] == name for r in results):
            nb = nbformat.read(Path(source_dir) / name, as_version=4)
            columns += [grade_id(c) for c in nb.cells if is_test(c)]
    rows = []
    for r in results:
        by = {t["grade_id"]: t["points"] for t in r["tests"]}
        rows.append([r["student"], r["notebook"], _num(r["total"]), _num(r["max"]),
                     *[_num(by[g]) if g in by else "" for g in columns]])
    _write_csv(out / GRADES_CSV, ["student", "notebook", "total", "max", *columns], rows)
    return out / GRADES_CSV


def write_failures(results: list[dict], problems: list[dict], out: Path) -> Path:
    """Write ``<out>/failures.csv`` (:data:`FAILURE_COLUMNS`): every failed or skipped cell of ``results``,
    then every file that could not be graded (``problems``); returns its path."""
    rows = [[f[c] for c in FAILURE_COLUMNS] for r in results for f in r["failures"]]
    rows += [[p[c] for c in FAILURE_COLUMNS] for p in problems]
    _write_csv(out / FAILURES_CSV, FAILURE_COLUMNS, rows)
    return out / FAILURES_CSV


def _safe(name: str) -> str:
    return re.sub(r"[^\w.\- ]+", "_", name).strip() or "student"


def _feedback_notebook(student: str, results: list[dict]):
    """One notebook: a summary table, then per notebook its statements, solutions, and test outputs."""
    cells = [nbformat.v4.new_markdown_cell(
        f"# Feedback: {student}\n\n| notebook | points |\n|---|---|\n"
        + "\n".join(f"| {r['notebook']} | {_num(r['total'])} / {_num(r['max'])} |" for r in results))]
    for r in results:
        cells.append(nbformat.v4.new_markdown_cell(
            f"## {r['notebook']}: {_num(r['total'])} / {_num(r['max'])}"
            + ("".join(f"\n- {n}" for n in r["notes"]) if r["notes"] else "")))
        if not r.get("executed"):
            continue
        nb = nbformat.reads(r["executed"], as_version=4)
        tests = {t["grade_id"]: t for t in r["tests"]}
        for cell in nb.cells:
            if not (is_graded_cell(cell) or cell.cell_type == "markdown" and grade_id(cell)):
                continue
            cell = copy.deepcopy(cell)
            if is_test(cell):
                cell.source = "\n".join(line for line in split_hidden(cell.source)[0].split("\n")
                                        if line.strip() != "# NBVAL_CHECK_OUTPUT")   # the hidden code goes
                for out in cell.get("outputs", []):
                    if out.get("output_type") == "error":            # a traceback would quote hidden lines
                        out["traceback"] = [f"{out.get('ename')}: {out.get('evalue')}"]
                t = tests.get(grade_id(cell))
                cells.append(cell)
                if t is not None:
                    why = "" if t["passed"] else (f": {t['error']['exception']}: {t['error']['message']}"
                                                  if t["error"] else "")
                    cells.append(nbformat.v4.new_markdown_cell(
                        f"**{t['grade_id']}: {_num(t['points'])} / {_num(t['max'])} points**{html.escape(why)}"))
                continue
            cells.append(cell)
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def _plain_html(student: str, results: list[dict]) -> str:
    esc = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Feedback: {esc(student)}</title></head>"
             f"<body><h1>Feedback: {esc(student)}</h1>"]
    for r in results:
        parts.append(f"<h2>{esc(r['notebook'])}: {_num(r['total'])} / {_num(r['max'])}</h2><table border='1'>"
                     "<tr><th>test</th><th>points</th><th>message</th></tr>")
        for t in r["tests"]:
            msg = t["output"] + (f"{t['error']['exception']}: {t['error']['message']}" if t["error"] else "")
            parts.append(f"<tr><td>{esc(t['grade_id'])}</td><td>{_num(t['points'])} / {_num(t['max'])}</td>"
                         f"<td><pre>{esc(msg)}</pre></td></tr>")
        parts.append("</table>" + "".join(f"<p>{esc(n)}</p>" for n in r["notes"]))
    return "".join(parts) + "</body></html>\n"


def write_feedback(results: list[dict], out: Path) -> list[Path]:
    """``feedback/<student>.html`` for every student."""
    folder = out / "feedback"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        from nbconvert import HTMLExporter
        exporter = HTMLExporter(template_name="lab")
    except Exception:  # noqa: BLE001 -- nbconvert missing or broken: plain HTML
        exporter = None
    written = []
    for student in sorted({r["student"] for r in results}):
        mine = [r for r in results if r["student"] == student]
        path = folder / f"{_safe(student)}.html"
        text = None
        if exporter is not None:
            try:
                text = exporter.from_notebook_node(_feedback_notebook(student, mine))[0]
            except Exception:  # noqa: BLE001
                text = None
        path.write_text(text if text is not None else _plain_html(student, mine), encoding="utf-8")
        written.append(path)
    return written


def missing_run_results(notebooks: Iterable[str], opts: Options) -> list[tuple[str, Path]]:
    """(notebook, results file) for each results file that a notebook's reading exercises read
    (``checks.run_results``) and that is missing from the run the grader's exercise cells will see: the
    run folder of ``opts.profile`` and ``opts.seed`` (``runs/<profile>-<seed>``), or ``opts.run_dir``.
    Always empty under ``--scope notebook``, which runs the lesson and writes them."""
    from .cells import results_read
    from .course import default_run_dir
    if opts.scope == "notebook":
        return []
    folder = Path(opts.run_dir) if opts.run_dir else default_run_dir(opts.profile, opts.seed)
    out = []
    for name in notebooks:
        source = Path(opts.source_dir) / name
        if source.is_file():
            out += [(name, folder / "results" / f"{r}.json") for r in results_read(nbformat.read(source, as_version=4))
                    if not (folder / "results" / f"{r}.json").is_file()]
    return out


def grade(submissions: str | Path, out: str | Path | None = None, jobs: int = 1, progress: bool | None = None,
          feedback: bool = True, only: Iterable[str | int] | None = None, quiet: bool = False,
          **options: Any) -> dict:
    """Grade every submission under ``submissions`` (a folder or zip) into ``out``; see the module doc.

    ``options`` are :class:`Options` fields (source_dir, scope, profile, seed, run_dir, cell_timeout,
    timeout, threads). Returns {"results", "problems", "out", "seconds", "per_s"}."""
    t0 = time.perf_counter()
    opts = Options(**options)
    opts.source_dir = Path(opts.source_dir)
    if opts.scope not in SCOPES:
        raise ValueError(f"--scope must be one of {', '.join(SCOPES)}, got {opts.scope!r}")
    root = Path(submissions)
    out = Path(out) if out else REPO / "runs" / "grades" / (root.stem or "submissions")
    out.mkdir(parents=True, exist_ok=True)
    if opts.scope == "notebook" and not opts.run_dir:
        opts.run_dir = str((out / f"run-{opts.profile}-{opts.seed}").resolve())
    unpack = out / "unpacked"
    shutil.rmtree(unpack, ignore_errors=True)
    subs, problems = discover(root, opts.source_dir, unpack)
    if only:
        wanted = {str(o).zfill(2)[:2] for o in only}
        subs = [s for s in subs if s.notebook[:2] in wanted]
    if not subs:
        raise FileNotFoundError(f"{root}: no submission of a course notebook found"
                                + (f" ({len(problems)} file(s) skipped: see below)" if problems else "")
                                + "".join(f"\n  {p['line']}: {p['message']}" for p in problems))
    missing = missing_run_results(sorted({s.notebook for s in subs}), opts)
    if missing and not quiet:
        print("warning: these reading exercises grade against a run's numbers that are not there, so they will "
              "score 0 (make the run first: `make course PROFILE=...`, or pass --run-dir, or --scope notebook):\n"
              + "\n".join(f"  {nb}: {path}" for nb, path in missing))
    results = run_many([(s, opts) for s in subs], jobs=jobs, progress=progress)
    write_grades(results, out, opts.source_dir)
    write_failures(results, problems, out)
    graded = out / "graded"
    for r in results:
        if r.get("executed"):
            target = graded / _safe(r["student"]) / r["notebook"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(r["executed"], encoding="utf-8")
    if feedback:
        write_feedback(results, out)
    seconds = time.perf_counter() - t0
    summary = {"results": results, "problems": problems, "out": out, "seconds": seconds,
               "per_s": len(results) / seconds if seconds else 0.0}
    if not quiet:
        students = len({r["student"] for r in results})
        print(f"graded {len(results)} submission(s) of {students} student(s) in {seconds:.1f} s "
              f"({summary['per_s']:.2f} submissions/s, {jobs} job(s), scope {opts.scope})")
        for r in results:
            print(f"  {r['student']:20s} {r['notebook']:32s} {_num(r['total']):>5s} / {_num(r['max'])}")
        if problems:
            print(f"{len(problems)} file(s) not graded (failures.csv):")
            for p in problems:
                print(f"  {p['line']}: {p['exception']}: {p['message']}")
        print(f"grades:   {out / GRADES_CSV}\nfailures: {out / FAILURES_CSV}"
              + (f"\nfeedback: {out / 'feedback'}" if feedback else ""))
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    """Command line of ``python -m simo_lite.grade``: grade ``SUBMISSIONS`` (see the module doc); exits with
    an error message when nothing can be graded."""
    ap = argparse.ArgumentParser(prog="python -m simo_lite.grade", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Accepted layouts and outputs: see `python -c 'import simo_lite.grade; "
                                        "help(simo_lite.grade)'` or the README's 'For teachers' section.")
    ap.add_argument("submissions", help="a folder of submitted notebooks, or an LMS zip")
    ap.add_argument("--out", help="output folder (default: runs/grades/<SUBMISSIONS name>)")
    ap.add_argument("--source", default=str(NOTEBOOK_DIR), help="the source notebooks (default: notebooks/)")
    ap.add_argument("--scope", choices=SCOPES, default="exercises",
                    help="exercises: only the graded cells (default, seconds); notebook: the whole notebook")
    ap.add_argument("--profile", default="smoke", help="the profile injected into the parameters cell (default smoke)")
    ap.add_argument("--seed", type=int, default=0, help="the seed parameter and PYTHONHASHSEED (default 0)")
    ap.add_argument("--run-dir", default="", help="--scope notebook: the run directory the notebooks share")
    ap.add_argument("--cell-timeout", type=float, default=DEFAULT_CELL_TIMEOUT_S,
                    help=f"seconds per cell (default {DEFAULT_CELL_TIMEOUT_S})")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                    help=f"seconds per submission (default {DEFAULT_TIMEOUT_S})")
    ap.add_argument("--jobs", type=int, default=1, help="submissions graded at once (processes; default 1)")
    ap.add_argument("--threads", type=int, default=1, help="OMP/MKL threads per kernel (default 1)")
    ap.add_argument("--only", nargs="+", help="grade only these notebook numbers, e.g. 03")
    ap.add_argument("--no-feedback", action="store_true", help="skip the feedback HTML")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (also off when CI is set)")
    args = ap.parse_args(argv)
    try:
        grade(args.submissions, out=args.out, jobs=args.jobs, progress=False if args.no_progress else None,
              feedback=not args.no_feedback, only=args.only, source_dir=Path(args.source), scope=args.scope,
              profile=args.profile, seed=args.seed, run_dir=args.run_dir, cell_timeout=args.cell_timeout,
              timeout=args.timeout, threads=args.threads)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
