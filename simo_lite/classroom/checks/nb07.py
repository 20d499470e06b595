"""The checks of notebook 07 (Joint MTL): ``check_mtl_loss``, ``check_joint_steps``,
``check_task_steps`` (the notebook's reading exercise uses ``checks.check_reading``).

The training checks use the tiny SIMO model of notebook 02's checks (smoke-profile encoder, linear
heads for seg, depth and normals, random images and labels): well under a second each on a CPU.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch

from ._core import _Wrong, _call, _number, _run, _state_dict, _tensor, _gen
from .nb02 import _task_loss, _tiny

__all__ = ["check_mtl_loss", "check_joint_steps", "check_task_steps"]

_TASKS = ("seg", "depth", "normals")


def _loss_fns(tasks: tuple[str, ...]) -> dict[str, Callable]:
    from simo_lite.tasks import get_task
    return {t: get_task(t).loss for t in tasks}


def check_mtl_loss(fn: Callable, strict: bool = False) -> bool:
    """``fn(outputs, targets, loss_fns) -> scalar tensor``: the joint MTL objective, the unweighted mean
    of the task losses, (1/T) Σ_t loss_fns[t](outputs[t], targets[t]) over the tasks of ``loss_fns``
    (paper Section 3). Compared with the mean that ``simo_lite.training.fit`` minimises, value and
    gradient."""
    def _grad_leaf(o: torch.Tensor) -> torch.Tensor:
        leaf = o.detach().clone()
        leaf.requires_grad = True                  # an input tensor, not a weight: nothing is frozen here
        return leaf

    def body(fn):
        for case, tasks, seed in (("seg, depth and normals heads on 4 images", _TASKS, 0),
                                  ("depth and normals only", ("depth", "normals"), 1)):
            model, data = _tiny(tasks, n=4, seed=seed)
            model.eval()
            out = model(data["image"])
            out_ref = {t: _grad_leaf(o) for t, o in out.items()}            # leaves whose .grad we compare
            out_in = {t: _grad_leaf(o) for t, o in out.items()}
            targets = {t: data[t] for t in tasks}
            expected = _task_loss(tasks)(out_ref, targets)
            got = _call(fn, case, out_in, dict(targets), _loss_fns(tasks))
            if not isinstance(got, torch.Tensor) or got.numel() != 1:
                raise _Wrong(f"return the loss as a scalar tensor (autograd needs it), got {type(got).__name__} ({case})")
            if math.isclose(float(got.detach()), len(tasks) * float(expected.detach()), rel_tol=1e-5):
                raise _Wrong(f"got the sum of the task losses; the paper's objective is their unweighted mean "
                             f"(divide by the number of tasks, {len(tasks)}) ({case})")
            _number(got.detach(), float(expected.detach()), "the MTL loss", case, rtol=1e-5, atol=1e-6)
            if not got.requires_grad:
                raise _Wrong(f"the loss has no gradient: keep it a tensor (no .item() or float()) ({case})")
            expected.backward()
            _call(lambda: got.backward(), case)
            for t in tasks:
                _tensor(out_in[t].grad, out_ref[t].grad, f"the gradient of the loss w.r.t. the {t} output", case,
                        atol=1e-7, rtol=1e-4)
    return _run("MTL loss", fn, body, strict)


def check_joint_steps(fn: Callable, strict: bool = False) -> bool:
    """``fn(model, images, targets, loss_fns, batches, lr, weight_decay, grad_clip, pct_start) -> (steps, T)``:
    joint training on the MTL loss, recording each task's loss at every step (columns in the order of
    ``loss_fns``).

    The loop of ``training.fit`` (AdamW over the parameters with ``requires_grad``, ``OneCycleLR`` with
    ``total_steps = len(batches)``, training mode, clipping at ``grad_clip``) minimising the mean of the
    task losses; compared with ``training.fit`` on all tasks and the same batches: the row means equal
    its losses, the trained weights its weights, and each column the task's loss at that step."""
    from simo_lite import training

    def body(fn):
        for case, frozen, steps, clip, pct, seed in (("stage 2: encoder and three heads, 4 steps", False, 4, 1.0, 0.5, 0),
                                                     ("stage 1: three heads on a frozen encoder, 5 steps", True, 5,
                                                      25.0, 0.5, 1)):
            model, data = _tiny(_TASKS, n=16, seed=seed)
            training.Stage.set(model, "heads" if frozen else "all")
            ref = copy.deepcopy(model)
            per_task: list[list[float]] = []
            rec = training.fit(ref, data, _TASKS, steps, 3e-3, 8, seed=seed, weight_decay=1e-4, grad_clip=clip,
                               pct_start=pct)
            batches = [training.batch_indices(len(data["image"]), 8, seed, k) for k in range(steps)]
            mirror = copy.deepcopy(model)                  # the per-task columns: the same loop, recorded
            opt = torch.optim.AdamW([p for p in mirror.parameters() if p.requires_grad], lr=3e-3, weight_decay=1e-4)
            sched = training.one_cycle(opt, 3e-3, steps, pct)
            mirror.train()
            fns = _loss_fns(_TASKS)
            for idx in batches:
                out = mirror(data["image"][idx])
                losses = torch.stack([fns[t](out[t], data[t][idx]) for t in _TASKS])
                per_task.append(losses.detach().tolist())
                opt.zero_grad()
                losses.mean().backward()
                torch.nn.utils.clip_grad_norm_([p for p in mirror.parameters() if p.requires_grad], clip)
                opt.step()
                sched.step()
            got = _call(fn, case, model, data["image"], {t: data[t] for t in _TASKS}, fns, batches, 3e-3, 1e-4, clip, pct)
            if not isinstance(got, torch.Tensor) or tuple(got.shape) != (steps, len(_TASKS)):
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                raise _Wrong(f"return a tensor (steps, T) = ({steps}, {len(_TASKS)}): one row per step, one column "
                             f"per task; got {shape} ({case})")
            got = got.detach().double()
            mean = torch.tensor(rec.metrics["loss"], dtype=torch.float64)
            if torch.allclose(got.sum(1), mean, rtol=1e-4, atol=1e-5) and not torch.allclose(got.mean(1), mean):
                raise _Wrong(f"the columns sum to training.fit's loss: record each task's own loss, and train on "
                             f"their mean ({case})")
            bad = ~torch.isclose(got.mean(1), mean, rtol=1e-4, atol=1e-5)
            if bad.any():
                k = int(bad.nonzero()[0])
                raise _Wrong(f"step {k}: the mean of your task losses is {float(got[k].mean()):.6g}, training.fit's "
                             f"loss {float(mean[k]):.6g}; check the loss you minimise, zero_grad, the clipping, "
                             f"the optimiser and the schedule ({case})")
            _tensor(got, torch.tensor(per_task, dtype=torch.float64), "the per-task losses", case, atol=1e-5, rtol=1e-4)
            _state_dict({k: v for k, v in model.state_dict().items() if v.is_floating_point()},
                        {k: v for k, v in ref.state_dict().items() if v.is_floating_point()},
                        "the trained weights", case, atol=1e-5, rtol=1e-4)
    return _run("joint training steps", fn, body, strict)


