"""Profiles: working sizes for real datasets, class counts and the validation of data/backbone fields."""
from __future__ import annotations

import pytest

from simo_lite import course, fixtures, profiles


def test_scenes_are_square():
    for name in ("smoke", "cpu", "gpu"):
        p = profiles.get(name)
        assert p.input_hw == (p.image_size, p.image_size)
        assert p.encoder_config()["img_size"] == p.image_size      # the shipped foundation's config


@pytest.mark.parametrize("dataset,patch,image_size,expected", [
    ("nyuv2", 14, 288, (280, 378)),        # the paper's NYUv2 crop
    ("nyuv2", 14, 128, (126, 168)),
    ("nyuv2", 8, 64, (64, 80)),
    ("cityscapes", 14, 288, (126, 252)),   # never upsampled beyond 128 x 256
    ("cityscapes", 16, 128, (128, 256)),
])
def test_real_data_working_size(dataset, patch, image_size, expected):
    p = profiles.get("gpu", dataset=dataset, patch_size=patch, image_size=image_size)
    assert p.input_hw == expected
    assert all(s % patch == 0 for s in p.input_hw)


def test_seg_classes():
    assert profiles.get("cpu").seg_classes == 6
    assert profiles.get("cpu", dataset="nyuv2").seg_classes == 13
    assert profiles.get("cpu", dataset="cityscapes").seg_classes == 7
    assert profiles.get("cpu", dataset="cityscapes", cityscapes_classes=19).seg_classes == 19


def test_validate_errors(tmp_path):
    with pytest.raises(ValueError, match="valid: scenes, nyuv2, cityscapes"):
        profiles.validate(profiles.get("cpu", dataset="nyu"))
    with pytest.raises(ValueError, match="needs data_dir"):
        profiles.validate(profiles.get("cpu", dataset="nyuv2"))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        profiles.validate(profiles.get("cpu", dataset="nyuv2", data_dir=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="needs a pretrained backbone"):
        profiles.validate(profiles.get("cpu", dataset="nyuv2", data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="needs weights"):
        profiles.validate(profiles.get("cpu", backbone="vit_small_patch14_dinov2.lvd142m"))
    with pytest.raises(FileNotFoundError, match="weights file"):
        profiles.validate(profiles.get("cpu", backbone="x", weights=str(tmp_path / "w.safetensors")))
    with pytest.raises(ValueError, match="paper"):
        profiles.validate(profiles.get("paper"))
    with pytest.raises(ValueError, match="7 or 19"):
        profiles.validate(profiles.get("cpu", cityscapes_classes=8))


def test_setup_fills_profile_from_backbone_and_data(tmp_path):
    fx = fixtures.write_fixtures(tmp_path / "fx")
    ctx = course.setup("smoke", run_dir=str(tmp_path / "run"), dataset="nyuv2", data_dir=str(fx["nyuv2"]),
                       backbone=fx["backbone"], weights=str(fx["weights"]))
    p = ctx.profile
    assert (p.n_train, p.n_val, p.n_test) == (6, 4, 2)                    # the fixture's split
    assert p.augment and p.seg_classes == 13
    assert (p.patch_size, p.embed_dim) != (8, 48)                         # taken from the timm model
    assert all(s % p.patch_size == 0 for s in p.input_hw)
    off = course.setup("smoke", run_dir=str(tmp_path / "run2"), dataset="nyuv2", data_dir=str(fx["nyuv2"]),
                       backbone=fx["backbone"], weights=str(fx["weights"]), augment=False)
    assert not off.profile.augment


def test_taps_are_evenly_spaced_blocks_of_the_depth():
    assert profiles.evenly_spaced_taps(12) == (2, 5, 8, 11)            # the paper's blocks 3, 6, 9, 12
    assert profiles.evenly_spaced_taps(8) == (1, 3, 5, 7)
    assert profiles.evenly_spaced_taps(3) == (0, 1, 2) and profiles.evenly_spaced_taps(1) == (0,)
    for name, p in profiles.PROFILES.items():
        assert p.taps == profiles.evenly_spaced_taps(p.depth), name
    with pytest.raises(ValueError, match="at least 1 block"):
        profiles.evenly_spaced_taps(0)


def test_the_valid_class_counts_come_from_the_dataset_registry(tmp_path):
    with pytest.raises(ValueError, match=r"^cityscapes_classes must be 7 or 19, got 8$"):
        profiles.validate(profiles.get("smoke", cityscapes_classes=8))
    with pytest.raises(ValueError, match=r"^the 'paper' profile .*dataset='nyuv2' or 'cityscapes' with data_dir"):
        profiles.validate(profiles.get("paper"))


def test_each_fix_has_its_own_step_budget_defaulting_to_realign_steps():
    p = profiles.get("cpu")
    assert (p.head_steps, p.repr_steps) == (p.realign_steps, p.realign_steps)
    q = profiles.get("cpu", head_realign_steps=1600, repr_realign_steps=200)
    assert (q.head_steps, q.repr_steps) == (1600, 200)
    assert q.training_dict() == p.training_dict()            # a realignment budget never retrains the experts


def test_a_realignment_budget_reuses_the_alpha_sweeps_but_not_the_rows(tmp_path):
    from simo_lite.experiment import Experiment
    a = Experiment(profiles.get("smoke"), "depth,normals", 0, "cpu", tmp_path / "a")
    b = Experiment(profiles.get("smoke", head_realign_steps=9), "depth,normals", 0, "cpu", tmp_path / "b")
    assert a.alpha_artifact("ta").key == b.alpha_artifact("ta").key
    assert a.row_artifact("ta+head").key != b.row_artifact("ta+head").key
    c = Experiment(profiles.get("smoke", n_val=40), "depth,normals", 0, "cpu", tmp_path / "c")
    assert c.alpha_artifact("ta").key != a.alpha_artifact("ta").key
