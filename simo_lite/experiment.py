"""One experiment = one profile, seed and task set: experts, MTL, merges, fixes, and the results table.

:class:`Experiment` only orchestrates: constructing one loads nothing (the data, the foundation and
their keys are loaded on first use), training lives in :mod:`simo_lite.training`, merging in
:mod:`simo_lite.merging`, fixes in :mod:`simo_lite.fixes`, files in the run directory's store
(:mod:`simo_lite.store`) and table Markdown in :mod:`simo_lite.report`. Models, alpha sweeps and
table rows are store artifacts whose keys chain the keys of their inputs (data -> foundation ->
experts -> merges -> alpha sweeps -> fixes -> rows), so the notebooks can each call what they need,
a later notebook reuses what an earlier one built, and a change anywhere upstream recomputes
everything downstream of it, with the reason logged.

Rows of the results table are (method, fix) pairs (:mod:`simo_lite.rows`): a baseline ("experts",
"mtl", "tall") or a merge method (``merging.MERGE_METHODS``), with an optional fix
(``fixes.FIXES``). A row's id, used in stored JSON and tables, is derived from the pair:
``("ta", "head")`` -> ``"ta+head"``, ``("ta", None)`` -> ``"ta"``. A merge method or fix registered
outside the package gets its rows without any edit here::

    exp = Experiment.from_course(ctx, "nyu3")
    exp.experts()                      # {task: (model, record)}, trained or loaded
    alpha, scores = exp.select_alpha("ta")
    table = exp.results_table()        # the paper's Table 1 format, Markdown + JSON in run_dir/results
    exp.results_table(rows=[("ta", "head"), ("my_merge", None), ("my_merge", "my_fix")], write=False)
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from . import fixes as fx
from . import merging
from . import report
from . import store as st
from .data import DATASETS, DEFAULT_DATASET
from .coefficients import INIT as COEF_INIT
from .coefficients import learn_layer_coefficients
from .foundation import load_foundation
from .metrics import delta_m, normalized_performance
from .models import SimoModel
from .profiles import Profile
from .rows import BASELINES, ROWS, TABLE_ROWS, RowSpec, row_label, row_spec
from .tasks import get_task, get_tasks, lower_is_better
from .training import (RunRecord, build_model, evaluate, expert_artifact, load_data, mtl_artifact, train_expert,
                       train_mtl)

if TYPE_CHECKING:
    from .classroom.course import Course
    from .types import Tasks

__all__ = ["Experiment", "ROWS", "TABLE_ROWS", "RowSpec", "row_spec", "row_label"]

ROW_VERSION = 3        # of the row computation (part of every row's key); 3: alpha grid extended beyond 1.0
ALPHA_VERSION = 3      # of the alpha sweep (part of every sweep's key)
COST_FIELDS = report.COST_FIELDS


# ------------------------------------------------------------------------------------------------
# the experiment
# ------------------------------------------------------------------------------------------------
class Experiment:
    """Experts, MTL, merges, fixes and the results table of one profile, seed and task set.

    Nothing is loaded or trained when it is constructed: :attr:`data`, :attr:`foundation` and their
    keys load on first use, every model when first asked for (from the run directory's store when
    it holds it)."""

    def __init__(self, profile: Profile, tasks="nyu3", seed: int = 0, device="cpu", run_dir="runs/exp",
                 progress: bool = False, ties_k: float = 0.2, adapter_rank: int = 16, realign_samples: int | None = None):
        self.profile, self.seed, self.device, self.progress = profile, seed, torch.device(device), progress
        self.tasks = get_tasks(tasks)
        labelled = DATASETS[profile.dataset].tasks
        missing = [t for t in self.tasks if t not in labelled]
        if missing:
            raise ValueError(f"dataset {profile.dataset!r} has no labels for {missing}; its tasks: {', '.join(labelled)}")
        if realign_samples is not None and not 1 <= realign_samples <= profile.n_val:
            raise ValueError(f"realign_samples must be in 1..{profile.n_val} (the val split), got {realign_samples}")
        self.realign_samples = realign_samples
        self.run_dir = Path(run_dir)
        self.store = st.Store(self.run_dir)
        self.ties_k, self.adapter_rank = ties_k, adapter_rank
        self.lower = lower_is_better(self.tasks)
        self._data = self._data_key = None
        self._foundation = self._foundation_hash = self._foundation_key = None
        self._experts: dict = {}
        self._alphas: dict = {}
        self._tvs: dict = {}

    @classmethod
    def from_course(cls, ctx: Course, tasks: Tasks = "nyu3", **kw: Any) -> "Experiment":
        """The experiment of a notebook's :class:`~simo_lite.course.Course` ``ctx`` (its profile, seed, device,
        run directory and progress setting) on ``tasks``; ``kw``: the other constructor arguments
        (``ties_k``, ``adapter_rank``, ``realign_samples``)."""
        return cls(ctx.profile, tasks, ctx.seed, ctx.device, ctx.run_dir, ctx.progress, **kw)

    # -- lazily loaded inputs ----------------------------------------------------------------------
    @property
    def data(self) -> dict:
        """{split: {key: tensor}}: train, val, test and ``val_realign`` (the first ``realign_samples``
        val images, or all of them), loaded on first use."""
        if self._data is None:
            data = load_data(self.profile, self.seed, progress=self.progress)
            key = st.data_key(data)                      # train / val / test tensors (before val_realign)
            n = self.realign_samples
            data["val_realign"] = data["val"] if n is None else st.first_rows(data["val"], n)
            self._data, self._data_key = data, key
        return self._data

    @property
    def data_key(self) -> str:
        """The store key of :attr:`data`."""
        if self._data_key is None:
            self.data
        return self._data_key

    def _load_foundation(self) -> None:
        if self._foundation is None:
            state, h = load_foundation(self.profile, self.run_dir, self.seed, self.device, self.progress,
                                       data=self.data)
            self._foundation_key = st.foundation_key(h, state)
            self._foundation, self._foundation_hash = state, h

    @property
    def foundation(self) -> dict:
        """The foundation encoder's state dict (theta_0), loaded (or pretrained) on first use."""
        self._load_foundation()
        return self._foundation

    @property
    def foundation_hash(self) -> str:
        """The config hash of :attr:`foundation` (:func:`simo_lite.foundation.load_foundation`'s), loaded on
        first use."""
        self._load_foundation()
        return self._foundation_hash

    @property
    def foundation_key(self) -> str:
        """The store key of :attr:`foundation` (:func:`simo_lite.store.foundation_key`: config hash + weights)."""
        self._load_foundation()
        return self._foundation_key

    # -- experts and baselines -----------------------------------------------------------------
    def expert(self, task: str) -> tuple[SimoModel, RunRecord]:
        """``task``'s expert (the foundation fine-tuned on ``task``) and its training record; trained, or
        loaded from the store, on first use."""
        if task not in self._experts:
            self._experts[task] = train_expert(task, self.foundation, self.foundation_key, self.profile, self.data,
                                               self.run_dir, seed=self.seed, device=self.device,
                                               progress=self.progress, data_key=self.data_key)
        return self._experts[task]

    def expert_artifact(self, task: str) -> st.Artifact:
        """The store artifact of ``task``'s expert (its key), without training it."""
        return expert_artifact(task, self.foundation_key, self.profile, self.seed, self.data_key)

    def mtl_artifact(self, steps_factor: int = 1) -> st.Artifact:
        """The store artifact of the joint MTL model on :attr:`tasks` (its key), without training it;
        ``steps_factor``: of :meth:`mtl`."""
        return mtl_artifact(self.tasks, self.foundation_key, self._mtl_profile(steps_factor), self.seed, self.data_key)

    def _mtl_profile(self, steps_factor: int) -> Profile:
        if steps_factor < 1:
            raise ValueError(f"steps_factor must be >= 1, got {steps_factor}")
        if steps_factor == 1:
            return self.profile
        from .profiles import get
        return get(self.profile, mtl_finetune_steps=steps_factor * self.profile.mtl_finetune_steps)

    def _upstream(self, tasks=None) -> dict[str, str]:
        """Keys every derived artifact depends on: the data, the foundation and each expert."""
        tasks = get_tasks(tasks) if tasks is not None else self.tasks
        return {"data": self.data_key, "foundation": self.foundation_key,
                **{f"expert-{t}": self.expert_artifact(t).key for t in tasks}}

    def experts(self) -> dict[str, tuple[SimoModel, RunRecord]]:
        """Every task's expert and training record, ``{task: (model, record)}`` (:meth:`expert`)."""
        return {t: self.expert(t) for t in self.tasks}

    def expert_metrics(self, split: str = "test") -> dict[str, float]:
        """Each expert's metric on its own task (the baseline of every normalised number)."""
        return {t: self.expert(t)[1].metrics[split][t] for t in self.tasks}

    def mtl(self, steps_factor: int = 1) -> tuple[SimoModel, RunRecord]:
        """The joint multi-task model on :attr:`tasks` (one encoder, every head) and its training record;
        trained, or loaded from the store. ``steps_factor``: fine-tune ``steps_factor`` times the profile's
        ``mtl_finetune_steps`` (the paper's MTL trains several times an expert's budget: the "MTL 4x" row)."""
        return train_mtl(self.tasks, self.foundation, self.foundation_key, self._mtl_profile(steps_factor), self.data,
                         self.run_dir, seed=self.seed, device=self.device, progress=self.progress,
                         data_key=self.data_key)

    def task_vectors(self, tasks: Tasks | None = None) -> dict[str, dict]:
        """``{task: expert encoder state - foundation state}`` (:func:`simo_lite.merging.task_vectors`) for
        ``tasks`` (default: the experiment's), computed once per task."""
        tasks = get_tasks(tasks) if tasks is not None else self.tasks
        for t in tasks:
            if t not in self._tvs:
                self._tvs.update(merging.task_vectors(self.foundation, {t: self.expert(t)[0].encoder.state_dict()}))
        return {t: self._tvs[t] for t in tasks}

    def with_heads(self, encoder_state: dict, tasks: Tasks | None = None) -> SimoModel:
        """A model with ``encoder_state`` and copies of the experts' heads (heads are never merged)."""
        tasks = get_tasks(tasks) if tasks is not None else self.tasks
        heads = {t: self.expert(t)[0].heads[t].state_dict() for t in tasks}
        return build_model(encoder_state, self.profile, tasks, head_states=heads)

    # -- scoring ------------------------------------------------------------------------------
    def evaluate(self, model: SimoModel, split: str = "test", tasks: Tasks | None = None) -> dict[str, float]:
        """``{task: metric}`` of ``model`` on the split ``split`` of :attr:`data`, for ``tasks`` (default: the
        model's)."""
        return evaluate(model, self.data[split], tasks or model.tasks, device=self.device)

    def score(self, metrics: dict, split: str = "test", kind: str = "ratio") -> float:
        """Δm of ``metrics`` (``{task: metric}`` on ``split``) against the experts' metrics on the same split
        (:func:`simo_lite.metrics.delta_m`, ``kind`` "ratio" or "relative")."""
        base = self.expert_metrics(split)
        return delta_m(metrics, {t: base[t] for t in metrics}, {t: self.lower[t] for t in metrics}, kind=kind)

    def normalized(self, metrics: dict, split: str = "test") -> dict[str, float]:
        """``{task: performance normalised by the expert's}`` of ``metrics`` (``{task: metric}`` on ``split``;
        :func:`simo_lite.metrics.normalized_performance`)."""
        base = self.expert_metrics(split)
        return normalized_performance(metrics, {t: base[t] for t in metrics}, {t: self.lower[t] for t in metrics})

    # -- merging ------------------------------------------------------------------------------
    def merge(self, method: str, alpha: float, tasks: Tasks | None = None, **kw: Any) -> dict:
        """The merged encoder's state dict: the foundation plus the task vectors of ``tasks`` (default: the
        experiment's) merged by ``method`` at ``alpha`` (:func:`simo_lite.merging.merge`; ``kw``: the
        method's options, ``ties_k`` defaulting to the experiment's)."""
        kw.setdefault("ties_k", self.ties_k)
        return merging.merge(method, self.foundation, self.task_vectors(tasks), alpha=alpha, seed=self.seed, **kw)

    def alpha_sweep(self, method: str = "ta", grid: Sequence[float] = merging.ALPHA_GRID, tasks: Tasks | None = None,
                    **kw: Any) -> dict[float, dict]:
        """Validation metrics of the merged model at every alpha: {alpha: {task: metric}}.

        One merge and one evaluation on the validation split per grid point; cached in memory and
        in ``run_dir/alphas`` (a later notebook reuses an earlier notebook's sweep) under a key that
        chains the experts' keys (:meth:`alpha_artifact`); a stale or damaged file is recomputed."""
        tasks = get_tasks(tasks) if tasks is not None else self.tasks
        kw.setdefault("ties_k", self.ties_k)
        key = json.dumps([method, tasks, [float(a) for a in grid], kw], sort_keys=True)
        if key in self._alphas:
            return self._alphas[key]
        art = self.alpha_artifact(method, grid, tasks, **kw)
        path = self.store.path("alphas", art)
        cached = self.store.read_json(path, art, require=("val_metrics",))
        if cached is not None:
            try:
                self._alphas[key] = {float(a): {t: float(m[t]) for t in tasks}
                                     for a, m in cached["val_metrics"].items()}
                if set(self._alphas[key]) == {float(a) for a in grid}:
                    return self._alphas[key]
                self.store.miss(art, f"corrupt file alphas/{path.name}: its alphas are not the grid's")
            except (AttributeError, KeyError, TypeError, ValueError) as e:
                self.store.miss(art, f"corrupt file alphas/{path.name}: bad val_metrics ({type(e).__name__}: {e})")
            self._alphas.pop(key, None)
        tvs = self.task_vectors(tasks)
        sweep = {}
        for alpha in grid:
            model = self.with_heads(merging.merge(method, self.foundation, tvs, alpha=alpha, seed=self.seed, **kw),
                                    tasks)
            sweep[float(alpha)] = self.evaluate(model, "val", tasks)
        self._alphas[key] = sweep
        self.store.write_json(path, {"method": method, "tasks": list(tasks), "kw": kw, "val_metrics": sweep}, art)
        return sweep

    def alpha_artifact(self, method: str = "ta", grid: Sequence[float] = merging.ALPHA_GRID,
                       tasks: Tasks | None = None, **kw: Any) -> st.Artifact:
        """The store artifact of an alpha sweep: method, grid, settings + data, foundation, experts.

        A one-alpha sweep (a point of :meth:`select_alpha`'s grid extension) is named apart,
        ``<tasks>-<method>_alpha<alpha, "." as "p">`` (``seg+depth-ta_alpha1p1``), so it is not taken for a
        changed version of the grid's sweep. The profile enters without its realignment fields (a sweep
        evaluates merges, it never realigns), so a new realignment budget reuses the sweeps."""
        tasks = get_tasks(tasks) if tasks is not None else self.tasks
        kw.setdefault("ties_k", self.ties_k)
        cfg = {"method": method, "tasks": list(tasks), "grid": [float(a) for a in grid], "kw": kw,
               "seed": self.seed, "profile": self.profile.training_dict(), "version": ALPHA_VERSION}
        name = f"{'+'.join(tasks)}-{method}" + (f"_alpha{float(grid[0]):g}".replace(".", "p") if len(grid) == 1 else "")
        return st.Artifact("alpha", name, cfg, self._upstream(tasks))

    def merge_artifact(self, method: str) -> st.Artifact:
        """The merged model of :meth:`merged_model`: ``method`` at the alpha its default sweep selects (the
        grid, extended up to ``merging.ALPHA_MAX`` while the best is on its edge: each extension point is
        a one-alpha sweep of the same inputs, so the default sweep's key and ``alpha_max`` determine it)."""
        return st.Artifact("merge", f"{'+'.join(self.tasks)}-{method}",
                           {"method": method, "ties_k": self.ties_k, "seed": self.seed,
                            "alpha_max": merging.ALPHA_MAX, "alpha_step": merging.ALPHA_STEP},
                           {**self._upstream(), f"alpha-{method}": self.alpha_artifact(method).key})

    def select_alpha(self, method: str = "ta", grid: Sequence[float] = merging.ALPHA_GRID, tasks: Tasks | None = None,
                     alpha_max: float | None = merging.ALPHA_MAX, **kw: Any) -> tuple[float, dict]:
        """Best alpha on the validation split (ratio Δm against the experts' validation metrics).

        When the best alpha is the grid's largest, the grid is extended in steps of ``merging.ALPHA_STEP``
        (0.1) until the best is no longer on the edge or ``alpha_max`` (default ``merging.ALPHA_MAX``,
        2.0) is reached; ``alpha_max=None`` keeps to ``grid``. Returns (alpha, {alpha: validation Δm}
        over every alpha swept, the grid's then the extension's). The grid's sweep is
        :meth:`alpha_sweep` (cached), each extension point a one-alpha sweep of its own (cached under
        its own key)."""
        sweep = dict(self.alpha_sweep(method, grid, tasks, **kw))

        def score(a: float) -> float:
            if float(a) not in sweep:                                   # an extension point
                sweep.update(self.alpha_sweep(method, (float(a),), tasks, **kw))
            return self.score(sweep[float(a)], split="val")

        return merging.select_alpha(score, grid, alpha_max=alpha_max)

    def merged_model(self, method: str) -> tuple[SimoModel, float, dict]:
        """The merged encoder at its validation-selected alpha, with the experts' heads."""
        alpha, scores = self.select_alpha(method)
        return self.with_heads(self.merge(method, alpha)), alpha, scores

    def tall(self, lams: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0)) -> tuple[dict[str, float], dict[str, float]]:
        """TALL masks with lambda chosen per task on validation; one encoder per task (T passes).

        Returns (test metrics {task: metric}, chosen lambda per task)."""
        tvs = self.task_vectors()
        chosen, metrics = {}, {}
        for t in self.tasks:
            best = None
            for lam in lams:
                model = self.with_heads(merging.tall_merged(self.foundation, tvs, t, lam), (t,))
                val = self.normalized(self.evaluate(model, "val", (t,)), "val")[t]
                if best is None or val > best[0]:
                    best = (val, lam, model)
            chosen[t] = best[1]
            metrics[t] = self.evaluate(best[2], "test", (t,))[t]
        return metrics, chosen

    # -- predictions --------------------------------------------------------------------------
    def method_predictions(self, merge_method: str, fixes: Sequence[str] = ("head", "repr"), index: int = 0,
                           split: str = "test") -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
        """Every method on one image: ``(image, rows)``, the ``index``-th image of ``split`` ((3, H, W), on
        the CPU) and ``rows = {row: {task: map}}`` in label space (``Task.predict``, e.g. (H, W) class ids,
        (1, H, W) depth, (3, H, W) normals), in this order: ``"target"`` (the split's labels),
        ``"experts"`` (each task by its own expert), ``"MTL"``, ``"<merge_method> (α* = a)"`` (the merge at
        its validation-selected alpha, with the experts' heads) and ``"<merge_method>+<fix>"`` for each
        of ``fixes`` (names in ``fixes.FIXES``) applied to that merge. Every model comes from the store
        when it is there (:meth:`expert`, :meth:`mtl`, :meth:`fix`). The rows of
        :func:`simo_lite.plots.methods_prediction_grid`."""
        data = self.data[split]
        image = data["image"][index:index + 1].to(self.device)                  # (1, 3, H, W)

        def predict(model: SimoModel, tasks: Sequence[str] = self.tasks) -> dict[str, torch.Tensor]:
            with torch.no_grad():
                out = model.to(self.device).eval()(image)
            return {t: get_task(t).predict(out[t])[0].cpu() for t in tasks}

        merged, alpha, _ = self.merged_model(merge_method)
        rows = {"target": {t: data[t][index] for t in self.tasks},
                "experts": {t: predict(self.expert(t)[0], (t,))[t] for t in self.tasks},
                "MTL": predict(self.mtl()[0]),
                f"{merge_method} (α* = {alpha:g})": predict(merged)}
        for fix in fixes:
            rows[f"{merge_method}+{fix}"] = predict(self.fix(fix, merged)[0])
        return data["image"][index].cpu(), rows

    # -- diagnostics --------------------------------------------------------------------------
    def feature_drift(self, encoder_state: dict, split: str = "val", n: int = 128) -> list[dict]:
        """Rows (task, layer, mean_shift, std_ratio, norm_ratio, cka, cosine): the features of
        ``encoder_state`` against each expert's own features, on the first ``n`` images of ``split``."""
        from .diagnostics import feature_drift
        from .realign import cache_features
        images = self.data[split]["image"][:n]
        merged = cache_features(self.with_heads(encoder_state), images, device=self.device)
        rows = []
        for t in self.tasks:
            ref = cache_features(self.expert(t)[0], images, device=self.device)
            rows += [{"task": t, **r} for r in feature_drift(ref, merged)]
        return rows

    def head_swap(self, extra: dict | None = None, split: str = "val") -> dict[str, dict[str, float]]:
        """Metric of every expert encoder (and ``extra`` {name: encoder state}) with every expert head."""
        from .diagnostics import head_swap_matrix
        encoders = {f"expert-{t}": self.expert(t)[0].encoder.state_dict() for t in self.tasks}
        encoders.update(extra or {})
        return head_swap_matrix(encoders, self.tasks,
                                lambda state: self.evaluate(self.with_heads(state), split))

    def merge_combinations(self, method: str = "ta", alpha: float | None = None, split: str = "test") -> dict:
        """Paper Fig. 1: normalised performance of every subset of tasks merged with ``method``.

        ``alpha`` None: chosen on validation for each subset (the paper's protocol); a single task
        is then its expert (theta_0 + 1 * tau_t = theta_t, 100% by definition), not swept. The full
        set reuses the sweep of :meth:`select_alpha` when an earlier call made it."""
        from .diagnostics import merge_combinations

        def score(subset):
            if alpha is None and len(subset) == 1:               # the expert itself
                t = subset[0]
                return self.normalized({t: self.expert_metrics(split)[t]}, split)
            a = alpha if alpha is not None else self.select_alpha(method, tasks=subset)[0]
            model = self.with_heads(self.merge(method, a, tasks=subset), subset)
            return self.normalized(self.evaluate(model, split, subset), split)

        return merge_combinations(self.tasks, score)

    def task_relationships(self, lams: Sequence[float] = tuple(round(0.1 * i, 1) for i in range(16)),
                           split: str = "val") -> dict:
        """Paper Figs. 3/5/6: theta_0 + lam * tau_primary with every head attached, for each primary task.

        Returns {primary: {lam: {task: normalised performance}}}.

        At lam = 0 the encoder is theta_0 whichever task is primary, so that point is evaluated once and
        every primary gets (a copy of) the same scores: T * (len(lams) - 1) + 1 evaluations when 0 is in ``lams``."""
        out, zero = {}, None
        for primary in self.tasks:
            tv = self.task_vectors((primary,))
            out[primary] = {}
            for lam in lams:
                if float(lam) == 0.0 and zero is not None:
                    out[primary][float(lam)] = dict(zero)
                    continue
                model = self.with_heads(merging.task_arithmetic(self.foundation, tv, lam))
                out[primary][float(lam)] = self.normalized(self.evaluate(model, split), split)
                if float(lam) == 0.0:
                    zero = dict(out[primary][float(lam)])
        return out

    def layer_coefficients(self, steps: int | None = None, lr: float = 1e-2) -> tuple[torch.Tensor, list, list]:
        """Paper Fig. 2: per-task, per-layer merging coefficients learned on the validation split:
        (coefficients λ (T, G) in [0, 1], the G layer-group names, the loss of every step).
        ``steps`` default: half the profile's ``realign_steps``. Stored and shipped like a realignment
        (:meth:`learned_coefficients`)."""
        return self.learned_coefficients(steps, lr)[:3]

    def coefficients_artifact(self, steps: int | None = None, lr: float = 1e-2) -> st.Artifact:
        """The store artifact of :meth:`layer_coefficients` (``realign/coefficients-<key>``): its key chains the
        data, the foundation and every expert, and holds the learning's settings."""
        return st.Artifact("realign", "coefficients",
                           {"tasks": list(self.tasks), "steps": steps or self.profile.realign_steps // 2, "lr": lr,
                            "batch_size": self.profile.batch_size, "seed": self.seed, "split": "val",
                            "init": COEF_INIT,
                            "version": 1}, self._upstream())

    def coefficients_path(self, steps: int | None = None, lr: float = 1e-2) -> Path:
        """Where :meth:`learned_coefficients` stores them in the run: ``realign/coefficients-<key>.safetensors``
        (beside its ``.json`` record)."""
        return self.store.path("realign", self.coefficients_artifact(steps, lr), ".safetensors")

    def learned_coefficients(self, steps: int | None = None, lr: float = 1e-2
                             ) -> tuple[torch.Tensor, list, list, float]:
        """:meth:`layer_coefficients` with the learning's wall-clock in seconds (measured when they were first
        learned). The result is stored in the run's ``realign/`` folder (``coefficients-<key>.safetensors``
        beside its ``.json`` record: groups, losses, seconds); a stored or shipped one of the same key
        (``data/models-<profile>/realign``, :mod:`simo_lite.shipped`) is loaded instead of learned again."""
        from .training import shipped_realign_dir
        art = self.coefficients_artifact(steps, lr)
        path = self.coefficients_path(steps, lr)
        stored = (st.adopt_shipped(path, shipped_realign_dir(self.profile),
                                   lambda store, src: _read_coefficients(store, src, art), "layer coefficients")
                  or _read_coefficients(self.store, path, art))
        if stored is not None:
            return stored
        t0 = time.perf_counter()
        coef, groups, losses = learn_layer_coefficients(self.foundation, self.task_vectors(),
                                                        self.with_heads(self.foundation), self.data["val"],
                                                        steps=art.config["steps"], lr=lr,
                                                        batch_size=self.profile.batch_size, seed=self.seed,
                                                        device=self.device, progress=self.progress)
        wall = time.perf_counter() - t0
        self.store.write_json(path.with_suffix(".json"), {"groups": list(groups), "losses": list(losses),
                                                          "wall_s": wall}, art)
        self.store.save_tensors(path, {"coefficients": coef.contiguous()}, art)
        return coef, list(groups), list(losses), wall

    # -- fixes --------------------------------------------------------------------------------
    def fix(self, name: str, model: SimoModel, **options: Any) -> tuple[SimoModel, RunRecord]:
        """Apply the fix ``name`` (a name in ``fixes.FIXES``) to ``model``: (fixed copy, its cost)."""
        spec = fx.FIXES[name]
        unknown = sorted(set(options) - set(spec.options))
        if unknown:
            raise ValueError(f"fix {name!r}: unknown option(s) {unknown}; it takes: {', '.join(spec.options) or 'none'}")
        return spec.apply(self, model, **options)

    def head_realigned(self, model: SimoModel, cached: bool = True,
                       steps: int | None = None) -> tuple[SimoModel, RunRecord]:
        """Head realignment of ``model`` on the realignment split (the "head" fix)."""
        return self.fix("head", model, cached=cached, steps=steps)

    def repr_realigned(self, model: SimoModel, kind: str = "block", rank: int | None = None,
                       steps: int | None = None) -> tuple[SimoModel, RunRecord]:
        """Representation realignment of ``model`` on the realignment split (the "repr" fix for kind
        "block", "lora" for kind "lora"), cached in the store's ``realign/`` folder under a key that
        chains ``model``'s weights (content fingerprint) and the split's key."""
        return fx.adapter_realignment(self, model, kind=kind, rank=rank, steps=steps)

    # -- the table ----------------------------------------------------------------------------
    def row_artifact(self, row: str | tuple[str, str | None] | RowSpec) -> st.Artifact:
        """The store artifact of table row ``row`` (an id, a (method, fix) pair or a RowSpec): its settings
        + the keys of everything it uses (data, foundation, every expert; a baseline's own inputs, e.g.
        the MTL model for "mtl"; the merged model for rows of a merge method that sweeps alpha)."""
        spec = row_spec(row)
        cfg = {"row": spec.id, "tasks": list(self.tasks), "profile": self.profile.to_dict(), "seed": self.seed,
               "ties_k": self.ties_k, "rank": self.adapter_rank, "n_realign": len(self.data["val_realign"]["image"]),
               "version": ROW_VERSION}
        up = self._upstream()
        if spec.method in BASELINES:
            baseline = BASELINES[spec.method]
            up.update(baseline.upstream(self) if baseline.upstream else {})
        elif merging.MERGE_METHODS[spec.method].uses_alpha:
            up[f"merge-{spec.method}"] = self.merge_artifact(spec.method).key
        return st.Artifact("row", f"{'+'.join(self.tasks)}-{spec.id}", cfg, up)

    def row_merge(self, method: str) -> tuple[SimoModel, dict]:
        """The merged model a table row of merge method ``method`` starts from, with the experts' heads: at
        the alpha chosen on validation (extra fields ``{"alpha", "val_scores"}``), or, for a method that
        takes no alpha, merged once at 1.0 (no extra fields)."""
        if merging.MERGE_METHODS[method].uses_alpha:
            model, alpha, scores = self.merged_model(method)
            return model, {"alpha": alpha, "val_scores": scores}
        return self.with_heads(self.merge(method, 1.0)), {}

    def _compute_row(self, spec: RowSpec) -> tuple[dict, RunRecord, dict]:
        """(test metrics, cost, extra fields) of a row: a baseline's own computation, or the merge (at the
        alpha chosen on validation; a method that takes no alpha once, at 1.0) then the fix, if any."""
        if spec.method in BASELINES:
            metrics, cost, extra = BASELINES[spec.method].compute(self)
            return metrics, cost or RunRecord(name=spec.id), extra
        model, extra = self.row_merge(spec.method)
        cost = RunRecord(name=spec.id)
        if spec.fix is not None:
            model, cost = self.fix(spec.fix, model)
        return self.evaluate(model), cost, extra

    def row(self, row: str | tuple[str, str | None] | RowSpec) -> dict:
        """One results-table row (cached as JSON): test metrics, normalised %, Δm both forms, cost.

        ``row``: an id ("ta+head"), a (method, fix) pair (``("ta", "head")``, ``("ta", None)``) or a
        :class:`RowSpec`. A missing, stale (another key) or damaged row file is recomputed (the reason
        is logged)."""
        spec = row_spec(row)
        art = self.row_artifact(spec)
        path = self.store.path("rows", art)
        cached = self.store.read_json(path, art, require=("row", "metrics", "normalized", "delta_m_ratio",
                                                            "delta_m_relative", "cost"))
        if cached is not None:
            return cached
        t0 = time.perf_counter()
        metrics, cost, extra = self._compute_row(spec)
        record = report.row_record(self, spec.id, metrics, cost, tasks=self.tasks,
                                   wall_s_total=time.perf_counter() - t0, **extra)
        self.store.write_json(path, record, art)
        return json.loads(json.dumps(record, default=float))     # what a later read returns

    def results_table(self, rows: Sequence[str | tuple[str, str | None] | RowSpec] = ROWS,
                      write: bool = True) -> list[dict]:
        """Rows of the results table (ids, (method, fix) pairs or RowSpecs); writes
        results/table-<tasks>.{md,json} to the run directory."""
        table = [self.row(r) for r in rows]
        if write:
            out = self.store.results_dir()
            name = "table-" + "+".join(self.tasks)
            st.write_json(out / f"{name}.json", table)
            st.write_text(out / f"{name}.md", self.to_markdown(table))
        return table

    def training_table(self, write: bool = True) -> dict:
        """Probe vs expert vs MTL on each task (test split) with every model's training cost.

        Writes results/training-<tasks>.{md,json}. Trains what is missing."""
        mtl_model, mtl_rec = self.mtl()
        rows = []
        for t in self.tasks:
            rec = self.expert(t)[1]
            rows.append({"task": t, "metric": get_task(t).metric_name, "lower_is_better": self.lower[t],
                         "probe": rec.metrics["probe"][t], "expert": rec.metrics["test"][t],
                         "mtl": mtl_rec.metrics["test"][t], "cost": report.cost_of(rec)})
        out = {"tasks": list(self.tasks), "profile": self.profile.name, "seed": self.seed, "rows": rows,
               "mtl_cost": report.cost_of(mtl_rec)}
        if write:
            res = self.store.results_dir()
            name = "training-" + "+".join(self.tasks)
            st.write_text(res / f"{name}.md", report.training_markdown(out))
            st.write_json(res / f"{name}.json", out)
        return out

    def to_markdown(self, table: list[dict], labels: bool = False) -> str:
        """The results table ``table`` (row records) in Markdown with its heading: rows named by id, or
        by :func:`row_label` with ``labels`` (:func:`simo_lite.report.results_markdown`)."""
        return (report.results_title(self.tasks, self.profile.name, self.seed) + "\n\n"
                + report.results_markdown(table, self.tasks, label=report.row_label if labels else None) + "\n")


