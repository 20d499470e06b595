"""``headroom`` section: how much a head can read from the 8x8 token grid (issue: precise tasks need room).

For each head architecture (the paper's linear head: BatchNorm + 1x1 conv on the 4 taps + CLS,
upsampled; and the small DPT-style conv head), the experts of the low-level tasks are fine-tuned
(LP -> FT, the profile's recipe) from the same foundation, and their test metrics are compared. A
low-level metric can only fall under merging if the experts reach well above what a probe or a
blurry prediction gets: that margin is the headroom.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.common import REPO, md_table

FULL = dict(profile="cpu", invariance_steps=1000, tasks=("texture_edges", "keypoints", "shading", "autoencoder"))
QUICK = dict(profile="smoke", invariance_steps=0, tasks=("texture_edges",))


def run(profile: str = "cpu", invariance_steps: int = 1000, tasks: Sequence[str] = FULL["tasks"],
        heads: Sequence[str] = ("linear", "conv"), seed: int = 0, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Experts of ``tasks`` with each head in ``heads``: ``{"experts": {head: {task: test metric}},
    "probes": {head: {task: probe metric}}, "params": {head: head parameters}, "wall_s": {head: s}}``.

    ``run_dir`` default: ``runs/decodability-<profile>-<seed>`` (the linear-head experts of the
    decodability section are reused when the profile matches)."""
    from simo_lite import profiles
    from simo_lite.experiment import Experiment
    from simo_lite.models import count_parameters
    from simo_lite.tasks import get_task

    run_dir = Path(run_dir or REPO / "runs" / f"decodability-{profile}-{seed}")
    out: dict[str, Any] = {"profile": profile, "seed": seed, "invariance_steps": invariance_steps,
                           "tasks": list(tasks), "experts": {}, "probes": {}, "params": {}, "wall_s": {},
                           "lower_is_better": {t: get_task(t).lower_is_better for t in tasks}}
    for head in heads:
        prof = profiles.get(profile, invariance_steps=invariance_steps, head=head)
        exp = Experiment(prof, tuple(tasks), seed, "cpu", run_dir)
        t0 = time.perf_counter()
        experts = exp.experts()
        out["wall_s"][head] = time.perf_counter() - t0
        out["experts"][head] = {t: rec.metrics["test"][t] for t, (_, rec) in experts.items()}
        out["probes"][head] = {t: rec.metrics["probe"][t] for t, (_, rec) in experts.items()}
        out["params"][head] = count_parameters(next(iter(experts.values()))[0].heads[tasks[0]])
    return out


def markdown(result: dict) -> str:
    """Experts and probes per head and task."""
    heads = list(result["experts"])
    header = ["task", *[f"{h} head: probe → expert" for h in heads]]
    rows = [[f"{t} ({'↓' if result['lower_is_better'][t] else '↑'})",
             *[f"{result['probes'][h][t]:.4f} → {result['experts'][h][t]:.4f}" for h in heads]]
            for t in result["tasks"]]
    params = ", ".join(f"{h} {result['params'][h]:,}" for h in heads)
    return (f"Experts (LP → FT) of the low-level tasks, {result['profile']} profile, seed {result['seed']}; "
            f"head parameters: {params}.\n\n" + md_table(header, rows) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.headroom``: run, print, write ``runs/bench/headroom-<profile>-<seed>.{json,md}``."""
    import argparse

    from benchmarks.common import write_section
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--invariance-steps", type=int, default=FULL["invariance_steps"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    result = run(args.profile, args.invariance_steps, seed=args.seed)
    out = REPO / "runs" / "bench" / f"headroom-{args.profile}-{args.seed}"
    print(write_section(out, result, markdown))


if __name__ == "__main__":
    main()
