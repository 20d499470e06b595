"""The checks of notebook 08 (Task relationships).

The lesson: ``check_lambda_probe`` (the paper's probe θ₀ + λ τ_p, compared with
``simo_lite.merging.task_arithmetic`` on one task vector) and ``check_learn_coefficients`` (the training
loop of the per-layer coefficients, compared with ``simo_lite.coefficients.learn_layer_coefficients``).
The exercises: ``check_taskwise_merge`` (the notebook's reading exercise uses ``checks.check_reading``).
"""
from __future__ import annotations

from typing import Callable

import torch

from ._core import _Wrong, _call, _gen, _run, _number, _state_dict, _tensor, _toy_state, _toy_tvs

__all__ = ["check_lambda_probe", "check_learn_coefficients", "check_taskwise_merge"]


def check_lambda_probe(fn: Callable, strict: bool = False) -> bool:
    """``fn(theta_0, tau_p, lams, score) -> {float(lam): score(theta_0 + lam * tau_p)}``: the paper's probe.

    Every encoder handed to ``score`` is compared with ``merging.task_arithmetic(theta_0, {p: tau_p}, lam)``
    (dtypes kept, integer buffers copied), and the result's keys and values with the scores of those
    encoders; ``theta_0`` must stay unchanged.
    """
    from simo_lite.merging import task_arithmetic

    def score(state):
        return {"a": float(state["w"].double().sum()), "b": float(state["b"].double().norm())}

    def body(fn):
        theta_0, tau = _toy_state(50), _toy_tvs(51)["task0"]
        lams = [0.0, 0.5, 1.0, 1.5]
        case = f"a task vector of two tensors, lams {lams}, theta_0 with an int64 buffer"
        seen, before = [], {k: v.clone() for k, v in theta_0.items()}
        got = _call(fn, case, theta_0, {k: v.clone() for k, v in tau.items()}, list(lams),
                    lambda state: (seen.append(state), score(state))[1])
        if not isinstance(got, dict):
            raise _Wrong(f"expected a dict {{lam: score}}, got {type(got).__name__} ({case})")
        if list(got) != lams:
            raise _Wrong(f"the keys are {list(got)}, expected the lams in order as floats, {lams} ({case})")
        if len(seen) != len(lams):
            raise _Wrong(f"score was called {len(seen)} times, expected once per lam ({len(lams)}) ({case})")
        for lam, state in zip(lams, seen):
            expected = task_arithmetic(before, {"p": tau}, lam)
            _state_dict(state, expected, f"the encoder at lam={lam}", case, check_dtype="exact")
            want = score(expected)
            if not isinstance(got[lam], dict) or set(got[lam]) != set(want):
                raise _Wrong(f"the value at lam={lam} should be what score returned for that encoder, {want}, "
                             f"got {got[lam]!r} ({case})")
            for t, v in want.items():
                _number(got[lam][t], v, f"score {t!r} at lam={lam}", case)
        _state_dict(theta_0, before, "theta_0 after the probe (it must not change)", case)
    return _run("the lambda probe", fn, body, strict)


def check_taskwise_merge(fn: Callable, strict: bool = False) -> bool:
    """``fn(theta_0, task_vectors, lam) -> state dict``: θ₀ + Σ_t λ_t τ_t with one coefficient per task.

    Reference: ``merging.apply_layer_coefficients`` with every layer group of task t at λ_t (one column).
    """
    from simo_lite.merging import apply_layer_coefficients, layer_groups

    def body(fn):
        theta_0, tvs = _toy_state(52), _toy_tvs(53)
        groups = sorted(set(layer_groups(theta_0).values()))
        for lam in ({"task0": 0.3, "task1": 0.3, "task2": 0.3}, {"task0": 1.0, "task1": 0.0, "task2": 0.5},
                    {"task2": -0.2, "task0": 0.7, "task1": 0.1}):
            case = f"3 task vectors, lam {lam}, theta_0 with an int64 buffer"
            expected = apply_layer_coefficients(theta_0, tvs, [[lam[t]] * len(groups) for t in tvs], groups)
            got = _call(fn, case, {k: v.clone() for k, v in theta_0.items()},
                        {t: {k: v.clone() for k, v in tv.items()} for t, tv in tvs.items()}, dict(lam))
            _state_dict(got, expected, "the merged state", case, check_dtype="exact")
        half = {k: v.half() if v.is_floating_point() else v for k, v in theta_0.items()}
        case = "float16 theta_0 (the merged tensors stay float16)"
        got = _call(fn, case, {k: v.clone() for k, v in half.items()}, tvs, {"task0": 0.5, "task1": 0.5, "task2": 0.5})
        expected = apply_layer_coefficients(half, tvs, [[0.5] * len(groups)] * 3, groups)
        _state_dict(got, expected, "the merged state", case, atol=1e-2, check_dtype="exact")
    return _run("task-wise merge", fn, body, strict)


