"""Type aliases of the package, for annotations (importing this module does not import torch).

=============  ==================================================================================
alias          meaning
=============  ==================================================================================
StateDict      ``{parameter name: tensor}`` of one encoder (``module.state_dict()``)
Split          one split of a dataset: ``{"image": (N,3,H,W), task name: labels (N,...)}``
Splits         ``{split name: Split}``, e.g. ``{"train": ..., "val": ..., "test": ...}``
Tasks          a task-set name (``"nyu3"``) or task names (``("seg", "depth")``): what
               :func:`simo_lite.tasks.get_tasks` accepts
Device         ``"cpu"``, ``"cuda:0"``, ... or a ``torch.device``
=============  ==================================================================================
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, Union

if TYPE_CHECKING:      # annotations only: the course runner imports the package without torch
    import torch

__all__ = ["StateDict", "Split", "Splits", "Tasks", "Device"]

StateDict = dict[str, "torch.Tensor"]
Split = dict[str, "torch.Tensor"]
Splits = dict[str, Split]
Tasks = Union[str, Sequence[str]]
Device = Union[str, "torch.device"]
