"""Training and evaluation: one loop for probes, experts, joint MTL and realignment.

``fit`` trains whatever parameters of a :class:`~simo_lite.models.SimoModel` have ``requires_grad``
on the unweighted mean of the task losses, with AdamW, a one-cycle schedule and gradient clipping.
Batches are a pure function of ``(seed, step)``, and ``fit`` can checkpoint its whole state
(weights, optimizer, schedule) every few steps, so an interrupted run resumes bit-for-bit.

``train_expert`` and ``train_mtl`` run the paper's two-stage recipe (linear probe, then full
fine-tuning) and store the result in the run directory (:class:`simo_lite.store.Store`) under a
key that chains the recipe (:data:`RECIPE_VERSION`, profile, seed, steps), the data's key and the
foundation's key; a second call with the same inputs loads it instead of training, and a missing,
stale or damaged checkpoint is retrained with the reason logged (logger ``simo_lite.store``).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from . import checkpoints as ckpt
from . import progress as pg
from . import store as st
from .atomic import copy_tree
from .backbones import embed_dim, encoder_io
from .data import load_data
from .models import SimoModel, make_encoder, make_head
from .paths import DATA_DIR
from .profiles import Profile
from .progress import progress_enabled
from .scenes import VERSION as SCENES_VERSION
from .tasks import get_task, get_tasks
from .types import Device, Split, Splits, StateDict, Tasks

__all__ = ["RunRecord", "RECIPE_VERSION", "expert_artifact", "mtl_artifact", "two_stage_artifact", "load_data",
           "cache_features", "features_fit_in_memory", "probe_stage", "profile_augment",
           "batch_indices", "fit", "evaluate", "build_model", "make_profile_encoder", "train_expert", "train_mtl",
           "progress_enabled", "set_trainable", "Stage", "one_cycle", "tail_improvement",
           "val_loss", "val_tail_improvement", "shipped_model_dir",
           "shipped_realign_dir"]

# ``load_data`` (simo_lite.data) and ``progress_enabled`` (simo_lite.progress) are re-exported under
# their old home here: ``training.load_data`` and ``training.progress_enabled`` keep working.

log = logging.getLogger("simo_lite.training")

# version of the two-stage recipe (LP -> FT) of experts and MTL; part of their keys: bump it when the
# recipe changes in a way the config does not show, and every stored expert / MTL model is retrained
RECIPE_VERSION = 2
# version of fit's training-state files (format 2 stores the loss history and the elapsed time)
STATE_FORMAT = 2


@dataclass
class RunRecord:
    """What a training run cost: for the paper's cost comparison (Table 4)."""
    name: str
    steps: int = 0
    samples: int = 0               # images seen (steps x batch size), summed over stages
    trainable_params: int = 0      # the largest trainable set of any stage
    wall_s: float = 0.0
    stages: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def add(self, other: "RunRecord") -> None:
        """Add the cost of a stage ``other``: steps, samples and seconds summed, the largest trainable set
        kept, ``other`` (without its own stages) appended to :attr:`stages`."""
        self.steps += other.steps
        self.samples += other.samples
        self.trainable_params = max(self.trainable_params, other.trainable_params)
        self.wall_s += other.wall_s
        self.stages.append({k: v for k, v in asdict(other).items() if k != "stages"})

    def to_dict(self) -> dict:
        """Every field as ``{name: value}`` (``dataclasses.asdict``), as stored in a record's JSON."""
        return asdict(self)


# shipped checkpoints (data/): :func:`shipped_model_dir`
SHIPPED_DIR = DATA_DIR

# cached head-input features are used for frozen-encoder stages when they take at most this much memory
FEATURE_CACHE_BYTES = 2 * 2**30


@torch.no_grad()
def cache_features(model: SimoModel, images: torch.Tensor, batch_size: int = 128, device: Device = "cpu",
                   progress: bool = False, desc: str = "encoding") -> torch.Tensor:
    """Head-input features of ``images`` (N, 3, H, W) -> (N, L, 2C, h, w), float32 on CPU.

    One encoder pass (eval mode) over the images; heads trained on these see exactly what they would
    see with the frozen encoder in the loop (the ViT has no dropout or batch statistics)."""
    model.to(device).eval()
    if batch_size < 1:
        raise ValueError(f"cache_features: batch_size must be >= 1, got {batch_size}")
    starts = pg.progress(range(0, len(images), batch_size), desc, show=progress, min_total=5, leave=False)
    return torch.cat([model.features(images[s:s + batch_size].to(device)).cpu() for s in starts])


