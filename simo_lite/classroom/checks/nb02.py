"""The checks of notebook 02 (Training the experts): ``check_task_vector``, ``check_tv_norm``."""
from __future__ import annotations

from typing import Callable

import torch

from ._core import _call, _run, _number, _state_dict, _gen, _toy_state, _toy_tvs

__all__ = ["check_task_vector", "check_tv_norm"]


def check_task_vector(fn: Callable, strict: bool = False) -> bool:
    """``fn(pretrained, finetuned) -> {name: tensor}``: θ_t − θ₀ over the floating-point tensors.

    Compared with :func:`simo_lite.merging.task_vectors`; integer buffers are left out; float32 out.
    """
    from simo_lite.merging import task_vectors

    def body(fn):
        pre = _toy_state(3)
        ft = {k: (v + 0.1 * torch.randn(v.shape, generator=_gen(4)) if v.is_floating_point() else v.clone())
              for k, v in pre.items()}
        case = "a state dict with two float tensors and one int64 buffer"
        expected = task_vectors(pre, {"t": ft})["t"]
        _state_dict(_call(fn, case, {k: v.clone() for k, v in pre.items()}, {k: v.clone() for k, v in ft.items()}),
                    expected, "the task vector", case, check_dtype="exact")
        pre16 = {"w": torch.randn(3, 3, generator=_gen(5)).half()}
        ft16 = {"w": pre16["w"] + 0.5}
        case = "float16 weights (compute in float32)"
        _state_dict(_call(fn, case, pre16, ft16), task_vectors(pre16, {"t": ft16})["t"], "the task vector", case,
                    check_dtype="exact", atol=1e-3)
    return _run("task vector", fn, body, strict)


def check_tv_norm(fn: Callable, strict: bool = False) -> bool:
    """``fn(task_vector) -> float``: the L2 norm over all entries of all tensors (``merging.tv_norms``)."""
    from simo_lite.merging import tv_norms

    def body(fn):
        for seed in (6, 7):
            tv = _toy_tvs(seed, 1)["task0"]
            case = f"a task vector with tensors of shapes {[tuple(v.shape) for v in tv.values()]}"
            _number(_call(fn, case, {k: v.clone() for k, v in tv.items()}), tv_norms({"t": tv})["t"], "the norm", case)
    return _run("task-vector norm", fn, body, strict)
