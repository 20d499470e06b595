"""The mechanism study's results-table baselines: BatchNorm re-estimation ("bn"), α = 0 + head realignment,
TIES at k = 1.0, the α grid extended beyond 1.0, and the learned per-layer coefficients as a merge row."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn as nn

from simo_lite import fixes, merging, profiles, report, training
from simo_lite.coefficients import group_order
from simo_lite.experiment import Experiment
from simo_lite.realign import bn_reestimate
from simo_lite.rows import ROWS, TABLE_ROWS, row_label, row_spec

TASKS = ("seg", "depth")
NEW_ROWS = (("ta", "bn"), ("ties", "bn"), ("zeroshot", "head"), ("ties_k1", None), ("ties_k1", "head"),
            ("coefficients", None))
NEW_IDS = ("ta+bn", "ties+bn", "zeroshot+head", "ties_k1", "ties_k1+head", "coefficients")
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _model(head: str = "linear", seed: int = 0) -> training.SimoModel:
    from simo_lite.foundation import random_encoder_state
    prof = profiles.get("smoke", head=head)
    return training.build_model(random_encoder_state(prof, seed=seed), prof, TASKS)


def _images(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _bn_buffer_names(model: nn.Module) -> set[str]:
    return {f"{name}.{b}" for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for b in BN_BUFFERS}


# ------------------------------------------------------------------------------------------------
# BN re-estimation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["linear", "conv"])
def test_bn_reestimate_changes_only_bn_buffers_and_not_the_input(head):
    model = _model(head)
    images = _images()
    before = _state(model)
    out, rec = bn_reestimate(model, {"image": images}, batch_size=8)
    assert out is not model
    for k, v in model.state_dict().items():                          # the input model is untouched
        assert torch.equal(v, before[k]), k
    changed = {k for k, v in out.state_dict().items() if not torch.equal(v, before[k])}
    bn = _bn_buffer_names(model)
    assert changed and changed <= bn, changed - bn                    # only BN buffers of the heads moved
    assert all(k.startswith("heads.") for k in changed)
    for (n, p), (n0, p0) in zip(out.named_parameters(), model.named_parameters()):
        assert n == n0 and torch.equal(p, p0), n                      # no parameter changed
    assert not out.training and all(not m.training for m in out.modules())
    assert all(m.momentum == 0.1 for m in out.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    assert (rec.steps, rec.samples, rec.trainable_params) == (0, 16, 0) and rec.name == "bn-reestimate"


def test_bn_reestimate_recovers_corrupted_statistics():
    """Stats set to the features' own statistics, then corrupted: re-estimating on the same features gives
    back the same running mean and variance, and so the same outputs."""
    model = _model("linear")
    images = _images(16)
    feats = training.cache_features(model, images).flatten(1, 2)     # (N, L*2C, h, w): the BN's input
    mean, var = feats.mean((0, 2, 3)), feats.var((0, 2, 3), unbiased=True)
    for t in TASKS:
        model.heads[t].norm.running_mean.copy_(mean)
        model.heads[t].norm.running_var.copy_(var)
    model.eval()
    with torch.no_grad():
        want = model(images)
    bad = copy.deepcopy(model)
    for t in TASKS:
        bad.heads[t].norm.running_mean.add_(3.0)
        bad.heads[t].norm.running_var.mul_(10.0)
    with torch.no_grad():
        broken = bad(images)
    assert all(not torch.allclose(broken[t], want[t], atol=1e-3) for t in TASKS)

    for bs in (16, 4):      # one batch, or equal batches whose cumulative average of means is the mean
        fixed, rec = bn_reestimate(bad, {"image": images}, TASKS, batch_size=bs)
        for t in TASKS:
            norm = fixed.heads[t].norm
            assert torch.allclose(norm.running_mean, mean, atol=1e-5, rtol=1e-5)
            assert int(norm.num_batches_tracked) == 16 // bs
        assert rec.steps == 0 and rec.samples == 16
    fixed, _ = bn_reestimate(bad, {"image": images}, TASKS, batch_size=16)
    with torch.no_grad():
        got = fixed(images)
    for t in TASKS:
        assert torch.allclose(fixed.heads[t].norm.running_var, var, rtol=1e-4, atol=1e-6)
        assert torch.allclose(got[t], want[t], atol=1e-4, rtol=1e-4)
    # only the named tasks' heads are re-estimated
    part, _ = bn_reestimate(bad, {"image": images}, ("seg",), batch_size=16)
    assert torch.equal(part.heads["depth"].norm.running_mean, bad.heads["depth"].norm.running_mean)
    assert torch.allclose(part.heads["seg"].norm.running_mean, mean, atol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        bn_reestimate(bad, {"image": images}, batch_size=0)


def test_bn_fix_is_registered():
    assert fixes.FIXES["bn"].label == "BN re-estimation" and fixes.FIXES["bn"].options == ("batch_size",)
    assert fixes.FIXES["bn"].apply is fixes.bn_reestimation
    assert list(fixes.FIXES)[:4] == ["head", "repr", "lora", "bn"]


# ------------------------------------------------------------------------------------------------
# merges: layer coefficients, TIES k = 1.0, the extended alpha grid
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vit():
    """θ₀ of the smoke ViT, two fine-tuned states (θ₀ + noise), their task vectors and the layer groups."""
    from simo_lite.foundation import random_encoder_state
    theta0 = random_encoder_state(profiles.get("smoke"), seed=0)
    g = torch.Generator().manual_seed(1)
    fts = {t: {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
               for k, v in theta0.items()} for t in TASKS}
    tvs = merging.task_vectors(theta0, fts)
    groups = sorted(set(merging.layer_groups(theta0).values()), key=group_order)
    return theta0, tvs, groups


def _close(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.allclose(a[k], b[k], atol=atol), k


def test_apply_layer_coefficients_ones_is_ta_and_zeros_is_theta0(vit):
    theta0, tvs, groups = vit
    T, G = len(tvs), len(groups)
    assert groups[0] == "embed" and groups[-1] == "norm" and G == 4 + 2              # smoke depth 4
    _close(merging.apply_layer_coefficients(theta0, tvs, torch.ones(T, G), groups),
           merging.task_arithmetic(theta0, tvs, 1.0))
    zeros = merging.apply_layer_coefficients(theta0, tvs, torch.zeros(T, G), groups)
    for k in theta0:
        assert torch.equal(zeros[k], theta0[k]), k
    _close(merging.apply_layer_coefficients(theta0, tvs, [[0.3] * G] * T, groups),
           merging.task_arithmetic(theta0, tvs, 0.3))
    # one group of one task: only that group's tensors move, by that task's vector
    lam = torch.zeros(T, G)
    lam[1, groups.index("block2")] = 0.5
    out = merging.apply_layer_coefficients(theta0, tvs, lam, groups)
    of = merging.layer_groups(theta0)
    for k in of:
        want = theta0[k] + 0.5 * tvs["depth"][k] if of[k] == "block2" else theta0[k]
        assert torch.allclose(out[k], want, atol=1e-6), k
    assert not any(t.data_ptr() == theta0[k].data_ptr() for k, t in out.items())         # copies
    with pytest.raises(ValueError, match="shape"):
        merging.apply_layer_coefficients(theta0, tvs, torch.ones(T, G - 1), groups)
    with pytest.raises(KeyError, match="no coefficients for layer group"):
        merging.apply_layer_coefficients(theta0, tvs, torch.ones(T, G - 1), groups[:-1])


def test_ties_k1_merge_is_ties_at_k_1(vit):
    theta0, tvs, _ = vit
    spec = merging.MERGE_METHODS["ties_k1"]
    assert spec.label == "TIES (k = 1.0)" and spec.uses_alpha and not spec.per_task and spec.options == ()
    for alpha in (0.4, 1.0):
        want = merging.ties(theta0, tvs, k=1.0, alpha=alpha)
        for got in (merging.merge("ties_k1", theta0, tvs, alpha=alpha),
                    merging.merge("ties_k1", theta0, tvs, alpha=alpha, ties_k=0.2)):      # the option is ignored
            for k in want:
                assert torch.equal(got[k], want[k]), k
    k02 = merging.merge("ties", theta0, tvs, alpha=1.0, ties_k=0.2)
    assert any(not torch.equal(k02[k], want[k]) for k in want)


def _peak_at_1_5(a: float) -> float:
    return -(a - 1.5) ** 2


def test_alpha_grid_extends_past_its_edge():
    from simo_lite import params
    assert merging.ALPHA_MAX == 2.0 == params.ALPHA_MAX and merging.ALPHA_STEP == 0.1
    best, scores = merging.select_alpha(_peak_at_1_5, alpha_max=merging.ALPHA_MAX)
    assert best == 1.5 > 1.0
    assert list(scores) == [*merging.ALPHA_GRID, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]       # stops once off the edge
    assert all(0.0 <= a <= 2.0 for a in scores)
    best, scores = merging.select_alpha(lambda a: a, alpha_max=merging.ALPHA_MAX)    # monotone: up to the max
    assert best == 2.0 and max(scores) == 2.0 and len(scores) == 21
    assert merging.select_alpha(_peak_at_1_5)[0] == 1.0                              # no alpha_max: the grid
    best, scores = merging.select_alpha(lambda a: -(a - 0.3) ** 2, alpha_max=2.0)    # inside: no extension
    assert best == 0.3 and list(scores) == list(merging.ALPHA_GRID)
    assert merging.extend_alpha({0.0: 0.0, 1.95: 1.0}, 2.0) == 2.0                   # capped at alpha_max


def test_experiment_select_alpha_extends_with_one_sweep_per_new_point(tmp_path):
    exp = Experiment(profiles.get("smoke"), "seg,depth", seed=0, run_dir=tmp_path / "run")   # loads nothing
    calls = []

    def fake_sweep(method, grid=merging.ALPHA_GRID, tasks=None, **kw):
        calls.append(tuple(float(a) for a in grid))
        return {float(a): {"x": float(a)} for a in grid}

    exp.alpha_sweep = fake_sweep
    exp.score = lambda metrics, split="test", kind="ratio": _peak_at_1_5(metrics["x"])
    alpha, scores = exp.select_alpha("ta")
    assert alpha == 1.5 and max(scores) == pytest.approx(1.6) and min(scores) == 0.0
    assert calls == [tuple(merging.ALPHA_GRID), (1.1,), (1.2,), (1.3,), (1.4,), (1.5,), (1.6,)]
    calls.clear()
    assert exp.select_alpha("ta", alpha_max=None)[0] == 1.0 and calls == [tuple(merging.ALPHA_GRID)]


# ------------------------------------------------------------------------------------------------
# the rows
# ------------------------------------------------------------------------------------------------
def test_new_rows_are_table_rows_with_labels():
    assert ROWS[-len(NEW_IDS):] == NEW_IDS
    assert [row_spec(r).id for r in NEW_ROWS] == list(NEW_IDS)
    assert [row_label(r) for r in NEW_IDS] == [
        "TA + BN re-estimation", "TIES + BN re-estimation", "α = 0 + head realign", "TIES (k = 1.0)",
        "TIES (k = 1.0) + head realign", "learned layer coefficients (Fig. 2)"]
    assert row_spec("coefficients") in TABLE_ROWS and row_spec(("ties_k1", "head")).label


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A smoke experiment on seg + depth and its table of the new rows (trained once, in a tmp run dir)."""
    run_dir = tmp_path_factory.mktemp("baselines")
    exp = Experiment(profiles.get("smoke"), "seg,depth", seed=0, run_dir=run_dir)
    return exp, exp.results_table(rows=NEW_ROWS), run_dir


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_new_rows_in_a_smoke_results_table(smoke):
    exp, table, run_dir = smoke
    rows = {r["row"]: r for r in table}
    assert [r["row"] for r in table] == list(NEW_IDS)
    for r in table:
        assert set(r["metrics"]) == set(TASKS) == set(r["normalized"])
        assert all(_finite(v) for v in (*r["metrics"].values(), *r["normalized"].values())), r["row"]
        assert _finite(r["delta_m_ratio"]) and _finite(r["delta_m_relative"]), r["row"]
        assert r["delta_m_ratio"] == pytest.approx(exp.score(r["metrics"]))
    p, n_realign = exp.profile, len(exp.data["val_realign"]["image"])

    # BN re-estimation: no gradient step, the realignment images seen once; on the row's own merge
    for m in ("ta", "ties"):
        r = rows[f"{m}+bn"]
        assert r["cost"]["steps"] == 0 and r["cost"]["samples"] == n_realign and r["cost"]["trainable_params"] == 0
        model, alpha, _ = exp.merged_model(m)
        assert float(r["alpha"]) == alpha
        before = _state(model)
        fixed, rec = exp.fix("bn", model)
        assert rec.steps == 0 and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        assert r["metrics"] == pytest.approx(exp.evaluate(fixed))

    # α = 0 + head realignment: the pretrained encoder, the heads refitted
    z = rows["zeroshot+head"]
    assert "alpha" not in z and z["cost"]["steps"] == len(TASKS) * p.realign_steps

    # TIES at k = 1.0, at its own validation alpha (the grid, extended while the best is on its edge)
    t1 = rows["ties_k1"]
    scores = {float(a): s for a, s in t1["val_scores"].items()}
    assert set(merging.ALPHA_GRID) <= set(scores) and all(0.0 <= a <= merging.ALPHA_MAX for a in scores)
    assert t1["alpha"] == max(scores, key=lambda a: (scores[a], -a))
    if max(scores) > 1.0:                       # extended: the best was on each edge until the last point
        assert t1["alpha"] >= 1.0 and (t1["alpha"] < max(scores) or max(scores) == merging.ALPHA_MAX)
    want = exp.with_heads(merging.ties(exp.foundation, exp.task_vectors(), k=1.0, alpha=t1["alpha"]))
    assert t1["metrics"] == pytest.approx(exp.evaluate(want))
    assert rows["ties_k1+head"]["alpha"] == t1["alpha"] and rows["ties_k1+head"]["cost"]["steps"] > 0

    # learned layer coefficients: λ per task and layer group in [0, 1], learned on val; their merge on test
    c = rows["coefficients"]
    assert c["groups"] == ["embed", *(f"block{i}" for i in range(p.depth)), "norm"]
    assert set(c["coefficients"]) == set(TASKS)
    assert all(list(lam) == c["groups"] and all(0.0 <= v <= 1.0 for v in lam.values())
               for lam in c["coefficients"].values())
    assert c["cost"]["steps"] == p.realign_steps // 2 > 0
    assert c["cost"]["trainable_params"] == len(TASKS) * len(c["groups"])
    lam = torch.tensor([[c["coefficients"][t][g] for g in c["groups"]] for t in exp.tasks])
    state = merging.apply_layer_coefficients(exp.foundation, exp.task_vectors(), lam, c["groups"])
    assert c["metrics"] == pytest.approx(exp.evaluate(exp.with_heads(state)), rel=1e-4, abs=1e-5)
    up = exp.row_artifact("coefficients").upstream
    assert all(up[f"expert-{t}"] == exp.expert_artifact(t).key for t in TASKS) and "layer-coefficients" in up

    # rendered: the run's Markdown by id, the labelled and the docs' form by label
    md = (run_dir / "results" / "table-seg+depth.md").read_text()
    assert md == exp.to_markdown(table) and all(f"\n| {i} | " in md for i in NEW_IDS)
    doc = report.results_markdown(table, exp.tasks, style=report.DOC)
    assert all(f"| {row_label(i)} | " in doc for i in NEW_IDS)
    assert json.loads((run_dir / "results" / "table-seg+depth.json").read_text())[0]["row"] == "ta+bn"


def test_new_rows_and_extended_sweeps_are_reused_from_the_store(smoke, monkeypatch):
    exp, table, run_dir = smoke
    again = Experiment(profiles.get("smoke"), "seg,depth", seed=0, run_dir=run_dir)
    want = {m: exp.select_alpha(m) for m in ("ta", "ties", "ties_k1")}
    for m, (alpha, scores) in want.items():       # every extension point is a sweep file of its own
        extra = [a for a in scores if a > max(merging.ALPHA_GRID)]
        files = {f.name.rsplit("-", 1)[0] for f in (run_dir / "alphas").glob(f"seg+depth-{m}_alpha*.json")}
        assert files == {f"seg+depth-{m}_alpha" + f"{a:g}".replace(".", "p") for a in extra}
    monkeypatch.setattr(merging, "merge", lambda *a, **k: pytest.fail("alpha sweep re-run"))
    for m, (alpha, scores) in want.items():
        assert again.select_alpha(m) == (alpha, scores)
    assert again.results_table(rows=NEW_ROWS, write=False) == json.loads(json.dumps(table, default=float))
