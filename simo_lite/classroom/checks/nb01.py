"""The checks of notebook 01 (Foundation encoder): the lesson's builds ``check_simmim_loss`` and
``check_vicreg_terms``, the exercises ``check_all_positive_f1`` and ``check_train_probe``."""
from __future__ import annotations

from typing import Callable

import torch

from ._core import _Wrong, _call, _gen, _number, _run, _tensor

__all__ = ["check_simmim_loss", "check_vicreg_terms", "check_all_positive_f1", "check_train_probe"]


def _tiny_recon(seed: int, img: int = 16, patch: int = 4, dim: int = 16):
    """A small ``foundation.MaskedReconstruction`` (a 2-block ViT), seeded, in eval mode."""
    from simo_lite.foundation import MaskedReconstruction
    from simo_lite.models import make_encoder
    encoder = make_encoder(img_size=img, patch_size=patch, embed_dim=dim, depth=2, num_heads=2, seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MaskedReconstruction(encoder, patch)
    return model.eval()


def check_simmim_loss(fn: Callable, strict: bool = False) -> bool:
    """``fn(model, images, mask) -> 0-d tensor``: SimMIM's masked-patch L1, compared with
    :class:`simo_lite.foundation.MaskedReconstruction` (its ``forward``) on a small ViT."""

    def body(fn):
        g = _gen(101)
        for case, seed, ratio in (("2 images of 16x16 px, patch 4, 60% of the patches hidden", 1, 0.6),
                                  ("3 images, one hidden patch per image", 2, None)):
            model = _tiny_recon(seed)
            images = torch.rand(3 if ratio is None else 2, 3, 16, 16, generator=g)
            if ratio is None:
                mask = torch.zeros(3, 16, dtype=torch.bool)
                mask[torch.arange(3), torch.tensor([0, 7, 15])] = True
            else:
                mask = torch.rand(2, 16, generator=g) < ratio
            with torch.no_grad():
                expected = model(images, mask)
                got = _call(fn, case, model, images.clone(), mask.clone())
            if not isinstance(got, torch.Tensor) or got.numel() != 1:
                raise _Wrong(f"the loss: expected a 0-d tensor (one number), got {type(got).__name__} "
                             f"{tuple(getattr(got, 'shape', ()))} ({case})")
            _number(float(got), float(expected), "the loss", case, atol=1e-5, rtol=1e-4)
    return _run("SimMIM masked-patch loss", fn, body, strict)


def check_vicreg_terms(fn: Callable, strict: bool = False) -> bool:
    """``fn(za, zb) -> tensor (3,)``: invariance, variance, covariance of two views' tokens (B, N, D),
    compared with :func:`simo_lite.foundation.vicreg_terms`."""
    from simo_lite.foundation import vicreg_terms

    def body(fn):
        g = _gen(102)
        za = torch.randn(4, 3, 5, generator=g)
        cases = [("4 scenes x 3 positions x 5 features, two unrelated views", za, torch.randn(4, 3, 5, generator=g)),
                 ("view b = view a + small noise", za, za + 0.1 * torch.randn(4, 3, 5, generator=g)),
                 ("collapsed views: every scene gives the same tokens", 0.01 * za[:1].expand(4, -1, -1),
                  0.01 * za[:1].expand(4, -1, -1))]
        for case, a, b in cases:
            expected = torch.stack(vicreg_terms(a, b))
            _tensor(_call(fn, case, a.clone(), b.clone()), expected,
                    "the terms (invariance, variance, covariance)", case, atol=1e-5, rtol=1e-4)
    return _run("VICReg terms of two views", fn, body, strict)


def check_all_positive_f1(fn: Callable, strict: bool = False) -> bool:
    """``fn(target) -> float``: F1 of the prediction "positive everywhere" on a binary ``target``,
    compared with :class:`simo_lite.metrics.BinaryF1` given an all-ones prediction."""
    from simo_lite.metrics import BinaryF1

    def body(fn):
        g = _gen(103)
        cases = [("2 maps of 1x4x4 with 3 positive pixels", torch.zeros(2, 1, 4, 4)),
                 ("3 maps of 1x8x8, about 20% positive", (torch.rand(3, 1, 8, 8, generator=g) < 0.2).float()),
                 ("one map, every pixel positive", torch.ones(1, 1, 3, 3))]
        cases[0][1].view(-1)[[0, 5, 31]] = 1.0
        for case, target in cases:
            metric = BinaryF1()
            metric.update(torch.ones_like(target), target)
            _number(_call(fn, case, target.clone()), metric.compute(), "the F1", case, atol=1e-6, rtol=1e-5)
    return _run("F1 of an all-positive prediction", fn, body, strict)


def check_train_probe(fn: Callable, strict: bool = False) -> bool:
    """``fn(head, features, target, task, steps, lr, batch_size, seed) -> list of losses``: a probe trained
    on cached features, compared with :func:`simo_lite.training.fit` (frozen encoder, ``features=``) on the
    same batches: the per-step losses and the head's weights afterwards."""
    import copy

    from simo_lite.models import SimoModel, make_encoder, make_head
    from simo_lite.training import fit, set_trainable

    def body(fn):
        g = _gen(104)
        feats = torch.randn(12, 2, 8, 2, 2, generator=g)                  # (N, L, 2C, h, w): C = 4, 2 taps
        for case, task, target in (("depth, 12 images, 5 steps of batch 4", "depth",
                                    1 + 3 * torch.rand(12, 1, 4, 4, generator=g)),
                                   ("keypoints, 12 images, 5 steps of batch 4", "keypoints",
                                    (torch.rand(12, 1, 4, 4, generator=g) < 0.2).float())):
            with torch.random.fork_rng():
                torch.manual_seed(5)
                head = make_head("linear", task, 4, 2, 4)
            ref = copy.deepcopy(head)
            model = SimoModel(set_trainable(make_encoder(img_size=8, patch_size=4, embed_dim=4, depth=1, num_heads=2,
                                                         seed=0), False), {task: ref}, taps=(0,))
            record = fit(model, {"image": torch.zeros(12, 3, 8, 8), task: target}, (task,), 5, 1e-2, 4, seed=3,
                         weight_decay=1e-4, grad_clip=25.0, pct_start=0.1, features=feats)
            losses = _call(fn, case, head, feats.clone(), target.clone(), task, 5, 1e-2, 4, 3)
            if not isinstance(losses, (list, tuple)) or len(losses) != 5:
                raise _Wrong(f"the losses: expected a list of 5 floats (one per step), got {type(losses).__name__}"
                             f"{f' of length {len(losses)}' if hasattr(losses, '__len__') else ''} ({case})")
            for step, (got, want) in enumerate(zip(losses, record.metrics["loss"])):
                _number(got, want, f"the loss of step {step}", case, atol=1e-5, rtol=1e-4)
            for name, want in ref.state_dict().items():
                _tensor(head.state_dict()[name], want, f"the head's {name} after training", case, atol=1e-5, rtol=1e-4)
    return _run("probe training loop", fn, body, strict)
