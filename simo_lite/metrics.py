"""Per-task metrics (streaming accumulators), normalised performance and the two Δm forms.

Accumulators take batches of (prediction, target) already post-processed by the task (class ids,
unit normals, metres...) and return one float from ``compute()``:

- :class:`MeanIoU`        segmentation, from a confusion matrix (classes with empty union skipped).
- :class:`MeanAbsError`   depth (metres) and albedo (reflectance units): mean |pred - target|.
- :class:`MeanAngleError` surface normals: mean arccos(pred . target) in degrees.
- :class:`BinaryF1`       edges: F1 score of the positive (edge) class at threshold 0.5.
"""
from __future__ import annotations


import torch

__all__ = ["unit_channels", "argmax_channels", "MeanIoU", "MeanAbsError", "MeanAngleError", "BinaryF1",
           "normalized_performance", "delta_m"]


def unit_channels(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / ||x|| over dim 1 (B, C, H, W), like ``F.normalize(x, dim=1)`` but several times faster on CPU
    for channel-first maps (a strided norm over a small dim 1 is slow)."""
    return x / (x * x).sum(1, keepdim=True).sqrt().clamp_min(eps)


def argmax_channels(x: torch.Tensor) -> torch.Tensor:
    """argmax over dim 1 of (B, C, H, W) -> (B, H, W); channels-last first, which is faster on CPU."""
    return x.permute(0, 2, 3, 1).contiguous().argmax(-1)


class MeanIoU:
    """Mean intersection-over-union from an accumulated confusion matrix; target pixels equal to
    ``ignore_index`` are skipped. ``num_classes=None`` sizes the matrix from the ids seen (a class
    absent from both predictions and targets is skipped either way, so the mean is the same)."""

    def __init__(self, num_classes: int | None = None, ignore_index: int = -1):
        self.num_classes, self.ignore_index = num_classes or 0, ignore_index
        self.fixed = num_classes is not None
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)  # rows: target

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: (B, H, W) int class ids."""
        keep = target != self.ignore_index
        t, p = target[keep].cpu().long(), pred[keep].cpu().long()
        if t.numel() == 0:
            return
        k = int(max(t.max(), p.max())) + 1
        if k > self.num_classes:
            if self.fixed:
                raise ValueError(f"class id {k - 1} out of range for {self.num_classes} classes")
            grown = torch.zeros(k, k, dtype=torch.int64)
            grown[:self.num_classes, :self.num_classes] = self.confusion
            self.confusion, self.num_classes = grown, k
        idx = t * self.num_classes + p
        self.confusion += torch.bincount(idx, minlength=self.num_classes ** 2).reshape(self.num_classes, -1)

    def per_class(self) -> torch.Tensor:
        """IoU per class (num_classes,), NaN where a class is absent from both pred and target."""
        tp = self.confusion.diag().double()
        union = self.confusion.sum(0).double() + self.confusion.sum(1).double() - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.tensor(float("nan"), dtype=torch.float64))

    def compute(self) -> float:
        """The mean IoU over classes present in pred or target; NaN when no pixel was counted."""
        iou = self.per_class()
        return float(iou[~iou.isnan()].mean()) if (~iou.isnan()).any() else float("nan")


class MeanAbsError:
    """Mean absolute error over valid pixels (target channels not all zero when ``mask_zero``)."""

    def __init__(self, mask_zero: bool = False):
        self.mask_zero, self.total, self.count = mask_zero, 0.0, 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: (B, C, H, W); the error of a pixel is averaged over its C channels."""
        err = (pred - target).abs().mean(1)                          # (B, H, W)
        if self.mask_zero:
            err = err[target.abs().sum(1) > 0]
        self.total += float(err.sum())
        self.count += err.numel()

    def compute(self) -> float:
        """The mean over valid pixels; NaN when no pixel was valid (never 0.0, a perfect score)."""
        return self.total / self.count if self.count else float("nan")


def valid_normals(target: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: pixels with a defined normal in ``target`` (B, 3, H, W).

    Real datasets mark a missing normal with zeros; a defined one is a unit vector. The normals
    loss (``tasks``) and :class:`MeanAngleError` both use this one mask."""
    return (target * target).sum(1) > 0.25


