"""``decodability`` section: does the foundation create the paper's regime? (docs/preregistration.md §1)

Linear probes on frozen features: for every target task, a fresh head trained ``probe_steps`` on the
cached features of one encoder (encoder frozen), scored on the test split. Encoders: a random init,
the SimMIM foundation (pixel reconstruction, keeps texture), the appearance-invariant foundation
(SimMIM, then dense VICReg on appearance views of the same scenes), every expert fine-tuned from the
invariant foundation on the task set, and their task-arithmetic merge (α chosen on val).

The paper's regime needs appearance-level targets (texture edges, keypoints, shading, the image)
to be *less* decodable from the foundation than from the low-level experts, so that an expert adds
detail with a specific task vector that merging dilutes (criteria G1-G3 of the pre-registration).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.common import REPO, md_table

APPEARANCE = ("texture_edges", "keypoints", "shading", "autoencoder")
GEOMETRIC = ("depth", "normals")
FULL = dict(profile="cpu", invariance_steps=1000)
QUICK = dict(profile="smoke", invariance_steps=2, targets=("texture_edges", "depth"), merge_tasks=("depth", "texture_edges"))


def run(profile: str = "cpu", invariance_steps: int = 1000, seed: int = 0,
        targets: Sequence[str] = APPEARANCE + GEOMETRIC, merge_tasks: str | Sequence[str] = "taskonomy5",
        run_dir: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Probe every target task on every encoder; returns ``{"metrics": {encoder: {task: test metric}},
    "lower_is_better": {task: bool}, "verdicts": {task: {...}}, settings, "wall_s"}``.

    ``invariance_steps``: the invariant foundation's stage 2 (its checkpoint is loaded from ``data/``
    when one matches, else pretrained into ``run_dir``); ``merge_tasks``: the experts trained from it
    and merged. ``run_dir`` default: ``runs/decodability-<profile>-<seed>`` (experts are cached there).
    """
    import torch

    from simo_lite import profiles
    from simo_lite.experiment import Experiment
    from simo_lite.foundation import load_foundation, random_encoder_state
    from simo_lite.tasks import get_task, get_tasks
    from simo_lite.training import build_model, cache_features, evaluate, probe_stage

    t0 = time.perf_counter()
    old = profiles.get(profile)
    new = profiles.get(profile, invariance_steps=invariance_steps)
    run_dir = Path(run_dir or REPO / "runs" / f"decodability-{profile}-{seed}")
    exp = Experiment(new, merge_tasks, seed, "cpu", run_dir, progress)
    data = exp.data
    encoders = {"random": random_encoder_state(old, seed),
                "SimMIM foundation": load_foundation(old, run_dir, seed, data=data)[0],
                "invariant foundation": exp.foundation}
    for t in exp.tasks:
        encoders[f"expert {t}"] = exp.expert(t)[0].encoder.state_dict()
    merged, alpha, _ = exp.merged_model("ta")
    encoders[f"TA merge (α={alpha:g})"] = merged.encoder.state_dict()
    targets = get_tasks(tuple(targets))
    metrics: dict[str, dict[str, float]] = {}
    for name, state in encoders.items():
        base = build_model(state, new, targets[:1], seed=seed)
        train_f = cache_features(base, data["train"]["image"])
        test_f = cache_features(base, data["test"]["image"])
        metrics[name] = {}
        for t in targets:
            model = build_model(state, new, (t,), seed=seed)
            probe_stage(model, data["train"], (t,), new, new.probe_steps, seed=seed, features=train_f)
            metrics[name][t] = evaluate(model, data["test"], (t,), features=test_f)[t]
        del train_f, test_f
    lower = {t: get_task(t).lower_is_better for t in targets}
    return {"profile": profile, "seed": seed, "invariance_steps": invariance_steps, "probe_steps": new.probe_steps,
            "merge_tasks": list(exp.tasks), "alpha": alpha, "targets": list(targets), "metrics": metrics,
            "lower_is_better": lower, "verdicts": verdicts(metrics, lower, exp.tasks),
            "threads": torch.get_num_threads(), "wall_s": time.perf_counter() - t0}


def _better(a: float, b: float, lower: bool) -> float:
    """How much ``a`` beats ``b``, as a fraction of ``b`` (positive: ``a`` is better)."""
    return ((b - a) if lower else (a - b)) / abs(b) if b else float("nan")


def verdicts(metrics: dict[str, dict[str, float]], lower: dict[str, bool], experts: Sequence[str]) -> dict:
    """Per target: G1 (the invariant foundation decodes it worse than the target's own expert),
    G2 (the merge lies between them), the SimMIM foundation's margin over the invariant one, and
    G3 for geometric targets (invariant foundation better than random). Margins are fractions;
    one seed gives no SD, so a margin is a measurement, not yet a verdict."""
    out = {}
    merged = next(k for k in metrics if k.startswith("TA merge"))
    for t, low in lower.items():
        inv = metrics["invariant foundation"][t]
        row = {"invariant_vs_simmim": _better(inv, metrics["SimMIM foundation"][t], low),
               "invariant_vs_random": _better(inv, metrics["random"][t], low)}
        if t in experts:
            exp_m, mer = metrics[f"expert {t}"][t], metrics[merged][t]
            row["expert_vs_invariant"] = _better(exp_m, inv, low)              # G1: > 0 means the drop exists
            row["G1_expert_better"] = row["expert_vs_invariant"] > 0
            lo, hi = sorted((inv, exp_m))
            row["G2_merge_between"] = lo <= mer <= hi
        out[t] = row
    return out


def markdown(result: dict) -> str:
    """The probe table (rows: encoders, columns: targets) and the per-target margins."""
    targets = result["targets"]
    head = ["encoder", *[f"{t} ({'↓' if result['lower_is_better'][t] else '↑'})" for t in targets]]
    rows = [[name, *[f"{m[t]:.4f}" for t in targets]] for name, m in result["metrics"].items()]
    lines = [f"Linear probes ({result['probe_steps']} steps on frozen features), {result['profile']} profile, "
             f"seed {result['seed']}; experts and merge on {', '.join(result['merge_tasks'])}.", "",
             md_table(head, rows), ""]
    vhead = ["target", "invariant vs SimMIM", "invariant vs random", "expert vs invariant (G1)", "merge between (G2)"]
    vrows = []
    for t, v in result["verdicts"].items():
        f = lambda k: f"{100 * v[k]:+.1f} %" if k in v else "–"  # noqa: E731
        vrows.append([t, f("invariant_vs_simmim"), f("invariant_vs_random"), f("expert_vs_invariant"),
                      ("yes" if v["G2_merge_between"] else "no") if "G2_merge_between" in v else "–"])
    lines += ["Margins (positive: the first is better):", "", md_table(vhead, vrows)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.decodability [--profile cpu] [--invariance-steps N]``: run, print the tables,
    write ``runs/bench/decodability-<profile>-<seed>.{json,md}``."""
    import argparse

    from benchmarks.common import write_section
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--invariance-steps", type=int, default=FULL["invariance_steps"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    result = run(args.profile, args.invariance_steps, args.seed)
    out = REPO / "runs" / "bench" / f"decodability-{args.profile}-{args.seed}"
    print(write_section(out, result, markdown))
    print(f"{result['wall_s']:.0f} s; wrote {out}.json/.md")


if __name__ == "__main__":
    main()
