"""Reliability matrix, part 2: interrupted training (issue 11).

Every row kills a training run one way (Ctrl-C at seeded random steps, SIGKILL of the process, a
damaged or outdated state file) and resumes it. Expected outcome for every row: the resumed run
reports the **same cost** as the uninterrupted one (steps, samples, trainable parameters and the
full loss curve, one loss per step; wall-clock excluded) and ends with **bitwise-identical
weights**. Losses between the last saved state and the kill are recomputed on resume
(``state_every`` granularity), so the final list equals the uninterrupted run's.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap

import pytest
import torch

from simo_lite import checkpoints as ckpt
from simo_lite import datasets, foundation, profiles, training
from simo_lite import store as st
from simo_lite.training import Stage, build_model, fit

STEPS, KILLS = 40, 8
COST = ("steps", "samples", "trainable_params")


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


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_run(rec, model, ref_rec, ref_model):
    assert {k: getattr(rec, k) for k in COST} == {k: getattr(ref_rec, k) for k in COST}
    assert rec.metrics["loss"] == ref_rec.metrics["loss"] and len(rec.metrics["loss"]) == ref_rec.steps
    a, b = _state(model), _state(ref_model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k                           # bitwise


class Kill(KeyboardInterrupt):
    pass


def _killer(at: set[int]):
    """A fit callback that raises (once) after each step in ``at``, like Ctrl-C."""
    done = set()

    def callback(step, loss):
        if step in at and step not in done:
            done.add(step)
            raise Kill(step)
    return callback


def _fit_with_kills(make_model, fit_kw, kills, state_path):
    """fit, killed after each step in ``kills``, resumed each time on a fresh model; the last run completes."""
    callback = _killer(set(kills))
    for _ in range(len(kills) + 1):
        model = make_model()
        try:
            return model, fit(model, state_path=state_path, callback=callback, **fit_kw)
        except Kill:
            pass
    raise AssertionError("more interrupts than kills")


def _kills(seed: int, steps: int = STEPS) -> list[int]:
    return sorted(random.Random(seed).sample(range(steps - 1), KILLS))


# id, expected outcome, trainable, extra fit kwargs, kills
FIT_CASES = [
    ("8-random-kills-full-finetune", "same cost, same weights", "all", {}, _kills(0)),
    ("8-random-kills-state-every-1", "same cost, same weights", "all", {"state_every": 1}, _kills(1)),
    ("8-random-kills-cached-features", "same cost, same weights", "heads", {"features": True}, _kills(2)),
    ("8-random-kills-augmented", "same cost, same weights", "all", {"augment": True}, _kills(3)),
    ("kill-before-first-state", "same cost, same weights", "all", {}, [1]),
    ("kills-on-state-boundaries", "same cost, same weights", "all", {}, [4, 9, 14, 19, 24, 29, 34, 38]),
]


@pytest.mark.parametrize("case, outcome, trainable, extra, kills", FIT_CASES, ids=[c[0] for c in FIT_CASES])
def test_fit_interrupt_matrix(case, outcome, trainable, extra, kills, profile, data, encoder_state, tmp_path):
    tasks = ("seg", "depth")
    kw = dict(data=data["train"], tasks=tasks, steps=STEPS, lr=3e-3, batch_size=8, seed=0,
              state_every=extra.get("state_every", 5))
    if extra.get("augment"):
        kw["augment"] = datasets.augmenter("nyuv2")
    make = lambda: _model(encoder_state, profile, tasks, trainable)          # noqa: E731
    if extra.get("features"):
        kw["features"] = training.cache_features(make(), data["train"]["image"])
    reference = make()
    ref_rec = fit(reference, **kw)
    model, rec = _fit_with_kills(make, kw, kills, tmp_path / "state.safetensors")
    _assert_same_run(rec, model, ref_rec, reference)
    assert not (tmp_path / "state.safetensors").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_expert_killed_in_probe_and_finetune(profile, data, encoder_state, tmp_path, monkeypatch):
    """train_expert killed 8 times (both stages) then resumed: the stored record (steps, samples,
    trainable params, every stage's losses, metrics) and the weights equal an uninterrupted run's."""
    prof = profiles.get(profile, probe_steps=12, finetune_steps=12)
    ref_model, ref_rec = training.train_expert("depth", encoder_state, "random-init", prof, data, tmp_path / "ref")
    real_fit = training.fit
    kills = {"expert-depth/probe": {1, 4, 7, 10}, "expert-depth/finetune": {0, 3, 6, 11}}
    done: set = set()

    def fit(*a, **k):
        name = k["name"]

        def callback(step, loss):
            if step in kills.get(name, ()) and (name, step) not in done:
                done.add((name, step))
                raise Kill(step)
        return real_fit(*a, **{**k, "callback": callback, "state_every": 2})

    monkeypatch.setattr(training, "fit", fit)
    interrupts = 0
    while True:
        try:
            model, rec = training.train_expert("depth", encoder_state, "random-init", prof, data, tmp_path / "run")
            break
        except Kill:
            interrupts += 1
    assert interrupts == 8
    strip = st.without_wall_clock
    assert strip(rec.to_dict()) == strip(ref_rec.to_dict())
    assert rec.steps == 24 and rec.samples == 24 * prof.batch_size
    a, b = _state(model), _state(ref_model)
    assert all(torch.equal(a[k], b[k]) for k in b)
    # what the results table reads back from the run directory is the full cost too
    monkeypatch.setattr(training, "fit", lambda *a, **k: pytest.fail("trained again"))
    _, loaded = training.train_expert("depth", encoder_state, "random-init", prof, data, tmp_path / "run")
    assert strip(loaded.to_dict()) == strip(json.loads(json.dumps(ref_rec.to_dict())))


def _damaged_state(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _state_without_losses(path):
    """A state file as the previous format wrote it: same key, no loss history."""
    meta = ckpt.read_metadata(path)
    tensors = {k: v for k, v in ckpt.load_tensors(path).items() if k != "fit.losses"}
    ckpt.save_tensors(tensors, path, metadata=meta)


def _state_with_short_history(path):
    meta = ckpt.read_metadata(path)
    tensors = ckpt.load_tensors(path)
    tensors["fit.losses"] = tensors["fit.losses"][:-1]
    ckpt.save_tensors(tensors, path, metadata=meta)


STATE_CASES = [
    ("truncated-state-file", "restart from step 0, same cost and weights", _damaged_state),
    ("state-without-loss-history", "restart from step 0, same cost and weights", _state_without_losses),
    ("state-with-short-loss-history", "restart from step 0, same cost and weights", _state_with_short_history),
]


@pytest.mark.parametrize("case, outcome, damage", STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_damaged_state_matrix(case, outcome, damage, profile, data, encoder_state, tmp_path, caplog):
    kw = dict(data=data["train"], tasks=("depth",), steps=12, lr=3e-3, batch_size=8, seed=0, state_every=3)
    reference = _model(encoder_state, profile)
    ref_rec = fit(reference, **kw)
    path = tmp_path / "state.safetensors"
    with pytest.raises(Kill):
        fit(_model(encoder_state, profile), state_path=path, callback=_killer({7}), **kw)
    damage(path)
    calls = []
    model = _model(encoder_state, profile)
    rec = fit(model, state_path=path, callback=lambda s, l: calls.append(s), **kw)
    assert calls == list(range(12))                                  # started over
    assert any("restarting from step 0" in r.getMessage() for r in caplog.records)
    _assert_same_run(rec, model, ref_rec, reference)


WORKER = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from simo_lite import foundation, profiles, training
    prof = profiles.get("smoke")
    data = training.load_data(prof, splits=("train",))
    model = training.build_model(foundation.random_encoder_state(prof, seed=0), prof, ("depth",), seed=0)
    kill_at = int(sys.argv[2])
    def callback(step, loss):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    training.fit(model, data["train"], ("depth",), 12, 3e-3, 8, seed=0, state_path=sys.argv[1], state_every=1,
                 callback=callback)
""")


def test_sigkilled_process_resumes(profile, data, encoder_state, tmp_path):
    """A process SIGKILLed mid-training (no Python clean-up at all) leaves a valid state; resuming in
    another process gives the uninterrupted run's cost and weights."""
    kw = dict(data=data["train"], tasks=("depth",), steps=12, lr=3e-3, batch_size=8, seed=0)
    reference = _model(encoder_state, profile)
    ref_rec = fit(reference, **kw)
    path = tmp_path / "state.safetensors"
    proc = subprocess.run([sys.executable, "-c", WORKER, str(path), "6"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert int(ckpt.read_metadata(path)["step"]) == 7
    assert not list(tmp_path.glob(".*.tmp"))
    calls = []
    model = _model(encoder_state, profile)
    rec = fit(model, state_path=path, state_every=1, callback=lambda s, l: calls.append(s), **kw)
    assert calls == list(range(7, 12))
    _assert_same_run(rec, model, ref_rec, reference)
