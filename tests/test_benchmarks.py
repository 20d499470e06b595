"""Tests of the benchmarks package (driver, sections, results document; fast: quick sizes, no course run).

- the hand-built ViT shape table matches timm's VisionTransformer;
- ``bench.py --quick`` writes a complete bench.json (schema, environment, every section) atomically, and
  its merging figures are physically sane (a merge that returns an encoder allocates at least one);
- course timings are read from runtimes.json with the right budget verdicts, and reused when complete;
- the quoted paper tables are internally consistent (normalised = ratio of absolutes, Δ = mean − 1);
- render_results renders from a synthetic set of results and from missing inputs, and its reading
  follows the numbers (a claim flips when the numbers do).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:              # `pytest` (not `python -m pytest`) does not put the checkout on it
    sys.path.insert(0, str(REPO))

from benchmarks import bench, common, course_time, merging_cost, render_results, table4  # noqa: E402

from simo_lite.metrics import delta_m, normalized_performance  # noqa: E402
from simo_lite.tasks import lower_is_better  # noqa: E402


# ----------------------------------------------------------------------------------------------
# Synthetic results (the JSON that Experiment.results_table writes)
# ----------------------------------------------------------------------------------------------
def _metrics_for(tasks, experts, ratio):
    """Metrics whose normalised performance is ``ratio`` on every task (so Δm ratio = ratio - 1)."""
    low = lower_is_better(tasks)
    return {t: experts[t] / ratio if low[t] else experts[t] * ratio for t in tasks}


def _table(tasks, deltas: dict, costs: dict | None = None) -> list[dict]:
    experts = {t: v for t, v in {"seg": 0.5, "depth": 0.6, "normals": 20.0, "edges": 0.4, "albedo": 0.1,
                                 "autoencoder": 0.05, "keypoints": 0.3, "texture_edges": 0.6}.items()
               if t in tasks}
    low = lower_is_better(tasks)
    rows = []
    for name, d in deltas.items():
        m = _metrics_for(tasks, experts, 1 + d)
        c = (costs or {}).get(name, {"steps": 0, "samples": 0, "trainable_params": 0, "wall_s": 0.0})
        rows.append({"row": name, "tasks": list(tasks), "metrics": m,
                     "normalized": normalized_performance(m, experts, low),
                     "delta_m_ratio": delta_m(m, experts, low, "ratio"),
                     "delta_m_relative": delta_m(m, experts, low, "relative"), "cost": c})
    return rows


NYU_DELTAS = {"experts": 0.0, "mtl": -0.05, "zeroshot": -0.5, "ta": -0.30, "ties": -0.40, "tall": -0.2,
              "ta+head": -0.06, "ta+repr": -0.03, "ties+head": -0.10, "ties+repr": -0.08,
              "ta+bn": -0.22, "ties+bn": -0.30, "zeroshot+head": -0.15, "ties_k1": -0.33, "ties_k1+head": -0.09,
              "coefficients": -0.25}
COSTS = {"experts": {"steps": 900, "samples": 28800, "trainable_params": 1000, "wall_s": 90.0},
         "mtl": {"steps": 600, "samples": 19200, "trainable_params": 1100, "wall_s": 60.0},
         "ta+head": {"steps": 300, "samples": 9600, "trainable_params": 30, "wall_s": 3.0},
         "ta+repr": {"steps": 100, "samples": 3200, "trainable_params": 60, "wall_s": 6.0}}


def _training(tasks) -> dict:
    """The JSON of Experiment.training_table."""
    low = lower_is_better(tasks)
    return {"tasks": list(tasks), "profile": "cpu", "seed": 0, "mtl_cost": COSTS["mtl"],
            "rows": [{"task": t, "metric": "m", "lower_is_better": low[t], "probe": 1.0, "expert": 2.0, "mtl": 1.5,
                      "cost": {"steps": 300, "samples": 9600, "trainable_params": 1000, "wall_s": 30.0}}
                     for t in tasks]}


def _write_run(run_dir: Path, nyu=NYU_DELTAS, diverse=None) -> Path:
    res = run_dir / "results"
    res.mkdir(parents=True)
    (res / "table-seg+depth+normals.json").write_text(json.dumps(_table(("seg", "depth", "normals"), nyu, COSTS)))
    (res / "training-seg+depth+normals.json").write_text(json.dumps(_training(("seg", "depth", "normals"))))
    if diverse is not None:
        tasks = ("autoencoder", "depth", "normals", "keypoints", "texture_edges")
        (res / f"table-{'+'.join(tasks)}.json").write_text(json.dumps(_table(tasks, diverse, COSTS)))
        (res / f"training-{'+'.join(tasks)}.json").write_text(json.dumps(_training(tasks)))
    return run_dir


# ----------------------------------------------------------------------------------------------
# bench.py
# ----------------------------------------------------------------------------------------------
def test_vit_shapes_match_timm():
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(**merging_cost.QUICK_SHAPES, num_heads=4, num_classes=0)
    shapes = merging_cost.vit_shapes(**merging_cost.QUICK_SHAPES)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    assert merging_cost.n_params(merging_cost.vit_shapes()) == 85_798_656          # ViT-B/16, no classifier


def test_merge_cases_come_from_the_registry():
    """The cases' labels are the registry's, and each runs the merge the library runs."""
    from simo_lite import merging
    assert list(merging_cost.CASES) == ["ta", "ties_k0.2", "ties_k1.0", "tall_masks", "tall_one_task"]
    assert merging_cost.label("ta") == merging.MERGE_METHODS["ta"].label
    assert merging_cost.label("ties_k0.2") == f"{merging.MERGE_METHODS['ties'].label} (k=0.2)"
    shapes = merging_cost.vit_shapes(embed_dim=8, depth=1, patch_size=8, img_size=16)
    pretrained, tvs = merging_cost._random_state_dicts(shapes, 2)
    expected = {"ta": merging.task_arithmetic(pretrained, tvs, alpha=0.3),
                "ties_k0.2": merging.ties(pretrained, tvs, k=0.2, alpha=1.0),
                "ties_k1.0": merging.ties(pretrained, tvs, k=1.0, alpha=1.0),
                "tall_masks": merging.tall_masks(tvs, lam=0.6),
                "tall_one_task": merging.tall_merged(pretrained, tvs, "task0", lam=0.6)}
    for name, case in merging_cost.CASES.items():
        got = case.build(pretrained, tvs)()
        want = expected[name]
        flat = (lambda d: {(t, k): v for t, sd in d.items() for k, v in sd.items()}) if name == "tall_masks" \
            else (lambda d: d)
        assert flat(got).keys() == flat(want).keys() and all(
            (flat(got)[k] == flat(want)[k]).all() for k in flat(want)), name
    with pytest.raises(ValueError, match="valid: ta, ties_k0.2"):
        merging_cost.case("dare")


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory):
    """One ``bench.py --quick`` run (no course) against a synthetic results dir."""
    tmp = tmp_path_factory.mktemp("bench")
    run_dir = _write_run(tmp / "run-cpu")
    out = tmp / "bench" / "bench.json"
    result = bench.main(["--quick", "--skip-course", "--out", str(out), "--course-root", str(tmp / "courses"),
                         "--results-run-dir", str(run_dir)])
    return result, out


def test_bench_json_schema(quick_bench):
    result, out = quick_bench
    assert out.exists() and not list(out.parent.glob("*.tmp")), "bench.json must be written atomically"
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(result, default=float))
    assert data["schema"] == common.SCHEMA_VERSION and data["quick"] is True and data["errors"] == {}
    env = data["env"]
    for key in ("date", "hostname", "cpu_count", "torch", "device", "commit", "dirty"):
        assert key in env, key
    assert env["cpu_count"] >= 1 and env["torch"]
    assert set(data) >= {"scenes", "merging", "head_realign", "table4"}
    assert "course" not in data                                       # skipped, and no earlier run
    assert [r["size"] for r in data["scenes"]["rows"]] == [64, 128]
    assert all(r["scenes_per_s"] > 0 for r in data["scenes"]["rows"])
    # more pixels per scene cannot render more scenes per second (4x the rays)
    assert data["scenes"]["rows"][1]["scenes_per_s"] < 2 * data["scenes"]["rows"][0]["scenes_per_s"]


def test_merging_numbers_are_sane(quick_bench):
    sec = quick_bench[0]["merging"]
    enc = sec["encoder_bytes"]
    assert enc == 4 * merging_cost.n_params(merging_cost.vit_shapes(**merging_cost.QUICK_SHAPES))
    rows = {r["method"]: r for r in sec["rows"]}
    assert set(rows) == {"ta", "ties_k0.2", "tall_masks"}
    for m, r in rows.items():
        assert "error" not in r, r
        assert r["wall_s"] > 0 and r["encoder_bytes"] == enc
        assert r["inputs_bytes"] == (1 + r["n_tasks"]) * enc           # θ_0 + T task vectors
        assert r["peak_extra_bytes"] >= r["result_bytes"] * 0.98, (m, r)  # the result itself is allocated
        assert r["peak_extra_x_encoder"] == pytest.approx(r["peak_extra_bytes"] / enc)
    for m in ("ta", "ties_k0.2"):                                      # a full float32 encoder comes back
        assert rows[m]["result_bytes"] == enc
        assert rows[m]["peak_extra_bytes"] >= enc
    # TALL: one bool mask per task, 1 byte per parameter
    assert rows["tall_masks"]["result_bytes"] == rows["tall_masks"]["n_tasks"] * enc // 4
    # TIES trims by global top-k: it needs more working memory than task arithmetic
    assert rows["ties_k0.2"]["peak_extra_bytes"] > rows["ta"]["peak_extra_bytes"]


def test_head_realign_cached_matches_uncached(quick_bench):
    sec = quick_bench[0]["head_realign"]
    assert sec["profile"] == "smoke"
    c, u = sec["cached"], sec["uncached"]
    assert c["steps"] == u["steps"] == 3 * sec["steps_per_head"]
    assert c["samples"] == u["samples"] and c["trainable_params"] == u["trainable_params"] > 0
    assert set(c["test"]) == {"seg", "depth", "normals"}
    assert sec["same_results"] and sec["max_rel_diff"] <= sec["tolerance"]
    assert sec["speedup"] == pytest.approx(u["wall_s"] / c["wall_s"])


def test_table4_from_results(quick_bench):
    sets = quick_bench[0]["table4"]["sets"]
    assert [s["tasks"] for s in sets] == ["seg+depth+normals"]
    rows = {r["row"]: r for r in sets[0]["rows"]}
    assert sets[0]["profile"] == "cpu" and sets[0]["n_train"] == 3000 and sets[0]["n_val"] == 400
    assert rows["ta+head"]["pct_of_mtl"]["steps"] == pytest.approx(50.0)
    assert rows["ta+repr"]["pct_of_mtl"]["wall_s"] == pytest.approx(10.0)
    assert rows["experts"]["per_expert_steps"] == pytest.approx(300)
    assert rows["ta+head"]["delta_m_ratio"] == pytest.approx(-0.06)
    assert "\\|D\\|" in table4.markdown(quick_bench[0]["table4"])  # pipes escaped in Markdown
    assert table4.rows_with_cost() == ("experts", "mtl", "ta+head", "ta+repr", "ta+lora", "ties+head", "ties+repr",
                                       "ties+lora", "zeroshot+head", "ties_k1+head")   # not +bn: no training step


def test_course_timings_budget_and_reuse(tmp_path, monkeypatch):
    names = course_time.notebook_names()
    run_dir = tmp_path / "course-smoke"
    run_dir.mkdir()
    times = {n: 10.0 + i for i, n in enumerate(names)}
    times[names[-1]] = common.BUDGETS["smoke_notebook_s"] + 5
    (run_dir / "runtimes.json").write_text(json.dumps(dict(list(times.items())[:-1])))
    assert course_time.read_timings("smoke", run_dir) is None         # incomplete run
    (run_dir / "runtimes.json").write_text(json.dumps(times))
    sec = course_time.read_timings("smoke", run_dir)
    assert [r["pass"] for r in sec["rows"]] == [True] * (len(names) - 1) + [False]
    assert sec["total_s"] == pytest.approx(sum(times.values())) and sec["total_pass"] is False
    assert "FAIL" in course_time.profile_markdown(sec)

    monkeypatch.setattr(course_time.subprocess, "run", lambda *a, **k: pytest.fail("a complete run must be reused"))
    assert course_time.run_profile("smoke", run_dir)["reused"] is True

    cpu = tmp_path / "course-cpu"
    cpu.mkdir()
    budget = common.BUDGETS["cpu_course_s"]
    (cpu / "runtimes.json").write_text(json.dumps({n: budget / (len(names) + 1) for n in names}))
    sec = course_time.read_timings("cpu", cpu)
    assert sec["total_pass"] is True and sec["total_budget_s"] == budget
    assert {r["budget_s"] for r in sec["rows"]} == {None}                # no per-notebook budget in cpu


def test_sections_and_script_entry_points():
    """Every section module has run and markdown; both scripts start as files and as modules."""
    import subprocess
    from benchmarks import head_realign, scenes_rate
    for mod in (scenes_rate, course_time, merging_cost, head_realign, table4):
        assert callable(mod.run) and callable(mod.markdown), mod.__name__
    cmds = [[sys.executable, "benchmarks/bench.py", "--help"], [sys.executable, "-m", "benchmarks.render_results",
                                                                "--help"]]
    procs = [subprocess.Popen(c, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    for c, proc in zip(cmds, procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "usage:" in out, (c, err)


# ----------------------------------------------------------------------------------------------
# The paper's numbers
# ----------------------------------------------------------------------------------------------
def _half_ulp(v: float) -> float:
    """Half a unit in the last printed decimal of ``v`` (as stored in the JSON)."""
    text = repr(float(v))
    decimals = len(text.split(".")[1]) if "." in text and "e" not in text else 0
    return 0.5 * 10 ** -decimals


def test_paper_tables_are_consistent():
    paper = json.loads(common.PAPER_TABLES.read_text())
    for key in ("table1", "table2", "table3"):
        tab = paper["tables"][key]
        tasks = [t["key"] for t in tab["tasks"]]
        low = {t["key"]: t["lower_is_better"] for t in tab["tasks"]}
        base = tab["rows"]["experts"]["metrics"]
        bad = {tuple(c) for c in tab.get("inconsistent_cells", [])}
        for name, row in tab["rows"].items():
            assert set(row["metrics"]) == set(tasks), (key, name)
            if row["normalized"] is None:
                continue
            recomputed = normalized_performance(row["metrics"], base, low)
            for t in tasks:
                # the absolutes are printed to a few digits: allow their rounding plus the percentage's
                tol = recomputed[t] * (_half_ulp(row["metrics"][t]) / row["metrics"][t]
                                       + _half_ulp(base[t]) / base[t]) + 0.0005
                if (name, t) not in bad:
                    assert recomputed[t] == pytest.approx(row["normalized"][t], abs=tol), (key, name, t)
                else:
                    assert abs(recomputed[t] - row["normalized"][t]) > 0.02, (key, name, t)
            mean = sum(row["normalized"].values()) / len(tasks)
            # Δ_MTL = mean normalised - 1, up to the paper's rounding (worst: Table 2's MTL row, 0.13 pp)
            assert mean - 1 == pytest.approx(row["delta"], abs=0.0015), (key, name)
    t4 = paper["tables"]["table4"]["rows"]
    assert t4["mtl"]["steps"] > t4["ta+head"]["steps"] > t4["ta+repr"]["steps"]


# ----------------------------------------------------------------------------------------------
# render_results.py
# ----------------------------------------------------------------------------------------------
def _render(tmp_path, run_dir, bench_path):
    out = tmp_path / "results.md"
    doc = render_results.main(["--run-dir", str(run_dir), "--gpu-run-dir", str(tmp_path / "no-gpu"),
                               "--bench", str(bench_path), "--out", str(out),
                               "--decodability", str(tmp_path / "no-decodability.json"),
                               "--evidence", str(tmp_path / "no-evidence.json"),
                               "--convergence", str(tmp_path / "no-convergence.json"),
                               "--realign-curves", str(tmp_path / "no-realign.json"),
                               "--relationships", str(tmp_path / "no-relationships.json")])
    assert out.read_text() == doc
    return doc


def test_render_from_synthetic_results(tmp_path, quick_bench):
    diverse = {k: 1.5 * v for k, v in NYU_DELTAS.items()}
    run_dir = _write_run(tmp_path / "cpu-0", diverse=diverse)
    doc = _render(tmp_path, run_dir, quick_bench[1])
    ours = doc.split("## Our results")[1].split("## Reading")[0]
    for name in ("nyu3", "taskonomy5"):                                  # every input of these two present
        section = ours.split(f"### `{name}`")[1].split("### ")[0]
        assert "not run" not in section, name
    assert "table-seg+depth+normals+edges+albedo.json` not found" in ours   # a set without one
    reading = doc.split("## Reading")[1].split("## Cost against joint MTL")[0]
    assert "left out below: diverse5." in reading and "**diverse5** against" not in reading   # only sets run
    assert "**nyu3** against" in reading and "**taskonomy5** against" in reading
    for heading in ("## Our results", "## Reading", "## Cost against joint MTL", "## Benchmarks",
                    "### Table 1", "### Table 2", "### Table 3", "### Table 4"):
        assert heading in doc, heading
    # recovered fraction computed from the numbers: (-0.06 - -0.30) / 0.30 = 80 %
    expected = (NYU_DELTAS["ta+head"] - NYU_DELTAS["ta"]) / -NYU_DELTAS["ta"]
    assert f"closes {100 * expected:.0f}% of the loss" in doc
    assert f"{100 * NYU_DELTAS['ta']:+.1f}%" in doc
    # scenes/s from bench.json
    rate = json.loads(Path(quick_bench[1]).read_text())["scenes"]["rows"][0]["scenes_per_s"]
    assert f"{rate:,.0f}" in doc
    # 1.5x the losses on taskonomy5: merging loses more on the larger set, as in the paper
    items = _claims(run_dir, tmp_path, quick_bench[1])
    larger = next(i for i in items if i["claim"].startswith("task arithmetic loses more on the larger"))
    assert larger["ours_holds"] is True and larger["verdict"] == "agrees"


def _claims(run_dir, tmp_path, bench_path):
    _, items = render_results.render([("cpu", str(run_dir))], str(bench_path),
                                     str(common.PAPER_TABLES), "test", tmp_path / "none.json", tmp_path / "none.json",
                                     tmp_path / "none.json", tmp_path / "none.json", tmp_path / "none.json")
    return items["cpu"]


def test_reading_follows_the_numbers(tmp_path):
    """The same claim flips from 'agrees' to 'differs' when only our numbers change."""
    def verdict_of(deltas, name, claim_start):
        run_dir = _write_run(tmp_path / name, nyu=deltas)
        items = _claims(run_dir, tmp_path, tmp_path / "missing.json")
        return next(i for i in items if i["scope"] == "nyu3" and i["claim"].startswith(claim_start))

    start = "the best head/adapter realignment comes within"
    close = verdict_of(NYU_DELTAS, "a", start)                          # best -0.03 vs MTL -0.05
    far = verdict_of({**NYU_DELTAS, "mtl": 0.10}, "b", start)           # best -0.03 vs MTL +0.10
    assert close["ours_holds"] is True and close["paper_holds"] is True and close["verdict"] == "agrees"
    assert far["ours_holds"] is False and far["verdict"] == "differs"

    rec = verdict_of({**NYU_DELTAS, "ta+head": -0.25}, "c", "head realignment recovers more than half of TA")
    assert rec["ours_holds"] is False and "closes 17% of the loss" in rec["ours"]


def test_render_with_missing_inputs(tmp_path):
    doc = _render(tmp_path, tmp_path / "no-such-run", tmp_path / "no-bench.json")
    ours = doc.split("## Reading")[0]
    from simo_lite.tasks import TASK_SETS
    # one per task set, and the go / no-go, the evidence and the two budget sections
    assert ours.count("not run") == len(TASK_SETS) + 4
    assert "python -m simo_lite.experiment --profile cpu --tasks nyu3" in ours
    bench_part = doc.split("## Benchmarks")[1].split("## The paper's tables")[0]
    assert "not run" in bench_part and "make bench" in bench_part
    assert "### Table 1" in doc                                         # the paper's tables still render

    doc = render_results.render([("cpu", str(tmp_path / "none"))], str(tmp_path / "none.json"),
                                str(tmp_path / "no-paper.json"), "test", *[tmp_path / "none.json"] * 5)[0]
    assert "not run" in doc.split("## The paper's tables")[1]


def test_decodability_section_from_json_and_missing(tmp_path):
    from benchmarks import decodability
    metrics = {"random": {"texture_edges": 0.30, "depth": 1.5}, "SimMIM foundation": {"texture_edges": 0.50, "depth": 1.0},
               "invariant foundation": {"texture_edges": 0.35, "depth": 0.9},
               "expert texture_edges": {"texture_edges": 0.70, "depth": 1.2}, "expert depth": {"texture_edges": 0.4, "depth": 0.5},
               "TA merge (α=0.4)": {"texture_edges": 0.50, "depth": 0.7}}
    lower = {"texture_edges": False, "depth": True}
    v = decodability.verdicts(metrics, lower, ("texture_edges", "depth"))
    assert v["texture_edges"]["expert_vs_invariant"] == pytest.approx((0.70 - 0.35) / 0.35)
    assert v["texture_edges"]["G1_expert_better"] and v["texture_edges"]["G2_merge_between"]
    assert v["depth"]["invariant_vs_random"] == pytest.approx((1.5 - 0.9) / 1.5)
    assert v["texture_edges"]["invariant_vs_simmim"] == pytest.approx((0.35 - 0.50) / 0.50)
    result = {"profile": "cpu", "seed": 0, "probe_steps": 150, "merge_tasks": ["texture_edges", "depth"],
              "targets": ["texture_edges", "depth"], "metrics": metrics, "lower_is_better": lower, "verdicts": v}
    path = tmp_path / "dec.json"
    path.write_text(json.dumps(result))
    text = "\n".join(render_results.decodability_md(path))
    assert "| invariant foundation | 0.3500 | 0.9000 |" in text and "+100.0 %" in text
    assert "G1 holds in direction for 2 of 2 targets" in text
    assert "not run" in "\n".join(render_results.decodability_md(tmp_path / "none.json"))


def test_shipped_convergence_lists_every_manifest_run(tmp_path):
    def manifest(seed, models):
        return {"seed": seed, "models": {f"{n}@{k}": {"name": n, "key": k, "steps": s, "wall_s": w, "val_tail": t}
                                         for n, k, s, w, t in models}}
    (tmp_path / "data" / "evidence" / "seed-1").mkdir(parents=True)
    (tmp_path / "data" / "models-cpu.json").write_text(json.dumps(manifest(0, [
        ("expert-seg", "aaa", 950, 1167.2, 0.0162), ("expert-texture_edges", "bbb", 950, 533.0, 0.0005)])))
    (tmp_path / "data" / "evidence" / "seed-1" / "models-cpu.json").write_text(json.dumps(manifest(1, [
        ("mtl-seg+depth+normals", "ccc", 3350, 4886.4, 0.0045)])))
    text = "\n".join(render_results.shipped_convergence_md(root=tmp_path))
    assert "| 0 | expert-seg | 950 | +1.62 % | **no** | 1167 | data/models-cpu.json |" in text
    assert "| 0 | expert-texture_edges | 950 | +0.05 % | yes | 533 |" in text
    assert "| 1 | mtl-seg+depth+normals | 3350 | +0.45 % | yes | 4886 | data/evidence/seed-1/models-cpu.json |" in text
    assert "2 of 3 runs fell less than 1 %" in text
    assert "not run" in "\n".join(render_results.shipped_convergence_md(root=tmp_path / "empty"))


def test_write_section_writes_json_markdown_and_figure(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def plot(result, path):
        fig, ax = plt.subplots()
        ax.plot(result["x"])
        return common.save_figure(fig, path)

    text = common.write_section(tmp_path / "sub" / "sec", {"x": [1, 2]}, lambda r: f"x has {len(r['x'])}\n", plot)
    assert text == "x has 2\n" and (tmp_path / "sub" / "sec.md").read_text() == text
    assert json.loads((tmp_path / "sub" / "sec.json").read_text()) == {"x": [1, 2]}
    assert (tmp_path / "sub" / "sec.png").read_bytes()[:4] == b"\x89PNG" and not plt.get_fignums()
    common.write_section(tmp_path / "plain", {"x": []}, lambda r: "none\n")
    assert not (tmp_path / "plain.png").exists() and (tmp_path / "plain.json").exists()


def test_relationships_markdown_reads_its_own_json_back():
    """The Fig. 1 / λ section renders the in-memory result and the same result read back from JSON
    (whose keys are strings): identical text."""
    import json

    from benchmarks import relationships
    res = {"sets": {"s": {"tasks": ["seg", "depth"],
                          "fig1": {1: [{"tasks": ["seg"], "mean": 1.0}, {"tasks": ["depth"], "mean": 1.0}],
                                   2: [{"tasks": ["seg", "depth"], "mean": 0.6}]},
                          "lambda": {"seg": {0.0: {"seg": 0.5, "depth": 0.7}, 1.0: {"seg": 1.0, "depth": 0.6}},
                                     "depth": {0.0: {"seg": 0.5, "depth": 0.4}, 1.0: {"seg": 0.55, "depth": 1.0}}}}}}
    text = relationships.markdown(res)
    assert text == relationships.markdown(json.loads(json.dumps(res)))
    assert "| 2 | 1 | 0.600 | 0.600–0.600 | 0.39 |" in text
    assert "Adding τ_depth and scoring seg: 0.500 at λ = 0, best 0.550 at λ = 1.0 (+0.050; one seed)." in text


def test_alpha_regimes_smoke_curves_are_consistent(tmp_path):
    """The α-curve diagnostic on the smoke profile: α = 0 is the foundation, α = 1 plain task arithmetic,
    the means and α* follow the per-task scores, and the Markdown shows every α and both α*."""
    from benchmarks import alpha_regimes

    r = alpha_regimes.curves("smoke", "taskonomy5", 0, tmp_path / "run", alphas=(0.0, 0.5, 1.0))
    assert r["alphas"] == [0.0, 0.5, 1.0] and set(r["plain"]) == set(r["bn"]) == {0.0, 0.5, 1.0}
    for kind in ("plain", "bn"):
        means = {a: sum(v.values()) / len(v) for a, v in r[kind].items()}
        assert means == pytest.approx(r["mean"][kind])
        assert r["alpha_star"][kind] == max(means, key=means.get)
        assert all(set(v) == set(r["tasks"]) for v in r[kind].values())
    # α = 0 is θ₀ with the experts' heads: the same under any α grid
    again = alpha_regimes.curves("smoke", "taskonomy5", 0, tmp_path / "run", alphas=(0.0,))
    assert again["plain"][0.0] == pytest.approx(r["plain"][0.0])
    md = alpha_regimes.markdown([r], "smoke")
    assert f"α* = {r['alpha_star']['plain']:g} plain" in md and md.count("\n| ") == 1 + 3


def test_convergence_trains_only_the_tasks_asked_for(tmp_path):
    """``--tasks``: one expert at the budget (e.g. a 4x budget for the task whose loss still falls), no MTL."""
    from benchmarks import convergence
    out = convergence.run("smoke", budgets=(8,), sets=("nyu3",), invariance_steps=0, mtl=False, run_dir=tmp_path,
                          tasks=("depth",))
    assert [(r["budget"], r["model"], r["tasks"]) for r in out["runs"]] == [(8, "expert-depth", ["depth"])]
    run = out["runs"][0]
    assert run["converged"] == (run["tail"] < convergence.THRESHOLD) and set(run["test"]) == {"depth"}
    assert "expert-depth" in convergence.markdown(out)
