"""``realign_curves`` section: how many steps, and which learning rate, the two fixes need.

For each task set, the task-arithmetic merge (α chosen on validation) is realigned by head
realignment and by block adapters (representation realignment) with the *same* learning-rate search
(docs/preregistration.md, section 5): each rate of the grid at 200 steps, trained on the first 300
validation images and scored by Δm (ratio) on the other 100 (held out). At each fix's best rate, a
step curve (50, 100, 200, ... steps, doubling while the held-out Δm still gains ≥ 0.5 pp, at most
1,600) gives the plateau budget. Test Δm is reported beside every point and never used to choose.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.common import REPO, md_table, save_figure, write_section

LRS = (3e-4, 1e-3, 3e-3)
SEARCH_STEPS = 200
CURVE = (50, 100, 200, 400, 800)
EXTRA = 1600                   # measured only when 400 -> 800 still gains
GAIN_PP = 0.5                  # a doubling that gains less than this (held-out Δm, pp) means a plateau
N_FIT = 300                    # validation images the fix trains on; the rest are held out


def _split(data: dict, lo: int, hi: int | None) -> dict:
    return {k: v[lo:hi] for k, v in data.items()}


def plateau(curve: dict[int, float], gain_pp: float = GAIN_PP) -> int | None:
    """The smallest budget whose doubling (the next budget measured) gains < ``gain_pp`` points of Δm
    (``curve``: {steps: Δm as a fraction}); None when every measured doubling still gains."""
    steps = sorted(curve)
    for a, b in zip(steps, steps[1:]):
        if 100 * (curve[b] - curve[a]) < gain_pp:
            return a
    return None


def run(profile: str = "cpu", sets: Sequence[str] = ("nyu3", "taskonomy5"), seed: int = 0,
        run_dir: str | Path | None = None, lrs: Sequence[float] = LRS, curve: Sequence[int] = CURVE,
        search_steps: int = SEARCH_STEPS, extra: int | None = EXTRA, **overrides: Any) -> dict[str, Any]:
    """``{"sets": {set: {"alpha", "merged": {...}, "search": {fix: {lr: {"val", "test"}}}, "lr": {fix: lr},
    "curve": {fix: {steps: {"val", "test", "wall_s"}}}, "plateau": {fix: steps}}}}``."""
    from simo_lite import profiles
    from simo_lite.experiment import Experiment
    from simo_lite.metrics import delta_m
    from simo_lite.realign import head_realign, representation_realign
    from simo_lite.training import evaluate

    prof = profiles.get(profile, **overrides)
    run_dir = Path(run_dir or REPO / "runs" / f"convergence-{profile}-{seed}")
    out: dict[str, Any] = {"profile": profile, "seed": seed, "overrides": overrides, "lrs": list(lrs),
                           "search_steps": search_steps, "n_fit": N_FIT, "gain_pp": GAIN_PP, "sets": {}}
    for s in sets:
        exp = Experiment(prof, s, seed, "cpu", run_dir)
        tasks = exp.tasks
        n_val = len(exp.data["val"]["image"])
        fit_split, hold = _split(exp.data["val"], 0, N_FIT), _split(exp.data["val"], N_FIT, n_val)
        base_hold = {t: evaluate(exp.expert(t)[0], hold, (t,))[t] for t in tasks}

        def score(model) -> dict[str, float]:
            m_hold = evaluate(model, hold, tasks)
            return {"val": delta_m(m_hold, base_hold, exp.lower), "test": exp.score(exp.evaluate(model))}

        merged, alpha, _ = exp.merged_model("ta")
        res: dict[str, Any] = {"tasks": list(tasks), "alpha": alpha, "merged": score(merged), "search": {},
                               "lr": {}, "curve": {}, "plateau": {}}
        cache = exp.store.root / "realign-curves"

        def fix(name: str, steps: int, lr: float):
            t0 = time.perf_counter()
            if name == "head":
                model, _ = head_realign(merged, fit_split, tasks, steps=steps, lr=lr, batch_size=prof.batch_size,
                                        seed=seed)
            else:
                model, _ = representation_realign(merged, fit_split, tasks, rank=16, kind="block", steps=steps, lr=lr,
                                                  batch_size=prof.batch_size, seed=seed, cache_dir=cache)
            return {**score(model), "wall_s": time.perf_counter() - t0}

        for name in ("head", "repr"):
            res["search"][name] = {lr: fix(name, search_steps, lr) for lr in lrs}
            best = max(lrs, key=lambda lr: res["search"][name][lr]["val"])
            res["lr"][name] = best
            pts: dict[int, dict] = {}
            for steps in curve:
                pts[steps] = res["search"][name][best] if steps == search_steps else fix(name, steps, best)
                print(f"{s} {name} lr {best:g} steps {steps}: val Δm {100 * pts[steps]['val']:+.1f} %, "
                      f"test {100 * pts[steps]['test']:+.1f} %", flush=True)
            vals = {k: v["val"] for k, v in pts.items()}
            if extra and plateau(vals) is None:
                pts[extra] = fix(name, extra, best)
                vals[extra] = pts[extra]["val"]
            res["curve"][name] = pts
            res["plateau"][name] = plateau(vals)
        out["sets"][s] = res
    return out


def markdown(result: dict) -> str:
    """The learning-rate search and the step curves, per set and fix."""
    lines = [f"Realignment budgets, {result['profile']} profile, seed {result['seed']}: fixes trained on the first "
             f"{result['n_fit']} validation images, Δm (ratio) on the held-out rest (val) and on test.\n"]
    for s, r in result["sets"].items():
        lines.append(f"**{s}** (TA at α = {r['alpha']:g}: val {100 * r['merged']['val']:+.1f} %, "
                     f"test {100 * r['merged']['test']:+.1f} %)\n")
        rows = [[name, f"{float(lr):g}", f"{100 * v['val']:+.1f} %", f"{100 * v['test']:+.1f} %"]
                for name, by_lr in r["search"].items() for lr, v in by_lr.items()]
        lines.append(md_table(["fix", f"lr ({result['search_steps']} steps)", "val Δm", "test Δm"], rows) + "\n")
        rows = [[name, f"{r['lr'][name]:g}", steps, f"{100 * v['val']:+.1f} %", f"{100 * v['test']:+.1f} %",
                 f"{v['wall_s']:.0f}"] for name, pts in r["curve"].items() for steps, v in sorted(pts.items(), key=lambda kv: int(kv[0]))]
        lines.append(md_table(["fix", "lr", "steps", "val Δm", "test Δm", "s"], rows) + "\n")
        lines.append("Plateau (smallest budget whose doubling gains < "
                     f"{result['gain_pp']} pp on val): " + ", ".join(f"{k} {v if v is not None else 'not reached'}"
                                                                     for k, v in r["plateau"].items()) + "\n")
    return "\n".join(lines)


def plot(result: dict, path: str | Path) -> Path:
    """Held-out and test Δm against realignment steps (log x), one panel per set, a line per fix and split."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sets = list(result["sets"])
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 3.8), squeeze=False)
    for ax, s in zip(axes[0], sets):
        r = result["sets"][s]
        ticks: set[int] = set()
        for i, (name, pts) in enumerate(r["curve"].items()):
            steps = sorted(int(k) for k in pts)
            ticks.update(steps)
            get = lambda k, split: pts[k][split] if k in pts else pts[str(k)][split]  # noqa: E731
            for split, style in (("val", "-o"), ("test", "--x")):
                ax.plot(steps, [100 * get(k, split) for k in steps], style, color=f"C{i}",
                        label=f"{'head realign' if name == 'head' else 'block adapters'} ({split}, lr {r['lr'][name]:g})")
        ax.axhline(100 * r["merged"]["test"], color="0.5", lw=1, label="TA, no fix (test)")
        ax.set_xscale("log")
        ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
        ax.minorticks_off()
        ax.set(title=f"{s}: realignment budget", xlabel="realignment steps (log scale)", ylabel="Δm (ratio), %")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.realign_curves``: run, print, write ``runs/bench/realign-curves-<profile>-<seed>.{json,md,png}``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--sets", nargs="+", default=["nyu3", "taskonomy5"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--budget", type=int, default=800, help="experts' and MTL fine-tuning steps (the matched budget)")
    ap.add_argument("--invariance-steps", type=int, default=1000)
    ap.add_argument("--out", default=None, help="output files' stem (default: runs/bench/realign-curves-<profile>-<seed>)")
    args = ap.parse_args(argv)
    result = run(args.profile, args.sets, args.seed, args.run_dir, finetune_steps=args.budget,
                 mtl_finetune_steps=args.budget, invariance_steps=args.invariance_steps)
    out = Path(args.out) if args.out else REPO / "runs" / "bench" / f"realign-curves-{args.profile}-{args.seed}"
    print(write_section(out, result, markdown, plot))


if __name__ == "__main__":
    main()
