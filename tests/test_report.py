"""simo_lite.report: one renderer for every results table, pinned to the exact Markdown the run
directories, docs/results.md, sweeps and course reports have always had."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from simo_lite import profiles, report
from simo_lite.experiment import Experiment

TASKS = ("seg", "depth")


def _row(name, seg, depth, steps=0, samples=0, params=0, wall=0.0, **extra):
    return {"row": name, "tasks": list(TASKS), "metrics": {"seg": seg, "depth": depth},
            "normalized": {"seg": seg / 0.5, "depth": 1.0 / depth}, "delta_m_ratio": (seg / 0.5 + 1.0 / depth) / 2 - 1,
            "delta_m_relative": -0.01234, "cost": {"steps": steps, "samples": samples, "trainable_params": params,
                                                   "wall_s": wall}, **extra}


TABLE = [_row("experts", 0.5, 1.0, 1200, 19200, 126390, 812.34), _row("ta", 0.41, 1.25, alpha=0.3),
         _row("ta+head", 0.4875, 1.0526, 18, 288, 6154, 0.06)]

RUN_MD = """\
## Results: seg, depth (smoke profile, seed 3, test split)

| method | seg mIoU ↑ | depth MAE (m) ↓ | Δm (ratio, paper tables) | Δm (Eq. 2) | steps | samples | trainable params | wall s |
|---|---|---|---|---|---|---|---|---|
| experts | 0.5 (100.0%) | 1 (100.0%) | +0.0% | -1.2% | 1200 | 19200 | 126,390 | 812.3 |
| ta | 0.41 (82.0%) | 1.25 (80.0%) | -19.0% | -1.2% | 0 | 0 | 0 | 0.0 |
| ta+head | 0.4875 (97.5%) | 1.053 (95.0%) | -3.7% | -1.2% | 18 | 288 | 6,154 | 0.1 |
"""

DOC_MD = """\
| method | seg mIoU ↑ | depth MAE (m) ↓ | Δm (ratio, paper's) | Δm (Eq. 2) | steps | samples | trainable params | wall s |
|---|---|---|---|---|---|---|---|---|
| experts (LP→FT) | 0.5 (100.0%) | 1 (100.0%) | +0.0% | -1.2% | 1,200 | 19,200 | 126,390 | 812 |
| task arithmetic | 0.41 (82.0%) | 1.25 (80.0%) | -19.0% | -1.2% | 0 | 0 | 0 | 0 |
| TA + head realign | 0.4875 (97.5%) | 1.053 (95.0%) | -3.7% | -1.2% | 18 | 288 | 6,154 | 0 |"""

TRAINING = {"tasks": list(TASKS), "profile": "cpu", "seed": 0, "mtl_cost": {"steps": 1500, "samples": 48000,
                                                                            "trainable_params": 129466, "wall_s": 95.6},
            "rows": [{"task": "seg", "metric": "mIoU", "lower_is_better": False, "probe": 0.1068, "expert": 0.11274,
                      "mtl": 0.1178, "cost": {"steps": 1200, "samples": 38400, "trainable_params": 126390,
                                              "wall_s": 61.2}},
                     {"task": "depth", "metric": "MAE (m)", "lower_is_better": True, "probe": 1.741, "expert": 1.66,
                      "mtl": 1.606, "cost": {"steps": 1200, "samples": 38400, "trainable_params": 124465,
                                             "wall_s": 60.5}}]}

TRAINING_MD = """\
## Training: probe, experts and MTL (seg, depth; cpu profile, seed 0, test split)

| model | task | metric | linear probe | expert (LP→FT) | MTL | steps | samples | trainable params | wall s |
|---|---|---|---|---|---|---|---|---|---|
| expert-seg | seg | mIoU ↑ | 0.1068 | 0.1127 | 0.1178 | 1200 | 38400 | 126,390 | 61 |
| expert-depth | depth | MAE (m) ↓ | 1.741 | 1.66 | 1.606 | 1200 | 38400 | 124,465 | 60 |
| mtl | all | | | | | 1500 | 48000 | 129,466 | 96 |
"""

TRAINING_DOC_MD = """\
| task | metric | linear probe | expert (LP→FT) | joint MTL | steps | trainable params | wall s |
|---|---|---|---|---|---|---|---|
| seg | mIoU ↑ | 0.1068 | 0.1127 | 0.1178 | 1,200 | 126,390 | 61 |
| depth | MAE (m) ↓ | 1.741 | 1.66 | 1.606 | 1,200 | 124,465 | 60 |
| MTL (all heads) |  |  |  |  | 1,500 | 129,466 | 96 |"""


def test_results_table_run_style_is_the_run_directory_format():
    exp = Experiment(profiles.get("smoke"), TASKS, seed=3, run_dir="/nonexistent")   # lazy: loads nothing
    assert exp.to_markdown(TABLE) == RUN_MD
    body = "\n".join(RUN_MD.splitlines()[2:])                   # what notebooks 05 and 06 print
    assert report.results_markdown(TABLE, TASKS) == body


def test_results_table_doc_style_is_the_docs_format():
    assert report.results_markdown(TABLE, TASKS, style=report.DOC) == DOC_MD
    from benchmarks.render_results import results_table_md
    assert results_table_md({"tasks": TASKS, "rows": {r["row"]: r for r in TABLE}}) == DOC_MD
    # a missing cost prints "–"; an unknown task or row is named as it is
    odd = [{"row": "old-row", "metrics": {"x": 2}, "normalized": {"x": None}, "delta_m_ratio": None,
            "delta_m_relative": 0.5}]
    assert report.results_markdown(odd, ("x",), style=report.DOC).splitlines()[2] == \
        "| old-row | 2 (–) | – | +50.0% | – | – | – | – |"


def test_labels_option_names_rows_by_label():
    exp = Experiment(profiles.get("smoke"), TASKS, seed=3, run_dir="/nonexistent")
    md = exp.to_markdown(TABLE, labels=True).splitlines()
    assert [ln.split(" | ")[0] for ln in md[4:]] == ["| experts (LP→FT)", "| task arithmetic", "| TA + head realign"]
    assert md[2] == RUN_MD.splitlines()[2]                      # same columns, same cells


def test_training_tables():
    assert report.training_markdown(TRAINING) == TRAINING_MD
    assert report.training_summary_markdown(TRAINING) == TRAINING_DOC_MD
    from benchmarks.render_results import training_table_md
    assert training_table_md(TRAINING) == TRAINING_DOC_MD


def test_row_record_is_the_experiment_row_format():
    class Scorer:
        def normalized(self, metrics):
            return {t: 2 * v for t, v in metrics.items()}

        def score(self, metrics, kind="ratio"):
            return {"ratio": 0.1, "relative": 0.2}[kind]

    class Record:
        steps, samples, trainable_params, wall_s = 3, 48, 100, 1.5

    row = report.row_record(Scorer(), "ta+x", {"seg": 0.25}, Record(), tasks=("seg",), alpha=0.4)
    assert list(row) == ["row", "tasks", "metrics", "normalized", "delta_m_ratio", "delta_m_relative", "cost", "alpha"]
    assert row["normalized"] == {"seg": 0.5} and row["delta_m_relative"] == 0.2 and row["alpha"] == 0.4
    assert row["cost"] == {"steps": 3, "samples": 48, "trainable_params": 100, "wall_s": 1.5}
    bare = report.row_record(Scorer(), "merged", {"seg": 0.25})
    assert "tasks" not in bare and bare["cost"] == {"steps": 0, "samples": 0, "trainable_params": 0, "wall_s": 0}


def test_sweep_table():
    rows = [{"merge_method": "ta", "seed": 0, "status": "ok", "run_dir": "/x/smoke-0-merge_method=ta",
             "07.delta_m.ta": 0.123456, "note": "a|b"},
            {"merge_method": "ties", "seed": 0, "status": "failed: boom", "run_dir": "/x/smoke-0-merge_method=ties"}]
    assert report.sweep_markdown(rows) == (
        "| merge_method | seed | status | 07.delta_m.ta | note | run |\n"
        "|---|---|---|---|---|---|\n"
        "| ta | 0 | ok | 0.1235 | a/b | smoke-0-merge_method=ta |\n"
        "| ties | 0 | failed: boom |  |  | smoke-0-merge_method=ties |\n")


def test_run_report(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "figures").mkdir()
    (tmp_path / "runtimes.json").write_text(json.dumps({"00_scenes": 12.4, "03_merging": 30.6}))
    (tmp_path / "results" / "b.md").write_text("## B\n\ntable b\n")
    (tmp_path / "results" / "a.md").write_text("## A\n")
    (tmp_path / "figures" / "03-alpha.png").write_bytes(b"")
    assert report.run_report(tmp_path) == (
        f"# simo_lite course run: {tmp_path.name}\n\n## Runtimes\n\n| notebook | seconds |\n|---|---|\n"
        "| 00_scenes | 12 |\n| 03_merging | 31 |\n\n## A\n\n## B\n\ntable b\n\n## Figures\n\n"
        "- [03-alpha.png](figures/03-alpha.png)\n")
    from simo_lite.course import write_report
    assert write_report(tmp_path).read_text() == report.run_report(tmp_path)


def test_paper_tables_come_from_the_one_json():
    from benchmarks.common import PAPER_TABLES
    assert report.PAPER_TABLES == PAPER_TABLES
    t1 = report.paper_table("table1")
    assert [t["key"] for t in t1["tasks"]] == ["seg", "depth", "normals"] and t1["ours"] == "nyu3"
    assert t1["rows"]["ta"]["delta"] == -0.275 and t1["rows"]["experts"]["normalized"] is None
    assert report.paper_table("table4")["rows"]["mtl"]["steps"] == 90000
    with pytest.raises(KeyError, match="no paper table 'table9'; available: table1"):
        report.paper_table("table9")


def test_importing_report_does_not_import_torch():
    code = ("import sys, simo_lite.report as r; r.sweep_markdown([{'a': 1.5, 'run_dir': 'x'}]); "
            "r.paper_table('table1'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