def _read_coefficients(store: st.Store, path: Path, art: st.Artifact) -> tuple[torch.Tensor, list, list, float] | None:
    """Stored layer coefficients of ``art`` at ``path``: (λ (T, G), groups, losses, wall-clock s), or None (a
    logged miss: missing, another key, or shapes that disagree with the record)."""
    tensors = store.load_tensors(path, art, quiet=True)
    rec = store.read_json(path.with_suffix(".json"), art, require=("groups", "losses", "wall_s")) \
        if tensors is not None else None
    if rec is None:
        return None
    coef = tensors.get("coefficients")
    if coef is None or tuple(coef.shape) != (len(art.config["tasks"]), len(rec["groups"])) \
            or len(rec["losses"]) != art.config["steps"]:
        store.miss(art, f"corrupt file {path.name}: the coefficients do not match their record")
        return None
    return coef, list(rec["groups"]), [float(x) for x in rec["losses"]], float(rec["wall_s"])


def _parse_args(argv=None):
    """Parse and validate every argument up front: (args, profile, task sets, device, run_dir).

    Invalid values stop with ``error: ...`` naming the valid ones (argparse's exit status 2), before
    any data is rendered or loaded."""
    import argparse

    from . import profiles as P
    from .classroom.executor import EXECUTORS
    from .tasks import TASK_SETS, TASKS
    ap = argparse.ArgumentParser(prog="python -m simo_lite.experiment",
                                 description="Train what is missing and write the results tables to the run dir")
    ap.add_argument("--profile", default="cpu", choices=sorted(P.PROFILES))
    ap.add_argument("--tasks", nargs="+", default=["nyu3", "taskonomy5"],
                    help=f"task sets ({', '.join(TASK_SETS)}) or comma-separated tasks ({', '.join(TASKS)})")
    ap.add_argument("--seed", type=int, default=None, help="a non-negative integer (default 0)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                    help="several seeds: one run directory per seed (as the course names it) computed through "
                         "--executor, and every table collected in <runs folder>/sweeps/<--name>/")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    ap.add_argument("--run-dir", default=None, help="default: runs/<profile>-<seed> (runs/<profile>-<dataset>-<seed> "
                                                     "for a real dataset), as the course names it")
    ap.add_argument("--dataset", default=DEFAULT_DATASET, choices=P.DATASETS)
    ap.add_argument("--data-dir", default="", help="folder of a real dataset (docs/real-data.md)")
    ap.add_argument("--backbone", default="", help="timm model name of a pretrained ViT (with --weights)")
    ap.add_argument("--weights", default="", help="local weights file of --backbone (nothing is downloaded)")
    ap.add_argument("--runs-root", default=None, help="folder of the run folders (default: $SIMO_LITE_RUNS or runs/)")
    ap.add_argument("--workers", type=int, default=1, help="seeds computed at a time (with --seeds; default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads of each worker (default: the "
                                                              "cores shared between the workers; in this process: "
                                                              "unchanged)")
    ap.add_argument("--executor", default=None, choices=EXECUTORS,
                    help="with --seeds: serial (this process), pool (local worker processes) or submitit (Slurm, "
                         "else submitit's local executor); default: serial for one worker, else pool")
    ap.add_argument("--name", default=None, help="with --seeds: the collection's folder under <runs folder>/sweeps/ "
                                                 "(default: <profile>-<task sets>-seeds-<seeds>)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                    help="a profile field to override, e.g. --set head_realign_steps=1600 (repeatable)")
    ap.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                    help=f"the results-table rows to compute (default: every row: {' '.join(ROWS)})")
    args = ap.parse_args(argv)

    def fail(e) -> None:
        ap.error(" ".join(ln.strip() for ln in str(e).splitlines() if ln.strip()))

    if args.seed is not None and args.seeds is not None:
        ap.error("give --seed or --seeds, not both")
    if args.seed is None:
        args.seed = args.seeds[0] if args.seeds else 0
    if args.seed < 0:
        ap.error(f"--seed must be a non-negative integer, got {args.seed}")
    if args.seeds is not None:
        if any(s < 0 for s in args.seeds):
            ap.error(f"--seeds must be non-negative integers, got {' '.join(map(str, args.seeds))}")
        repeated = [s for i, s in enumerate(args.seeds) if s in args.seeds[:i]]
        if repeated:
            ap.error(f"--seeds lists {repeated[0]} more than once (the same run twice)")
        if args.run_dir:
            ap.error("--run-dir is one run's folder: with --seeds each seed gets its own, named as the course "
                     "names it (runs/<profile>-<seed>); pass --runs-root to put them elsewhere")
    else:
        multi = [flag for flag, given in (("--workers", args.workers != 1), ("--executor", args.executor is not None),
                                          ("--name", args.name is not None)) if given]
        if multi:
            ap.error(f"{', '.join(multi)}: only with several seeds (--seeds)")
    if args.workers < 1:
        ap.error(f"--workers must be a positive integer, got {args.workers}")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads must be a positive integer, got {args.threads}")
    if args.executor == "serial" and args.workers > 1:
        ap.error(f"--workers {args.workers} computes seeds in worker processes: give --executor pool or submitit, "
                 f"not serial")
    if args.name is not None and (not args.name or "/" in args.name or os.sep in args.name
                                  or args.name in (".", "..")):
        ap.error(f"--name must be a folder name (no path), got {args.name!r}")
    overrides = _parse_overrides(args.overrides, ap)
    for r in args.rows or ():
        try:
            row_spec(r)
        except ValueError as e:
            fail(f"--rows: {e}")
    try:
        prof = P.validate(P.get(args.profile, dataset=args.dataset, data_dir=args.data_dir, backbone=args.backbone,
                                weights=args.weights, **overrides))
        from .course import real_data_profile
        prof = real_data_profile(prof)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    if not prof.backbone and any(s % prof.patch_size for s in prof.input_hw):
        ap.error(f"profile {prof.name!r}: image size {prof.input_hw} is not a multiple of patch_size "
                 f"{prof.patch_size}")
    task_sets = []
    for spec in args.tasks:
        try:
            tasks = get_tasks(spec)
        except ValueError as e:
            fail(f"--tasks {spec!r}: {e}")
        labelled = DATASETS[prof.dataset].tasks
        missing = [t for t in tasks if t not in labelled]
        if missing:
            ap.error(f"--tasks {spec!r}: dataset {prof.dataset!r} has no labels for {missing}; its tasks: "
                     f"{', '.join(labelled)}")
        task_sets.append(spec)
    try:
        device = P.resolve_device(args.device)
    except ValueError as e:
        fail(f"--device: {e}")
    from .course import default_run_dir
    root = {"root": Path(args.runs_root).expanduser().absolute()} if args.runs_root else {}
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(prof.name, args.seed, prof.dataset, **root)
    return args, prof, task_sets, device, run_dir


