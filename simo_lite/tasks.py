"""The task registry: for each dense task its output channels, loss, metric, direction and a visualiser.

=========  ========  =====================================  =========================  =========
task       channels  loss                                   metric                     better
=========  ========  =====================================  =========================  =========
seg        6 (*)     cross-entropy                          mIoU (fraction)            higher
depth      1         L1 (metres)                            mean absolute error (m)    lower
normals    3         1 - cos(normalised pred, target)       mean angular error (deg)   lower
edges      1         BCE on logits, positive weight 4       F1 of edge pixels at 0.5   higher
albedo     3         L1 (reflectance)                       mean absolute error        lower
shading    1         L1 (received light)                    mean absolute error        lower
texture_   1         BCE on logits, positive weight 2       F1 of texture-edge pixels  higher
edges
keypoints  1         BCE on logits, positive weight 10      F1 of keypoint pixels      higher
autoenc-   3         L1 (the image)                         mean absolute error        lower
oder
=========  ========  =====================================  =========================  =========

(*) Scenes; NYUv2 13, Cityscapes 7 or 19 (``Profile.seg_classes``). On real datasets, seg pixels
labelled -1, depth 0 and all-zero normals are ignored by losses and metrics.

Task sets: ``nyu3 = (seg, depth, normals)`` (the paper's NYUv2 triple),
``diverse5 = (seg, depth, normals, edges, albedo)`` (geometry-derived edges and reflectance) and
``taskonomy5 = (autoencoder, depth, normals, keypoints, texture_edges)``, the paper's Taskonomy mix
(Section 5): two geometric tasks beside three appearance-level ones that an appearance-invariant
foundation does not encode (shading, too, is registered, outside the sets)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics as M
from .registry import Registry
from .scenes import NUM_CLASSES
from .types import Tasks

__all__ = ["Task", "TASKS", "TASK_SETS", "get_task", "get_tasks", "lower_is_better", "register_task",
           "register_task_set"]


@dataclass(frozen=True, kw_only=True)
class Task:
    """One dense task: how its head is trained, scored and drawn.

    Attributes:
        name: registry key, also the label key in a split dict.
        channels: head output channels C (seg: the dataset's class count, set per profile).
        higher_is_better: direction of ``metric_name``.
        metric_name: e.g. "mIoU", "MAE (m)".
        loss_fn: ``loss_fn(out (B,C,H,W), target) -> scalar`` on raw head outputs.
        predict_fn: raw head output (B,C,H,W) -> prediction in the label's space and shape.
        metric_factory: ``() -> accumulator`` with ``update(pred, target)`` / ``compute() -> float``.
        show_fn: one label or prediction, (C,H,W) or (H,W), -> RGB (H,W,3) in [0, 1].
        output_bias: initial bias of the head's last layer (depth: 4 m).
    """
    name: str
    channels: int
    higher_is_better: bool
    metric_name: str
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    predict_fn: Callable[[torch.Tensor], torch.Tensor]
    metric_factory: Callable[[], object]
    show_fn: Callable[[torch.Tensor], np.ndarray]
    output_bias: float = 0.0

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar training loss of raw head output ``out`` (B,C,H,W) against the label batch."""
        return self.loss_fn(out, target)

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        """Raw head output -> prediction in the label's space and shape."""
        return self.predict_fn(out)

    def new_metric(self) -> Any:
        """A fresh metric accumulator (``update(pred, target)``, ``compute() -> float``)."""
        return self.metric_factory()

    def visualize(self, label: torch.Tensor) -> np.ndarray:
        """One label or prediction (no batch dim) as an RGB image (H, W, 3) with values in [0, 1]."""
        return self.show_fn(label.detach().cpu())

    @property
    def lower_is_better(self) -> bool:
        """True when a smaller metric is better (depth, normals, albedo errors)."""
        return not self.higher_is_better


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add a task to :data:`TASKS` (then usable in ``tasks=`` everywhere)."""
    return TASKS.register(task.name, task, replace=replace)


def register_task_set(name: str, tasks: Sequence[str], *, replace: bool = False) -> tuple[str, ...]:
    """Add a named task set to :data:`TASK_SETS` (its tasks must be registered)."""
    names = get_tasks(tuple(tasks))
    if name in TASKS:
        raise ValueError(f"task set name {name!r} is already a task name")
    return TASK_SETS.register(name, names, replace=replace)


def _normals_loss(out, target):
    """1 - cos on pixels with a defined normal (real datasets mark missing normals with zeros)."""
    cos = (M.unit_channels(out) * target).sum(1)               # (B, H, W)
    valid = M.valid_normals(target)                            # (B, H, W); all True on Scenes
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


def _bce_edges(o, t):
    return F.binary_cross_entropy_with_logits(o, t, pos_weight=torch.tensor(4.0, device=o.device))


def _bce(pos_weight: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Binary cross-entropy on logits (B, 1, H, W) with positives weighted by ``pos_weight`` (rare labels)."""
    def loss(o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(o, t, pos_weight=torch.tensor(pos_weight, device=o.device))
    return loss


def _show_binary(e):
    return e.reshape(e.shape[-2:]).float()[..., None].expand(-1, -1, 3).numpy()


def _show_gray(x):
    return x.reshape(x.shape[-2:]).float().clamp(0, 1)[..., None].expand(-1, -1, 3).numpy()


def _show_rgb(a):
    return a.permute(1, 2, 0).clamp(0, 1).numpy()


TASKS: Registry[Task] = Registry("task")
TASK_SETS: Registry[tuple[str, ...]] = Registry("task set")

for _task in (
    Task(name="seg", channels=NUM_CLASSES, higher_is_better=True, metric_name="mIoU",
         loss_fn=lambda o, t: F.cross_entropy(o, t, ignore_index=-1), predict_fn=M.argmax_channels,
         metric_factory=M.MeanIoU, show_fn=_show_seg),
    Task(name="depth", channels=1, higher_is_better=False, metric_name="MAE (m)",
         loss_fn=_depth_loss, predict_fn=lambda o: o.clamp(min=1e-3),
         metric_factory=lambda: M.MeanAbsError(mask_zero=True), show_fn=_show_depth, output_bias=4.0),
    Task(name="normals", channels=3, higher_is_better=False, metric_name="mean angle (deg)",
         loss_fn=_normals_loss, predict_fn=M.unit_channels, metric_factory=M.MeanAngleError,
         show_fn=lambda n: (n.permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1).numpy()),
    Task(name="edges", channels=1, higher_is_better=True, metric_name="F1",
         loss_fn=_bce_edges, predict_fn=lambda o: (o > 0).float(), metric_factory=M.BinaryF1,
         show_fn=lambda e: e.reshape(e.shape[-2:]).float()[..., None].expand(-1, -1, 3).numpy()),
    Task(name="albedo", channels=3, higher_is_better=False, metric_name="MAE",
         loss_fn=lambda o, t: F.l1_loss(o, t), predict_fn=lambda o: o.clamp(0, 1),
         metric_factory=M.MeanAbsError, show_fn=lambda a: a.permute(1, 2, 0).clamp(0, 1).numpy()),
    # the appearance-level targets (Scenes version 5), the Taskonomy-like low-level tasks
    Task(name="shading", channels=1, higher_is_better=False, metric_name="MAE",
         loss_fn=lambda o, t: F.l1_loss(o, t), predict_fn=lambda o: o.clamp(0, 1),
         metric_factory=M.MeanAbsError, show_fn=_show_gray, output_bias=0.6),
    Task(name="texture_edges", channels=1, higher_is_better=True, metric_name="F1",
         loss_fn=_bce(2.0), predict_fn=lambda o: (o > 0).float(), metric_factory=M.BinaryF1, show_fn=_show_binary),
    Task(name="keypoints", channels=1, higher_is_better=True, metric_name="F1",
         loss_fn=_bce(10.0), predict_fn=lambda o: (o > 0).float(), metric_factory=M.BinaryF1, show_fn=_show_binary),
    Task(name="autoencoder", channels=3, higher_is_better=False, metric_name="MAE",
         loss_fn=lambda o, t: F.l1_loss(o, t), predict_fn=lambda o: o.clamp(0, 1),
         metric_factory=M.MeanAbsError, show_fn=_show_rgb, output_bias=0.4),
):
    TASKS.register(_task.name, _task)

TASK_SETS.register("nyu3", ("seg", "depth", "normals"))
TASK_SETS.register("diverse5", ("seg", "depth", "normals", "edges", "albedo"))
# the paper's Taskonomy set (Section 5: autoencoder, depth, normals, 2D keypoints, Canny edges), rendered
TASK_SETS.register("taskonomy5", ("autoencoder", "depth", "normals", "keypoints", "texture_edges"))


def get_task(name: str) -> Task:
    """The registered :class:`Task` called ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name]


def get_tasks(tasks: Tasks) -> tuple[str, ...]:
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


def lower_is_better(tasks: Tasks) -> dict[str, bool]:
    """``{task: True when a smaller metric is better}`` for ``tasks`` (a task-set name or task names)."""
    return {t: get_task(t).lower_is_better for t in get_tasks(tasks)}
