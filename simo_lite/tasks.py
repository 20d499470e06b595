"""The task registry: for each dense task its output channels, loss, metric, direction and a visualiser.

=========  ========  =====================================  =========================  =========
task       channels  loss                                   metric                     better
=========  ========  =====================================  =========================  =========
seg        6 (*)     cross-entropy                          mIoU (fraction)            higher
depth      1         L1 (metres)                            mean absolute error (m)    lower
normals    3         1 - cos(normalised pred, target)       mean angular error (deg)   lower
edges      1         BCE on logits, positive weight 4       F1 of edge pixels at 0.5   higher
albedo     3         L1 (reflectance)                       mean absolute error        lower
=========  ========  =====================================  =========================  =========

(*) Scenes; NYUv2 13, Cityscapes 7 or 19 (``Profile.seg_classes``). On real datasets, seg pixels
labelled -1, depth 0 and all-zero normals are ignored by losses and metrics.

Task sets: ``nyu3 = (seg, depth, normals)`` (the paper's NYUv2 triple) and
``diverse5 = (seg, depth, normals, edges, albedo)`` (heterogeneous, like the paper's Taskonomy set).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics as M
from .scenes import NUM_CLASSES

__all__ = ["Task", "TASKS", "TASK_SETS", "get_task", "get_tasks", "lower_is_better"]


@dataclass(frozen=True)
class Task:
    name: str
    channels: int                                   # head output channels
    higher_is_better: bool
    metric_name: str                                # e.g. "mIoU", "MAE (m)"
    _loss: Callable
    _postprocess: Callable                          # head output (B,C,H,W) -> prediction in label space
    _metric: Callable                               # () -> fresh accumulator with update/compute
    _show: Callable                                 # label (C,H,W) or (H,W) -> RGB (H,W,3) in [0,1]
    output_bias: float = 0.0                        # initial bias of the head's last layer (depth: 4 m)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar training loss of raw head output ``out`` (B,C,H,W) against the label batch."""
        return self._loss(out, target)

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        """Raw head output -> prediction in the label's space and shape."""
        return self._postprocess(out)

    def new_metric(self):
        return self._metric()

    def visualize(self, label: torch.Tensor) -> np.ndarray:
        """One label or prediction (no batch dim) as an RGB image (H, W, 3) with values in [0, 1]."""
        return self._show(label.detach().cpu())

    @property
    def lower_is_better(self) -> bool:
        return not self.higher_is_better


def _normals_loss(out, target):
    """1 - cos on pixels with a defined normal (real datasets mark missing normals with zeros)."""
    cos = (M.unit_channels(out) * target).sum(1)               # (B, H, W)
    valid = target.abs().sum(1) > 0                            # (B, H, W); all True on Scenes
    return (1 - cos)[valid].mean() if valid.any() else out.sum() * 0


def _depth_loss(out, target):
    """L1 on pixels with a measured depth (> 0; Scenes depth is always defined)."""
    valid = target > 0
    return F.l1_loss(out[valid], target[valid]) if valid.any() else out.sum() * 0


_SEG_COLORS = torch.tensor([[0.55, 0.45, 0.30], [0.70, 0.75, 0.80], [0.95, 0.90, 0.70],
                            [0.85, 0.20, 0.20], [0.20, 0.55, 0.85], [0.25, 0.75, 0.30]])


def _show_seg(s):
    """Class ids (H, W) -> RGB; Scenes' 6 classes in fixed colours, more classes from tab20, ignore (-1) black."""
    s = s.long()
    colors = _SEG_COLORS
    if int(s.max()) >= len(colors):
        import matplotlib
        colors = torch.cat([colors, torch.tensor(matplotlib.colormaps["tab20"].colors, dtype=torch.float32)])
    rgb = colors[s.clamp(0, len(colors) - 1)]
    rgb[s < 0] = 0
    return rgb.numpy()


def _show_depth(d):
    d = d.reshape(d.shape[-2:]).float()
    import matplotlib
    cmap = matplotlib.colormaps["magma_r"]
    return cmap(((d - 0.5) / 9.5).clamp(0, 1).numpy())[..., :3]


TASKS: dict[str, Task] = {
    "seg": Task("seg", NUM_CLASSES, True, "mIoU",
                lambda o, t: F.cross_entropy(o, t, ignore_index=-1), M.argmax_channels,
                lambda: M.MeanIoU(), _show_seg),
    "depth": Task("depth", 1, False, "MAE (m)",
                  _depth_loss, lambda o: o.clamp(min=1e-3),
                  lambda: M.MeanAbsError(mask_zero=True), _show_depth, output_bias=4.0),
    "normals": Task("normals", 3, False, "mean angle (deg)",
                    _normals_loss, M.unit_channels,
                    lambda: M.MeanAngleError(), lambda n: (n.permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1).numpy()),
    "edges": Task("edges", 1, True, "F1",
                  lambda o, t: F.binary_cross_entropy_with_logits(o, t, pos_weight=torch.tensor(4.0, device=o.device)),
                  lambda o: (o > 0).float(), lambda: M.BinaryF1(),
                  lambda e: e.reshape(e.shape[-2:]).float()[..., None].expand(-1, -1, 3).numpy()),
    "albedo": Task("albedo", 3, False, "MAE",
                   lambda o, t: F.l1_loss(o, t), lambda o: o.clamp(0, 1),
                   lambda: M.MeanAbsError(), lambda a: a.permute(1, 2, 0).clamp(0, 1).numpy()),
}

TASK_SETS: dict[str, tuple[str, ...]] = {
    "nyu3": ("seg", "depth", "normals"),
    "diverse5": ("seg", "depth", "normals", "edges", "albedo"),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name]


def get_tasks(tasks) -> tuple[str, ...]:
    """Resolve a task-set name ('nyu3', 'diverse5'), a comma-separated string or a list to task names."""
    if isinstance(tasks, str):
        names = TASK_SETS[tasks] if tasks in TASK_SETS else tuple(t.strip() for t in tasks.split(",") if t.strip())
    else:
        names = tuple(tasks)
    if not names:
        raise ValueError(f"no tasks given; valid task sets: {', '.join(TASK_SETS)}; tasks: {', '.join(TASKS)}")
    for n in names:
        if n not in TASKS:
            raise ValueError(f"unknown task {n!r}; valid tasks: {', '.join(TASKS)}; "
                             f"valid task sets: {', '.join(TASK_SETS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate task in {names}")
    return names


def lower_is_better(tasks) -> dict[str, bool]:
    return {t: get_task(t).lower_is_better for t in get_tasks(tasks)}
