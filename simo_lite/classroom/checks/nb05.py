"""The checks of notebook 05 (Head realignment):
``check_delta_m_ratio``, ``check_delta_m_eq2``, ``check_feature_cache_bytes``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ._core import _Wrong, _call, _run, _number, _gen

__all__ = ["check_delta_m_ratio", "check_delta_m_eq2", "check_feature_cache_bytes"]


_DM_CASES = [
    ("3 tasks, mixed directions", {"seg": 0.5, "depth": 0.8, "normals": 30.0},
     {"seg": 0.6, "depth": 0.5, "normals": 20.0}, {"seg": False, "depth": True, "normals": True}),
    ("a doubled error", {"depth": 1.0}, {"depth": 0.5}, {"depth": True}),
    ("better than the baseline", {"seg": 0.7, "albedo": 0.05}, {"seg": 0.6, "albedo": 0.1},
     {"seg": False, "albedo": True}),
]


def _check_delta_m(fn, kind: str, title: str, strict: bool) -> bool:
    from simo_lite.metrics import delta_m

    def body(fn):
        for case, m, b, low in _DM_CASES:
            got = _call(fn, case, dict(m), dict(b), dict(low))
            expected = delta_m(m, b, low, kind=kind)
            if isinstance(got, (int, float)) and not isinstance(got, bool) and math.isclose(got, 100 * expected):
                raise _Wrong(f"got {got:.4g}: return a fraction (-0.275 for -27.5 %), not a percentage ({case})")
            _number(got, expected, "Δm", case)
    return _run(title, fn, body, strict)


def check_delta_m_ratio(fn: Callable, strict: bool = False) -> bool:
    """``fn(metrics, baseline, lower_is_better) -> float``: mean_t normalised_t − 1 (the paper's tables).

    normalised_t = M_t / B_t, or B_t / M_t when lower is better; a fraction. Compared with
    :func:`simo_lite.metrics.delta_m` (``kind="ratio"``).
    """
    return _check_delta_m(fn, "ratio", "Δm, ratio form", strict)


def check_delta_m_eq2(fn: Callable, strict: bool = False) -> bool:
    """``fn(metrics, baseline, lower_is_better) -> float``: mean_t (−1)^l_t (M_t − B_t) / B_t (Eq. 2).

    A fraction; compared with :func:`simo_lite.metrics.delta_m` (``kind="relative"``).
    """
    return _check_delta_m(fn, "relative", "Δm, Eq. 2", strict)


def check_feature_cache_bytes(fn: Callable, strict: bool = False) -> bool:
    """``fn(n_images, n_taps, embed_dim, image_size, patch_size) -> int``: bytes of a float32 feature cache.

    The cache holds ``models.encoder_features`` of every image: (N, L, 2C, h, w) float32, h = w =
    image_size / patch_size. Compared with the size of real features from a small encoder.
    """
    from simo_lite.models import encoder_features, make_encoder

    def body(fn):
        for n, c, s, p in ((3, 16, 16, 4), (2, 8, 16, 8)):
            taps = (0, 1)
            enc = make_encoder(img_size=s, patch_size=p, embed_dim=c, depth=2, num_heads=4, seed=0).eval()
            with torch.no_grad():
                feats = encoder_features(enc, torch.rand(n, 3, s, s, generator=_gen(17)), taps)
            expected = feats.numel() * feats.element_size()
            case = f"{n} images, {len(taps)} taps, embed_dim={c}, image_size={s}, patch_size={p}"
            _number(_call(fn, case, n, len(taps), c, s, p), expected, "the cache size in bytes", case, integer=True)
    return _run("feature cache size", fn, body, strict)