def _parse_overrides(items: Sequence[str], ap) -> dict:
    """``["head_realign_steps=1600", ...]`` -> ``{field: value}``, each value converted to the field's type
    (int, float, str or bool); an unknown field or a bad value stops with argparse's error."""
    import dataclasses

    from .profiles import Profile
    types = {f.name: str(f.type) for f in dataclasses.fields(Profile)}
    out = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or name not in types or name == "name":
            ap.error(f"--set {item!r}: give FIELD=VALUE with FIELD a profile field: "
                     f"{', '.join(n for n in types if n != 'name')}")
        kind = types[name].split("|")[0].strip()
        try:
            out[name] = (int(value) if kind == "int" else float(value) if kind == "float"
                         else {"true": True, "false": False}[value.lower()] if kind == "bool" else value)
        except (ValueError, KeyError):
            ap.error(f"--set {item!r}: {name} takes a {kind}, got {value!r}")
        if kind in ("int", "float") and out[name] < 0:
            ap.error(f"--set {item!r}: {name} must not be negative")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m simo_lite.experiment --profile cpu --tasks nyu3 taskonomy5``: every results table.

    Validates every argument first (see :func:`_parse_args`), seeds torch's global generator with
    ``--seed`` (every stage also seeds its own generators, so results do not depend on it), and
    logs each artifact it recomputes, with the reason (logger ``simo_lite.store``).

    ``--seeds 0 1 2 [--workers N --threads T --executor pool|submitit|serial]``: the same for each seed,
    one run directory per seed (``runs/<profile>-<seed>``) computed through
    :func:`simo_lite.classroom.executor.run_jobs`, then every table of every seed collected in
    ``<runs folder>/sweeps/<--name>/`` (tidy table, mean ± SD across seeds, Δm plot:
    :func:`simo_lite.multiseed.write_collection`); exit status 1 when a seed failed (the others are
    collected)."""
    args, prof, task_sets, device, run_dir = _parse_args(argv)
    from .classroom.executor import pinned_threads
    from .multiseed import run_seed
    extra = "".join(f" --{k.replace('_', '-')} {v}" for k, v in
                    (("dataset", args.dataset), ("data_dir", args.data_dir), ("backbone", args.backbone),
                     ("weights", args.weights)) if v and v != DEFAULT_DATASET)

    extra += "".join(f" --set {o}" for o in args.overrides) + (f" --rows {' '.join(args.rows)}" if args.rows else "")

    def command(seed: int) -> str:
        return (f"python -m simo_lite.experiment --profile {args.profile} --tasks {' '.join(args.tasks)}"
                f" --seed {seed}{extra}")

    if args.seeds is None:
        with pinned_threads(args.threads):
            run_seed(prof, task_sets, args.seed, device, run_dir, command(args.seed), rows=args.rows)
        return
    from .course import default_run_dir, run_label
    from .multiseed import run_seeds
    root = Path(args.runs_root).expanduser().absolute() if args.runs_root else None
    run = run_label(prof.name, args.seeds[0], prof.dataset)
    name = args.name or "".join(c if c.isalnum() or c in "._+,-" else "_" for c in
                                f"{run}-{'+'.join(task_sets)}-seeds-{'-'.join(map(str, args.seeds))}")
    failed = run_seeds(prof, task_sets, args.seeds, str(device),
                       {s: default_run_dir(prof.name, s, prof.dataset, root=root) for s in args.seeds},
                       {s: command(s) for s in args.seeds}, run=run, name=name, root=root,
                       executor=args.executor or ("pool" if args.workers > 1 else "serial"), workers=args.workers,
                       threads=args.threads, rows=args.rows)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
