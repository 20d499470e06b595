"""One experiment = one profile, seed and task set: experts, MTL, merges, fixes, and the results table.

Every expensive piece is cached in the run directory (models by config hash, table rows as JSON),
so the notebooks can each call what they need and a later notebook reuses what an earlier one built.

    exp = Experiment.from_course(ctx, "nyu3")
    exp.experts()                      # {task: (model, record)}, trained or loaded
    alpha, scores = exp.select_alpha("ta")
    table = exp.results_table()        # the paper's Table 1 format, Markdown + JSON in run_dir/results
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from . import checkpoints as ckpt
from . import merging
from .foundation import load_foundation
from .metrics import delta_m, normalized_performance
from .models import SimoModel
from .profiles import Profile
from .realign import head_realign, representation_realign
from .scenes import VERSION as SCENES_VERSION
from .tasks import get_task, get_tasks, lower_is_better
from .training import RunRecord, build_model, evaluate, load_data, train_expert, train_mtl

__all__ = ["Experiment", "ROWS"]

# rows of the results table, in the paper's Table 1 order (+ TALL and the LoRA variant)
ROWS = ("experts", "mtl", "zeroshot", "ta", "ties", "tall", "ta+head", "ta+repr", "ta+lora", "ties+head",
        "ties+repr", "ties+lora")


class Experiment:
    def __init__(self, profile: Profile, tasks="nyu3", seed: int = 0, device="cpu", run_dir="runs/exp",
                 progress: bool = False, ties_k: float = 0.2, adapter_rank: int = 16, realign_samples: int | None = None):
        self.profile, self.seed, self.device, self.progress = profile, seed, torch.device(device), progress
        self.tasks = get_tasks(tasks)
        if profile.dataset != "scenes":
            from .datasets import DATASET_TASKS
            missing = [t for t in self.tasks if t not in DATASET_TASKS[profile.dataset]]
            if missing:
                raise ValueError(f"dataset {profile.dataset!r} has no labels for {missing}; its tasks: "
                                 f"{', '.join(DATASET_TASKS[profile.dataset])}")
        self.run_dir = Path(run_dir)
        self.ties_k, self.adapter_rank = ties_k, adapter_rank
        self.data = load_data(profile, seed, progress=progress)
        if realign_samples is not None:
            if not 1 <= realign_samples <= profile.n_val:
                raise ValueError(f"realign_samples must be in 1..{profile.n_val} (the val split), got {realign_samples}")
            self.data["val_realign"] = {k: v[:realign_samples] for k, v in self.data["val"].items()}
        else:
            self.data["val_realign"] = self.data["val"]
        self.foundation, self.foundation_hash = load_foundation(profile, self.run_dir, seed, self.device, progress)
        self._experts: dict = {}
        self._alphas: dict = {}
        self._tvs: dict = {}
        self.lower = lower_is_better(self.tasks)

    @classmethod
    def from_course(cls, ctx, tasks="nyu3", **kw) -> "Experiment":
        return cls(ctx.profile, tasks, ctx.seed, ctx.device, ctx.run_dir, ctx.progress, **kw)

    # -- experts and baselines -----------------------------------------------------------------
    def expert(self, task: str) -> tuple[SimoModel, RunRecord]:
        if task not in self._experts:
            self._experts[task] = train_expert(task, self.foundation, self.foundation_hash, self.profile, self.data,
                                               self.run_dir, self.seed, self.device, self.progress)
        return self._experts[task]

    def experts(self) -> dict[str, tuple[SimoModel, RunRecord]]:
        return {t: self.expert(t) for t in self.tasks}

    def expert_metrics(self, split: str = "test") -> dict[str, float]:
        """Each expert's metric on its own task (the baseline of every normalised number)."""
        return {t: self.expert(t)[1].metrics[split][t] for t in self.tasks}

    def mtl(self) -> tuple[SimoModel, RunRecord]:
        return train_mtl(self.tasks, self.foundation, self.foundation_hash, self.profile, self.data, self.run_dir,
                         self.seed, self.device, self.progress)

    def task_vectors(self, tasks=None) -> dict[str, dict]:
        tasks = get_tasks(tasks) if tasks is not None else self.tasks
        for t in tasks:
            if t not in self._tvs:
                self._tvs.update(merging.task_vectors(self.foundation, {t: self.expert(t)[0].encoder.state_dict()}))
        return {t: self._tvs[t] for t in tasks}

    def with_heads(self, encoder_state: dict, tasks=None) -> SimoModel:
        """A model with ``encoder_state`` and copies of the experts' heads (heads are never merged)."""
        tasks = get_tasks(tasks) if tasks is not None else self.tasks
        heads = {t: self.expert(t)[0].heads[t].state_dict() for t in tasks}
        return build_model(encoder_state, self.profile, tasks, head_states=heads)

    # -- scoring ------------------------------------------------------------------------------
    def evaluate(self, model: SimoModel, split: str = "test", tasks=None) -> dict[str, float]:
        return evaluate(model, self.data[split], tasks or model.tasks, device=self.device)

    def score(self, metrics: dict, split: str = "test", kind: str = "ratio") -> float:
        base = self.expert_metrics(split)
        return delta_m(metrics, {t: base[t] for t in metrics}, {t: self.lower[t] for t in metrics}, kind=kind)

    def normalized(self, metrics: dict, split: str = "test") -> dict[str, float]:
        base = self.expert_metrics(split)
        return normalized_performance(metrics, {t: base[t] for t in metrics}, {t: self.lower[t] for t in metrics})

    # -- merging ------------------------------------------------------------------------------
    def merge(self, method: str, alpha: float, tasks=None, **kw) -> dict:
        kw.setdefault("ties_k", self.ties_k)
        return merging.merge(method, self.foundation, self.task_vectors(tasks), alpha=alpha, seed=self.seed, **kw)

    def alpha_sweep(self, method: str = "ta", grid=merging.ALPHA_GRID, tasks=None, **kw) -> dict[float, dict]:
        """Validation metrics of the merged model at every alpha: {alpha: {task: metric}}.

        One merge and one evaluation on the validation split per grid point; cached in memory and
        in ``run_dir/alphas`` (a later notebook reuses an earlier notebook's sweep)."""
        tasks = get_tasks(tasks) if tasks is not None else self.tasks
        kw.setdefault("ties_k", self.ties_k)
        key = json.dumps([method, tasks, [float(a) for a in grid], kw], sort_keys=True)
        if key in self._alphas:
            return self._alphas[key]
        path = self._cache_path("alpha", {"key": key, "val": len(self.data["val"]["image"]), "version": 2})
        if path.exists():
            cached = json.loads(path.read_text())
            self._alphas[key] = {float(a): m for a, m in cached["val_metrics"].items()}
            return self._alphas[key]
        tvs = self.task_vectors(tasks)
        sweep = {}
        for alpha in grid:
            model = self.with_heads(merging.merge(method, self.foundation, tvs, alpha=alpha, seed=self.seed, **kw),
                                    tasks)
            sweep[float(alpha)] = self.evaluate(model, "val", tasks)
        self._alphas[key] = sweep
        _write_json(path, {"method": method, "tasks": list(tasks), "kw": kw, "val_metrics": sweep})
        return sweep

    def select_alpha(self, method: str = "ta", grid=merging.ALPHA_GRID, tasks=None, **kw) -> tuple[float, dict]:
        """Best alpha on the validation split (ratio Δm against the experts' validation metrics).

        Returns (alpha, {alpha: validation Δm}); the sweep is :meth:`alpha_sweep` (cached)."""
        sweep = self.alpha_sweep(method, grid, tasks, **kw)
        return merging.select_alpha(lambda a: self.score(sweep[float(a)], split="val"), grid)

    def merged_model(self, method: str) -> tuple[SimoModel, float, dict]:
        """The merged encoder at its validation-selected alpha, with the experts' heads."""
        alpha, scores = self.select_alpha(method)
        return self.with_heads(self.merge(method, alpha)), alpha, scores

    def tall(self, lams=(0.2, 0.4, 0.6, 0.8, 1.0)) -> tuple[dict[str, float], dict[str, float]]:
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

    def task_relationships(self, lams=tuple(round(0.1 * i, 1) for i in range(16)), split: str = "val") -> dict:
        """Paper Figs. 3/5/6: theta_0 + lam * tau_primary with every head attached, for each primary task.

        Returns {primary: {lam: {task: normalised performance}}}."""
        out = {}
        for primary in self.tasks:
            tv = self.task_vectors((primary,))
            out[primary] = {}
            for lam in lams:
                model = self.with_heads(merging.task_arithmetic(self.foundation, tv, lam))
                out[primary][float(lam)] = self.normalized(self.evaluate(model, split), split)
        return out

    def layer_coefficients(self, steps: int | None = None, lr: float = 1e-2) -> tuple[torch.Tensor, list, list]:
        """Paper Fig. 2: per-task, per-layer merging coefficients learned on the validation split."""
        model = self.with_heads(self.foundation)
        return merging.learn_layer_coefficients(self.foundation, self.task_vectors(), model, self.data["val"],
                                                steps=steps or self.profile.realign_steps // 2, lr=lr,
                                                batch_size=self.profile.batch_size, seed=self.seed,
                                                device=self.device, progress=self.progress)

    # -- fixes --------------------------------------------------------------------------------
    def head_realigned(self, model: SimoModel, cached: bool = True, steps: int | None = None):
        return head_realign(model, self.data["val_realign"], self.tasks, steps=steps or self.profile.realign_steps,
                            lr=self.profile.lr_head, batch_size=self.profile.batch_size, seed=self.seed,
                            device=self.device, progress=self.progress, cached=cached)

    def repr_realigned(self, model: SimoModel, kind: str = "block", rank: int | None = None, steps: int | None = None):
        return representation_realign(model, self.data["val_realign"], self.tasks, rank=rank or self.adapter_rank,
                                      kind=kind, steps=steps or self.profile.realign_steps,
                                      lr=self.profile.lr_finetune * 2, batch_size=self.profile.batch_size,
                                      seed=self.seed, device=self.device, progress=self.progress,
                                      cache_dir=self.run_dir / "realign")

    # -- the table ----------------------------------------------------------------------------
    def _cache_path(self, kind: str, extra: dict) -> Path:
        """run_dir/<kind>s/<tasks>-<hash>.json for a result that depends on this experiment's set-up."""
        cfg = {"tasks": self.tasks, "profile": self.profile.to_dict(), "seed": self.seed,
               "foundation": self.foundation_hash, "scenes_version": SCENES_VERSION, **extra}
        return self.run_dir / f"{kind}s" / f"{'+'.join(self.tasks)}-{ckpt.config_hash(cfg)}.json"

    def _row_path(self, name: str) -> Path:
        cfg = {"row": name, "tasks": self.tasks, "profile": self.profile.to_dict(), "seed": self.seed,
               "foundation": self.foundation_hash, "ties_k": self.ties_k, "rank": self.adapter_rank,
               "n_realign": len(self.data["val_realign"]["image"]), "version": 1, "scenes_version": SCENES_VERSION}
        return self.run_dir / "rows" / f"{'+'.join(self.tasks)}-{name}-{ckpt.config_hash(cfg)}.json"

    def row(self, name: str) -> dict:
        """One results-table row (cached as JSON): test metrics, normalised %, Δm both forms, cost."""
        if name not in ROWS:
            raise ValueError(f"unknown row {name!r}; valid: {', '.join(ROWS)}")
        path = self._row_path(name)
        if path.exists():
            return json.loads(path.read_text())
        t0 = time.perf_counter()
        extra: dict = {}
        cost = RunRecord(name=name)
        if name == "experts":
            metrics = self.expert_metrics()
            for t in self.tasks:
                cost.add(self.expert(t)[1])
            extra["probe"] = {t: self.expert(t)[1].metrics["probe"][t] for t in self.tasks}
        elif name == "mtl":
            model, rec = self.mtl()
            metrics, cost = rec.metrics["test"], rec
        elif name == "zeroshot":
            metrics = self.evaluate(self.with_heads(merging.zero_shot(self.foundation)))
        elif name == "tall":
            metrics, extra["lambda"] = self.tall()
            extra["note"] = "one encoder pass per task"
        else:
            method, _, fix = name.partition("+")
            model, alpha, scores = self.merged_model(method)
            extra.update(alpha=alpha, val_scores=scores)
            if fix == "head":
                model, cost = self.head_realigned(model)
            elif fix in ("repr", "lora"):
                model, cost = self.repr_realigned(model, kind="block" if fix == "repr" else "lora")
            metrics = self.evaluate(model)
        row = {"row": name, "tasks": list(self.tasks), "metrics": metrics,
               "normalized": self.normalized(metrics), "delta_m_ratio": self.score(metrics, kind="ratio"),
               "delta_m_relative": self.score(metrics, kind="relative"),
               "cost": {k: getattr(cost, k) for k in ("steps", "samples", "trainable_params", "wall_s")},
               "wall_s_total": time.perf_counter() - t0, **extra}
        _write_json(path, row)
        return row

    def results_table(self, rows=ROWS, write: bool = True) -> list[dict]:
        """Rows of the results table; writes results/table-<tasks>.{md,json} to the run directory."""
        table = [self.row(r) for r in rows]
        if write:
            out = self.run_dir / "results"
            out.mkdir(parents=True, exist_ok=True)
            name = "table-" + "+".join(self.tasks)
            (out / f"{name}.json").write_text(json.dumps(table, indent=1, default=float))
            (out / f"{name}.md").write_text(self.to_markdown(table))
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
                         "mtl": mtl_rec.metrics["test"][t],
                         "cost": {k: getattr(rec, k) for k in ("steps", "samples", "trainable_params", "wall_s")}})
        mtl_cost = {k: getattr(mtl_rec, k) for k in ("steps", "samples", "trainable_params", "wall_s")}
        out = {"tasks": list(self.tasks), "profile": self.profile.name, "seed": self.seed, "rows": rows,
               "mtl_cost": mtl_cost}
        if write:
            lines = [f"## Training: probe, experts and MTL ({', '.join(self.tasks)}; {self.profile.name} profile, "
                     f"seed {self.seed}, test split)", "",
                     "| model | task | metric | linear probe | expert (LP→FT) | MTL | steps | samples | "
                     "trainable params | wall s |", "|---" * 10 + "|"]
            for r in rows:
                c = r["cost"]
                lines.append(f"| expert-{r['task']} | {r['task']} | {r['metric']} {'↓' if r['lower_is_better'] else '↑'} | "
                             f"{r['probe']:.4g} | {r['expert']:.4g} | {r['mtl']:.4g} | {c['steps']} | {c['samples']} | "
                             f"{c['trainable_params']:,} | {c['wall_s']:.0f} |")
            c = mtl_cost
            lines.append(f"| mtl | all | | | | | {c['steps']} | {c['samples']} | {c['trainable_params']:,} | "
                         f"{c['wall_s']:.0f} |")
            res = self.run_dir / "results"
            res.mkdir(parents=True, exist_ok=True)
            name = "training-" + "+".join(self.tasks)
            (res / f"{name}.md").write_text("\n".join(lines) + "\n")
            (res / f"{name}.json").write_text(json.dumps(out, indent=1, default=float))
        return out

    def to_markdown(self, table: list[dict]) -> str:
        heads = [f"{t} {get_task(t).metric_name} {'↓' if self.lower[t] else '↑'}" for t in self.tasks]
        lines = [f"## Results: {', '.join(self.tasks)} ({self.profile.name} profile, seed {self.seed}, test split)", "",
                 "| method | " + " | ".join(heads) + " | Δm (ratio, paper tables) | Δm (Eq. 2) | steps | samples | "
                 "trainable params | wall s |", "|---" * (len(heads) + 7) + "|"]
        for r in table:
            cells = [f"{r['metrics'][t]:.4g} ({100 * r['normalized'][t]:.1f}%)" for t in self.tasks]
            c = r["cost"]
            lines.append(f"| {r['row']} | " + " | ".join(cells) + f" | {100 * r['delta_m_ratio']:+.1f}% | "
                         f"{100 * r['delta_m_relative']:+.1f}% | {c['steps']} | {c['samples']} | "
                         f"{c['trainable_params']:,} | {c['wall_s']:.1f} |")
        return "\n".join(lines) + "\n"


