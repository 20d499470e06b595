"""Auto-checks for the course exercises, one module per notebook, and the concept questions' check.

Every exercise in a notebook is a function the learner writes; ``check_<name>(fn)`` calls it on small
random or hand-made inputs, compares the result with the tested implementation in the package
(``simo_lite.merging``, ``metrics``, ``diagnostics``, ``scenes``, ``models``, ``realign``) and prints
one line:

- ``✓ passed: <exercise>`` when every case agrees;
- ``… not implemented yet: ...`` when the function still raises ``NotImplementedError``;
- ``✗ <exercise>: <what is wrong>`` otherwise: wrong type, shape or dtype, or the first entry whose
  value differs, with the input case that produced it.

Checks return True or False and never raise on a wrong answer, so a student notebook keeps running;
pass ``strict=True`` to raise ``AssertionError`` instead (for tests and CI). A few exercises have no
package counterpart (the cost ratios of notebook 07); their reference is the formula written in the
check, stated in its docstring. The checks of notebook NN are in ``simo_lite.classroom.checks.nbNN``.

These are the *public* checks, the same in every copy of a notebook. Each exercise's test cell in a
source notebook adds hidden tests (other inputs, edge cases) that release and student copies leave
out and the grader restores (``simo_lite.classroom.grade``).

Reading exercises (the learner interprets a number of their own run): :func:`run_results` loads the
run's saved results, :func:`check_reading` checks the answer's form, the hidden tests its value with
:func:`within` (``simo_lite.classroom.checks.readings``).

Concept questions: :func:`answer` checks that an answer is one of the options; the right answer is
not in this package (it is in the source notebook's hidden test, see ``simo_lite.classroom.questions``).

    >>> from simo_lite import checks
    >>> checks.check_linear_cka(my_cka)          # doctest: +SKIP
    ✓ passed: linear CKA
"""
from __future__ import annotations

from typing import Callable

from ..questions import answer, question, questions
from .readings import ReadingError, check_reading, run_results, within
from .nb00 import *  # noqa: F401,F403
from .nb01 import *  # noqa: F401,F403
from .nb02 import *  # noqa: F401,F403
from .nb03 import *  # noqa: F401,F403
from .nb04 import *  # noqa: F401,F403
from .nb05 import *  # noqa: F401,F403
from .nb06 import *  # noqa: F401,F403
from .nb07 import *  # noqa: F401,F403
from .nb08 import *  # noqa: F401,F403
from . import nb00, nb01, nb02, nb03, nb04, nb05, nb06, nb07, nb08

_BY_NOTEBOOK = {m.__name__[-2:]: m for m in (nb00, nb01, nb02, nb03, nb04, nb05, nb06, nb07, nb08)}

CHECKS: dict[str, Callable] = {n[len("check_"):]: getattr(m, n) for m in _BY_NOTEBOOK.values() for n in m.__all__}
"""Every check by exercise name, e.g. ``CHECKS["linear_cka"]``."""

NOTEBOOK_OF: dict[str, str] = {n[len("check_"):]: nn for nn, m in _BY_NOTEBOOK.items() for n in m.__all__}
"""The notebook number ("03") of every exercise name."""

__all__ = ["answer", "question", "questions", "CHECKS", "NOTEBOOK_OF", "run_results", "check_reading", "within",
           "ReadingError",
           *[n for m in _BY_NOTEBOOK.values() for n in m.__all__]]


def __getattr__(name: str):
    if name == "QUESTIONS":             # the old name: the questions (without answers), read from the file
        return questions()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
