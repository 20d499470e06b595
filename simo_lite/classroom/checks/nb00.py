"""The checks of notebook 00 (Scenes): ``check_pos_weight``, ``check_miou``, ``check_normals_from_depth``."""
from __future__ import annotations

import math
from typing import Callable

import torch

from ._core import _Wrong, _call, _number, _run, _tensor, _gen

__all__ = ["check_pos_weight", "check_miou", "check_normals_from_depth"]


def check_pos_weight(fn: Callable, strict: bool = False) -> bool:
    """``fn(labels) -> float``: the ratio of negative to positive pixels of a binary label map.

    ``labels`` is (N, 1, H, W) float in {0, 1}; the result is #(labels == 0) / #(labels == 1), the
    ``pos_weight`` that makes a binary cross-entropy count both kinds of pixels equally (inf when
    there is no positive pixel). The formula is written here (the tasks' losses use fixed weights).
    """
    def body(fn):
        g = _gen(10)
        cases = [("a 2x1x4x4 map with 4 positive pixels", torch.zeros(2, 1, 4, 4)),
                 ("a 3x1x8x8 map with ~20 % positives", (torch.rand(3, 1, 8, 8, generator=g) < 0.2).float()),
                 ("a 1x1x5x5 map, every pixel positive", torch.ones(1, 1, 5, 5))]
        cases[0][1].view(-1)[[0, 5, 17, 30]] = 1.0
        for case, labels in cases:
            pos = float(labels.sum())
            expected = (labels.numel() - pos) / pos
            got = _call(fn, case, labels.clone())
            if isinstance(got, (int, float)) and not isinstance(got, bool) and expected > 0 \
                    and math.isclose(float(got), 1 / expected, rel_tol=1e-6):
                raise _Wrong(f"got {got:.4g}, the inverse: the weight of a positive pixel is #negatives / #positives "
                             f"({case})")
            _number(got, expected, "the weight", case)
        case = "a map without a positive pixel"
        got = _call(fn, case, torch.zeros(1, 1, 3, 3))
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not (isinstance(got, (int, float)) and not isinstance(got, bool) and math.isinf(got) and got > 0):
            raise _Wrong(f"{case}: expected inf (no positive pixel to weigh up), got {got!r}")
    return _run("positive-pixel weight", fn, body, strict)


def check_miou(fn: Callable, strict: bool = False) -> bool:
    """``fn(pred, target, num_classes) -> float``: mean IoU over the classes present in pred or target.

    ``pred``, ``target``: (N, H, W) int64 class ids. Compared with :class:`simo_lite.metrics.MeanIoU`
    (IoU_c = |P_c ∩ G_c| / |P_c ∪ G_c|, averaged with equal weight over the classes whose union is
    not empty; NaN when there is none).
    """
    from simo_lite.metrics import MeanIoU

    def reference(pred, target, n):
        m = MeanIoU(n)
        m.update(pred, target)
        return m.compute()

    def body(fn):
        g = _gen(11)
        target = torch.randint(0, 4, (2, 6, 6), generator=g)
        noisy = torch.where(torch.rand(2, 6, 6, generator=g) < 0.3, torch.randint(0, 4, (2, 6, 6), generator=g), target)
        cases = [("a noisy prediction of 4 classes, 6 slots", noisy, target, 6),
                 ("a perfect prediction", target.clone(), target, 4),
                 ("class 0 predicted everywhere", torch.zeros_like(target), target, 4)]
        for case, pred, tgt, n in cases:
            expected = reference(pred, tgt, n)
            got = _call(fn, case, pred.clone(), tgt.clone(), n)
            present = len(torch.cat([pred.flatten(), tgt.flatten()]).unique())
            if isinstance(got, (int, float)) and not isinstance(got, bool) and present < n and \
                    math.isclose(float(got), expected * present / n, rel_tol=1e-6) and not math.isclose(present, n):
                raise _Wrong(f"got {got:.4g}: a class absent from both prediction and target must be skipped, "
                             f"not counted as IoU 0 ({case})")
            _number(got, expected, "the mean IoU", case)
    return _run("mean IoU", fn, body, strict)


def check_normals_from_depth(fn: Callable, strict: bool = False) -> bool:
    """``fn(depth, fov_deg) -> (N, 3, H, W)``: unit camera-frame normals from a depth map (N, 1, H, W).

    Compared with :func:`simo_lite.scenes.normals_from_depth` on tilted planes plus smooth bumps:
    back-project X = depth · ray (``scenes.camera_rays``), central differences, n = dX/dv × dX/du,
    normalised, border pixels 0.
    """
    from simo_lite.scenes import normals_from_depth

    def body(fn):
        g = _gen(2)
        for size, fov in ((8, 60.0), (12, 45.0)):
            v, u = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
            slopes = torch.rand(2, 2, generator=g) - 0.5
            depth = (3 + slopes[:, :1, None] * u + slopes[:, 1:, None] * v + 0.1 * torch.sin(2 * u) * torch.cos(v))
            depth = depth[:, None]                                             # (2, 1, H, W)
            case = f"2 smooth depth maps of {size}x{size}, fov {fov}"
            expected = normals_from_depth(depth, fov_deg=fov)
            got = _call(fn, case, depth.clone(), fov)
            if isinstance(got, torch.Tensor) and got.shape == expected.shape:
                inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
                if torch.allclose(got[inner], -expected[inner], atol=1e-4):
                    raise _Wrong(f"the normals point away from the camera: take dX/dv × dX/du in that order "
                                 f"({case})")
                if torch.allclose(got[inner], expected[inner], atol=1e-4) and got.abs().sum() != expected.abs().sum():
                    raise _Wrong(f"interior pixels are right, but border pixels must be 0 (central differences "
                                 f"need both neighbours) ({case})")
            _tensor(got, expected, "the normals", case, atol=1e-4, rtol=1e-3)
    return _run("normals from depth", fn, body, strict)
