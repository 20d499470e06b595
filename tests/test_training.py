"""Training loop, batching, expert caching, resume after interrupt, determinism and the foundation.

Everything runs on the ``smoke`` profile (32 px, a 4-block ViT of width 48) on the CPU.
"""
from __future__ import annotations

import json
import math
import time

import pytest
import torch

from simo_lite import checkpoints as ckpt
from simo_lite import foundation, profiles, training
from simo_lite.training import Stage, batch_indices, build_model, evaluate, fit, train_expert


@pytest.fixture(scope="module")
def profile():
    return profiles.get("smoke")


@pytest.fixture(scope="module")
def data(profile):
    return training.load_data(profile)


@pytest.fixture(scope="module")
def encoder_state(profile):
    return foundation.random_encoder_state(profile, seed=0)


def _model(encoder_state, profile, tasks=("depth",), trainable="all"):
    model = build_model(encoder_state, profile, tasks, seed=0)
    Stage.set(model, trainable)
    return model


def _params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def test_load_data_shapes(profile, data):
    assert set(data) == {"train", "val", "test"}
    sizes = {"train": profile.n_train, "val": profile.n_val, "test": profile.n_test}
    for split, n in sizes.items():
        assert data[split]["image"].shape == (n, 3, profile.image_size, profile.image_size)
        assert data[split]["seg"].shape == (n, profile.image_size, profile.image_size)
    assert not torch.equal(data["train"]["image"][:4], data["test"]["image"][:4])


# ------------------------------------------------------------------------------------------------
# (a) a slice: encoder + linear depth head learns
# ------------------------------------------------------------------------------------------------


def test_fit_slice_learns_depth(profile, data, encoder_state):
    model = _model(encoder_state, profile)
    rec = fit(model, data["train"], ("depth",), steps=30, lr=3e-3, batch_size=8, seed=0)
    losses = rec.metrics["loss"]
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert rec.steps == 30 and rec.samples == 30 * 8
    assert rec.trainable_params == sum(p.numel() for p in model.parameters())
    assert rec.wall_s > 0
    assert not model.training  # fit leaves the model in eval mode

    metrics = evaluate(model, data["test"], ("depth",), batch_size=10)  # uneven last batch
    assert set(metrics) == {"depth"} and math.isfinite(metrics["depth"]) and metrics["depth"] > 0
    # batching in evaluate does not change the number
    assert evaluate(model, data["test"], batch_size=64)["depth"] == pytest.approx(metrics["depth"], rel=1e-5)


def test_fit_heads_only_leaves_encoder_untouched(profile, data, encoder_state):
    model = _model(encoder_state, profile, tasks=("seg", "normals"), trainable="heads")
    enc_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.heads["seg"].state_dict().items()}
    rec = fit(model, data["train"], ("seg", "normals"), steps=3, lr=3e-3, batch_size=8)
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, enc_before[k]), k
    assert any(not torch.equal(v, head_before[k]) for k, v in model.heads["seg"].state_dict().items())
    assert rec.trainable_params == sum(p.numel() for p in model.heads.parameters())


def test_fit_without_trainable_parameters_raises(profile, data, encoder_state):
    model = _model(encoder_state, profile)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        fit(model, data["train"], ("depth",), steps=1, lr=1e-3, batch_size=4)


# ------------------------------------------------------------------------------------------------
# (b) batch_indices
# ------------------------------------------------------------------------------------------------


def test_batch_indices_deterministic_and_cover_epochs():
    n, bs, seed = 12, 4, 3
    per_epoch = n // bs
    for epoch in range(3):
        batches = [batch_indices(n, bs, seed, epoch * per_epoch + k) for k in range(per_epoch)]
        assert all(len(b) == bs for b in batches)
        seen = torch.cat(batches)
        assert sorted(seen.tolist()) == list(range(n))  # every index exactly once per epoch
    for step in range(7):
        assert torch.equal(batch_indices(n, bs, seed, step), batch_indices(n, bs, seed, step))
    # epochs are reshuffled, and the seed matters
    ep0 = torch.cat([batch_indices(n, bs, seed, k) for k in range(per_epoch)])
    ep1 = torch.cat([batch_indices(n, bs, seed, per_epoch + k) for k in range(per_epoch)])
    assert not torch.equal(ep0, ep1)
    other = torch.cat([batch_indices(n, bs, seed + 1, k) for k in range(per_epoch)])
    assert not torch.equal(ep0, other)


