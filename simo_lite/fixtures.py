"""Small fixture datasets and weights files in the exact on-disk formats of the real ones.

For tests and for trying the real-data path of the course without the real data:

* :func:`write_nyuv2`: NYUv2 in the MTAN layout, full 288 x 384 float32 arrays (a few images);
* :func:`write_cityscapes`: Cityscapes in the MTAN 128 x 256 layout (``label_7/``, ``label_19/``);
* :func:`write_backbone_checkpoint`: a tiny timm ViT of a real timm name, saved like a real
  weights file (safetensors or torch), loadable by :func:`simo_lite.backbones.load_backbone`.

The images are procedural (rooms / streets made of flat regions with plausible classes, depth and
normals), with the real data's quirks: ignore pixels (-1) in the labels, missing depth (0) and
missing normals (all 0). They are NOT real data: numbers measured on them mean nothing.

    >>> from simo_lite import fixtures
    >>> root = fixtures.write_nyuv2("/tmp/nyuv2-fixture")               # 6 train + 6 val images
    >>> w = fixtures.write_backbone_checkpoint("/tmp/tiny.safetensors")  # test_vit.r160_in1k
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["write_nyuv2", "write_cityscapes", "write_backbone_checkpoint", "write_fixtures",
           "FIXTURE_BACKBONE", "TINY_DINOV2", "TINY_DINOV2_REG"]

# a tiny real timm model (0.3M parameters, patch 16, 6 blocks): loads by name alone, no kwargs
FIXTURE_BACKBONE = "test_vit.r160_in1k"
# the DINOv2 architectures (patch 14, 518 px pretraining grid), shrunk by kwargs for fast tests
TINY_DINOV2 = ("vit_small_patch14_dinov2.lvd142m", dict(embed_dim=32, depth=4, num_heads=2))
TINY_DINOV2_REG = ("vit_small_patch14_reg4_dinov2.lvd142m", dict(embed_dim=32, depth=4, num_heads=2))


def _save(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.ascontiguousarray(a, dtype=np.float32))


def _shade(rng, cls_map: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) in [0, 1]: a colour per class, a vertical light gradient and a little noise."""
    H, W = cls_map.shape
    img = palette[np.clip(cls_map, 0, len(palette) - 1)]
    img = img * (0.75 + 0.25 * np.linspace(1, 0, H)[:, None, None])
    img = img + 0.04 * rng.standard_normal((H, W, 1)) + 0.02 * rng.standard_normal((H, W, 3))
    return np.clip(img, 0, 1)


def _room(rng, H: int, W: int):
    """One NYUv2-like image: (image (H,W,3), label (H,W), depth (H,W,1) m, normal (H,W,3))."""
    rows = np.arange(H)[:, None] * np.ones((1, W))
    cols = np.ones((H, 1)) * np.arange(W)[None, :]
    hz = int(H * rng.uniform(0.4, 0.6))                      # horizon: wall above, floor below
    ceil = int(H * rng.uniform(0.05, 0.15))
    label = np.full((H, W), 11)                              # wall
    label[rows < ceil] = 2                                   # ceiling
    label[rows >= hz] = 4                                    # floor
    wall_d = rng.uniform(3.0, 8.0)
    f = 0.9 * W                                              # focal length (px), camera 1.2 m high
    depth = np.full((H, W), wall_d)
    floor_d = 1.2 * f / np.maximum(rows - hz + 1, 1)
    depth = np.where(rows >= hz, np.minimum(floor_d, wall_d), depth)
    normal = np.zeros((H, W, 3))
    normal[..., 2] = -1                                      # wall faces the camera
    normal[rows < ceil] = (0, 1, 0)                          # ceiling faces down (y down)
    normal[rows >= hz] = (0, -1, 0)                          # floor faces up
    for _ in range(rng.integers(1, 4)):                      # furniture / objects
        h, w = int(H * rng.uniform(0.15, 0.4)), int(W * rng.uniform(0.1, 0.3))
        top = int(rng.uniform(hz - h, min(hz + 0.2 * H, H - h)))
        left = int(rng.uniform(0, W - w))
        m = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
        label[m] = rng.choice([0, 1, 3, 5, 6, 7, 8, 9, 10, 12])
        depth[m] = rng.uniform(1.0, min(4.0, wall_d))
        n = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), -1.0])
        normal[m] = n / np.linalg.norm(n)
    image = _shade(rng, label, rng.uniform(0.1, 0.95, (13, 3)))
    # the real data's holes: an unlabelled frame, an unlabelled blob, missing depth (and normals)
    b = 6
    frame = (rows < b) | (rows >= H - b) | (cols < b) | (cols >= W - b)
    label[frame] = -1
    r0, c0 = int(rng.uniform(0, H - 30)), int(rng.uniform(0, W - 40))
    label[r0:r0 + 20, c0:c0 + 30] = -1
    hole = frame.copy()
    r1, c1 = int(rng.uniform(0, H - 40)), int(rng.uniform(0, W - 40))
    hole[r1:r1 + 25, c1:c1 + 35] = True
    depth[hole] = 0.0
    normal[hole] = 0.0
    return image, label, depth[..., None], normal


