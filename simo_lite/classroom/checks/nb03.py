"""The checks of notebook 03 (Merging):
``check_task_arithmetic``, ``check_ties_elect_sign``, ``check_choose_alpha``.
"""
from __future__ import annotations

from typing import Callable

import torch

from ._core import _Wrong, _call, _run, _tensor, _number, _state_dict, _gen, _toy_state, _toy_tvs

__all__ = ["check_task_arithmetic", "check_ties_elect_sign", "check_choose_alpha"]


def check_task_arithmetic(fn: Callable, strict: bool = False) -> bool:
    """``fn(theta_0, task_vectors, alpha) -> state dict``: θ₀ + α Σ_t τ_t (``merging.task_arithmetic``).

    Floating-point tensors keep their dtype; other tensors (integer buffers) are copied unchanged.
    """
    from simo_lite.merging import task_arithmetic

    def body(fn):
        theta_0, tvs = _toy_state(8), _toy_tvs(9)
        for alpha in (0.0, 0.3, 1.0):
            case = f"3 task vectors, alpha={alpha}, theta_0 with an int64 buffer"
            expected = task_arithmetic(theta_0, tvs, alpha)
            got = _call(fn, case, {k: v.clone() for k, v in theta_0.items()},
                        {t: {k: v.clone() for k, v in tv.items()} for t, tv in tvs.items()}, alpha)
            _state_dict(got, expected, "the merged state", case, check_dtype="exact")
    return _run("task arithmetic", fn, body, strict)


def check_ties_elect_sign(fn: Callable, strict: bool = False) -> bool:
    """``fn(trimmed) -> tensor``: TIES' elected sign per entry of the stacked trimmed vectors (T, *shape).

    γ = sign(Σ_t trimmed_t), i.e. the sign with the larger total mass (not the majority count), 0 where
    the sum is 0. Reference: the sign of ``merging.ties`` with k = 1 (its disjoint mean has the elected sign).
    """
    from simo_lite.merging import ties

    def reference(stack):
        tvs = {f"t{i}": {"w": v} for i, v in enumerate(stack)}
        return torch.sign(ties({"w": torch.zeros(stack.shape[1:])}, tvs, k=1.0, alpha=1.0)["w"])

    def body(fn):
        mass = torch.tensor([[0.9, 0.1, 0.0, -0.2], [-0.1, 0.1, 0.0, 0.5], [-0.1, -0.4, 0.0, -0.3]])
        case = "3 vectors where the majority of signs and the total mass disagree"
        got = _call(fn, case, mass.clone())
        if isinstance(got, torch.Tensor) and got.shape == mass.shape[1:] and got[0].item() < 0:
            raise _Wrong("entry 0 has two negative votes but a larger positive mass (+0.9 vs -0.2): TIES elects "
                         "the sign of the sum, not the majority of signs")
        _tensor(got, reference(mass), "the elected sign", case, check_dtype="none")
        stack = torch.randn(4, 3, 5, generator=_gen(10)) * (torch.rand(4, 3, 5, generator=_gen(11)) > 0.5)
        case = "4 random trimmed tensors of shape (3, 5)"
        _tensor(_call(fn, case, stack.clone()), reference(stack), "the elected sign", case, check_dtype="none")
    return _run("TIES sign election", fn, body, strict)


def check_choose_alpha(fn: Callable, strict: bool = False) -> bool:
    """``fn(scores) -> float``: the α with the highest validation score ``{alpha: score}``.

    The paper's protocol as in :func:`simo_lite.merging.select_alpha`: ties go to the smaller α, and
    non-finite scores (NaN) are ignored.
    """
    from simo_lite.merging import select_alpha

    def body(fn):
        cases = [("a single peak", {0.0: -0.5, 0.1: -0.2, 0.2: -0.1, 0.3: -0.3}),
                 ("a tie between 0.2 and 0.4 (take the smaller)", {0.0: -0.5, 0.2: -0.1, 0.4: -0.1, 0.6: -0.4}),
                 ("a NaN score at 0.5", {0.0: -0.5, 0.5: float("nan"), 1.0: -0.45})]
        for case, scores in cases:
            expected = select_alpha(lambda a: scores[a], grid=list(scores))[0]
            _number(_call(fn, case, dict(scores)), expected, "the chosen alpha", case)
    return _run("choosing alpha", fn, body, strict)
