"""The checks of notebook 00 (Scenes): ``check_pixel_shares``, ``check_normals_from_depth``."""
from __future__ import annotations

from typing import Callable

import torch

from ._core import _Wrong, _call, _run, _tensor, _gen

__all__ = ["check_pixel_shares", "check_normals_from_depth"]


def check_pixel_shares(fn: Callable, strict: bool = False) -> bool:
    """``fn(seg, num_classes) -> (num_classes,) float64``: the share of pixels of each class id.

    ``seg`` is (N, H, W) int64; a class absent from ``seg`` gets 0; the shares sum to 1.
    """
    def body(fn):
        cases = [("a 2x3x4 map with classes 0..3 of 6", torch.randint(0, 4, (2, 3, 4), generator=_gen(0)), 6),
                 ("one pixel of class 2, 3 classes", torch.tensor([[[2]]]), 3),
                 ("a 1x8x8 map of 6 classes", torch.randint(0, 6, (1, 8, 8), generator=_gen(1)), 6)]
        for case, seg, n in cases:
            expected = torch.bincount(seg.flatten(), minlength=n).double() / seg.numel()
            _tensor(_call(fn, case, seg.clone(), n), expected, "the shares", case, atol=1e-9, rtol=1e-7)
    return _run("pixel shares", fn, body, strict)


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