def test_batch_indices_uneven_and_small():
    n, bs = 10, 3                                   # 3 full batches per epoch, one index left out
    batches = torch.cat([batch_indices(n, bs, 0, k) for k in range(3)])
    assert len(batches) == 9 and len(set(batches.tolist())) == 9
    assert batches.min() >= 0 and batches.max() < n
    small = batch_indices(5, 8, 0, 0)                # fewer samples than a batch: the whole set
    assert sorted(small.tolist()) == list(range(5))


# ------------------------------------------------------------------------------------------------
# (c) train_expert stores its result and loads it on the second call
# ------------------------------------------------------------------------------------------------


def test_train_expert_caches(profile, data, encoder_state, tmp_path, monkeypatch):
    t0 = time.perf_counter()
    model1, rec1 = train_expert("normals", encoder_state, "random-init", profile, data, tmp_path)
    first_s = time.perf_counter() - t0
    folders = list((tmp_path / "models").glob("expert-normals-*"))
    assert len(folders) == 1 and (folders[0] / "record.json").exists()
    assert not list(tmp_path.rglob("*state.safetensors"))  # resume states removed after completion

    assert rec1.steps == profile.probe_steps + profile.finetune_steps
    assert rec1.samples == rec1.steps * profile.batch_size
    assert rec1.trainable_params > 0
    assert rec1.trainable_params == sum(p.numel() for p in model1.parameters())  # fine-tune stage: all
    assert rec1.wall_s > 0
    assert len(rec1.stages) == 2
    assert {"probe", "test"} <= set(rec1.metrics)
    for split in ("probe", "test"):
        assert set(rec1.metrics[split]) == {"normals"} and math.isfinite(rec1.metrics[split]["normals"])
    # the encoder was fine-tuned
    assert any(not torch.equal(v, encoder_state[k]) for k, v in model1.encoder.state_dict().items())

    def no_training(*args, **kwargs):
        raise AssertionError("train_expert trained again although its checkpoint exists")

    with monkeypatch.context() as m:
        m.setattr(training, "fit", no_training)
        t0 = time.perf_counter()
        model2, rec2 = train_expert("normals", encoder_state, "random-init", profile, data, tmp_path)
        second_s = time.perf_counter() - t0
    assert second_s < first_s / 2, f"second call took {second_s:.2f}s vs {first_s:.2f}s"
    print(f"train_expert: trained in {first_s:.2f}s, loaded in {second_s:.3f}s")
    sd1, sd2 = model1.state_dict(), model2.state_dict()
    assert set(sd1) == set(sd2)
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k
    assert rec2.to_dict() == json.loads(json.dumps(rec1.to_dict()))
    # the loaded model evaluates to the stored test metric
    assert evaluate(model2, data["test"])["normals"] == pytest.approx(rec1.metrics["test"]["normals"], rel=1e-5)

    # another foundation hash is another configuration: trained again into a new folder
    before = set((tmp_path / "models").iterdir())
    small = profiles.get(profile, probe_steps=1, finetune_steps=1)
    _, rec3 = train_expert("normals", encoder_state, "random-init", small, data, tmp_path)
    assert rec3.steps == 2 and len(set((tmp_path / "models").iterdir()) - before) == 1


# ------------------------------------------------------------------------------------------------
# (d) resume after an interrupt reproduces an uninterrupted run
# ------------------------------------------------------------------------------------------------


