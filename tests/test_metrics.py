"""Metric accumulators, normalised performance and the two Δm forms (paper Table 1 numbers)."""
from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from simo_lite import metrics as M
from simo_lite.metrics import BinaryF1, MeanAbsError, MeanAngleError, MeanIoU, delta_m, normalized_performance

# ------------------------------------------------------------------------------------------------
# MeanIoU
# ------------------------------------------------------------------------------------------------


def test_mean_iou_matches_torchmetrics():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (4, 16, 16), generator=g)
    # a noisy predictor: right 60 % of the time, otherwise a random class
    noise = torch.randint(0, 6, target.shape, generator=g)
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.6, target, noise)
    assert torch.bincount(target.flatten(), minlength=6).min() > 0
    assert torch.bincount(pred.flatten(), minlength=6).min() > 0

    ours = MeanIoU(6)
    ours.update(pred, target)
    ref = MulticlassJaccardIndex(num_classes=6, average="macro")
    expected = float(ref(pred, target))
    assert ours.compute() == pytest.approx(expected, abs=1e-6)
    assert 0.2 < ours.compute() < 0.9


def test_mean_iou_by_hand():
    # classes 0, 1, 2; class 2 never appears in target or prediction -> skipped (NaN per class)
    target = torch.tensor([[[0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1]]])
    m = MeanIoU(3)
    m.update(pred, target)
    # class 0: TP 1, union 2 -> 1/2 ; class 1: TP 2, union 3 -> 2/3
    per = m.per_class()
    assert per[0].item() == pytest.approx(0.5)
    assert per[1].item() == pytest.approx(2 / 3)
    assert math.isnan(per[2].item())
    assert m.compute() == pytest.approx((0.5 + 2 / 3) / 2)
    assert m.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]


def test_mean_iou_perfect_and_ignore_index():
    target = torch.tensor([[[0, 1, 2, 2]]])
    m = MeanIoU(3)
    m.update(target.clone(), target)
    assert m.compute() == pytest.approx(1.0)

    m = MeanIoU(3, ignore_index=255)
    target = torch.tensor([[[0, 1, 255, 255]]])
    pred = torch.tensor([[[0, 1, 2, 0]]])   # predictions on ignored pixels do not count
    m.update(pred, target)
    assert m.compute() == pytest.approx(1.0)


def test_mean_iou_empty_is_nan():
    assert math.isnan(MeanIoU(4).compute())


# ------------------------------------------------------------------------------------------------
# MeanAbsError, MeanAngleError, BinaryF1
# ------------------------------------------------------------------------------------------------


def test_mean_abs_error_by_hand():
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    target = torch.tensor([1.5, 2.0, 1.0, 4.0]).reshape(1, 1, 2, 2)
    m = MeanAbsError()
    m.update(pred, target)
    assert m.compute() == pytest.approx((0.5 + 0 + 2 + 0) / 4)


def test_mean_abs_error_averages_channels_and_masks_zero():
    pred = torch.zeros(1, 3, 1, 2)
    target = torch.tensor([[[[3.0, 0.0]], [[0.0, 0.0]], [[0.0, 0.0]]]])  # pixel 0 error 1, pixel 1 no label
    m = MeanAbsError()
    m.update(pred, target)
    assert m.compute() == pytest.approx(0.5)          # (1 + 0) / 2 pixels
    m = MeanAbsError(mask_zero=True)
    m.update(pred, target)
    assert m.compute() == pytest.approx(1.0)          # the all-zero target pixel is skipped


def _normals(*vecs):
    """(1, 3, 1, len(vecs)) normals from 3-vectors."""
    return torch.tensor(vecs, dtype=torch.float32).T.reshape(1, 3, 1, len(vecs))


@pytest.mark.parametrize("pred, expected", [
    ((0.0, 0.0, 1.0), 0.0),       # identical
    ((1.0, 0.0, 0.0), 90.0),      # perpendicular
    ((0.0, 0.0, -1.0), 180.0),    # opposite
    ((0.0, 0.0, 5.0), 0.0),       # prediction is normalised first
])
def test_mean_angle_error_cases(pred, expected):
    m = MeanAngleError()
    m.update(_normals(pred), _normals((0.0, 0.0, 1.0)))
    assert m.compute() == pytest.approx(expected, abs=1e-3)


