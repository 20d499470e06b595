"""The checks of notebook 06 (Representation realignment): ``check_block_adapter`` and ``check_adapter_steps``
(built in the lesson), ``check_adapters_only`` (an exercise; the reading exercise uses ``checks.check_reading``)."""
from __future__ import annotations

import copy
from typing import Callable

import torch

from ._core import _Wrong, _call, _gen, _run, _step_losses, _tensor
from .nb05 import _tiny

__all__ = ["check_block_adapter", "check_adapter_steps", "check_adapters_only"]


def check_block_adapter(fn: Callable, strict: bool = False) -> bool:
    """``fn(dim, rank) -> torch.nn.Module``: the block adapter x ↦ x + B A x on tokens (..., dim), with
    ``down`` (A, a bias-free ``Linear(dim, rank)``) and ``up`` (B, a bias-free ``Linear(rank, dim)``,
    zero at initialisation).

    Compared with :class:`simo_lite.realign.BlockAdapter`: the shapes, B = 0 (output = input at the
    start), 2·dim·rank parameters, and the same output as the package's adapter for the same weights.
    """
    from simo_lite.realign import BlockAdapter

    def body(fn):
        for dim, rank in ((8, 2), (12, 3)):
            case = f"dim={dim}, rank={rank}"
            got = _call(fn, case, dim, rank)
            if not isinstance(got, torch.nn.Module):
                raise _Wrong(f"return a torch.nn.Module, got {type(got).__name__} ({case})")
            for name, shape in (("down", (rank, dim)), ("up", (dim, rank))):
                layer = getattr(got, name, None)
                if not isinstance(layer, torch.nn.Linear):
                    raise _Wrong(f"the adapter needs an attribute `{name}`, a torch.nn.Linear ({case})")
                if tuple(layer.weight.shape) != shape:
                    raise _Wrong(f"`{name}.weight` has shape {tuple(layer.weight.shape)}, expected {shape}: "
                                 f"{'A maps C to r' if name == 'down' else 'B maps r back to C'} ({case})")
                if layer.bias is not None:
                    raise _Wrong(f"`{name}` has a bias: the adapter is B A x, no bias (bias=False) ({case})")
            if torch.count_nonzero(got.up.weight):
                raise _Wrong(f"B (`up.weight`) must start at zero, so the adapted block starts as the merged one ({case})")
            if not torch.count_nonzero(got.down.weight):
                raise _Wrong(f"A (`down.weight`) is all zeros: with B = 0 too, no gradient would ever reach either "
                             f"(keep Linear's random initialisation for A) ({case})")
            n_params = sum(p.numel() for p in got.parameters())
            if n_params != 2 * dim * rank:
                raise _Wrong(f"{n_params} parameters, expected 2 x dim x rank = {2 * dim * rank} ({case})")
            x = torch.randn(2, 5, dim, generator=_gen(20 + dim))                 # (B, tokens, C)
            with torch.no_grad():
                _tensor(_call(fn(dim, rank).eval(), case, x.clone()), x, "the output at initialisation", case)
            ref = BlockAdapter(dim, rank)
            with torch.no_grad():
                ref.up.weight.copy_(0.3 * torch.randn(dim, rank, generator=_gen(21)))
                got.down.weight.copy_(ref.down.weight)
                got.up.weight.copy_(ref.up.weight)
                for shape in ((2, 5, dim), (3, dim)):
                    x = torch.randn(*shape, generator=_gen(22))
                    _tensor(_call(got, case, x.clone()), ref(x), f"the output on {shape} tokens with B != 0",
                            f"{case}, the package's weights copied in", atol=1e-5, rtol=1e-4)
    return _run("block adapter", fn, body, strict)


