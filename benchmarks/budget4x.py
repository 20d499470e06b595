"""``budget4x`` section: a task set's results at a matched 4x fine-tuning budget (docs/preregistration.md,
sections 8 and 9).

Every expert of the set and its joint MTL model fine-tune 3,200 steps, 4x the cpu profile's 800, from the
same foundation (seed 0). The results table is computed again against these experts and set beside the
1x rows of the evidence sweep (``docs/evidence-cpu.json``, seeds 0-2), and the pre-registered criteria
(E1-E6 for nyu3, F1-F6 for taskonomy5) are reported as measured. Inputs:

- the 4x table: ``python -m simo_lite.experiment --profile cpu --tasks nyu3 --set finetune_steps=3200
  --set mtl_finetune_steps=3200 ... --run-dir runs/conv4x`` (its ``results/table-<tasks>.json``);
- the 4x experts' convergence records (``python -m benchmarks.convergence --budgets 3200 --tasks <t>``);
- the shipped 4x MTL model's manifest (``data/evidence/mtl4x-seed-0/models-cpu.json``);
- the experts' encoders at both budgets and the foundation, for the task vectors' lengths.

Δm here is the ratio form (the paper's tables), as a fraction; "pp" are percentage points of it.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Sequence

from benchmarks.common import REPO, load_json, md_table, write_section
from benchmarks.evidence import DIVERSE, NYU, per_seed

SETS = {"nyu3": NYU, "taskonomy5": DIVERSE}      # task-set name -> the evidence rows' "tasks" key
ADAPTERS = ("ta+repr", "ta+lora", "ties+repr", "ties+lora")
ROWS = ("mtl", "ta", "ties", "ta+head", "ta+repr", "ta+lora", "ties+head", "ties+repr", "ties+lora", "ta+bn", "ties+bn")
LABELS = {"experts": "experts (LP→FT)", "mtl": "joint MTL", "zeroshot": "zero-shot (α = 0)", "ta": "task arithmetic",
          "ties": "TIES", "ta+head": "TA + head realign", "ta+repr": "TA + block adapters",
          "ta+lora": "TA + PEFT LoRA", "ties+head": "TIES + head realign", "ties+repr": "TIES + block adapters",
          "ties+lora": "TIES + PEFT LoRA", "ta+bn": "TA + BN re-estimation",
          "ties+bn": "TIES + BN re-estimation"}
CONVERGED = 0.01          # section 4: val loss falls < 1 % over the last 20 % of steps
GAIN = 0.03               # E2: a 4x expert is >= 3 % better on its test metric


def relative_gain(new: float, old: float, lower_is_better: bool) -> float:
    """How much better ``new`` is than ``old`` as a fraction of ``old`` (positive = better)."""
    return (old - new) / old if lower_is_better else (new - old) / old


def task_vector_norm(encoder: dict, pretrained: dict) -> float:
    """L2 norm of ``encoder - pretrained`` over the floating-point tensors both hold (all layers together)."""
    import torch
    total = 0.0
    for k, v in encoder.items():
        if k in pretrained and v.is_floating_point():
            total += float(torch.sum((v.double() - pretrained[k].double()) ** 2))
    return total ** 0.5


def mtl_delta(mtl_metrics: dict[str, float], experts: dict[str, float]) -> float:
    """Δm (ratio form, fraction) of the MTL model's test metrics against the experts' (``{task: metric}``)."""
    from simo_lite.metrics import delta_m
    from simo_lite.tasks import lower_is_better
    ts = [t for t in experts if t in mtl_metrics]
    return delta_m({t: mtl_metrics[t] for t in ts}, {t: experts[t] for t in ts}, lower_is_better(ts))


def sd_1x(tidy: Sequence[dict], row: str, minus: str | None = None, tasks: str = NYU) -> float | None:
    """Sample SD across the sweep's seeds of one row's Δm (or of ``row - minus`` paired by seed) on the
    task set ``tasks`` (the evidence rows' key: names joined by "+")."""
    a = per_seed(tidy, tasks, row)
    if minus is not None:
        b = per_seed(tidy, tasks, minus)
        a = {s: a[s] - b[s] for s in a if s in b}
    return statistics.stdev(a.values()) if len(a) > 1 else None


def _verdict(ok: bool, change: float | None = None, sd: float | None = None) -> str:
    """"holds"/"fails", or "unresolved" when the change from the 1x table is smaller than the seed SD."""
    if change is not None and sd is not None and abs(change) < sd:
        return "unresolved"
    return "holds" if ok else "fails"


def criteria(res: dict) -> list[dict]:
    """The set's pre-registered criteria, each ``{id, text, measured, verdict}``, from :func:`run`'s result."""
    return criteria_diverse(res) if res["set"] == "taskonomy5" else criteria_nyu3(res)


def criteria_nyu3(res: dict) -> list[dict]:
    """E1-E6 of section 8 (nyu3)."""
    out = []
    conv = res["convergence"]
    tails = ", ".join(f"{t} {100 * conv[t]['tail']:+.2f} %" for t in ("seg", "normals"))
    out.append({"id": "E1", "text": "seg and normals experts converge at 4x (val-loss tail < 1 %)",
                "measured": tails, "verdict": _verdict(all(conv[t]["tail"] < CONVERGED for t in ("seg", "normals")))})
    g = res["expert_gain"]
    out.append({"id": "E2", "text": "each 4x expert >= 3 % better on its test metric than the 1x expert",
                "measured": ", ".join(f"{t} {100 * g[t]:+.1f} %" for t in ("seg", "normals")),
                "verdict": _verdict(all(g[t] >= GAIN for t in ("seg", "normals")))})
    d4, d1, sd = res["dm_4x"], res["dm_1x"], res["sd_1x"]
    out.append({"id": "E3", "text": "TA Δm against the 4x experts <= −42.6 % (1x: the table's TA − 2 pp)",
                "measured": f"{100 * d4['ta']:+.1f} % (1x: {100 * d1['ta']:+.1f} %, seed SD {100 * sd['ta']:.1f} pp)",
                "verdict": _verdict(d4["ta"] <= d1["ta"] - 0.02, d4["ta"] - d1["ta"], sd["ta"])})
    rec4, rec1 = d4["ta+head"] - d4["ta"], d1["ta+head"] - d1["ta"]
    out.append({"id": "E4", "text": "TA + head ≥ TA + 10 pp",
                "measured": f"{100 * rec4:+.1f} pp (1x: {100 * rec1:+.1f} pp)", "verdict": _verdict(rec4 >= 0.10)})
    gap4, gap1 = d4["ta+head"] - d4["ta+repr"], d1["ta+head"] - d1["ta+repr"]
    out.append({"id": "E5", "text": "|(TA + head) − (TA + block adapters)| ≤ 2 pp",
                "measured": f"{100 * gap4:+.1f} pp (1x: {100 * gap1:+.1f} pp, seed SD {100 * sd['head-repr']:.1f} pp)",
                "verdict": _verdict(abs(gap4) <= 0.02)})
    out.append({"id": "E6", "text": "|Δm(joint MTL at 4x)| ≤ 5 % against the 4x experts",
                "measured": f"{100 * d4['mtl']:+.1f} %", "verdict": _verdict(abs(d4["mtl"]) <= 0.05)})
    return out


def _margin_verdict(value: float, threshold: float, below: bool, sd: float | None) -> str:
    """Section 9's rule for one seed: "holds" when ``value`` passes ``threshold`` (≤ when ``below``) by more
    than 2 ``sd`` (the same quantity's SD across the 1x seeds), "fails" when it misses by more, else
    "unresolved" (also when there is no SD)."""
    if sd is None:
        return "unresolved"
    margin = (threshold - value) if below else (value - threshold)
    return "holds" if margin > 2 * sd else "fails" if -margin > 2 * sd else "unresolved"


def criteria_diverse(res: dict) -> list[dict]:
    """F1-F6 of section 9 (taskonomy5)."""
    out = []
    conv, g = res["convergence"], res["expert_gain"]
    new = [t for t in ("autoencoder", "keypoints", "texture_edges") if t in conv]
    out.append({"id": "F1", "text": "autoencoder, keypoints and texture_edges experts converge at 4x (val-loss tail < 1 %)",
                "measured": ", ".join(f"{t} {100 * conv[t]['tail']:+.2f} %" for t in new),
                "verdict": _verdict(len(new) == 3 and all(conv[t]["tail"] < CONVERGED for t in new))})
    plateaued = ("keypoints", "texture_edges")
    out.append({"id": "F2", "text": "autoencoder ≥ 3 % better at 4x; keypoints and texture_edges (converged at 1x) "
                                    "change by < 3 %",
                "measured": ", ".join(f"{t} {100 * g[t]:+.1f} %" for t in ("autoencoder",) + plateaued),
                "verdict": _verdict(g["autoencoder"] >= GAIN and all(abs(g[t]) < GAIN for t in plateaued))})
    d4, sd = res["dm_4x"], res["sd_1x"]
    out.append({"id": "F3", "text": "joint MTL (matched 4x) Δm ≤ −10 %",
                "measured": f"{100 * d4['mtl']:+.1f} % (1x seed SD {100 * sd['mtl']:.1f} pp)",
                "verdict": _margin_verdict(d4["mtl"], -0.10, True, sd["mtl"])})
    out.append({"id": "F4", "text": "task arithmetic Δm ≤ −55 %",
                "measured": f"{100 * d4['ta']:+.1f} % (1x seed SD {100 * sd['ta']:.1f} pp)",
                "verdict": _margin_verdict(d4["ta"], -0.55, True, sd["ta"])})
    gap = d4["ta+repr"] - d4["ta+head"]
    out.append({"id": "F5", "text": "(TA + block adapters) − (TA + head) ≥ +5 pp",
                "measured": f"{100 * gap:+.1f} pp (1x seed SD {100 * sd['head-repr']:.1f} pp)",
                "verdict": _margin_verdict(gap, 0.05, False, sd["head-repr"])})
    best = max((r for r in ADAPTERS if r in d4), key=lambda r: d4[r])
    diff = d4[best] - d4["mtl"]
    sd_best = res.get("sd_best_minus_mtl")
    out.append({"id": "F6", "text": "the best adapter row beats joint MTL (matched 4x)",
                "measured": f"{best}: {100 * diff:+.1f} pp over MTL",
                "verdict": _margin_verdict(diff, 0.0, False, sd_best)})
    return out


def _read_encoder(folder: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(folder / "encoder.safetensors"))


def run(table4x: str | Path, convergence: dict[str, str | Path], mtl_manifest: str | Path,
        evidence: str | Path, experts_1x: dict[str, str | Path] | None = None,
        experts_4x: dict[str, str | Path] | None = None, foundation: str | Path | None = None,
        set_name: str = "nyu3") -> dict[str, Any]:
    """Collect the section of the task set ``set_name`` (a key of :data:`SETS`): ``table4x`` (the
    experiment's table JSON, a list of rows), ``convergence`` (``{task: convergence JSON}`` of the 4x
    experts), the MTL 4x manifest, the evidence sweep's tidy rows; with the three encoder arguments
    (``{task: model folder}`` at each budget, the foundation's safetensors) also the task vectors' L2
    norms at both budgets."""
    from simo_lite.tasks import get_tasks, lower_is_better
    if set_name not in SETS:
        raise ValueError(f"budget4x covers the task sets {sorted(SETS)}, not {set_name!r}")
    key, tasks = SETS[set_name], get_tasks(set_name)
    rows4 = {r["row"]: r for r in load_json(table4x)}
    tidy = load_json(evidence)
    lower = lower_is_better(tasks)
    experts4 = rows4["experts"]["metrics"]
    experts1 = {r["task"]: r["value"] for r in tidy
                if r["tasks"] == key and r["row"] == "experts" and r["seed"] == 0}
    conv = {}
    for t, p in convergence.items():
        r = load_json(p)["runs"][0]
        conv[t] = {"tail": r["tail"], "test": r["test"][t], "wall_s": r["wall_s"], "budget": r["budget"],
                   "val_loss": r.get("val_loss", [])}
    manifest = load_json(mtl_manifest)
    mtl = next(m for m in manifest["models"].values() if m["name"] == "mtl-" + "+".join(tasks))
    dm4 = {k: rows4[k]["delta_m_ratio"] for k in rows4 if k != "experts"}
    dm4["mtl"] = mtl_delta(mtl["test"], experts4)
    dm1 = {k: per_seed(tidy, key, k).get(0) for k in ("mtl", "mtl4x") + ROWS[1:]}
    sds = {k: sd_1x(tidy, k, tasks=key) for k in ROWS}
    sds["head-repr"] = sd_1x(tidy, "ta+head", "ta+repr", tasks=key)
    best = max((r for r in ADAPTERS if r in dm4), key=lambda r: dm4[r], default=None)
    res: dict[str, Any] = {
        "set": set_name, "tasks": list(tasks), "experts_4x": experts4, "experts_1x": experts1, "convergence": conv,
        "expert_gain": {t: relative_gain(experts4[t], experts1[t], lower[t]) for t in tasks},
        "mtl_4x": {"metrics": mtl["test"], "val_tail": mtl["val_tail"], "steps": mtl["steps"],
                   "wall_s": mtl["wall_s"], "normalized": {t: (experts4[t] / mtl["test"][t] if lower[t]
                                                                else mtl["test"][t] / experts4[t]) for t in tasks}},
        "rows_4x": {k: {"metrics": r["metrics"], "normalized": r.get("normalized"), "delta_m": r["delta_m_ratio"],
                        "alpha": r.get("alpha")} for k, r in rows4.items()},
        "dm_4x": dm4, "dm_1x": dm1, "sd_1x": sds,
        "sd_best_minus_mtl": sd_1x(tidy, best, "mtl", tasks=key) if best else None}
    if experts_1x and experts_4x and foundation:
        from safetensors.torch import load_file
        pre = load_file(str(foundation))
        res["tv_norm"] = {t: {"1x": task_vector_norm(_read_encoder(Path(experts_1x[t])), pre),
                              "4x": task_vector_norm(_read_encoder(Path(experts_4x[t])), pre)} for t in tasks}
    res["criteria"] = criteria(res)
    return res


def markdown(res: dict) -> str:
    """The section's text: the 4x table beside the 1x one, the task vectors' lengths, the criteria."""
    from simo_lite.tasks import get_task
    e4, e1 = res["experts_4x"], res["experts_1x"]
    section = 9 if res.get("set") == "taskonomy5" else 8
    lines = [f"{res.get('set', 'nyu3')} at a matched 4× fine-tuning budget (experts and joint MTL 3,200 steps), cpu "
             f"profile, seed 0. Pre-registered in docs/preregistration.md, section {section}.", ""]
    lines.append(md_table(["expert", "metric", "1× (800 steps)", "4× (3,200 steps)", "better by", "val-loss tail at 4×"],
                          [[t, get_task(t).metric_name, f"{e1[t]:.4f}", f"{e4[t]:.4f}",
                            f"{100 * res['expert_gain'][t]:+.1f} %",
                            f"{100 * res['convergence'][t]['tail']:+.2f} %" if t in res["convergence"] else "–"]
                           for t in res["tasks"]]))
    lines += ["", "Δm (ratio form) of each row against the experts trained with the same budget:", ""]
    body = []
    for k in ("mtl",) + ROWS[1:]:
        sd = res["sd_1x"].get(k)
        body.append([LABELS.get(k, k), f"{100 * res['dm_1x'][k]:+.1f} %" if res["dm_1x"].get(k) is not None else "–",
                     f"{100 * sd:.1f} pp" if sd is not None else "–",
                     f"{100 * res['dm_4x'][k]:+.1f} %" if k in res["dm_4x"] else "not run"])
    lines.append(md_table(["row", "1× Δm (seed 0)", "1× seed SD (n = 3)", "4× Δm (seed 0)"], body))
    m = res["mtl_4x"]
    lines += ["", f"Joint MTL at 4× ({m['steps']:,} steps with its probe; shipped in data/evidence/mtl4x-seed-0): "
              + ", ".join(f"{t} {v:.4f} ({100 * m['normalized'][t]:.1f} % of the 4× expert)" for t, v in m["metrics"].items())
              + f"; val-loss tail {100 * m['val_tail']:+.2f} %."]
    if "tv_norm" in res:
        lines += ["", md_table(["expert", "task-vector L2 norm, 1×", "4×", "ratio"],
                               [[t, f"{v['1x']:.3f}", f"{v['4x']:.3f}", f"{v['4x'] / v['1x']:.2f}"]
                                for t, v in res["tv_norm"].items()])]
    lines += ["", md_table(["criterion", "prediction", "measured", "verdict"],
                           [[c["id"], c["text"], c["measured"], f"**{c['verdict']}**"] for c in res["criteria"]]), ""]
    return "\n".join(lines)


def plot(res: dict, path: str | Path) -> Path:
    """The 4x experts' validation-loss curves, each relative to its first measured point (legend = expert),
    with the last 20 % of steps shaded: the window the convergence criterion reads."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from benchmarks.common import save_figure
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    budget = 0
    for t, c in res["convergence"].items():
        if c.get("val_loss"):
            steps, vals = zip(*c["val_loss"])
            ax.plot(steps, [v / vals[0] for v in vals], marker=".", label=f"{t} (tail {100 * c['tail']:+.2f} %)")
            budget = max(budget, c["budget"])
    if budget:
        ax.axvspan(0.8 * budget, budget, color="0.9", zorder=0, label="last 20 % of steps")
    ax.set(title=f"{res.get('set', 'nyu3')} experts at 4× the budget: validation loss",
           xlabel="fine-tuning step", ylabel="validation loss / first measured")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def expert_folders(root: str | Path, tasks: Sequence[str]) -> dict[str, Path] | None:
    """``{task: the one expert-<task>-<key> folder under root}``; None when one is missing; an error when a
    task has several (the section would not know which budget it read)."""
    found = {}
    for t in tasks:
        hits = sorted(Path(root).glob(f"expert-{t}-*"))
        if len(hits) > 1:
            raise ValueError(f"{root} holds {len(hits)} expert folders of {t!r} ({', '.join(h.name for h in hits)}): "
                             "point --experts-1x/--experts-4x at a folder with one per task")
        if not hits:
            return None
        found[t] = hits[0]
    return found


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.budget4x [--set taskonomy5]``: collect, print and write
    ``docs/budget4x[-<set>]-cpu-0.{json,md}`` (nyu3 keeps the unsuffixed name)."""
    import argparse
    from simo_lite.tasks import get_tasks
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", dest="set_name", default="nyu3", choices=sorted(SETS))
    ap.add_argument("--table", default=None, help="default: runs/conv4x/results/table-<tasks>.json")
    ap.add_argument("--convergence", nargs="+", default=None, metavar="TASK=JSON",
                    help="default: docs/convergence-4x-<task>-cpu-0.json of each task (depth: convergence-depth4x)")
    ap.add_argument("--mtl-manifest", default=str(REPO / "data/evidence/mtl4x-seed-0/models-cpu.json"))
    ap.add_argument("--evidence", default=str(REPO / "docs/evidence-cpu.json"))
    ap.add_argument("--experts-1x", default=str(REPO / "data/models-cpu"), help="folder of the 1x expert folders")
    ap.add_argument("--experts-4x", default=str(REPO / "runs/conv4x/models"), help="folder of the 4x expert folders")
    ap.add_argument("--foundation", default=str(REPO / "data/foundation-cpu-invariant.safetensors"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    tasks = get_tasks(args.set_name)
    table = args.table or REPO / "runs/conv4x/results" / f"table-{'+'.join(tasks)}.json"
    conv = (dict(s.split("=", 1) for s in args.convergence) if args.convergence else
            {t: REPO / "docs" / ("convergence-depth4x-cpu-0.json" if t == "depth" else f"convergence-4x-{t}-cpu-0.json")
             for t in tasks})
    out = args.out or REPO / "docs" / ("budget4x-cpu-0" if args.set_name == "nyu3" else f"budget4x-{args.set_name}-cpu-0")
    res = run(table, conv, args.mtl_manifest, args.evidence, expert_folders(args.experts_1x, tasks),
              expert_folders(args.experts_4x, tasks), args.foundation, set_name=args.set_name)
    print(write_section(Path(out), res, markdown))
    print(plot(res, Path(out).parent / "images" / (Path(out).name + ".png")))


if __name__ == "__main__":
    main()
