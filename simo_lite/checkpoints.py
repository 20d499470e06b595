"""Safetensors checkpoints with a config hash and atomic writes (never pickles).

A checkpoint is one ``.safetensors`` file whose metadata holds ``config_hash`` (and usually the
``config`` as JSON). The implementation lives in :mod:`simo_lite.store` (the run directory's
artifact store, which also writes JSON records); this module keeps the checkpoint functions under
their original names:

* :func:`save_tensors` writes to a unique temporary file in the same folder (``mkstemp``) and moves
  it into place with ``os.replace``, so an interrupted run leaves either the old file or the new
  one, never half a file, and concurrent writers never collide. The header is canonical (metadata
  sorted), so the same tensors and metadata give the same bytes in every process.
* :func:`load_tensors` / :func:`read_metadata` raise :class:`CheckpointError` naming the file for a
  missing, truncated or foreign file, or a config hash other than the expected one.
* :func:`config_hash` (12 hex digits of a JSON config) and :func:`state_fingerprint` (16 hex digits
  of a state dict's names, shapes, dtypes and bytes) name checkpoints.
"""
from __future__ import annotations

from .store import CheckpointError, atomic_write, config_hash, load_tensors, read_metadata, save_tensors, sha256_file, \
    state_fingerprint

__all__ = ["config_hash", "state_fingerprint", "save_tensors", "load_tensors", "read_metadata", "CheckpointError",
           "atomic_write", "sha256_file"]