def check_learn_coefficients(fn: Callable, strict: bool = False) -> bool:
    """``fn(theta_0, task_vectors, model, data, steps, lr, init, batch_size, seed) -> (coef, losses)``: the
    loop that learns per-task, per-layer merging coefficients (paper Fig. 2), compared with
    :func:`simo_lite.coefficients.learn_layer_coefficients` on a tiny ViT with two heads and the same
    batches: the coefficients (T, G) after training and the loss of every step."""
    import copy

    from simo_lite.coefficients import learn_layer_coefficients
    from simo_lite.merging import task_vectors as make_task_vectors
    from simo_lite.models import SimoModel, make_encoder, make_head

    def body(fn):
        g = _gen(108)
        encoder = make_encoder(img_size=8, patch_size=4, embed_dim=4, depth=2, num_heads=2, seed=0)
        theta_0 = {k: v.clone() for k, v in encoder.state_dict().items()}
        experts = {t: {k: v + 0.1 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                       for k, v in theta_0.items()} for t in ("depth", "keypoints")}
        tvs = make_task_vectors(theta_0, experts)
        with torch.random.fork_rng():
            torch.manual_seed(7)
            heads = {t: make_head("linear", t, 4, 2, 8) for t in tvs}
        model = SimoModel(encoder, heads, taps=(0, 1))
        data = {"image": torch.rand(12, 3, 8, 8, generator=g), "depth": 1 + 3 * torch.rand(12, 1, 8, 8, generator=g),
                "keypoints": (torch.rand(12, 1, 8, 8, generator=g) < 0.2).float()}
        for case, steps, lr, init in (("2 tasks, 2 blocks, 4 steps of batch 4 at lr 0.05 from 0.3", 4, 5e-2, 0.3),
                                      ("the same from 0.9 at lr 0.5 (the clamp to [0, 1] matters)", 3, 0.5, 0.9)):
            want, _, want_losses = learn_layer_coefficients(theta_0, tvs, copy.deepcopy(model), data, steps=steps,
                                                            lr=lr, batch_size=4, init=init, seed=3)
            got = _call(fn, case, {k: v.clone() for k, v in theta_0.items()}, tvs, copy.deepcopy(model),
                        {k: v.clone() for k, v in data.items()}, steps, lr, init, 4, 3)
            if not isinstance(got, tuple) or len(got) != 2:
                raise _Wrong(f"expected a tuple (coefficients, losses), got {type(got).__name__} ({case})")
            coef, losses = got
            if not isinstance(losses, (list, tuple)) or len(losses) != steps:
                length = f" of length {len(losses)}" if hasattr(losses, "__len__") else ""
                raise _Wrong(f"the losses: expected a list of {steps} floats (one per step), got "
                             f"{type(losses).__name__}{length} ({case})")
            for step, (l_got, l_want) in enumerate(zip(losses, want_losses)):
                _number(l_got, l_want, f"the loss of step {step}", case, atol=1e-5, rtol=1e-4)
            _tensor(coef, want, "the coefficients (tasks, layer groups) after training", case, atol=1e-5, rtol=1e-4)
    return _run("per-layer coefficient loop", fn, body, strict)
