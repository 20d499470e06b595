"""Release copies for a class (``python -m simo_lite.assign``, ``make assignment``): :mod:`simo_lite.classroom.assign`."""
from __future__ import annotations

import sys

from .classroom import assign as _impl
from .classroom.assign import *  # noqa: F401,F403
from .classroom.assign import __all__, main  # noqa: F401


def __getattr__(name: str):
    return getattr(_impl, name)


if __name__ == "__main__":
    main(sys.argv[1:])
