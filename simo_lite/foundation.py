"""The foundation encoder: a small timm ViT pretrained on Scenes images, standing in for DINOv2.

Objective: masked-patch pixel reconstruction in the SimMIM style (Xie et al. 2022). A random
``mask_ratio`` of patch embeddings is replaced by a learned mask token, the full token sequence goes
through the ViT, and a linear decoder predicts the pixels of each masked patch from the last block's
tokens; the loss is L1 on masked patches only. It needs no labels (task-agnostic, like DINOv2's
self-supervision) and keeps timm's encoder untouched, so the pretrained weights load straight into
``make_encoder``. Reconstructing hidden patches forces the encoder to model surfaces, shading and
layout, which is what the dense tasks read.

The ``cpu`` checkpoint ships in ``data/foundation-cpu.safetensors`` with a manifest
(``data/foundation-cpu.json``): config, sha256, the command that reproduces it and the probe results.
Regenerate it with ``python -m simo_lite.foundation --profile cpu`` (or ``make foundation``).

Reproducibility: :func:`pretrain` draws everything from its ``seed`` (encoder init, mask token and
decoder init under ``torch.manual_seed(seed)`` in a forked RNG, masks and batches from seeded
generators), never from torch's global random state, so the same profile and seed give the same
weights in any process; the checkpoint holds no wall-clock time (it is in the ``.json`` record next
to it, :func:`pretrain_info`), so identical runs write byte-identical files.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from . import checkpoints as ckpt
from . import paths
from . import profiles as P
from . import progress as pg
from . import store as st
from .backbones import encoder_io
from .data import DATASETS, load_data
from .models import count_parameters, make_encoder
from .training import batch_indices, one_cycle
from .types import Device, Splits, StateDict, Tasks

__all__ = ["foundation_config", "pretrain", "load_foundation", "shipped_checkpoints", "invariance_stage",
           "AppearanceInvariance", "vicreg_terms", "random_encoder_state", "probe_comparison",
           "pretrain_info", "SHIPPED_DIR"]

SHIPPED_DIR = paths.DATA_DIR          # data/: the shipped foundation checkpoints


def foundation_config(profile: P.Profile, seed: int = 0) -> dict:
    """Everything that determines the foundation weights; its hash names the checkpoint.

    ``seed``: the run's; ``profile.foundation_seed``, when set, takes its place (one foundation for all)."""
    seed = profile.foundation_seed if profile.foundation_seed is not None else seed
    cfg = {"encoder": profile.encoder_config(), "steps": profile.foundation_steps, "lr": profile.lr_foundation,
           "batch_size": profile.batch_size, "mask_ratio": profile.mask_ratio, "n_train": profile.n_train,
           "max_objects": profile.max_objects, "seed": seed, "objective": "simmim-l1", "version": 1}
    if profile.invariance_steps:                 # stage 2 (absent from SimMIM-only configs: their hashes stay)
        cfg["invariance"] = {"objective": "dense-vicreg-appearance-views", "steps": profile.invariance_steps,
                             "lr": profile.lr_invariance, "coefficients": list(VICREG), "proj_dim": PROJ_DIM,
                             "scenes_version": _scenes_version(), "version": 1}
    return cfg


def _scenes_version() -> int:
    from .scenes import VERSION
    return VERSION


