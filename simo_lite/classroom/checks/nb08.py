"""The checks of notebook 08 (Task relationships): ``check_tall_mask``, ``check_tv_cosine``."""
from __future__ import annotations

from typing import Callable

from ._core import _call, _run, _tensor, _toy_tvs

__all__ = ["check_tall_mask", "check_tv_cosine"]


def check_tall_mask(fn: Callable, strict: bool = False) -> bool:
    """``fn(tau_t, tau_mtl, lam) -> bool tensor``: TALL's mask |τ_t| ≥ λ · |τ_MTL − τ_t| for one tensor.

    Compared with :func:`simo_lite.merging.tall_masks` (τ_MTL = Σ_t τ_t).
    """
    from simo_lite.merging import tall_masks

    def body(fn):
        tvs = _toy_tvs(19)
        tau_mtl = {k: sum(tv[k] for tv in tvs.values()) for k in tvs["task0"]}
        for lam in (0.2, 0.6, 1.0):
            masks = tall_masks(tvs, lam)
            for t in ("task0", "task2"):
                case = f"{t} of 3 random task vectors, tensor 'w' (4, 3), lam={lam}"
                _tensor(_call(fn, case, tvs[t]["w"].clone(), tau_mtl["w"].clone(), lam), masks[t]["w"], "the mask",
                        case, check_dtype="exact")
    return _run("TALL mask", fn, body, strict)


def check_tv_cosine(fn: Callable, strict: bool = False) -> bool:
    """``fn(task_vectors) -> (T, T) tensor``: cosine similarity of the flattened task vectors.

    All tensors of a task vector are flattened into one vector; rows and columns in the dict's task
    order. Compared with :func:`simo_lite.merging.tv_cosine`.
    """
    from simo_lite.merging import tv_cosine

    def body(fn):
        tvs = _toy_tvs(20, 4)
        tvs["task3"] = {k: -2 * v for k, v in tvs["task0"].items()}       # cosine -1 with task0
        case = "4 task vectors of two tensors each (task3 = -2 x task0)"
        _tensor(_call(fn, case, {t: {k: v.clone() for k, v in tv.items()} for t, tv in tvs.items()}), tv_cosine(tvs),
                "the cosine matrix", case, atol=1e-5, check_dtype="none")
    return _run("task-vector cosine", fn, body, strict)
