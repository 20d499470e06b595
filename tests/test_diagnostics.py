"""Feature-drift diagnostics: linear CKA, per-layer drift statistics, and the subset sweep of Fig. 1."""
from __future__ import annotations

import math

import pytest
import torch

from simo_lite.diagnostics import feature_drift, feature_stats, head_swap_matrix, linear_cka, merge_combinations


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _orthogonal(d, seed=0):
    q, _ = torch.linalg.qr(_randn(d, d, seed=seed).double())
    return q.float()


# ------------------------------------------------------------------------------------------------
# linear CKA
# ------------------------------------------------------------------------------------------------


def test_cka_self_is_one():
    x = _randn(200, 16)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)


def test_cka_invariant_to_rotation_and_isotropic_scaling():
    x = _randn(300, 12, seed=1)
    q = _orthogonal(12, seed=2)
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(x, 3.5 * (x @ q)) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(x, x + 7.0) == pytest.approx(1.0, abs=1e-6)          # centring removes offsets
    y = _randn(300, 5, seed=3)
    ref = linear_cka(x, y)
    assert linear_cka(x @ q, 0.1 * y) == pytest.approx(ref, rel=1e-5)
    assert linear_cka(y, x) == pytest.approx(ref, rel=1e-9)                # symmetric


def test_cka_not_invariant_to_anisotropic_scaling():
    x = _randn(300, 6, seed=4)
    assert linear_cka(x, x * torch.tensor([10.0, 1, 1, 1, 1, 0.1])) < 0.99


def test_cka_independent_features_small():
    x, y = _randn(2000, 8, seed=5), _randn(2000, 8, seed=6)
    c = linear_cka(x, y)
    assert 0.0 <= c < 0.2, c


def test_cka_different_widths_and_bounds():
    x = _randn(500, 4, seed=7)
    y = torch.cat([x, _randn(500, 4, seed=8)], 1)                           # y contains x plus noise dims
    c = linear_cka(x, y)
    assert 0.2 < c < 1.0


def test_cka_row_mismatch_and_constant():
    with pytest.raises(ValueError, match="rows"):
        linear_cka(_randn(10, 3), _randn(11, 3))
    assert math.isnan(linear_cka(torch.ones(10, 3), _randn(10, 3)))        # zero variance: undefined


# ------------------------------------------------------------------------------------------------
# feature drift
# ------------------------------------------------------------------------------------------------


FEATS_SHAPE = (6, 3, 10, 4, 4)                                               # (N, L, 2C, h, w)


def _feats(seed=0):
    # a non-zero mean per channel so mean_shift is well defined
    return _randn(*FEATS_SHAPE, seed=seed) + torch.linspace(0.5, 2.0, FEATS_SHAPE[2])[None, None, :, None, None]