def _step(model: nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
          loss: torch.Tensor) -> float:
    """One optimiser step of a pretraining stage (gradients clipped to norm 1); returns the loss value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return float(loss.detach())


# ----------------------------------------------------------------------------------------------
# Stage 2: appearance invariance (dense VICReg on two looks of the same scenes)
# ----------------------------------------------------------------------------------------------
VICREG = (25.0, 25.0, 1.0)     # invariance, variance, covariance weights (Bardes et al. 2022)
PROJ_DIM = 256                 # projector output width


def vicreg_terms(za: torch.Tensor, zb: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, ...]:
    """Dense VICReg terms of two views' projected tokens ``za``, ``zb`` (B, N, D).

    Token n of view a and token n of view b see the same surface (same geometry and camera, new
    colours, textures and light), so invariance is the mean squared difference token by token.
    Variance and covariance are computed *across scenes at each token position* (centred over B),
    so a feature that only encodes the position (identical in every scene) earns no variance:
    the encoder must describe the scene. Returns (invariance, variance, covariance), scalars."""
    inv = (za - zb).pow(2).mean()
    var = cov = 0.0
    for z in (za, zb):
        zc = z - z.mean(0, keepdim=True)                                  # (B, N, D) centred per position
        std = (zc.pow(2).sum(0) / max(len(z) - 1, 1) + eps).sqrt()        # (N, D)
        var = var + torch.relu(1 - std).mean() / 2
        flat = zc.reshape(-1, z.shape[-1])                                # (B*N, D)
        c = flat.T @ flat / max(len(flat) - 1, 1)                         # (D, D)
        off = c - torch.diag(torch.diagonal(c))
        cov = cov + off.pow(2).sum() / z.shape[-1] / 2
    return inv, var, cov


class AppearanceInvariance(nn.Module):
    """Encoder + one projector per tap. ``forward(view_a, view_b) -> (loss, terms)``.

    Both views go through the whole ViT; at every tap the heads read (and the final norm), the
    tokens (CLS included) pass a projector, and the VICReg terms of the two views are summed with
    the weights :data:`VICREG`. The heads read the taps, so each tap is made invariant, not only
    the last block."""

    def __init__(self, encoder: nn.Module, taps: Sequence[int]):
        super().__init__()
        self.encoder, self.taps = encoder, tuple(taps)
        self.transform = encoder_io(encoder).transform
        dim = encoder.embed_dim
        self.projectors = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, 2 * PROJ_DIM), nn.GELU(), nn.Linear(2 * PROJ_DIM, PROJ_DIM))
            for _ in self.taps)

    def _taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        enc = self.encoder
        x = enc.norm_pre(enc._pos_embed(enc.patch_embed(self.transform(images))))   # (B, 1 + N, C)
        out = []
        for i, block in enumerate(enc.blocks):
            x = block(x)
            if i in self.taps:
                out.append(enc.norm(x) if i == len(enc.blocks) - 1 else nn.functional.layer_norm(x, x.shape[-1:]))
        return out

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """view_a, view_b: (B, 3, H, W) in [0, 1], the same scenes in two appearances."""
        both = self._taps(torch.cat([view_a, view_b]))
        B = len(view_a)
        total = inv_s = var_s = cov_s = 0.0
        for proj, tokens in zip(self.projectors, both):
            z = proj(tokens)                                              # (2B, 1 + N, D)
            inv, var, cov = vicreg_terms(z[:B], z[B:])
            total = total + VICREG[0] * inv + VICREG[1] * var + VICREG[2] * cov
            inv_s, var_s, cov_s = inv_s + float(inv.detach()), var_s + float(var.detach()), cov_s + float(cov.detach())
        k = len(both)
        return total / k, {"invariance": inv_s / k, "variance": var_s / k, "covariance": cov_s / k}


def invariance_stage(profile: P.Profile, init: StateDict, seed: int = 0, device: Device = "cpu",
                     progress: bool | None = None) -> tuple[StateDict, dict]:
    """Stage 2 of pretraining: ``profile.invariance_steps`` of :class:`AppearanceInvariance` from the
    stage-1 encoder ``init``, on two appearance views (:func:`simo_lite.scenes.render`) of the
    profile's train scenes per step (rendered on the fly: view ids drawn from a seeded generator).

    Returns (encoder state, info): ``loss_first`` / ``loss_last`` (total, first step / mean of the
    last 20), the three terms at the end, ``steps``, ``wall_s`` and ``threads``."""
    from .scenes import SPLIT_OFFSETS, render
    if DATASETS[profile.dataset].from_files:    # only a rendered dataset can show one scene in two looks
        raise ValueError("appearance-invariance pretraining renders Scenes views; "
                         f"profile {profile.name!r} uses {profile.dataset!r}, read from files")
    device = P.resolve_device(device) if isinstance(device, str) else device
    encoder = make_encoder(**profile.encoder_config(), seed=seed)
    encoder.load_state_dict(init)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        model = AppearanceInvariance(encoder, profile.taps)
    model = model.to(device)
    steps = profile.invariance_steps
    opt = torch.optim.AdamW(model.parameters(), lr=profile.lr_invariance, weight_decay=0.05)
    sched = one_cycle(opt, profile.lr_invariance, steps, 0.1)
    g = torch.Generator().manual_seed(seed + 29)
    it = pg.progress(range(steps), "invariance pretraining", show=progress, leave=False)
    losses, terms, t0 = [], [], time.perf_counter()
    model.train()
    for step in it:
        idx = batch_indices(profile.n_train, profile.batch_size, seed + 31, step)
        index = idx.to(torch.int64) + SPLIT_OFFSETS["train"]
        views = torch.randint(0, 1 << 20, (2, len(idx)), generator=g)
        a, b = (render(index, profile.image_size, seed, view=v, max_objects=profile.max_objects)["image"]
                for v in views)
        loss, t = model(a.to(device), b.to(device))
        losses.append(_step(model, opt, sched, loss))
        terms.append(t)
        if hasattr(it, "set_postfix") and step % 20 == 0:
            it.set_postfix(loss=f"{losses[-1]:.3f}")
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    last = terms[-20:]
    return state, {"loss_first": losses[0], "loss_last": sum(losses[-20:]) / len(losses[-20:]),
                   **{f"{k}_last": sum(t[k] for t in last) / len(last) for k in last[0]},
                   "steps": steps, "wall_s": time.perf_counter() - t0, "threads": torch.get_num_threads(),
                   "losses_every_50": losses[::50]}


class MaskedReconstruction(nn.Module):
    """Encoder + mask token + linear pixel decoder. ``forward(images) -> L1 loss on masked patches``."""

    def __init__(self, encoder: nn.Module, patch_size: int):
        super().__init__()
        self.encoder, self.p = encoder, patch_size
        self.transform = encoder_io(encoder).transform                   # the heads' input scaling, [-1, 1]
        dim = encoder.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.decoder = nn.Linear(dim, patch_size * patch_size * 3)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1]; mask (B, N) bool, True = hidden patch."""
        enc, p = self.encoder, self.p
        x = self.transform(images)                                        # same input scaling as the heads
        tokens = enc.patch_embed(x)                                       # (B, N, C)
        tokens = torch.where(mask[..., None], self.mask_token.to(tokens.dtype), tokens)
        tokens = enc.norm_pre(enc._pos_embed(tokens))                     # (B, 1 + N, C)
        tokens = enc.norm(enc.blocks(tokens))[:, enc.num_prefix_tokens:]  # (B, N, C)
        pred = self.decoder(tokens)                                       # (B, N, p*p*3)
        B, _, H, W = x.shape
        target = x.reshape(B, 3, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1).reshape(B, -1, p * p * 3)
        err = (pred - target).abs().mean(-1)                              # (B, N)
        return (err * mask).sum() / mask.sum().clamp(min=1)


