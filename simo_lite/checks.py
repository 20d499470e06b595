"""Exercise auto-checks and the concept questions' check: ``simo_lite.classroom.checks``.

Kept as ``simo_lite.checks`` for the notebooks (``from simo_lite import checks``); see
:mod:`simo_lite.classroom.checks` for what a check prints and returns.
"""
from __future__ import annotations

from .classroom import checks as _impl
from .classroom.checks import *  # noqa: F401,F403
from .classroom.checks import __all__  # noqa: F401


def __getattr__(name: str):
    return getattr(_impl, name)
