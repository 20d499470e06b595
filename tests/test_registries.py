"""Extending simo_lite from outside the package, as a notebook would: a merge method, a fix and a head
registered here show up in the results table (its JSON, its Markdown, the docs' labels) with no edit
to the package; unregistering them removes them again."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from simo_lite import fixes, merging, models, profiles, report, training
from simo_lite.experiment import ROWS, Experiment
from simo_lite.rows import row_label, row_spec

TASKS = "seg,depth"


def _half_ta(pretrained, task_vectors, alpha):
    """Task arithmetic at half the coefficient."""
    return merging.task_arithmetic(pretrained, task_vectors, alpha / 2)


def _reestimate_bn(exp, model, samples=None):
    """A fix with no gradient step: the heads' BatchNorm running statistics recomputed (cumulative
    average) on the merged encoder's features of the realignment split."""
    model = copy.deepcopy(model)
    images = exp.data["val_realign"]["image"][:samples]
    feats = training.cache_features(model, images)
    for t in exp.tasks:
        head = model.heads[t]
        bns = [m for m in head.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        head.train()
        with torch.no_grad():
            head(feats)
        for bn in bns:
            bn.momentum = 0.1
    return model.eval(), training.RunRecord("bn-reestimate", samples=len(images))


@pytest.fixture()
def registered():
    merging.register_merge_method("half_ta", _half_ta, label="half TA")
    fixes.register_fix("bn_test", _reestimate_bn, options=("samples",), label="BN recount")
    try:
        yield
    finally:
        merging.MERGE_METHODS.unregister("half_ta")
        fixes.FIXES.unregister("bn_test")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("registries")


def test_registered_method_and_fix_appear_in_the_results_table(registered, run_dir):
    exp = Experiment(profiles.get("smoke"), TASKS, seed=0, run_dir=run_dir)
    table = exp.results_table(rows=[("half_ta", None), ("half_ta", "bn_test")])
    assert [r["row"] for r in table] == ["half_ta", "half_ta+bn_test"]
    plain, fixed = table

    # the registered merge was used, at the alpha chosen on validation (the grid, extended up to ALPHA_MAX
    # while the best is on its edge): half of task arithmetic's
    swept = {float(a) for a in plain["val_scores"]}
    assert set(merging.ALPHA_GRID) <= swept and all(0.0 <= a <= merging.ALPHA_MAX for a in swept)
    assert plain["alpha"] in swept
    ta_half = exp.with_heads(merging.task_arithmetic(exp.foundation, exp.task_vectors(), plain["alpha"] / 2))
    assert plain["metrics"] == pytest.approx(exp.evaluate(ta_half))
    assert plain["delta_m_ratio"] == pytest.approx(exp.score(plain["metrics"]))
    # the registered fix was applied to that merge: no optimiser step, its forward passes as cost
    n_val = len(exp.data["val_realign"]["image"])
    assert fixed["alpha"] == plain["alpha"]
    assert fixed["cost"]["steps"] == 0 and fixed["cost"]["samples"] == n_val
    assert fixed["metrics"] != plain["metrics"]                 # new BN statistics change the heads' outputs
    assert exp.row_artifact(("half_ta", "bn_test")).upstream["merge-half_ta"] == exp.merge_artifact("half_ta").key

    # the same rows by id, from the store (not recomputed)
    assert exp.row("half_ta+bn_test") == fixed and exp.row(("half_ta", None)) == plain

    # the run's Markdown names rows by id; the labelled form and the docs' table use the registered labels
    md = (run_dir / "results" / "table-seg+depth.md").read_text()
    assert md == exp.to_markdown(table)
    assert "\n| half_ta | " in md and "\n| half_ta+bn_test | " in md
    labelled = exp.to_markdown(table, labels=True)
    assert "\n| half TA | " in labelled and "\n| half TA + BN recount | " in labelled
    assert row_label(("half_ta", "bn_test")) == "half TA + BN recount"
    from benchmarks.render_results import results_table_md
    doc = results_table_md({"tasks": exp.tasks, "rows": {r["row"]: r for r in table}})
    assert "| half TA | " in doc and "| half TA + BN recount | " in doc

    # fixes take only their own options
    assert exp.fix("bn_test", exp.merged_model("half_ta")[0], samples=4)[1].samples == 4
    with pytest.raises(ValueError, match="fix 'bn_test': unknown option"):
        exp.fix("bn_test", exp.merged_model("half_ta")[0], rank=2)


def test_unregistered_names_are_unknown_rows():
    for row in (("half_ta", None), ("ta", "bn_test"), "half_ta+bn_test", ("experts", "head"), ("experts", "bn"),
                ("nope", None)):
        with pytest.raises(ValueError, match="unknown row"):
            row_spec(row)
    assert "half_ta" not in merging.MERGE_METHODS and "bn_test" not in fixes.FIXES


def test_rows_are_method_fix_pairs_with_unchanged_ids():
    """The table's rows: ids derived from (method, fix), never parsed; the labels docs/results.md prints."""
    assert ROWS == ("experts", "mtl", "mtl4x", "zeroshot", "ta", "ties", "tall", "ta+head", "ta+repr", "ta+lora", "ties+head",
                    "ties+repr", "ties+lora", "ta+bn", "ties+bn", "zeroshot+head", "ties_k1", "ties_k1+head",
                    "coefficients")
    assert row_spec("ta+head") == row_spec(("ta", "head")) and row_spec("ta+head").fix == "head"
    assert row_spec(("ta", None)).id == "ta" and row_spec("mtl").method == "mtl"
    assert [row_label(r) for r in ROWS] == [
        "experts (LP→FT)", "joint MTL", "joint MTL (4× steps)", "zero-shot (α=0)", "task arithmetic", "TIES", "TALL masks (T encoder passes)",
        "TA + head realign", "TA + block adapters", "TA + PEFT LoRA", "TIES + head realign", "TIES + block adapters",
        "TIES + PEFT LoRA", "TA + BN re-estimation", "TIES + BN re-estimation", "α = 0 + head realign",
        "TIES (k = 1.0)", "TIES (k = 1.0) + head realign", "learned layer coefficients (Fig. 2)"]
    assert row_label(("dare", "lora")) == "DARE + PEFT LoRA"           # derived from the registries' labels
    assert report.row_label("not a row") == "not a row"


def test_per_task_merge_methods_are_not_rows_nor_notebook_merges():
    """A merge method that builds one encoder per task (TALL-like) is no single merged model: rows and the
    merge_method notebook parameter refuse it, with the usual messages."""
    from simo_lite import params

    merging.register_merge_method("per_task_demo", lambda pretrained, tvs, alpha: pretrained, per_task=True)
    try:
        with pytest.raises(ValueError, match="unknown row 'per_task_demo': .*one encoder per task"):
            row_spec(("per_task_demo", None))
        with pytest.raises(ValueError, match="unknown row 'per_task_demo'; valid"):
            row_spec("per_task_demo")
        with pytest.raises(ValueError) as e:
            params.check(None, merge_method="per_task_demo")
        assert str(e.value).startswith("merge_method must be one of zeroshot, average, ta, ties")
        assert "per_task_demo" not in str(e.value).split(", got")[0]
    finally:
        merging.MERGE_METHODS.unregister("per_task_demo")


def test_registered_fix_options_and_builtins():
    assert list(fixes.FIXES)[:4] == ["head", "repr", "lora", "bn"]
    assert {n: fixes.FIXES[n].label for n in ("head", "repr", "lora")} == {
        "head": "head realign", "repr": "block adapters", "lora": "PEFT LoRA"}
    assert fixes.FIXES["repr"].options == ("rank", "steps")
    with pytest.raises(ValueError, match="already registered"):
        fixes.register_fix("head", _reestimate_bn)
    with pytest.raises(ValueError, match="unknown fix 'nope'; valid: head, repr, lora, bn"):
        fixes.FIXES["nope"]


def test_registered_head_builds_models():
    class TinyHead(nn.Module):
        def __init__(self, in_channels, num_taps, out_channels, out_size):
            super().__init__()
            self.out_size = out_size
            self.proj = nn.Conv2d(in_channels, out_channels, 1)

        def forward(self, feats):                                   # last tap only
            return nn.functional.interpolate(self.proj(feats[:, -1]), size=self.out_size, mode="nearest")

    assert list(models.HEADS) == ["linear", "conv"]
    models.register_head("tiny", TinyHead, "proj", label="last tap, 1x1 conv")
    try:
        head = models.make_head("tiny", "depth", 8, 4, (16, 16))
        assert isinstance(head, TinyHead) and float(head.proj.bias.detach()) == 4.0       # depth's output bias
        prof = profiles.get("smoke", head="tiny")
        from simo_lite.foundation import random_encoder_state
        model = training.build_model(random_encoder_state(prof), prof, ("seg", "depth"))
        out = model(torch.rand(2, 3, *prof.input_hw))
        assert out["seg"].shape == (2, prof.seg_classes or 6, *prof.input_hw) and out["depth"].shape[1] == 1
    finally:
        models.HEADS.unregister("tiny")
    with pytest.raises(ValueError, match="unknown head 'tiny'; valid: linear, conv"):
        models.make_head("tiny", "depth", 8, 4, 16)
