"""Task vectors and the single-encoder merges (TA, TIES, DARE, TALL, consensus), alpha selection and
task-vector geometry, on hand-made state dicts (expected tensors written out by hand) and on the
state dicts of a real, tiny timm ViT."""
from __future__ import annotations

import math

import pytest
import torch

from simo_lite import merging
from simo_lite.merging import (ALPHA_GRID, MERGE_METHODS, consensus, dare, merge, select_alpha, tall_masks,
                               tall_merged, task_arithmetic, task_vectors, ties, tv_cosine, tv_norms,
                               weight_average, zero_shot)
from simo_lite.models import make_encoder

T = torch.tensor


def _close(a: dict, b: dict, atol: float = 1e-6, rtol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=rtol), (k, a[k], b[k])


def _equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), (k, a[k], b[k])


def _tvs(**vecs) -> dict:
    """Task vectors over one parameter ``w`` from plain lists: _tvs(a=[1, 2], b=[3, 4])."""
    return {t: {"w": T(v, dtype=torch.float32)} for t, v in vecs.items()}


def _theta0(n: int) -> dict:
    return {"w": torch.zeros(n), "steps": T([7, 8], dtype=torch.int64)}


# ------------------------------------------------------------------------------------------------
# hand-made state dicts: two float tensors and an int64 buffer
# ------------------------------------------------------------------------------------------------


@pytest.fixture()
def sd():
    g = torch.Generator().manual_seed(0)

    def state(scale: float = 0.0, buf=(1, 2, 3)) -> dict:
        return {"w": torch.randn(3, 4, generator=g) * (1 if scale == 0 else scale),
                "b": torch.randn(4, generator=g),
                "num_batches": T(buf, dtype=torch.int64)}

    theta0 = state()
    finetuned = {t: {k: (v + torch.randn(v.shape, generator=g) if v.is_floating_point() else v + 100)
                     for k, v in theta0.items()} for t in ("seg", "depth", "normals")}
    return theta0, finetuned


def test_task_vectors_difference_float_only(sd):
    theta0, ft = sd
    tvs = task_vectors(theta0, ft)
    assert list(tvs) == ["seg", "depth", "normals"]
    for t, tv in tvs.items():
        assert set(tv) == {"w", "b"}, "the int64 buffer must be skipped"
        for k in tv:
            assert tv[k].dtype == torch.float32
            assert torch.equal(tv[k], ft[t][k] - theta0[k])


def test_task_vectors_missing_key_raises(sd):
    theta0, ft = sd
    broken = dict(ft)
    broken["depth"] = {k: v for k, v in ft["depth"].items() if k != "b"}
    with pytest.raises(KeyError, match="depth"):
        task_vectors(theta0, broken)


def test_int_buffer_copied_unchanged_by_every_method(sd):
    theta0, ft = sd
    tvs = task_vectors(theta0, ft)
    outs = [task_arithmetic(theta0, tvs, 0.7), zero_shot(theta0), weight_average(theta0, tvs),
            ties(theta0, tvs, k=0.5), dare(theta0, tvs, p=0.5), tall_merged(theta0, tvs, "seg", 0.5),
            consensus(theta0, tvs)] + [merge(m, theta0, tvs, alpha=0.3) for m in MERGE_METHODS]
    for out in outs:
        assert out.keys() == theta0.keys()
        assert out["num_batches"].dtype == torch.int64
        assert torch.equal(out["num_batches"], theta0["num_batches"])
        # a copy, not the same storage: editing the merge must not touch theta_0
        assert out["num_batches"].data_ptr() != theta0["num_batches"].data_ptr()
        assert out["w"].data_ptr() != theta0["w"].data_ptr()


def test_merging_does_not_modify_inputs(sd):
    theta0, ft = sd
    tvs = task_vectors(theta0, ft)
    before0 = {k: v.clone() for k, v in theta0.items()}
    before_tv = {t: {k: v.clone() for k, v in tv.items()} for t, tv in tvs.items()}
    for m in MERGE_METHODS:
        merge(m, theta0, tvs, alpha=0.8, ties_k=0.3, dare_p=0.5)
    tall_merged(theta0, tvs, "depth", 0.4)
    tall_masks(tvs, 0.4)
    _equal(theta0, before0)
    for t in tvs:
        _equal(tvs[t], before_tv[t])


