"""The foundation's second stage: dense appearance invariance (VICReg on two looks of the same scenes)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from simo_lite import checkpoints as ckpt
from simo_lite import foundation as Fd
from simo_lite import profiles


def test_simmim_only_configs_keep_their_hash():
    # the shipped cpu checkpoint was made before stage 2 existed: its config hash must still match
    manifest = json.loads((Fd.SHIPPED_DIR / "foundation-cpu.json").read_text())
    assert ckpt.config_hash(Fd.foundation_config(profiles.get("cpu", invariance_steps=0))) == manifest["config_hash"]
    # the cpu profile's default is the two-stage encoder, shipped beside it
    invariant = json.loads((Fd.SHIPPED_DIR / "foundation-cpu-invariant.json").read_text())
    assert ckpt.config_hash(Fd.foundation_config(profiles.get("cpu"))) == invariant["config_hash"]
    cfg = Fd.foundation_config(profiles.get("cpu", invariance_steps=100))
    assert cfg["invariance"]["steps"] == 100 and ckpt.config_hash(cfg) != manifest["config_hash"]


def test_vicreg_terms_by_construction():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 5, 8, generator=g) * 3                      # (B, N, D), std 3 > 1 everywhere
    inv, var, cov = Fd.vicreg_terms(z, z.clone())
    assert float(inv) == 0.0 and float(var) == 0.0 and float(cov) > 0
    # features that only encode the token position (the same in every scene) get the full variance penalty
    pos = torch.randn(1, 5, 8, generator=g).expand(16, 5, 8) * 10
    _, var_pos, cov_pos = Fd.vicreg_terms(pos, pos)
    assert float(var_pos) == pytest.approx(1 - math.sqrt(1e-4), abs=1e-5) and float(cov_pos) < 1e-12
    # decorrelated unit-variance features: no covariance penalty to speak of
    white = torch.randn(4096, 1, 4, generator=g)
    assert float(Fd.vicreg_terms(white, white)[2]) < 0.01


def test_invariance_stage_is_seeded_and_moves_the_encoder():
    prof = profiles.get("smoke", invariance_steps=2)
    init = Fd.random_encoder_state(prof, 0)
    a, info = Fd.invariance_stage(prof, init, seed=0)
    b, _ = Fd.invariance_stage(prof, init, seed=0)
    assert all(torch.equal(a[k], b[k]) for k in a)                  # same seed, same weights
    assert any(not torch.equal(a[k], init[k]) for k in a)           # two steps changed something
    assert info["steps"] == 2 and math.isfinite(info["loss_last"])
    assert {"invariance_last", "variance_last", "covariance_last"} <= set(info)
    with pytest.raises(ValueError, match="renders Scenes views"):
        Fd.invariance_stage(profiles.get("smoke", dataset="nyuv2", invariance_steps=1), init)


def test_pretrain_runs_both_stages_and_keeps_wall_clock_out_of_the_state():
    prof = profiles.get("smoke", foundation_steps=2, invariance_steps=2)
    state, info = Fd.pretrain(prof, seed=0)
    assert info["steps"] == 2 and info["invariance"]["steps"] == 2
    assert "wall_s" not in info["invariance"] and "threads" not in info["invariance"]
    assert set(state) == set(Fd.random_encoder_state(prof, 0))


def test_shipped_variants_are_found_by_name_and_matched_by_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(Fd, "SHIPPED_DIR", tmp_path)
    prof = profiles.get("smoke", foundation_steps=1, invariance_steps=1)
    state = Fd.random_encoder_state(prof, 0)
    h = ckpt.config_hash(Fd.foundation_config(prof))
    ckpt.save_tensors(state, tmp_path / "foundation-smoke-other.safetensors", metadata={"config_hash": "nope"})
    ckpt.save_tensors(state, tmp_path / "foundation-smoke-invariant.safetensors", metadata={"config_hash": h})
    assert [p.name for p in Fd.shipped_checkpoints(prof)] == ["foundation-smoke-invariant.safetensors",
                                                              "foundation-smoke-other.safetensors"]
    loaded, got = Fd.load_foundation(prof)                          # no run_dir: would pretrain if none matched
    assert got == h and all(torch.equal(loaded[k], state[k]) for k in state)


def test_every_cpu_run_seed_shares_the_seed_0_foundation():
    cpu = profiles.get("cpu")
    assert cpu.foundation_seed == 0 and profiles.get("smoke").foundation_seed is None
    assert Fd.foundation_config(cpu, 3) == Fd.foundation_config(cpu, 0)
    state, h = Fd.load_foundation(cpu, seed=3)                      # the shipped file, not a new pretraining
    manifest = json.loads((Fd.SHIPPED_DIR / "foundation-cpu-invariant.json").read_text())
    assert h == manifest["config_hash"]
    smoke = profiles.get("smoke")
    assert Fd.foundation_config(smoke, 1) != Fd.foundation_config(smoke, 0)   # smoke: each seed its own


def test_pretrain_from_a_given_stage_1_runs_stage_2_only():
    prof = profiles.get("smoke", invariance_steps=2)
    init = Fd.random_encoder_state(prof, 0)
    state, info = Fd.pretrain(prof, seed=0, stage1=(init, {"loss_first": 1.0, "loss_last": 0.5, "wall_s": 3.0}))
    alone, _ = Fd.invariance_stage(prof, init, seed=0)
    assert all(torch.equal(state[k], alone[k]) for k in state)           # the same stage 2, nothing before it
    assert (info["loss_first"], info["loss_last"], info["steps"]) == (1.0, 0.5, prof.foundation_steps)
    assert info["wall_s"] >= 3.0 and info["invariance"]["steps"] == 2 and "wall_s" not in info["invariance"]
