"""The concept questions: their text, options and explanations, read from ``notebooks/questions.yaml``.

The file lives next to the notebooks, not in the package, and holds no right answers: the key of
each question is written only in its source notebook's hidden test, e.g.::

    ok_qK = checks.answer("NN-qK", answer_qK, options="abc")  # the public check: a valid letter?
    ### BEGIN HIDDEN TESTS
    assert checks.answer("NN-qK", answer_qK, key="<letter>"), "NN-qK: wrong or missing answer"
    ### END HIDDEN TESTS

so nothing importable from ``simo_lite`` can reveal an answer. Release and student copies leave the
hidden tests out; the grader (``python -m simo_lite.grade``) restores them from the source notebooks.

Where the file is looked for, first match wins: the ``SIMO_LITE_QUESTIONS`` environment variable,
``questions.yaml`` in the working directory (a notebook's folder), in its parent (``notebooks/student``
and ``notebooks/release`` are inside ``notebooks/``), then the repository's ``notebooks/``. Without the
file :func:`answer` still checks the format against the ``options`` it is given.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

__all__ = ["answer", "question", "questions", "questions_file", "normalise", "QUESTIONS_ENV"]

QUESTIONS_ENV = "SIMO_LITE_QUESTIONS"
_REPO_FILE = Path(__file__).resolve().parents[2] / "notebooks" / "questions.yaml"
_QID = re.compile(r"^\d\d-q\d+$")
PASS, FAIL, TODO = "✓", "✗", "…"
_cache: dict[tuple, dict] = {}


def questions_file() -> Path | None:
    """The questions file in use (see the module's docstring), or None when there is none."""
    env = os.environ.get(QUESTIONS_ENV)
    if env:
        return Path(env) if Path(env).is_file() else None
    cwd = Path.cwd()
    for candidate in (cwd / "questions.yaml", cwd.parent / "questions.yaml", _REPO_FILE):
        if candidate.is_file():
            return candidate
    return None


def questions(path: str | Path | None = None) -> dict[str, dict]:
    """{question id: {"notebook", "question", "options", "explanations"}}, read from the questions file.

    Empty when no file is found. Raises ValueError on a malformed file (an explanation per option is
    required, and no ``answer`` field is allowed: the keys live in the notebooks' hidden tests)."""
    path = Path(path) if path is not None else questions_file()
    if path is None:
        return {}
    stat = path.stat()
    cache_key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if cache_key not in _cache:
        import yaml
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        flat = {}
        for notebook, qs in raw.items():
            for qid, q in (qs or {}).items():
                where = f"{path.name}: {notebook}: {qid}"
                if not _QID.match(str(qid)) or not str(notebook).startswith(str(qid)[:2]):
                    raise ValueError(f"{where}: a question id is 'NN-qK', NN the notebook's number")
                if "answer" in q or "key" in q:
                    raise ValueError(f"{where}: the right answer does not belong in this file; it lives in the "
                                     f"question's hidden test in the notebook")
                options, explanations = q.get("options") or {}, q.get("explanations") or {}
                if not q.get("question") or len(options) < 2 or set(options) != set(explanations):
                    raise ValueError(f"{where}: needs 'question', two or more 'options' and an 'explanations' "
                                     f"entry for each option")
                flat[str(qid)] = {"notebook": str(notebook), "question": str(q["question"]),
                                  "options": {str(k): str(v) for k, v in options.items()},
                                  "explanations": {str(k): str(v) for k, v in explanations.items()}}
        _cache.clear()
        _cache[cache_key] = flat
    return _cache[cache_key]


def normalise(choice: object) -> str | None:
    """``"(B) "`` -> ``"b"``; None stays None; anything that is not a string -> its repr, never an option."""
    if choice is None:
        return None
    if not isinstance(choice, str):
        return repr(choice)
    return choice.strip().lower().strip("()").strip()


def question(qid: str) -> None:
    """Print a concept question and its options (from the questions file)."""
    q = questions().get(qid)
    if q is None:
        raise KeyError(f"unknown question {qid!r}" + ("" if questions_file() else " (no questions file found)"))
    print(f"{qid}: {q['question']}")
    for k, v in q["options"].items():
        print(f"  ({k}) {v}")


def answer(qid: str, choice: object, options: str | Sequence[str] | None = None, key: str | None = None,
           strict: bool = False) -> bool:
    """Check the answer ``choice`` ("a", "b", ...) to the concept question ``qid``; print what it found.

    Without ``key`` (the public check, in every copy of a notebook) only the format is checked:
    ``None`` prints "not answered yet", a letter that is not one of ``options`` (a string such as
    ``"abc"``, or the options in the questions file) says so; a valid letter is recorded and True is
    returned. With ``key`` (the hidden test of a source notebook) it prints whether the answer is
    right and the explanation of every option, and returns whether it is right. ``strict`` raises
    AssertionError instead of returning False.
    """
    if not isinstance(qid, str) or not _QID.match(qid):
        raise KeyError(f"unknown question {qid!r}: question ids look like 'NN-qK' (notebook NN, question K)")
    known = questions()
    q = known.get(qid)
    if q is None and known:
        raise KeyError(f"unknown question {qid!r}; known: {', '.join(known)}")
    letters = list(options) if options else (list(q["options"]) if q else [])
    shown = ", ".join(f'"{k}"' for k in letters) if letters else "a letter"
    c = normalise(choice)
    if c is None:
        print(f"{TODO} {qid}: not answered yet: set your answer to one of {shown} and run the cell again")
        ok = False
    elif (letters and c not in letters) or (not letters and not re.fullmatch(r"[a-z]", c)):
        print(f"{FAIL} {qid}: {choice!r} is not an option; choose one of {shown}")
        ok = False
    elif key is None:
        text = f": {q['options'][c]}" if q and c in q["options"] else ""
        print(f"• {qid}: answer ({c}) recorded{text} (it is marked when your notebook is graded)")
        ok = True
    else:
        ok = c == normalise(key)
        text = f" {q['options'][c]}" if q and c in q["options"] else ""
        print(f"{PASS if ok else FAIL} {qid}: {'right' if ok else 'not quite'}: ({c}){text}")
        for k, why in (q["explanations"].items() if q else ()):
            print(f"  ({k}){' [the answer]' if k == normalise(key) else ''} {why}")
    if strict and not ok:
        raise AssertionError(f"{qid}: wrong or missing answer {choice!r}")
    return ok
