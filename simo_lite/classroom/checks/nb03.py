"""The checks of notebook 03 (Merging).

The lesson: ``check_task_arithmetic``, ``check_ties_trim``, ``check_ties_elect_sign``,
``check_ties_disjoint_mean`` (task arithmetic and the three steps of TIES, each compared with
``simo_lite.merging``). The exercises: ``check_chance_conflicts``, ``check_dare_merge``,
``check_sweep_alpha``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ._core import _Wrong, _call, _run, _tensor, _number, _state_dict, _gen, _toy_state, _toy_tvs

__all__ = ["check_task_arithmetic", "check_ties_trim", "check_ties_elect_sign", "check_ties_disjoint_mean",
           "check_chance_conflicts", "check_dare_merge", "check_sweep_alpha"]


def _copy(tvs: dict) -> dict:
    return {t: {k: v.clone() for k, v in tv.items()} for t, tv in tvs.items()}


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
            got = _call(fn, case, {k: v.clone() for k, v in theta_0.items()}, _copy(tvs), alpha)
            _state_dict(got, expected, "the merged state", case, check_dtype="exact")
    return _run("task arithmetic", fn, body, strict)


def _package_trim(tv: dict, k: float) -> dict:
    """TIES' trim of one task vector: ``merging.ties`` on that vector alone (one task: its own sign, its own
    values, so the result is the trimmed vector)."""
    from simo_lite.merging import ties
    return ties({n: torch.zeros_like(v) for n, v in tv.items()}, {"t": tv}, k=k, alpha=1.0)


def check_ties_trim(fn: Callable, strict: bool = False) -> bool:
    """``fn(tv, k) -> {name: tensor}``: TIES' trim of one task vector (``merging.ties``'s first step).

    Keeps the entries whose magnitude is at least the m-th largest over all the vector's tensors together,
    m = max(round(k n), 1), and zeros the others; k = 1 keeps every entry. Reference: ``merging.ties`` on
    the vector alone (one task: the trimmed vector itself).
    """
    def body(fn):
        g = _gen(31)
        case = "one task vector whose tensor 'big' holds all the large entries, k=0.5"
        tv = {"big": 10 * torch.randn(10, generator=g), "small": 0.01 * torch.randn(10, generator=g)}
        got = _call(fn, case, {n: v.clone() for n, v in tv.items()}, 0.5)
        if isinstance(got, dict) and isinstance(got.get("small"), torch.Tensor) and bool((got["small"] != 0).any()):
            raise _Wrong("entries of the tensor 'small' were kept although all 10 entries of 'big' are larger: "
                         "the top-k fraction is counted over the whole task vector (all tensors together), "
                         f"not per tensor ({case})")
        _state_dict(got, _package_trim(tv, 0.5), "the trimmed vector", case, check_dtype="kind")
        tvs = _toy_tvs(32)
        for k in (0.2, 0.5, 1.0):
            case = f"a task vector of two tensors (4, 3) and (5,), k={k}"
            got = _call(fn, case, {n: v.clone() for n, v in tvs["task1"].items()}, k)
            _state_dict(got, _package_trim(tvs["task1"], k), "the trimmed vector", case, check_dtype="kind")
    return _run("TIES trim", fn, body, strict)


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


def check_ties_disjoint_mean(fn: Callable, strict: bool = False) -> bool:
    """``fn(trimmed, sign) -> tensor``: TIES' disjoint mean of the stacked trimmed vectors (T, *shape) under
    the elected signs (*shape): per entry, the mean of the non-zero values with the elected sign, 0 where none.

    Reference: ``merging.ties`` with k = 1 on the trimmed vectors (it elects γ = sign of the sum itself).
    """
    from simo_lite.merging import ties

    def reference(stack):
        tvs = {f"t{i}": {"w": v} for i, v in enumerate(stack)}
        return ties({"w": torch.zeros(stack.shape[1:])}, tvs, k=1.0, alpha=1.0)["w"]

    def body(fn):
        hand = torch.tensor([[0.9, 0.0, 0.4, 0.0, -0.7, 0.0], [0.5, 0.0, -0.6, 0.0, 0.0, -0.8],
                             [0.0, 0.8, -0.3, 0.0, 0.6, 0.0]])
        case = "the lesson's hand example (3 trimmed vectors of 6 entries)"
        got = _call(fn, case, hand.clone(), torch.sign(hand.sum(0)))
        if isinstance(got, torch.Tensor) and got.shape == hand.shape[1:] and math.isclose(float(got[0]), 1.4 / 3,
                                                                                           abs_tol=1e-4):
            raise _Wrong("entry 0 is (0.9 + 0.5) / 3: divide by the number of agreeing values |A_i| (here 2), "
                         "not by the number of tasks")
        _tensor(got, reference(hand), "tau_TIES", case, check_dtype="kind")
        stack = torch.randn(4, 3, 5, generator=_gen(12)) * (torch.rand(4, 3, 5, generator=_gen(13)) > 0.4)
        case = "4 random trimmed tensors of shape (3, 5)"
        got = _call(fn, case, stack.clone(), torch.sign(stack.sum(0)))
        _tensor(got, reference(stack), "tau_TIES", case, check_dtype="kind")
    return _run("TIES disjoint mean", fn, body, strict)


def _chance(kept) -> float:
    """P(an entry holds a positive and a negative kept value) when task t keeps it with probability k_t,
    independently, with sign + or - at even odds: 1 - 2 prod(1 - k_t / 2) + prod(1 - k_t)."""
    return 1 - 2 * math.prod(1 - k / 2 for k in kept) + math.prod(1 - k for k in kept)


def check_chance_conflicts(fn: Callable, strict: bool = False) -> bool:
    """``fn(kept) -> float``: the chance of a sign conflict in one entry, given each task's kept fraction.

    No package counterpart; the reference is the formula by inclusion-exclusion,
    P = 1 - 2 ∏_t (1 - k_t / 2) + ∏_t (1 - k_t) (P(no positive) = P(no negative) = ∏_t (1 - k_t / 2),
    P(neither) = ∏_t (1 - k_t)).
    """
    def body(fn):
        for kept in ([0.2, 0.2, 0.2], [1.0, 1.0], [0.5], [0.3, 0.1, 0.9, 0.5]):
            case = f"kept fractions {kept}"
            _number(_call(fn, case, list(kept)), _chance(kept), "the chance of a conflict", case, atol=1e-9)
    return _run("sign conflicts by chance", fn, body, strict)


def check_dare_merge(fn: Callable, strict: bool = False) -> bool:
    """``fn(theta_0, task_vectors, p, alpha, seed) -> state dict``: DARE, θ₀ + α Σ_t m_t ⊙ τ_t / (1 − p).

    The masks are the learner's own random draws, so the check tests what holds for any of them:
    p = 0 is ``merging.task_arithmetic``; every merged entry is θ₀ + α/(1−p) times the sum of some subset of
    the tasks' entries; about a fraction p of one task's entries is dropped; the same seed gives the same
    merge; dtypes are kept and integer buffers copied.
    """
    from simo_lite.merging import task_arithmetic

    def body(fn):
        theta_0, tvs = _toy_state(40), _toy_tvs(41)
        case = "3 task vectors, p=0 (nothing dropped), alpha=0.6"
        got = _call(fn, case, {k: v.clone() for k, v in theta_0.items()}, _copy(tvs), 0.0, 0.6, 0)
        _state_dict(got, task_arithmetic(theta_0, tvs, 0.6), "the merged state", case, check_dtype="exact")

        g = _gen(42)
        big0 = {"w": torch.randn(2000, generator=g), "steps": torch.tensor([1, 2])}
        tau = torch.randn(2000, generator=g)
        case = "one task vector of 2,000 entries, p=0.5, alpha=0.7"
        got = _call(fn, case, {k: v.clone() for k, v in big0.items()}, {"a": {"w": tau.clone()}}, 0.5, 0.7, 3)
        _state_dict(got, big0, "the merged state", case, atol=float("inf"), check_dtype="exact")
        _tensor(got["steps"], big0["steps"], "the integer buffer 'steps' (copied)", case)
        delta = (got["w"].double() - big0["w"].double()) / 0.7                      # 0 or tau / (1 - p)
        dropped = delta.abs() < 1e-4
        bad = ~(dropped | ((delta - tau.double() / 0.5).abs() < 1e-4))
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            hint = " (kept entries are rescaled by 1/(1-p))" if abs(float(delta[i] - tau[i])) < 1e-4 else ""
            raise _Wrong(f"entry {i} of 'w' is neither theta_0 (dropped) nor theta_0 + alpha * tau / (1 - p) "
                         f"(kept){hint} ({case})")
        share = float(dropped.double().mean())
        if not 0.44 <= share <= 0.56:
            raise _Wrong(f"{share:.1%} of the entries were dropped, expected about p = 50% ({case})")
        again = _call(fn, case, {k: v.clone() for k, v in big0.items()}, {"a": {"w": tau.clone()}}, 0.5, 0.7, 3)
        _tensor(again["w"] if isinstance(again, dict) else again, got["w"], "a second merge with the same seed", case)

        case = "2 task vectors, p=0.3, alpha=1.0, float16 theta_0"
        two = {t: {"w": tv["w"]} for t, tv in list(tvs.items())[:2]}
        half = theta_0["w"].half()
        got = _call(fn, case, {"w": half.clone()}, _copy(two), 0.3, 1.0, 5)
        _state_dict(got, {"w": half}, "the merged state", case, atol=float("inf"), check_dtype="exact")
        a, b = (two[t]["w"].double() / 0.7 for t in two)
        d = got["w"].double() - half.double()
        ok = torch.stack([(d - c).abs() < 2e-3 for c in (0 * a, a, b, a + b)]).any(0)
        if not bool(ok.all()):
            idx = tuple(int(i) for i in (~ok).nonzero()[0])
            raise _Wrong(f"entry {idx} of 'w' is not theta_0 + (m_a tau_a + m_b tau_b) / (1 - p) for any masks m "
                         f"({case})")
    return _run("DARE merge", fn, body, strict)


def check_sweep_alpha(fn: Callable, strict: bool = False) -> bool:
    """``fn(score, grid, alpha_max, step) -> (best alpha, {alpha: score})``: the validation sweep of
    ``merging.select_alpha(score, grid, alpha_max=..., step=...)``, the grid extended by ``step`` while
    the best alpha is the largest tried and below ``alpha_max``; ties go to the smaller alpha, NaN
    scores are ignored; every alpha is scored once.
    """
    from simo_lite.merging import select_alpha

    grid = tuple(round(0.1 * i, 1) for i in range(11))
    cases = [("a score that keeps rising (grid 0, 0.5, 1; step 0.25; alpha_max 2)", lambda a: a, (0.0, 0.5, 1.0), 2.0,
              0.25),
             ("a peak inside the grid at 0.3", lambda a: -(a - 0.3) ** 2, grid, 2.0, 0.1),
             ("a peak at 1.2, beyond the grid 0..1", lambda a: -(a - 1.2) ** 2, grid, 2.0, 0.1),
             ("a plateau from 1.0 on (a tie at the edge goes to the smaller alpha)", lambda a: min(a, 1.0), grid, 2.0,
              0.1),
             ("a NaN score at 0.5 and the peak at 0.6", lambda a: float("nan") if a == 0.5 else -abs(a - 0.6), grid,
              1.5, 0.1)]

    def body(fn):
        for case, score, g, top, step in cases:
            calls = []

            def counted(a, score=score, calls=calls):
                calls.append(round(float(a), 6))
                return score(a)
            expected_best, expected = select_alpha(score, g, alpha_max=top, step=step)
            got = _call(fn, case, counted, g, top, step)
            if not (isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], dict)):
                raise _Wrong(f"expected a tuple (best alpha, {{alpha: score}}), got {type(got).__name__} ({case})")
            best, scores = got
            tried = {round(float(a), 6): s for a, s in scores.items()}
            missing = sorted(set(expected) - set(tried))
            extra = sorted(set(tried) - set(expected))
            if missing or extra:
                raise _Wrong(f"alphas tried: {sorted(tried)}, expected {sorted(expected)}"
                             + (f" (missing {missing})" if missing else "") + (f" (extra {extra})" if extra else "")
                             + f" ({case})")
            if len(calls) != len(set(calls)):
                raise _Wrong(f"score was called {len(calls)} times for {len(set(calls))} alphas: score each alpha "
                             f"once (a score is a merge and an evaluation) ({case})")
            for a, s in expected.items():
                _number(tried[a], s, f"the score of alpha {a}", case)
            _number(best, expected_best, "the best alpha", case)
    return _run("alpha sweep", fn, body, strict)
