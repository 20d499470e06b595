"""The rows of the results table: (method, fix) pairs, their ids and labels, and the baselines.

A row is a :class:`RowSpec`: ``method`` names a baseline (:data:`BASELINES`: "experts", "mtl",
"tall") or a single-encoder merge method (``merging.MERGE_METHODS``), ``fix`` a fix
(``fixes.FIXES``) or None. Its **id**, used in stored JSON, file names and tables, is derived from
the pair and never parsed back::

    RowSpec("ta", "head").id == "ta+head"        RowSpec("ta").id == "ta"       RowSpec("mtl").id == "mtl"

:func:`row_spec` resolves an id, a ``(method, fix)`` tuple or a RowSpec to the RowSpec (an id is
looked up among the rows the registries define), :func:`row_label` names it for documents. A merge
method or fix registered from a notebook adds rows without any edit here.

=============  =================================================================================
baseline       what the row reports
=============  =================================================================================
experts        each expert on its own task (the reference of every normalised number)
mtl            joint multi-task fine-tuning of one encoder with all heads
tall           TALL masks: one masked encoder per task, so T encoder passes (not one SIMO model)
coefficients   per-task, per-layer-group merging coefficients learned on the validation split
               (paper Fig. 2, ``Experiment.layer_coefficients``), the merge
               θ₀ + Σ_t λ[t, g(k)] τ_t[k] (``merging.apply_layer_coefficients``) with the experts'
               heads on test; its cost is the coefficient-learning steps
=============  =================================================================================

Beyond the paper's Table 1, :data:`TABLE_ROWS` has the rows of its mechanism study, which separate the
causes of the merged model's loss: BatchNorm re-estimation only (``ta+bn``, ``ties+bn``: feature
statistics), head realignment of the pretrained encoder (``zeroshot+head``: what the heads alone
recover without any task vector), TIES at k = 1.0 (``ties_k1``, ``ties_k1+head``: the authors' code)
beside the paper's k, and the learned layer coefficients (``coefficients``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import fixes as fx
from . import merging
from .registry import Registry

__all__ = ["RowSpec", "Baseline", "BASELINES", "register_baseline", "TABLE_ROWS", "ROWS", "row_spec", "row_label"]


@dataclass(frozen=True)
class RowSpec:
    """One results-table row: ``method`` (a baseline in :data:`BASELINES` or a merge method in
    ``merging.MERGE_METHODS``) and ``fix`` (a name in ``fixes.FIXES``, or None; baselines take none).

    ``label``: how ``docs/results.md`` names it; empty: derived from the registries (:func:`row_label`)."""
    method: str
    fix: str | None = None
    label: str = ""

    @property
    def id(self) -> str:
        """The row's id in stored JSON and tables: ``"ta"``, ``"ta+head"``."""
        return self.method if self.fix is None else f"{self.method}+{self.fix}"


@dataclass(frozen=True)
class Baseline:
    """A row that is not a single merged encoder (the experts, joint MTL, TALL masks).

    Attributes:
        name: registry key and row id.
        compute: ``compute(experiment) -> (test metrics {task: metric}, RunRecord or None (nothing
            trained), extra fields of the row)``.
        label: how documents name it.
        upstream: ``upstream(experiment) -> {name: key}``: the artifacts the row depends on beyond the
            data, the foundation and the experts (part of the row's store key).
    """
    name: str
    compute: Callable[..., tuple]
    label: str = ""
    upstream: Callable[..., dict] | None = None


BASELINES: Registry[Baseline] = Registry("baseline row")


def register_baseline(name: str, compute: Callable[..., tuple], *, label: str = "",
                      upstream: Callable[..., dict] | None = None, replace: bool = False) -> Baseline:
    """Add a baseline row to :data:`BASELINES` (its id is ``name``)."""
    return BASELINES.register(name, Baseline(name, compute, label or name, upstream), replace=replace)


def _experts(exp) -> tuple:
    from .training import RunRecord
    cost = RunRecord(name="experts")
    for t in exp.tasks:
        cost.add(exp.expert(t)[1])
    return exp.expert_metrics(), cost, {"probe": {t: exp.expert(t)[1].metrics["probe"][t] for t in exp.tasks}}


def _mtl(exp) -> tuple:
    rec = exp.mtl()[1]
    return rec.metrics["test"], rec, {}


MTL_LONG = 4             # the "mtl4x" row: joint MTL with 4 times the matched fine-tuning budget


def _mtl_long(exp) -> tuple:
    rec = exp.mtl(steps_factor=MTL_LONG)[1]
    return rec.metrics["test"], rec, {"steps_factor": MTL_LONG}


def _tall(exp) -> tuple:
    metrics, lam = exp.tall()
    return metrics, None, {"lambda": lam, "note": "one encoder pass per task"}


COEFFICIENT_LR = 1e-2     # of the "coefficients" row's learning (Experiment.layer_coefficients' default)


def _coefficient_steps(exp) -> int:
    return exp.profile.realign_steps // 2


def _coefficients(exp) -> tuple:
    """Learn λ (T, G) on val, merge θ₀ + Σ_t λ[t, g(k)] τ_t[k], evaluate with the experts' heads on test."""
    from .training import RunRecord
    steps = _coefficient_steps(exp)
    coef, groups, losses, wall = exp.learned_coefficients(steps=steps, lr=COEFFICIENT_LR)  # (T, G), (G,), (steps,), s
    n_val = len(exp.data["val"]["image"])
    cost = RunRecord(name="layer-coefficients", steps=steps, samples=steps * min(exp.profile.batch_size, n_val),
                     trainable_params=int(coef.numel()), wall_s=wall)
    state = merging.apply_layer_coefficients(exp.foundation, exp.task_vectors(), coef, groups)
    metrics = exp.evaluate(exp.with_heads(state))
    lam = {t: {g: float(coef[i, j]) for j, g in enumerate(groups)} for i, t in enumerate(exp.tasks)}
    return metrics, cost, {"coefficients": lam, "groups": list(groups),
                           "loss": {"first": losses[0] if losses else None, "last": losses[-1] if losses else None}}