def write_nyuv2(root: str | Path, n_train: int = 6, n_val: int = 6, hw: tuple[int, int] = (288, 384),
                seed: int = 0) -> Path:
    """NYUv2 fixture in the MTAN layout under ``root`` (``train/`` and ``val/`` with ``image/``,
    ``label/``, ``depth/``, ``normal/`` holding ``<i>.npy`` float32): returns ``root``.

    6 + 6 images give splits of 6 train / 4 val / 2 test (:func:`simo_lite.datasets.split_sizes`).
    """
    root = Path(root)
    H, W = hw
    for split, n, off in (("train", n_train, 0), ("val", n_val, 100_000)):
        for i in range(n):
            image, label, depth, normal = _room(np.random.default_rng([seed, off + i]), H, W)
            d = root / split
            _save(d / "image" / f"{i}.npy", image)
            _save(d / "label" / f"{i}.npy", label)
            _save(d / "depth" / f"{i}.npy", depth)
            _save(d / "normal" / f"{i}.npy", normal)
    return root


# 19 Cityscapes train classes -> the 7 categories (flat, construction, object, nature, sky, human, vehicle)
_CITY_19_TO_7 = np.array([0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 5, 6, 6, 6, 6, 6, 6])


def _street(rng, H: int, W: int):
    """One Cityscapes-like image: (image (H,W,3), label_19 (H,W), disparity (H,W,1))."""
    rows = np.arange(H)[:, None] * np.ones((1, W))
    cols = np.ones((H, 1)) * np.arange(W)[None, :]
    hz = int(H * rng.uniform(0.35, 0.5))
    sky = int(H * rng.uniform(0.1, 0.25))
    label = np.full((H, W), 2)                               # building
    label[rows < sky] = 10                                   # sky
    label[rows >= hz] = 0                                    # road
    side = (rows >= hz) & ((cols < W * 0.15) | (cols > W * 0.85))
    label[side] = 1                                          # sidewalk
    label[(rows >= sky) & (rows < hz) & (cols < W * rng.uniform(0.05, 0.25))] = 8   # vegetation
    disp = np.full((H, W), rng.uniform(0.02, 0.05))          # disparity: far buildings small
    disp = np.where(rows >= hz, 0.02 + 0.25 * (rows - hz) / max(H - hz, 1), disp)
    disp[rows < sky] = 0.0                                   # sky: no disparity (invalid)
    for _ in range(rng.integers(1, 4)):                      # cars, people, poles
        cls = rng.choice([5, 11, 12, 13, 14, 18])
        h, w = int(H * rng.uniform(0.1, 0.3)), int(W * rng.uniform(0.03, 0.2))
        top = int(np.clip(hz - h * rng.uniform(0.2, 0.8), 0, H - h))
        left = int(rng.uniform(0, W - w))
        m = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
        label[m] = cls
        disp[m] = rng.uniform(0.05, 0.3)
    image = _shade(rng, label, rng.uniform(0.1, 0.95, (19, 3)))
    hood = rows >= H - int(H * 0.08)                         # ego vehicle: unlabelled, no disparity
    label[hood] = -1
    r0, c0 = int(rng.uniform(0, H - 10)), int(rng.uniform(0, W - 20))
    label[r0:r0 + 8, c0:c0 + 16] = -1
    disp[hood] = 0.0
    return image, label, disp[..., None]


