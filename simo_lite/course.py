"""The course's notebook set-up and runner: :mod:`simo_lite.classroom.course`.

Kept as ``simo_lite.course`` for the notebooks (``from simo_lite import course``) and the shell
(``python -m simo_lite.course run``, ``make course``); the code is course tooling and lives in
:mod:`simo_lite.classroom`, apart from the library.
"""
from __future__ import annotations

from .classroom import course as _impl
from .classroom.course import *  # noqa: F401,F403
from .classroom.course import __all__, cli, main  # noqa: F401


def __getattr__(name: str):
    return getattr(_impl, name)


if __name__ == "__main__":
    cli()