def _write_json(path: Path, obj) -> None:
    """Atomic JSON write (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)


def main(argv=None) -> None:
    """``python -m simo_lite.experiment --profile cpu --tasks nyu3 diverse5``: every results table."""
    import argparse

    from .profiles import get, resolve_device, PROFILES
    ap = argparse.ArgumentParser(description="Train what is missing and write the results tables to the run dir")
    ap.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    ap.add_argument("--tasks", nargs="+", default=["nyu3", "diverse5"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--run-dir", default=None, help="default: runs/<profile>-<seed>")
    args = ap.parse_args(argv)
    from .course import REPO
    run_dir = Path(args.run_dir) if args.run_dir else REPO / "runs" / f"{args.profile}-{args.seed}"
    for tasks in args.tasks:
        t0 = time.perf_counter()
        exp = Experiment(get(args.profile), tasks, args.seed, resolve_device(args.device), run_dir,
                         progress=not os.environ.get("CI"))
        exp.training_table()
        table = exp.results_table()
        print(exp.to_markdown(table))
        print(f"{tasks}: {time.perf_counter() - t0:.0f} s; tables in {run_dir / 'results'}\n")
    from .course import write_run_meta
    write_run_meta(run_dir, f"python -m simo_lite.experiment --profile {args.profile} --tasks {' '.join(args.tasks)}"
                   f" --seed {args.seed}")


if __name__ == "__main__":
    main()
