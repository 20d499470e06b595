"""Render docs/results.md from JSON: our results tables, the paper's Tables 1-4, the benchmarks, and a
reading of which of the paper's findings hold on our benchmark, computed from the numbers.

    python benchmarks/render_results.py                                  # runs/cpu-0, runs/gpu-0, runs/bench/bench.json
    python benchmarks/render_results.py --run-dir runs/cpu-0 --bench runs/bench/bench.json --out docs/results.md

(``python -m benchmarks.render_results`` is the same.) The sections' own Markdown comes from their modules
(``benchmarks.scenes_rate``, ``course_time``, ``merging_cost``, ``head_realign``, ``table4``); task sets,
rows and their labels from ``simo_lite`` (``tasks.TASK_SETS``, ``experiment.ROWS``, ``rows.row_label``); table
Markdown from ``simo_lite.report``.

Inputs (each may be missing; the document then says "not run" and how to produce it):

- ``<run-dir>/results/table-<tasks>.json`` and ``training-<tasks>.json``, written by
  ``Experiment.results_table`` / ``Experiment.training_table`` (``python -m simo_lite.experiment``, or course
  notebook 07 for nyu3); optional ``<run-dir>/run-meta.json`` or ``bench-meta.json`` (date, host, command);
- ``--gpu-run-dir`` the same for the gpu profile;
- ``--bench`` the ``bench.json`` written by ``benchmarks/bench.py``;
- ``--paper`` the paper's numbers, quoted in ``benchmarks/paper_tables.json`` (with the table each comes from).

Every claim in the reading is a predicate evaluated the same way on our numbers and on the paper's, so
the text says "agrees" or "differs" only because the numbers do. The document is never edited by hand.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import socket
import sys
from pathlib import Path
from typing import Callable, Sequence

if not __package__:                                   # python benchmarks/render_results.py: import as the package
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from simo_lite import report  # noqa: E402
from simo_lite.experiment import ROWS  # noqa: E402
from simo_lite.rows import row_label  # noqa: E402
from simo_lite.tasks import TASK_SETS  # noqa: E402

from benchmarks import course_time, head_realign, merging_cost, scenes_rate, table4  # noqa: E402
from benchmarks.common import PAPER_TABLES, REPO, load_json, md_table, write_text_atomic  # noqa: E402

# Row labels of our tables, from the package's row registry (simo_lite.rows: the table's own labels, else
# the merge method's and fix's); a row registered in a notebook shows with its registered labels.
ROW_LABELS = {name: row_label(name) for name in ROWS}
PAPER_ROW_LABELS = {**ROW_LABELS, "experts": "Task-Specific", "mtl": "MTL", "tall": "TALL-Mask",
                    "ta+head": "TA + head re-align", "ta+repr": "TA + repr. re-align",
                    "ties+head": "TIES + head re-align", "ties+repr": "TIES + repr. re-align"}
DELTA_ROWS = tuple(r for r in ROWS if r != "experts")       # Δm is against the experts
PAIR_SETS = ("nyu3", "taskonomy5")          # (smaller, larger) task set of the "more and more diverse" claims
NOT_RUN = "not run"


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def _mtime(path: Path) -> str:
    return _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def paper_for_set(paper: dict | None) -> dict[str, str]:
    """``{our task set: key of the paper's table it is set against}``, from the tables' ``"ours"``
    field (the shipped ``paper_tables.json`` when ``paper`` is None); task sets not in
    ``simo_lite.tasks.TASK_SETS`` are left out."""
    paper = paper or load_json(PAPER_TABLES) or {"tables": {}}
    return {t["ours"]: key for key, t in paper["tables"].items() if t.get("ours") in TASK_SETS}


def table_name(key: str | None) -> str:
    """"Table 1" for the paper's table key "table1"; "no paper table" for None."""
    return "no paper table" if key is None else key.replace("table", "Table ")


def load_run(run_dir: str | Path, profile: str) -> dict:
    """The results of one run directory: ``{"run_dir", "profile", "meta" (run-meta.json or
    bench-meta.json, or None), "sets": {set name: {"tasks", "path", "date", "rows": {row: dict},
    "training", "training_path"}}}`` for every task set of ``TASK_SETS`` that has a results table."""
    run_dir = Path(run_dir)
    out = {"run_dir": str(run_dir), "profile": profile, "sets": {}, "meta": None}
    for name in ("run-meta.json", "bench-meta.json"):
        meta = load_json(run_dir / name)
        if isinstance(meta, dict):
            out["meta"] = meta
            break
    for set_name, tasks in TASK_SETS.items():
        key = "+".join(tasks)
        path = run_dir / "results" / f"table-{key}.json"
        table = load_json(path)
        if not isinstance(table, list):
            continue
        training_path = run_dir / "results" / f"training-{key}.json"
        training = load_json(training_path)
        out["sets"][set_name] = {"tasks": tasks, "path": str(path), "date": _mtime(path),
                                 "rows": {r["row"]: r for r in table},
                                 "training": training if isinstance(training, dict) else None,
                                 "training_path": str(training_path)}
    return out


# ----------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------
pct = report.pct          # a fraction as "+12.3%" ("12.3%" with sign=False); "–" for None
num = report.num          # a table cell: ints with thousands separators, floats to 4 significant digits


def experiment_command(profile: str, set_name: str, run_dir: str) -> str:
    """The command line that produces a task set's results tables in ``run_dir``."""
    return f"python -m simo_lite.experiment --profile {profile} --tasks {set_name} --run-dir {run_dir}"


def provenance(run: dict, s: dict, set_name: str) -> str:
    """One sentence: date, hardware and command of a run's results table ``s``, and its source file."""
    meta = run["meta"] or {}
    if meta.get("hostname"):
        hw = (f"{meta.get('hostname')}, {meta.get('cpu_model', '?')}, {meta.get('cpu_count', '?')} CPUs, "
              f"torch {meta.get('torch', '?')}, {meta.get('device', '?')}")
        date = meta.get("date", s["date"])
    else:
        hw = "not recorded by the run (simo_lite.experiment writes no host information)"
        date = f"{s['date']} (file time)"
    cmd = meta.get("command") or experiment_command(run["profile"], set_name, run["run_dir"])
    return f"Date: {date}. Hardware: {hw}. Command: `{cmd}`. Source: `{s['path']}`."


# ----------------------------------------------------------------------------------------------
# Our tables
# ----------------------------------------------------------------------------------------------
def results_table_md(s: dict) -> str:
    """Our results table of one task set in Markdown (:func:`simo_lite.report.results_markdown`, ``DOC``
    style): per-task metric (normalised %), Δm (ratio and Eq. 2), steps, samples, trainable params and
    wall-clock seconds per row, rows named by their labels."""
    return report.results_markdown(list(s["rows"].values()), s["tasks"], style=report.DOC)


def training_table_md(tr: dict) -> str:
    """The training table (``Experiment.training_table``'s JSON) in Markdown
    (:func:`simo_lite.report.training_summary_markdown`): per task the linear probe, expert and joint MTL
    metrics with the expert's cost, then joint MTL's cost (wall-clock in seconds)."""
    return report.training_summary_markdown(tr)


def our_results_md(runs: list[dict]) -> list[str]:
    """The "Our results" section's Markdown lines: every task set of every run, or how to produce it."""
    out = ["## Our results", ""]
    for run in runs:
        for set_name, tasks in TASK_SETS.items():
            out += [f"### `{set_name}` ({', '.join(tasks)}), {run['profile']} profile", ""]
            s = run["sets"].get(set_name)
            if s is None:
                out += [f"{NOT_RUN}: `{run['run_dir']}/results/table-{'+'.join(tasks)}.json` not found. "
                        f"Produce it with `{experiment_command(run['profile'], set_name, run['run_dir'])}`.", ""]
                continue
            out += [f"Test split; Δm against the experts. {provenance(run, s, set_name)}", "",
                    results_table_md(s), ""]
            if s["training"]:
                out += [f"Training (test split, `{s['training_path']}`):", "", training_table_md(s["training"]), ""]
            else:
                out += [f"Training table: {NOT_RUN} (`{s['training_path']}` not found).", ""]
    return out


# ----------------------------------------------------------------------------------------------
# The paper's tables
# ----------------------------------------------------------------------------------------------
def paper_table_md(tab: dict) -> str:
    """One of the paper's Tables 1-3 (from paper_tables.json) in Markdown: absolute metrics, their
    normalised %, Δ_MTL; cells the paper prints inconsistently are starred and the note follows."""
    tasks = tab["tasks"]
    bad = {tuple(c) for c in tab.get("inconsistent_cells", [])}
    rows = []
    for name, r in tab["rows"].items():
        cells = []
        for t in tasks:
            v = num(r["metrics"][t["key"]])
            if r["normalized"]:
                v += f" ({pct(r['normalized'][t['key']], sign=False)})"
            if (name, t["key"]) in bad:
                v += " *"
            cells.append(v)
        rows.append([PAPER_ROW_LABELS.get(name, name)] + cells + [pct(r["delta"])])
    md = md_table(["method"] + [f"{t['name']} {'↓' if t['lower_is_better'] else '↑'}" for t in tasks]
                  + ["Δ_MTL"], rows)
    if bad:
        md += "\n\n\\* " + tab.get("inconsistency_note", "inconsistent in the paper")
    return md


def paper_table4_md(tab: dict) -> str:
    """The paper's Table 4 in Markdown: steps, trainable params (millions) and |D|, each with its % of
    MTL's, then the table's note."""
    mtl = tab["rows"]["mtl"]
    rows = []
    for name, r in tab["rows"].items():
        rows.append([r["label"], f"{r['steps']:,} ({100 * r['steps'] / mtl['steps']:.0f}%)",
                     f"{r['trainable_params'] / 1e6:.1f}M "
                     f"({100 * r['trainable_params'] / mtl['trainable_params']:.0f}%)",
                     f"{r['D']:,} ({100 * r['D'] / mtl['D']:.0f}%)"])
    return md_table(["method", "steps (% of MTL)", "trainable params (% of MTL)", "\\|D\\| (% of MTL)"],
                    rows) + f"\n\n{tab.get('note', '')}"


def paper_md(paper: dict | None, path: str) -> list[str]:
    """The "paper's tables" section's Markdown lines (Tables 1-4 from ``paper``; "not run" without it)."""
    out = ["## The paper's tables (quoted)", ""]
    if not paper:
        return out + [f"{NOT_RUN}: `{path}` not found.", ""]
    out += [f"Source: {paper['source']}. Stored in `{path}`. {paper.get('delta_note', '')}", ""]
    for key in ("table1", "table2", "table3"):
        tab = paper["tables"].get(key)
        if tab:
            out += [f"### {tab['title']}", "", paper_table_md(tab), ""]
    if "table4" in paper["tables"]:
        out += [f"### {paper['tables']['table4']['title']}", "", paper_table4_md(paper["tables"]["table4"]), ""]
    return out


# ----------------------------------------------------------------------------------------------
# Findings: one predicate, applied to our numbers and to the paper's
# ----------------------------------------------------------------------------------------------
def _have(d: dict, *keys) -> bool:
    return d is not None and all(d.get(k) is not None for k in keys)


def recovered(d: dict, fix: str, base: str) -> float | None:
    """Fraction of the merge's loss (Δm < 0 against the experts) that the fix closes."""
    if not _have(d, fix, base) or d[base] >= 0:
        return None
    return (d[fix] - d[base]) / -d[base]


def _collapse(row, label, threshold=-0.10):
    def f(d):
        if not _have(d, row):
            return None, None
        return d[row] < threshold, f"{label} Δm {pct(d[row])}"
    return (f"{label} loses more than {-100 * threshold:.0f}% against the experts", f)


def _recovers(fix, base, label):
    def f(d):
        r = recovered(d, fix, base)
        if r is None:
            return None, (None if not _have(d, fix, base) else f"{base} lost nothing ({pct(d[base])})")
        return r > 0.5, f"closes {100 * r:.0f}% of the loss ({pct(d[base])} → {pct(d[fix])})"
    return (f"{label} recovers more than half of {base.upper()}'s loss", f)


def _at_least(a, b, label):
    def f(d):
        if not _have(d, a, b):
            return None, None
        return d[a] >= d[b], f"{pct(d[a])} vs {pct(d[b])} ({100 * (d[a] - d[b]):+.1f} pp)"
    return (label, f)


def _best_fix_vs_mtl(tol=0.02):
    def f(d):
        fixes = [k for k in ("ta+head", "ta+repr", "ties+head", "ties+repr") if _have(d, k)]
        if not fixes or not _have(d, "mtl"):
            return None, None
        best = max(fixes, key=lambda k: d[k])
        return d[best] - d["mtl"] >= -tol, f"best {best} {pct(d[best])} vs MTL {pct(d['mtl'])} " \
                                           f"({100 * (d[best] - d['mtl']):+.1f} pp)"
    return (f"the best head/adapter realignment comes within {100 * tol:.0f} pp of joint MTL (or beats it)", f)


def _mtl_below_experts():
    def f(d):
        if not _have(d, "mtl"):
            return None, None
        return d["mtl"] < 0, f"MTL Δm {pct(d['mtl'])}"
    return ("joint MTL falls short of the experts (Δm < 0)", f)


SINGLE_CLAIMS = [
    _collapse("ta", "task arithmetic"),
    _collapse("ties", "TIES"),
    _recovers("ta+head", "ta", "head realignment"),
    _recovers("ties+head", "ties", "head realignment"),
    _recovers("ta+repr", "ta", "representation realignment"),
    _recovers("ties+repr", "ties", "representation realignment"),
    _at_least("ta+repr", "ta+head", "on TA, representation realignment does at least as well as head realignment"),
    _at_least("ties+repr", "ties+head", "on TIES, representation realignment does at least as well as head "
                                        "realignment"),
    _at_least("ta", "ties", "plain TA does at least as well as plain TIES"),
    _at_least("tall", "ta", "TALL masks do at least as well as plain TA"),
    _best_fix_vs_mtl(),
    _mtl_below_experts(),
]


def _pair_less(row, label):
    def f(small, big):
        if not (_have(small, row) and _have(big, row)):
            return None, None
        return big[row] < small[row], f"{pct(big[row])} (larger set) vs {pct(small[row])} (smaller set)"
    return (label, f)


def _pair_gap():
    def f(small, big):
        if not (_have(small, "ta+repr", "ta+head") and _have(big, "ta+repr", "ta+head")):
            return None, None
        gs, gb = small["ta+repr"] - small["ta+head"], big["ta+repr"] - big["ta+head"]
        return gb > gs, f"TA+repr − TA+head: {100 * gb:+.1f} pp (larger set) vs {100 * gs:+.1f} pp (smaller set)"
    return ("representation realignment gains more over head realignment on the larger set", f)


PAIR_CLAIMS = [
    _pair_less("ta", "task arithmetic loses more on the larger, more diverse task set"),
    _pair_less("ties", "TIES loses more on the larger task set"),
    _pair_less("ta+head", "TA + head realignment ends lower on the larger task set"),
    _pair_gap(),
]


def _cost_less(row, key, label):
    def f(c):
        if c is None or row not in c or "mtl" not in c or c[row].get(key) is None or c["mtl"].get(key) is None:
            return None, None
        ratio = c[row][key] / c["mtl"][key] if c["mtl"][key] else float("nan")
        return c[row][key] < c["mtl"][key], f"{100 * ratio:.1f}% of MTL's"
    return (label, f)


COST_CLAIMS = [
    _cost_less("ta+head", "D", "head realignment trains on fewer distinct labelled images than MTL"),
    _cost_less("ta+head", "steps", "head realignment takes fewer optimiser steps than MTL (summed over heads)"),
    _cost_less("ta+repr", "steps", "representation realignment takes fewer optimiser steps than MTL"),
    _cost_less("ta+head", "trainable_params", "head realignment trains fewer parameters than MTL"),
    _cost_less("ta+repr", "trainable_params", "representation realignment trains fewer parameters than MTL"),
    _cost_less("ta+head", "wall_s", "head realignment takes less wall-clock than MTL"),
    _cost_less("ta+repr", "wall_s", "representation realignment takes less wall-clock than MTL"),
]


def verdict(ours: bool | None, paper: bool | None) -> str:
    """"agrees" / "differs" when both sides can test a claim, else "not run" or "not in the paper"."""
    if ours is None:
        return NOT_RUN
    if paper is None:
        return "not in the paper"
    return "agrees" if ours == paper else "differs"


def evaluate_claims(claims: Sequence[tuple[str, Callable[..., tuple[bool | None, str | None]]]],
                    ours_args: tuple[dict, ...] | None, paper_args: tuple[dict, ...] | None) -> list[dict]:
    """Each ``(label, predicate)`` of ``claims`` applied to our numbers and to the paper's (None: that side
    is missing): ``[{"claim", "ours_holds", "ours" (evidence), "paper_holds", "paper", "verdict"}]``."""
    out = []
    for label, f in claims:
        o_ok, o_ev = f(*ours_args) if ours_args is not None else (None, None)
        p_ok, p_ev = f(*paper_args) if paper_args is not None else (None, None)
        out.append({"claim": label, "ours_holds": o_ok, "ours": o_ev, "paper_holds": p_ok, "paper": p_ev,
                    "verdict": verdict(o_ok, p_ok)})
    return out


def deltas_of(s: dict | None) -> dict | None:
    """``{row: Δm (ratio)}`` of one of our task sets (:func:`load_run`), or None."""
    return None if s is None else {k: r["delta_m_ratio"] for k, r in s["rows"].items()}


def paper_deltas(paper: dict | None, key: str | None) -> dict | None:
    """``{row: Δ_MTL}`` of the paper's table ``key`` (rows the paper leaves blank left out), or None."""
    if not paper or key not in paper["tables"]:
        return None
    return {k: r["delta"] for k, r in paper["tables"][key]["rows"].items() if r.get("delta") is not None}


def costs_of(run: dict, set_name: str) -> dict | None:
    """{row: {steps, samples, trainable_params, wall_s, D}} of one task set, as in the Table 4 section."""
    s = run["sets"].get(set_name)
    if s is None:
        return None
    t4 = table4.run(Path(run["run_dir"]), run["profile"])
    rows = next((x["rows"] for x in t4["sets"] if x["tasks"] == "+".join(s["tasks"])), [])
    return {r["row"]: {k: r[k] for k in ("steps", "samples", "trainable_params", "wall_s", "D")} for r in rows}


def paper_costs(paper: dict | None) -> dict | None:
    """``{row: {steps, trainable_params, D, wall_s=None}}`` from the paper's Table 4, or None."""
    if not paper or "table4" not in paper["tables"]:
        return None
    return {k: {"steps": r["steps"], "trainable_params": r["trainable_params"], "D": r["D"], "wall_s": None}
            for k, r in paper["tables"]["table4"]["rows"].items()}


def yes_no(v: bool | None) -> str:
    """"yes" / "no", or "–" for None."""
    return "–" if v is None else ("yes" if v else "no")


def findings_table(items: list[dict]) -> str:
    """Claim results (:func:`evaluate_claims`) as a Markdown table with both sides' evidence and the verdict."""
    return md_table(["claim", "ours", "holds on ours", "paper", "holds in the paper", "verdict"],
                    [[i["claim"], i["ours"] or "–", yes_no(i["ours_holds"]), i["paper"] or "–",
                      yes_no(i["paper_holds"]), f"**{i['verdict']}**"] for i in items])


def sets_run(run: dict) -> list[str]:
    """The task sets of :data:`TASK_SETS` (in its order) that have a results table in ``run``; every set when
    none has one, so that a run with no results still says "not run" for each."""
    have = [n for n in TASK_SETS if run["sets"].get(n) is not None]
    return have or list(TASK_SETS)


def comparison_table(run: dict, paper: dict | None) -> str:
    """Markdown table of Δm (ratio) per row: ours for every task set, each next to the paper's table it
    is set against ("not run" where a side has no numbers)."""
    cols, data = [], []
    paper_keys = paper_for_set(paper)
    for set_name in sets_run(run):
        d = deltas_of(run["sets"].get(set_name))
        key = paper_keys.get(set_name)
        pd = paper_deltas(paper, key)
        ds = paper["tables"][key]["dataset"] if paper and key in paper["tables"] else key or "–"
        cols += [f"ours {set_name}", f"paper {ds} ({table_name(key)})"]
        data += [d, pd]
    rows = []
    for name in DELTA_ROWS:
        if all(d is None or d.get(name) is None for d in data):
            continue
        rows.append([ROW_LABELS.get(name, name)] + [NOT_RUN if d is None else pct(d.get(name)) for d in data])
    return md_table(["Δm (ratio) vs experts"] + cols, rows)


def reading_md(runs: list[dict], paper: dict | None) -> tuple[list[str], dict]:
    """The "Reading" section's Markdown lines, and ``{profile: [claim results]}`` (each claim's dict of
    :func:`evaluate_claims` plus its ``scope``)."""
    paper_keys = paper_for_set(paper)
    small_set, big_set = PAIR_SETS
    out = ["## Reading: which of the paper's findings hold here", "",
           "Each claim below is one predicate applied to our Δm (ratio form, the paper's convention) and to the "
           "paper's Δ_MTL; nyu3 is set against Table 1 (NYUv2, same three tasks) and taskonomy5 against Table 3 "
           "(Taskonomy, five heterogeneous tasks; different tasks, so only the pattern is comparable). "
           "\"Recovers X% of the loss\" = (Δm after the fix − Δm of the merge) / −Δm of the merge. "
           "**One seed**: these are patterns, not verdicts (a verdict needs a margin past 2 SD across ≥ 3 seeds: see "
           "the evidence section); the cost lines are design properties of the profile, listed apart and never "
           "counted as agreement.", ""]
    all_items = {}
    for run in runs:
        out += [f"### {run['profile']} profile (`{run['run_dir']}`)", "", comparison_table(run, paper), ""]
        shown = sets_run(run)
        missing = [n for n in TASK_SETS if n not in shown]
        if missing:
            out += [f"Task sets without a results table in this run, left out below: {', '.join(missing)}.", ""]
        items = []
        for set_name in shown:
            d = deltas_of(run["sets"].get(set_name))
            pd = paper_deltas(paper, paper_keys.get(set_name))
            res = evaluate_claims(SINGLE_CLAIMS, None if d is None else (d,), None if pd is None else (pd,))
            for r in res:
                r["scope"] = set_name
            items += res
            out += [f"**{set_name}** against {table_name(paper_keys.get(set_name))}:", "",
                    findings_table(res), ""]
        small, big = deltas_of(run["sets"].get(small_set)), deltas_of(run["sets"].get(big_set))
        ps, pb = paper_deltas(paper, paper_keys.get(small_set)), paper_deltas(paper, paper_keys.get(big_set))
        res = evaluate_claims(PAIR_CLAIMS, None if small is None or big is None else (small, big),
                              None if ps is None or pb is None else (ps, pb))
        for r in res:
            r["scope"] = f"{small_set} → {big_set}"
        items += res
        out += ["**More and more diverse tasks** (ours: nyu3 → taskonomy5; paper: Table 1 NYUv2 → Table 3 Taskonomy):",
                "", findings_table(res), ""]
        pc = paper_costs(paper)
        for set_name in shown:
            c = costs_of(run, set_name)
            res = evaluate_claims(COST_CLAIMS, None if c is None else (c,), None if pc is None else (pc,))
            for r in res:
                r["scope"] = f"cost {set_name}"
            items += res
            out += [f"**Design properties: cost against joint MTL, {set_name}** (fixed by the profile's budgets, "
                    f"so not findings; paper: Table 4, Taskonomy; ours: TA rows of the results table; |D| = distinct "
                    f"labelled images):", "", findings_table(res), ""]
        all_items[run["profile"]] = items
        both = [i for i in items if i["verdict"] in ("agrees", "differs") and not i["scope"].startswith("cost")]
        agree = [i for i in both if i["verdict"] == "agrees"]
        differ = [i for i in both if i["verdict"] == "differs"]
        out += [f"**Summary, {run['profile']} profile, one seed:** on {len(agree)} of the {len(both)} result patterns "
                f"that both we and the paper can test the direction is the paper's, on {len(differ)} it is not (cost "
                f"lines excluded; single-seed directions, see the evidence section for verdicts).", ""]
        if differ:
            out += ["Where we differ from the paper:", ""]
            out += [f"- {i['claim']} ({i['scope']}): ours {'yes' if i['ours_holds'] else 'no'} ({i['ours']}); "
                    f"paper {'yes' if i['paper_holds'] else 'no'} ({i['paper']})" for i in differ] + [""]
        ours_only = [i for i in items if i["verdict"] == "not in the paper" and not i["scope"].startswith("cost")]
        if ours_only:
            out += ["Only measured here:", ""]
            out += [f"- {i['claim']} ({i['scope']}): {'yes' if i['ours_holds'] else 'no'} ({i['ours']})"
                    for i in ours_only] + [""]
    if not runs:
        out += [f"{NOT_RUN}: no run directory with results.", ""]
    return out, all_items


# ----------------------------------------------------------------------------------------------
# Cost table (Table 4 format) from our runs
# ----------------------------------------------------------------------------------------------
def cost_md(runs: list[dict], paper: dict | None) -> list[str]:
    """The "Cost against joint MTL" section's Markdown lines: our Table 4 per run and task set
    (:func:`benchmarks.table4.markdown`), then the paper's percentages of MTL."""
    out = ["## Cost against joint MTL (Table 4 format)", ""]
    p4 = paper["tables"].get("table4") if paper else None
    for run in runs:
        if not run["sets"]:
            continue
        t4 = table4.run(Path(run["run_dir"]), run["profile"])
        out += [f"### {run['profile']} profile", ""]
        for set_name, s in run["sets"].items():
            one = {"run_dir": t4["run_dir"], "sets": [x for x in t4["sets"] if x["tasks"] == "+".join(s["tasks"])]}
            src = one["sets"][0].get("D_source", "the profile") if one["sets"] else "the profile"
            out += [f"**{set_name}.** {provenance(run, s, set_name)} \\|D\\| = distinct labelled images, "
                    f"from {src}.", "",
                    table4.markdown(one), ""]
    if p4:
        mtl = p4["rows"]["mtl"]
        out += ["Paper (Table 4, Taskonomy), as % of MTL: " + "; ".join(
            f"{r['label']}: steps {100 * r['steps'] / mtl['steps']:.0f}%, params "
            f"{100 * r['trainable_params'] / mtl['trainable_params']:.0f}%, |D| {100 * r['D'] / mtl['D']:.0f}%"
            for k, r in p4["rows"].items() if k != "mtl") + ". The paper reports no wall-clock.", ""]
    if len(out) == 2:
        out += [f"{NOT_RUN}: no results tables.", ""]
    return out


# ----------------------------------------------------------------------------------------------
# Benchmarks from bench.json
# ----------------------------------------------------------------------------------------------
def bench_md(b: dict | None, path: str) -> list[str]:
    """The "Benchmarks" section's Markdown lines from a bench.json (``b``): environment, course timings,
    scenes, merging (with how memory is measured and a reading) and head realignment; "not run" for
    what is missing."""
    out = ["## Benchmarks (`benchmarks/bench.py`)", ""]
    if not b:
        return out + [f"{NOT_RUN}: `{path}` not found. Produce it with `make bench` "
                      f"(`python benchmarks/bench.py`).", ""]
    e = b.get("env", {})
    out += [f"Source: `{path}`. Date: {e.get('date', '?')}. Hardware: {e.get('hostname', '?')}, "
            f"{e.get('cpu_model', '?')}, {e.get('cpu_count', '?')} CPUs ({e.get('cpu_usable', '?')} usable), "
            f"{e.get('device', '?')}, torch {e.get('torch', '?')} with {e.get('torch_threads', '?')} threads, "
            f"commit `{(e.get('commit') or '?')[:12]}`{' (uncommitted changes)' if e.get('dirty') else ''}. "
            f"Command: `{b.get('command', 'python benchmarks/bench.py')}`"
            + (" (**quick mode: tiny sizes, not representative**)" if b.get("quick") else "") + ".", ""]
    sections = [("Scenes rendering", "scenes", scenes_rate.markdown),
                ("Merging a ViT-B-sized encoder", "merging", merging_cost.markdown),
                ("Head realignment: cached features vs the encoder every step", "head_realign",
                 head_realign.markdown)]
    out += ["### Course notebooks against their budgets", ""]
    course = b.get("course") or {}
    if not course:
        out += [f"{NOT_RUN} (bench ran with `--skip-course` and found no earlier complete course run).", ""]
    for p, sec in course.items():
        out += [course_time.profile_markdown(sec), ""]
    for title, key, render in sections:
        out += [f"### {title}", ""]
        sec = b.get(key)
        if not sec:
            err = (b.get("errors") or {}).get(key)
            out += [f"{NOT_RUN}" + (f" (failed: {err})" if err else "") + ".", ""]
            continue
        out += [render(sec), ""]
        if key == "merging":
            out += [merging_cost.METHOD_NOTE, ""]
            out += merging_cost.reading(sec)
    return out


# ----------------------------------------------------------------------------------------------
# Document
# ----------------------------------------------------------------------------------------------
def decodability_md(path: str | Path) -> list[str]:
    """The go / no-go section (docs/preregistration.md, section 1): the probe table of
    ``benchmarks.decodability`` from its JSON, with the measured margins; "not run" without it."""
    from benchmarks import decodability
    out = ["## Go / no-go: does the foundation create the paper's regime?", "",
           "Pre-registered in [preregistration.md](preregistration.md) (section 1) before the runs. Appearance-level "
           "targets must be *less* decodable from the frozen foundation than from their own experts (G1), the "
           "merge should lie between the two (G2), and the geometric targets must keep what pretraining gave "
           "them (G3: foundation better than random).", ""]
    result = load_json(path)
    if not isinstance(result, dict) or "metrics" not in result:
        return out + [f"{NOT_RUN}: `{path}` not found. Produce it with `python -m benchmarks.decodability`.", ""]
    out += [decodability.markdown(result), ""]
    g1 = {t: v["G1_expert_better"] for t, v in result["verdicts"].items() if "G1_expert_better" in v}
    g3 = {t: v["invariant_vs_random"] > 0 for t, v in result["verdicts"].items() if t in decodability.GEOMETRIC}
    out += [f"Measured on one seed ({result['seed']}), so these are margins, not yet verdicts (a verdict needs "
            f"2 SD across ≥ 3 seeds): G1 holds in direction for {sum(g1.values())} of {len(g1)} targets with an "
            f"expert ({', '.join(t for t, ok in g1.items() if ok) or 'none'}); G3 for "
            f"{sum(g3.values())} of {len(g3)} geometric targets.", ""]
    return out


def evidence_md(path: str | Path) -> list[str]:
    """The pre-registered reproduction test (docs/preregistration.md, section 2) on a multi-seed sweep's tidy
    rows (:mod:`benchmarks.evidence`); "not run" without them."""
    from benchmarks import evidence
    out = ["## The pre-registered test, on several seeds", "",
           "Pre-registered in [preregistration.md](preregistration.md) (sections 2 and 3) before the runs. Each "
           "criterion is reported as measured, pass or fail; a verdict needs ≥ 3 seeds and a margin past 2 SD "
           "across them, otherwise it is *unresolved*.", ""]
    tidy = load_json(path)
    if not isinstance(tidy, list) or not tidy:
        return out + [f"{NOT_RUN}: `{path}` not found. Produce it with `python -m simo_lite.experiment --profile cpu "
                      f"--tasks nyu3 taskonomy5 --seeds 0 1 2` (the sweep's `results.json`).", ""]
    return out + [evidence.markdown(evidence.evaluate(tidy)), ""]


def budgets_md(convergence_path: str | Path, realign_path: str | Path) -> list[str]:
    """Convergence at matched budgets and the realignment budgets (docs/preregistration.md, sections 4-5)."""
    from benchmarks import convergence, realign_curves
    out = ["## Budgets: converged experts and MTL, realignment until it plateaus", ""]
    c = load_json(convergence_path)
    out += [convergence.markdown(c), ""] if isinstance(c, dict) and c.get("runs") else \
        [f"{NOT_RUN}: `{convergence_path}` (python -m benchmarks.convergence).", ""]
    out += shipped_convergence_md()
    out += budget4x_md()
    r = load_json(realign_path)
    out += [realign_curves.markdown(r), ""] if isinstance(r, dict) and r.get("sets") else \
        [f"{NOT_RUN}: `{realign_path}` (python -m benchmarks.realign_curves).", ""]
    return out


def budget4x_md(depth_path: str | Path = REPO / "docs/convergence-depth4x-cpu-0.json",
                nyu3_path: str | Path = REPO / "docs/budget4x-cpu-0.json",
                diverse_path: str | Path = REPO / "docs/budget4x-taskonomy5-cpu-0.json") -> list[str]:
    """The 4x-budget runs (docs/preregistration.md, sections 7-9): the depth expert alone, then each task
    set's experts with its table again at the matched 4x budget (with the curves' figure where it was
    drawn, docs/images/<name>.png); nothing for a file that is not there."""
    from benchmarks import budget4x, convergence
    out = []
    d = load_json(depth_path)
    if isinstance(d, dict) and d.get("runs"):
        out += ["### The depth expert at 4× the budget (section 7)", "", convergence.markdown(d), ""]
    for path, title in ((nyu3_path, "nyu3 at a matched 4× budget (section 8)"),
                        (diverse_path, "taskonomy5 at a matched 4× budget (section 9)")):
        r = load_json(path)
        if isinstance(r, dict) and r.get("criteria"):
            image = Path(path).parent / "images" / Path(path).with_suffix(".png").name
            shown = [f"![validation-loss curves at 4×](images/{image.name})", ""] if image.is_file() else []
            out += [f"### {title}", "", budget4x.markdown(r), ""] + shown
    return out


SHIPPED_MANIFESTS = ("data/models-cpu.json", "data/evidence/seed-*/models-cpu.json",
                     "data/evidence/mtl4x-seed-*/models-cpu.json")


def shipped_convergence_md(patterns: Sequence[str] = SHIPPED_MANIFESTS, root: Path = REPO) -> list[str]:
    """Every shipped model's convergence, read from the manifests ``simo_lite.shipped`` writes (``patterns``:
    globs under ``root``): seed, model, total steps (linear probe + fine-tuning), the validation-loss fall over
    the last 20 % of steps (``val_tail``, a fraction; positive: still falling) and whether it is under
    ``benchmarks.convergence.THRESHOLD``, and the training wall-clock in s. "not run" when no manifest is found."""
    from benchmarks.convergence import THRESHOLD
    rows, seen = [], set()
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            manifest = load_json(path)
            if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
                continue
            for entry in manifest["models"].values():
                tail = entry.get("val_tail")
                ident = (manifest.get("seed"), entry.get("name"), entry.get("key"))
                if tail is None or ident in seen:
                    continue
                seen.add(ident)
                rows.append([manifest.get("seed"), entry["name"], entry.get("steps", "–"), f"{100 * tail:+.2f} %",
                             "yes" if tail < THRESHOLD else "**no**", f"{entry.get('wall_s', float('nan')):.0f}",
                             path.relative_to(root).as_posix()])
    out = ["Every shipped run (the course's seed 0 and the evidence seeds), from the models' manifests:", ""]
    if not rows:
        return out + [f"{NOT_RUN}: no manifest matches {', '.join(patterns)} (`make experts`, "
                      "`make evidence-models`, `make evidence-mtl4x`).", ""]
    rows.sort(key=lambda r: (r[0], str(r[1]), r[2] if isinstance(r[2], int) else 0))
    n_ok = sum(r[4] == "yes" for r in rows)
    return out + [md_table(["seed", "model", "steps", "val-loss fall, last 20 %", "converged (< 1 %)", "train s",
                            "manifest"], rows), "",
                  f"{n_ok} of {len(rows)} runs fell less than 1 % over their last 20 % of steps.", ""]


def relationships_md(path: str | Path, paper_path: str | Path) -> list[str]:
    """Fig. 1 over every subset and the λ sweeps at step 0.1 (:mod:`benchmarks.relationships`)."""
    from benchmarks import relationships
    out = ["## Task relationships: Fig. 1 over every subset, λ sweeps", ""]
    r = load_json(path)
    if not isinstance(r, dict) or not r.get("sets"):
        return out + [f"{NOT_RUN}: `{path}` (python -m benchmarks.relationships).", ""]
    image = Path(path).parent / "images" / Path(path).with_suffix(".png").name       # docs/images/<name>.png
    shown = [f"![Fig. 1 and the λ sweeps](images/{image.name})", ""] if image.is_file() else []
    return out + [relationships.markdown(r, paper_path), ""] + shown


def render(run_dirs: list[tuple[str, str]], bench_path: str, paper_path: str, argv_text: str,
           decodability_path: str | Path = "runs/bench/decodability-cpu-0.json",
           evidence_path: str | Path = "docs/evidence-cpu.json",
           convergence_path: str | Path = "docs/convergence-cpu-0.json",
           realign_path: str | Path = "docs/realign-curves-cpu-0.json",
           relationships_path: str | Path = "docs/relationships-cpu-0.json") -> tuple[str, dict]:
    """The whole document and the claim results per profile (``{profile: [claim dict]}``).

    ``run_dirs``: ``[(profile, run dir)]``; ``argv_text``: the command shown in the header. Paths under
    the repository are printed relative to it."""
    paper = load_json(paper_path)
    runs_all = [load_run(d, p) for p, d in run_dirs]
    runs = [r for r in runs_all if r["sets"]]
    b = load_json(bench_path)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# simo_lite results", "",
             f"*Generated by `{argv_text}` on {now} ({socket.gethostname()}); do not edit by hand: change the "
             f"JSON inputs or `benchmarks/render_results.py` and re-run `make results-doc`.*", "",
             "Our numbers come from SIMO-lite Scenes (procedural rooms) with a small ViT, the paper's from "
             "DINOv2-B on real datasets, so only the patterns are comparable, not the absolute values. "
             "Δm (ratio) = mean per-task normalised performance − 1 against the experts (the form the paper's "
             "tables print); Δm (Eq. 2) is the paper's formula, shown alongside.", ""]
    reading, items = reading_md(runs, paper)
    lines += decodability_md(decodability_path)
    lines += evidence_md(evidence_path)
    lines += budgets_md(convergence_path, realign_path)
    lines += our_results_md([r for r in runs_all if r["sets"] or r["profile"] == "cpu"])
    lines += reading
    lines += relationships_md(relationships_path, paper_path)
    lines += cost_md(runs, paper)
    lines += bench_md(b, bench_path)
    lines += paper_md(paper, paper_path)
    doc = "\n".join(lines).rstrip() + "\n"
    return doc.replace(f"{REPO}/", ""), items                      # repository-relative paths in the text