def _coefficients_upstream(exp) -> dict:
    """The learning's settings (steps, lr, split) as an upstream entry; the experts are chained already."""
    from .coefficients import INIT
    from .store import config_hash
    return {"layer-coefficients": config_hash({"steps": _coefficient_steps(exp), "lr": COEFFICIENT_LR,
                                                "split": "val", "init": INIT})}


register_baseline("experts", _experts, label="experts (LP→FT)")
register_baseline("mtl", _mtl, label="joint MTL", upstream=lambda exp: {"mtl": exp.mtl_artifact().key})
register_baseline("mtl4x", _mtl_long, label=f"joint MTL ({MTL_LONG}× steps)",
                  upstream=lambda exp: {"mtl": exp.mtl_artifact(MTL_LONG).key})
register_baseline("tall", _tall, label="TALL masks (T encoder passes)")
register_baseline("coefficients", _coefficients, label="learned layer coefficients (Fig. 2)",
                  upstream=_coefficients_upstream)

# the rows of the results table, in the paper's Table 1 order (+ TALL and the LoRA variant), then the
# mechanism study's baselines
TABLE_ROWS = (RowSpec("experts"), RowSpec("mtl"), RowSpec("mtl4x"), RowSpec("zeroshot", label="zero-shot (α=0)"), RowSpec("ta"),
              RowSpec("ties"), RowSpec("tall"),
              RowSpec("ta", "head", "TA + head realign"), RowSpec("ta", "repr", "TA + block adapters"),
              RowSpec("ta", "lora", "TA + PEFT LoRA"), RowSpec("ties", "head", "TIES + head realign"),
              RowSpec("ties", "repr", "TIES + block adapters"), RowSpec("ties", "lora", "TIES + PEFT LoRA"),
              # the mechanism study: feature statistics, heads alone, TIES's k, learned layer coefficients
              RowSpec("ta", "bn", "TA + BN re-estimation"), RowSpec("ties", "bn", "TIES + BN re-estimation"),
              RowSpec("zeroshot", "head", "α = 0 + head realign"), RowSpec("ties_k1", label="TIES (k = 1.0)"),
              RowSpec("ties_k1", "head", "TIES (k = 1.0) + head realign"), RowSpec("coefficients"))
ROWS = tuple(r.id for r in TABLE_ROWS)


def _single_encoder_methods() -> list[str]:
    return [m for m, s in merging.MERGE_METHODS.items() if not s.per_task]


def _unknown(row, why: str = "") -> ValueError:
    return ValueError(f"unknown row {row!r}{': ' + why if why else ''}; valid: {', '.join(ROWS)}, or a (method, fix) "
                      f"pair: a baseline ({', '.join(BASELINES)}) with fix None, or a merge method "
                      f"({', '.join(_single_encoder_methods())}) with a fix ({', '.join(fx.FIXES)}) or None")


def row_spec(row: RowSpec | tuple[str, str | None] | str) -> RowSpec:
    """The :class:`RowSpec` of ``row``: a RowSpec, a ``(method, fix)`` pair or a row id ("ta+head").

    An id is looked up among the rows the registries define (never split on "+"); the rows of
    :data:`TABLE_ROWS` keep their labels. Raises ``ValueError`` ("unknown row ...") naming the valid rows."""
    if isinstance(row, str):
        ids = {r.id: r for r in TABLE_ROWS}
        for b in BASELINES:
            ids.setdefault(b, RowSpec(b))
        for m in _single_encoder_methods():
            for f in (None, *fx.FIXES):
                ids.setdefault(RowSpec(m, f).id, RowSpec(m, f))
        if row not in ids:
            raise _unknown(row)
        return ids[row]
    if isinstance(row, tuple) and len(row) == 2 and isinstance(row[0], str):
        row = RowSpec(*row)
    if not isinstance(row, RowSpec):
        raise _unknown(row, "expected a row id, a (method, fix) pair or a RowSpec")
    if row.method in BASELINES:
        if row.fix is not None:
            raise _unknown(row.id, f"the baseline {row.method!r} takes no fix")
    elif row.method in merging.MERGE_METHODS:
        if merging.MERGE_METHODS[row.method].per_task:
            raise _unknown(row.id, f"merge method {row.method!r} builds one encoder per task; a row needs one "
                                   f"merged encoder")
        if row.fix is not None and row.fix not in fx.FIXES:
            raise _unknown(row.id, f"unknown fix {row.fix!r}")
    else:
        raise _unknown(row.id, f"{row.method!r} is neither a baseline nor a merge method")
    if not row.label:
        row = next((r for r in TABLE_ROWS if r.id == row.id), row)
    return row


def row_label(row: RowSpec | tuple[str, str | None] | str) -> str:
    """How documents name a row: its own label, else the baseline's or the merge method's label,
    joined with the fix's ("half TA + BN re-estimation")."""
    spec = row_spec(row)
    if spec.label:
        return spec.label
    if spec.method in BASELINES:
        return BASELINES[spec.method].label
    label = merging.MERGE_METHODS[spec.method].label or spec.method
    return label if spec.fix is None else f"{label} + {fx.FIXES[spec.fix].label}"