def test_resume_after_interrupt(profile, data, encoder_state, tmp_path):
    steps, kw = 10, dict(lr=3e-3, batch_size=8, seed=0)
    state_path = tmp_path / "state.safetensors"

    reference = _model(encoder_state, profile)
    ref_rec = fit(reference, data["train"], ("depth",), steps, **kw)

    def interrupt_at_5(step, loss):
        if step == 5:
            raise KeyboardInterrupt

    interrupted = _model(encoder_state, profile)
    with pytest.raises(KeyboardInterrupt):
        fit(interrupted, data["train"], ("depth",), steps, state_path=state_path, state_every=2,
            callback=interrupt_at_5, **kw)
    assert state_path.exists()
    saved_step = int(ckpt.read_metadata(state_path)["step"])
    assert saved_step == 6  # saved after steps 2, 4 and 6; the callback of step index 5 raised after
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))

    resumed = _model(encoder_state, profile)  # fresh model, same init
    calls = []
    rec = fit(resumed, data["train"], ("depth",), steps, state_path=state_path, state_every=2,
              callback=lambda s, l: calls.append(s), **kw)
    assert calls == list(range(saved_step, steps))
    # the record covers the whole run, as an uninterrupted one: steps, samples, the full loss curve
    assert rec.steps == steps and rec.samples == ref_rec.samples and len(rec.metrics["loss"]) == steps
    assert rec.metrics["loss"] == ref_rec.metrics["loss"]
    assert not state_path.exists()  # removed after completion

    ref_sd, res_sd = reference.state_dict(), resumed.state_dict()
    for k in ref_sd:
        assert torch.equal(res_sd[k], ref_sd[k]), k                # bitwise


def test_state_from_another_configuration_is_ignored(profile, data, encoder_state, tmp_path):
    state_path = tmp_path / "state.safetensors"

    def stop(step, loss):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_model(encoder_state, profile), data["train"], ("depth",), 6, lr=3e-3, batch_size=8,
            state_path=state_path, state_every=1, callback=stop)
    assert state_path.exists()
    calls = []
    # another learning rate: the stored state does not match and training starts from step 0
    fit(_model(encoder_state, profile), data["train"], ("depth",), 6, lr=1e-3, batch_size=8,
        state_path=state_path, state_every=1, callback=lambda s, l: calls.append(s))
    assert calls == list(range(6))
    assert not state_path.exists()


# ------------------------------------------------------------------------------------------------
# (e) CPU determinism
# ------------------------------------------------------------------------------------------------


def test_same_seed_same_weights(profile, data, encoder_state):
    runs = []
    for seed in (0, 0, 1):
        model = _model(encoder_state, profile, tasks=("seg",))
        fit(model, data["train"], ("seg",), steps=5, lr=3e-3, batch_size=8, seed=seed)
        runs.append(_params(model))
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k
    assert any(not torch.equal(runs[0][k], runs[2][k]) for k in runs[0])  # the seed picks the batches


def test_build_model_is_seeded(profile, encoder_state):
    a = build_model(encoder_state, profile, ("seg", "depth"), seed=4)
    b = build_model(encoder_state, profile, ("seg", "depth"), seed=4)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    # the depth head starts at the task's output bias (4 m)
    assert torch.allclose(a.heads["depth"].proj.bias, torch.tensor([4.0]))
    out = a(torch.rand(2, 3, profile.image_size, profile.image_size))
    assert out["seg"].shape == (2, 6, profile.image_size, profile.image_size)
    assert out["depth"].shape == (2, 1, profile.image_size, profile.image_size)


# ------------------------------------------------------------------------------------------------
# (f) the foundation: pretrain, save, load; the masked reconstruction loss decreases
# ------------------------------------------------------------------------------------------------


def test_foundation_pretrains_saves_and_loads(tmp_path, monkeypatch):
    prof = profiles.get("smoke", foundation_steps=30)
    infos = []
    real_pretrain = foundation.pretrain

    def recording_pretrain(*args, **kwargs):
        state, info = real_pretrain(*args, **kwargs)
        infos.append(info)
        return state, info

    monkeypatch.setattr(foundation, "pretrain", recording_pretrain)
    state1, h1 = foundation.load_foundation(prof, run_dir=tmp_path)
    assert len(infos) == 1, "the first call must pretrain"
    info = infos[0]
    assert info["steps"] == 30 and info["params"] > 0 and info["wall_s"] > 0
    assert info["loss_first"] > info["loss_last"], info
    assert h1 == ckpt.config_hash(foundation.foundation_config(prof))
    saved = tmp_path / f"foundation-{h1}.safetensors"
    assert saved.exists()
    assert ckpt.read_metadata(saved)["config_hash"] == h1

    state2, h2 = foundation.load_foundation(prof, run_dir=tmp_path)
    assert len(infos) == 1, "the second call must load, not pretrain"
    assert h2 == h1 and set(state2) == set(state1)
    for k in state1:
        assert torch.equal(state1[k], state2[k]), k

    # the weights load into the profile's encoder and differ from the random initialisation
    enc = build_model(state2, prof, ("depth",)).encoder
    rand = foundation.random_encoder_state(prof)
    assert any(not torch.equal(v, rand[k]) for k, v in enc.state_dict().items())
    # another configuration has another hash
    assert ckpt.config_hash(foundation.foundation_config(profiles.get(prof, foundation_steps=31))) != h1


