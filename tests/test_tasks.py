"""The task registry: names and task sets, losses (finite, differentiable, trainable) and visualisers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simo_lite import tasks as T
from simo_lite.scenes import NUM_CLASSES

ALL = ("seg", "depth", "normals", "edges", "albedo", "shading", "texture_edges", "keypoints", "autoencoder")
H = W = 16


def _target(task: str, g: torch.Generator, b: int = 2) -> torch.Tensor:
    """A random label batch in the task's label space (what the Scenes renderer produces)."""
    if task == "seg":
        return torch.randint(0, NUM_CLASSES, (b, H, W), generator=g)
    if task == "depth":
        return 1 + 8 * torch.rand(b, 1, H, W, generator=g)
    if task == "normals":
        return F.normalize(torch.randn(b, 3, H, W, generator=g), dim=1)
    if task in ("edges", "texture_edges", "keypoints"):
        return (torch.rand(b, 1, H, W, generator=g) < 0.2).float()
    if task in ("albedo", "autoencoder"):
        return torch.rand(b, 3, H, W, generator=g)
    if task == "shading":
        return 0.35 + 0.65 * torch.rand(b, 1, H, W, generator=g)
    raise AssertionError(task)


# ------------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------------


def test_registry_contents():
    assert set(T.TASKS) == set(ALL)
    channels = {t: T.get_task(t).channels for t in ALL}
    assert channels == {"seg": NUM_CLASSES, "depth": 1, "normals": 3, "edges": 1, "albedo": 3, "shading": 1,
                        "texture_edges": 1, "keypoints": 1, "autoencoder": 3}
    assert T.get_tasks("taskonomy5") == ("autoencoder", "depth", "normals", "keypoints", "texture_edges")
    assert [t for t in ALL if T.get_task(t).higher_is_better] == ["seg", "edges", "texture_edges", "keypoints"]
    assert T.get_task("seg").higher_is_better and T.get_task("edges").higher_is_better
    assert T.get_task("depth").lower_is_better and T.get_task("normals").lower_is_better
    assert T.get_task("albedo").lower_is_better
    assert T.lower_is_better("nyu3") == {"seg": False, "depth": True, "normals": True}


def test_unknown_task_lists_valid_tasks():
    with pytest.raises(ValueError) as e:
        T.get_task("nope")
    for t in ALL:
        assert t in str(e.value)
    with pytest.raises(ValueError) as e:
        T.get_tasks("seg,nope")
    assert "nope" in str(e.value) and "seg" in str(e.value)


def test_task_sets():
    assert T.get_tasks("nyu3") == ("seg", "depth", "normals")
    five = T.get_tasks("diverse5")
    assert five == ("seg", "depth", "normals", "edges", "albedo")


@pytest.mark.parametrize("spec, expected", [
    ("seg,depth", ("seg", "depth")),
    (" normals , edges ", ("normals", "edges")),
    ("albedo,", ("albedo",)),
    ("depth", ("depth",)),
    (["seg", "normals"], ("seg", "normals")),
    (("edges",), ("edges",)),
])
def test_get_tasks_parsing(spec, expected):
    assert T.get_tasks(spec) == expected


@pytest.mark.parametrize("spec", ["", " , ", [], "seg,seg"])
def test_get_tasks_rejects_empty_and_duplicates(spec):
    with pytest.raises(ValueError):
        T.get_tasks(spec)


# ------------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_loss_is_finite_scalar_with_gradient(name):
    task = T.get_task(name)
    g = torch.Generator().manual_seed(0)
    out = torch.randn(2, task.channels, H, W, generator=g, requires_grad=True)
    loss = task.loss(out, _target(name, g))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert out.grad is not None and torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL)
def test_loss_decreases_with_sgd(name):
    task = T.get_task(name)
    g = torch.Generator().manual_seed(1)
    target = _target(name, g)
    out = torch.nn.Parameter(torch.randn(2, task.channels, H, W, generator=g) + task.output_bias)
    # the losses are means over pixels, so each element's gradient is ~1/numel: scale SGD's lr by it
    opt = torch.optim.SGD([out], lr=0.2 * out.numel())
    with torch.no_grad():
        first = float(task.loss(out, target))
    for _ in range(10):
        opt.zero_grad()
        loss = task.loss(out, target)
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = float(task.loss(out, target))
    assert last < 0.9 * first, f"{name}: loss {first:.4f} -> {last:.4f}"


