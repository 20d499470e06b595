"""Merging coefficients learned on data: per-task, per-layer lambdas, AdaMerging-style (paper Fig. 2).

    theta(lambda) = theta_0 + sum_t lambda[t, g(k)] * tau_t[k]      (g(k): the layer group of tensor k)

:mod:`simo_lite.merging` stays state-dict algebra; this module trains, so it uses the model, the task
losses and the training loop's batches (``training.batch_indices``). Its coefficients are not the
merge scaling ``alpha``: they are one value per (task, layer group), clamped to [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn as nn

from . import progress as pg
from .merging import layer_groups
from .models import SimoModel, encoder_features
from .tasks import get_task
from .training import batch_indices, set_trainable
from .types import Device, Split, StateDict

__all__ = ["learn_layer_coefficients", "group_order", "merged_features"]


def group_order(group: str) -> tuple[int, int]:
    """Sort key of a layer group: 'embed', then 'block0', 'block1', ..., then 'norm'."""
    if group == "embed":
        return (0, 0)
    if group.startswith("block"):
        return (1, int(group[5:]))
    return (2, 0)


# the starting value of every coefficient (also part of their store key: Experiment.coefficients_artifact)
INIT = 0.3


def learn_layer_coefficients(pretrained: StateDict, task_vectors: dict[str, StateDict], model: SimoModel,
                             data: Split, steps: int = 100, lr: float = 1e-2, batch_size: int = 32, init: float = INIT,
                             seed: int = 0, device: Device = "cpu", progress: bool = False,
                             ) -> tuple[torch.Tensor, list[str], list[float]]:
    """AdaMerging-style per-task, per-layer merging coefficients, learned on labelled validation data.

    theta(lambda) = theta_0 + sum_t lambda[t, g(k)] * tau_t[k], lambda clamped to [0, 1], trained to
    minimise the unweighted mean of the task losses of ``model``'s (frozen) heads on ``data`` (one
    split; the paper's Fig. 2 analysis). ``pretrained`` is θ₀, ``task_vectors`` ``{task: tau_t}``
    (:func:`simo_lite.merging.task_vectors`); ``model`` is a SimoModel whose heads are the experts'
    (its parameters are frozen, in place).

    Returns (coefficients lambda (T, G) tensor, group names (G,), loss per step).
    """
    if not task_vectors:
        raise ValueError("learn_layer_coefficients: no task vectors to merge")
    if steps < 0 or batch_size < 1:
        raise ValueError(f"learn_layer_coefficients: steps must be >= 0 and batch_size >= 1, got steps={steps}, "
                         f"batch_size={batch_size}")
    missing = [t for t in model.tasks if t not in data]
    if "image" not in data or not len(data["image"]) or missing:
        raise ValueError(f"learn_layer_coefficients: data must be one split with images and labels for "
                         f"{', '.join(model.tasks)}; its keys: {', '.join(data) or 'none'}")
    tasks = list(task_vectors)
    groups = layer_groups(pretrained)
    names = sorted(set(groups.values()), key=group_order)              # embed, block0..block{D-1}, norm
    col = {g: i for i, g in enumerate(names)}
    device = torch.device(device)
    coef = torch.full((len(tasks), len(names)), float(init), device=device, requires_grad=True)
    opt = torch.optim.Adam([coef], lr=lr)
    model = model.to(device).eval()
    set_trainable(model, False)
    theta0 = {k: v.to(device) for k, v in pretrained.items()}            # pretrained, on the device
    tvs = {t: {k: v.to(device) for k, v in task_vectors[t].items()} for t in tasks}
    keys = list(groups)
    losses = []
    for step in pg.progress(range(steps), "learning layer coefficients", show=progress, leave=False):
        idx = batch_indices(len(data["image"]), batch_size, seed, step)
        coef_c = coef.clamp(0, 1)
        params = dict(theta0)
        for k in keys:
            j = col[groups[k]]
            params[k] = theta0[k] + sum(coef_c[i, j] * tvs[t][k] for i, t in enumerate(tasks))
        feats = merged_features(model, params, data["image"][idx].to(device))  # (B, L, 2C, h, w)
        loss = sum(get_task(t).loss(model.heads[t](feats), data[t][idx].to(device)) for t in model.tasks) / len(model.tasks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            coef.clamp_(0, 1)
        losses.append(float(loss.detach()))
    return coef.detach().cpu().clamp(0, 1), names, losses


def merged_features(model: SimoModel, params: StateDict, images: torch.Tensor) -> torch.Tensor:
    """Head-input features (B, L, 2C, h, w) of ``images`` (B, 3, H, W) in [0, 1] through ``model``'s
    encoder with its weights replaced by ``params`` (``{name: tensor}``, names of the encoder's state dict;
    any it leaves out are the encoder's own), differentiable with respect to ``params``
    (``torch.func.functional_call``: the module itself is not changed)."""
    from torch.func import functional_call

    tap = _FeatureTap(model.encoder, model.taps)
    return functional_call(tap, {f"encoder.{k}": v for k, v in params.items()}, (images,))


class _FeatureTap(nn.Module):
    """``forward(images) = encoder_features(encoder, images, taps)``, so functional_call can swap weights."""

    def __init__(self, encoder: nn.Module, taps: tuple[int, ...]):
        super().__init__()
        self.encoder, self.taps = encoder, taps

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return encoder_features(self.encoder, images, self.taps)