# ------------------------------------------------------------------------------------------------
# task arithmetic, average, zero-shot
# ------------------------------------------------------------------------------------------------


def test_task_arithmetic_alpha0_is_theta0_exactly(sd):
    theta0, ft = sd
    _equal(task_arithmetic(theta0, task_vectors(theta0, ft), 0.0), theta0)


def test_task_arithmetic_alpha1_single_task_is_finetuned(sd):
    theta0, ft = sd
    out = task_arithmetic(theta0, task_vectors(theta0, {"seg": ft["seg"]}), 1.0)
    for k in ("w", "b"):
        assert torch.allclose(out[k], ft["seg"][k], atol=1e-6)
    assert torch.equal(out["num_batches"], theta0["num_batches"])  # not the fine-tuned buffer


def test_task_arithmetic_by_hand():
    out = task_arithmetic({"w": T([1.0, 1.0, 1.0])}, _tvs(a=[1, -2, 3], b=[3, 1, -1]), 0.5)
    assert torch.allclose(out["w"], T([3.0, 0.5, 2.0]))


def test_task_arithmetic_linear_in_alpha(sd):
    theta0, ft = sd
    tvs = task_vectors(theta0, ft)
    total = {k: sum(tv[k] for tv in tvs.values()) for k in ("w", "b")}
    m0 = task_arithmetic(theta0, tvs, 0.0)
    for a in (0.1, 0.3, 0.5, 1.0, 2.0, -0.4):
        m = task_arithmetic(theta0, tvs, a)
        for k in ("w", "b"):
            assert torch.allclose(m[k], theta0[k] + a * total[k], atol=1e-5)
    # f(a) + f(b) - f(0) == f(a + b) (affine in alpha)
    ma, mb, mab = (task_arithmetic(theta0, tvs, a) for a in (0.2, 0.5, 0.7))
    for k in ("w", "b"):
        assert torch.allclose(ma[k] + mb[k] - m0[k], mab[k], atol=1e-5)


def test_weight_average_is_ta_with_one_over_t(sd):
    theta0, ft = sd
    tvs = task_vectors(theta0, ft)
    _close(weight_average(theta0, tvs), task_arithmetic(theta0, tvs, 1 / 3))
    mean_ft = {k: sum(f[k] for f in ft.values()) / 3 for k in ("w", "b")}
    avg = weight_average(theta0, tvs)
    for k in mean_ft:
        assert torch.allclose(avg[k], mean_ft[k], atol=1e-6)


def test_zero_shot_is_a_copy(sd):
    theta0, _ = sd
    z = zero_shot(theta0)
    _equal(z, theta0)
    z["w"].add_(1.0)
    assert not torch.equal(z["w"], theta0["w"])


def test_empty_task_vectors_raise():
    with pytest.raises(ValueError, match="no task vectors"):
        task_arithmetic(_theta0(2), {}, 1.0)
    with pytest.raises(ValueError, match="no task vectors"):
        ties(_theta0(2), {}, k=1.0)


# ------------------------------------------------------------------------------------------------
# TIES
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_ties_single_task_k1_equals_ta(sd, alpha):
    theta0, ft = sd
    tvs = task_vectors(theta0, {"seg": ft["seg"]})
    _close(ties(theta0, tvs, k=1.0, alpha=alpha), task_arithmetic(theta0, tvs, alpha))


def test_ties_sign_election_and_disjoint_mean_by_hand():
    tvs = _tvs(a=[1, -2, 3, 0], b=[3, 1, -1, 0], c=[-1, -4, 2, 0])
    # sum [3, -5, 4, 0] -> signs [+, -, +, 0]
    # entry 0: agreeing {1, 3} -> 2 ; entry 1: {-2, -4} -> -3 ; entry 2: {3, 2} -> 2.5 ; entry 3: 0
    out = ties(_theta0(4), tvs, k=1.0, alpha=1.0)
    assert torch.allclose(out["w"], T([2.0, -3.0, 2.5, 0.0]))
    out = ties(_theta0(4), tvs, k=1.0, alpha=0.5)
    assert torch.allclose(out["w"], T([1.0, -1.5, 1.25, 0.0]))
    assert torch.equal(out["steps"], T([7, 8]))