def test_normals_loss_is_scale_invariant_and_zero_at_target():
    g = torch.Generator().manual_seed(2)
    target = _target("normals", g)
    task = T.get_task("normals")
    assert float(task.loss(3 * target, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(task.loss(-target, target)) == pytest.approx(2.0, abs=1e-5)


def test_predict_maps_to_label_space():
    g = torch.Generator().manual_seed(3)
    seg = T.get_task("seg").predict(torch.randn(2, NUM_CLASSES, H, W, generator=g))
    assert seg.shape == (2, H, W) and seg.dtype == torch.int64
    depth = T.get_task("depth").predict(torch.randn(2, 1, H, W, generator=g))
    assert (depth > 0).all()
    normals = T.get_task("normals").predict(torch.randn(2, 3, H, W, generator=g))
    assert torch.allclose(normals.norm(dim=1), torch.ones(2, H, W), atol=1e-5)
    edges = T.get_task("edges").predict(torch.randn(2, 1, H, W, generator=g))
    assert set(edges.unique().tolist()) <= {0.0, 1.0}
    albedo = T.get_task("albedo").predict(3 * torch.randn(2, 3, H, W, generator=g))
    assert albedo.min() >= 0 and albedo.max() <= 1


@pytest.mark.parametrize("name", ALL)
def test_metric_of_perfect_prediction(name):
    task = T.get_task(name)
    target = _target(name, torch.Generator().manual_seed(4))
    m = task.new_metric()
    m.update(target, target)
    expected = 1.0 if task.higher_is_better else 0.0
    # float32 arccos of a dot product a few ULPs below 1 is ~0.03 deg, hence the looser normals bound
    assert m.compute() == pytest.approx(expected, abs=0.05 if name == "normals" else 1e-6)


# ------------------------------------------------------------------------------------------------
# visualisers
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_visualize_returns_rgb_in_unit_range(name):
    task = T.get_task(name)
    label = _target(name, torch.Generator().manual_seed(5), b=1)[0]
    if name == "depth":
        label = label * 3  # beyond the colour map's range: must still clip into [0, 1]
    img = task.visualize(label)
    assert isinstance(img, np.ndarray)
    assert img.shape == (H, W, 3)
    assert np.issubdtype(img.dtype, np.floating)
    assert np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1


def test_visualize_accepts_predictions_with_grad():
    out = torch.randn(3, H, W, requires_grad=True)
    img = T.get_task("albedo").visualize(out)
    assert img.shape == (H, W, 3)


def test_register_task_and_task_set_from_outside():
    """A new task and task set registered from outside the package resolve everywhere names do."""
    import dataclasses
    from simo_lite import tasks as T
    gray = dataclasses.replace(T.get_task("albedo"), name="gray", channels=1)
    T.register_task(gray)
    try:
        T.register_task_set("seg_gray", ["seg", "gray"])
        assert T.get_tasks("seg_gray") == ("seg", "gray")
        assert T.lower_is_better("seg,gray") == {"seg": False, "gray": True}
        with pytest.raises(ValueError, match="already registered"):
            T.register_task(gray)
        with pytest.raises(ValueError, match="unknown task 'grey'; valid tasks: seg, depth, normals, edges, albedo, shading, texture_edges, "
                           "keypoints, autoencoder, gray"):
            T.register_task_set("bad", ["seg", "grey"])
    finally:
        T.TASK_SETS.unregister("seg_gray")
        T.TASKS.unregister("gray")
    with pytest.raises(ValueError, match="unknown task 'gray'"):
        T.get_tasks("seg,gray")


def test_task_fields_are_keyword_only():
    from simo_lite.tasks import Task
    with pytest.raises(TypeError):
        Task("x", 1, True, "m", None, None, None, None)