# ------------------------------------------------------------------------------------------------
# cached features for frozen-encoder stages
# ------------------------------------------------------------------------------------------------
def test_fit_on_cached_features_matches_encoder_in_the_loop(profile, data, encoder_state):
    """A probe trained on cached features ends where the same probe with the frozen encoder ends."""
    direct = _model(encoder_state, profile, ("seg", "depth"), trainable="heads")
    cached = _model(encoder_state, profile, ("seg", "depth"), trainable="heads")
    feats = training.cache_features(cached, data["train"]["image"], batch_size=48)
    assert feats.shape == (len(data["train"]["image"]), len(profile.taps), 2 * profile.embed_dim,
                           profile.image_size // profile.patch_size, profile.image_size // profile.patch_size)
    r1 = fit(direct, data["train"], ("seg", "depth"), 8, 3e-3, 16, seed=3)
    r2 = fit(cached, data["train"], ("seg", "depth"), 8, 3e-3, 16, seed=3, features=feats)
    assert r1.steps == r2.steps == 8 and r1.samples == r2.samples
    for a, b in zip(r1.metrics["loss"], r2.metrics["loss"]):
        assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)
    pa, pb = _params(direct), _params(cached)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-4, atol=1e-5)


def test_fit_cached_features_errors(profile, data, encoder_state):
    model = _model(encoder_state, profile, ("depth",), trainable="all")
    feats = training.cache_features(model, data["train"]["image"])
    with pytest.raises(ValueError, match="frozen encoder"):
        fit(model, data["train"], ("depth",), 2, 1e-3, 8, features=feats)
    Stage.set(model, "heads")
    with pytest.raises(ValueError, match="cached features for"):
        fit(model, data["train"], ("depth",), 2, 1e-3, 8, features=feats[:5])


def test_features_fit_in_memory_by_size(profile):
    assert training.features_fit_in_memory(profile, 1000)
    assert not training.features_fit_in_memory(profiles.get("gpu"), 30000)   # ~94 GB of features


# ------------------------------------------------------------------------------------------------
# one way to freeze, keyword-only options, clear errors on inputs fit cannot train on
# ------------------------------------------------------------------------------------------------
def test_set_trainable_freezes_and_unfreezes_in_place(profile, encoder_state):
    model = build_model(encoder_state, profile, ("seg", "depth"), seed=0)
    assert training.set_trainable(model, False) is model
    assert not any(p.requires_grad for p in model.parameters())
    training.set_trainable(model.heads["seg"], True)
    assert all(p.requires_grad for p in model.heads["seg"].parameters())
    assert not any(p.requires_grad for p in (*model.encoder.parameters(), *model.heads["depth"].parameters()))
    Stage.set(model, "heads")                                           # Stage uses the same helper
    assert all(p.requires_grad for p in model.heads.parameters())
    assert not any(p.requires_grad for p in model.encoder.parameters())
    with pytest.raises(TypeError, match="True or False"):
        training.set_trainable(model, "heads")


def test_model_taps_come_from_the_encoder(profile, encoder_state):
    from simo_lite.backbones import encoder_io
    model = build_model(encoder_state, profile, ("depth",))
    assert model.taps == encoder_io(model.encoder).taps == profile.taps


def test_fit_options_are_keyword_only(profile, data, encoder_state):
    model = _model(encoder_state, profile)
    with pytest.raises(TypeError):
        fit(model, data["train"], ("depth",), 1, 1e-3, 8, 0)            # seed positionally
    with pytest.raises(TypeError):
        training.probe_stage(model, data["train"], ("depth",), profile, 1, 0)


