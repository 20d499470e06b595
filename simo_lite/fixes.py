"""The fixes registry: what can be applied to a merged SIMO model before it is scored.

A fix is a function ``apply(experiment, model, **options) -> (fixed model, RunRecord)``: it gets the
:class:`~simo_lite.experiment.Experiment` (its data, profile, seed, device and store) and the merged
model (encoder + the experts' heads), and returns a new model and what fixing it cost. The results
table then has a row for every (merge method, fix) pair, e.g. ``("ta", "head")``, whose id is
``"ta+head"``.

=========  =====================  =================================================================
name       label                  what it does (``simo_lite.realign``)
=========  =====================  =================================================================
head       head realign           refit each expert head on the merged encoder's cached features
repr       block adapters         low-rank adapter after every block, trained with the heads
lora       PEFT LoRA              LoRA on the blocks' attention and MLP linears, trained with the heads
bn         BN re-estimation       recompute the heads' BatchNorm running mean / var on the merged
                                  encoder's features (forward passes only: 0 steps, no parameter changed)
=========  =====================  =================================================================

Register another from a notebook or a test, no package edit needed::

    from simo_lite import fixes

    @fixes.register_fix("my_bn", label="my BN re-estimation")
    def my_reestimate_bn(exp, model):
        ...                                   # forward passes only: no optimiser step
        return model, RunRecord("my-bn", samples=n)

    exp.results_table(rows=[("ta", "my_bn")])   # a "ta+my_bn" row, "task arithmetic + my BN re-estimation"

A fix that takes no gradient step (such as "bn", re-estimating BatchNorm statistics on the
realignment split) returns a record with ``steps=0``; the results table shows its cost as it is.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .registry import Registry

if TYPE_CHECKING:                                   # pragma: no cover
    from .experiment import Experiment
    from .models import SimoModel
    from .training import RunRecord

__all__ = ["Fix", "FIXES", "register_fix", "head_realignment", "adapter_realignment", "realign_path", "bn_reestimation"]


@dataclass(frozen=True)
class Fix:
    """A fix in the registry :data:`FIXES`.

    Attributes:
        name: registry key; the row id of (method, fix) is ``f"{method}+{name}"``.
        apply: ``apply(experiment, model, **options) -> (model, RunRecord)``; must not modify ``model``.
        options: keyword options ``apply`` takes (e.g. ``("rank", "steps")``); results-table rows
            call it without any, so every option needs a default (usually the experiment's setting).
        label: how results tables name it ("head realign").
        trains: whether it takes gradient steps (False for BN re-estimation: forward passes only); the
            cost table (Table 4) lists the rows of fixes that train.
    """
    name: str
    apply: Callable[..., tuple]
    options: tuple[str, ...] = ()
    label: str = ""
    trains: bool = True


FIXES: Registry[Fix] = Registry("fix")


def register_fix(name: str, apply: Callable[..., tuple] | None = None, *, options: tuple[str, ...] = (),
                 label: str = "", trains: bool = True, replace: bool = False
                 ) -> Callable[..., tuple] | Callable[[Callable[..., tuple]], Callable[..., tuple]]:
    """Register a fix (directly, or as a decorator when ``apply`` is omitted); returns ``apply``.

    After that ``exp.fix(name, model)`` and the results-table rows ``(method, name)`` accept it."""
    def add(f):
        FIXES.register(name, Fix(name, f, tuple(options), label or name, trains), replace=replace)
        return f
    return add(apply) if apply is not None else add


def head_realignment(exp: "Experiment", model: "SimoModel", *, steps: int | None = None, cached: bool = True
                     ) -> tuple["SimoModel", "RunRecord"]:
    """Head realignment (paper §6a) on the experiment's realignment split: every head refitted on
    the merged encoder's features, encoder frozen (:func:`simo_lite.realign.head_realign`), stored in the
    ``realign/`` folder of the experiment's run directory (a later notebook loads it)."""
    from .realign import head_realign
    from .training import shipped_realign_dir
    return head_realign(model, exp.data["val_realign"], exp.tasks, **_head_settings(exp, steps, cached),
                        device=exp.device, progress=exp.progress, cache_dir=exp.store.root / "realign",
                        shipped_dir=shipped_realign_dir(exp.profile))


def _head_settings(exp: "Experiment", steps: int | None, cached: bool) -> dict:
    p = exp.profile
    return dict(steps=steps or p.head_steps, lr=p.lr_head_realign, batch_size=p.batch_size, seed=exp.seed, cached=cached)


def adapter_realignment(exp: "Experiment", model: "SimoModel", *, kind: str = "block", rank: int | None = None,
                        steps: int | None = None) -> tuple["SimoModel", "RunRecord"]:
    """Representation realignment (paper §6b) on the realignment split: adapters of ``kind``
    ("block" or "lora") and rank ``rank`` (default: the experiment's ``adapter_rank``) trained with the
    heads (:func:`simo_lite.realign.representation_realign`), stored in the ``realign/`` folder of the
    experiment's run directory (the store's layout); a result shipped in ``data/models-<profile>/realign``
    under the same key (:mod:`simo_lite.shipped`) is loaded instead of trained."""
    from .realign import representation_realign
    from .training import shipped_realign_dir
    return representation_realign(model, exp.data["val_realign"], exp.tasks, **_adapter_settings(exp, kind, rank, steps),
                                  device=exp.device, progress=exp.progress, cache_dir=exp.store.root / "realign",
                                  shipped_dir=shipped_realign_dir(exp.profile))


def _adapter_settings(exp: "Experiment", kind: str, rank: int | None, steps: int | None) -> dict:
    p = exp.profile
    return dict(rank=rank or exp.adapter_rank, kind=kind, steps=steps or p.repr_steps, lr=p.lr_repr_realign,
                batch_size=p.batch_size, seed=exp.seed)


def realign_path(exp: "Experiment", model: "SimoModel", fix: str, **options: Any) -> Path:
    """Where the fix ``fix`` ("head", "repr" or "lora") with ``options`` (as :meth:`Experiment.fix` takes
    them) stores its result for ``model`` in the experiment's run directory
    (``realign/<name>-<key>.safetensors``, beside its ``.json`` record)."""
    from .realign import adapter_artifact, head_artifact
    from .store import Store
    val = exp.data["val_realign"]
    if fix == "head":
        art = head_artifact(model, val, exp.tasks, **_head_settings(exp, options.get("steps"), options.get("cached", True)))
    elif fix in ("repr", "lora"):
        art = adapter_artifact(model, val, exp.tasks, **_adapter_settings(exp, "block" if fix == "repr" else "lora",
                                                                         options.get("rank"), options.get("steps")))
    else:
        raise ValueError(f"fix {fix!r} stores no realignment; those that do: head, repr, lora")
    return Store(exp.store.root / "realign").path("", art, ".safetensors")


def bn_reestimation(exp: "Experiment", model: "SimoModel", *, batch_size: int | None = None
                    ) -> tuple["SimoModel", "RunRecord"]:
    """BatchNorm re-estimation on the experiment's realignment split (``exp.data["val_realign"]``): the
    running statistics of the heads' BatchNorm layers recomputed on the merged encoder's features, in
    batches of ``batch_size`` (default: the profile's), forward passes only
    (:func:`simo_lite.realign.bn_reestimate`; its record has ``steps=0``)."""
    from .realign import bn_reestimate
    return bn_reestimate(model, exp.data["val_realign"], exp.tasks, batch_size=batch_size or exp.profile.batch_size,
                         device=exp.device)


register_fix("head", head_realignment, options=("steps", "cached"), label="head realign")
register_fix("repr", lambda exp, model, rank=None, steps=None: adapter_realignment(exp, model, kind="block",
                                                                                   rank=rank, steps=steps),
             options=("rank", "steps"), label="block adapters")
register_fix("lora", lambda exp, model, rank=None, steps=None: adapter_realignment(exp, model, kind="lora",
                                                                                   rank=rank, steps=steps),
             options=("rank", "steps"), label="PEFT LoRA")
register_fix("bn", bn_reestimation, options=("batch_size",), label="BN re-estimation", trains=False)
