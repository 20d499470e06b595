"""The checks of notebook 07 (Joint MTL): ``check_loss_recovered``, ``check_cost_percent``."""
from __future__ import annotations

import math
from typing import Callable

from ._core import _Wrong, _call, _run, _number

__all__ = ["check_loss_recovered", "check_cost_percent"]


def check_loss_recovered(fn: Callable, strict: bool = False) -> bool:
    """``fn(delta_fix, delta_merge) -> float``: the fraction of the merge's loss that a fix closes.

    (Δm_fix − Δm_merge) / (0 − Δm_merge) when the merge lost (Δm_merge < 0), NaN otherwise (nothing
    to recover). The formula of notebook 07, section 5 (no package function).
    """
    def body(fn):
        for d_fix, d_merge in ((-0.054, -0.275), (-0.4, -0.2), (0.01, -0.1), (-0.1, 0.05), (0.0, 0.0)):
            case = f"delta_fix={d_fix}, delta_merge={d_merge}"
            expected = (d_fix - d_merge) / -d_merge if d_merge < 0 else float("nan")
            _number(_call(fn, case, d_fix, d_merge), expected, "the recovered fraction", case)
    return _run("fraction of the loss recovered", fn, body, strict)


_COST_KEYS = ("trainable_params", "steps", "samples", "wall_s")


def check_cost_percent(fn: Callable, strict: bool = False) -> bool:
    """``fn(cost, mtl_cost) -> dict``: each of trainable_params, steps, samples, wall_s as % of MTL's.

    100 · cost[k] / mtl_cost[k], NaN when MTL's value is 0 (the paper's Table 4 as percentages; the
    formula of notebook 07, section 4). Keys other than those four are ignored.
    """
    def body(fn):
        mtl = {"trainable_params": 1_000_000, "steps": 600, "samples": 19_200, "wall_s": 120.0, "name": "mtl"}
        cases = [("head realignment", {"trainable_params": 20_000, "steps": 900, "samples": 28_800, "wall_s": 12.0}, mtl),
                 ("an MTL cost with wall_s 0 (NaN)", {"trainable_params": 5, "steps": 1, "samples": 32, "wall_s": 1.0},
                  {**mtl, "wall_s": 0.0})]
        for case, cost, ref in cases:
            got = _call(fn, case, dict(cost), dict(ref))
            if not isinstance(got, dict):
                raise _Wrong(f"should return a dict {{quantity: percent}}, got {type(got).__name__} ({case})")
            missing = [k for k in _COST_KEYS if k not in got]
            if missing:
                raise _Wrong(f"the result lacks the key(s) {missing} ({case})")
            for k in _COST_KEYS:
                expected = 100 * cost[k] / ref[k] if ref[k] else float("nan")
                if isinstance(got[k], (int, float)) and ref[k] and math.isclose(got[k], expected / 100):
                    raise _Wrong(f"{k}: got {got[k]:.4g}: return a percentage (2.0 for 2 %), not a fraction ({case})")
                _number(got[k], expected, f"the percentage for {k!r}", case)
    return _run("cost as % of MTL", fn, body, strict)
