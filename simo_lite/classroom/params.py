"""The notebook parameters: one validator per parameter, so every notebook checks them the same way.

Each notebook's set-up cell passes its ``parameters`` cell to :func:`simo_lite.course.setup`, which
checks the data and backbone first (their errors are the real ones), then every other parameter
here, before any work; a bad value stops with the same message in every notebook, naming the valid
values::

    >>> from simo_lite import params, profiles
    >>> params.check(profiles.get("smoke"), ties_k=0.5, n_show=0)
    {'ties_k': 0.5, 'n_show': 4}
    >>> params.check(profiles.get("smoke"), ties_k="abc")
    Traceback (most recent call last):
    ...
    ValueError: ties_k must be a number in (0, 1] (the fraction of each task vector TIES keeps), got 'abc'

Rules that need the profile (``n_show``, ``realign_samples``, ``adapter_rank``, ``scatter_layer``) use
the resolved profile's split sizes and encoder; without a profile only their type and lower bound are
checked. ``alpha``: negative means "choose it on the validation split"; otherwise it must lie in
``[0, ALPHA_MAX]``, and a value above the validation grid (0.0..1.0) is used with a printed note.
``n_show`` 0 means auto: ``min(N_SHOW_AUTO, smaller of the val and test splits)``.
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Any, Callable

from .. import merging
from .. import profiles as P
from .. import tasks as T

__all__ = ["PARAMETERS", "SHARED", "ALPHA_MAX", "N_SHOW_AUTO", "check"]

ALPHA_MAX = 2.0        # the largest fixed merging coefficient accepted (the validation grid ends at 1.0)
N_SHOW_AUTO = 4        # images shown when n_show = 0 (auto), fewer on a smaller split

# the parameters every course notebook shares (see notebooks/README.md); the others belong to one notebook
SHARED = ("profile", "seed", "tasks", "merge_method", "alpha", "ties_k", "adapter_rank", "realign_samples",
          "device", "run_dir", "dataset", "data_dir", "backbone", "weights", "show_progress", "n_show",
          "compare_tasks")

_GRID = f"{min(merging.ALPHA_GRID):.1f}..{max(merging.ALPHA_GRID):.1f}"
_SETS = "; ".join(f"{s} = {','.join(ts)}" for s, ts in T.TASK_SETS.items())


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _is_path(v) -> bool:
    return isinstance(v, (str, os.PathLike))


# ----------------------------------------------------------------------------------------------
# One validator per parameter: (value, profile or None, values checked so far) -> normalised value
# ----------------------------------------------------------------------------------------------
def _profile(v, prof, seen):
    if isinstance(v, P.Profile):
        return v
    if not isinstance(v, str) or v not in P.PROFILES:
        raise ValueError(f"profile must be one of {', '.join(P.PROFILES)}, got {v!r}")
    return v


def _seed(v, prof, seen):
    if not _is_int(v) or v < 0:
        raise ValueError(f"seed must be a non-negative integer, got {v!r}")
    return int(v)


def _task_list(name: str):
    def validate(v, prof, seen):
        what = f"{name} must be a task set ({_SETS}) or task names separated by commas ({', '.join(T.TASKS)})"
        if isinstance(v, str):
            names = T.TASK_SETS[v] if v in T.TASK_SETS else tuple(t.strip() for t in v.split(",") if t.strip())
        elif isinstance(v, (list, tuple)) and all(isinstance(t, str) for t in v):
            names = tuple(v)
        else:
            raise ValueError(f"{what}, got {v!r}")
        unknown = [t for t in names if t not in T.TASKS]
        if not names or unknown or len(set(names)) != len(names):
            why = ("no task" if not names else f"unknown task {unknown[0]!r}" if unknown
                   else f"duplicate task {next(t for t in names if names.count(t) > 1)!r}")
            raise ValueError(f"{what}, got {v!r} ({why})")
        if prof is not None:
            own = P.DATASETS[prof.dataset].tasks
            missing = [t for t in names if t not in own]
            if missing:
                raise ValueError(f"{name} must name tasks that dataset {prof.dataset!r} labels "
                                 f"({', '.join(own)}), got {v!r} (no labels for {', '.join(missing)})")
        if name == "compare_tasks" and names == seen.get("tasks"):
            raise ValueError(f"compare_tasks must be another task set than tasks (both are {', '.join(names)}); "
                             f"task sets: {', '.join(T.TASK_SETS)}, or task names separated by commas")
        return names
    return validate


def _merge_method(v, prof, seen):
    # single-encoder methods only: a per-task method (one encoder per task) is not one merged model
    single = [name for name, spec in merging.MERGE_METHODS.items() if not spec.per_task]
    if v not in single:                      # also catches non-strings
        raise ValueError(f"merge_method must be one of {', '.join(single)}, got {v!r}")
    return v


def _alpha(v, prof, seen):
    if not _is_number(v) or v > ALPHA_MAX:
        raise ValueError(f"alpha must be a finite number: negative (choose it on the validation split) or a "
                         f"merging coefficient in [0, {ALPHA_MAX:g}] (the validation grid is {_GRID}), got {v!r}")
    if v > max(merging.ALPHA_GRID):
        print(f"note: alpha {v:g} is above the validation grid {_GRID}: the merge extrapolates the task vectors")
    return float(v)


def _ties_k(v, prof, seen):
    if not _is_number(v) or not 0 < v <= 1:
        raise ValueError(f"ties_k must be a number in (0, 1] (the fraction of each task vector TIES keeps), got {v!r}")
    return float(v)


def _adapter_rank(v, prof, seen):
    if prof is None:
        if not _is_int(v) or v < 1:
            raise ValueError(f"adapter_rank must be an integer >= 1 (the rank of the realignment adapters), "
                             f"got {v!r}")
    elif not _is_int(v) or not 1 <= v <= prof.embed_dim:
        raise ValueError(f"adapter_rank must be an integer in 1..{prof.embed_dim} (the rank of the realignment "
                         f"adapters, at most the encoder width {prof.embed_dim}), got {v!r}")
    return int(v)


def _realign_samples(v, prof, seen):
    if prof is None:
        if not _is_int(v) or v < 0:
            raise ValueError(f"realign_samples must be an integer >= 0 (0: the whole val split; N: its first N "
                             f"images), got {v!r}")
    elif not _is_int(v) or not 0 <= v <= prof.n_val:
        raise ValueError(f"realign_samples must be an integer in 0..{prof.n_val} (0: all {prof.n_val} val images; "
                         f"N: the first N), got {v!r}")
    return int(v)


def _device(v, prof, seen):
    if not isinstance(v, str):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {v!r}")
    return P.resolve_device(v)              # its errors name the valid values too


def _run_dir(v, prof, seen):
    if not _is_path(v):
        raise ValueError(f"run_dir must be a folder path (empty: runs/<profile>-<seed> in the repository), got {v!r}")
    if str(v) and os.path.exists(v) and not os.path.isdir(v):
        raise ValueError(f"run_dir must be a folder path (empty: runs/<profile>-<seed> in the repository), "
                         f"got {str(v)!r}, which is a file")
    return str(v)


def _dataset(v, prof, seen):
    if v not in P.DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(P.DATASETS)}, got {v!r}")
    return v


def _path(name: str, what: str):
    def validate(v, prof, seen):
        if not _is_path(v):
            raise ValueError(f"{name} must be {what}, got {v!r}")
        return str(v)
    return validate


def _backbone(v, prof, seen):
    if not isinstance(v, str):
        raise ValueError(f"backbone must be a timm model name such as 'vit_small_patch14_dinov2.lvd142m' "
                         f"(empty: the course's own encoder), got {v!r}")
    return v


def _show_progress(v, prof, seen):
    if not isinstance(v, bool) and v not in (0, 1):
        raise ValueError(f"show_progress must be True or False, got {v!r}")
    return bool(v)


def _n_show(v, prof, seen):
    if prof is None:
        if not _is_int(v) or v < 0:
            raise ValueError(f"n_show must be an integer >= 1 (images shown), or 0 for auto, got {v!r}")
        return int(v) or N_SHOW_AUTO
    limit = min(prof.n_val, prof.n_test)
    if not _is_int(v) or not 0 <= v <= limit:
        raise ValueError(f"n_show must be an integer in 1..{limit} (images shown from the val or test split, at "
                         f"most the smaller: val {prof.n_val}, test {prof.n_test}), or 0 for auto "
                         f"(min({N_SHOW_AUTO}, {limit})), got {v!r}")
    if v == 0 and limit < N_SHOW_AUTO:
        print(f"note: n_show auto: {limit} images (the smaller of the val and test splits has {limit})")
    return int(v) or min(N_SHOW_AUTO, limit)


def _dare_p(v, prof, seen):
    if not _is_number(v) or not 0 <= v < 1:
        raise ValueError(f"dare_p must be a number in [0, 1) (the fraction of each task vector DARE drops), got {v!r}")
    return float(v)


def _drift_images(v, prof, seen):
    if not _is_int(v) or v < 1:
        raise ValueError(f"drift_images must be an integer >= 1 (val images for the feature statistics; at most "
                         f"the val split is used), got {v!r}")
    return int(v)


def _scatter_task(v, prof, seen):
    names = seen.get("tasks")
    if not isinstance(v, str) or (v and names is not None and v not in names):
        valid = ", ".join(names) if names is not None else ", ".join(T.TASKS)
        raise ValueError(f"scatter_task must be one of the notebook's tasks ({valid}), or empty for the first, "
                         f"got {v!r}")
    return v or (names[0] if names else v)


def _scatter_layer(v, prof, seen):
    n = len(prof.taps) if prof is not None else None
    if not _is_int(v) or (n is not None and not -n <= v < n):
        valid = f"in {-n}..{n - 1} ({n} tapped layers; negative counts from the last)" if n is not None \
            else "(an index into the tapped layers)"
        raise ValueError(f"scatter_layer must be an integer {valid}, got {v!r}")
    return int(v)


def _lam_step(v, prof, seen):
    if not _is_number(v) or v < 0:
        raise ValueError(f"lam_step must be a number >= 0 (the step of the λ grid; 0: the profile's default), "
                         f"got {v!r}")
    return float(v)


def _lam_max(v, prof, seen):
    step = seen.get("lam_step", 0.0)
    if not _is_number(v) or v <= 0 or v < step:
        raise ValueError(f"lam_max must be a number > 0 and >= lam_step (the end of the λ grid), got {v!r}"
                         + (f" with lam_step {step:g}" if step else ""))
    return float(v)


def _coef_steps(v, prof, seen):
    if not _is_int(v) or v < 0:
        raise ValueError(f"coef_steps must be a non-negative integer (0: the package default), got {v!r}")
    return int(v)


# every notebook parameter, in the order they are checked (a validator may use those before it)
PARAMETERS: dict[str, Callable[[Any, P.Profile | None, dict], Any]] = {
    "profile": _profile,
    "dataset": _dataset,
    "data_dir": _path("data_dir", "a folder path (the dataset's files; empty for scenes)"),
    "backbone": _backbone,
    "weights": _path("weights", "a file path (the backbone's local weights; empty without a backbone)"),
    "seed": _seed,
    "device": _device,
    "run_dir": _run_dir,
    "show_progress": _show_progress,
    "tasks": _task_list("tasks"),
    "compare_tasks": _task_list("compare_tasks"),
    "merge_method": _merge_method,
    "alpha": _alpha,
    "ties_k": _ties_k,
    "adapter_rank": _adapter_rank,
    "realign_samples": _realign_samples,
    "n_show": _n_show,
    "dare_p": _dare_p,
    "drift_images": _drift_images,
    "scatter_task": _scatter_task,
    "scatter_layer": _scatter_layer,
    "lam_step": _lam_step,
    "lam_max": _lam_max,
    "coef_steps": _coef_steps,
}


def check(prof: P.Profile | None = None, /, *, restrict: dict | None = None, **values: Any) -> dict:
    """Validate notebook parameters; return ``{name: normalised value}`` for those given.

    ``prof`` is the resolved :class:`~simo_lite.profiles.Profile` (split sizes and encoder width
    bound ``n_show``, ``realign_samples``, ``adapter_rank``, ``scatter_layer``; ``None`` checks types
    and lower bounds only). ``restrict`` narrows a parameter to the values one notebook supports, e.g.
    ``{"merge_method": ("ta", "ties")}``, after the course-wide check. Tasks come out as tuples of
    names, ``device`` as a ``torch.device``, ``n_show`` 0 as its auto value, an empty ``scatter_task``
    as the first task; ``profile`` (the notebook parameter, a profile name) is a value like the
    others. Unknown names raise, listing the known ones.
    """
    unknown = sorted(set(values) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {unknown}; known: {', '.join(PARAMETERS)}")
    out: dict = {}
    for name, validate in PARAMETERS.items():
        if name in values:
            out[name] = validate(values[name], prof, out)
            allowed = (restrict or {}).get(name)
            if allowed is not None and values[name] not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))} in this notebook, "
                                 f"got {values[name]!r}")
    return {k: out[k] for k in values}