def test_ties_disjoint_mean_ignores_zeros_by_hand():
    # entry 0: {4, 0, 2} -> sign +, mean over non-zero agreeing {4, 2} = 3 (not 2)
    # entry 1: {-1, 0, 0} -> -1 ; entry 2: {5, -5, 0} -> sum 0 -> no sign -> 0
    out = ties(_theta0(3), _tvs(a=[4, -1, 5], b=[0, 0, -5], c=[2, 0, 0]), k=1.0)
    assert torch.allclose(out["w"], T([3.0, -1.0, 0.0]))


def test_ties_trim_keeps_top_half_per_task_vector():
    # one task: election and disjoint mean are the identity, so the merge shows the trim alone.
    # magnitudes distinct across two tensors: the top half is taken over the whole task vector
    tv = {"one": {"w": T([0.1, -0.8, 0.3, -0.6]), "v": T([[0.5, -0.2], [0.7, -0.4]])}}
    theta0 = {"w": torch.zeros(4), "v": torch.zeros(2, 2)}
    out = ties(theta0, tv, k=0.5)
    # |.| sorted: 0.8 0.7 0.6 0.5 | 0.4 0.3 0.2 0.1 -> keep the first four
    assert torch.equal(out["w"], T([0.0, -0.8, 0.0, -0.6]))
    assert torch.equal(out["v"], T([[0.5, 0.0], [0.7, 0.0]]))
    out = ties(theta0, tv, k=0.25)
    assert torch.equal(out["w"], T([0.0, -0.8, 0.0, 0.0]))
    assert torch.equal(out["v"], T([[0.0, 0.0], [0.7, 0.0]]))


def test_ties_trim_is_per_task_then_elects():
    # each task keeps its own top half: a -> [0, -8, 6, 0], b -> [0, 0, -3, 4]
    tvs = _tvs(a=[1, -8, 6, -2], b=[1, -2, -3, 4])
    # sum of trimmed [0, -8, 3, 4] -> signs [0, -, +, +] -> merged [0, -8, 6, 4]
    out = ties(_theta0(4), tvs, k=0.5)
    assert torch.allclose(out["w"], T([0.0, -8.0, 6.0, 4.0]))


def test_ties_trim_on_random_vector_keeps_exact_count():
    g = torch.Generator().manual_seed(3)
    v = torch.randperm(1000, generator=g).float() + 1                      # distinct magnitudes
    v = v * torch.where(torch.rand(1000, generator=g) < 0.5, -1.0, 1.0)
    out = ties({"w": torch.zeros(1000)}, {"t": {"w": v}}, k=0.5)["w"]
    kept = out != 0
    assert int(kept.sum()) == 500
    assert torch.equal(out[kept], v[kept])
    assert float(v[kept].abs().min()) > float(v[~kept].abs().max())


@pytest.mark.parametrize("k", [0.0, -0.1, 1.01, 2.0])
def test_ties_k_out_of_range_raises(sd, k):
    theta0, ft = sd
    with pytest.raises(ValueError, match="k"):
        ties(theta0, task_vectors(theta0, ft), k=k)


# ------------------------------------------------------------------------------------------------
# DARE
# ------------------------------------------------------------------------------------------------


def test_dare_p0_equals_ta(sd):
    theta0, ft = sd
    tvs = task_vectors(theta0, ft)
    _close(dare(theta0, tvs, p=0.0, alpha=0.6), task_arithmetic(theta0, tvs, 0.6))


def test_dare_deterministic_for_seed(sd):
    theta0, ft = sd
    tvs = task_vectors(theta0, ft)
    _equal(dare(theta0, tvs, p=0.5, seed=3), dare(theta0, tvs, p=0.5, seed=3))
    assert not torch.equal(dare(theta0, tvs, p=0.5, seed=3)["w"], dare(theta0, tvs, p=0.5, seed=4)["w"])


