"""``relationships`` section: the paper's Fig. 1 over every task subset, and the λ sweeps (Section 7).

- **Fig. 1**: task arithmetic of every subset of the task set (k = 1..T tasks; α chosen on validation
  for each subset, the paper's protocol), each task scored against its expert on test; the mean over
  the subsets of each size, with the paper's Taskonomy curve (``paper_tables.json``, "figures").
- **λ sweeps** at step 0.1 (0 to 1.5): θ₀ + λ τ_t for each task t with every head attached, scored on
  validation: how sensitive each task is to its own λ, and whether adding τ_depth helps seg.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.common import PAPER_TABLES, REPO, load_json, md_table, save_figure, write_section

LAMS = tuple(round(0.1 * i, 1) for i in range(16))


def run(profile: str = "cpu", sets: Sequence[str] = ("nyu3", "taskonomy5"), seed: int = 0,
        run_dir: str | Path | None = None, lams: Sequence[float] = LAMS, **overrides: Any) -> dict[str, Any]:
    """``{"sets": {set: {"fig1": {k: [{"tasks", "mean", "per_task"}]}, "lambda": {primary: {λ: {task: norm}}},
    "wall_s"}}}``."""
    from simo_lite import profiles
    from simo_lite.experiment import Experiment

    prof = profiles.get(profile, **overrides)
    run_dir = Path(run_dir or REPO / "runs" / f"{profile}-{seed}")
    out: dict[str, Any] = {"profile": profile, "seed": seed, "lams": list(lams), "sets": {}}
    for s in sets:
        exp = Experiment(prof, s, seed, "cpu", run_dir)
        t0 = time.perf_counter()
        fig1 = exp.merge_combinations("ta")
        lam = exp.task_relationships(lams)
        out["sets"][s] = {"tasks": list(exp.tasks), "fig1": {int(k): v for k, v in fig1.items()},
                          "lambda": lam, "wall_s": time.perf_counter() - t0}
        print(f"{s}: {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def fig1_means(res: dict) -> dict[int, float]:
    """``{k: mean normalised performance over the subsets of size k}``."""
    return {int(k): sum(x["mean"] for x in v) / len(v) for k, v in res["fig1"].items()}


def lambda_findings(res: dict) -> dict[str, Any]:
    """Per primary task: its own best λ and its own normalised performance at λ = 1 and at the best λ;
    plus, where the set has depth and seg, seg's performance under θ₀ + λ τ_depth against λ = 0."""
    out: dict[str, Any] = {"own": {}}
    for primary, curve in res["lambda"].items():
        own = {float(l): v[primary] for l, v in curve.items()}
        best = max(own, key=own.get)
        out["own"][primary] = {"best_lambda": best, "at_best": own[best], "at_1": own.get(1.0),
                               "at_0": own.get(0.0), "range": max(own.values()) - min(own.values())}
    if "depth" in res["lambda"] and "seg" in res["tasks"]:
        seg = {float(l): v["seg"] for l, v in res["lambda"]["depth"].items()}
        best = max(seg, key=seg.get)
        out["depth_helps_seg"] = {"seg_at_0": seg[0.0], "seg_best": seg[best], "best_lambda": best,
                                  "gain": seg[best] - seg[0.0]}
    return out


def markdown(result: dict, paper_path: str | Path = PAPER_TABLES) -> str:
    """Fig. 1 means by k next to the paper's, and the λ findings, per set."""
    paper = (load_json(Path(paper_path)) or {}).get("figures", {}).get("figure1")
    parts = []
    for s, res in result["sets"].items():
        res = {**res, "fig1": {int(k): v for k, v in res["fig1"].items()}}     # JSON keys are strings
        means = fig1_means(res)
        n = {k: len(v) for k, v in res["fig1"].items()}
        ref = dict(zip(paper["k"], paper["mean"])) if paper else {}
        rows = [[k, n[k], f"{means[k]:.3f}", f"{min(x['mean'] for x in res['fig1'][k]):.3f}–"
                 f"{max(x['mean'] for x in res['fig1'][k]):.3f}", f"{ref[k]:.2f}" if k in ref else "–"]
                for k in sorted(means)]
        parts.append(f"**{s}**, Fig. 1 (task arithmetic, α chosen on validation per subset; test):\n")
        parts.append(md_table(["k tasks", "subsets", "mean normalised", "range over subsets",
                               "paper (Taskonomy, Fig. 1)"], rows) + "\n")
        lf = lambda_findings(res)
        rows = [[t, f"{v['best_lambda']:.1f}", f"{v['at_best']:.3f}", f"{v['at_1']:.3f}" if v["at_1"] is not None else "–",
                 f"{v['range']:.3f}"] for t, v in lf["own"].items()]
        parts.append(f"**{s}**, λ sweeps (θ₀ + λ τ_t, λ = 0 … 1.5 step 0.1, validation), each task on its own vector:\n")
        parts.append(md_table(["task", "best λ", "normalised at best λ", "at λ = 1", "range over λ"], rows) + "\n")
        if "depth_helps_seg" in lf:
            d = lf["depth_helps_seg"]
            parts.append(f"Adding τ_depth and scoring seg: {d['seg_at_0']:.3f} at λ = 0, best {d['seg_best']:.3f} at "
                         f"λ = {d['best_lambda']:.1f} ({'+' if d['gain'] >= 0 else ''}{d['gain']:.3f}; one seed).\n")
    return "\n".join(parts)


def plot(result: dict, path: str | Path, paper_path: str | Path = PAPER_TABLES) -> Path:
    """Fig. 1: every subset (dots), the mean per k (line), the paper's Taskonomy curve (dashed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paper = (load_json(Path(paper_path)) or {}).get("figures", {}).get("figure1")
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (s, res) in enumerate(result["sets"].items()):
        colour = f"C{i}"
        for k, subsets in res["fig1"].items():
            ax.scatter([int(k)] * len(subsets), [x["mean"] for x in subsets], color=colour, alpha=0.35, s=14)
        means = fig1_means(res)
        ax.plot(sorted(means), [means[k] for k in sorted(means)], "-o", color=colour, label=f"ours, {s} (mean)")
    if paper:
        ax.plot(paper["k"], paper["mean"], "--s", color="k", label="paper, Taskonomy (Fig. 1)")
    ax.set(xlabel="number of merged tasks k", ylabel="normalised performance (expert = 1)",
           title="Task arithmetic against the number of merged tasks")
    ax.axhline(1.0, color="0.7", lw=0.8)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.relationships``: run, print, write ``runs/bench/relationships-<profile>-<seed>.{json,md,png}``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--sets", nargs="+", default=["nyu3", "taskonomy5"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", default=None)
    args = ap.parse_args(argv)
    result = run(args.profile, args.sets, args.seed, args.run_dir)
    out = REPO / "runs" / "bench" / f"relationships-{args.profile}-{args.seed}"
    print(write_section(out, result, markdown, plot))


if __name__ == "__main__":
    main()
