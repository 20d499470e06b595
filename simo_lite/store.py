"""The artifact store of a run directory: one key scheme, one place for paths, atomic writes.

Every expensive result (foundation, experts, MTL, alpha sweeps, realigned models, table rows) is an
*artifact*: a file (or a folder of files) whose name ends in its **key**. The key is a hash of what
the artifact is, how it was made and the keys of what it was computed from::

    key = config_hash({"kind": kind, "config": config, "upstream": {name: key, ...}})

so a change anywhere upstream changes every key downstream of it, and a stale file is never served:

    data ──> foundation ──> expert-<task> / mtl-<tasks> ──> alpha-<method> ──> merge-<method>
                                                                      └──> realign ──> row-<name>

* ``data``: :func:`data_key`, the sha256 fingerprint of the loaded split tensors (names, shapes,
  dtypes and bytes, :func:`state_fingerprint`), so replacing the files of a real dataset (same
  counts, other pixels) or a new renderer version gives a new key. Cost: one sha256 pass over the
  data, about 1.2 s per GB on one core, once per tensor object (memoised in the process).
* ``foundation``: :func:`foundation_key`, from the foundation's config hash and the fingerprint of
  its weights (a pretrained-in-the-run-dir foundation is additionally checked against the key of
  the data it was pretrained on; the shipped one is accepted by config hash, it is a published file).
* experts and MTL: recipe config (including its ``version``) + ``data`` + ``foundation``.
* alpha sweeps: method, grid, settings + every expert's key (+ ``data`` + ``foundation``).
* merged models: method + the alpha sweep's key; realignment: the merged weights' fingerprint and
  the validation split; rows: row settings + the keys of everything they use.

Reading an artifact checks it: a missing file, a file whose stored key differs from its name, a
truncated or invalid file, a missing field, tensors of the wrong shape: each is a **cache miss**,
logged on the ``simo_lite.store`` logger as one line naming the artifact and the reason, e.g.
``recomputing row seg+depth-ta: key changed: upstream expert-seg changed`` or
``recomputing alpha seg+depth-ta: corrupt file alphas/seg+depth-ta-1a2b.json: Expecting value ...``.
"not found" is logged at INFO, stale and corrupt files at WARNING (shown without any logging set-up).
The caller then recomputes and overwrites the file. Run directories made before this store simply
miss (their names carry other keys) and are recomputed, the reason logged.

Writes are atomic (:func:`atomic_write`): a uniquely named temporary file (``mkstemp``) in the
target's folder, flushed and fsynced, then ``os.replace``-d into place. Two processes writing the
same artifact never collide and a reader sees the old file or the new one, never half of one.
Safetensors files get a canonical header (metadata sorted by key): the safetensors writer orders
metadata in a per-process random order, which made identical runs give different bytes.

Thread count (``torch.get_num_threads()``): **recorded, not keyed**. Every artifact header stores
it; loading an artifact made with another thread count logs an INFO note. It is not part of the key
because the same computation on 1 or 2 threads differs only by float rounding (~6e-7 in the
weights), and keying it would make a learner's cached run directory useless after changing
``OMP_NUM_THREADS``. Wall-clock times are recorded in records and rows only, never in safetensors
files, so identical runs give byte-identical checkpoints; :func:`without_wall_clock` drops those
fields for comparing JSON results (``python -m simo_lite.store compare RUN_A RUN_B``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from .atomic import atomic_write, copy_file, write_text
from .types import Device

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

__all__ = ["Artifact", "Store", "ArtifactError", "CheckpointError", "artifact_key", "config_hash",
           "fingerprint_by_recipe", "first_rows", "state_fingerprint", "data_key", "foundation_key", "atomic_write",
           "write_text", "write_json",
           "read_json_file", "save_tensors", "load_tensors", "read_metadata", "without_wall_clock",
           "compare_runs", "sha256_file", "WALL_CLOCK_FIELDS", "log"]

log = logging.getLogger("simo_lite.store")

STORE_VERSION = 1
# fields that hold wall-clock seconds (they differ between identical runs)
WALL_CLOCK_FIELDS = ("wall_s", "wall_s_total", "elapsed_s", "probe_wall_s")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or was written for another configuration."""


class ArtifactError(RuntimeError):
    """An artifact file is missing, unreadable, or does not hold what its name says."""