def pretrain(profile: P.Profile, seed: int = 0, device: Device = "cpu", progress: bool | None = None,
             data: Splits | None = None, stage1: tuple[StateDict, dict] | None = None) -> tuple[StateDict, dict]:
    """Pretrain a foundation encoder; returns (encoder state dict, info).

    ``info``: ``loss_first`` / ``loss_last`` (masked-patch L1, first step / mean of the last 20),
    ``steps``, ``params`` (encoder parameters), ``wall_s`` (seconds) and ``threads`` (torch threads);
    with ``profile.invariance_steps``, stage 2's record under ``invariance`` (its seconds added to
    ``wall_s``). ``stage1``: (state, info) of an already pretrained SimMIM stage (a shipped file) to
    start stage 2 from instead of pretraining it again.
    Independent of torch's global random state (seeded from ``seed``; the global state is restored).
    """
    device = P.resolve_device(device) if isinstance(device, str) else device
    if stage1 is not None:
        state, info = stage1
        info = {"params": sum(v.numel() for v in state.values() if v.is_floating_point()),
                "steps": profile.foundation_steps, **info}
        return _stage2(profile, state, info, seed, device, progress)
    data = data or load_data(profile, seed, splits=("train",))
    images = data["train"]["image"]
    encoder = make_encoder(**profile.encoder_config(), seed=seed)
    with torch.random.fork_rng(devices=[]):      # mask token and decoder init: seeded, global RNG untouched
        torch.manual_seed(seed)
        model = MaskedReconstruction(encoder, profile.patch_size)
    model = model.to(device)
    steps = profile.foundation_steps
    if steps < 1:
        raise ValueError(f"pretrain: profile {profile.name!r} has foundation_steps={steps}; pretraining needs "
                         f">= 1 step (a profile with a pretrained backbone loads it instead: backbone, weights)")
    opt = torch.optim.AdamW(model.parameters(), lr=profile.lr_foundation, weight_decay=0.05)
    sched = one_cycle(opt, profile.lr_foundation, steps, 0.1)
    n_patches = (profile.image_size // profile.patch_size) ** 2
    g = torch.Generator().manual_seed(seed + 17)
    it = pg.progress(range(steps), "foundation pretraining", show=progress, leave=False)
    losses, t0 = [], time.perf_counter()
    model.train()
    for step in it:
        idx = batch_indices(len(images), profile.batch_size, seed + 7, step)
        batch = images[idx].to(device)
        mask = torch.rand(len(idx), n_patches, generator=g) < profile.mask_ratio
        loss = model(batch, mask.to(device))
        losses.append(_step(model, opt, sched, loss))
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    info = {"loss_first": losses[0], "loss_last": sum(losses[-20:]) / len(losses[-20:]),
            "wall_s": time.perf_counter() - t0, "steps": steps, "params": count_parameters(encoder),
            "threads": torch.get_num_threads()}
    return _stage2(profile, state, info, seed, device, progress)


def _stage2(profile: P.Profile, state: StateDict, info: dict, seed: int, device: torch.device,
            progress: bool | None) -> tuple[StateDict, dict]:
    """Stage 2 (appearance invariance) on the stage-1 ``state`` when the profile asks for it, its record
    folded into ``info`` (seconds added to ``wall_s``; no wall-clock inside ``invariance``)."""
    if not profile.invariance_steps:
        return state, info
    state, inv = invariance_stage(profile, state, seed=seed, device=device, progress=progress)
    inv.pop("threads")                           # wall-clock stays out of the checkpoint's metadata
    info = {**info, "wall_s": info.get("wall_s", 0.0) + inv.pop("wall_s"), "invariance": inv,
            "threads": torch.get_num_threads()}
    return state, info


def random_encoder_state(profile: P.Profile, seed: int = 0) -> StateDict:
    """The same architecture at its random initialisation (the probe baseline)."""
    from .training import make_profile_encoder
    return make_profile_encoder(profile, seed=seed).state_dict()


def _artifact(cfg: dict, images: torch.Tensor) -> st.Artifact:
    """A pretrained foundation as a store artifact: its config + the key of the images it saw."""
    return st.Artifact("foundation", "foundation", cfg, {"data-train-images": st.data_key({"image": images})})


def pretrain_info(path: str | Path) -> dict:
    """What a foundation checkpoint records of its pretraining: ``steps``, ``params``, ``loss_first``,
    ``loss_last`` (from the checkpoint's metadata ``info``), plus ``wall_s`` (seconds) and ``threads``
    from the ``.json`` record next to it when there is one (not in the checkpoint, so identical runs
    give identical bytes). {} when the checkpoint records nothing."""
    path = Path(path)
    info = json.loads(ckpt.read_metadata(path).get("info", "{}"))
    side = path.with_suffix(".json")
    if side.exists():
        try:
            record = st.read_json_file(side)
            info.update(record.get("info", record.get("pretraining", {})))   # run-dir record, or a shipped manifest
        except (st.ArtifactError, AttributeError):
            pass
    return info


def shipped_checkpoints(profile: P.Profile) -> list[Path]:
    """The shipped foundation files of ``profile`` in ``data/``: ``foundation-<profile>.safetensors`` first,
    then ``foundation-<profile>-<variant>.safetensors`` (another objective of the same profile), by name;
    :func:`load_foundation` takes the first whose config hash matches."""
    main = SHIPPED_DIR / f"foundation-{profile.name}.safetensors"
    variants = sorted(SHIPPED_DIR.glob(f"foundation-{profile.name}-*.safetensors"))
    return [p for p in (main, *variants) if p.exists()]


def load_foundation(profile: P.Profile, run_dir: str | Path | None = None, seed: int = 0, device: Device = "cpu",
                    progress: bool | None = None, *, data: Splits | None = None) -> tuple[StateDict, str]:
    """The foundation encoder state for ``profile`` and its config hash.

    Looks for the shipped checkpoints ``data/foundation-<profile>[-<variant>].safetensors``
    (:func:`shipped_checkpoints`; one whose config hash matches: a published file, accepted by its
    config hash), then ``<run_dir>/foundation-<hash>.safetensors``
    (whose stored artifact key must also match the key of the training images it was pretrained on:
    new images, new foundation); otherwise pretrains and saves it in ``run_dir`` (the ``gpu`` and
    ``smoke`` profiles pretrain their own), with a ``.json`` record (wall-clock, threads) beside it.
    ``data``: the already loaded splits ({"train": {"image": ...}, ...}), to avoid loading them again.
    A stale or damaged run-directory file is logged (logger ``simo_lite.store``) and pretrained again.
    Downstream artifacts are keyed by :func:`simo_lite.store.foundation_key` (config hash + weights).
    ``profile.foundation_seed`` (cpu and gpu: 0), when set, replaces ``seed``: every run seed shares
    one foundation pretrained on that seed's train scenes, as the paper's seeds share DINOv2.
    """
    if profile.backbone:                         # a pretrained timm ViT from a local file (docs/real-data.md)
        from .backbones import load_backbone
        h = ckpt.config_hash({"backbone": profile.backbone, "weights_sha256": st.sha256_file(profile.weights),
                              "input_hw": list(profile.input_hw)})
        encoder = load_backbone(profile.backbone, profile.weights, img_size=profile.input_hw)
        return {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}, h
    if profile.foundation_seed is not None and profile.foundation_seed != seed:
        seed, data = profile.foundation_seed, None      # one pretrained encoder for every run seed (like DINOv2)
    cfg = foundation_config(profile, seed)
    h = ckpt.config_hash(cfg)
    for shipped in shipped_checkpoints(profile):
        try:
            return ckpt.load_tensors(shipped, expect_hash=h), h
        except ckpt.CheckpointError:
            pass                                 # made for another configuration: the next / run directory's
    if not run_dir:
        return pretrain(profile, seed=seed, device=device, progress=progress, data=data)[0], h
    store = st.Store(run_dir)
    path = store.foundation_path(h)
    if data is None or "train" not in data:
        data = None
    probe_art = st.Artifact("foundation", path.stem, cfg)
    if path.exists():
        header = st._stored_header(path)
        if header is None:                       # made before artifact keys (or unreadable)
            state = store.check_tensors(path, probe_art, h)
            if state is not None:
                st.log.info("using foundation %s (no key chain stored: made by an older simo_lite; "
                            "accepted by its config hash)", path.name)
                return state, h
        else:
            data = data or load_data(profile, seed, splits=("train",), progress=bool(progress))
            art = _artifact(cfg, data["train"]["image"])
            if header.get("key") != art.key:
                store.miss(probe_art, st.explain_change(header, art))
            else:
                state = store.check_tensors(path, probe_art, h)
                if state is not None:
                    store.note_threads(art, header, path)
                    return state, h
    else:
        store.miss(probe_art, "not found")
    data = data or load_data(profile, seed, splits=("train",), progress=bool(progress))
    art = _artifact(cfg, data["train"]["image"])
    state, info = pretrain(profile, seed=seed, device=device, progress=progress, data=data)
    timing = {k: info[k] for k in ("wall_s", "threads")}
    store.write_json(path.with_suffix(".json"), {"config_hash": h, "info": info}, art)
    ckpt.save_tensors(state, path, metadata={"config_hash": h, "config": json.dumps(cfg, sort_keys=True),
                                             "info": json.dumps({k: v for k, v in info.items() if k not in timing},
                                                                sort_keys=True),
                                             "artifact": json.dumps(art.header(), sort_keys=True)})
    return state, h


def probe_comparison(profile: P.Profile, pretrained: StateDict,
                     tasks: Tasks = ("seg", "depth", "normals", "edges", "albedo"), seed: int = 0,
                     device: Device = "cpu", data: Splits | None = None, progress: bool | None = None) -> dict:
    """Linear probe (frozen encoder, head trained ``probe_steps``) on ``pretrained`` (the foundation
    encoder, θ₀) vs random init, test metrics.

    Each encoder runs once over the train split and once over the test split (``training.cache_features``,
    when the features fit in memory); every task's head then trains and is scored on those cached features.
    Returns {"foundation": {task: metric}, "random": {task: metric}}.
    """
    from .tasks import get_tasks
    from .training import (build_model, cache_features, evaluate, features_fit_in_memory, probe_stage,
                           profile_augment)
    tasks = get_tasks(tasks)
    data = data or load_data(profile, seed)
    out = {}
    n = len(data["train"]["image"])
    for label, state in (("foundation", pretrained), ("random", random_encoder_state(profile, seed))):
        out[label] = {}
        feats = test_feats = None                # one encoder pass per split serves every task's probe
        if profile_augment(profile) is None and features_fit_in_memory(profile, n):
            frozen = build_model(state, profile, tasks[:1], seed=seed)
            feats = cache_features(frozen, data["train"]["image"], device=device, progress=progress,
                                   desc=f"encoding train ({label})")                   # (N, L, 2C, h, w)
            if features_fit_in_memory(profile, len(data["test"]["image"])):
                test_feats = cache_features(frozen, data["test"]["image"], device=device, progress=progress,
                                            desc=f"encoding test ({label})")
        for task in tasks:
            model = build_model(state, profile, (task,), seed=seed)
            probe_stage(model, data["train"], (task,), profile, profile.probe_steps, seed=seed, device=device,
                        progress=progress, desc=f"probe {label} {task}", features=feats)
            out[label][task] = evaluate(model, data["test"], (task,), device=device, features=test_feats)[task]
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m simo_lite.foundation --profile cpu``: pretrain the foundation encoder, write it (default
    ``data/foundation-<profile>.safetensors``) with a JSON manifest, and print probe metrics against a random
    encoder."""
    ap = argparse.ArgumentParser(description="Pretrain the foundation encoder and write it with its manifest")
    ap.add_argument("--profile", default="cpu", choices=sorted(P.PROFILES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="default: data/foundation-<profile>.safetensors")
    ap.add_argument("--invariance-steps", type=int, default=None,
                    help="override the profile's invariance_steps (stage 2: appearance invariance; 0: SimMIM only)")
    ap.add_argument("--probe-tasks", default="seg,depth,normals,edges,albedo",
                    help="tasks of the probe table (a task set or comma-separated names)")
    args = ap.parse_args(argv)
    overrides = {} if args.invariance_steps is None else {"invariance_steps": args.invariance_steps}
    profile = P.get(args.profile, **overrides)
    device = P.resolve_device(args.device)
    out = Path(args.out or SHIPPED_DIR / f"foundation-{profile.name}.safetensors")
    cfg = foundation_config(profile, args.seed)
    h = ckpt.config_hash(cfg)
    torch.manual_seed(args.seed)
    data = load_data(profile, args.seed, progress=True)
    stage1 = P.get(args.profile, invariance_steps=0)
    shipped1 = SHIPPED_DIR / f"foundation-{profile.name}.safetensors"
    try:                                         # stage 1 already shipped (same SimMIM config): start from it
        init = ckpt.load_tensors(shipped1, expect_hash=ckpt.config_hash(foundation_config(stage1, args.seed))) \
            if profile.invariance_steps and shipped1.exists() else None
    except ckpt.CheckpointError:
        init = None
    stage1_run = None if init is None else (init, {**pretrain_info(shipped1), "stage1_from": shipped1.name})
    state, info = pretrain(profile, seed=args.seed, device=device, progress=True if init is not None else None,
                           data=data, stage1=stage1_run)
    # the weights first: nothing computed is lost if anything below fails
    ckpt.save_tensors(state, out, metadata={"config_hash": h, "config": json.dumps(cfg, sort_keys=True)})
    print(f"pretrained {info['params']:,} parameters, {info['steps']} SimMIM steps"
          + (f" + {profile.invariance_steps} invariance steps" if profile.invariance_steps else "")
          + f" in {info['wall_s']:.0f} s; masked-patch L1 {info['loss_first']:.3f} -> {info['loss_last']:.3f}"
          + (f"; invariance loss {info['invariance']['loss_first']:.3f} -> {info['invariance']['loss_last']:.3f}"
             if "invariance" in info else ""))
    t0 = time.perf_counter()
    probes = probe_comparison(profile, state, tasks=args.probe_tasks, seed=args.seed, device=device, data=data)
    probe_s = time.perf_counter() - t0
    from .tasks import get_task
    for task in probes["foundation"]:
        f, r = probes["foundation"][task], probes["random"][task]
        better = (f > r) if get_task(task).higher_is_better else (f < r)
        print(f"  probe {task:8s} {get_task(task).metric_name:18s} foundation {f:8.4f}  random {r:8.4f}  "
              f"{'foundation better' if better else 'RANDOM BETTER'}")
    manifest = {"file": out.name, "sha256": st.sha256_file(out), "config": cfg, "config_hash": h,
                "profile": profile.to_dict(), "pretraining": info, "probe_test_metrics": probes,
                "probe_wall_s": probe_s, "command": " ".join(["python -m simo_lite.foundation", *(argv if argv is not None else sys.argv[1:])]),
                "torch": torch.__version__, "device": str(device)}
    st.write_json(out.with_suffix(".json"), manifest)
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