def features_fit_in_memory(profile: Profile, n: int) -> bool:
    """Whether the features of ``n`` images, (n, L, 2C, h, w) float32, fit in ``FEATURE_CACHE_BYTES``."""
    h, w = (s // profile.patch_size for s in profile.input_hw)
    return n * len(profile.taps) * 2 * profile.embed_dim * h * w * 4 <= FEATURE_CACHE_BYTES


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of batch ``step``: epochs are seeded permutations of range(n), so any step is reproducible."""
    per_epoch = max(n // batch_size, 1)
    epoch, k = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g)
    return perm[k * batch_size:(k + 1) * batch_size] if n >= batch_size else perm


def one_cycle(opt: torch.optim.Optimizer, lr: float, steps: int, pct_start: float
              ) -> torch.optim.lr_scheduler.OneCycleLR:
    """OneCycleLR with warm-up fraction ``pct_start``, kept at >= 2 steps so short runs work."""
    steps = max(steps, 4)
    pct = min(max(pct_start, 2.5 / steps), 0.5)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=pct)


def _save_state(path, model, opt, sched, step, config_hash, losses, elapsed_s, val_curve=()):
    """The whole training state after ``step`` steps: weights, optimizer, schedule, the loss of every
    step so far (float64, one per step) and the elapsed wall-clock seconds (metadata; state files are
    deleted when training completes, so they never reach a finished run directory)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_sd = opt.state_dict()
    for pid, s in opt_sd["state"].items():
        for k, v in s.items():
            tensors[f"opt.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    tensors["fit.losses"] = torch.tensor(losses, dtype=torch.float64)
    if val_curve:
        tensors["fit.val_loss"] = torch.tensor(val_curve, dtype=torch.float64)       # (points, 2): step, loss
    meta = {"step": step, "config_hash": config_hash, "sched": json.dumps(sched.state_dict()),
            "param_groups": json.dumps(opt_sd["param_groups"]), "elapsed_s": repr(float(elapsed_s)),
            "threads": torch.get_num_threads(), "format": STATE_FORMAT}
    ckpt.save_tensors(tensors, path, metadata=meta)


def _load_val_curve(path) -> list[list[float]]:
    """The validation-loss curve saved with a training state (empty when it had none)."""
    t = ckpt.load_tensors(path).get("fit.val_loss")
    return [] if t is None else [[int(a), float(b)] for a, b in t.tolist()]


def _load_state(path, model, opt, sched, config_hash) -> tuple[int, list[float], float]:
    """Restore a state saved by :func:`_save_state`: returns (step, losses of steps 0..step-1, elapsed s)."""
    meta = ckpt.read_metadata(path)
    tensors = ckpt.load_tensors(path, expect_hash=config_hash)
    step = int(meta["step"])
    losses = tensors["fit.losses"].tolist()
    if len(losses) != step:
        raise ckpt.CheckpointError(f"training state {path}: {len(losses)} losses for step {step}")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    sched.load_state_dict(json.loads(meta["sched"]))
    return step, losses, float(meta["elapsed_s"])


def fit(model: SimoModel, data: Split, tasks: Tasks, steps: int, lr: float, batch_size: int, *, seed: int = 0,
        weight_decay: float = 1e-4, grad_clip: float = 25.0, pct_start: float = 0.1,
        device: Device = "cpu", progress: bool = False, desc: str = "training",
        name: str = "fit", state_path: str | Path | None = None, state_every: int = 50,
        callback: Callable[[int, float], None] | None = None, features: torch.Tensor | None = None,
        augment: Callable[[Split, torch.Generator], Split] | None = None,
        val: Split | None = None, val_points: int = 20) -> RunRecord:
    """Train the parameters of ``model`` that have ``requires_grad`` for ``steps`` steps.

    Args:
        data: one split {"image": (N,3,H,W), task: labels...}; batches are drawn by ``batch_indices``.
        tasks: task names whose losses are averaged (unweighted mean, as the paper).
        state_path: if given, the full training state (weights, optimizer, schedule, loss history,
            elapsed time) is saved there every ``state_every`` steps and loaded from there on start
            (resume after an interrupt); removed when training completes. A state from another
            configuration, an older format or a damaged file is ignored (logged): training restarts.
        callback: optional ``callback(step, loss)`` after each step (tests use it to interrupt).
        features: optional cached head-input features (N, L, 2C, h, w) of ``data["image"]``
            (:func:`cache_features`); only with a frozen encoder, which is then skipped.
        augment: optional ``augment(batch, generator) -> batch`` applied to every training batch
            (``simo_lite.datasets.augment``); its generator is seeded by (seed, step), so resumed
            runs see the same augmented batches. Not combinable with ``features``.
        val: optional held-out split; its loss (the same task-mean loss, eval mode, no gradient) is
            measured at ``val_points`` evenly spaced steps, the last included, and returned as
            ``metrics["val_loss"] = [[step, loss], ...]`` (steps counted from 1): the curve that says
            whether the run has plateaued (:func:`val_tail_improvement`). Measuring it changes no weight.

    Returns a :class:`RunRecord` with steps, samples (images seen), trainable parameters,
    wall-clock seconds and the loss history (``metrics["loss"]``, one value per step), all counted
    over the whole run: a resumed run reports what an uninterrupted one does (same steps, samples and
    losses, bitwise-identical weights); its ``wall_s`` adds the time recorded in the state to this
    call's (work lost after the last saved state is not counted).
    """
    tasks = get_tasks(tasks)
    device = torch.device(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("fit: the model has no trainable parameters")
    _check_fit_inputs(model, data, tasks, steps, batch_size, state_every)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = one_cycle(opt, lr, steps, pct_start)
    encoder_frozen = not any(p.requires_grad for p in model.encoder.parameters())
    if features is not None:
        if not encoder_frozen:
            raise ValueError("fit: cached features need a frozen encoder (Stage.set(model, 'heads'))")
        if augment is not None:
            raise ValueError("fit: cached features cannot be augmented; pass one of features / augment")
        if len(features) != len(data["image"]):
            raise ValueError(f"fit: {len(features)} cached features for {len(data['image'])} images")
    cfg_hash = ckpt.config_hash({"name": name, "steps": steps, "lr": lr, "batch_size": batch_size, "seed": seed,
                                 "tasks": tasks, "n_params": sum(p.numel() for p in params),
                                 "weight_decay": weight_decay, "grad_clip": grad_clip, "pct_start": pct_start,
                                 "format": STATE_FORMAT})
    start, losses, prior_s = 0, [], 0.0
    val_curve: list[list[float]] = []
    val_at = set() if val is None else {round(steps * (i + 1) / val_points) for i in range(max(1, val_points))}
    if state_path is not None and Path(state_path).exists():
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        try:
            start, losses, prior_s = _load_state(state_path, model, opt, sched, cfg_hash)
            val_curve = _load_val_curve(state_path) if val is not None else []
            log.info("%s: resuming at step %d of %d from %s", name, start, steps, state_path)
        except (ckpt.CheckpointError, KeyError, ValueError, RuntimeError) as e:
            # a state from another configuration or format, or a damaged file: start over, cleanly
            log.warning("%s: restarting from step 0, training state not usable: %s", name, e)
            model.load_state_dict(before)
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
            sched = one_cycle(opt, lr, steps, pct_start)
            start, losses, prior_s, val_curve = 0, [], 0.0, []
    model.to(device).train()
    if encoder_frozen:
        model.encoder.eval()
    n = len(data["image"])
    iterator = pg.progress(range(start, steps), desc, total=steps, show=progress, initial=start, leave=False)
    t0 = time.perf_counter()
    for step in iterator:
        idx = batch_indices(n, batch_size, seed, step)
        batch = {k: v[idx].to(device, non_blocking=True) for k, v in data.items()
                 if k in tasks or (k == "image" and features is None)}
        if augment is not None:
            batch = augment(batch, torch.Generator().manual_seed(seed * 1_000_003 + step))
        if features is not None:
            feats = features[idx].to(device, non_blocking=True)           # (B, L, 2C, h, w) cached
        else:
            with torch.set_grad_enabled(not encoder_frozen):              # frozen encoder: no graph
                feats = model.features(batch["image"])                     # (B, L, 2C, h, w)
        out = {t: model.heads[t](feats) for t in tasks}
        loss = sum(get_task(t).loss(out[t], batch[t]) for t in tasks) / len(tasks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step + 1 in val_at:
            val_curve.append([step + 1, val_loss(model, val, tasks, device=device)])
            model.train()
            if encoder_frozen:
                model.encoder.eval()
        if hasattr(iterator, "set_postfix") and step % 10 == 0:
            iterator.set_postfix(loss=f"{losses[-1]:.3f}")
        if state_path is not None and (step + 1) % state_every == 0 and step + 1 < steps:
            _save_state(state_path, model, opt, sched, step + 1, cfg_hash, losses,
                        prior_s + time.perf_counter() - t0, val_curve)
        if callback is not None:
            callback(step, losses[-1])
    if state_path is not None:
        Path(state_path).unlink(missing_ok=True)
    model.eval()
    metrics: dict[str, Any] = {"loss": losses}
    if val is not None:
        metrics["val_loss"] = val_curve
    return RunRecord(name=name, steps=steps, samples=steps * min(batch_size, n),
                     trainable_params=sum(p.numel() for p in params), wall_s=prior_s + time.perf_counter() - t0,
                     metrics=metrics)


@torch.no_grad()
def val_loss(model: SimoModel, data: Split, tasks: Tasks, batch_size: int = 128, device: Device = "cpu") -> float:
    """The task-mean training loss of ``model`` on a whole split (eval mode, no gradient): each task's
    loss averaged over batches weighted by their size, then the unweighted mean over ``tasks``."""
    tasks = get_tasks(tasks)
    device = torch.device(device)
    model.eval()
    n = len(data["image"])
    total = {t: 0.0 for t in tasks}
    for s in range(0, n, batch_size):
        feats = model.features(data["image"][s:s + batch_size].to(device))
        b = min(batch_size, n - s)
        for t in tasks:
            total[t] += float(get_task(t).loss(model.heads[t](feats), data[t][s:s + batch_size].to(device))) * b
    return sum(total.values()) / (n * len(tasks))


def val_tail_improvement(record: "RunRecord | dict") -> float:
    """:func:`tail_improvement` of a run's validation-loss curve (``metrics["val_loss"]`` of the fine-tuning
    stage of a :class:`RunRecord`, or of a record's dict); NaN when the run recorded none."""
    rec = record.to_dict() if isinstance(record, RunRecord) else record
    stages = [rec, *rec.get("stages", [])]
    curves = [s["metrics"]["val_loss"] for s in stages if s.get("metrics", {}).get("val_loss")]
    if not curves:
        return float("nan")
    return tail_improvement([v for _, v in curves[-1]])


def tail_improvement(losses: Sequence[float], tail: float = 0.2, window: float = 0.1) -> float:
    """How much a run still improved over its last ``tail`` of steps, as a fraction of the loss.

    (mean loss over the ``window`` of steps ending where the tail starts - mean over the last
    ``window`` of steps) / the first; 0.004 = the loss fell 0.4 % over the last 20 % of steps. Mean
    windows, not single steps, because minibatch losses are noisy. A run counts as converged when this
    is under 1 % (docs/preregistration.md §4). NaN when the run is too short for two windows."""
    n = len(losses)
    w = max(1, int(round(window * n)))
    start = int(round((1 - tail) * n))
    if n < 4 or start - w < 0 or start > n - w:
        return float("nan")
    before = sum(losses[start - w:start]) / w
    end = sum(losses[n - w:]) / w
    return (before - end) / abs(before) if before else float("nan")


def _check_fit_inputs(model: SimoModel, data: Split, tasks: tuple[str, ...], steps: int, batch_size: int,
                      state_every: int) -> None:
    """Clear errors for the inputs ``fit`` cannot train on (before any work)."""
    if steps < 0 or batch_size < 1 or state_every < 1:
        raise ValueError(f"fit: steps must be >= 0, batch_size and state_every >= 1; got steps={steps}, "
                         f"batch_size={batch_size}, state_every={state_every}")
    if "image" not in data or not len(data["image"]):
        raise ValueError(f"fit: the split has no images (keys: {', '.join(data) or 'none'})")
    missing = [t for t in tasks if t not in data]
    if missing:
        raise ValueError(f"fit: the split has no labels for {', '.join(missing)}; its keys: {', '.join(data)}")
    no_head = [t for t in tasks if t not in model.heads]
    if no_head:
        raise ValueError(f"fit: the model has no head for {', '.join(no_head)}; its heads: {', '.join(model.heads)}")


@torch.no_grad()
def evaluate(model: SimoModel, data: Split, tasks: Tasks | None = None, batch_size: int = 128, device: Device = "cpu",
             features: torch.Tensor | None = None) -> dict[str, float]:
    """Each task's metric on a split: {task: value} (see the task registry for units and direction).

    With ``features`` (N, L, 2C, h, w) precomputed, the encoder is skipped (cached-feature path).
    """
    tasks = get_tasks(tasks if tasks is not None else model.tasks)
    device = torch.device(device)
    model.to(device).eval()
    acc = {t: get_task(t).new_metric() for t in tasks}
    n = len(data["image"])
    for s in range(0, n, batch_size):
        if features is not None:
            feats = features[s:s + batch_size].to(device)
        else:
            feats = model.features(data["image"][s:s + batch_size].to(device))
        for t in tasks:
            pred = get_task(t).predict(model.heads[t](feats))
            acc[t].update(pred.cpu(), data[t][s:s + batch_size])
    return {t: acc[t].compute() for t in tasks}


def make_profile_encoder(profile: Profile, seed: int | None = None) -> nn.Module:
    """The (untrained) encoder of a profile: the course's ViT, or ``profile.backbone`` from timm."""
    if profile.backbone:
        from .backbones import make_backbone
        return make_backbone(profile.backbone, img_size=profile.input_hw, seed=seed)
    return make_encoder(**profile.encoder_config(), seed=seed)


def build_model(encoder_state: StateDict, profile: Profile, tasks: Tasks, seed: int = 0,
                head_states: dict[str, StateDict] | None = None) -> SimoModel:
    """A SimoModel with the given encoder weights and one head per task (fresh, seeded, or loaded).

    The model's taps and its heads' input width come from the encoder (:func:`simo_lite.backbones.encoder_io`,
    the same as ``profile.taps`` / ``profile.embed_dim`` for a profile that describes the encoder)."""
    if profile.backbone:   # skip a large random init: build on the meta device, then take copies of the weights
        with torch.device("meta"):
            encoder = make_profile_encoder(profile)
        encoder.load_state_dict({k: v.detach().clone() for k, v in encoder_state.items()}, assign=True)
        if any(t.is_meta for t in (*encoder.parameters(), *encoder.buffers())):   # a buffer outside the state
            encoder = make_profile_encoder(profile)
            encoder.load_state_dict(encoder_state)
    else:
        encoder = make_profile_encoder(profile)
        encoder.load_state_dict(encoder_state)
    taps = encoder_io(encoder).taps
    heads = {}
    for i, t in enumerate(get_tasks(tasks)):
        with torch.random.fork_rng():
            torch.manual_seed(seed * 1000 + i)
            heads[t] = make_head(profile.head, t, embed_dim(encoder), len(taps), profile.input_hw,
                                 channels=profile.seg_classes if t == "seg" else None)
        if head_states is not None and t in head_states:
            heads[t].load_state_dict(head_states[t])
    return SimoModel(encoder, heads, taps)


def set_trainable(module: nn.Module, trainable: bool) -> nn.Module:
    """Freeze (``trainable=False``) or unfreeze every parameter of ``module``, in place; returns it.

    The one way the package freezes weights (``fit`` trains what has ``requires_grad``)::

        set_trainable(model, False)              # everything frozen ...
        set_trainable(model.heads["seg"], True)  # ... but one head
    """
    if not isinstance(trainable, bool):
        raise TypeError(f"set_trainable: trainable must be True or False, got {trainable!r}")
    for p in module.parameters():
        p.requires_grad_(trainable)
    return module


class Stage:
    """Which parameters train: 'heads' (encoder frozen: linear probe / head realignment) or 'all'."""

    @staticmethod
    def set(model: SimoModel, trainable: str) -> None:
        """Make ``model`` train only its heads (``trainable="heads"``: encoder frozen) or everything
        (``"all"``); another value raises ``ValueError``."""
        if trainable not in ("heads", "all"):
            raise ValueError(f"unknown stage {trainable!r}; valid: 'heads', 'all'")
        set_trainable(model.encoder, trainable == "all")
        set_trainable(model.heads, True)


def _split_state(model: SimoModel) -> tuple[StateDict, dict[str, StateDict]]:
    enc = {k: v.detach().cpu().clone() for k, v in model.encoder.state_dict().items()}
    heads = {t: {k: v.detach().cpu().clone() for k, v in h.state_dict().items()} for t, h in model.heads.items()}
    return enc, heads


_RECORD_FIELDS = ("name", "steps", "samples", "trainable_params", "wall_s", "stages", "metrics")


def _save_model(folder: Path, model: SimoModel, art: st.Artifact, record: RunRecord) -> None:
    """encoder.safetensors, head-<task>.safetensors and record.json (written last: its presence marks
    a complete checkpoint); every file carries ``art``'s key and header (thread count included)."""
    store = st.Store(folder)
    enc, heads = _split_state(model)
    meta = {"config": json.dumps(art.config, sort_keys=True)}
    for t, h in heads.items():
        store.save_tensors(folder / f"head-{t}.safetensors", h, art, **meta)
    store.save_tensors(folder / "encoder.safetensors", enc, art, **meta)
    store.write_json(folder / "record.json", {"config_hash": art.key, "config": art.config,
                                              "record": record.to_dict()}, art)


def _load_model(folder: Path, art: st.Artifact, profile: Profile, tasks: Tasks, quiet: bool = False,
                store: st.Store | None = None) -> tuple[SimoModel, RunRecord] | None:
    """The model and record stored in ``folder`` for ``art``, or None (a cache miss, logged with the
    reason: not found, key changed, or which file is damaged: unreadable, wrong key, wrong shapes).
    ``store``: the run directory's store (file names in the log are relative to its root)."""
    store = store or st.Store(folder.parent)
    rec_path = folder / "record.json"
    rec = store.read_json(rec_path, art, require=("record",), unit=folder, quiet=quiet)
    if rec is None:
        return None
    try:
        r = rec["record"]
        record = RunRecord(**{k: r[k] for k in _RECORD_FIELDS})
    except (KeyError, TypeError) as e:
        store.miss(art, f"corrupt file {store._rel(rec_path)}: bad record ({type(e).__name__}: {e})")
        return None
    enc = store.load_tensors(folder / "encoder.safetensors", art)
    if enc is None:
        return None
    heads = {}
    for t in get_tasks(tasks):
        heads[t] = store.load_tensors(folder / f"head-{t}.safetensors", art)
        if heads[t] is None:
            return None
    try:
        model = build_model(enc, profile, tasks)
    except (RuntimeError, ValueError, KeyError) as e:
        store.miss(art, f"corrupt file {store._rel(folder / 'encoder.safetensors')}: {_first_line(e)}")
        return None
    for t in get_tasks(tasks):
        try:
            model.heads[t].load_state_dict(heads[t])
        except (RuntimeError, ValueError, KeyError) as e:          # e.g. right key, wrong shapes
            store.miss(art, f"corrupt file {store._rel(folder / f'head-{t}.safetensors')}: {_first_line(e)}")
            return None
    return model.eval(), record  # same mode as a fresh run


def shipped_model_dir(art: st.Artifact, profile: Profile) -> Path:
    """``data/models-<profile>/<name>-<key>``: where the shipped checkpoint of ``art`` lies, if one is
    shipped (``python -m simo_lite.shipped``, ``make experts``). It matches only with the same key: the
    same recipe, profile, seed, data and foundation.

    The other seeds of the multi-seed evidence ship apart from the course's models, in
    ``data/evidence/seed-<s>/models-<profile>/`` (``make evidence-models``); the first folder of the key
    found there is returned when the course's folder has none."""
    name = f"{art.name}-{art.key}"
    main = SHIPPED_DIR / f"models-{profile.name}" / name
    if main.is_dir():
        return main
    others = sorted((SHIPPED_DIR / "evidence").glob(f"*/models-{profile.name}/{name}"))
    return others[0] if others else main


def shipped_realign_dir(profile: Profile) -> Path:
    """``data/models-<profile>/realign``: the shipped realignments of a profile, heads and adapters (the
    ``shipped_dir`` of :func:`simo_lite.realign.head_realign` and ``representation_realign``; each matches
    one key only)."""
    return SHIPPED_DIR / f"models-{profile.name}" / "realign"


def _load_shipped(folder: Path, art: st.Artifact, profile: Profile, tasks: Tasks) -> tuple[SimoModel, RunRecord] | None:
    """The shipped model of ``art`` when the run has none yet: loaded (every file's key checked) and
    copied into the run's ``folder`` (atomically), so the run directory stays self-contained; else None."""
    src = shipped_model_dir(art, profile)
    if folder.exists() or not (src / "record.json").is_file():
        return None
    loaded = _load_model(src, art, profile, tasks, store=st.Store(src.parent))
    if loaded is None:
        return None
    copy_tree(src, folder)
    log.info("loaded the shipped %s %s (%s), copied into the run", art.kind, art.name, src.parent.name)
    return loaded


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: " + (" ".join(lines[:2])[:300] if lines else "")


def profile_augment(profile: Profile) -> Callable[[Split, torch.Generator], Split] | None:
    """The training-batch augmentation of a profile (real datasets), or None."""
    if not profile.augment:
        return None
    from .datasets import augmenter
    return augmenter(profile.dataset)


def probe_stage(model: SimoModel, train: Split, tasks: Tasks, profile: Profile, steps: int, *, seed: int = 0,
                device: Device = "cpu", progress: bool = False, desc: str = "probe", name: str = "probe",
                state_path: str | Path | None = None, features: torch.Tensor | None = None) -> RunRecord:
    """Stage 1 of LP -> FT: train the heads of ``model`` with its encoder frozen (in place).

    The encoder runs once over ``train`` and the heads train on the cached features, unless the
    features would not fit in memory or the profile augments its batches (then the frozen encoder
    runs on every batch). The same batches and the same result either way, up to float rounding.
    ``features``: the encoder's cached features of ``train`` when the caller already has them
    (several probes on one frozen encoder).
    """
    Stage.set(model, "heads")
    augment = profile_augment(profile)
    n = len(train["image"])
    feats = features if augment is None else None
    if feats is None and augment is None and features_fit_in_memory(profile, n):
        feats = cache_features(model, train["image"], device=device, progress=progress, desc=f"{desc}: encoding")
    return fit(model, train, tasks, steps, profile.lr_head, profile.batch_size, seed=seed,
               weight_decay=profile.weight_decay, grad_clip=profile.grad_clip, pct_start=0.1, device=device,
               progress=progress, desc=desc, name=name, state_path=state_path, features=feats, augment=augment)


def two_stage_artifact(name: str, tasks: Tasks, pretrained_key: str, profile: Profile, seed: int, probe_steps: int,
                       finetune_steps: int, data_key: str) -> st.Artifact:
    """The store artifact of a two-stage model: the recipe's config + the data's and the pretrained
    encoder's keys (``pretrained_key``, stored under "foundation")."""
    tasks = get_tasks(tasks)
    config = {"name": name, "tasks": tasks, "profile": profile.training_dict(), "seed": seed,
              "probe_steps": probe_steps, "finetune_steps": finetune_steps, "version": RECIPE_VERSION,
              "scenes_version": SCENES_VERSION}
    return st.Artifact("expert" if name.startswith("expert-") else "mtl", name, config,
                       {"data": data_key, "foundation": pretrained_key})


def expert_artifact(task: str, pretrained_key: str, profile: Profile, seed: int, data_key: str) -> st.Artifact:
    """The artifact (key, name) of :func:`train_expert`'s model, without training it."""
    return two_stage_artifact(f"expert-{get_task(task).name}", (task,), pretrained_key, profile, seed,
                              profile.probe_steps, profile.finetune_steps, data_key)


def mtl_artifact(tasks: Tasks, pretrained_key: str, profile: Profile, seed: int, data_key: str) -> st.Artifact:
    """The artifact (key, name) of :func:`train_mtl`'s model, without training it."""
    tasks = get_tasks(tasks)
    return two_stage_artifact("mtl-" + "+".join(tasks), tasks, pretrained_key, profile, seed,
                              profile.mtl_probe_steps, profile.mtl_finetune_steps, data_key)


def _two_stage(art: st.Artifact, tasks: Tasks, pretrained: StateDict, profile: Profile, data: Splits, *,
               run_dir: str | Path, seed: int, device: Device, progress: bool, probe_steps: int,
               finetune_steps: int) -> tuple[SimoModel, RunRecord]:
    """Linear probe then full fine-tuning (LP -> FT), cached under run_dir/models/<name>-<key>/."""
    tasks = get_tasks(tasks)
    name = art.name
    store = st.Store(run_dir)
    folder = store.model_dir(art)
    loaded = _load_shipped(folder, art, profile, tasks) or _load_model(folder, art, profile, tasks, store=store)
    if loaded is not None:
        return loaded
    folder.mkdir(parents=True, exist_ok=True)
    record = RunRecord(name=name)
    probe_dir = folder / "probe"
    model = build_model(pretrained, profile, tasks, seed=seed)
    probe = _load_model(probe_dir, art, profile, tasks, quiet=True, store=store)
    augment = profile_augment(profile)
    common = dict(batch_size=profile.batch_size, seed=seed, weight_decay=profile.weight_decay,
                  grad_clip=profile.grad_clip, device=device, progress=progress, augment=augment)
    if probe is None:
        r = probe_stage(model, data["train"], tasks, profile, probe_steps, seed=seed, device=device,
                        progress=progress, desc=f"{name}: probe", name=f"{name}/probe",
                        state_path=folder / "probe-state.safetensors")
        r.metrics["test"] = evaluate(model, data["test"], tasks, device=device)  # keeps the loss history
        _save_model(probe_dir, model, art, r)
    else:
        model, r = probe
    record.add(r)
    record.metrics["probe"] = r.metrics["test"]
    Stage.set(model, "all")
    r = fit(model, data["train"], tasks, finetune_steps, profile.lr_finetune, pct_start=0.05,
            desc=f"{name}: fine-tune", name=f"{name}/finetune", state_path=folder / "ft-state.safetensors",
            val=data["val"],
            seed=seed + 1, **{k: v for k, v in common.items() if k != "seed"})
    record.add(r)
    record.metrics["test"] = evaluate(model, data["test"], tasks, device=device)
    record.metrics["val"] = evaluate(model, data["val"], tasks, device=device)
    _save_model(folder, model, art, record)
    return model, record


def train_expert(task: str, pretrained: StateDict, pretrained_key: str, profile: Profile, data: Splits,
                 run_dir: str | Path, *, seed: int = 0, device: Device = "cpu", progress: bool = False,
                 data_key: str | None = None) -> tuple[SimoModel, RunRecord]:
    """The single-task expert for ``task``: linear probe, then full fine-tuning (paper §3).

    ``pretrained`` is θ₀, the encoder every expert starts from; ``pretrained_key`` identifies it
    (``Experiment`` passes the foundation's store key, :func:`simo_lite.store.foundation_key`);
    ``data_key`` identifies ``data`` ({split: tensors}, needs train, val and test), computed from the
    tensors (:func:`simo_lite.store.data_key`) when not given. Both are part of the stored model's key
    (:func:`expert_artifact`)."""
    _check_splits(data, ("train", "val", "test"), "train_expert")
    data_key = data_key or st.data_key(data)
    art = expert_artifact(task, pretrained_key, profile, seed, data_key)
    return _two_stage(art, (task,), pretrained, profile, data, run_dir=run_dir, seed=seed, device=device,
                      progress=progress, probe_steps=profile.probe_steps, finetune_steps=profile.finetune_steps)


def train_mtl(tasks: Tasks, pretrained: StateDict, pretrained_key: str, profile: Profile, data: Splits,
              run_dir: str | Path, *, seed: int = 0, device: Device = "cpu", progress: bool = False,
              data_key: str | None = None) -> tuple[SimoModel, RunRecord]:
    """Joint multi-task baseline: all heads, unweighted mean loss, probe then full fine-tuning
    (arguments and keys as in :func:`train_expert`, :func:`mtl_artifact`)."""
    tasks = get_tasks(tasks)
    _check_splits(data, ("train", "val", "test"), "train_mtl")
    data_key = data_key or st.data_key(data)
    art = mtl_artifact(tasks, pretrained_key, profile, seed, data_key)
    return _two_stage(art, tasks, pretrained, profile, data, run_dir=run_dir, seed=seed, device=device,
                      progress=progress, probe_steps=profile.mtl_probe_steps,
                      finetune_steps=profile.mtl_finetune_steps)


def _check_splits(data: Splits, need: tuple[str, ...], who: str) -> None:
    """A clear error when ``data`` ({split: tensors}) lacks a split ``who`` needs."""
    missing = [s for s in need if s not in data]
    if missing:
        raise ValueError(f"{who}: data has no {', '.join(missing)} split; it needs {', '.join(need)} "
                         f"({{split: tensors}}, as simo_lite.data.load_data returns), got {', '.join(data) or 'none'}")