def test_dare_drops_and_rescales_by_hand():
    tv = {"t": {"w": torch.ones(10_000)}}
    out = dare({"w": torch.zeros(10_000)}, tv, p=0.75, seed=0)["w"]
    values = set(out.unique().tolist())
    assert values <= {0.0, 4.0}                                             # dropped or 1 / (1 - p)
    assert abs(float((out == 0).float().mean()) - 0.75) < 0.02


def test_dare_expectation_is_ta():
    g = torch.Generator().manual_seed(0)
    tvs = {t: {"w": torch.randn(20_000, generator=g)} for t in ("a", "b")}
    theta0 = {"w": torch.zeros(20_000)}
    ta = task_arithmetic(theta0, tvs, 0.8)["w"]
    mean = sum(dare(theta0, tvs, p=0.5, alpha=0.8, seed=s)["w"] for s in range(200)) / 200
    rel = float((mean - ta).abs().mean() / ta.abs().mean())
    assert rel < 0.1, rel                                                   # ~0.06 expected
    assert abs(float(mean.sum() - ta.sum())) / float(ta.abs().sum()) < 0.01


def test_dare_p_out_of_range_raises(sd):
    theta0, ft = sd
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match="p"):
            dare(theta0, task_vectors(theta0, ft), p=p)


# ------------------------------------------------------------------------------------------------
# TALL masks and consensus
# ------------------------------------------------------------------------------------------------


def test_tall_masks_by_hand():
    tvs = _tvs(a=[1, -2, 3, 0], b=[3, 1, -1, 0])
    # tau_MTL = [4, -1, 2, 0]
    # a: |tau_a| = [1, 2, 3, 0] >= 0.5 * |MTL - a| = 0.5 * [3, 1, 1, 0] -> [F, T, T, T]
    # b: |tau_b| = [3, 1, 1, 0] >= 0.5 * |MTL - b| = 0.5 * [1, 2, 3, 0] -> [T, T, F, T]
    masks = tall_masks(tvs, 0.5)
    assert masks["a"]["w"].dtype == torch.bool
    assert masks["a"]["w"].tolist() == [False, True, True, True]
    assert masks["b"]["w"].tolist() == [True, True, False, True]
    # one lambda per task: a with lam 0.2 -> [1, 2, 3, 0] >= [0.6, 0.2, 0.2, 0] -> all true
    masks = tall_masks(tvs, {"a": 0.2, "b": 2.0})
    assert masks["a"]["w"].tolist() == [True, True, True, True]
    # b with lam 2: [3, 1, 1, 0] >= [2, 4, 6, 0] -> [T, F, F, T]
    assert masks["b"]["w"].tolist() == [True, False, False, True]
    # an explicit merged vector replaces the sum
    masks = tall_masks(tvs, 1.0, merged_tv={"w": T([1.0, -2.0, 3.0, 0.0])})
    assert masks["a"]["w"].tolist() == [True, True, True, True]            # MTL - a = 0


def test_tall_merged_by_hand():
    theta0 = {"w": T([1.0, 1.0, 1.0, 1.0]), "steps": T([1], dtype=torch.int64)}
    tvs = _tvs(a=[1, -2, 3, 0], b=[3, 1, -1, 0])
    # a's mask [F, T, T, T] on tau_MTL [4, -1, 2, 0]
    out = tall_merged(theta0, tvs, "a", 0.5)
    assert torch.allclose(out["w"], T([1.0, 0.0, 3.0, 1.0]))
    out = tall_merged(theta0, tvs, "b", 0.5, alpha=0.5)
    assert torch.allclose(out["w"], T([3.0, 0.5, 1.0, 1.0]))


def test_tall_merged_lam0_is_ta(sd):
    theta0, ft = sd
    tvs = task_vectors(theta0, ft)
    for t in tvs:
        _close(tall_merged(theta0, tvs, t, 0.0), task_arithmetic(theta0, tvs, 1.0))


def test_consensus_min1_lam0_is_ta(sd):
    theta0, ft = sd
    tvs = task_vectors(theta0, ft)
    _close(consensus(theta0, tvs, lam=0.0, min_tasks=1), task_arithmetic(theta0, tvs, 1.0))
    _close(consensus(theta0, tvs, lam=0.0, min_tasks=1, alpha=0.4), task_arithmetic(theta0, tvs, 0.4))


