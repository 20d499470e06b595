"""Head realignment (cached features, frozen encoder) and representation realignment (block adapters
or PEFT LoRA) on the ``smoke`` profile with a random encoder and the small validation split."""
from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from simo_lite import foundation, profiles, realign, training
from simo_lite import store as st
from simo_lite.models import count_parameters

TASKS = ("seg", "depth")
STEPS = 8            # head realignment steps per task
REPR_STEPS = 5       # representation realignment steps
BATCH = 8


@pytest.fixture(scope="module")
def profile():
    return profiles.get("smoke")


@pytest.fixture(scope="module")
def val(profile):
    full = training.load_data(profile, splits=("val",))["val"]
    return {k: v[:16] for k, v in full.items()}                              # 16 images keep it quick


@pytest.fixture(scope="module")
def base_model(profile):
    return training.build_model(foundation.random_encoder_state(profile), profile, TASKS).eval()


@pytest.fixture()
def model(base_model):
    return copy.deepcopy(base_model)


@pytest.fixture(scope="module")
def images(val):
    return val["image"][:6]


def _feats(model, images):
    model.eval()
    with torch.no_grad():
        return model.features(images)


def _state(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------------------------
# cached features
# ------------------------------------------------------------------------------------------------


def test_cache_features_matches_model_features(model, val, profile):
    imgs = val["image"][:13]
    cached = realign.cache_features(model, imgs, batch_size=5)              # 3 batches, the last partial
    h = profile.image_size // profile.patch_size
    assert cached.shape == (13, len(profile.taps), 2 * profile.embed_dim, h, h)
    assert cached.device.type == "cpu"
    assert torch.allclose(cached, _feats(model, imgs), atol=1e-5)


# ------------------------------------------------------------------------------------------------
# block adapters
# ------------------------------------------------------------------------------------------------


def test_block_adapters_identity_at_init_then_change(model, images, profile):
    before = _feats(model, images)
    n_before = count_parameters(model.encoder)
    rank = 4
    adapters = realign.add_block_adapters(model.encoder, rank=rank)
    C = profile.embed_dim
    assert len(adapters) == profile.depth
    assert all(isinstance(b, realign.AdaptedBlock) for b in model.encoder.blocks)
    assert count_parameters(model.encoder) - n_before == profile.depth * 2 * C * rank
    for a in adapters:
        assert a.down.weight.shape == (rank, C) and a.up.weight.shape == (C, rank)
        assert torch.count_nonzero(a.up.weight) == 0
        assert torch.count_nonzero(a.down.weight) > 0
    after = _feats(model, images)
    assert torch.allclose(after, before, atol=1e-6)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for a in adapters:
            a.up.weight.copy_(torch.randn(a.up.weight.shape, generator=g) * 0.1)
    changed = _feats(model, images)
    assert (changed - before).abs().max() > 1e-3


def test_block_adapter_forward_formula():
    a = realign.BlockAdapter(6, rank=2)
    x = torch.randn(2, 5, 6)
    assert torch.equal(a(x), x)
    with torch.no_grad():
        a.up.weight.normal_()
    assert torch.allclose(a(x), x + x @ a.down.weight.T @ a.up.weight.T, atol=1e-6)


def test_block_adapters_errors(model):
    with pytest.raises(ValueError, match="rank"):
        realign.BlockAdapter(8, rank=0)
    realign.add_block_adapters(model.encoder, rank=2)
    with pytest.raises(ValueError, match="already"):
        realign.add_block_adapters(model.encoder, rank=2)


# ------------------------------------------------------------------------------------------------
# PEFT LoRA
# ------------------------------------------------------------------------------------------------


def _lora_targets(encoder) -> list[nn.Linear]:
    return [m for n, m in encoder.named_modules() if re.fullmatch(realign.LORA_TARGETS, n)]


def test_lora_identity_then_change_then_fold(model, images, profile):
    orig_keys = set(model.encoder.state_dict())
    before = _feats(model, images)
    targets = _lora_targets(model.encoder)
    assert len(targets) == 4 * profile.depth and all(isinstance(m, nn.Linear) for m in targets)
    lora = realign.add_lora(model.encoder, rank=4)
    lora_params = {n: p for n, p in model.encoder.named_parameters() if "lora_" in n}
    assert len(lora_params) == 2 * len(targets)
    assert sum(p.numel() for p in lora_params.values()) == sum(4 * (m.in_features + m.out_features) for m in targets)
    assert torch.allclose(_feats(model, images), before, atol=1e-6)        # B = 0 at init

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in lora_params.items():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    with_lora = _feats(model, images)
    assert (with_lora - before).abs().max() > 1e-3

    folded = realign.fold_lora(lora)
    assert isinstance(folded, VisionTransformer)
    keys = set(folded.state_dict())
    assert not any("lora" in k for k in keys)
    assert keys == orig_keys, keys ^ orig_keys                              # loads into a plain make_encoder
    model.encoder = folded
    assert torch.allclose(_feats(model, images), with_lora, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# head realignment
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def head_runs(base_model, val):
    before = copy.deepcopy(base_model)
    cached = realign.head_realign(base_model, val, TASKS, steps=STEPS, batch_size=BATCH, seed=0, cached=True)
    uncached = realign.head_realign(base_model, val, TASKS, steps=STEPS, batch_size=BATCH, seed=0, cached=False)
    return before, cached, uncached


def test_head_realign_returns_copy_and_record(base_model, head_runs):
    before, (new, rec), _ = head_runs
    assert new is not base_model
    _assert_state_equal(_state(base_model), _state(before))               # original untouched
    assert rec.steps == STEPS * len(TASKS)
    assert rec.samples == STEPS * len(TASKS) * BATCH
    assert rec.trainable_params == sum(count_parameters(new.heads[t]) for t in TASKS)
    assert len(rec.stages) == len(TASKS)
    assert rec.name == "head-realign"
    for t in TASKS:
        changed = any(not torch.equal(a, b) for a, b in
                      zip(new.heads[t].state_dict().values(), base_model.heads[t].state_dict().values()))
        assert changed, f"head {t} did not train"


def test_head_realign_leaves_encoder_untouched(base_model, head_runs):
    _, (new, _), (new_u, _) = head_runs
    _assert_state_equal(_state(new.encoder), _state(base_model.encoder))
    _assert_state_equal(_state(new_u.encoder), _state(base_model.encoder))


def test_head_realign_cached_equals_uncached(head_runs):
    _, (a, rec_a), (b, rec_b) = head_runs
    assert rec_b.name == "head-realign-uncached"
    for t in TASKS:
        sa, sb = a.heads[t].state_dict(), b.heads[t].state_dict()
        for k in sa:
            assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-4), (t, k)
    for sa, sb in zip(rec_a.stages, rec_b.stages):
        assert sa["metrics"]["loss"] == pytest.approx(sb["metrics"]["loss"], rel=1e-4, abs=1e-5)


def test_head_realign_one_task_leaves_other_head(base_model, val):
    new, rec = realign.head_realign(base_model, val, ("depth",), steps=3, batch_size=BATCH)
    assert rec.steps == 3
    assert rec.trainable_params == count_parameters(new.heads["depth"])
    _assert_state_equal(_state(new.heads["seg"]), _state(base_model.heads["seg"]))


# ------------------------------------------------------------------------------------------------
# representation realignment
# ------------------------------------------------------------------------------------------------


def _head_params(model) -> int:
    return sum(count_parameters(model.heads[t]) for t in TASKS)


def test_representation_realign_block(base_model, val, profile):
    enc0 = _state(base_model.encoder)
    heads0 = {t: _state(base_model.heads[t]) for t in TASKS}
    rank = 4
    new, rec = realign.representation_realign(base_model, val, TASKS, rank=rank, kind="block", steps=REPR_STEPS,
                                              batch_size=BATCH, lr=1e-3)
    _assert_state_equal(_state(base_model.encoder), enc0)                 # original untouched
    assert rec.steps == REPR_STEPS and rec.name == "repr-realign-block"
    assert rec.trainable_params == profile.depth * 2 * profile.embed_dim * rank + _head_params(new)

    state = _state(new.encoder)
    adapter_keys = {k for k in state if ".adapter." in k}
    assert len(adapter_keys) == 2 * profile.depth
    # every original tensor is still there (blocks.i.X -> blocks.i.block.X) and unchanged
    base = {re.sub(r"^blocks\.(\d+)\.block\.", r"blocks.\1.", k): v for k, v in state.items() if k not in adapter_keys}
    _assert_state_equal(base, enc0)
    assert all(torch.count_nonzero(state[k]) > 0 for k in adapter_keys if ".up." in k)   # B trained away from 0
    for t in TASKS:
        assert any(not torch.equal(v, heads0[t][k]) for k, v in _state(new.heads[t]).items()), t
    assert new(val["image"][:2])["seg"].shape[-2:] == (profile.image_size, profile.image_size)


def test_representation_realign_lora(base_model, val, profile):
    enc0 = _state(base_model.encoder)
    heads0 = {t: _state(base_model.heads[t]) for t in TASKS}
    rank = 4
    targets = _lora_targets(base_model.encoder)
    new, rec = realign.representation_realign(base_model, val, TASKS, rank=rank, kind="lora", steps=REPR_STEPS,
                                              batch_size=BATCH, lr=1e-3)
    _assert_state_equal(_state(base_model.encoder), enc0)
    assert rec.steps == REPR_STEPS and rec.name == "repr-realign-lora"
    lora_numel = sum(rank * (m.in_features + m.out_features) for m in targets)
    assert lora_numel == 16 * rank * profile.embed_dim * profile.depth      # qkv 4C, proj 2C, fc1 5C, fc2 5C per rank
    assert rec.trainable_params == lora_numel + _head_params(new)

    state = _state(new.encoder)
    lora_keys = {k for k in state if "lora_" in k}
    assert len(lora_keys) == 2 * len(targets)
    base = {k.replace(".base_layer.", "."): v for k, v in state.items() if k not in lora_keys}
    _assert_state_equal(base, enc0)
    assert any(torch.count_nonzero(state[k]) > 0 for k in lora_keys if "lora_B" in k)
    for t in TASKS:
        assert any(not torch.equal(v, heads0[t][k]) for k, v in _state(new.heads[t]).items()), t
    # the trained LoRA folds into a plain encoder with the same features
    feats = _feats(new, val["image"][:4])
    new.encoder = realign.fold_lora(new.lora)
    assert not any("lora" in k for k in new.encoder.state_dict())
    assert torch.allclose(_feats(new, val["image"][:4]), feats, atol=1e-5)


def test_representation_realign_unknown_kind(base_model, val):
    with pytest.raises(ValueError, match="block"):
        realign.representation_realign(base_model, val, TASKS, kind="prefix", steps=1)


@pytest.mark.parametrize("kind", ["block", "lora"])
def test_representation_realign_cache(base_model, val, tmp_path, monkeypatch, kind):
    """A second identical call loads the stored result (no training); other settings train again."""
    kw = dict(tasks=TASKS, rank=4, kind=kind, steps=REPR_STEPS, batch_size=BATCH, lr=1e-3, cache_dir=tmp_path)
    first, rec1 = realign.representation_realign(base_model, val, **kw)
    files = list(tmp_path.glob(f"repr-{kind}-r4-*.safetensors"))
    assert len(files) == 1
    monkeypatch.setattr(realign, "fit", lambda *a, **k: pytest.fail("trained again despite the cache"))
    again, rec2 = realign.representation_realign(base_model, val, **kw)
    _assert_state_equal(_state(again), _state(first))
    assert rec2.steps == rec1.steps and rec2.trainable_params == rec1.trainable_params
    assert rec2.metrics["loss"] == rec1.metrics["loss"]
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(val["image"][:2])["seg"], first.eval()(val["image"][:2])["seg"])
    monkeypatch.undo()
    realign.representation_realign(base_model, val, **{**kw, "rank": 2})      # another rank: another file
    assert len(list(tmp_path.glob(f"repr-{kind}-*.safetensors"))) == 2


