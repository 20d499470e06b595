"""SIMO-lite Scenes: label shapes and ranges, geometric consistency, determinism, splits and caching."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from simo_lite import profiles, scenes
from simo_lite.scenes import CLASSES, NUM_CLASSES, SPLIT_OFFSETS, ScenesDataset, load_split, make_scenes

KEYS = {"image", "seg", "depth", "normals", "edges", "albedo", "shading", "texture_edges", "keypoints", "autoencoder"}


@pytest.fixture(scope="module")
def batch32():
    """64 scenes at 32 px, seed 0, rendered once (one vectorised batch of 64)."""
    return make_scenes(64, size=32, seed=0)


@pytest.fixture(scope="module")
def batch64():
    """16 scenes at 64 px, for the finite-difference geometry check."""
    return make_scenes(16, size=64, seed=3)


# ------------------------------------------------------------------------------------------------
# keys, shapes, dtypes, ranges
# ------------------------------------------------------------------------------------------------
def _check_labels(d: dict, n: int, size: int) -> None:
    assert set(d) == KEYS
    H = W = size
    assert d["image"].shape == (n, 3, H, W) and d["image"].dtype == torch.float32
    assert d["seg"].shape == (n, H, W) and d["seg"].dtype == torch.int64
    assert d["depth"].shape == (n, 1, H, W) and d["depth"].dtype == torch.float32
    assert d["normals"].shape == (n, 3, H, W) and d["normals"].dtype == torch.float32
    assert d["edges"].shape == (n, 1, H, W) and d["edges"].dtype == torch.float32
    assert d["albedo"].shape == (n, 3, H, W) and d["albedo"].dtype == torch.float32
    assert d["shading"].shape == (n, 1, H, W) and d["shading"].dtype == torch.float32
    for k in ("texture_edges", "keypoints"):
        assert d[k].shape == (n, 1, H, W) and d[k].dtype == torch.float32 and set(d[k].unique().tolist()) <= {0.0, 1.0}
    assert d["autoencoder"] is d["image"]                     # the autoencoder's target: the image itself

    assert d["image"].min() >= 0 and d["image"].max() <= 1
    assert d["albedo"].min() >= 0 and d["albedo"].max() <= 1
    assert d["seg"].min() >= 0 and d["seg"].max() < NUM_CLASSES
    assert torch.isfinite(d["depth"]).all() and (d["depth"] > 0).all()
    assert torch.isfinite(d["normals"]).all()
    assert torch.allclose(d["normals"].norm(dim=1), torch.ones(n, H, W), atol=1e-4, rtol=0)
    assert set(d["edges"].unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("size", [32, 48])
def test_keys_shapes_dtypes_ranges(size, batch32):
    d = batch32 if size == 32 else make_scenes(3, size=size, seed=1)
    _check_labels(d, len(d["image"]), size)


def test_labels_are_not_degenerate(batch32):
    # images have contrast, there are both edge and non-edge pixels, depth spans the room
    assert batch32["image"].std() > 0.05
    frac_edges = batch32["edges"].mean().item()
    assert 0.01 < frac_edges < 0.5
    assert batch32["depth"].max() > 3 * batch32["depth"].min()


def test_segment_boundaries_are_edges(batch32):
    """Two classes side by side are two surfaces: the left/upper pixel of the pair is an edge."""
    seg, edges = batch32["seg"], batch32["edges"][:, 0].bool()
    horiz = seg[:, :, :-1] != seg[:, :, 1:]
    vert = seg[:, :-1, :] != seg[:, 1:, :]
    assert horiz.any() and vert.any()
    assert edges[:, :, :-1][horiz].all()
    assert edges[:, :-1, :][vert].all()
    # the last column/row has no right/lower neighbour, so only vertical/horizontal boundaries there
    assert not (edges[:, -1, -1]).any()


def test_shading_is_between_ambient_and_albedo(batch32):
    ambient = scenes.DEFAULT_OPTIONS["ambient"]
    image, albedo = batch32["image"], batch32["albedo"]
    assert (image <= albedo + 1e-6).all()
    assert (image >= ambient * albedo - 1e-6).all()


def test_shadows_only_darken():
    lit = make_scenes(4, size=16, seed=2, shadows=False)
    shaded = make_scenes(4, size=16, seed=2, shadows=True)
    assert (shaded["image"] <= lit["image"] + 1e-6).all()
    assert (shaded["image"] < lit["image"] - 1e-3).any()  # some pixel is in shadow
    for k in ("seg", "depth", "normals", "edges", "albedo"):  # labels do not depend on lighting
        assert torch.equal(lit[k], shaded[k]), k


def test_zero_scenes_keeps_shapes():
    d = make_scenes(0, size=16)
    assert set(d) == KEYS
    assert d["image"].shape == (0, 3, 16, 16)
    assert d["seg"].shape == (0, 16, 16)


def test_class_names():
    assert NUM_CLASSES >= 6
    assert NUM_CLASSES == len(CLASSES)
    for name in ("floor", "wall", "sphere", "box", "cylinder"):
        assert name in CLASSES


def test_every_class_appears(batch32):
    counts = torch.bincount(batch32["seg"].flatten(), minlength=NUM_CLASSES)
    missing = [CLASSES[c] for c in range(NUM_CLASSES) if counts[c] == 0]
    assert not missing, f"classes never rendered in 64 scenes: {missing}"


def test_normals_face_the_camera(batch32):
    size = 32
    rays = scenes.camera_rays(size).reshape(size, size, 3).permute(2, 0, 1)  # (3, H, W)
    assert torch.allclose(rays[2], torch.ones(size, size))                  # z = 1 convention
    dot = (batch32["normals"] * rays).sum(1)                                 # (N, H, W)
    assert (dot < 0).all(), f"{int((dot >= 0).sum())} normals point away from the camera"


def test_camera_rays_geometry():
    size, fov = 16, 60.0
    rays = scenes.camera_rays(size, fov)
    assert rays.shape == (size * size, 3)
    # symmetric about the optical axis, right/down positive, half-width equals tan(fov/2) at the border
    grid = rays.reshape(size, size, 3)
    assert torch.allclose(grid[:, :, 0], -grid.flip(1)[:, :, 0])
    assert torch.allclose(grid[:, :, 1], -grid.flip(0)[:, :, 1])
    assert grid[0, -1, 0] > 0 and grid[-1, 0, 1] > 0
    edge_x = grid[0, -1, 0] + 0.5 * (grid[0, -1, 0] - grid[0, -2, 0])        # outer border of the last pixel
    assert edge_x.item() == pytest.approx(math.tan(math.radians(fov / 2)), rel=1e-5)


def test_depth_and_normals_are_consistent(batch64):
    """Normals from finite differences of the depth map agree with the rendered normals."""
    d = batch64
    est = scenes.normals_from_depth(d["depth"])                               # (N, 3, H, W)
    near_edge = F.max_pool2d(d["edges"], 3, stride=1, padding=1)[:, 0] > 0   # any edge in the 3x3 window
    # an edge flag sits on the left/upper pixel of a boundary: also exclude their right/lower neighbours
    near_edge[:, :, 1:] |= near_edge[:, :, :-1].clone()
    near_edge[:, 1:, :] |= near_edge[:, :-1, :].clone()
    interior = ~near_edge
    interior[:, 0, :] = interior[:, -1, :] = False
    interior[:, :, 0] = interior[:, :, -1] = False
    planar = torch.zeros_like(interior)
    for name in ("floor", "wall", "ceiling", "box"):
        planar |= d["seg"] == CLASSES.index(name)
    mask = interior & planar
    assert mask.sum() > 0.3 * mask.numel()
    cos = (est * d["normals"]).sum(1).clamp(-1, 1)
    angle = torch.rad2deg(torch.acos(cos))
    assert angle[mask].mean() < 5.0
    # curved surfaces still agree on average (central differences are a secant)
    assert angle[interior].mean() < 5.0


# ------------------------------------------------------------------------------------------------
# determinism and batching independence
# ------------------------------------------------------------------------------------------------
def test_same_seed_is_bitwise_identical():
    a = make_scenes(4, size=32, seed=7)
    b = make_scenes(4, size=32, seed=7)
    for k in KEYS:
        assert torch.equal(a[k], b[k]), k


def test_different_seed_differs():
    a = make_scenes(4, size=32, seed=7)
    b = make_scenes(4, size=32, seed=8)
    assert not torch.equal(a["image"], b["image"])
    for i in range(4):  # every scene differs, not only one
        assert not torch.equal(a["image"][i], b["image"][i])


def _assert_same_scenes(a: dict, b: dict, exact: bool) -> None:
    for k in KEYS:
        if exact or k in ("seg", "edges", "albedo", "texture_edges"):
            assert torch.equal(a[k], b[k]), k
        elif k == "keypoints":                    # thresholded float responses: a rare pixel may flip
            assert (a[k] != b[k]).float().mean() < 1e-3, k
        else:
            assert torch.allclose(a[k], b[k], rtol=0, atol=1e-5), k


def test_scene_independent_of_batch_position(batch32):
    i = 5
    alone = make_scenes(1, size=32, seed=0, first_index=i)
    _assert_same_scenes({k: v[0] for k, v in alone.items()}, {k: v[i] for k, v in batch32.items()}, exact=True)


def test_prefix_stays_the_same_when_n_grows(batch32):
    short = make_scenes(6, size=32, seed=0)
    _assert_same_scenes(short, {k: v[:6] for k, v in batch32.items()}, exact=True)


def test_batch_size_option_changes_nothing(batch32):
    small_batches = make_scenes(8, size=32, seed=0, batch_size=3)
    _assert_same_scenes(small_batches, {k: v[:8] for k, v in batch32.items()}, exact=True)


# Scene i depends only on (seed, i): bitwise, whatever batch it is rendered in.
def test_scene_bitwise_independent_of_batching(batch32):
    alone = make_scenes(1, size=32, seed=0, first_index=5)
    _assert_same_scenes({k: v[0] for k, v in alone.items()}, {k: v[5] for k, v in batch32.items()}, exact=True)
    small_batches = make_scenes(8, size=32, seed=0, batch_size=3)
    _assert_same_scenes(small_batches, {k: v[:8] for k, v in batch32.items()}, exact=True)


# ------------------------------------------------------------------------------------------------
# argument validation
# ------------------------------------------------------------------------------------------------
def test_unknown_option_lists_valid_names():
    with pytest.raises(ValueError) as e:
        make_scenes(1, size=16, not_an_option=1)
    msg = str(e.value)
    assert "not_an_option" in msg
    for name in scenes.DEFAULT_OPTIONS:
        assert name in msg


def test_bad_split_lists_valid_names():
    with pytest.raises(ValueError) as e:
        load_split("training", 2, size=16, cache=False)
    msg = str(e.value)
    assert "training" in msg
    for name in ("train", "val", "test"):
        assert name in msg


@pytest.mark.parametrize("kwargs", [dict(n=-1), dict(size=2), dict(max_objects=0), dict(max_objects=10)])
def test_bad_arguments_raise(kwargs):
    args = {"n": 1, "size": 16, **kwargs}
    with pytest.raises(ValueError):
        make_scenes(args.pop("n"), **args)


# ------------------------------------------------------------------------------------------------
# splits and cache
# ------------------------------------------------------------------------------------------------
def test_splits_are_disjoint():
    train = load_split("train", 4, size=16, cache=False)
    val = load_split("val", 4, size=16, cache=False)
    test = load_split("test", 4, size=16, cache=False)
    for a, b in ((train, val), (train, test), (val, test)):
        for i in range(4):
            for j in range(4):
                assert not torch.equal(a["image"][i], b["image"][j])
    # a split is the scene stream starting at its offset
    ref = make_scenes(2, size=16, first_index=SPLIT_OFFSETS["val"])
    assert torch.equal(ref["image"], val["image"][:2])


@pytest.mark.parametrize("name", sorted(profiles.PROFILES))
def test_split_offset_ranges_do_not_overlap(name):
    p = profiles.get(name)
    sizes = {"train": p.n_train, "val": p.n_val, "test": p.n_test}
    ranges = sorted((SPLIT_OFFSETS[s], SPLIT_OFFSETS[s] + sizes[s]) for s in sizes)
    for (a0, a1), (b0, b1) in zip(ranges, ranges[1:]):
        assert a1 <= b0, f"profile {name}: split ranges {ranges} overlap"


def test_load_split_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMO_LITE_CACHE", str(tmp_path))
    first = load_split("val", 3, size=16, seed=2)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1 and files[0].name.startswith("scenes-val-3x16-")
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))

    # a second call must load the file, not render
    def no_render(*a, **k):
        raise AssertionError("load_split rendered although a cache file exists")

    monkeypatch.setattr(scenes, "make_scenes", no_render)
    second = load_split("val", 3, size=16, seed=2)
    assert set(second) == set(first)
    for k in first:
        assert torch.equal(first[k], second[k]), k


def test_cache_key_depends_on_options_not_batch_size(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMO_LITE_CACHE", str(tmp_path))
    load_split("train", 2, size=16, seed=0)
    load_split("train", 2, size=16, seed=0, batch_size=1)  # same pixels: same file
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    other = load_split("train", 2, size=16, seed=0, shadows=False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    assert torch.equal(other["image"], make_scenes(2, size=16, seed=0, shadows=False)["image"])


@pytest.mark.parametrize("corruption", ["garbage", "truncated"])
def test_corrupt_cache_is_rerendered(tmp_path, monkeypatch, corruption):
    monkeypatch.setenv("SIMO_LITE_CACHE", str(tmp_path))
    good = load_split("test", 2, size=16, seed=1)
    (path,) = tmp_path.glob("*.safetensors")
    raw = path.read_bytes()
    path.write_bytes(b"\x00garbage" * 10 if corruption == "garbage" else raw[: len(raw) // 2])
    again = load_split("test", 2, size=16, seed=1)
    for k in good:
        assert torch.equal(good[k], again[k]), k
    # and the cache file was rewritten with valid contents
    from safetensors.torch import load_file
    reloaded = load_file(path)
    assert torch.equal(reloaded["image"], good["image"])


def test_scenes_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMO_LITE_CACHE", str(tmp_path))
    ds = ScenesDataset("train", 5, size=16)
    assert len(ds) == 5
    item = ds[2]
    assert set(item) == KEYS
    assert item["image"].shape == (3, 16, 16)
    assert item["seg"].shape == (16, 16) and item["seg"].dtype == torch.int64
    assert item["depth"].shape == (1, 16, 16)
    assert item["normals"].shape == (3, 16, 16)
    assert item["edges"].shape == (1, 16, 16)
    assert item["albedo"].shape == (3, 16, 16)
    assert torch.equal(item["image"], make_scenes(1, size=16, first_index=2)["image"][0])

    only = ScenesDataset("train", 5, size=16, tasks=["depth"])
    assert set(only[0]) == {"image", "depth"}
    with pytest.raises(ValueError, match="valid"):
        ScenesDataset("train", 5, size=16, tasks=["nope"])

    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["seg"].shape == (4, 16, 16)


def test_the_cache_folder_is_the_one_of_simo_lite_paths(monkeypatch, tmp_path):
    from simo_lite import paths
    monkeypatch.setenv("SIMO_LITE_CACHE", str(tmp_path / "c"))
    assert scenes._cache_dir() == paths.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SIMO_LITE_CACHE")
    assert scenes._cache_dir() == paths.REPO / "data" / "cache"


# ------------------------------------------------------------------------------------------------
# appearance views and the appearance-level labels (version 5)
# ------------------------------------------------------------------------------------------------
def test_image_is_albedo_times_shading_exactly():
    d = make_scenes(8, size=32, seed=4)
    assert torch.equal(d["image"], (d["albedo"] * d["shading"]).clamp(0, 1))
    assert d["shading"].min() >= scenes.DEFAULT_OPTIONS["ambient"] - 1e-6 and d["shading"].max() <= 1


def test_appearance_views_share_geometry_and_change_appearance():
    from simo_lite.scenes import render
    index = torch.arange(20, 28)
    own, other = render(index, 32, seed=1), render(index, 32, seed=1, view=5)
    assert torch.equal(own["image"], make_scenes(8, size=32, seed=1, first_index=20)["image"])   # view 0: the split
    for k in ("seg", "depth", "normals", "edges"):
        assert torch.equal(own[k], other[k]), k
    for k in ("image", "albedo", "shading", "texture_edges"):
        for i in range(8):                                # every scene changes its look, not only one
            assert not torch.equal(own[k][i], other[k][i]), (k, i)
    assert torch.equal(make_scenes(8, size=32, seed=1, first_index=20, appearance=5)["image"], other["image"])


def test_views_are_independent_of_order_and_batch():
    from simo_lite.scenes import render
    index, views = torch.tensor([9, 3, 3, 0, 7]), torch.tensor([2, 0, 4, 1, 2])
    together = render(index, 16, seed=0, view=views, batch_size=2)
    for i in range(5):
        alone = render(index[i:i + 1], 16, seed=0, view=int(views[i]))
        for k in KEYS:
            assert torch.equal(together[k][i], alone[k][0]), (k, i)
    with pytest.raises(ValueError, match="view must be one int >= 0"):
        render(index, 16, view=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="appearance / view must be an int >= 0"):
        make_scenes(2, size=16, appearance=-1)


def test_texture_edges_and_keypoints_by_hand():
    from simo_lite.scenes import _keypoints, _texture_edges
    albedo = torch.zeros(1, 3, 8, 8)
    albedo[:, :, 2:6, 2:6] = 0.8                            # one bright square on black
    e = _texture_edges(albedo, 0.25)[0, 0]
    ring = torch.zeros(8, 8, dtype=torch.bool)
    ring[1:7, 1:7] = True
    ring[3:5, 3:5] = False                                  # both pixels of each step: a 2-px ring
    ring[1, 1] = ring[1, 6] = ring[6, 1] = ring[6, 6] = False     # 4-neighbours only: no diagonal corners
    assert torch.equal(e.bool(), ring)
    assert _texture_edges(albedo, 0.9).sum() == 0            # a step of 0.8 is below 0.9
    k = _keypoints(albedo, 1e-4)[0, 0]
    assert k.sum() > 0 and k[2:6, 2:6].sum() > 0             # blobs at the square's corners
    assert k[0, :].sum() == 0 and _keypoints(torch.full((1, 3, 8, 8), 0.5), 1e-4).sum() == 0   # none on flat albedo
    assert _keypoints(torch.zeros(1, 3, 8, 8).index_fill_(3, torch.arange(4, 8), 0.8), 1e-4).sum() == 0  # none on a straight edge


def test_data_key_is_the_recipe_not_the_last_bits(monkeypatch):
    """Scenes' floats differ in the last bits between CPUs; the data key (and every key chained to it,
    hence the shipped models) must not: a split is keyed by the parameters that render it."""
    import simo_lite.scenes as S
    from simo_lite import store as st
    here = load_split("val", 4, size=16, seed=3, cache=False)
    real = S.make_scenes

    def other_cpu(*a, **k):              # the same scenes, rounded differently in the last bit
        d = real(*a, **k)
        d["image"] = torch.nextafter(d["image"], torch.full_like(d["image"], 2.0))
        d["depth"] = torch.nextafter(d["depth"], torch.zeros_like(d["depth"]))
        d["autoencoder"] = d["image"]
        return d

    monkeypatch.setattr(S, "make_scenes", other_cpu)
    there = load_split("val", 4, size=16, seed=3, cache=False)
    assert not torch.equal(here["image"], there["image"])
    assert st.data_key(here) == st.data_key(there)
    assert st.data_key({"image": here["image"], "autoencoder": here["autoencoder"]}) == \
        st.data_key({"image": there["image"], "autoencoder": there["autoencoder"]})
    assert st.data_key(load_split("val", 4, size=16, seed=4, cache=False)) != st.data_key(here)   # another recipe
    sub_here, sub_there = st.first_rows(here, 2), st.first_rows(there, 2)
    assert st.data_key(sub_here) == st.data_key(sub_there) != st.data_key(here)
    assert st.first_rows(here, 4)["image"] is here["image"]                 # all rows: the tensor itself
    key = st.data_key(there)
    there["depth"].mul_(2.0)                                                 # changed in place: its bytes count
    assert st.data_key(there) != key


def test_tensors_not_made_by_a_recipe_are_keyed_by_their_bytes():
    from simo_lite import store as st
    x = torch.arange(6.0)
    y = torch.nextafter(x, x + 1)
    assert st.data_key({"image": x}) != st.data_key({"image": y})
    assert st.data_key({"image": x}) == st.data_key({"image": x.clone()})