# ------------------------------------------------------------------------------------------------
# hashing
# ------------------------------------------------------------------------------------------------
# artifact kinds stored under one name with many keys at once (the realignments of every merge, every budget)
MANY_PER_NAME = frozenset({"realign"})


def config_hash(config: Any) -> str:
    """Stable 12-hex-digit hash of a JSON-serialisable config (key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw bytes of a tensor (CPU, contiguous), without a copy when it already is."""
    v = t.detach().cpu().contiguous().reshape(-1)
    return memoryview(v.view(torch.uint8).numpy()) if v.numel() else memoryview(b"")


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """sha256 (first 16 hex digits) of a state dict's names, shapes, dtypes and bytes: same weights, same id."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k]
        h.update(f"{k}:{tuple(v.shape)}:{v.detach().reshape(-1).dtype}".encode())
        h.update(_tensor_bytes(v))
    return h.hexdigest()[:16]


_FP_MEMO: dict[int, tuple] = {}     # id(tensor) -> (weakref, (_version, shape, name), fingerprint)


def _tensor_fingerprint(name: str, t: torch.Tensor) -> str:
    """:func:`state_fingerprint` of one tensor, memoised while the tensor lives and is unmodified; the
    recipe fingerprint of :func:`fingerprint_by_recipe` when one was registered for it (under ``name``)."""
    hit = _FP_MEMO.get(id(t))
    if hit is not None and hit[0]() is t and hit[1] in ((t._version, tuple(t.shape), name),
                                                         (t._version, tuple(t.shape), None)):
        return hit[2]
    return _remember(t, name, state_fingerprint({name: t}))


def _remember(t: torch.Tensor, name: str | None, fp: str) -> str:
    """Memoise ``fp`` for ``t`` under ``name`` (None: a recipe fingerprint, valid under any name, e.g. Scenes'
    ``autoencoder`` target, which is the ``image`` tensor itself)."""
    try:
        _FP_MEMO[id(t)] = (weakref.ref(t), (t._version, tuple(t.shape), name), fp)
    except TypeError:
        pass
    if len(_FP_MEMO) > 4096:        # drop entries of freed tensors
        for k in [k for k, e in _FP_MEMO.items() if e[0]() is None]:
            del _FP_MEMO[k]
    return fp


def fingerprint_by_recipe(t: torch.Tensor, name: str, recipe: dict) -> torch.Tensor:
    """Let ``t`` (stored under ``name`` in a split) be fingerprinted by the recipe that made it, not its bytes.

    Data that simo_lite generates (Scenes) is a deterministic function of its parameters, but its floats
    differ in the last bits between CPUs (vectorised ``exp``/``sin`` kernels round differently), so a
    byte hash gives every machine its own data key and no shipped model would match. ``recipe``: every
    parameter that changes the values (JSON-serialisable), including the generator's version. Holds
    while ``t`` lives and is not modified in place (then its bytes count again). Returns ``t``."""
    fp = hashlib.sha256(json.dumps({"recipe": recipe, "name": name, "shape": list(t.shape), "dtype": str(t.dtype)},
                                   sort_keys=True, default=str).encode()).hexdigest()[:16]
    _remember(t, None, fp)
    return t


def first_rows(split: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """``{name: t[:n]}``: the first ``n`` samples of a split, each fingerprinted as "the first ``n`` rows of"
    its source tensor (so a subset of recipe-fingerprinted data keeps a machine-independent key); a
    tensor of at most ``n`` rows is returned itself."""
    return {k: v if len(v) <= n else fingerprint_by_recipe(v[:n], k, {"first_rows": n, "of": _tensor_fingerprint(k, v)})
            for k, v in split.items()}


def artifact_key(kind: str, config: dict, upstream: dict[str, str] | None = None) -> str:
    """The key of an artifact: hash of its kind, its own config and the keys it was computed from."""
    return config_hash({"kind": kind, "config": config, "upstream": dict(sorted((upstream or {}).items()))})


def data_key(data: dict, splits: Sequence[str] = ("train", "val", "test")) -> str:
    """Key of loaded data: {split: {name: tensor}} (or one split {name: tensor}) -> 12 hex digits.

    A hash of every tensor's name, shape, dtype and bytes (sha256), split by split; only the
    ``splits`` present are used (so an ``Experiment``'s extra ``val_realign`` view does not count)."""
    if data and all(torch.is_tensor(v) for v in data.values()):
        data = {"split": data}
        splits = ("split",)
    fps = {s: config_hash(_split_fingerprints(data[s])) for s in splits if s in data}
    if not fps:
        raise ValueError(f"data_key: none of the splits {splits} in the data (found {sorted(data)})")
    return artifact_key("data", {"splits": sorted(fps)}, fps)


def _split_fingerprints(split: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``{name: fingerprint}`` of one split; a name bound to a tensor already fingerprinted (Scenes'
    ``autoencoder`` target is the ``image`` tensor itself) is recorded as an alias, not hashed twice."""
    out: dict[str, Any] = {}
    seen: dict[int, str] = {}
    for k, v in sorted(split.items()):
        if id(v) in seen:
            out[k] = {"alias_of": seen[id(v)]}
        else:
            seen[id(v)] = k
            out[k] = _tensor_fingerprint(k, v)
    return out


def foundation_key(config_hash_: str, state: dict[str, torch.Tensor]) -> str:
    """Key of a foundation encoder: its config hash and the fingerprint of its weights."""
    return artifact_key("foundation", {"config_hash": config_hash_, "weights": state_fingerprint(state)})


def _threads() -> int:
    return int(torch.get_num_threads())


# ------------------------------------------------------------------------------------------------
# atomic writes
# ------------------------------------------------------------------------------------------------
# atomic_write and write_text: simo_lite.atomic (the one writer), re-exported here


def _dumps(obj) -> str:
    return json.dumps(obj, indent=1, default=float)


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (non-JSON numbers such as numpy floats as floats)."""
    return write_text(path, _dumps(obj) + "\n")


def read_json_file(path: str | Path) -> Any:
    """Parse a JSON file; any failure raises :class:`ArtifactError` naming the file and the error."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ArtifactError(f"file not found: {path}") from e
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ArtifactError(f"corrupt file {path}: {type(e).__name__}: {e}") from e


# ------------------------------------------------------------------------------------------------
# safetensors
# ------------------------------------------------------------------------------------------------
def _canonical_header(path) -> None:
    """Rewrite a safetensors header in place with sorted metadata (same length, same tensors)."""
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        meta = header.pop("__metadata__", None)
        ordered = {} if meta is None else {"__metadata__": dict(sorted(meta.items()))}
        ordered.update(sorted(header.items(), key=lambda kv: (kv[1]["data_offsets"][0], kv[0])))
        raw = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        if len(raw) <= n:
            f.seek(8)
            f.write(raw + b" " * (n - len(raw)))
            return
        f.seek(8 + n)
        body = f.read()
    pad = (-(8 + len(raw))) % 8                 # keep the data 8-byte aligned
    with open(path, "wb") as f:
        f.write((len(raw) + pad).to_bytes(8, "little") + raw + b" " * pad + body)


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> Path:
    """Atomically write ``tensors`` (made contiguous, on CPU) to ``path`` as safetensors.

    ``metadata`` values are stored as strings; the header is canonical (sorted), so the same
    tensors and metadata always give the same bytes."""
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {str(k): str(v) for k, v in sorted((metadata or {}).items())}

    def write(tmp):
        save_file(clean, tmp, metadata=meta)
        _canonical_header(tmp)
    return atomic_write(path, write)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e


def load_tensors(path: str | Path, expect_hash: str | None = None, device: Device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file; if ``expect_hash`` is given, the stored ``config_hash`` must match."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if expect_hash is not None:
        found = read_metadata(path).get("config_hash")
        if found != expect_hash:
            raise CheckpointError(f"checkpoint {path} has config hash {found}, expected {expect_hash}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e


# ------------------------------------------------------------------------------------------------
# artifacts
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    """What identifies a stored result: ``kind`` ("expert", "row", ...), a readable ``name`` (the
    file stem before the key), its own ``config`` and the keys of its inputs, ``upstream``
    ({name: key}, e.g. {"data": ..., "foundation": ..., "expert-seg": ...})."""
    kind: str
    name: str
    config: dict = field(default_factory=dict)
    upstream: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """12 hex digits (:func:`artifact_key`) of the kind, the config and the upstream keys."""
        return artifact_key(self.kind, self.config, self.upstream)

    def header(self) -> dict:
        """Stored with the artifact: what it is, its key and inputs, and the thread count that made it."""
        return {"store": STORE_VERSION, "kind": self.kind, "name": self.name, "key": self.key,
                "config": self.config, "upstream": dict(sorted(self.upstream.items())), "threads": _threads()}

    def metadata(self) -> dict[str, str]:
        """Safetensors metadata of the artifact's tensor files: ``config_hash`` (= key) and the header."""
        return {"config_hash": self.key, "artifact": json.dumps(self.header(), sort_keys=True, default=str)}


def _flat(d, prefix="") -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def explain_change(old: dict | None, new: Artifact) -> str:
    """Why an artifact's key changed, from the header stored with an older version of it."""
    if not isinstance(old, dict) or "upstream" not in old or "config" not in old:
        return "key changed: no key chain stored (made by an older simo_lite)"
    ups = sorted(n for n in set(old["upstream"]) | set(new.upstream)
                 if old["upstream"].get(n) != new.upstream.get(n))
    a, b = _flat(old["config"]), _flat(json.loads(json.dumps(new.config, default=str)))
    cfg = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    parts = []
    if ups:
        parts.append("upstream " + ", ".join(ups) + " changed")
    if cfg:
        shown = [f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in cfg[:3]]
        parts.append("config " + ", ".join(shown) + (f" and {len(cfg) - 3} more" if len(cfg) > 3 else "")
                     + " changed")
    if old.get("kind") != new.kind:
        parts.append(f"kind {old.get('kind')} -> {new.kind}")
    return "key changed: " + ("; ".join(parts) if parts else "key scheme changed")


def _stored_header(path: Path) -> dict | None:
    """The artifact header stored in a .json file, a .safetensors file or a model folder."""
    try:
        if path.is_dir():
            path = path / "record.json"
        if path.suffix == ".safetensors":
            h = read_metadata(path).get("artifact")
            return json.loads(h) if h else None
        obj = read_json_file(path)
        return obj.get("artifact") if isinstance(obj, dict) else None
    except (ArtifactError, CheckpointError, ValueError, OSError):
        return None


class Store:
    """The artifacts of one run directory ``root``: paths, validated reads, atomic writes.

    Layout (``<name>-<key>`` everywhere; the names keep the run directory readable)::

        foundation-<config hash>.safetensors (+ .json record)   the course's pretrained foundation
        models/<expert-seg|mtl-seg+depth>-<key>/                 encoder + heads + record.json
        alphas/<tasks>-<method>-<key>.json                       alpha sweeps (validation metrics)
        rows/<tasks>-<row>-<key>.json                            results-table rows
        realign/repr-<kind>-r<rank>-<key>.safetensors (+ .json)  representation-realigned models
        results/                                                 tables (Markdown + JSON)
    """

    def __init__(self, root):
        self.root = Path(root)

    # -- paths: the one place that names files -----------------------------------------------------
    def path(self, folder: str, art: Artifact, suffix: str = ".json") -> Path:
        """``root/folder/<name>-<key><suffix>`` (``folder`` "" for the root itself)."""
        return (self.root / folder if folder else self.root) / f"{art.name}-{art.key}{suffix}"

    def model_dir(self, art: Artifact) -> Path:
        """``root/models/<name>-<key>``: the folder of a model artifact (encoder, heads, record.json)."""
        return self.root / "models" / f"{art.name}-{art.key}"

    def foundation_path(self, config_hash_: str) -> Path:
        """``root/foundation-<config hash>.safetensors``: the run's own pretrained foundation."""
        return self.root / f"foundation-{config_hash_}.safetensors"

    def results_dir(self) -> Path:
        """``root/results``: the tables (Markdown + JSON)."""
        return self.root / "results"

    # -- logging -----------------------------------------------------------------------------------
    def _rel(self, path) -> str:
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def miss(self, art: Artifact, reason: str, level: int | None = None) -> None:
        """Log one line: which artifact is recomputed and why: INFO when it was never made, WARNING when a
        stored one of the same name has another key or is damaged; a kind of :data:`MANY_PER_NAME` (several
        keys of one name live side by side, e.g. the realignments of several merges) logs a key change at
        INFO too."""
        if level is None:
            level = (logging.INFO if reason == "not found" or (art.kind in MANY_PER_NAME and "key changed" in reason)
                     else logging.WARNING)
        log.log(level, "recomputing %s %s: %s", art.kind, art.name, reason)

    def why_missing(self, art: Artifact, path: Path) -> str:
        """"not found", or how the key differs from the newest sibling ``<name>-<other key>``."""
        path = Path(path)
        suffix = "".join(path.suffixes) if path.suffix in (".json", ".safetensors") else ""
        pattern = re.compile(rf"^{re.escape(art.name)}-[0-9a-f]{{12}}{re.escape(suffix)}$")
        try:
            siblings = [p for p in path.parent.iterdir() if pattern.match(p.name) and p != path]
        except OSError:
            return "not found"
        if not siblings:
            return "not found"
        newest = max(siblings, key=lambda p: p.stat().st_mtime_ns)
        return explain_change(_stored_header(newest), art) + f" (was {newest.name})"

    def note_threads(self, art: Artifact, header: dict | None, path: str | Path) -> None:
        """Log (INFO) when the artifact at ``path`` was made with another torch thread count than now
        (recorded in its ``header``, not part of its key)."""
        made = (header or {}).get("threads")
        if made is not None and made != _threads():
            log.info("loading %s %s made with %s threads (now %s; recorded, not keyed): %s", art.kind, art.name,
                     made, _threads(), self._rel(path))

    # -- JSON artifacts ----------------------------------------------------------------------------
    def read_json(self, path: str | Path, art: Artifact | None = None, require: Sequence[str] = (),
                  unit: str | Path | None = None, quiet: bool = False) -> dict | None:
        """The payload of a JSON artifact, or None (a cache miss, logged) when it is missing, not
        valid JSON, not an object, lacks a ``require``-d field, or stores another key than ``art``'s.

        ``unit``: the path whose siblings tell why it is missing (a model folder for its record).
        ``quiet``: log a missing file at DEBUG only (an optional stage such as a probe checkpoint).
        The payload is returned without its ``artifact`` header."""
        path = Path(path)
        shown = art or Artifact("file", self._rel(path))
        if not path.exists():
            reason = self.why_missing(art, Path(unit or path)) if art is not None else "not found"
            self.miss(shown, reason, logging.DEBUG if quiet and reason == "not found" else None)
            return None
        try:
            obj = read_json_file(path)
            if not isinstance(obj, dict):
                raise ArtifactError(f"corrupt file {path}: a JSON {type(obj).__name__}, expected an object")
            missing = [k for k in require if k not in obj]
            if missing:
                raise ArtifactError(f"corrupt file {path}: missing field(s) {missing}")
            header = obj.get("artifact")
            if art is not None:
                if not isinstance(header, dict) or header.get("key") != art.key:
                    stored = header.get("key") if isinstance(header, dict) else None
                    raise ArtifactError(f"corrupt file {path}: stores key {stored}, its name says {art.key}")
                self.note_threads(art, header, path)
        except ArtifactError as e:
            self.miss(shown, str(e).replace(str(path), self._rel(path)))
            return None
        return {k: v for k, v in obj.items() if k != "artifact"}

    def write_json(self, path: str | Path, payload: dict, art: Artifact | None = None) -> Path:
        """Atomically write ``payload`` (a dict), with ``art``'s header under ``"artifact"``."""
        obj = dict(payload)
        if art is not None:
            obj["artifact"] = art.header()
        return write_json(path, obj)

    # -- tensor artifacts --------------------------------------------------------------------------
    def load_tensors(self, path: str | Path, art: Artifact, quiet: bool = False) -> dict[str, torch.Tensor] | None:
        """Tensors of ``art`` from ``path`` (stored key checked), or None: a logged cache miss."""
        path = Path(path)
        if not path.exists():
            reason = self.why_missing(art, path)
            self.miss(art, reason, logging.DEBUG if quiet and reason == "not found" else None)
            return None
        out = self.check_tensors(path, art, art.key)
        if out is not None:
            self.note_threads(art, _stored_header(path), path)
        return out

    def check_tensors(self, path: str | Path, art: Artifact, expect_hash: str) -> dict[str, torch.Tensor] | None:
        """Tensors of ``path`` if it is readable and stores ``config_hash`` ``expect_hash``; else None,
        logged as ``corrupt file <path>: <error>`` (a file that stores another key counts as corrupt:
        its name says which key it must hold)."""
        rel = self._rel(path)
        try:
            found = read_metadata(path).get("config_hash")
            if found != expect_hash:
                raise CheckpointError(f"stores key {found}, its name says {expect_hash}")
            return load_tensors(path)
        except CheckpointError as e:
            msg = str(e).replace(f"cannot read checkpoint {path}: ", "").replace(str(path), rel)
            self.miss(art, f"corrupt file {rel}: {msg}")
            return None

    def save_tensors(self, path: str | Path, tensors: dict[str, torch.Tensor], art: Artifact,
                     **metadata: Any) -> Path:
        """Atomically write ``tensors`` with ``art``'s key and header (+ ``metadata``) in the metadata."""
        return save_tensors(tensors, path, metadata={**metadata, **art.metadata()})


_T = TypeVar("_T")


def adopt_shipped(path: Path, shipped_dir: Path, read: Callable[[Store, Path], _T | None], what: str) -> _T | None:
    """A shipped artifact for a run that has none yet: when ``path`` (a ``.safetensors`` file beside its
    ``.json`` record) does not exist and ``shipped_dir`` holds both files of the same name, ``read(store,
    shipped_path)`` loads the shipped one (``None`` when it is not usable: a logged miss); a usable one is
    copied into the run, each file atomically and the tensors last, and what ``read`` returned is returned.
    Otherwise None. ``what`` names it in the log line (e.g. "realign head")."""
    src = Path(shipped_dir) / path.name
    if path.exists() or not src.is_file() or not src.with_suffix(".json").is_file():
        return None
    loaded = read(Store(shipped_dir), src)
    if loaded is None:
        return None
    for name in (path.with_suffix(".json"), path):
        copy_file(src.with_name(name.name), name)
    log.info("loaded the shipped %s (%s), copied into the run", what, Path(shipped_dir).parent.name)
    return loaded


# ------------------------------------------------------------------------------------------------
# comparing runs
# ------------------------------------------------------------------------------------------------
def without_wall_clock(obj: Any) -> Any:
    """``obj`` with every wall-clock field (:data:`WALL_CLOCK_FIELDS`) removed, recursively."""
    if isinstance(obj, dict):
        return {k: without_wall_clock(v) for k, v in obj.items() if k not in WALL_CLOCK_FIELDS}
    if isinstance(obj, list):
        return [without_wall_clock(v) for v in obj]
    return obj


def sha256_file(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB chunks (checkpoints, manifests)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def compare_runs(a: str | Path, b: str | Path) -> list[str]:
    """Differences between two run directories: every ``.safetensors`` file byte for byte (sha256),
    every ``.json`` file with its wall-clock fields removed (``run-meta.json``, which records the
    date and host, is skipped). Markdown tables are not compared (they show wall-clock columns).
    Returns a list of human-readable differences, empty when the runs agree."""
    a, b = Path(a), Path(b)

    def files(root):
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                and p.suffix in (".safetensors", ".json") and p.name != "run-meta.json"}
    fa, fb = files(a), files(b)
    out = [f"only in {a}: {f}" for f in sorted(fa - fb)] + [f"only in {b}: {f}" for f in sorted(fb - fa)]
    for f in sorted(fa & fb):
        if f.endswith(".safetensors"):
            if sha256_file(a / f) != sha256_file(b / f):
                out.append(f"bytes differ: {f}")
        elif without_wall_clock(json.loads((a / f).read_text())) != without_wall_clock(
                json.loads((b / f).read_text())):
            out.append(f"content differs (wall-clock fields removed): {f}")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m simo_lite.store compare RUN_A RUN_B``: exit 0 when two run directories agree."""
    import argparse
    ap = argparse.ArgumentParser(description="Compare two run directories (checkpoints byte for byte, "
                                             "JSON without wall-clock fields)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = ap.parse_args(argv)
    for d in (args.a, args.b):
        if not Path(d).is_dir():
            ap.error(f"not a run directory: {d}")
    diffs = compare_runs(args.a, args.b)
    n_ckpt = sum(1 for _ in Path(args.a).rglob("*.safetensors"))
    n_json = sum(1 for p in Path(args.a).rglob("*.json") if p.name != "run-meta.json")
    for d in diffs:
        print(d)
    print(f"{'identical' if not diffs else f'{len(diffs)} difference(s)'}: {n_ckpt} checkpoint(s) byte for byte, "
          f"{n_json} JSON file(s) without wall-clock fields ({', '.join(WALL_CLOCK_FIELDS)})")
    raise SystemExit(1 if diffs else 0)


if __name__ == "__main__":
    main()
