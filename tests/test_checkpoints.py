"""Safetensors checkpoints: round trip, config hash, error reporting and atomic writes."""
from __future__ import annotations

import pytest
import torch

from simo_lite.checkpoints import CheckpointError, config_hash, load_tensors, read_metadata, save_tensors


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "weight": torch.randn(4, 3, generator=g),
        "bias": torch.randn(3, generator=g).double(),
        "steps": torch.arange(5, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "half": torch.randn(2, 2, generator=g).half(),
        "scalar": torch.tensor(3.5),
        "transposed": torch.randn(3, 5, generator=g).t(),  # non-contiguous input
    }


def test_round_trip(tmp_path):
    src = _tensors()
    path = save_tensors(src, tmp_path / "sub" / "a.safetensors", metadata={"note": "hi", "n": 3})
    assert path == tmp_path / "sub" / "a.safetensors" and path.exists()  # parent folders are created
    out = load_tensors(path)
    assert set(out) == set(src)
    for k in src:
        assert out[k].dtype == src[k].dtype, k
        assert torch.equal(out[k], src[k]), k
    meta = read_metadata(path)
    assert meta["note"] == "hi" and meta["n"] == "3"  # metadata values are stored as strings


def test_save_does_not_keep_references(tmp_path):
    src = {"w": torch.zeros(3, requires_grad=True)}
    save_tensors(src, tmp_path / "w.safetensors")
    out = load_tensors(tmp_path / "w.safetensors")
    assert not out["w"].requires_grad
    out["w"] += 1
    assert torch.equal(src["w"].detach(), torch.zeros(3))


def test_config_hash_checked(tmp_path):
    cfg = {"lr": 1e-3, "steps": 10, "tasks": ["seg", "depth"]}
    h = config_hash(cfg)
    path = save_tensors(_tensors(), tmp_path / "c.safetensors", metadata={"config_hash": h})
    assert read_metadata(path)["config_hash"] == h
    assert torch.equal(load_tensors(path, expect_hash=h)["steps"], torch.arange(5))

    other = config_hash({**cfg, "lr": 2e-3})
    assert other != h
    with pytest.raises(CheckpointError) as e:
        load_tensors(path, expect_hash=other)
    msg = str(e.value)
    assert str(path) in msg and h in msg and other in msg


def test_missing_config_hash_is_a_mismatch(tmp_path):
    path = save_tensors(_tensors(), tmp_path / "nohash.safetensors")
    with pytest.raises(CheckpointError):
        load_tensors(path, expect_hash=config_hash({"a": 1}))


def test_missing_file(tmp_path):
    path = tmp_path / "nope.safetensors"
    for kwargs in ({}, {"expect_hash": "abc"}):
        with pytest.raises(CheckpointError) as e:
            load_tensors(path, **kwargs)
        assert str(path) in str(e.value)
    with pytest.raises(CheckpointError) as e:
        read_metadata(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("corruption", ["truncated", "header_only", "garbage", "empty"])
@pytest.mark.parametrize("with_hash", [False, True])
def test_corrupt_file_raises_checkpoint_error(tmp_path, corruption, with_hash):
    h = config_hash({"x": 1})
    path = save_tensors(_tensors(), tmp_path / "bad.safetensors", metadata={"config_hash": h})
    raw = path.read_bytes()
    path.write_bytes({"truncated": raw[: len(raw) - 40], "header_only": raw[:20],
                      "garbage": b"\xff" * 64, "empty": b""}[corruption])
    with pytest.raises(CheckpointError) as e:
        load_tensors(path, expect_hash=h if with_hash else None)
    assert str(path) in str(e.value)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "atomic.safetensors"
    save_tensors(_tensors(), path)
    save_tensors({"new": torch.ones(2)}, path)           # overwrite in place
    assert set(load_tensors(path)) == {"new"}
    assert [p.name for p in tmp_path.iterdir()] == ["atomic.safetensors"]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_failed_write_keeps_old_file_and_cleans_up(tmp_path, monkeypatch):
    import simo_lite.store as C

    path = tmp_path / "keep.safetensors"
    save_tensors({"old": torch.ones(3)}, path)

    def crash_mid_write(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt  # e.g. Ctrl-C while writing

    monkeypatch.setattr(C, "save_file", crash_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_tensors({"new": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(load_tensors(path)["old"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]


def test_config_hash_properties():
    a = {"lr": 0.001, "steps": 10, "nested": {"x": 1, "y": [1, 2]}}
    b = {"nested": {"y": [1, 2], "x": 1}, "steps": 10, "lr": 0.001}
    assert config_hash(a) == config_hash(b)                       # key order does not matter
    assert len(config_hash(a)) == 12 and all(c in "0123456789abcdef" for c in config_hash(a))
    assert config_hash(a) != config_hash({**a, "steps": 11})      # values do
    assert config_hash({"t": ("seg", "depth")}) == config_hash({"t": ["seg", "depth"]})  # JSON semantics


def test_same_tensors_and_metadata_give_the_same_bytes(tmp_path):
    """The safetensors writer orders metadata at random (a Rust HashMap); the header is made canonical."""
    meta = {f"key{i}": f"value {i} é \u2028 \x01 \"q\" /" for i in range(12)}
    meta.update(config_hash="abc", config='{"a": 1}', info="{}")
    a = save_tensors(_tensors(), tmp_path / "a.safetensors", metadata=meta)
    b = save_tensors(_tensors(), tmp_path / "b.safetensors", metadata=dict(reversed(list(meta.items()))))
    assert a.read_bytes() == b.read_bytes()
    assert read_metadata(a) == {k: str(v) for k, v in meta.items()}
    n = int.from_bytes(a.read_bytes()[:8], "little")
    import json
    header = json.loads(a.read_bytes()[8:8 + n])
    assert list(header["__metadata__"]) == sorted(meta) and (8 + n) % 8 == 0
    out = load_tensors(a)
    assert all(torch.equal(out[k], v) for k, v in _tensors().items())
