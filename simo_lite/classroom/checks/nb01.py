"""The checks of notebook 01 (Foundation encoder): ``check_vit_param_count``, ``check_oriented_ratio``."""
from __future__ import annotations

from typing import Callable

from ._core import _call, _run, _number

__all__ = ["check_vit_param_count", "check_oriented_ratio"]


def check_vit_param_count(fn: Callable, strict: bool = False) -> bool:
    """``fn(embed_dim, depth, patch_size, img_size) -> int``: parameters of ``models.make_encoder``."""
    from simo_lite.models import count_parameters, make_encoder

    def body(fn):
        for c, d, p, s in ((16, 1, 4, 8), (32, 2, 8, 32), (24, 3, 4, 12)):
            case = f"embed_dim={c}, depth={d}, patch_size={p}, img_size={s}"
            expected = count_parameters(make_encoder(img_size=s, patch_size=p, embed_dim=c, depth=d, num_heads=4,
                                                     seed=0))
            _number(_call(fn, case, c, d, p, s), expected, "the parameter count", case, integer=True)
    return _run("ViT parameter count", fn, body, strict)


def check_oriented_ratio(fn: Callable, strict: bool = False) -> bool:
    """``fn(metric, reference, higher_is_better) -> float``: > 1 means ``metric`` is better.

    metric / reference when higher is better, reference / metric otherwise; compared with
    :func:`simo_lite.metrics.normalized_performance`.
    """
    from simo_lite.metrics import normalized_performance

    def body(fn):
        for m, r, hib in ((0.6, 0.4, True), (0.4, 0.6, True), (1.3, 0.8, False), (0.5, 2.0, False)):
            case = f"metric={m}, reference={r}, higher_is_better={hib}"
            expected = normalized_performance({"t": m}, {"t": r}, {"t": not hib})["t"]
            _number(_call(fn, case, m, r, hib), expected, "the ratio", case)
    return _run("oriented ratio", fn, body, strict)
