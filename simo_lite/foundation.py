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
from .data import load_data
from .models import count_parameters, make_encoder
from .training import batch_indices, one_cycle
from .types import Device, Splits, StateDict, Tasks

__all__ = ["foundation_config", "pretrain", "load_foundation", "random_encoder_state", "probe_comparison",
           "pretrain_info", "SHIPPED_DIR"]

SHIPPED_DIR = paths.DATA_DIR          # data/: the shipped foundation checkpoints


def foundation_config(profile: P.Profile, seed: int = 0) -> dict:
    """Everything that determines the foundation weights; its hash names the checkpoint."""
    return {"encoder": profile.encoder_config(), "steps": profile.foundation_steps, "lr": profile.lr_foundation,
            "batch_size": profile.batch_size, "mask_ratio": profile.mask_ratio, "n_train": profile.n_train,
            "max_objects": profile.max_objects, "seed": seed, "objective": "simmim-l1", "version": 1}


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
             data: Splits | None = None) -> tuple[StateDict, dict]:
    """Pretrain a foundation encoder; returns (encoder state dict, info).

    ``info``: ``loss_first`` / ``loss_last`` (masked-patch L1, first step / mean of the last 20),
    ``steps``, ``params`` (encoder parameters), ``wall_s`` (seconds) and ``threads`` (torch threads).
    Independent of torch's global random state (seeded from ``seed``; the global state is restored).
    """
    device = P.resolve_device(device) if isinstance(device, str) else device
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
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    return state, {"loss_first": losses[0], "loss_last": sum(losses[-20:]) / len(losses[-20:]),
                   "wall_s": time.perf_counter() - t0, "steps": steps, "params": count_parameters(encoder),
                   "threads": torch.get_num_threads()}


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
            info.update(st.read_json_file(side).get("info", {}))
        except (st.ArtifactError, AttributeError):
            pass
    return info


def load_foundation(profile: P.Profile, run_dir: str | Path | None = None, seed: int = 0, device: Device = "cpu",
                    progress: bool | None = None, *, data: Splits | None = None) -> tuple[StateDict, str]:
    """The foundation encoder state for ``profile`` and its config hash.

    Looks for the shipped checkpoint ``data/foundation-<profile>.safetensors`` (whose config hash must
    match; a published file, accepted by its config hash), then ``<run_dir>/foundation-<hash>.safetensors``
    (whose stored artifact key must also match the key of the training images it was pretrained on:
    new images, new foundation); otherwise pretrains and saves it in ``run_dir`` (the ``gpu`` and
    ``smoke`` profiles pretrain their own), with a ``.json`` record (wall-clock, threads) beside it.
    ``data``: the already loaded splits ({"train": {"image": ...}, ...}), to avoid loading them again.
    A stale or damaged run-directory file is logged (logger ``simo_lite.store``) and pretrained again.
    Downstream artifacts are keyed by :func:`simo_lite.store.foundation_key` (config hash + weights).
    """
    if profile.backbone:                         # a pretrained timm ViT from a local file (docs/real-data.md)
        from .backbones import load_backbone
        h = ckpt.config_hash({"backbone": profile.backbone, "weights_sha256": st.sha256_file(profile.weights),
                              "input_hw": list(profile.input_hw)})
        encoder = load_backbone(profile.backbone, profile.weights, img_size=profile.input_hw)
        return {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}, h
    cfg = foundation_config(profile, seed)
    h = ckpt.config_hash(cfg)
    shipped = SHIPPED_DIR / f"foundation-{profile.name}.safetensors"
    if shipped.exists():
        try:
            return ckpt.load_tensors(shipped, expect_hash=h), h
        except ckpt.CheckpointError:
            pass                                 # made for another configuration: the run directory's / pretrain
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

    Each encoder runs once over the train split (``training.cache_features``, when the features fit
    in memory); every task's head then trains on those cached features.
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
        feats = None                             # one encoder pass serves every task's probe
        if profile_augment(profile) is None and features_fit_in_memory(profile, n):
            feats = cache_features(build_model(state, profile, tasks[:1], seed=seed), data["train"]["image"],
                                   device=device, progress=progress, desc=f"encoding ({label})")
        for task in tasks:
            model = build_model(state, profile, (task,), seed=seed)
            probe_stage(model, data["train"], (task,), profile, profile.probe_steps, seed=seed, device=device,
                        progress=progress, desc=f"probe {label} {task}", features=feats)
            out[label][task] = evaluate(model, data["test"], (task,), device=device)[task]
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
    args = ap.parse_args(argv)
    profile = P.get(args.profile)
    device = P.resolve_device(args.device)
    out = Path(args.out or SHIPPED_DIR / f"foundation-{profile.name}.safetensors")
    cfg = foundation_config(profile, args.seed)
    h = ckpt.config_hash(cfg)
    torch.manual_seed(args.seed)
    data = load_data(profile, args.seed, progress=True)
    state, info = pretrain(profile, seed=args.seed, device=device, data=data)
    print(f"pretrained {info['params']:,} parameters, {info['steps']} steps in {info['wall_s']:.0f} s; "
          f"masked-patch L1 {info['loss_first']:.3f} -> {info['loss_last']:.3f}")
    ckpt.save_tensors(state, out, metadata={"config_hash": h, "config": json.dumps(cfg, sort_keys=True)})
    t0 = time.perf_counter()
    probes = probe_comparison(profile, state, seed=args.seed, device=device, data=data)
    probe_s = time.perf_counter() - t0
    from .tasks import get_task
    for task in probes["foundation"]:
        f, r = probes["foundation"][task], probes["random"][task]
        better = (f > r) if get_task(task).higher_is_better else (f < r)
        print(f"  probe {task:8s} {get_task(task).metric_name:18s} foundation {f:8.4f}  random {r:8.4f}  "
              f"{'foundation better' if better else 'RANDOM BETTER'}")
    manifest = {"file": out.name, "sha256": st.sha256_file(out), "config": cfg, "config_hash": h,
                "profile": profile.to_dict(), "pretraining": info, "probe_test_metrics": probes,
                "probe_wall_s": probe_s, "command": f"python -m simo_lite.foundation --profile {profile.name} "
                                                    f"--seed {args.seed}",
                "torch": torch.__version__, "device": str(device)}
    st.write_json(out.with_suffix(".json"), manifest)
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
