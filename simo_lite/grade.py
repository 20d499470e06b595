"""The offline autograder (``python -m simo_lite.grade``, ``make grade``): :mod:`simo_lite.classroom.grade`."""
from __future__ import annotations

import sys

from .classroom import grade as _impl
from .classroom.grade import *  # noqa: F401,F403
from .classroom.grade import __all__, main  # noqa: F401


def __getattr__(name: str):
    return getattr(_impl, name)


if __name__ == "__main__":
    main(sys.argv[1:])