def test_consensus_by_hand():
    tvs = _tvs(a=[1, -2, 3, 0], b=[3, 1, -1, 0])
    # masks a [F, T, T, T], b [T, T, F, T] -> votes [1, 2, 1, 2]; >= 2 keeps entries 1 and 3 of [4, -1, 2, 0]
    out = consensus(_theta0(4), tvs, lam=0.5, min_tasks=2)
    assert torch.allclose(out["w"], T([0.0, -1.0, 0.0, 0.0]))
    out = consensus(_theta0(4), tvs, lam=0.5, min_tasks=1)
    assert torch.allclose(out["w"], T([4.0, -1.0, 2.0, 0.0]))
    out = consensus(_theta0(4), tvs, lam=0.5, min_tasks=3)                  # nobody gets 3 votes
    assert torch.equal(out["w"], torch.zeros(4))


# ------------------------------------------------------------------------------------------------
# merge() dispatch and alpha selection
# ------------------------------------------------------------------------------------------------


def test_merge_dispatch(sd):
    theta0, ft = sd
    tvs = task_vectors(theta0, ft)
    _equal(merge("zeroshot", theta0, tvs, alpha=0.5), theta0)
    _close(merge("average", theta0, tvs), weight_average(theta0, tvs))
    _close(merge("ta", theta0, tvs, alpha=0.3), task_arithmetic(theta0, tvs, 0.3))
    _close(merge("ties", theta0, tvs, alpha=0.3, ties_k=0.4), ties(theta0, tvs, k=0.4, alpha=0.3))
    _close(merge("dare", theta0, tvs, alpha=0.3, dare_p=0.2, seed=5), dare(theta0, tvs, p=0.2, alpha=0.3, seed=5))
    _close(merge("consensus", theta0, tvs, alpha=0.3, lam=0.4), consensus(theta0, tvs, lam=0.4, alpha=0.3))


def test_merge_unknown_method_lists_valid(sd):
    theta0, ft = sd
    with pytest.raises(ValueError) as e:
        merge("magic", theta0, task_vectors(theta0, ft))
    msg = str(e.value)
    assert "magic" in msg
    for m in MERGE_METHODS:
        assert m in msg


def test_alpha_grid():
    assert ALPHA_GRID == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def test_select_alpha_argmax_of_known_score():
    calls = []

    def score(a):
        calls.append(a)
        return -(a - 0.3) ** 2

    best, scores = select_alpha(score)
    assert best == 0.3
    assert list(scores) == list(ALPHA_GRID)
    assert calls == list(ALPHA_GRID)
    for a, s in scores.items():
        assert s == pytest.approx(-(a - 0.3) ** 2)
    best, _ = select_alpha(lambda a: a)                                     # monotone -> the end
    assert best == 1.0


def test_select_alpha_custom_grid_ties_and_nan():
    best, scores = select_alpha(lambda a: {0.2: 1.0, 0.4: 5.0, 0.6: 5.0}[a], grid=(0.2, 0.4, 0.6))
    assert best == 0.4                                                      # a tie goes to the smaller alpha
    assert scores == {0.2: 1.0, 0.4: 5.0, 0.6: 5.0}
    best, scores = select_alpha(lambda a: float("nan") if a > 0.5 else a)   # NaN scores never win
    assert best == 0.5 and math.isnan(scores[1.0])
    with pytest.raises(ValueError, match="finite"):
        select_alpha(lambda a: float("nan"))


# ------------------------------------------------------------------------------------------------
# task-vector geometry
# ------------------------------------------------------------------------------------------------


def test_tv_norms_by_hand():
    tvs = {"a": {"w": T([3.0, 0.0]), "v": T([[4.0]])}, "b": {"w": T([1.0, 2.0]), "v": T([[2.0]])}}
    norms = tv_norms(tvs)
    assert norms == {"a": pytest.approx(5.0), "b": pytest.approx(3.0)}


