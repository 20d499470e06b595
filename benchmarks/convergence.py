"""``convergence`` section: are the experts and joint MTL trained to a plateau at a matched budget?

For each fine-tuning budget ``B`` (steps), every expert of the course's task sets and the joint MTL
model of each set are trained with the profile's LP -> FT recipe, experts and MTL with the same ``B``
(``finetune_steps = mtl_finetune_steps = B``). Each fine-tuning run records its validation loss at 20
evenly spaced steps; a run counts as converged when that loss improved by less than 1 % over its last
20 % of steps (docs/preregistration.md, section 4). The models land in the run directory under their
store keys, so a later experiment with the same profile loads them instead of training again.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.common import REPO, md_table, save_figure, write_section

THRESHOLD = 0.01          # converged: val loss fell by less than this fraction over the last 20 % of steps
SETS = ("nyu3", "taskonomy5")


def run(profile: str = "cpu", budgets: Sequence[int] = (400,), sets: Sequence[str] = SETS, seed: int = 0,
        invariance_steps: int = 1000, mtl: bool = True, run_dir: str | Path | None = None,
        tasks: Sequence[str] | None = None, **overrides: Any) -> dict[str, Any]:
    """Train experts (and MTL when ``mtl``) at each budget, the experts of every task of ``sets`` (or of
    ``tasks`` only, when given); ``{"runs": [{budget, model, tasks, tail,
    converged, test, val_loss, wall_s}, ...], ...}``; ``tail`` is the fraction the validation loss still
    fell over the last 20 % of steps (:func:`simo_lite.training.val_tail_improvement`)."""
    from simo_lite import profiles
    from simo_lite.experiment import Experiment
    from simo_lite.tasks import get_tasks
    from simo_lite.training import tail_improvement, val_tail_improvement

    run_dir = Path(run_dir or REPO / "runs" / f"convergence-{profile}-{seed}")
    out: dict[str, Any] = {"profile": profile, "seed": seed, "invariance_steps": invariance_steps,
                           "budgets": list(budgets), "sets": list(sets), "threshold": THRESHOLD, "runs": []}
    for budget in budgets:
        prof = profiles.get(profile, invariance_steps=invariance_steps, finetune_steps=budget,
                            mtl_finetune_steps=budget, **overrides)
        experts = list(tasks) if tasks else list(dict.fromkeys(t for s in sets for t in get_tasks(s)))
        exp = Experiment(prof, tuple(experts), seed, "cpu", run_dir)
        jobs: list[tuple[str, tuple[str, ...], Any]] = [(f"expert-{t}", (t,), lambda t=t: exp.expert(t))
                                                         for t in experts]
        if mtl:
            for s in sets:
                e = Experiment(prof, s, seed, "cpu", run_dir)
                jobs.append((f"mtl-{s}", get_tasks(s), e.mtl))
        for name, ts, train in jobs:
            t0 = time.perf_counter()
            _, rec = train()
            d = rec.to_dict()
            ft = d["stages"][-1]
            tail = val_tail_improvement(d)
            out["runs"].append({"budget": budget, "model": name, "tasks": list(ts), "tail": tail,
                                "converged": bool(tail < THRESHOLD), "test": d["metrics"]["test"],
                                "val_loss": ft["metrics"].get("val_loss", []),
                                "train_tail": tail_improvement(ft["metrics"]["loss"]),
                                "wall_s": d["wall_s"], "call_s": time.perf_counter() - t0})
            print(f"budget {budget} {name}: val tail {tail:+.4f} ({'converged' if tail < THRESHOLD else 'NOT converged'}), "
                  f"train {d['wall_s']:.0f} s", flush=True)
    return out


def markdown(result: dict) -> str:
    """One row per (budget, model): validation-loss tail, converged, test metrics."""
    rows = [[r["budget"], r["model"], f"{100 * r['tail']:+.2f} %", "yes" if r["converged"] else "**no**",
             f"{100 * r['train_tail']:+.2f} %", ", ".join(f"{t} {v:.4f}" for t, v in r["test"].items()),
             f"{r['wall_s']:.0f}"] for r in result["runs"]]
    header = ["FT steps", "model", "val-loss fall, last 20 %", "converged (< 1 %)", "train-loss fall",
              "test metrics", "train s"]
    return (f"Convergence at matched budgets, {result['profile']} profile, seed {result['seed']} "
            f"(foundation: {result['invariance_steps']} invariance steps).\n\n" + md_table(header, rows) + "\n")


def plot(result: dict, path: str | Path) -> Path:
    """Validation-loss curves (relative to each run's first point), one panel per budget, legend = model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    budgets = result["budgets"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(5.5 * len(budgets), 3.8), squeeze=False)
    for ax, b in zip(axes[0], budgets):
        for r in (r for r in result["runs"] if r["budget"] == b and r["val_loss"]):
            steps, vals = zip(*r["val_loss"])
            ax.plot(steps, [v / vals[0] for v in vals], marker=".", label=r["model"])
        ax.axvspan(0.8 * b, b, color="0.9", zorder=0, label="last 20 % of steps")
        ax.set(title=f"fine-tuning budget {b} steps", xlabel="fine-tuning step",
               ylabel="validation loss / first measured")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.convergence``: run, print, write ``runs/bench/convergence-<profile>-<seed>.{json,md,png}``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--budgets", type=int, nargs="+", default=[400])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--invariance-steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-mtl", action="store_true")
    ap.add_argument("--tasks", nargs="+", default=None, help="train only these tasks' experts (default: every task of --sets)")
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--out", default=None, help="output files' stem (default: runs/bench/convergence-<profile>-<seed>)")
    args = ap.parse_args(argv)
    result = run(args.profile, args.budgets, args.sets, args.seed, args.invariance_steps, not args.no_mtl,
                 args.run_dir, tasks=args.tasks)
    out = Path(args.out) if args.out else REPO / "runs" / "bench" / f"convergence-{args.profile}-{args.seed}"
    print(write_section(out, result, markdown, plot))


if __name__ == "__main__":
    main()
