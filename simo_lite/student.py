"""Student copies of the course notebooks: ``simo_lite.classroom.student``.

Kept as ``simo_lite.student`` for ``python -m simo_lite.student`` (``make student``); see
:mod:`simo_lite.classroom.student` for the markers, the options and what is never overwritten.
"""
from __future__ import annotations

import sys

from .classroom import student as _impl
from .classroom.student import *  # noqa: F401,F403
from .classroom.student import __all__, main  # noqa: F401


def __getattr__(name: str):
    return getattr(_impl, name)


if __name__ == "__main__":
    main(sys.argv[1:])
