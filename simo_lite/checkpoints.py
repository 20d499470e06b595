"""Safetensors checkpoints with a config hash and atomic writes (never pickles).

A checkpoint is one ``.safetensors`` file whose metadata holds ``config`` (JSON) and ``config_hash``.
Writes go to a temporary file in the same folder and are moved into place with ``os.replace``, so an
interrupted run leaves either the old file or the new one, never half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

__all__ = ["config_hash", "state_fingerprint", "save_tensors", "load_tensors", "read_metadata", "CheckpointError"]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or was written for another configuration."""


def config_hash(config: dict) -> str:
    """Stable 12-hex-digit hash of a JSON-serialisable config (key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """sha256 (first 16 hex digits) of a state dict's names, shapes, dtypes and bytes: same weights, same id."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}:{tuple(state[k].shape)}:{v.dtype}".encode())
        h.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:16]


def save_tensors(tensors: dict[str, torch.Tensor], path, metadata: dict[str, str] | None = None) -> Path:
    """Atomically write ``tensors`` (made contiguous, on CPU) to ``path`` as safetensors."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(clean, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_metadata(path) -> dict[str, str]:
    """The string metadata stored in a safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e


def load_tensors(path, expect_hash: str | None = None, device="cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file; if ``expect_hash`` is given, the stored config hash must match."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if expect_hash is not None:
        found = read_metadata(path).get("config_hash")
        if found != expect_hash:
            raise CheckpointError(f"checkpoint {path} has config hash {found}, expected {expect_hash}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
