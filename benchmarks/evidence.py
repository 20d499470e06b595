"""``evidence`` section: the pre-registered test (docs/preregistration.md) on a multi-seed sweep.

Input: the tidy rows of a sweep (``<runs>/sweeps/<name>/results.json``, written by
``python -m simo_lite.experiment --seeds ...``; one row per (seed, task set, results row, task, metric)
with the row's Δm). Every quantity is computed per seed and then summarised as mean ± SD across seeds
(sample SD); differences are paired by seed. The verdicts follow the 2-SD rule of the pre-registration:

- a threshold criterion ("Δm ≤ −10 %") *holds* when the mean passes the threshold by more than 2 SD,
  *fails* when it misses it by more than 2 SD, else it is *unresolved*;
- a direction ("A beats B") is asserted only when the mean difference exceeds 2 SD of the per-seed
  differences; otherwise *unresolved*, whatever the sign;
- with fewer than 3 seeds every verdict is *unresolved* (the rule needs ≥ 3).

Nothing here is tuned: the thresholds are the pre-registration's, written before the runs.
"""
from __future__ import annotations

import statistics
from typing import Any, Sequence

from benchmarks.common import md_table

MIN_SEEDS = 3
DIVERSE, NYU = "autoencoder+depth+normals+keypoints+texture_edges", "seg+depth+normals"
ADAPTER_ROWS = ("ta+repr", "ta+lora", "ties+repr", "ties+lora")


def per_seed(tidy: Sequence[dict], tasks: str, row: str, kind: str = "delta_m_ratio") -> dict[int, float]:
    """``{seed: Δm}`` of one results row on one task set (``tasks``: the names joined by "+")."""
    out = {}
    for r in tidy:
        if r["tasks"] == tasks and r["row"] == row and r.get(kind) is not None:
            out[int(r["seed"])] = float(r[kind])
    return out


def _stats(values: dict[int, float]) -> dict[str, Any]:
    xs = list(values.values())
    mean = statistics.fmean(xs) if xs else None
    sd = statistics.stdev(xs) if len(xs) > 1 else None
    return {"seeds": sorted(values), "n": len(xs), "mean": mean, "sd": sd}


def paired(a: dict[int, float], b: dict[int, float]) -> dict[int, float]:
    """``{seed: a - b}`` over the seeds both have."""
    return {s: a[s] - b[s] for s in sorted(set(a) & set(b))}


def threshold_verdict(stats: dict, threshold: float, below: bool) -> str:
    """"holds" / "fails" / "unresolved" for mean ≤ threshold (``below``) or mean ≥ threshold, 2-SD rule."""
    if stats["n"] < MIN_SEEDS or stats["mean"] is None or stats["sd"] is None:
        return "unresolved"
    m, sd = stats["mean"], stats["sd"]
    margin = (threshold - m) if below else (m - threshold)
    if margin > 2 * sd:
        return "holds"
    if -margin > 2 * sd:
        return "fails"
    return "unresolved"


def direction_verdict(stats: dict) -> str:
    """"positive" / "negative" / "unresolved": the sign of a paired difference, past 2 SD only."""
    if stats["n"] < MIN_SEEDS or stats["mean"] is None or stats["sd"] is None:
        return "unresolved"
    if abs(stats["mean"]) > 2 * stats["sd"]:
        return "positive" if stats["mean"] > 0 else "negative"
    return "unresolved"


def _pp(stats: dict) -> str:
    if stats["mean"] is None:
        return "not run"
    sd = f" ± {100 * stats['sd']:.1f}" if stats["sd"] is not None else ""
    return f"{100 * stats['mean']:+.1f}{sd} pp (n = {stats['n']})"


def _pct(stats: dict) -> str:
    return _pp(stats).replace(" pp", " %")