def test_tv_cosine_self_negation_orthogonal():
    g = torch.Generator().manual_seed(0)
    x = {"w": torch.randn(5, 3, generator=g), "b": torch.randn(7, generator=g)}
    neg = {k: -v for k, v in x.items()}
    # orthogonal to x: remove the projection onto x of a random vector, over the flattened concatenation
    flat = torch.cat([v.flatten() for v in x.values()]).double()
    r = torch.randn(flat.shape, generator=g).double()
    r = r - (r @ flat) / (flat @ flat) * flat
    orth = {"w": r[:15].reshape(5, 3).float(), "b": r[15:].float()}
    cos = tv_cosine({"x": x, "x2": {k: 2 * v for k, v in x.items()}, "neg": neg, "orth": orth})
    assert cos.shape == (4, 4)
    assert torch.allclose(cos.diagonal(), torch.ones(4), atol=1e-6)
    assert cos[0, 1] == pytest.approx(1.0, abs=1e-6)                       # scale invariant
    assert cos[0, 2] == pytest.approx(-1.0, abs=1e-6)
    assert cos[0, 3] == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(cos, cos.T)


def test_tv_cosine_by_hand():
    cos = tv_cosine(_tvs(a=[1, 0], b=[1, 1], c=[0, -3]))
    s = 1 / math.sqrt(2)
    assert torch.allclose(cos, T([[1, s, 0], [s, 1, -s], [0, -s, 1]]), atol=1e-6)


# ------------------------------------------------------------------------------------------------
# a real (tiny) timm encoder
# ------------------------------------------------------------------------------------------------


def _enc(seed):
    return make_encoder(32, 8, 48, 4, 2, seed=seed)


@pytest.fixture(scope="module")
def vit_states():
    theta0 = _enc(0).state_dict()
    # "fine-tuned" encoders: theta_0 plus small seeded perturbations (another init is just as good)
    fts = {}
    for i, t in enumerate(("seg", "depth", "normals")):
        g = torch.Generator().manual_seed(100 + i)
        fts[t] = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in theta0.items()}
    return theta0, fts


def test_vit_task_vectors_cover_every_float_tensor(vit_states):
    theta0, fts = vit_states
    tvs = task_vectors(theta0, fts)
    assert set(tvs["seg"]) == {k for k, v in theta0.items() if v.is_floating_point()}
    assert "cls_token" in tvs["seg"] and "blocks.3.mlp.fc2.weight" in tvs["seg"]


def test_vit_ta_alpha1_single_task_loads_and_matches_finetuned(vit_states):
    theta0, fts = vit_states
    tvs = task_vectors(theta0, {"seg": fts["seg"]})
    merged = task_arithmetic(theta0, tvs, 1.0)
    _close(merged, fts["seg"], atol=1e-6)
    a, b = _enc(0), _enc(0)
    a.load_state_dict(merged)
    b.load_state_dict(fts["seg"])
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(a.forward_features(x), b.forward_features(x), atol=1e-5)


def test_vit_alpha0_and_average(vit_states):
    theta0, fts = vit_states
    tvs = task_vectors(theta0, fts)
    _equal(task_arithmetic(theta0, tvs, 0.0), theta0)
    avg = weight_average(theta0, tvs)
    for k in theta0:
        assert torch.allclose(avg[k], sum(f[k] for f in fts.values()) / 3, atol=1e-6), k
    for m in MERGE_METHODS:                                                  # every merge loads into timm
        _enc(0).load_state_dict(merge(m, theta0, tvs, alpha=0.5))


def test_vit_ties_k1_single_and_tall_consensus_reduce_to_ta(vit_states):
    theta0, fts = vit_states
    one = task_vectors(theta0, {"depth": fts["depth"]})
    _close(ties(theta0, one, k=1.0, alpha=0.5), task_arithmetic(theta0, one, 0.5))
    tvs = task_vectors(theta0, fts)
    ta = task_arithmetic(theta0, tvs, 1.0)
    _close(tall_merged(theta0, tvs, "normals", 0.0), ta)
    _close(consensus(theta0, tvs, lam=0.0, min_tasks=1), ta)
    cos = tv_cosine(tvs)
    assert torch.allclose(cos.diagonal(), torch.ones(3), atol=1e-6)
    assert float(cos.fill_diagonal_(0).abs().max()) < 0.05                  # independent perturbations


# ------------------------------------------------------------------------------------------------
# a larger merge: ~5M floats, 3 tasks, against a reference on flattened tensors
# ------------------------------------------------------------------------------------------------


