"""The checks of notebook 04 (Misalignment): ``check_linear_cka``, ``check_mean_shift``."""
from __future__ import annotations

from typing import Callable

import torch

from ._core import _call, _run, _number, _gen

__all__ = ["check_linear_cka", "check_mean_shift"]


def check_linear_cka(fn: Callable, strict: bool = False) -> bool:
    """``fn(x, y) -> float``: linear CKA between x (n, d1) and y (n, d2) (``diagnostics.linear_cka``)."""
    from simo_lite.diagnostics import linear_cka

    def body(fn):
        x = torch.randn(50, 6, generator=_gen(12))
        q, _ = torch.linalg.qr(torch.randn(6, 6, generator=_gen(13)))
        cases = [("x and a random y of another width", x, torch.randn(50, 4, generator=_gen(14))),
                 ("x and a rotated, scaled, shifted copy of x (CKA 1)", x, 3 * x @ q + 2.0),
                 ("x and x + noise", x, x + 0.5 * torch.randn(50, 6, generator=_gen(15)))]
        for case, a, b in cases:
            _number(_call(fn, case, a.clone(), b.clone()), linear_cka(a, b), "CKA", case, atol=1e-5, rtol=1e-4)
    return _run("linear CKA", fn, body, strict)


def check_mean_shift(fn: Callable, strict: bool = False) -> bool:
    """``fn(reference, other) -> float``: ||μ_other − μ_ref|| / ||μ_ref|| for tokens (n, d).

    μ is the per-channel mean over the tokens; compared with ``mean_shift`` of
    :func:`simo_lite.diagnostics.feature_drift`.
    """
    from simo_lite.diagnostics import feature_drift

    def body(fn):
        g = _gen(16)
        ref = torch.randn(3, 1, 8, 2, 2, generator=g) + 1.0                  # (N, L, 2C, h, w)
        other = ref * 1.2 + 0.3 * torch.randn(3, 1, 8, 2, 2, generator=g)
        tokens = lambda f: f[:, 0].permute(0, 2, 3, 1).reshape(-1, f.shape[2])  # noqa: E731  (N*h*w, 2C)
        case = "12 tokens of 8 channels"
        expected = feature_drift(ref, other)[0]["mean_shift"]
        _number(_call(fn, case, tokens(ref), tokens(other)), expected, "the mean shift", case, atol=1e-5, rtol=1e-4)
    return _run("relative mean shift", fn, body, strict)