def write_cityscapes(root: str | Path, n_train: int = 10, n_val: int = 4, hw: tuple[int, int] = (128, 256),
                     seed: int = 0) -> Path:
    """Cityscapes fixture in the MTAN 128 x 256 layout under ``root`` (``train/`` and ``val/`` with
    ``image/``, ``label_7/``, ``label_19/``, ``depth/`` holding ``<i>.npy`` float32): returns ``root``.

    10 + 4 images give splits of 8 train / 2 val / 4 test.
    """
    root = Path(root)
    H, W = hw
    for split, n, off in (("train", n_train, 200_000), ("val", n_val, 300_000)):
        for i in range(n):
            image, l19, disp = _street(np.random.default_rng([seed, off + i]), H, W)
            l7 = np.where(l19 >= 0, _CITY_19_TO_7[np.clip(l19, 0, 18)], -1)
            d = root / split
            _save(d / "image" / f"{i}.npy", image)
            _save(d / "label_7" / f"{i}.npy", l7)
            _save(d / "label_19" / f"{i}.npy", l19)
            _save(d / "depth" / f"{i}.npy", disp)
    return root


def write_backbone_checkpoint(path: str | Path, name: str = FIXTURE_BACKBONE, seed: int = 0,
                              img_size: int | tuple[int, int] | None = None, head: bool = False,
                              **kwargs: Any) -> Path:
    """A randomly initialised timm ViT ``name`` (``kwargs`` e.g. depth / embed_dim to shrink it)
    saved to ``path`` like a real weights file: safetensors for ``.safetensors``, else ``torch.save``
    of the state dict. ``head`` keeps an ImageNet-style classifier in the file (as in timm's
    ImageNet checkpoints), which ``load_backbone`` drops. Layer-scale factors (DINOv2's start at
    1e-5) are drawn in [0.5, 1] so every block changes the features. Returns ``path``.

    The architecture of the saved weights is recorded in the safetensors metadata (``timm_name``,
    ``timm_kwargs``) for information only; ``load_backbone`` must be given the same name and kwargs.
    """
    from .backbones import make_backbone
    path = Path(path)
    model = make_backbone(name, img_size=img_size, seed=seed, **kwargs)
    if head:
        import timm
        with torch.random.fork_rng():
            torch.manual_seed(seed + 1)
            model.reset_classifier(timm.models.get_pretrained_cfg(name).num_classes or 10)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k.endswith((".ls1.gamma", ".ls2.gamma")):
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=g))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(state, str(path), metadata={"timm_name": name, "timm_kwargs": json.dumps(kwargs),
                                              "note": "simo_lite fixture: random weights, not pretrained"})
    else:
        torch.save(state, path)
    return path


def write_fixtures(root: str | Path, seed: int = 0) -> dict:
    """Every fixture under ``root``: {'nyuv2': dir, 'cityscapes': dir, 'backbone': timm name,
    'weights': file}; the weights are :data:`FIXTURE_BACKBONE`, loadable by name alone."""
    root = Path(root)
    return dict(nyuv2=write_nyuv2(root / "nyuv2", seed=seed),
                cityscapes=write_cityscapes(root / "cityscapes", seed=seed),
                backbone=FIXTURE_BACKBONE,
                weights=write_backbone_checkpoint(root / "weights" / "test_vit.safetensors", seed=seed))