class MeanAngleError:
    """Mean angle in degrees between predicted and target normals (both (B, 3, H, W))."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred (B, 3, H, W) normals (normalised here), target (B, 3, H, W) unit normals, zeros where missing."""
        valid = valid_normals(target)                                # (B, H, W) defined normals
        pred = unit_channels(pred)
        cos = (pred * target).sum(1).clamp(-1, 1)[valid]
        self.total += float(torch.rad2deg(torch.acos(cos)).sum())
        self.count += cos.numel()

    def compute(self) -> float:
        """The mean angle (degrees) over valid pixels; NaN when no pixel had a defined normal."""
        return self.total / self.count if self.count else float("nan")


class BinaryF1:
    """F1 of the positive class: 2TP / (2TP + FP + FN), with pred and target in {0, 1}, pooled over
    every pixel seen.

    With no positive in either pred or target (TP = FP = FN = 0) F1 is 0/0: :meth:`compute` returns
    NaN, like the IoU of a class absent from both; torchmetrics' ``BinaryF1Score`` returns its
    ``zero_division`` value there (0 by default). Everywhere else the two agree."""

    def __init__(self):
        self.tp = self.fp = self.fn = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: same shape (e.g. (B, 1, H, W)), values in {0, 1}; counts TP, FP and FN."""
        p, t = pred.bool(), target.bool()
        self.tp += int((p & t).sum())
        self.fp += int((p & ~t).sum())
        self.fn += int((~p & t).sum())

    def compute(self) -> float:
        """F1 = 2TP / (2TP + FP + FN) over every pixel seen; NaN when there was no positive at all."""
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else float("nan")


def normalized_performance(metrics: dict[str, float], baseline: dict[str, float],
                           lower_is_better: dict[str, bool]) -> dict[str, float]:
    """Per-task performance relative to the baseline: M/B, or B/M when lower is better (1.0 = equal).

    NaN where the ratio is undefined: a zero denominator (B = 0 for higher-is-better, M = 0 for
    lower-is-better). A higher-is-better metric of 0 against B > 0 is 0.0 (nothing of the expert kept)."""
    missing = set(metrics) - set(baseline) | set(metrics) - set(lower_is_better)
    if missing:
        raise KeyError(f"no baseline/direction for task(s) {sorted(missing)}")
    out = {}
    for t, m in metrics.items():
        b = baseline[t]
        num, den = (b, m) if lower_is_better[t] else (m, b)
        out[t] = num / den if den != 0 else float("nan")
    return out


def delta_m(metrics: dict[str, float], baseline: dict[str, float], lower_is_better: dict[str, bool],
            kind: str = "ratio") -> float:
    """Multi-task performance relative to a baseline, as a fraction (-0.275 means -27.5 %).

    kind="ratio":    mean_t normalised_t - 1, what the paper's tables report (M/B, B/M if lower better).
    kind="relative": mean_t (-1)^l_t (M_t - B_t) / B_t, the paper's Eq. (2) (Maninis et al. 2019).
    All three arguments are dicts keyed by task name.
    """
    if not metrics:
        raise ValueError("delta_m needs at least one task")
    if kind == "ratio":
        vals = list(normalized_performance(metrics, baseline, lower_is_better).values())
        return sum(vals) / len(vals) - 1.0
    if kind == "relative":
        normalized_performance(metrics, baseline, lower_is_better)      # the same check of tasks and directions
        terms = [(-1 if lower_is_better[t] else 1) * (m - baseline[t]) / baseline[t] if baseline[t] != 0
                 else float("nan") for t, m in metrics.items()]
        return sum(terms) / len(terms)
    raise ValueError(f"unknown kind {kind!r}; valid: 'ratio', 'relative'")