def test_mean_angle_error_averages_and_skips_undefined():
    pred = _normals((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    target = _normals((0.0, 0.0, 1.0), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0))  # third target undefined
    m = MeanAngleError()
    m.update(pred, target)
    assert m.compute() == pytest.approx(45.0, abs=1e-3)
    assert m.count == 2


def test_binary_f1_by_hand():
    pred = torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.float32).reshape(1, 1, 2, 3)
    target = torch.tensor([1, 0, 1, 0, 1, 1], dtype=torch.float32).reshape(1, 1, 2, 3)
    m = BinaryF1()
    m.update(pred, target)
    # TP 2, FP 1, FN 2 -> 4 / (4 + 1 + 2)
    assert (m.tp, m.fp, m.fn) == (2, 1, 2)
    assert m.compute() == pytest.approx(4 / 7)


def test_binary_f1_perfect_and_empty():
    t = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    m = BinaryF1()
    m.update(t, t)
    assert m.compute() == pytest.approx(1.0)
    m = BinaryF1()
    m.update(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    assert math.isnan(m.compute())


# ------------------------------------------------------------------------------------------------
# streaming: two batches == one batch
# ------------------------------------------------------------------------------------------------


def _stream_equals_batch(make, pred, target):
    one = make()
    one.update(pred, target)
    two = make()
    two.update(pred[:3], target[:3])
    two.update(pred[3:], target[3:])
    return one.compute(), two.compute()


def test_streaming_equals_single_batch():
    g = torch.Generator().manual_seed(1)
    seg_t = torch.randint(0, 6, (5, 8, 8), generator=g)
    seg_p = torch.randint(0, 6, (5, 8, 8), generator=g)
    a, b = _stream_equals_batch(lambda: MeanIoU(6), seg_p, seg_t)
    assert a == pytest.approx(b, abs=1e-12)

    d_t = torch.rand(5, 1, 8, 8, generator=g) + 1
    d_p = torch.rand(5, 1, 8, 8, generator=g) + 1
    a, b = _stream_equals_batch(MeanAbsError, d_p, d_t)
    assert a == pytest.approx(b, rel=1e-6)

    n_t = torch.nn.functional.normalize(torch.randn(5, 3, 8, 8, generator=g), dim=1)
    n_p = torch.randn(5, 3, 8, 8, generator=g)
    a, b = _stream_equals_batch(MeanAngleError, n_p, n_t)
    assert a == pytest.approx(b, rel=1e-6)

    e_t = (torch.rand(5, 1, 8, 8, generator=g) < 0.3).float()
    e_p = (torch.rand(5, 1, 8, 8, generator=g) < 0.3).float()
    a, b = _stream_equals_batch(BinaryF1, e_p, e_t)
    assert a == pytest.approx(b, abs=1e-12)


# ------------------------------------------------------------------------------------------------
# normalised performance and Δm (paper, NYUv2 Table 1: experts vs task arithmetic)
# ------------------------------------------------------------------------------------------------
EXPERTS = {"seg": 70.79, "depth": 0.2314, "normals": 18.02}
TASK_ARITHMETIC = {"seg": 65.78, "depth": 0.4171, "normals": 26.13}
LOWER = {"seg": False, "depth": True, "normals": True}


def test_delta_m_ratio_matches_paper():
    assert delta_m(TASK_ARITHMETIC, EXPERTS, LOWER, kind="ratio") == pytest.approx(-0.275, abs=1e-3)
    assert delta_m(TASK_ARITHMETIC, EXPERTS, LOWER) == pytest.approx(-0.275, abs=1e-3)  # default kind


def test_delta_m_relative_matches_eq2():
    assert delta_m(TASK_ARITHMETIC, EXPERTS, LOWER, kind="relative") == pytest.approx(-0.441, abs=1e-3)


def test_delta_m_of_baseline_is_zero_and_direction_matters():
    for kind in ("ratio", "relative"):
        assert delta_m(EXPERTS, EXPERTS, LOWER, kind=kind) == pytest.approx(0.0, abs=1e-12)
        better = {"seg": 80.0, "depth": 0.2, "normals": 15.0}
        assert delta_m(better, EXPERTS, LOWER, kind=kind) > 0


def test_delta_m_errors():
    with pytest.raises(ValueError, match="ratio"):
        delta_m(TASK_ARITHMETIC, EXPERTS, LOWER, kind="nope")
    with pytest.raises(ValueError):
        delta_m({}, EXPERTS, LOWER)


def test_normalized_performance():
    same = normalized_performance(EXPERTS, EXPERTS, LOWER)
    assert same == pytest.approx({t: 1.0 for t in EXPERTS})
    ta = normalized_performance(TASK_ARITHMETIC, EXPERTS, LOWER)
    assert ta["seg"] == pytest.approx(65.78 / 70.79)
    assert ta["depth"] == pytest.approx(0.2314 / 0.4171)      # B / M when lower is better
    assert ta["normals"] == pytest.approx(18.02 / 26.13)
    with pytest.raises(KeyError):
        normalized_performance({"edges": 0.5}, EXPERTS, LOWER)
    # a higher-is-better score of 0 keeps nothing of the expert: 0.0, not undefined; zero denominators are NaN
    edge = normalized_performance({"f1": 0.0, "err": 0.0, "f1b": 0.3}, {"f1": 0.4, "err": 0.2, "f1b": 0.0},
                                  {"f1": False, "err": True, "f1b": False})
    assert edge["f1"] == 0.0 and math.isnan(edge["err"]) and math.isnan(edge["f1b"])


def test_fast_channel_helpers_match_torch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 9, 7, generator=g)
    x[0, :, 0, 0] = 0                                                      # a zero vector stays zero
    torch.testing.assert_close(M.unit_channels(x), torch.nn.functional.normalize(x, dim=1))
    s = torch.randn(4, 6, 9, 7, generator=g)
    assert torch.equal(M.argmax_channels(s), s.argmax(1))


