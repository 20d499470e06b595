"""The checks of notebook 02 (Training the experts): ``check_train_steps``, ``check_task_vector``,
``check_alpha_as_far``, ``check_encoder_shift``.

The training checks build a tiny SIMO model (the smoke profile's encoder and linear heads, random
weights) and a few random images, so each runs in well under a second on a CPU.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch

from ._core import _Wrong, _call, _run, _number, _state_dict, _gen, _toy_state

__all__ = ["check_train_steps", "check_task_vector", "check_alpha_as_far", "check_encoder_shift"]


def _tiny(tasks: tuple[str, ...], n: int = 24, seed: int = 0):
    """(model, data): a smoke-profile SimoModel with fresh heads for ``tasks`` and ``n`` random images
    with random labels of those tasks, all seeded."""
    from simo_lite import profiles, training
    prof = profiles.get("smoke")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        encoder = training.make_profile_encoder(prof).state_dict()
    model = training.build_model(encoder, prof, tasks, seed=seed)
    g = _gen(100 + seed)
    s = prof.image_size
    data = {"image": torch.rand(n, 3, s, s, generator=g)}
    for t in tasks:
        if t == "seg":
            data[t] = torch.randint(0, 6, (n, s, s), generator=g)
        elif t == "depth":
            data[t] = 1 + 8 * torch.rand(n, 1, s, s, generator=g)
        elif t == "normals":
            v = torch.randn(n, 3, s, s, generator=g)
            data[t] = v / v.norm(dim=1, keepdim=True)
        else:
            raise ValueError(t)
    return model, data


def _task_loss(tasks: tuple[str, ...]) -> Callable:
    """``loss_fn(outputs, targets)``: the registered tasks' losses, averaged (one task: its loss)."""
    from simo_lite.tasks import get_task
    return lambda out, y: sum(get_task(t).loss(out[t], y[t]) for t in tasks) / len(tasks)


def check_train_steps(fn: Callable, strict: bool = False) -> bool:
    """``fn(model, images, targets, loss_fn, batches, lr, weight_decay, grad_clip, pct_start)``: the
    training loop of ``simo_lite.training.fit``, returning the loss of every step, a float tensor (steps,).

    AdamW over the parameters with ``requires_grad`` (weight decay ``weight_decay``), a one-cycle
    schedule (``OneCycleLR``, peak ``lr``, ``total_steps = len(batches)``, warm-up ``pct_start``), the
    model in training mode; for each batch of indices: the outputs ``model(images[idx])``, the loss
    ``loss_fn(outputs, {task: labels[idx]})``, backward, gradient clipping to norm ``grad_clip``,
    optimiser step, schedule step. Compared with ``training.fit`` on the same batches
    (``training.batch_indices``): the same losses and weights up to float tolerance, the frozen
    parameters untouched.
    """
    from simo_lite import training

    def one(fn, case, tasks, frozen, steps, batch_size, lr, clip, pct, seed, eval_first):
        model, data = _tiny(tasks, seed=seed)
        training.Stage.set(model, "heads" if frozen else "all")
        ref = copy.deepcopy(model)
        rec = training.fit(ref, data, tasks, steps, lr, batch_size, seed=seed, weight_decay=1e-4,
                           grad_clip=clip, pct_start=pct)
        batches = [training.batch_indices(len(data["image"]), batch_size, seed, k) for k in range(steps)]
        before = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
        if eval_first:
            model.eval()
        got = _call(fn, case, model, data["image"], {t: data[t] for t in tasks}, _task_loss(tasks), batches,
                    lr, 1e-4, clip, pct)
        if not isinstance(got, torch.Tensor):
            raise _Wrong(f"return the losses as a float tensor (steps,), got {type(got).__name__} ({case})")
        if got.numel() != steps:
            raise _Wrong(f"one loss per batch: {steps} batches, got {got.numel()} values ({case})")
        expected = torch.tensor(rec.metrics["loss"])
        got = got.detach().reshape(-1).double()
        if not math.isclose(float(got[0]), float(expected[0]), rel_tol=1e-4, abs_tol=1e-5):
            hint = " (call model.train() first: the heads' BatchNorm uses the batch's statistics)" if eval_first else ""
            raise _Wrong(f"the first loss is {float(got[0]):.6g}, expected {float(expected[0]):.6g}: it is the loss "
                         f"of the first batch before any update{hint} ({case})")
        bad = ~torch.isclose(got, expected.double(), rtol=1e-4, atol=1e-5)
        if bad.any():
            k = int(bad.nonzero()[0])
            raise _Wrong(f"the loss of step {k} is {float(got[k]):.6g}, expected {float(expected[k]):.6g}; the steps "
                         f"before agree: check zero_grad, the clipping, the optimiser and the schedule ({case})")
        if frozen and any(not torch.equal(v, before[k]) for k, v in model.encoder.state_dict().items()):
            raise _Wrong(f"the frozen encoder changed: train only the parameters with requires_grad ({case})")
        _state_dict({k: v for k, v in model.state_dict().items() if v.is_floating_point()},
                    {k: v for k, v in ref.state_dict().items() if v.is_floating_point()},
                    "the trained weights", case, atol=1e-5, rtol=1e-4)

    def body(fn):
        one(fn, "stage 1: a depth head on a frozen encoder, 12 steps of 8 images", ("depth",), True, 12, 8,
            3e-3, 25.0, 0.25, 0, False)
        one(fn, "stage 2: encoder and seg head, clipping at 0.05, model handed over in eval mode", ("seg",), False,
            6, 8, 5e-4, 0.05, 0.45, 1, True)
    return _run("training loop", fn, body, strict)