@pytest.mark.parametrize("kw,message", [
    (dict(tasks=("seg",)), r"the model has no head for seg; its heads: depth"),
    (dict(steps=-1), r"steps must be >= 0"),
    (dict(batch_size=0), r"batch_size=0"),
    (dict(split_keys=("image",)), r"the split has no labels for depth; its keys: image"),
    (dict(split_keys=("depth",)), r"the split has no images"),
])
def test_fit_rejects_what_it_cannot_train_on(profile, data, encoder_state, kw, message):
    model = _model(encoder_state, profile)
    keys = kw.pop("split_keys", tuple(data["train"]))
    split = {k: data["train"][k] for k in keys}
    args = dict(tasks=("depth",), steps=1, lr=1e-3, batch_size=8) | kw
    with pytest.raises(ValueError, match=message):
        fit(model, split, **args)


def test_train_expert_names_a_missing_split(profile, data, encoder_state, tmp_path):
    with pytest.raises(ValueError, match=r"train_expert: data has no val split; it needs train, val, test"):
        train_expert("depth", encoder_state, "random-init", profile, {"train": data["train"], "test": data["test"]},
                     tmp_path)


def test_old_homes_still_work():
    from simo_lite import data, progress
    assert training.load_data is data.load_data
    assert training.progress_enabled is progress.progress_enabled


def test_tail_improvement_measures_the_last_fifth():
    from simo_lite.training import tail_improvement
    flat = [1.0] * 100
    assert tail_improvement(flat) == 0.0
    falling = [1.0 - 0.005 * i for i in range(100)]          # 1.0 -> 0.505, linear
    before = sum(falling[70:80]) / 10                         # the 10 steps before the last 20 %
    end = sum(falling[90:]) / 10
    assert tail_improvement(falling) == pytest.approx((before - end) / before)
    assert tail_improvement(falling) > 0.01 and tail_improvement(flat) < 0.01   # not converged / converged
    assert math.isnan(tail_improvement([1.0, 0.5])) and math.isnan(tail_improvement([]))


def test_val_curve_is_recorded_without_changing_the_weights(profile, data, encoder_state):
    """``fit(val=...)`` measures the validation loss at ``val_points`` evenly spaced steps, the last
    included; measuring it changes no weight and no training loss (same run without it)."""
    kw = dict(lr=3e-3, batch_size=8, seed=0)
    plain = _model(encoder_state, profile)
    rec_plain = fit(plain, data["train"], ("depth",), 10, **kw)
    watched = _model(encoder_state, profile)
    rec = fit(watched, data["train"], ("depth",), 10, val=data["val"], val_points=5, **kw)
    curve = rec.metrics["val_loss"]
    assert [s for s, _ in curve] == [2, 4, 6, 8, 10]
    assert rec.metrics["loss"] == rec_plain.metrics["loss"]
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), watched.state_dict().values()))
    # the last point is the loss of the final model on the whole split
    assert curve[-1][1] == pytest.approx(training.val_loss(watched, data["val"], ("depth",)), rel=1e-6)
    assert "val_loss" not in rec_plain.metrics
    # the record-level reader finds the curve of the last stage that has one
    outer = training.RunRecord(name="two-stage")
    outer.add(rec_plain)
    outer.add(rec)
    vals = [v for _, v in curve]
    assert training.val_tail_improvement(outer) == training.tail_improvement(vals)
    assert math.isnan(training.val_tail_improvement(rec_plain))


def test_val_curve_survives_an_interrupt(profile, data, encoder_state, tmp_path):
    kw = dict(lr=3e-3, batch_size=8, seed=0, val=data["val"], val_points=5)
    ref = fit(_model(encoder_state, profile), data["train"], ("depth",), 10, **kw)
    state_path = tmp_path / "state.safetensors"

    def stop(step, loss):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_model(encoder_state, profile), data["train"], ("depth",), 10, state_path=state_path, state_every=3,
            callback=stop, **kw)
    rec = fit(_model(encoder_state, profile), data["train"], ("depth",), 10, state_path=state_path,
              state_every=3, **kw)
    assert rec.metrics["val_loss"] == ref.metrics["val_loss"]