def criteria(tidy: Sequence[dict], diverse: str = DIVERSE, nyu: str = NYU) -> list[dict]:
    """R1-R5 of the pre-registration, each ``{id, criterion, measured, verdict, detail}``."""
    d = lambda tasks, row: per_seed(tidy, tasks, row)           # noqa: E731
    out = []
    mtl = _stats(d(diverse, "mtl"))
    out.append({"id": "R1", "criterion": "diverse set: joint MTL (matched budget) Δm ≤ −10 %",
                "measured": _pct(mtl), "verdict": threshold_verdict(mtl, -0.10, below=True)})
    ta = _stats(d(diverse, "ta"))
    out.append({"id": "R2", "criterion": "diverse set: task arithmetic (α on val, no fix) Δm ≤ −55 %",
                "measured": _pct(ta), "verdict": threshold_verdict(ta, -0.55, below=True)})
    gap_div = paired(d(diverse, "ta+repr"), d(diverse, "ta+head"))
    gap_nyu = paired(d(nyu, "ta+repr"), d(nyu, "ta+head"))
    g, gg = _stats(gap_div), _stats(paired(gap_div, gap_nyu))
    v1 = threshold_verdict(g, 0.05, below=False)
    v2 = direction_verdict(gg)
    v2 = {"positive": "holds", "negative": "fails"}.get(v2, "unresolved")
    verdict = "holds" if v1 == v2 == "holds" else "fails" if "fails" in (v1, v2) else "unresolved"
    out.append({"id": "R3", "criterion": "(TA + repr) − (TA + head) ≥ +5 pp on the diverse set, and larger than on "
                                         "nyu3 by ≥ 2 SD",
                "measured": f"gap {_pp(g)}; gap − nyu3 gap {_pp(gg)}", "verdict": verdict,
                "detail": {"gap": v1, "larger_than_nyu3": v2}})
    means = {r: _stats(d(diverse, r))["mean"] for r in ADAPTER_ROWS}
    means = {r: m for r, m in means.items() if m is not None}
    best = max(means, key=means.get) if means else None
    bm = _stats(paired(d(diverse, best), d(diverse, "mtl"))) if best else _stats({})
    v = direction_verdict(bm)
    out.append({"id": "R4", "criterion": "diverse set: the best adapter row beats joint MTL",
                "measured": f"best adapter row {best}: {best} − MTL {_pp(bm)}" if best else "not run",
                "verdict": {"positive": "holds", "negative": "fails"}.get(v, "unresolved")})
    h = _stats({s: abs(x) for s, x in paired(d(nyu, "ta+head"), d(nyu, "ta+repr")).items()})
    signed = _stats(paired(d(nyu, "ta+head"), d(nyu, "ta+repr")))
    out.append({"id": "R5", "criterion": "nyu3: |(TA + head) − (TA + repr)| ≤ 2 pp",
                "measured": f"(TA + head) − (TA + repr) {_pp(signed)}",
                "verdict": threshold_verdict(h, 0.02, below=True)})
    return out


def findings(tidy: Sequence[dict], diverse: str = DIVERSE, nyu: str = NYU) -> list[dict]:
    """The paper findings checked besides the test (section 3), each ``{finding, measured, verdict}``;
    the verdict is the direction of a paired difference past 2 SD, else "unresolved"."""
    d = lambda tasks, row: per_seed(tidy, tasks, row)           # noqa: E731
    items = []

    def diff(label: str, a: dict, b: dict, paper: str) -> None:
        st = _stats(paired(a, b))
        items.append({"finding": label, "measured": _pp(st), "verdict": direction_verdict(st), "paper": paper})

    diff("MTL loses more on the diverse set than on nyu3: Δm(MTL, diverse) − Δm(MTL, nyu3)", d(diverse, "mtl"),
         d(nyu, "mtl"), "negative (Tables 1 and 3)")
    for s, name in ((nyu, "nyu3"), (diverse, "diverse")):
        diff(f"{name}: MTL 4× steps − MTL", d(s, "mtl4x"), d(s, "mtl"), "positive (longer MTL training)")
        diff(f"{name}: TIES (k = 0.2) − TA", d(s, "ties"), d(s, "ta"), "positive (Table 1)")
        diff(f"{name}: TIES (k = 1.0) − TA", d(s, "ties_k1"), d(s, "ta"), "positive (the authors' code)")
        diff(f"{name}: TA + BN re-estimation − TA", d(s, "ta+bn"), d(s, "ta"), "not in the paper")
        diff(f"{name}: TIES + BN re-estimation − TIES", d(s, "ties+bn"), d(s, "ties"), "not in the paper")
        diff(f"{name}: TA + head − TA", d(s, "ta+head"), d(s, "ta"), "positive (Tables 1 and 3)")
        diff(f"{name}: TA + block adapters − TA + head", d(s, "ta+repr"), d(s, "ta+head"),
             "≈ 0 on NYUv2, positive on Taskonomy")
    return items