def _adapted(seed: int, rank: int = 2, tasks=("seg", "normals"), n: int = 8):
    """A small model with block adapters (the package's), encoder weights frozen, adapters + heads trainable."""
    from simo_lite.realign import add_block_adapters
    from simo_lite.training import set_trainable
    model, data = _tiny("linear", tasks=tasks, n=n, seed=seed)
    set_trainable(model, False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        adapters = add_block_adapters(model.encoder, rank)
    with torch.no_grad():                                     # B != 0: a gradient reaches A from step 1
        for a in adapters:
            a.up.weight.copy_(0.05 * torch.randn(a.up.weight.shape, generator=_gen(seed + 30)))
    for m in (*adapters, *model.heads.values()):
        set_trainable(m, True)
    return model, data


def check_adapter_steps(fn: Callable, strict: bool = False) -> bool:
    """``fn(model, data, loss_fns, batches, lr) -> list of losses``: one AdamW step per index tensor of
    ``batches`` on the mean of the task losses, for the parameters with ``requires_grad`` (the adapters and
    the heads), the model trained in place and left in eval mode.

    Compared with :func:`simo_lite.training.fit` on the same model and the same batches
    (:func:`simo_lite.training.batch_indices`): every step's loss, the trained weights, and the frozen
    encoder weights unchanged.
    """
    from simo_lite.tasks import get_task
    from simo_lite.training import batch_indices, fit

    def body(fn):
        for seed, n, bs, steps, lr in ((1, 8, 4, 5, 3e-3), (2, 6, 6, 4, 1e-2)):
            model, data = _adapted(seed, n=n)
            tasks = model.tasks
            ref = copy.deepcopy(model)
            ref_losses = fit(ref, data, tasks, steps, lr, bs, seed=seed).metrics["loss"]
            batches = [batch_indices(n, bs, seed, s) for s in range(steps)]
            case = f"adapters + heads {', '.join(tasks)}, {steps} batches of {bs}, lr {lr}"
            got = _call(fn, case, model, data, {t: get_task(t).loss for t in tasks}, batches, lr)
            _step_losses(got, ref_losses, case,
                         "the unweighted mean over the tasks of loss_fns[t](model.heads[t](model.features(images)), "
                         "labels[t]), in train mode",
                         "use AdamW(lr, weight_decay=1e-4) on the parameters with requires_grad, one_cycle(opt, lr, "
                         "len(batches), 0.1) stepped after every optimiser step, and clip the gradient norm at 25")
            if model.training:
                raise _Wrong(f"leave the model in eval mode after training (model.eval()) ({case})")
            want = ref.state_dict()
            for name, p in model.state_dict().items():
                if p.is_floating_point():
                    _tensor(p, want[name], f"the trained model's {name}", case, atol=1e-4, rtol=1e-3)
    return _run("joint training loop of adapters and heads", fn, body, strict)


def check_adapters_only(fn: Callable, strict: bool = False) -> bool:
    """``fn(model, val, rank, steps, lr, batch_size, seed=0) -> (model, record)``: a copy of ``model``
    with block adapters of rank ``rank`` trained alone (encoder weights and heads frozen) on ``val``
    with every task's loss, and the training's :class:`simo_lite.training.RunRecord`.

    Checked on a small model: ``model`` unchanged; in the copy the heads and the merged weights are
    exactly the input's (their parameters; the heads' BatchNorm statistics may follow the new features),
    one adapter per block with B moved away from zero; the record counts
    ``steps`` steps and exactly the adapters' 2·C·r per block as trainable.
    """
    from simo_lite.realign import AdaptedBlock

    def body(fn):
        for seed, rank, steps in ((1, 2, 3), (2, 3, 2)):
            model, data = _tiny("linear", tasks=("seg", "depth"), n=8, seed=seed)
            C, depth = model.encoder.embed_dim, len(model.encoder.blocks)
            before = copy.deepcopy(model.state_dict())
            case = f"{depth} blocks of width {C}, rank {rank}, {steps} steps"
            got = _call(fn, case, model, data, rank, steps, 3e-3, 4, seed)
            if not (isinstance(got, tuple) and len(got) == 2):
                raise _Wrong(f"return a pair (the trained copy, its RunRecord), got {type(got).__name__} ({case})")
            new, record = got
            if any(not torch.equal(v, before[k]) for k, v in model.state_dict().items()):
                raise _Wrong(f"the model you were given changed: train a copy (copy.deepcopy) ({case})")
            blocks = list(getattr(getattr(new, "encoder", None), "blocks", []))
            if len(blocks) != depth or not all(isinstance(b, AdaptedBlock) for b in blocks):
                raise _Wrong(f"the copy needs an adapter after each of its {depth} blocks "
                             f"(realign.add_block_adapters) ({case})")
            state = dict(new.named_parameters())
            for k, v in dict(model.named_parameters()).items():
                k_new = k
                if k.startswith("encoder.blocks."):                     # blocks.i.x -> blocks.i.block.x
                    i, rest = k[len("encoder.blocks."):].split(".", 1)
                    k_new = f"encoder.blocks.{i}.block.{rest}"
                mine = state.get(k_new)
                if mine is None or not torch.equal(mine.detach().cpu(), v.detach()):
                    what = "a head" if k.startswith("heads.") else "a merged encoder weight"
                    raise _Wrong(f"{what} changed ({k}): only the adapters train here, freeze everything else "
                                 f"(training.set_trainable(copy, False) before adding them) ({case})")
            if not all(torch.count_nonzero(b.adapter.up.weight) for b in blocks):
                raise _Wrong(f"an adapter's B is still zero: the adapters did not train ({case})")
            if getattr(record, "steps", None) != steps:
                raise _Wrong(f"the record counts {getattr(record, 'steps', None)} steps, expected {steps} ({case})")
            if getattr(record, "trainable_params", None) != depth * 2 * C * rank:
                raise _Wrong(f"the record counts {getattr(record, 'trainable_params', None)} trainable parameters, "
                             f"expected the adapters' {depth} x 2 x {C} x {rank} = {depth * 2 * C * rank} ({case})")
    return _run("adapters trained alone", fn, body, strict)