def test_delta_m_relative_checks_tasks_and_a_zero_baseline_like_ratio():
    with pytest.raises(KeyError, match="no baseline"):
        delta_m({"seg": 0.5}, {}, {"seg": False}, kind="relative")
    assert math.isnan(delta_m({"seg": 0.5}, {"seg": 0.0}, {"seg": False}, kind="relative"))
    assert math.isnan(delta_m({"seg": 0.5}, {"seg": 0.0}, {"seg": False}, kind="ratio"))


@pytest.mark.parametrize("make, pred, target", [
    (lambda: MeanAbsError(mask_zero=True), torch.rand(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)),   # no valid depth
    (MeanAngleError, torch.randn(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)),                       # no defined normal
    (MeanAbsError, torch.rand(0, 1, 4, 4), torch.rand(0, 1, 4, 4)),                           # an empty split
])
def test_all_invalid_split_is_nan_not_a_perfect_score(make, pred, target):
    m = make()
    m.update(pred, target)
    assert math.isnan(m.compute())
    assert math.isnan(make().compute())                  # nothing seen at all


def test_binary_f1_matches_torchmetrics_and_documents_the_empty_case():
    from torchmetrics.classification import BinaryF1Score
    g = torch.Generator().manual_seed(0)
    for density in (0.02, 0.3, 0.9):
        pred = (torch.rand(3, 1, 16, 16, generator=g) < density).long()
        target = (torch.rand(3, 1, 16, 16, generator=g) < density).long()
        m = BinaryF1()
        m.update(pred, target)
        assert m.compute() == pytest.approx(float(BinaryF1Score()(pred.flatten(), target.flatten())), abs=1e-6)
    empty = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    m = BinaryF1()
    m.update(empty, empty)
    assert math.isnan(m.compute())                                         # 0/0: NaN, as documented
    assert float(BinaryF1Score(zero_division=0)(empty.flatten(), empty.flatten())) == 0.0   # torchmetrics' choice


def test_normals_loss_and_metric_share_one_validity_mask():
    from simo_lite.tasks import get_task
    target = torch.zeros(1, 3, 2, 2)
    target[0, 2, 0, 0] = 1.0                             # one defined normal (0, 0, 1); three missing (zeros)
    target[0, 0, 0, 1] = 0.3                             # a small non-zero vector: not a unit normal, undefined
    pred = torch.zeros(1, 3, 2, 2)
    pred[0, 0] = 1.0                                     # (1, 0, 0) everywhere: 90 degrees from the defined one
    valid = M.valid_normals(target)
    assert valid.tolist() == [[[True, False], [False, False]]]
    m = MeanAngleError()
    m.update(pred, target)
    assert m.compute() == pytest.approx(90.0)
    loss = get_task("normals").loss_fn(pred, target)
    assert float(loss) == pytest.approx(1.0)             # 1 - cos over the same single pixel
