"""The checks of notebook 05 (Head realignment): ``check_reestimate_bn`` and ``check_refit_head`` (built in
the lesson), ``check_one_head_metric`` (an exercise; the notebook's other exercise, a reading of the run, uses
``checks.check_reading``).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch

from ._core import _Wrong, _call, _number, _run, _step_losses, _tensor

__all__ = ["check_reestimate_bn", "check_refit_head", "check_one_head_metric"]


def _tiny(head: str = "linear", tasks=("seg", "depth"), n: int = 8, seed: int = 0, embed_dim: int = 8,
          depth: int = 2, size: int = 16):
    """A small SimoModel (ViT of ``depth`` blocks, ``head`` heads) and ``n`` rendered scenes of ``size`` px."""
    from simo_lite import scenes
    from simo_lite.models import SimoModel, make_encoder, make_head
    enc = make_encoder(img_size=size, patch_size=8, embed_dim=embed_dim, depth=depth, num_heads=2, seed=seed)
    taps = tuple(range(depth))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        heads = {t: make_head(head, t, embed_dim, len(taps), size) for t in tasks}
    model = SimoModel(enc, heads, taps).eval()
    return model, scenes.make_scenes(n, size=size, seed=seed + 7)


def _expert_like_bn(model, seed: int) -> None:
    """Give every BatchNorm of the heads running statistics of other features (as an expert's would be)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.heads.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            m.num_batches_tracked.fill_(100)


def _same_params(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def check_reestimate_bn(fn: Callable, strict: bool = False) -> bool:
    """``fn(head, features, batch_size) -> head``: the head's BatchNorm running statistics recomputed
    from cached features (N, L, 2C, h, w), no gradient step, the head returned in eval mode.

    Compared with :func:`simo_lite.realign.bn_reestimate` on a linear head (one BatchNorm) and a conv
    head (two, one behind the other), with batches that do not divide N evenly.
    """
    from simo_lite.realign import bn_reestimate
    from simo_lite.training import cache_features

    hint = ("(reset the running statistics, set momentum to None so that BatchNorm averages the statistics "
            "of the batches, put the BatchNorms in train mode and run the features through in batches)")

    def body(fn):
        for kind, n, bs in (("linear", 10, 4), ("conv", 6, 6)):
            model, data = _tiny(kind, n=n, seed=3)
            _expert_like_bn(model, seed=4)
            ref, _ = bn_reestimate(model, data, batch_size=bs)
            feats = cache_features(model, data["image"])                      # (N, L, 2C, h, w)
            for t in model.tasks:
                case = f"a {kind} head ({t}), {n} feature maps in batches of {bs}"
                head = copy.deepcopy(model.heads[t]).eval()
                got = _call(fn, case, head, feats.clone(), bs)
                if not isinstance(got, torch.nn.Module):
                    raise _Wrong(f"return the head (a torch.nn.Module), got {type(got).__name__} ({case})")
                if got.training:
                    raise _Wrong(f"return the head in eval mode (head.eval()), so that it uses the new statistics "
                                 f"({case})")
                if not _same_params(got, model.heads[t]):
                    raise _Wrong(f"the head's weights changed: re-estimation takes no gradient step ({case})")
                want = dict(ref.heads[t].named_buffers())
                for name, buf in got.named_buffers():
                    if name.endswith(("running_mean", "running_var")):
                        try:
                            _tensor(buf, want[name], name, case, atol=1e-4, rtol=1e-4)
                        except _Wrong as e:
                            raise _Wrong(f"{e} {hint}") from None
                for m, r in zip(got.modules(), model.heads[t].modules()):
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.momentum != r.momentum:
                        raise _Wrong(f"restore every BatchNorm's momentum afterwards: got {m.momentum}, "
                                     f"expected {r.momentum} ({case})")
    return _run("BatchNorm re-estimation", fn, body, strict)


def _refit_reference(model, data, task: str, steps: int, lr: float, bs: int, seed: int):
    """(losses, trained head) of ``training.fit`` on cached features with only ``task``'s head trainable."""
    from simo_lite.training import cache_features, fit, set_trainable
    model = copy.deepcopy(model)
    feats = cache_features(model, data["image"])
    set_trainable(model, False)
    set_trainable(model.heads[task], True)
    record = fit(model, {"image": data["image"], task: data[task]}, (task,), steps, lr, bs, seed=seed, features=feats)
    return record.metrics["loss"], model.heads[task], feats


def check_refit_head(fn: Callable, strict: bool = False) -> bool:
    """``fn(head, features, labels, loss_fn, batches, lr) -> list of losses``: one AdamW step per index
    tensor of ``batches`` on the cached features, the loss of every step returned, the head trained in
    place and left in eval mode.

    Compared with :func:`simo_lite.training.fit` on the same cached features and the same batches
    (:func:`simo_lite.training.batch_indices`): the losses of every step and the trained weights.
    """
    from simo_lite.tasks import get_task
    from simo_lite.training import batch_indices

    def body(fn):
        for kind, task, n, bs, steps, lr, seed in (("linear", "seg", 10, 4, 6, 3e-3, 1), ("conv", "depth", 8, 8, 5, 1e-2, 2)):
            model, data = _tiny(kind, tasks=(task,), n=n, seed=seed)
            ref_losses, ref_head, feats = _refit_reference(model, data, task, steps, lr, bs, seed)
            batches = [batch_indices(n, bs, seed, s) for s in range(steps)]
            case = f"a {kind} head ({task}), {n} cached feature maps, {steps} batches of {bs}, lr {lr}"
            head = copy.deepcopy(model.heads[task])
            got = _call(fn, case, head, feats.clone(), data[task].clone(), get_task(task).loss, batches, lr)
            _step_losses(got, ref_losses, case,
                         "compute loss_fn(head(features[idx]), labels[idx]) with the head in train mode, before the step",
                         "use AdamW(lr, weight_decay=1e-4), one_cycle(opt, lr, len(batches), 0.1) stepped after every "
                         "optimiser step, and clip the gradient norm at 25")
            if head.training:
                raise _Wrong(f"leave the head in eval mode after training (head.eval()) ({case})")
            for (name, p), q in zip(head.state_dict().items(), ref_head.state_dict().values()):
                if p.is_floating_point():
                    _tensor(p, q, f"the trained head's {name}", case, atol=1e-4, rtol=1e-3)
    return _run("head refit on cached features", fn, body, strict)


def check_one_head_metric(fn: Callable, strict: bool = False) -> bool:
    """``fn(model, val, test, task, n_images, steps, lr, batch_size, seed=0) -> float``: the test metric
    of ``task`` after realigning that head alone on the first ``n_images`` validation images.

    Compared with :func:`simo_lite.realign.head_realign` on the sliced split (tasks ``(task,)``) then
    :func:`simo_lite.training.evaluate` on ``test``; ``model`` must stay unchanged.
    """
    from simo_lite.realign import head_realign
    from simo_lite.training import evaluate

    def body(fn):
        model, data = _tiny("linear", tasks=("seg", "depth", "normals"), n=14, seed=5)
        val = {k: v[:10] for k, v in data.items()}
        test = {k: v[10:] for k, v in data.items()}
        before = copy.deepcopy(model.state_dict())
        for task, n_img, steps, bs in (("depth", 6, 4, 4), ("seg", 10, 3, 8)):
            case = f"{task} on the first {n_img} of 10 validation images, {steps} steps of batch {bs}"
            new, _ = head_realign(model, {k: v[:n_img] for k, v in val.items()}, (task,), steps=steps, lr=3e-3,
                                  batch_size=bs, seed=1)
            expected = evaluate(new, test, (task,))[task]
            got = _call(fn, case, model, val, test, task, n_img, steps, 3e-3, bs, 1)
            if isinstance(got, dict):
                raise _Wrong(f"return the one number of {task!r}, not a dict ({case})")
            _number(got, expected, f"the test metric of {task}", case, atol=1e-5, rtol=1e-4)
            if any(not torch.equal(v, before[k]) for k, v in model.state_dict().items()):
                raise _Wrong(f"your function changed the model it was given: realign a copy ({case})")
    return _run("one head realigned on a subset", fn, body, strict)
