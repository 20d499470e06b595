"""The two cheap fixes for a merged SIMO model, both trained on the small validation split only.

Head realignment (paper §6a)
    Freeze the merged encoder, compute its head-input features on the validation images once
    (``cache_features``), and fine-tune each expert head on them, one task at a time. The cost does
    not depend on the encoder's size after the single feature pass.

Representation realignment (paper §6b)
    Add a low-rank adapter after every transformer block, ``y = f(x) + B A f(x)`` with ``B = 0`` at
    start (so the model starts exactly at the merged one), and train adapters and heads jointly with
    the unweighted mean loss. ``kind="lora"`` instead puts PEFT LoRA on the attention and MLP linears
    of every block; those updates fold into the weights (``fold_lora``) for a plain encoder again.

BatchNorm re-estimation (a mechanism baseline, no training)
    Recompute the running mean / variance of every BatchNorm layer of the heads on the merged
    encoder's features of the validation images (``bn_reestimate``): forward passes only, no
    gradient step, no parameter changed. It separates a shift of the features' statistics from the
    rest of what merging loses.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from . import checkpoints as ckpt
from . import store as st
from .models import SimoModel, count_parameters
from .tasks import get_tasks
from .training import RunRecord, cache_features, fit, set_trainable
from .types import Device, Tasks

if TYPE_CHECKING:
    from peft import LoraModel

__all__ = ["cache_features", "head_realign", "bn_reestimate", "BlockAdapter", "AdaptedBlock", "add_block_adapters",
           "add_lora", "fold_lora", "representation_realign", "LORA_TARGETS"]

LORA_TARGETS = r".*blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"


def head_realign(model: SimoModel, val: dict, tasks: Tasks | None = None, steps: int = 300, lr: float = 1e-3,
                 batch_size: int = 32, seed: int = 0, device: Device = "cpu", progress: bool = False,
                 cached: bool = True, cache_dir: str | Path | None = None,
                 shipped_dir: str | Path | None = None) -> tuple[SimoModel, RunRecord]:
    """Fine-tune each head of ``model`` (a copy) on ``val`` with the encoder frozen, tasks independent.

    With ``cached=True`` the encoder runs once over ``val``; with ``cached=False`` it re-runs on every
    batch (same batches, same result up to float rounding; for measuring the speed-up).
    Returns the realigned copy and a RunRecord (steps, samples, trainable parameters, wall-clock).
    With ``cache_dir``, the heads are stored there (``head-<key>.safetensors`` + a ``.json`` record) under
    a key that chains the starting model's content fingerprint, the split's key and every setting
    (``cached`` included); a later identical call loads them instead of training; ``shipped_dir``: as
    :func:`representation_realign`'s.
    """
    tasks = get_tasks(tasks if tasks is not None else model.tasks)
    path = art = store = None
    if cache_dir is not None:
        art = head_artifact(model, val, tasks, steps=steps, lr=lr, batch_size=batch_size, seed=seed, cached=cached)
        store = st.Store(cache_dir)
        path = store.path("", art, ".safetensors")
    model = copy.deepcopy(model).to(device)
    if path is not None:
        set_trainable(model, False)                                         # the file holds the heads' tensors
        loaded = _load_stored(store, path, art, model, shipped_dir)
        if loaded is not None:
            return loaded
    record = RunRecord(name="head-realign" + ("" if cached else "-uncached"))
    t0 = time.perf_counter()
    feats = cache_features(model, val["image"], device=device) if cached else None   # (N, L, 2C, h, w)
    record.wall_s += time.perf_counter() - t0
    data = {"image": val["image"], **{t: val[t] for t in tasks}}
    set_trainable(model, False)
    for i, t in enumerate(tasks):
        head = set_trainable(model.heads[t], True)
        # encoder frozen: fit skips it on cached features, or runs it without a graph on every batch
        r = fit(model, data, (t,), steps, lr, batch_size, seed=seed + i, device=device, progress=progress,
                desc=f"head realign: {t}", name=f"head-realign/{t}", features=feats)
        set_trainable(head, False)
        record.add(r)
    record.trainable_params = sum(count_parameters(model.heads[t]) for t in tasks)
    if path is not None:
        _store_result(store, path, art, model, record)
    return model, record


def bn_reestimate(model: SimoModel, split: dict, tasks: Tasks | None = None, batch_size: int = 32,
                  device: Device = "cpu") -> tuple[SimoModel, RunRecord]:
    """Re-estimate the running statistics of every BatchNorm layer in the heads of ``model`` (a copy) on
    the features its encoder gives the images of ``split``.

    ``split``: ``{"image": (N, 3, H, W) in [0, 1], ...}`` (labels unused). The encoder runs once over
    the images (eval mode; features (N, L, 2C, h, w), :func:`cache_features`); then, per head of
    ``tasks`` (default: the model's), each BatchNorm's running stats are reset, its momentum set to
    None (cumulative average over the batches) and it alone put in train mode, the features go
    through the head in batches of ``batch_size`` without gradients, and the head goes back to eval
    with its BatchNorms' momentum restored. Only the BN buffers (``running_mean``, ``running_var``,
    ``num_batches_tracked``) change; no parameter, no optimiser step, ``model`` itself untouched.
    With ``batch_size >= N`` the new running mean is the features' per-channel mean over (N, h, w)
    exactly (the variance: its unbiased estimate); smaller batches average the batches' statistics.

    Returns the copy (eval mode) and a RunRecord with ``steps=0``, ``samples=N`` (images seen),
    ``trainable_params=0`` and the wall-clock seconds.
    """
    if batch_size < 1:
        raise ValueError(f"bn_reestimate: batch_size must be >= 1, got {batch_size}")
    tasks = get_tasks(tasks if tasks is not None else model.tasks)
    t0 = time.perf_counter()
    model = copy.deepcopy(model).to(device).eval()
    images = split["image"]
    feats = cache_features(model, images, batch_size=max(batch_size, 1), device=device)   # (N, L, 2C, h, w)
    for t in tasks:
        head = model.heads[t]
        bns = [m for m in head.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [bn.momentum for bn in bns]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        with torch.no_grad():
            for s in range(0, len(feats), batch_size):
                head(feats[s:s + batch_size].to(device))
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        head.eval()
    record = RunRecord(name="bn-reestimate", steps=0, samples=len(images), trainable_params=0,
                       wall_s=time.perf_counter() - t0)
    return model.eval(), record


class BlockAdapter(nn.Module):
    """Low-rank residual adapter on a token stream: x (B, N, C) -> x + B(A(x)), B zero-initialised."""

    def __init__(self, dim: int, rank: int = 16):
        super().__init__()
        if rank < 1:
            raise ValueError(f"adapter rank must be >= 1, got {rank}")
        self.down = nn.Linear(dim, rank, bias=False)                     # A: (rank, C)
        self.up = nn.Linear(rank, dim, bias=False)                       # B: (C, rank), zeros
        nn.init.kaiming_uniform_(self.down.weight, a=5 ** 0.5)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, C) -> x + B(A(x)), same shape (the identity at initialisation)."""
        return x + self.up(self.down(x))