def test_feature_drift_identical():
    f = _feats()
    rows = feature_drift(f, f.clone())
    assert [r["layer"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert r["mean_shift"] == pytest.approx(0.0, abs=1e-9)
        assert r["std_ratio"] == pytest.approx(1.0, abs=1e-9)
        assert r["norm_ratio"] == pytest.approx(1.0, abs=1e-9)
        assert r["cka"] == pytest.approx(1.0, abs=1e-9)
        assert r["cosine"] == pytest.approx(1.0, abs=1e-6)


def test_feature_drift_scaled_by_two():
    f = _feats()
    for r in feature_drift(f, 2 * f):
        assert r["norm_ratio"] == pytest.approx(2.0, rel=1e-6)
        assert r["std_ratio"] == pytest.approx(2.0, rel=1e-6)
        assert r["mean_shift"] == pytest.approx(1.0, rel=1e-6)               # ||2 mu - mu|| / ||mu||
        assert r["cka"] == pytest.approx(1.0, abs=1e-6)
        assert r["cosine"] == pytest.approx(1.0, abs=1e-6)


def test_feature_drift_per_layer_and_by_hand():
    f = _feats()
    g = f.clone()
    g[:, 1] = _randn(FEATS_SHAPE[0], *FEATS_SHAPE[2:], seed=9)              # only layer 1 replaced
    g[:, 2] = -f[:, 2]                                                       # layer 2 negated
    rows = feature_drift(f, g)
    assert rows[0]["cka"] == pytest.approx(1.0, abs=1e-9) and rows[0]["mean_shift"] == pytest.approx(0.0, abs=1e-9)
    assert rows[1]["cka"] < 0.5 and rows[1]["mean_shift"] > 0.5
    assert rows[2]["cosine"] == pytest.approx(-1.0, abs=1e-6)
    assert rows[2]["cka"] == pytest.approx(1.0, abs=1e-6)                   # CKA ignores sign flips
    assert rows[2]["mean_shift"] == pytest.approx(2.0, rel=1e-6)
    # tokens are per image and position: rotating the channels keeps CKA, changes the cosine
    q = _orthogonal(FEATS_SHAPE[2], seed=10)
    rot = torch.einsum("nlchw,cd->nldhw", f, q)
    r = feature_drift(f, rot)[0]
    assert r["cka"] == pytest.approx(1.0, abs=1e-5)
    assert r["norm_ratio"] == pytest.approx(1.0, abs=1e-5)
    assert r["cosine"] < 0.99


def test_feature_drift_max_tokens_subset():
    f, g = _feats(0), _feats(1)
    full = feature_drift(f, g)                                               # 96 tokens per layer
    sub = feature_drift(f, g, max_tokens=40)
    for a, b in zip(full, sub):
        # only CKA uses the subset
        assert {k: a[k] for k in a if k != "cka"} == {k: b[k] for k in b if k != "cka"}
        assert a["cka"] != b["cka"]


def test_feature_drift_shape_mismatch():
    with pytest.raises(ValueError, match="shapes"):
        feature_drift(_feats(), _feats()[:, :2])


def test_feature_stats_shapes_and_values():
    f = _feats()
    s = feature_stats(f)
    L, C = FEATS_SHAPE[1], FEATS_SHAPE[2]
    assert s["mean"].shape == (L, C) and s["std"].shape == (L, C) and s["norm"].shape == (L,)
    toks = f[:, 1].permute(0, 2, 3, 1).reshape(-1, C)
    assert torch.allclose(s["mean"][1], toks.mean(0), atol=1e-5)
    assert torch.allclose(s["std"][1], toks.std(0), atol=1e-5)
    assert s["norm"][1] == pytest.approx(float(toks.norm(dim=1).mean()), rel=1e-5)


# ------------------------------------------------------------------------------------------------
# subsets of tasks (Fig. 1) and the head-swap matrix
# ------------------------------------------------------------------------------------------------


def test_merge_combinations_all_subsets():
    calls = []

    def score_subset(subset):
        calls.append(tuple(subset))
        return {t: 1.0 - 0.1 * (len(subset) - 1) - (0.01 if t == "depth" else 0.0) for t in subset}

    out = merge_combinations(["seg", "depth", "normals"], score_subset)
    assert len(calls) == 7 and len(set(calls)) == 7
    assert set(out) == {1, 2, 3}
    assert [len(out[k]) for k in (1, 2, 3)] == [3, 3, 1]
    assert [r["tasks"] for r in out[1]] == [["seg"], ["depth"], ["normals"]]
    assert [r["tasks"] for r in out[2]] == [["seg", "depth"], ["seg", "normals"], ["depth", "normals"]]
    assert out[3][0]["tasks"] == ["seg", "depth", "normals"]
    for k, rows in out.items():
        for r in rows:
            assert set(r["per_task"]) == set(r["tasks"])
            assert r["mean"] == pytest.approx(sum(r["per_task"].values()) / k)
    assert out[3][0]["mean"] == pytest.approx(0.8 - 0.01 / 3)


def test_merge_combinations_min_size():
    out = merge_combinations(("a", "b", "c"), lambda s: {t: 1.0 for t in s}, min_size=2)
    assert set(out) == {2, 3} and len(out[2]) == 3 and len(out[3]) == 1


def test_head_swap_matrix():
    encoders = {"expert-seg": {"w": 1.0}, "merged": {"w": 0.5}}
    out = head_swap_matrix(encoders, ("seg", "depth"), lambda s: {"seg": s["w"], "depth": 2 * s["w"]})
    assert out == {"expert-seg": {"seg": 1.0, "depth": 2.0}, "merged": {"seg": 0.5, "depth": 1.0}}


def test_merge_combinations_rejects_a_task_set_string_and_an_empty_subset_size():
    with pytest.raises(TypeError, match="task names.*get_tasks"):
        merge_combinations("nyu3", lambda s: {t: 1.0 for t in s})
    with pytest.raises(ValueError, match="min_size must be >= 1"):
        merge_combinations(("seg", "depth"), lambda s: {t: 1.0 for t in s}, min_size=0)