def check_task_steps(fn: Callable, strict: bool = False) -> bool:
    """``fn(model, images, targets, loss_fns, lr) -> {task: (D,) tensor}``: for each task alone, one plain
    SGD step (``torch.optim.SGD(model.parameters(), lr)``) on its own loss from the model's weights, in
    eval mode; the change of the encoder's parameters, flattened in ``model.encoder.parameters()`` order
    (a one-step task vector, −lr · ∇_θ L_t, 0 for a parameter without a gradient); the model is left as
    it was. Compared with the gradients computed here by autograd."""
    def body(fn):
        for case, tasks, seed, lr in (("seg, depth and normals, lr 0.1", _TASKS, 4, 0.1),
                                      ("depth and normals, lr 1.0", ("depth", "normals"), 5, 1.0)):
            model, data = _tiny(tasks, n=8, seed=seed)
            model.eval()
            targets = {t: data[t] for t in tasks}
            expected = {}
            for t, loss_fn in _loss_fns(tasks).items():
                m = copy.deepcopy(model)
                loss = loss_fn(m(data["image"])[t], targets[t])
                params = list(m.encoder.parameters())
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                expected[t] = torch.cat([(-lr * (g if g is not None else torch.zeros_like(p))).reshape(-1)
                                         for g, p in zip(grads, params)])
            before = copy.deepcopy(model.state_dict())
            got = _call(fn, case, model, data["image"], dict(targets), _loss_fns(tasks), lr)
            if not isinstance(got, dict):
                raise _Wrong(f"return a dict {{task: (D,) tensor}}, got {type(got).__name__} ({case})")
            n_enc = sum(p.numel() for p in model.encoder.parameters())
            for t in tasks:
                if isinstance(got.get(t), torch.Tensor) and got[t].numel() != n_enc:
                    raise _Wrong(f"{t}: {got[t].numel():,} values; the encoder has {n_enc:,} parameters (leave the "
                                 f"heads out) ({case})")
            changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
            if changed:
                raise _Wrong(f"the model changed ({changed[0]}, ...): restore its weights after each task's step, "
                             f"and compute in eval mode ({case})")
            _state_dict({t: v.reshape(-1) if isinstance(v, torch.Tensor) else v for t, v in got.items()},
                        expected, "the one-step task vectors", case, atol=1e-7, rtol=1e-3)
    return _run("one SGD step per task", fn, body, strict)