def _ties_reference(flat_tvs: torch.Tensor, ranks: torch.Tensor, k: float) -> torch.Tensor:
    """TIES on (T, n) flattened task vectors whose magnitudes have the known ranks ``ranks`` (T, n),
    a permutation of 1..n per task: the top-k fraction is simply rank > n - n_keep (no sorting)."""
    n = flat_tvs.shape[1]
    n_keep = max(int(round(k * n)), 1)
    trimmed = flat_tvs * (ranks > n - n_keep)
    sign = trimmed.sum(0).sign()
    agree = (trimmed.sign() == sign) & (trimmed != 0)
    count = agree.sum(0)
    return torch.where(count > 0, (trimmed * agree).sum(0) / count.clamp(min=1), torch.zeros(()))


def test_large_merge_matches_flat_reference():
    shapes = {"a": (1000, 2000), "b": (2000, 1000), "c": (1000, 1000), "d": (500,), "e": (3, 100, 100)}
    sizes = {k: math.prod(s) for k, s in shapes.items()}
    n = sum(sizes.values())
    assert n > 5_000_000
    g = torch.Generator().manual_seed(0)
    theta0 = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    theta0["buf"] = torch.arange(5)
    # distinct magnitudes, exact in float32: rank r (a permutation of 1..n, i -> (i * a mod n) + 1 with a
    # coprime to n, cheaper than randperm) times a power of two, so the top-k of each vector is unique
    i = torch.arange(n, dtype=torch.int64)
    multipliers = (1_000_003, 2_750_159, 15_485_863)
    assert all(math.gcd(a, n) == 1 for a in multipliers)
    ranks = torch.stack([(i * a) % n + 1 for a in multipliers])            # (3, n), each a permutation of 1..n
    signs = torch.where(torch.rand(3, n, generator=g) < 0.5, -1.0, 1.0)
    flat_tvs = ranks.float() * 2.0 ** -20 * signs                          # (3, n)

    def unflatten(flat):
        out, s = {}, 0
        for k, shape in shapes.items():
            out[k] = flat[s:s + sizes[k]].reshape(shape)
            s += sizes[k]
        return out

    tvs = {f"t{i}": unflatten(flat_tvs[i]) for i in range(3)}
    flat0 = torch.cat([theta0[k].flatten() for k in shapes])

    got = task_arithmetic(theta0, tvs, 0.4)
    ref = unflatten(flat0 + 0.4 * flat_tvs.sum(0))
    for k in shapes:
        assert torch.allclose(got[k], ref[k], atol=1e-5), k
    assert torch.equal(got["buf"], torch.arange(5))

    got = ties(theta0, tvs, k=0.2, alpha=0.7)
    merged = _ties_reference(flat_tvs, ranks, 0.2)
    assert int((merged != 0).sum()) > 0.2 * n                              # some entries from every task
    ref = unflatten(flat0 + 0.7 * merged)
    for k in shapes:
        assert torch.allclose(got[k], ref[k], atol=1e-5), k
    assert torch.equal(got["buf"], torch.arange(5))


# Every merge rejects an empty task-vector dict with a clear ValueError.
def test_weight_average_empty_raises_value_error():
    with pytest.raises(ValueError, match="no task vectors"):
        weight_average(_theta0(2), {})


def test_dare_empty_raises_value_error():
    with pytest.raises(ValueError, match="no task vectors"):
        dare(_theta0(2), {})


def test_module_exports():
    for name in merging.__all__:
        assert hasattr(merging, name), name


# ----------------------------------------------------------------------------------------------
# the merge-method registry: extension from outside the package
# ----------------------------------------------------------------------------------------------
def test_register_merge_method_from_outside(sd):
    from simo_lite.merging import MERGE_METHODS, register_merge_method
    theta0, ft = sd
    tvs = task_vectors(theta0, ft)

    @register_merge_method("half_ta", label="half task arithmetic")
    def half(pretrained, task_vectors, alpha):
        return task_arithmetic(pretrained, task_vectors, alpha / 2)

    try:
        assert "half_ta" in MERGE_METHODS and MERGE_METHODS["half_ta"].label == "half task arithmetic"
        _close(merge("half_ta", theta0, tvs, alpha=0.6, ties_k=0.5), task_arithmetic(theta0, tvs, 0.3))
        with pytest.raises(ValueError, match="already registered"):
            register_merge_method("half_ta", half)
    finally:
        MERGE_METHODS.unregister("half_ta")
    with pytest.raises(ValueError, match="unknown merge method 'half_ta'; valid: zeroshot, average, ta, ties"):
        merge("half_ta", theta0, tvs)


