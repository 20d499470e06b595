"""Progress bars: one rule for when they show, one helper that draws them (``tqdm.auto``).

The rule (:func:`progress_enabled`): bars are on unless the caller passes ``show=False``, and always
off when the environment variable ``CI`` or ``SIMO_LITE_QUIET`` is set (tests, CI, quiet runs)::

    for step in progress(range(steps), "training", show=show_progress):
        ...

No torch and no tqdm import here until a bar is drawn.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, TypeVar

__all__ = ["progress_enabled", "progress", "QUIET_VARIABLES"]

T = TypeVar("T")

# any of these set (to a non-empty value) turns every bar off
QUIET_VARIABLES = ("CI", "SIMO_LITE_QUIET")


def progress_enabled(show: bool | None = None) -> bool:
    """Whether to draw a bar: on unless ``show`` is False, and off whenever CI or SIMO_LITE_QUIET is set.

    ``show=None`` means "the default", which is on."""
    if any(os.environ.get(v) for v in QUIET_VARIABLES):
        return False
    return True if show is None else bool(show)


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, *, show: bool | None = None,
             min_total: int = 0, **tqdm_kwargs: Any) -> Iterable[T]:
    """``iterable`` wrapped in a ``tqdm.auto`` bar when :func:`progress_enabled` says so, else as it is.

    Args:
        desc: the bar's label.
        total: the number of items (default ``len(iterable)`` when it has one).
        show: the caller's wish (a ``progress`` / ``show_progress`` argument); None = on.
        min_total: no bar for ``total`` below this (a few items are not worth a bar).
        **tqdm_kwargs: passed to tqdm (``initial``, ``leave``, ``unit``, ...).

    The result is the tqdm object when a bar is drawn (``hasattr(it, "set_postfix")``), so callers
    can show a running value."""
    if not progress_enabled(show):
        return iterable
    n = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    if min_total and n is not None and n < min_total:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, **tqdm_kwargs)