def check_task_vector(fn: Callable, strict: bool = False) -> bool:
    """``fn(pretrained, finetuned) -> {name: tensor}``: θ_t − θ₀ over the floating-point tensors.

    Compared with :func:`simo_lite.merging.task_vectors`; integer buffers are left out; float32 out.
    """
    from simo_lite.merging import task_vectors

    def body(fn):
        pre = _toy_state(3)
        ft = {k: (v + 0.1 * torch.randn(v.shape, generator=_gen(4)) if v.is_floating_point() else v.clone())
              for k, v in pre.items()}
        case = "a state dict with two float tensors and one int64 buffer"
        expected = task_vectors(pre, {"t": ft})["t"]
        _state_dict(_call(fn, case, {k: v.clone() for k, v in pre.items()}, {k: v.clone() for k, v in ft.items()}),
                    expected, "the task vector", case, check_dtype="exact")
        pre16 = {"w": torch.randn(3, 3, generator=_gen(5)).half()}
        ft16 = {"w": pre16["w"] + 0.5}
        case = "float16 weights (compute in float32)"
        _state_dict(_call(fn, case, pre16, ft16), task_vectors(pre16, {"t": ft16})["t"], "the task vector", case,
                    check_dtype="exact", atol=1e-3)
    return _run("task vector", fn, body, strict)


def check_alpha_as_far(fn: Callable, strict: bool = False) -> bool:
    """``fn(norms, sum_norm) -> float``: the α at which θ₀ + α Σ_t τ_t lies as far from θ₀ as the
    farthest expert, max_t ‖τ_t‖ / ‖Σ_t τ_t‖ (``norms``: {task: ‖τ_t‖}; ``sum_norm``: ‖Σ_t τ_t‖).
    The formula is written here (no package function)."""
    def body(fn):
        cases = [("three norms, sum norm 2.0", {"a": 1.2, "b": 0.9, "c": 1.0}, 2.0),
                 ("two equal orthogonal vectors", {"x": 3.0, "y": 3.0}, 3.0 * math.sqrt(2)),
                 ("the largest norm is not the first", {"p": 0.1, "q": 0.5, "r": 0.3, "s": 0.2}, 0.7)]
        for case, norms, sum_norm in cases:
            expected = max(norms.values()) / sum_norm
            got = _call(fn, case, dict(norms), sum_norm)
            if isinstance(got, (int, float)) and not isinstance(got, bool) and \
                    math.isclose(float(got), sum(norms.values()) / len(norms) / sum_norm, rel_tol=1e-9) and \
                    not math.isclose(float(got), expected, rel_tol=1e-9):
                raise _Wrong(f"got {got:.4g}, the mean norm: take the farthest expert, the largest ‖τ_t‖ ({case})")
            _number(got, expected, "alpha", case)
    return _run("alpha as far as the farthest expert", fn, body, strict)


def check_encoder_shift(fn: Callable, strict: bool = False) -> bool:
    """``fn(model, images, targets, loss_fn, batches, lr) -> float``: train every parameter of ``model`` in
    place with plain SGD (``torch.optim.SGD(model.parameters(), lr)``, no momentum, no schedule, no
    clipping, training mode), one step per batch of indices, and return how far the encoder moved,
    ‖θ_after − θ_before‖ over the encoder's floating-point weights. Compared with a reference loop
    written here, and the model's weights after training with the reference's."""
    def reference(model, images, targets, loss_fn, batches, lr):
        before = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        model.train()
        for idx in batches:
            loss = loss_fn(model(images[idx]), {t: y[idx] for t, y in targets.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
        return math.sqrt(sum(float(((v.double() - before[k].double()) ** 2).sum())
                             for k, v in model.encoder.state_dict().items() if v.is_floating_point()))

    def body(fn):
        for case, tasks, seed, lr, n_steps in (("a depth expert, 5 steps of 8 images", ("depth",), 2, 0.05, 5),
                                               ("a seg expert, 3 steps of 8 images", ("seg",), 3, 0.1, 3)):
            model, data = _tiny(tasks, seed=seed)
            batches = [torch.randperm(len(data["image"]), generator=_gen(seed + k))[:8] for k in range(n_steps)]
            ref = copy.deepcopy(model)
            expected = reference(ref, data["image"], {t: data[t] for t in tasks}, _task_loss(tasks), batches, lr)
            before = copy.deepcopy(model.state_dict())
            got = _call(fn, case, model, data["image"], {t: data[t] for t in tasks}, _task_loss(tasks), batches, lr)
            if all(torch.equal(v, before[k]) for k, v in model.state_dict().items()):
                raise _Wrong(f"the model did not change: train it in place ({case})")
            _number(got, expected, "the encoder's shift", case, rtol=1e-4, atol=1e-7)
            moved = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
            _state_dict(moved, {k: v for k, v in ref.state_dict().items() if v.is_floating_point()},
                        "the trained weights", case, atol=1e-5, rtol=1e-4)
    return _run("encoder shift after SGD steps", fn, body, strict)