def rows_table(tidy: Sequence[dict], sets: Sequence[str] = (NYU, DIVERSE)) -> list[list]:
    """One line per (task set, row): Δm (ratio) mean ± SD and Δm (Eq. 2) mean ± SD, in %."""
    order: list[str] = []
    for r in tidy:
        if r["row"] not in order:
            order.append(r["row"])
    lines = []
    for s in sets:
        for row in order:
            a, b = _stats(per_seed(tidy, s, row)), _stats(per_seed(tidy, s, row, "delta_m_relative"))
            if a["n"]:
                lines.append([s, row, _pct(a), _pct(b)])
    return lines


def alphas_table(tidy: Sequence[dict], sets: Sequence[str] = (NYU, DIVERSE),
                 rows: Sequence[str] = ("ta", "ties", "ties_k1")) -> list[list]:
    """One line per (task set, merge row): the α chosen on val at every seed (tidy rows with ``alpha``;
    "–" for a seed without one), so a merge that fell back to the foundation (α = 0) is visible."""
    seeds = sorted({int(r["seed"]) for r in tidy})
    lines = []
    for s in sets:
        for row in rows:
            got = {int(r["seed"]): r["alpha"] for r in tidy
                   if r["tasks"] == s and r["row"] == row and r.get("alpha") is not None}
            if got:
                lines.append([s, row] + [f"{got[k]:g}" if k in got else "–" for k in seeds])
    return lines


def evaluate(tidy: Sequence[dict]) -> dict:
    """``{"criteria": [...], "findings": [...], "rows": [...], "alphas": [...], "seeds": [...]}`` of a sweep's
    tidy rows."""
    return {"criteria": criteria(tidy), "findings": findings(tidy), "rows": rows_table(tidy),
            "alphas": alphas_table(tidy), "seeds": sorted({int(r["seed"]) for r in tidy})}


def markdown(ev: dict) -> str:
    """The criteria table, the findings table and the mean ± SD rows."""
    parts = [f"Seeds: {', '.join(map(str, ev['seeds']))} (a verdict needs ≥ {MIN_SEEDS} seeds and a margin "
             f"past 2 SD).\n",
             md_table(["criterion", "pre-registered", "measured (mean ± SD across seeds)", "verdict"],
                      [[c["id"], c["criterion"], c["measured"], f"**{c['verdict']}**"] for c in ev["criteria"]]),
             "\n\nOther findings (paired differences of Δm, ratio form; direction only past 2 SD):\n",
             md_table(["finding", "measured", "direction", "paper"],
                      [[f["finding"], f["measured"], f["verdict"], f["paper"]] for f in ev["findings"]]),
             "\n\nEvery row, Δm mean ± SD across seeds:\n",
             md_table(["task set", "row", "Δm (ratio)", "Δm (Eq. 2)"], ev["rows"]), ""]
    if ev.get("alphas"):
        parts += ["\nThe α each merge chose on the validation split, per seed (α = 0: no merge beat the foundation "
                  "there, so the row is the zero-shot model and its realigned rows realign the foundation):\n",
                  md_table(["task set", "row"] + [f"seed {s}" for s in ev["seeds"]], ev["alphas"]), ""]
    return "\n".join(parts)