def main(argv: Sequence[str] | None = None) -> str:
    """Parse the command line, render the document, write it atomically to ``--out`` and return it."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", default="runs/cpu-0", help="cpu-profile run directory (results/table-*.json)")
    ap.add_argument("--gpu-run-dir", default="runs/gpu-0", help="gpu-profile run directory, used where present")
    ap.add_argument("--bench", default="runs/bench/bench.json")
    ap.add_argument("--paper", default=str(PAPER_TABLES))
    ap.add_argument("--out", default="docs/results.md")
    ap.add_argument("--decodability", default="runs/bench/decodability-cpu-0.json",
                    help="the go / no-go probes (python -m benchmarks.decodability)")
    ap.add_argument("--evidence", default="docs/evidence-cpu.json", help="the multi-seed sweep's tidy rows")
    ap.add_argument("--convergence", default="docs/convergence-cpu-0.json")
    ap.add_argument("--realign-curves", default="docs/realign-curves-cpu-0.json")
    ap.add_argument("--relationships", default="docs/relationships-cpu-0.json")
    args = ap.parse_args(argv)
    shown = ["python benchmarks/render_results.py", "--run-dir", args.run_dir, "--bench", args.bench]
    if args.gpu_run_dir != "runs/gpu-0":
        shown += ["--gpu-run-dir", args.gpu_run_dir]
    run_dirs = [("cpu", args.run_dir)]
    if Path(args.gpu_run_dir).exists():
        run_dirs.append(("gpu", args.gpu_run_dir))
    doc, _ = render(run_dirs, args.bench, args.paper, " ".join(shown), args.decodability, args.evidence,
                    args.convergence, args.realign_curves, args.relationships)
    out = write_text_atomic(Path(args.out), doc)
    print(f"wrote {out} ({len(doc.splitlines())} lines)")
    return doc


if __name__ == "__main__":
    main()
