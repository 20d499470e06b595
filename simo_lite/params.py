"""The notebooks' parameters, one validator each: :mod:`simo_lite.classroom.params`.

Kept as ``simo_lite.params`` (``simo_lite.params.check``, ``simo_lite.params.PARAMETERS``); the code
is course tooling and lives in :mod:`simo_lite.classroom`, apart from the library.
"""
from __future__ import annotations

from .classroom import params as _impl
from .classroom.params import *  # noqa: F401,F403


def __getattr__(name: str):
    return getattr(_impl, name)