@pytest.mark.parametrize("kind", ["block", "lora"])
def test_representation_realign_cache_holds_only_what_training_changed(base_model, val, tmp_path, kind):
    """The stored file has the adapters and the heads (BatchNorm statistics included), not the frozen
    merged weights, which the key pins down; loading it rebuilds the whole trained model."""
    new, _ = realign.representation_realign(base_model, val, TASKS, rank=4, kind=kind, steps=REPR_STEPS,
                                            batch_size=BATCH, cache_dir=tmp_path)
    (path,) = tmp_path.glob(f"repr-{kind}-r4-*.safetensors")
    stored = st.load_tensors(path)
    adapter_names = {n for n, p in new.encoder.named_parameters() if p.requires_grad}
    assert adapter_names and all(f"encoder.{n}" in stored for n in adapter_names)
    assert {k for k in stored if k.startswith("heads.")} == {k for k in new.state_dict() if k.startswith("heads.")}
    assert not [k for k in stored if k.startswith("encoder.") and k[len("encoder."):] not in adapter_names]
    assert any(k.endswith("running_mean") for k in stored) or not any(
        k.endswith("running_mean") for k in new.state_dict())


def test_representation_realign_loads_a_shipped_result(base_model, val, tmp_path, monkeypatch, caplog):
    """A result of the same key in ``shipped_dir`` is loaded (no training) and copied into the run's
    cache; one of another key (here another rank) is not used."""
    shipped, run = tmp_path / "shipped", tmp_path / "run"
    kw = dict(tasks=TASKS, rank=4, kind="block", steps=REPR_STEPS, batch_size=BATCH, lr=1e-3)
    first, rec1 = realign.representation_realign(base_model, val, cache_dir=shipped, **kw)
    monkeypatch.setattr(realign, "fit", lambda *a, **k: pytest.fail("trained despite the shipped result"))
    with caplog.at_level("INFO", logger="simo_lite.store"):
        again, rec2 = realign.representation_realign(base_model, val, cache_dir=run, shipped_dir=shipped, **kw)
    assert "loaded the shipped realign repr-block-r4" in caplog.text
    _assert_state_equal(_state(again), _state(first))
    assert rec2.metrics["loss"] == rec1.metrics["loss"]
    assert sorted(f.name for f in run.iterdir()) == sorted(f.name for f in shipped.iterdir())
    again2, _ = realign.representation_realign(base_model, val, cache_dir=run, shipped_dir=shipped, **kw)
    _assert_state_equal(_state(again2), _state(first))                  # now from the run's own copy
    monkeypatch.undo()
    calls = []
    real_fit = realign.fit
    monkeypatch.setattr(realign, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    realign.representation_realign(base_model, val, cache_dir=run, shipped_dir=shipped, **{**kw, "rank": 2})
    assert calls == [1]                                                  # another key: trained


def test_representation_realign_rejects_a_file_with_other_tensors(base_model, val, tmp_path, caplog):
    """A cached file whose tensor names are not the adapters + heads of this model is a logged miss."""
    kw = dict(tasks=TASKS, rank=4, kind="block", steps=REPR_STEPS, batch_size=BATCH, cache_dir=tmp_path)
    first, _ = realign.representation_realign(base_model, val, **kw)
    (path,) = tmp_path.glob("repr-block-r4-*.safetensors")
    tensors = st.load_tensors(path)
    tensors["encoder.not_a_weight"] = torch.zeros(1)
    meta = st.read_metadata(path)
    st.save_tensors(tensors, path, metadata=meta)
    with caplog.at_level("INFO", logger="simo_lite.store"):
        again, _ = realign.representation_realign(base_model, val, **kw)
    assert "unexpected" in caplog.text
    _assert_state_equal(_state(again), _state(first))                    # retrained, same numbers


def test_head_realign_cache(base_model, val, tmp_path, monkeypatch):
    """A second identical head realignment loads the stored heads (no training), with the same record;
    the file holds the heads only; the uncached path (another setting) trains again."""
    kw = dict(tasks=TASKS, steps=STEPS, batch_size=BATCH, seed=0, cache_dir=tmp_path)
    first, rec1 = realign.head_realign(base_model, val, **kw)
    (path,) = tmp_path.glob("head-*.safetensors")
    assert all(k.startswith("heads.") for k in st.load_tensors(path))
    monkeypatch.setattr(realign, "fit", lambda *a, **k: pytest.fail("trained again despite the cache"))
    again, rec2 = realign.head_realign(base_model, val, **kw)
    _assert_state_equal(_state(again), _state(first))
    assert rec2.steps == rec1.steps and rec2.trainable_params == rec1.trainable_params and rec2.stages == rec1.stages
    assert not any(p.requires_grad for p in again.parameters())
    monkeypatch.undo()
    realign.head_realign(base_model, val, **{**kw, "cached": False})
    assert len(list(tmp_path.glob("head-*.safetensors"))) == 2


def test_realignments_of_other_settings_are_no_warning(base_model, val, tmp_path, caplog):
    """Realignments of several merges and budgets live side by side under one name: a new one is logged
    at INFO (why it is computed), never as a warning; a damaged file still warns."""
    import logging
    kw = dict(tasks=TASKS, batch_size=BATCH, seed=0, cache_dir=tmp_path)
    realign.head_realign(base_model, val, steps=STEPS, **kw)
    with caplog.at_level(logging.INFO, logger="simo_lite.store"):
        realign.head_realign(base_model, val, steps=STEPS + 1, **kw)
    assert "recomputing realign head: key changed" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    (path,) = [p for p in tmp_path.glob("head-*.safetensors") if p.stat().st_mtime_ns == max(
        q.stat().st_mtime_ns for q in tmp_path.glob("head-*.safetensors"))]
    path.write_bytes(b"damaged")
    with caplog.at_level(logging.INFO, logger="simo_lite.store"):
        realign.head_realign(base_model, val, steps=STEPS + 1, **kw)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING and "corrupt" in r.getMessage()]