def test_merge_rejects_an_option_no_method_takes(sd):
    theta0, ft = sd
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['ties_kk'\].*ties_k"):
        merge("ties", theta0, task_vectors(theta0, ft), alpha=0.3, ties_kk=0.4)


def test_unknown_name_error_is_key_and_value_error():
    from simo_lite.registry import Registry, UnknownNameError
    reg = Registry("colour")
    reg.register("red", 1)
    with pytest.raises(KeyError) as k:
        reg["blue"]
    assert isinstance(k.value, UnknownNameError) and isinstance(k.value, ValueError)
    assert str(k.value) == "unknown colour 'blue'; valid: red"
    with pytest.raises(ValueError, match="non-empty string"):
        reg.register("", 2)


# ---------------------------------------------------------------------------------------------
# clear errors for task vectors that do not belong together
# ---------------------------------------------------------------------------------------------
def test_task_vectors_of_other_encoders_are_a_clear_error():
    tvs = {"a": {"w": T([1.0]), "v": T([2.0])}, "b": {"w": T([1.0])}}
    with pytest.raises(KeyError, match=r"task vectors of 'a' and 'b' have different tensors, e\.g\. \['v'\]"):
        task_arithmetic({"w": T([0.0]), "v": T([0.0])}, tvs, 1.0)


def test_tall_names_a_task_or_lam_it_does_not_have():
    tvs = _tvs(a=[1.0, 2.0], b=[3.0, -1.0])
    with pytest.raises(KeyError, match=r"no task vector for 'c'; tasks: a, b"):
        tall_merged(_theta0(2), tvs, "c", 0.5)
    with pytest.raises(KeyError, match=r"lam has no value for task\(s\) b"):
        tall_masks(tvs, {"a": 0.5})


# ---------------------------------------------------------------------------------------------
# learned layer coefficients: simo_lite.coefficients, still reachable as merging.learn_layer_coefficients
# ---------------------------------------------------------------------------------------------
def test_learn_layer_coefficients_lives_outside_merging():
    import inspect
    import subprocess
    import sys

    from simo_lite import coefficients
    assert merging.learn_layer_coefficients is coefficients.learn_layer_coefficients
    assert inspect.signature(merging.learn_layer_coefficients).parameters["init"].default == 0.3
    code = ("import sys, simo_lite.merging; bad = [m for m in ('simo_lite.training', 'simo_lite.models', "
            "'simo_lite.tasks', 'simo_lite.coefficients') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_learn_layer_coefficients_on_a_tiny_model():
    from simo_lite import foundation, profiles, training
    prof = profiles.get("smoke", n_val=8)
    val = training.load_data(prof, splits=("val",))["val"]
    pretrained = foundation.random_encoder_state(prof)
    tvs = {t: {k: 0.01 * torch.randn_like(v) for k, v in pretrained.items() if v.is_floating_point()}
           for t in ("seg", "depth")}
    model = training.build_model(pretrained, prof, ("seg", "depth"))
    lam, names, losses = merging.learn_layer_coefficients(pretrained, tvs, model, val, steps=3, batch_size=4)
    assert names == ["embed", "block0", "block1", "block2", "block3", "norm"]
    assert lam.shape == (2, 6) and ((lam >= 0) & (lam <= 1)).all() and len(losses) == 3
    assert not any(p.requires_grad for p in model.parameters())               # the model is frozen
    with pytest.raises(ValueError, match="no task vectors"):
        merging.learn_layer_coefficients(pretrained, {}, model, val)
    with pytest.raises(ValueError, match=r"labels for seg, depth; its keys: image, seg"):
        merging.learn_layer_coefficients(pretrained, tvs, model, {"image": val["image"], "seg": val["seg"]})
