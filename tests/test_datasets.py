"""Real-data loaders (NYUv2 / Cityscapes, MTAN layout) on the fixture datasets, splits and augmentation."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
import torch.utils.data as D

from simo_lite import datasets as ds
from simo_lite import fixtures


@pytest.fixture(scope="module")
def nyu(tmp_path_factory):
    return fixtures.write_nyuv2(tmp_path_factory.mktemp("nyuv2"))          # 6 train, 6 val at 288 x 384


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return fixtures.write_cityscapes(tmp_path_factory.mktemp("cityscapes"))  # 10 train, 4 val at 128 x 256


@pytest.fixture(scope="module")
def nyu_val(nyu):
    return ds.load_real("nyuv2", nyu, "val")


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------------------------------
# on-disk format of the fixtures (what the MTAN loader reads)
# ---------------------------------------------------------------------------------------------
def test_fixture_files_have_the_mtan_shapes(nyu, city):
    for sub, shape in (("image", (288, 384, 3)), ("label", (288, 384)), ("depth", (288, 384, 1)),
                       ("normal", (288, 384, 3))):
        a = np.load(nyu / "train" / sub / "0.npy")
        assert a.shape == shape and a.dtype == np.float32, sub
    for sub, shape in (("image", (128, 256, 3)), ("label_7", (128, 256)), ("label_19", (128, 256)),
                       ("depth", (128, 256, 1))):
        a = np.load(city / "val" / sub / "3.npy")
        assert a.shape == shape and a.dtype == np.float32, sub
    lab = np.load(nyu / "val" / "label" / "2.npy")
    assert (lab == -1).any() and set(np.unique(lab)) <= set(range(-1, 13))
    assert (np.load(nyu / "val" / "depth" / "2.npy") == 0).any()


# ---------------------------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------------------------
def test_nyuv2_split_keys_shapes_dtypes_ranges(nyu, nyu_val):
    d = ds.load_real("nyuv2", nyu, "train")
    assert set(d) == {"image", "seg", "depth", "normals"} == {"image", *ds.DATASET_TASKS["nyuv2"]}
    assert d["image"].shape == (6, 3, 288, 384) and d["image"].dtype == torch.float32
    assert d["seg"].shape == (6, 288, 384) and d["seg"].dtype == torch.int64
    assert d["depth"].shape == (6, 1, 288, 384) and d["depth"].dtype == torch.float32
    assert d["normals"].shape == (6, 3, 288, 384) and d["normals"].dtype == torch.float32
    assert 0 <= d["image"].min() and d["image"].max() <= 1
    assert set(d["seg"].unique().tolist()) <= set(range(-1, 13))
    # ignore conventions preserved: seg -1, depth 0, normals all-zero; valid normals are unit vectors
    assert (d["seg"] == -1).any() and (d["depth"] == 0).any() and (d["depth"] > 0).any()
    norm = d["normals"].norm(dim=1)
    assert ((norm - 1).abs() < 1e-5).logical_or(norm == 0).all() and (norm == 0).any()
    assert torch.equal(norm == 0, d["depth"][:, 0] == 0)          # the fixture's holes coincide
    # the values are exactly the files' (no resize at the native size)
    raw = np.load(nyu / "train" / "label" / "4.npy")
    assert torch.equal(d["seg"][4], torch.from_numpy(raw).long())
    raw = np.load(nyu / "train" / "image" / "4.npy")
    assert torch.equal(d["image"][4], torch.from_numpy(raw).permute(2, 0, 1))
    assert nyu_val["image"].shape[0] == 4


def test_cityscapes_7_and_19_classes(city):
    d7 = ds.load_real("cityscapes", city, "test")
    d19 = ds.load_real("cityscapes", city, "test", classes=19)
    assert set(d7) == {"image", "seg", "depth"} == {"image", *ds.DATASET_TASKS["cityscapes"]}
    assert d7["image"].shape == (4, 3, 128, 256) and d7["seg"].shape == (4, 128, 256)
    assert d7["depth"].shape == (4, 1, 128, 256)
    assert set(d7["seg"].unique().tolist()) <= set(range(-1, 7))
    assert set(d19["seg"].unique().tolist()) <= set(range(-1, 19)) and d19["seg"].max() >= 7
    assert torch.equal(d7["seg"] == -1, d19["seg"] == -1)
    assert torch.equal(d7["image"], d19["image"])
    assert (d7["depth"] == 0).any() and d7["depth"].max() < 1            # disparity, 0 = invalid
    assert ds.num_classes("cityscapes") == 7 and ds.num_classes("cityscapes", 19) == 19
    assert ds.num_classes("nyuv2") == 13 and ds.num_classes("scenes") == 6
    with pytest.raises(ValueError, match="7 or 19"):
        ds.num_classes("cityscapes", 5)


def test_first_n_images_of_a_split(nyu, nyu_val):
    d = ds.load_real("nyuv2", nyu, "val", n=2)
    assert d["image"].shape[0] == 2 and torch.equal(d["depth"], nyu_val["depth"][:2])


# ---------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------
def test_split_sizes_are_proportional_disjoint_and_fixed(nyu, city):
    assert ds.split_sizes("nyuv2", nyu) == {"train": 6, "val": 4, "test": 2}       # round(6*400/654) = 4
    assert ds.split_sizes("cityscapes", city) == {"train": 8, "val": 2, "test": 4}  # round(10*595/2975) = 2
    for name, root, folder in (("nyuv2", nyu, "val"), ("cityscapes", city, "train")):
        parts = {s: ds.split_indices(name, root, s) for s in ("train", "val", "test")}
        held = [s for s in parts if parts[s][0] == folder]
        assert len(held) == 2                                                      # one folder split in two
        a, b = (set(parts[s][1]) for s in held)
        assert not a & b and a | b == set(range(len(a) + len(b)))
        assert parts == {s: ds.split_indices(name, root, s) for s in parts}        # deterministic
    # the full-size arithmetic of the paper, and the permutation random_split draws with the fixed seed
    assert ds._held_out("nyuv2", 654) == 400 and ds._held_out("cityscapes", 2975) == 595
    assert ds._held_out("nyuv2", 2) == 1 and ds._held_out("cityscapes", 2) == 1
    val, _ = D.random_split(range(654), [400, 254], generator=torch.Generator().manual_seed(ds.SPLIT_SEED))
    assert ds._permutation(654)[:400] == list(val.indices)


def test_split_does_not_depend_on_the_torch_seed(nyu):
    torch.manual_seed(123)
    a = ds.split_indices("nyuv2", nyu, "val")
    torch.manual_seed(7)
    assert ds.split_indices("nyuv2", nyu, "val") == a


# ---------------------------------------------------------------------------------------------
# resizing
# ---------------------------------------------------------------------------------------------
def test_resize_keeps_label_values_from_the_original_set(nyu, nyu_val):
    d = ds.load_real("nyuv2", nyu, "val", size=(140, 189))
    assert d["image"].shape == (4, 3, 140, 189) and d["seg"].shape == (4, 140, 189)
    assert d["depth"].shape == (4, 1, 140, 189) and d["normals"].shape == (4, 3, 140, 189)
    assert d["seg"].dtype == torch.int64 and 0 <= d["image"].min() and d["image"].max() <= 1
    for i in range(4):                                   # nearest: every value exists in the same image
        assert set(d["seg"][i].unique().tolist()) <= set(nyu_val["seg"][i].unique().tolist())
        assert set(d["depth"][i].unique().tolist()) <= set(nyu_val["depth"][i].unique().tolist())
    assert (d["seg"] == -1).any() and (d["depth"] == 0).any()
    norm = d["normals"].norm(dim=1)
    assert ((norm - 1).abs() < 1e-5).logical_or(norm == 0).all()
    # the image is a smooth (bilinear) resize: its mean colour stays close
    assert (d["image"].mean((2, 3)) - nyu_val["image"].mean((2, 3))).abs().max() < 0.02
    square = ds.load_real("nyuv2", nyu, "val", size=32, n=1)
    assert square["image"].shape == (1, 3, 32, 32)


# ---------------------------------------------------------------------------------------------
# clear errors
# ---------------------------------------------------------------------------------------------
def test_missing_folder_names_the_path_and_layout(nyu, tmp_path):
    root = _copy(nyu, tmp_path)
    shutil.rmtree(root / "val" / "normal")
    with pytest.raises(FileNotFoundError, match=re.escape(str(root / "val" / "normal"))) as e:
        ds.load_real("nyuv2", root, "test")
    assert "label/" in str(e.value) and "(288, 384, 3)" in str(e.value)            # the expected layout
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere" / "train" / "image"))):
        ds.load_real("nyuv2", tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match="label_19"):
        ds.load_real("cityscapes", root, "train", classes=19)                      # NYUv2 folder given


def test_missing_file_and_wrong_shape_name_the_file(nyu, tmp_path):
    root = _copy(nyu, tmp_path)
    (root / "train" / "depth" / "3.npy").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(root / "train" / "depth" / "3.npy"))):
        ds.load_real("nyuv2", root, "train")
    i = ds.split_indices("nyuv2", root, "val")[1][0]                              # a file of the val split
    bad = root / "val" / "label" / f"{i}.npy"
    np.save(bad, np.zeros((288, 384, 1), np.float32))
    with pytest.raises(ValueError, match=re.escape(str(bad)) + r".*shape \(288, 384, 1\).*expected \(288, 384\)"):
        ds.load_real("nyuv2", root, "val")
    np.save(bad, np.full((288, 384), 13, np.float32))
    with pytest.raises(ValueError, match=re.escape(str(bad)) + r".*outside 0\.\.12"):
        ds.load_real("nyuv2", root, "val")
    img = root / "val" / "image" / f"{i}.npy"
    np.save(img, np.full((288, 384, 3), 255, np.float32))
    with pytest.raises(ValueError, match=re.escape(str(img)) + r".*\[0, 1\]"):
        ds.load_real("nyuv2", root, "val")
    with pytest.raises(ValueError, match="unknown dataset"):
        ds.load_real("nyu", root, "val")
    with pytest.raises(ValueError, match="unknown split"):
        ds.load_real("nyuv2", root, "validation")


# ---------------------------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def batch(nyu_val):
    return ds.resize_batch({k: v[:3] for k, v in nyu_val.items()}, (96, 128))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_scale_one_without_flip_is_identity(batch):
    out = ds.augment(batch, _gen(), scales=(1.0,), flip=False)
    assert all(torch.equal(out[k], batch[k]) and out[k].dtype == batch[k].dtype for k in batch)
    assert out["image"] is not batch["image"]                                      # a new dict of new tensors


def test_flip_mirrors_and_negates_normal_x(batch):
    # with scale 1 every image is either untouched or mirrored; find which per image
    out = ds.augment(batch, _gen(3), scales=(1.0,))
    flipped = [not torch.equal(out["image"][b], batch["image"][b]) for b in range(3)]
    assert any(flipped)
    for b, f in enumerate(flipped):
        if not f:
            assert all(torch.equal(out[k][b], batch[k][b]) for k in batch)
            continue
        assert torch.equal(out["image"][b], batch["image"][b].flip(-1))
        assert torch.equal(out["seg"][b], batch["seg"][b].flip(-1))
        assert torch.equal(out["depth"][b], batch["depth"][b].flip(-1))
        assert torch.equal(out["normals"][b, 0], -batch["normals"][b, 0].flip(-1))
        assert torch.equal(out["normals"][b, 1:], batch["normals"][b, 1:].flip(-1))


def test_scale_divides_depth_and_keeps_label_sets(batch):
    out = ds.augment(batch, _gen(1), scales=(2.0,), flip=False)
    for b in range(3):
        src = set(batch["depth"][b].unique().tolist())
        got = set((out["depth"][b] * 2).unique().tolist())                     # depth / s, s = 2
        assert got <= src
        assert set(out["seg"][b].unique().tolist()) <= set(batch["seg"][b].unique().tolist())
    assert out["image"].shape == batch["image"].shape and out["seg"].dtype == torch.int64
    # a 2x zoom of a 48 x 64 window (nearest): each aligned 2 x 2 block of the output repeats one label
    s = out["seg"][0]
    assert torch.equal(s[0::2, 0::2], s[1::2, 1::2]) and torch.equal(s[0::2, 0::2], s[1::2, 0::2])
    norm = out["normals"].norm(dim=1)
    assert ((norm - 1).abs() < 1e-5).logical_or(norm == 0).all()
    disp = ds.augment(batch, _gen(1), scales=(2.0,), flip=False, disparity=True)
    assert torch.equal(disp["depth"], out["depth"] * 4)                        # disparity * s instead of / s
    assert torch.equal(ds.augmenter("cityscapes")({"depth": batch["depth"]}, _gen(5))["depth"],
                       ds.augment({"depth": batch["depth"]}, _gen(5), disparity=True)["depth"])


def test_augment_is_a_function_of_the_generator(batch):
    a = ds.augment(batch, _gen(7))
    b = ds.augment(batch, _gen(7))
    c = ds.augment(batch, _gen(8))
    assert all(torch.equal(a[k], b[k]) for k in batch)
    assert not all(torch.equal(a[k], c[k]) for k in batch)
    before = {k: v.clone() for k, v in batch.items()}
    ds.augment(batch, _gen(9))
    assert all(torch.equal(before[k], batch[k]) for k in batch)                # input untouched


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augment_on_cuda_matches_cpu(batch):
    cpu = ds.augment(batch, _gen(4))
    gpu = ds.augment({k: v.cuda() for k, v in batch.items()}, _gen(4))
    assert torch.equal(cpu["seg"], gpu["seg"].cpu()) and torch.equal(cpu["depth"], gpu["depth"].cpu())
    assert torch.allclose(cpu["image"], gpu["image"].cpu(), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the dataset registry (simo_lite.data): every dataset difference is a field of its spec
# ---------------------------------------------------------------------------------------------
def test_registry_holds_the_three_datasets_and_its_views_follow_it():
    from simo_lite import data, profiles, scenes
    assert list(data.DATASETS) == ["scenes", "nyuv2", "cityscapes"]
    assert profiles.DATASETS is data.DATASETS and ", ".join(profiles.DATASETS) == "scenes, nyuv2, cityscapes"
    assert dict(ds.DATASET_TASKS) == {"scenes": ("seg", "depth", "normals", "edges", "albedo", "shading",
                                                 "texture_edges", "keypoints", "autoencoder"),
                                      "nyuv2": ("seg", "depth", "normals"), "cityscapes": ("seg", "depth")}
    assert dict(ds.NATIVE_HW) == dict(profiles.NATIVE_HW) == {"nyuv2": (288, 384), "cityscapes": (128, 256)}
    assert "scenes" not in ds.NATIVE_HW and ds.CITYSCAPES_CLASSES == (7, 19)
    assert data.DATASETS["scenes"].seg_classes == (scenes.NUM_CLASSES,)          # the renderer's classes
    assert [ds.num_classes(n) for n in data.DATASETS] == [6, 13, 7] and ds.num_classes("cityscapes", 19) == 19
    with pytest.raises(TypeError):
        ds.DATASET_TASKS["nyuv2"] = ("seg",)                                      # a read-only view


@pytest.mark.parametrize("call", [
    lambda: ds.num_classes("nyu"), lambda: ds.layout("nyu"), lambda: ds.augmenter("nyu"),
    lambda: ds.split_sizes("nyu", "."), lambda: ds.DATASET_TASKS["nyu"],
    lambda: __import__("simo_lite.profiles").profiles.get("smoke", dataset="nyu").input_hw,
    lambda: __import__("simo_lite.profiles").profiles.get("smoke", dataset="nyu").seg_classes,
    lambda: __import__("simo_lite.data").data.load_data(__import__("simo_lite.profiles").profiles.get("smoke", dataset="nyu")),
], ids=["num_classes", "layout", "augmenter", "split_sizes", "DATASET_TASKS", "input_hw", "seg_classes", "load_data"])
def test_an_unknown_dataset_names_the_valid_ones_everywhere(call):
    with pytest.raises(ValueError, match=r"^unknown dataset 'nyu'; valid: scenes, nyuv2, cityscapes$"):
        call()


def test_rendered_dataset_and_bad_class_counts_are_clear_errors():
    with pytest.raises(ValueError, match="'scenes' is rendered, not read from files.*nyuv2, cityscapes"):
        ds.load_real("scenes", ".", "train")
    with pytest.raises(ValueError, match=r"^NYUv2 segmentation has 13 classes, got classes=7$"):
        ds.num_classes("nyuv2", 7)
    with pytest.raises(ValueError, match=r"^Cityscapes segmentation has 7 or 19 classes, got classes=5$"):
        ds.num_classes("cityscapes", 5)


def test_load_data_checks_the_split_names():
    from simo_lite import data, profiles
    prof = profiles.get("smoke", n_val=4)
    with pytest.raises(ValueError, match=r"^unknown split 'validation'; valid: train, val, test$"):
        data.load_data(prof, splits=("val", "validation"))
    with pytest.raises(ValueError, match="no split to load"):
        data.load_data(prof, splits=())
    one = data.load_data(prof, splits="val")                        # a single name is one split
    assert list(one) == ["val"] and len(one["val"]["image"]) == 4


def test_a_new_dataset_in_the_mtan_layout_is_one_registration(nyu, tmp_path):
    """Register a dataset (here: NYUv2's layout under another name, a smaller native size): the
    loaders, splits, profiles, notebook parameters and the runner's task defaults all follow."""
    from simo_lite import course, data, params, profiles
    root = tmp_path / "mini"
    for split in ("train", "val"):                                   # the fixture cropped to 96 x 128
        for sub in ("image", "label", "depth", "normal"):
            (root / split / sub).mkdir(parents=True)
            for f in (nyu / split / sub).iterdir():
                np.save(root / split / sub / f.name, np.load(f)[:96, :128])
    spec = data.DatasetSpec(name="mini", title="Mini", tasks=("seg", "depth"), seg_classes=(13,),
                            native_hw=(96, 128), folders={"image": "image", "seg": "label", "depth": "depth"},
                            whole={"train": "train"}, divided="val", held_out=(1, 2))
    data.register_dataset(spec)
    try:
        assert "mini" in profiles.DATASETS and ds.DATASET_TASKS["mini"] == ("seg", "depth")
        assert ds.split_sizes("mini", root) == {"train": 6, "val": 3, "test": 3}
        prof = profiles.get("smoke", dataset="mini", data_dir=str(root))
        with pytest.raises(ValueError, match="dataset 'mini' needs a pretrained backbone"):
            profiles.validate(prof)                                      # read from files: no course foundation
        prof = course.real_data_profile(prof)
        assert (prof.n_train, prof.n_val, prof.n_test, prof.augment) == (6, 3, 3, True)
        assert prof.input_hw == (32, 40) and prof.seg_classes == 13          # height 32, patch 8, aspect kept
        split = data.load_data(prof, splits=("test",))["test"]
        assert set(split) == {"image", "seg", "depth"} and split["image"].shape == (3, 3, 32, 40)
        assert params.check(prof, tasks="seg,depth")["tasks"] == ("seg", "depth")
        with pytest.raises(ValueError, match="dataset 'mini' labels \\(seg, depth\\).*no labels for normals"):
            params.check(prof, tasks="nyu3")
        assert course._dataset_tasks("mini") == ("seg", "depth")
        assert "mini/" not in ds.layout("mini") and "label/" in ds.layout("mini")
    finally:
        data.DATASETS.unregister("mini")
    with pytest.raises(ValueError, match="unknown dataset 'mini'"):
        ds.split_sizes("mini", root)


@pytest.mark.parametrize("bad,message", [
    (dict(seg_classes=()), "at least one class count"),
    (dict(seg_classes=(7, 19)), "classes_field"),
    (dict(native_hw=None), "native_hw"),
    (dict(folders={"image": "image"}), "folders must map exactly image and its tasks"),
    (dict(whole={"val": "val"}), "val must be the held-out part"),
    (dict(held_out=(5, 2)), "val must be the held-out part"),
])
def test_a_dataset_spec_is_checked_when_made(bad, message):
    from simo_lite import data
    good = dict(name="x", title="X", tasks=("seg",), seg_classes=(3,), native_hw=(8, 8),
                folders={"image": "image", "seg": "label"}, whole={"train": "train"}, divided="val", held_out=(1, 2))
    data.DatasetSpec(**good)
    with pytest.raises(ValueError, match=message):
        data.DatasetSpec(**{**good, **bad})
