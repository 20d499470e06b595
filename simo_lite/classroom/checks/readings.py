"""Reading exercises: the learner interprets a number of their own run, checked within a range.

A reading exercise asks for a number (or a name) that the run produced, read off a table or a figure
of the lesson and sometimes combined with a judgement ("is this gain beyond the noise?"). Its cells
use only what a grader can rebuild without the lesson's cells:

    run = checks.run_results("05_head_realignment", globals())    # locked cell: the run's saved results
    head_gain_points = ...                                          # the learner's reading (solution cell)
    ok_gain = checks.check_reading(head_gain_points, "head realignment's gain", unit="points", lo=-100, hi=100)
    ### BEGIN HIDDEN TESTS
    assert checks.within(head_gain_points, <value computed from run>, 0.3), "..."
    ### END HIDDEN TESTS

:func:`run_results` reads ``<run_dir>/results/<notebook>.json``, which the notebook's "Results"
section writes before its exercises, from the run folder of the notebook's parameters (the rule of
``course.setup``: ``run_dir``, else ``runs/<profile>-<seed>``). A grader running only the exercise
cells (``python -m simo_lite.grade``, ``--scope exercises``) therefore grades against its own run of
the same profile and seed (``make course PROFILE=...`` once, or ``--run-dir``); on a CPU the same
seed gives the same numbers, and ``--scope notebook`` runs the lesson itself.

:func:`check_reading` is the public check: it only looks at the answer's form (a number in a
plausible range, or one of the allowed names) and never at its value, which the hidden tests hold.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from ._core import FAIL, PASS, TODO

__all__ = ["run_results", "check_reading", "within", "ReadingError"]


class ReadingError(RuntimeError):
    """The run's saved results cannot be read for these parameters (missing, or of another run)."""


def run_results(notebook: str, namespace: Mapping[str, Any]) -> dict:
    """The saved results of ``notebook`` (e.g. ``"05_head_realignment"``) for the run that the
    parameters in ``namespace`` (a notebook's ``globals()``: ``profile``, ``seed``, ``run_dir``,
    ``dataset``) name, as the dict the notebook passed to ``ctx.save_results``.

    Raises :class:`ReadingError` when the file is missing (the message says how to make it) or holds
    another run's results (another profile, seed or merge method). Prints one line naming the file.
    """
    from ..course import DEFAULT_DATASET, default_run_dir

    profile, seed = namespace.get("profile", "cpu"), int(namespace.get("seed", 0))
    run_dir = namespace.get("run_dir") or ""
    folder = Path(run_dir) if run_dir else default_run_dir(profile, seed, namespace.get("dataset") or DEFAULT_DATASET)
    path = folder / "results" / f"{notebook}.json"
    if not path.is_file():
        raise ReadingError(
            f"{path} does not exist: this exercise reads the results of your run of {notebook} (profile "
            f"{profile}, seed {seed}). Run the notebook's lesson cells down to its 'Results' section first. "
            f"(Grading only the exercise cells needs a run of the same profile and seed: `make course "
            f"PROFILE={profile}`, or the grader's --run-dir, or --scope notebook.)")
    results = json.loads(path.read_text())
    asked = {"profile": profile, "seed": seed}
    if "merge_method" in namespace and "merge_method" in results:
        asked["merge_method"] = namespace["merge_method"]
    wrong = {k: (results.get(k), v) for k, v in asked.items() if k in results and results[k] != v}
    if wrong:
        raise ReadingError(f"{path} holds another run's results: "
                           + ", ".join(f"{k} {got!r} there, {want!r} here" for k, (got, want) in wrong.items())
                           + ". Re-run the notebook with these parameters, or set run_dir to the run you mean.")
    print(f"this run's results: {path} (profile {results.get('profile', profile)}, seed {results.get('seed', seed)})")
    return results


def check_reading(value: Any, what: str, *, unit: str = "", lo: float | None = None, hi: float | None = None,
                  choices: Sequence[Any] = (), numbers: bool | None = None, strict: bool = False) -> bool:
    """The form of a reading, never its value: ``value`` must be a number (int or float, not bool,
    finite; in ``[lo, hi]`` when they are given), or one of ``choices``, of the same type (strings, or
    ``True``/``False``). ``numbers``: whether a number is an answer (default: only when there are no
    ``choices``). Set bounds only where no run can go beyond them (a fraction of 0-1, not a Δm, which a
    tiny run can push past 100 %). ``None`` (the student copy's stub) is "not answered yet".

    Prints one line and returns True or False; ``strict=True`` raises ``AssertionError`` instead of
    returning False.
    """
    def verdict(ok: bool, msg: str) -> bool:
        print(msg)
        if not ok and strict:
            raise AssertionError(msg)
        return ok

    numeric = not choices if numbers is None else numbers
    if value is None:
        return verdict(False, f"{TODO} {what}: not answered yet: write your reading in place of `None`, then "
                              f"run the cell again")
    if any(type(value) is type(c) and value == c for c in choices):            # True is not 1 here
        return verdict(True, f"{PASS} answered: {what} (the value is checked when the exercise is graded)")
    allowed = ", ".join(repr(c) for c in choices)
    if isinstance(value, str):
        return verdict(False, f"{FAIL} {what}: {value!r} is not one of {allowed}" if choices else
                              f"{FAIL} {what}: expected a number, got the string {value!r}")
    if not numeric:
        return verdict(False, f"{FAIL} {what}: expected one of {allowed}, got {type(value).__name__} {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return verdict(False, f"{FAIL} {what}: expected a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        return verdict(False, f"{FAIL} {what}: got {value!r}, expected a finite number")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        return verdict(False, f"{FAIL} {what}: {value:g}{' ' + unit if unit else ''} is outside {span}: "
                              f"check the unit (a fraction, or percentage points?)")
    return verdict(True, f"{PASS} answered: {what} = {value:g}{' ' + unit if unit else ''} (the value is checked "
                         f"when the exercise is graded)")


def within(value: Any, expected: float, tol: float) -> bool:
    """True when ``value`` is a number within ``tol`` of ``expected`` (both in the same unit)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and abs(value - expected) <= tol)
