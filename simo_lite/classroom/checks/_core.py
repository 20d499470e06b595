"""The machinery of the exercise checks: calling the learner's function, comparing its result.

Every check runs its cases through :func:`_run`, which prints one line (``✓ passed``, ``… not
implemented yet`` or ``✗ <what is wrong>``) and returns True or False; ``strict=True`` raises
``AssertionError`` instead of returning False (for tests).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

PASS, FAIL, TODO = "✓", "✗", "…"


class _Wrong(Exception):
    """The learner's result is wrong; the message says how."""


class _NotYet(Exception):
    """The learner's function still raises NotImplementedError."""


def _call(fn: Callable, case: str, *args, **kwargs):
    """Call the learner's ``fn``; turn its exceptions into _NotYet / _Wrong with the failing case."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise _NotYet() from None
    except Exception as e:  # noqa: BLE001 -- any error of the learner's code is reported, not raised
        raise _Wrong(f"your function raised {type(e).__name__}: {e} ({case})") from None


def _run(title: str, fn: Callable, body: Callable[[Callable], None], strict: bool) -> bool:
    """Run the cases in ``body(fn)``; print one line; return True when every case passed."""
    name = getattr(fn, "__name__", "your function")
    if not callable(fn):
        msg = f"{FAIL} {title}: expected a function, got {type(fn).__name__}"
        print(msg)
        if strict:
            raise AssertionError(msg)
        return False
    try:
        body(fn)
    except _NotYet:
        msg = (f"{TODO} {title}: not implemented yet: replace the `raise NotImplementedError` line in "
               f"`{name}` with your code, then run the cell again")
        print(msg)
        if strict:
            raise AssertionError(msg) from None
        return False
    except _Wrong as e:
        msg = f"{FAIL} {title}: {e}"
        print(msg)
        if strict:
            raise AssertionError(msg) from None
        return False
    print(f"{PASS} passed: {title}")
    return True


def _fmt(x) -> str:
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def _tensor(got, expected: torch.Tensor, what: str, case: str, atol: float = 1e-5, rtol: float = 1e-4,
            check_dtype: str = "kind") -> None:
    """Compare a tensor with the reference: type, shape, dtype, then values (first differing entry).

    ``check_dtype``: "exact" (same dtype), "kind" (bool / integer / floating must match), or "none".
    """
    if not isinstance(got, torch.Tensor):
        raise _Wrong(f"{what}: expected a torch.Tensor, got {type(got).__name__} ({case})")
    if tuple(got.shape) != tuple(expected.shape):
        raise _Wrong(f"{what}: wrong shape: got {tuple(got.shape)}, expected {tuple(expected.shape)} ({case})")
    kind = lambda t: "bool" if t.dtype == torch.bool else "floating" if t.is_floating_point() else "integer"  # noqa: E731
    if check_dtype == "exact" and got.dtype != expected.dtype:
        raise _Wrong(f"{what}: wrong dtype: got {got.dtype}, expected {expected.dtype} ({case})")
    if check_dtype == "kind" and kind(got) != kind(expected):
        raise _Wrong(f"{what}: wrong dtype: got {got.dtype} ({kind(got)}), expected a {kind(expected)} "
                     f"tensor such as {expected.dtype} ({case})")
    g, e = got.detach().cpu(), expected.detach().cpu()
    if e.dtype == torch.bool or not e.is_floating_point():
        bad = g.to(e.dtype) != e
    else:
        bad = ~torch.isclose(g.double(), e.double(), atol=atol, rtol=rtol, equal_nan=True)
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        where = f"entry {idx}" if idx else "its value"
        raise _Wrong(f"{what}: wrong value at {where}: got {_fmt(g[idx].item())}, expected {_fmt(e[idx].item())} "
                     f"({int(bad.sum())} of {bad.numel()} entries differ; {case})")


def _number(got, expected: float, what: str, case: str, atol: float = 1e-6, rtol: float = 1e-5,
            integer: bool = False) -> None:
    """Compare a Python number (a 0-d tensor is accepted for floats) with the reference."""
    if isinstance(got, torch.Tensor) and got.numel() == 1 and not integer:
        got = got.item()
    if integer:
        if isinstance(got, bool) or not isinstance(got, int):
            raise _Wrong(f"{what}: expected a Python int, got {type(got).__name__} {got!r} ({case})")
        if got != expected:
            raise _Wrong(f"{what}: got {got:,}, expected {expected:,} (off by {got - expected:+,}; {case})")
        return
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        raise _Wrong(f"{what}: expected a number, got {type(got).__name__} {got!r} ({case})")
    if math.isnan(expected):
        if not math.isnan(got):
            raise _Wrong(f"{what}: got {_fmt(float(got))}, expected nan ({case})")
        return
    if not math.isclose(got, expected, rel_tol=rtol, abs_tol=atol):
        raise _Wrong(f"{what}: got {_fmt(float(got))}, expected {_fmt(float(expected))} ({case})")


def _step_losses(got, expected: list[float], case: str, first_hint: str, recipe_hint: str) -> list[float]:
    """Check a training loop's returned per-step losses against ``expected`` (one per batch): a list of the
    right length, step 1 within 1e-4 (``first_hint``: how the loss is computed), every step within 1e-3
    (``recipe_hint``: the optimiser, schedule and clipping). Returns them as floats; raises ``_Wrong``."""
    steps = len(expected)
    if isinstance(got, torch.Tensor) or not hasattr(got, "__len__"):
        raise _Wrong(f"return the list of the {steps} step losses (floats), got {type(got).__name__} ({case})")
    if len(got) != steps:
        raise _Wrong(f"{len(got)} losses for {steps} batches: one optimiser step per batch ({case})")
    got = [float(v) for v in got]
    if not math.isclose(got[0], expected[0], rel_tol=1e-4, abs_tol=1e-6):
        raise _Wrong(f"the loss of step 1 is {got[0]:.6g}, expected {expected[0]:.6g}: {first_hint} ({case})")
    for k, (a, b) in enumerate(zip(got, expected)):
        if not math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-5):
            raise _Wrong(f"the loss of step {k + 1} is {a:.6g}, expected {b:.6g}: {recipe_hint} ({case})")
    return got


def _state_dict(got, expected: dict, what: str, case: str, **kw) -> None:
    """Compare {name: tensor} dicts: missing / extra keys first, then each tensor."""
    if not isinstance(got, dict):
        raise _Wrong(f"{what}: expected a dict {{tensor name: tensor}}, got {type(got).__name__} ({case})")
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing:
        raise _Wrong(f"{what} lacks the key(s) {missing} ({case})")
    if extra:
        raise _Wrong(f"{what} has unexpected key(s) {extra} ({case})")
    for k in expected:
        _tensor(got[k], expected[k], f"{what}[{k!r}]", case, **kw)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _toy_state(seed: int, with_int: bool = True) -> dict[str, torch.Tensor]:
    """A small state dict: two float tensors and (optionally) an integer buffer."""
    g = _gen(seed)
    state = {"w": torch.randn(4, 3, generator=g), "b": torch.randn(5, generator=g)}
    if with_int:
        state["steps"] = torch.tensor([3, 1], dtype=torch.int64)
    return state


def _toy_tvs(seed: int, n_tasks: int = 3) -> dict[str, dict[str, torch.Tensor]]:
    g = _gen(seed)
    return {f"task{i}": {"w": 0.1 * torch.randn(4, 3, generator=g), "b": 0.1 * torch.randn(5, generator=g)}
            for i in range(n_tasks)}