class AdaptedBlock(nn.Module):
    """A transformer block followed by a :class:`BlockAdapter` (paper: an adapter after every block)."""

    def __init__(self, block: nn.Module, adapter: BlockAdapter):
        super().__init__()
        self.block, self.adapter = block, adapter

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The block's output on tokens ``x`` (B, N, C) (``args``/``kwargs`` go to the block, e.g. an
        attention mask), then the adapter: (B, N, C)."""
        return self.adapter(self.block(x, *args, **kwargs))


def add_block_adapters(encoder: nn.Module, rank: int = 16) -> list[BlockAdapter]:
    """Wrap every block of a timm ViT ``encoder`` in place; returns the adapters (trainable)."""
    adapters = []
    for i, block in enumerate(encoder.blocks):
        if isinstance(block, AdaptedBlock):
            raise ValueError("encoder already has block adapters")
        adapter = BlockAdapter(encoder.embed_dim, rank)
        encoder.blocks[i] = AdaptedBlock(block, adapter)
        adapters.append(adapter)
    return adapters


def add_lora(encoder: nn.Module, rank: int = 16, alpha: float | None = None) -> LoraModel:
    """Inject PEFT LoRA (rank ``rank``) into the attention and MLP linears of every block, in place.

    Returns the ``peft.LoraModel`` wrapper (needed by :func:`fold_lora`); ``encoder`` itself keeps its
    timm interface and now computes W x + (alpha / r) B A x in each targeted linear.
    """
    from peft import LoraConfig, LoraModel
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, target_modules=LORA_TARGETS,
                        lora_dropout=0.0, bias="none")
    return LoraModel(encoder, config, "default")


def fold_lora(lora_model: LoraModel) -> nn.Module:
    """Merge trained LoRA updates into the base weights and return the plain encoder (W <- W + s B A)."""
    return lora_model.merge_and_unload()


def representation_realign(model: SimoModel, val: dict, tasks: Tasks | None = None, rank: int = 16,
                           kind: str = "block", steps: int = 300, lr: float = 1e-3, batch_size: int = 32,
                           seed: int = 0, device: Device = "cpu", progress: bool = False,
                           cache_dir: str | Path | None = None,
                           shipped_dir: str | Path | None = None) -> tuple[SimoModel, RunRecord]:
    """Train low-rank adapters in the (frozen) merged encoder together with all heads on ``val``.

    ``kind``: "block" (adapter after every block, the paper's form) or "lora" (PEFT LoRA on the
    blocks' linears). Returns the realigned copy (adapters still attached) and its RunRecord.
    With ``cache_dir``, the result is stored there as a store artifact
    (``repr-<kind>-r<rank>-<key>.safetensors`` + a ``.json`` record with the cost): its key chains
    the fingerprint of the starting weights (the merged model's content key), the validation
    split's key and every setting. A later identical call loads it instead of training; a missing,
    damaged or mismatched file (wrong key, wrong shapes, no record) is logged and trained again. The
    file holds only what training changed (the adapters and the heads, BatchNorm statistics included):
    the frozen merged weights are the starting model's, which the key pins down.
    ``shipped_dir`` (with ``cache_dir``): a folder of published results of the same layout
    (``data/models-<profile>/realign``, :mod:`simo_lite.shipped`); when the run has no file yet and
    the shipped folder holds one of the same key, it is loaded and copied into ``cache_dir``.
    """
    if kind not in ("block", "lora"):
        raise ValueError(f"unknown adapter kind {kind!r}; valid: 'block', 'lora'")
    tasks = get_tasks(tasks if tasks is not None else model.tasks)
    path = art = store = None
    if cache_dir is not None:
        art = adapter_artifact(model, val, tasks, rank=rank, kind=kind, steps=steps, lr=lr, batch_size=batch_size,
                               seed=seed)
        store = st.Store(cache_dir)
        path = store.path("", art, ".safetensors")
    model = set_trainable(copy.deepcopy(model), False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if kind == "block":
            adapters = add_block_adapters(model.encoder, rank)
            adapter_params = [p for a in adapters for p in a.parameters()]
        else:
            object.__setattr__(model, "lora", add_lora(model.encoder, rank))  # not a submodule
            adapter_params = [p for n, p in model.encoder.named_parameters() if "lora_" in n]
    adapter_modules = (adapters if kind == "block" else          # LoRA: its lora_A / lora_B module dicts
                       [m for n, m in model.encoder.named_modules() if n.rsplit(".", 1)[-1].startswith("lora_")])
    for m in adapter_modules:
        set_trainable(m, True)
    assert all(p.requires_grad for p in adapter_params)
    for t in tasks:
        set_trainable(model.heads[t], True)
    if path is not None:
        loaded = _load_stored(store, path, art, model, shipped_dir)
        if loaded is not None:
            return loaded
    r = fit(model, {"image": val["image"], **{t: val[t] for t in tasks}}, tasks, steps, lr, batch_size, seed=seed,
            device=device, progress=progress, desc=f"representation realign ({kind}, r={rank})",
            name=f"repr-realign-{kind}")
    r.name = f"repr-realign-{kind}"
    if path is not None:
        _store_result(store, path, art, model, r)
    return model, r


def _load_cached(store: st.Store, path: Path, art: st.Artifact, model: SimoModel):
    """(model with the stored weights, its RunRecord), or None: a logged cache miss."""
    tensors = store.load_tensors(path, art)
    if tensors is None:
        return None
    rec = store.read_json(path.with_suffix(".json"), art, require=("record",))
    if rec is None:
        return None
    backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        expected = set(_trained_state(model))
        if set(tensors) != expected:
            extra, missing = sorted(set(tensors) - expected), sorted(expected - set(tensors))
            raise KeyError(f"{len(missing)} tensor(s) missing (e.g. {missing[:2]}), "
                           f"{len(extra)} unexpected (e.g. {extra[:2]})")
        model.load_state_dict(tensors, strict=False)
        record = RunRecord(**rec["record"])
    except (RuntimeError, TypeError, KeyError, ValueError) as e:      # wrong shapes / keys, bad record
        model.load_state_dict(backup)
        line = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())[:300]
        store.miss(art, f"corrupt file {path.name}: {type(e).__name__}: {line}")
        return None
    return model.eval(), record


def _store_result(store: st.Store, path: Path, art: st.Artifact, model: SimoModel, record: RunRecord) -> None:
    """Write a realignment's record (cost, wall-clock included), then what it trained (the tensors last)."""
    store.write_json(path.with_suffix(".json"), {"record": record.to_dict()}, art)
    store.save_tensors(path, {k: v.detach().cpu().contiguous() for k, v in _trained_state(model).items()}, art)


def _load_stored(store: st.Store, path: Path, art: st.Artifact, model: SimoModel,
                 shipped_dir: str | Path | None) -> tuple[SimoModel, RunRecord] | None:
    """A stored realignment of ``art`` loaded into ``model``: the shipped one (copied into the run) when the
    run has none yet, else the run's own; None (a logged miss) when neither is usable."""
    loaded = _load_shipped(store, path, art, model, Path(shipped_dir)) if shipped_dir is not None else None
    return loaded or _load_cached(store, path, art, model)


def _upstream(model: SimoModel, val: dict, tasks: Tasks) -> dict[str, str]:
    """A realignment's upstream keys: the starting model's content fingerprint and the split's key."""
    return {"merged-model": ckpt.state_fingerprint(model.state_dict()),
            "data-val": st.data_key({k: val[k] for k in ("image", *tasks)})}


def head_artifact(model: SimoModel, val: dict, tasks: Tasks, *, steps: int, lr: float, batch_size: int, seed: int,
                  cached: bool = True) -> st.Artifact:
    """The store artifact of :func:`head_realign` with these arguments (``head``): its key chains the
    starting model's content fingerprint, the split's key and every setting."""
    tasks = get_tasks(tasks)
    return st.Artifact("realign", "head", {"tasks": list(tasks), "steps": steps, "lr": lr, "batch_size": batch_size,
                                           "seed": seed, "cached": cached, "version": 1}, _upstream(model, val, tasks))


def adapter_artifact(model: SimoModel, val: dict, tasks: Tasks, *, rank: int, kind: str, steps: int, lr: float,
                     batch_size: int, seed: int) -> st.Artifact:
    """The store artifact of :func:`representation_realign` with these arguments (``repr-<kind>-r<rank>``):
    its key chains the starting model's content fingerprint, the split's key and every setting."""
    tasks = get_tasks(tasks)
    return st.Artifact("realign", f"repr-{kind}-r{rank}",
                       {"tasks": list(tasks), "rank": rank, "kind": kind, "steps": steps, "lr": lr,
                        "batch_size": batch_size, "seed": seed, "version": 3}, _upstream(model, val, tasks))


def _trained_state(model: SimoModel) -> dict[str, torch.Tensor]:
    """What a realignment changes in ``model``: every tensor of the heads (parameters and BatchNorm
    statistics) and the encoder's trainable (adapter) parameters, by state-dict name."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k.startswith("heads.") or k in trainable}


def _load_shipped(store: st.Store, path: Path, art: st.Artifact, model: SimoModel, shipped_dir: Path):
    """The shipped realignment of ``art`` when the run has none yet: (model, record), copied into the
    run's cache folder (:func:`simo_lite.store.adopt_shipped`); else None."""
    return st.adopt_shipped(path, shipped_dir, lambda shipped, src: _load_cached(shipped, src, art, model),
                            f"realign {art.name}")
