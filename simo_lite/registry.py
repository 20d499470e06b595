"""Registries: the named things people extend (merge methods, fixes, tasks, datasets).

A :class:`Registry` is a ``dict`` from name to spec that says what is valid when a name is wrong::

    >>> from simo_lite.merging import MERGE_METHODS
    >>> MERGE_METHODS["tis"]
    Traceback (most recent call last):
    UnknownNameError: unknown merge method 'tis'; valid: zeroshot, average, ta, ties, dare, consensus

Iterating a registry gives its names in registration order, so ``", ".join(registry)`` and
``name in registry`` work as on a tuple of names.
"""
from __future__ import annotations

from typing import Generic, Iterator, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that is not registered; the message lists the valid names.

    Both a ``KeyError`` (it is a failed lookup) and a ``ValueError`` (it is a bad argument), so
    callers may catch either."""

    def __str__(self) -> str:          # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class Registry(dict, Generic[T]):
    """``{name: spec}`` with :meth:`register` and lookups whose errors name the valid values.

    Args:
        kind: what the names are, for messages ("merge method", "dataset", ...).
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str, spec: T, *, replace: bool = False) -> T:
        """Add ``spec`` under ``name``; re-registering a name needs ``replace=True``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered; pass replace=True to replace it")
        self[name] = spec
        return spec

    def unregister(self, name: str) -> T:
        """Remove ``name`` (a registered name) and return its spec."""
        spec = self[name]
        del self[name]
        return spec

    def __missing__(self, name):
        raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {', '.join(self) or '(none registered)'}")

    def __iter__(self) -> Iterator[str]:
        return super().__iter__()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self)})"
