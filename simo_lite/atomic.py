"""The one atomic writer of the project (no torch: the course runner and the benchmarks use it too).

:func:`atomic_write` fills a uniquely named temporary file (``mkstemp``: ``.<name>.<random>.tmp``) in
the target's folder, fsyncs it and moves it into place with ``os.replace``. A reader, another
process writing the same path, or a run interrupted half-way (Ctrl-C, a kill) sees the old file or
the new one, never a part, and no temporary file is left behind. :mod:`simo_lite.store` builds the
artifact store's tensor and JSON writes on it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write", "write_text", "write_bytes", "write_json", "copy_file", "copy_tree"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a unique temporary file in the same folder,
    which is then fsynced and moved into place with ``os.replace``. Creates the parent folder.
    Returns ``path``. On any error (or Ctrl-C) the temporary file is removed and the old ``path`` is
    left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)       # mkstemp creates 0600; give the usual file permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return atomic_write(path, write)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    return atomic_write(path, write)


def write_json(path: str | os.PathLike, obj: Any, **dumps_kw: Any) -> Path:
    """Atomically write ``obj`` as JSON (``indent=1``, non-JSON numbers such as numpy floats as floats,
    unless ``dumps_kw`` says otherwise), with a final newline."""
    kw = {"indent": 1, "default": float, **dumps_kw}
    return write_text(path, json.dumps(obj, **kw) + "\n")


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy the file ``src`` to ``dst`` atomically (:func:`atomic_write`): a reader sees the old ``dst``
    or the whole copy."""
    import shutil
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def copy_tree(src: str | os.PathLike, dst: str | os.PathLike, ignore: Callable | None = None) -> Path:
    """Copy the folder ``src`` to ``dst`` through a hidden sibling, then rename it into place, replacing an
    older ``dst``: a reader sees the old folder or the whole new one. ``ignore``: as ``shutil.copytree``'s."""
    import shutil
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, tmp, ignore=ignore)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst
