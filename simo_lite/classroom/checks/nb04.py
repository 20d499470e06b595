"""The checks of notebook 04 (Misalignment): the lesson's builds ``check_drift_stats`` and
``check_linear_cka``, the exercises ``check_bn_input_stats`` and ``check_subset_cka``."""
from __future__ import annotations

from typing import Callable

import torch

from ._core import _Wrong, _call, _gen, _number, _run, _tensor

__all__ = ["check_drift_stats", "check_linear_cka", "check_bn_input_stats", "check_subset_cka"]

_DRIFT_KEYS = ("mean_shift", "std_ratio", "norm_ratio", "cosine")


def check_drift_stats(fn: Callable, strict: bool = False) -> bool:
    """``fn(x, y) -> {"mean_shift", "std_ratio", "norm_ratio", "cosine"}``: the drift of tokens ``y`` (n, d)
    from tokens ``x`` (n, d) at one layer, compared with :func:`simo_lite.diagnostics.feature_drift`."""
    from simo_lite.diagnostics import feature_drift

    def body(fn):
        g = _gen(41)
        ref = torch.randn(3, 1, 6, 2, 2, generator=g) + 1.0                  # (N, L, 2C, h, w)
        cases = [("12 tokens of 6 channels, scaled by 1.3 plus noise", ref, 1.3 * ref + 0.2 * torch.randn(3, 1, 6, 2, 2, generator=g)),
                 ("12 tokens of 6 channels, shifted by 0.5", ref, ref + 0.5)]
        tokens = lambda f: f[:, 0].permute(0, 2, 3, 1).reshape(-1, f.shape[2])  # noqa: E731  (N*h*w, 2C)
        for case, a, b in cases:
            expected = feature_drift(a, b)[0]
            got = _call(fn, case, tokens(a), tokens(b))
            if not isinstance(got, dict):
                raise _Wrong(f"expected a dict with the keys {', '.join(_DRIFT_KEYS)}, got {type(got).__name__} ({case})")
            missing = [k for k in _DRIFT_KEYS if k not in got]
            if missing:
                raise _Wrong(f"the dict lacks the key(s) {', '.join(missing)} ({case})")
            for k in _DRIFT_KEYS:
                _number(got[k], expected[k], k, case, atol=1e-5, rtol=1e-4)
    return _run("feature-drift statistics", fn, body, strict)


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


def check_bn_input_stats(fn: Callable, strict: bool = False) -> bool:
    """``fn(mean, std, running_mean, running_var, eps) -> tensor (2, c)``: per-channel mean and std of
    features (mean, std: (c,)) after a BatchNorm in eval mode with those running statistics, without its
    affine part; compared with ``torch.nn.functional.batch_norm(..., training=False)`` applied to features
    with exactly that mean and std."""

    def body(fn):
        g = _gen(42)
        for case, c, eps in (("4 channels, eps 1e-5", 4, 1e-5), ("6 channels, eps 0.1", 6, 0.1)):
            u = torch.randn(64, c, generator=g).double()
            u = (u - u.mean(0)) / u.std(0)                                    # exactly mean 0, std 1
            mean, std = torch.randn(c, generator=g).double(), 0.5 + torch.rand(c, generator=g).double()
            feats = u * std + mean                                            # (64, c) with that mean and std
            rm, rv = torch.randn(c, generator=g).double(), 0.2 + torch.rand(c, generator=g).double()
            out = torch.nn.functional.batch_norm(feats, rm, rv, training=False, eps=eps)   # (64, c)
            expected = torch.stack([out.mean(0), out.std(0)]).float()
            got = _call(fn, case, mean.float(), std.float(), rm.float(), rv.float(), eps)
            _tensor(got, expected, "the (mean, std) per channel after the BatchNorm", case, atol=1e-5, rtol=1e-4)
    return _run("features in the head's BatchNorm units", fn, body, strict)


def check_subset_cka(fn: Callable, strict: bool = False) -> bool:
    """``fn(pretrained, task_vectors, alpha, features_of, reference) -> tensor (L,)``: linear CKA, per tapped
    layer, between ``reference`` (N, L, 2C, h, w) and the features of the task-arithmetic merge of
    ``task_vectors``; compared with :func:`simo_lite.merging.task_arithmetic` and
    :func:`simo_lite.diagnostics.linear_cka`."""
    from simo_lite.diagnostics import linear_cka
    from simo_lite.merging import task_arithmetic

    def body(fn):
        g = _gen(43)
        x = torch.randn(5, 2, 2, 2, 3, generator=g)                          # (N, L, h, w, 3): fixed inputs

        def features_of(state):
            """A toy encoder: (N, L, h, w, 3) @ w (3, 4) + b -> tanh -> (N, L, 4, h, w)."""
            return torch.tanh(x @ state["w"] + state["b"]).permute(0, 1, 4, 2, 3)

        pre = {"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g)}
        tvs = {t: {"w": 0.8 * torch.randn(3, 4, generator=g), "b": 0.3 * torch.randn(4, generator=g)}
               for t in ("a", "b", "c")}
        ref = features_of({k: pre[k] + tvs["a"][k] for k in pre})            # expert a's features
        tokens = lambda f, l: f[:, l].permute(0, 2, 3, 1).reshape(-1, f.shape[2])  # noqa: E731
        for case, subset, alpha in (("tasks a and b at alpha 0.5, against expert a", ("a", "b"), 0.5),
                                    ("tasks a, b and c at alpha 0.3, against expert a", ("a", "b", "c"), 0.3)):
            sub = {t: tvs[t] for t in subset}
            merged = features_of(task_arithmetic(pre, sub, alpha))
            expected = torch.tensor([linear_cka(tokens(ref, l), tokens(merged, l)) for l in range(ref.shape[1])])
            got = _call(fn, case, {k: v.clone() for k, v in pre.items()}, sub, alpha, features_of, ref.clone())
            _tensor(got, expected.float(), "the CKA per layer", case, atol=1e-5, rtol=1e-4)
    return _run("CKA of a merged subset, per layer", fn, body, strict)
