"""Task vectors and merging of encoder state dicts (heads are never merged).

All functions work on plain state dicts ``{name: tensor}`` so they apply to any timm encoder, and
they go one parameter tensor at a time. Measured peaks beyond the inputs (``make bench``, a ViT-B
encoder, 2-5 tasks): task arithmetic about 1x one encoder (the result), TIES with k < 1 about 4x (its
top-k threshold copies each task vector), TIES with k = 1 1.3-1.5x, TALL masks 1.6-2.3x.

    tau_t        = theta_t - theta_0                     (task_vectors)
    theta_merged = theta_0 + alpha * sum_t tau_t          (task_arithmetic)
    theta_merged = theta_0 + alpha * ties(tau_1..tau_T)   (ties: trim, elect sign, disjoint mean)
    theta_merged = theta_0 + sum_t lambda[t, g(k)] tau_t[k] (apply_layer_coefficients: per task, per layer group)

The registry :data:`MERGE_METHODS` has "ties" (k = the ``ties_k`` option, 0.2 by default, the paper's
text) and "ties_k1" (always k = 1.0, no trim, as the authors' code). :func:`select_alpha` with
``alpha_max`` extends the grid beyond 1.0 in steps of :data:`ALPHA_STEP` up to :data:`ALPHA_MAX` while
the best alpha is on its upper edge.

Only floating-point tensors are merged; integer buffers are copied from ``pretrained``.

Pure state-dict algebra: this module imports no model, task or training code. Learning merging
coefficients on data (AdaMerging-style) is :mod:`simo_lite.coefficients`; ``merging.learn_layer_coefficients``
still names it (imported on first use).

Names: ``pretrained`` is θ₀ (the encoder every expert was fine-tuned from), ``task_vectors`` the
``{task: tau_t}`` dict that :func:`task_vectors` (the function of the same name) returns, ``alpha``
the scaling of the merged task vector, ``lam`` the TALL / consensus mask threshold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch

from .registry import Registry
from .types import StateDict

__all__ = ["task_vectors", "task_arithmetic", "zero_shot", "weight_average", "ties", "dare", "tall_masks",
           "tall_merged", "consensus", "select_alpha", "tv_norms", "tv_cosine", "ALPHA_GRID", "MERGE_METHODS",
           "MergeMethod", "register_merge_method", "merge", "layer_groups", "learn_layer_coefficients",
           "ALPHA_MAX", "ALPHA_STEP", "extend_alpha", "apply_layer_coefficients"]

ALPHA_GRID = tuple(round(0.1 * i, 1) for i in range(11))   # 0.0 ... 1.0, the paper's grid
ALPHA_MAX = 2.0       # the largest alpha: the grid extension's end (and the largest fixed alpha notebooks accept)
ALPHA_STEP = 0.1      # the step of the grid extension beyond max(grid)

# StateDict ({name: tensor}) is simo_lite.types.StateDict, imported above (merging.StateDict keeps working)


def _float_keys(state: StateDict) -> list[str]:
    return [k for k, v in state.items() if v.is_floating_point()]


def task_vectors(pretrained: StateDict, finetuned: dict[str, StateDict]) -> dict[str, StateDict]:
    """Per-task differences theta_t - theta_0 over floating-point tensors: {task: {name: tensor}}."""
    out = {}
    for task, state in finetuned.items():
        missing = set(_float_keys(pretrained)) - set(state)
        if missing:
            raise KeyError(f"fine-tuned encoder for {task!r} lacks {len(missing)} tensors, e.g. {sorted(missing)[:3]}")
        out[task] = {k: (state[k].float() - pretrained[k].float()) for k in _float_keys(pretrained)}
    return out


def _apply(pretrained: StateDict, merged_tv: Callable[[str], torch.Tensor], alpha: float) -> StateDict:
    out = {}
    for k, v in pretrained.items():
        out[k] = (v.float() + alpha * merged_tv(k)).to(v.dtype) if v.is_floating_point() else v.clone()
    return out


def _check(task_vectors: dict[str, StateDict]) -> list[str]:
    """The tensor names of the task vectors (all must have the same ones); errors for none or a mismatch."""
    if not task_vectors:
        raise ValueError("no task vectors to merge")
    first, *rest = task_vectors.items()
    keys = list(first[1])
    for t, tv in rest:
        if tv.keys() != first[1].keys():
            diff = sorted(set(keys) ^ set(tv))
            raise KeyError(f"task vectors of {first[0]!r} and {t!r} have different tensors, e.g. {diff[:3]}: "
                           f"make them from the same pretrained encoder (task_vectors(pretrained, finetuned))")
    return keys


def _summed(task_vectors: dict[str, StateDict]) -> StateDict:
    """tau_MTL = sum_t tau_t, the task-arithmetic multi-task vector."""
    keys = _check(task_vectors)
    return {k: sum(tv[k] for tv in task_vectors.values()) for k in keys}


def task_arithmetic(pretrained: StateDict, task_vectors: dict[str, StateDict], alpha: float) -> StateDict:
    """theta_0 + alpha * sum_t tau_t (Ilharco et al. 2023)."""
    _check(task_vectors)
    tvs = list(task_vectors.values())
    return _apply(pretrained, lambda k: sum(tv[k] for tv in tvs), alpha)


def zero_shot(pretrained: StateDict) -> StateDict:
    """alpha = 0: the pretrained encoder (with the experts' heads attached later)."""
    return {k: v.clone() for k, v in pretrained.items()}


def weight_average(pretrained: StateDict, task_vectors: dict[str, StateDict]) -> StateDict:
    """Average of the fine-tuned encoders: task arithmetic with alpha = 1/T."""
    _check(task_vectors)
    return task_arithmetic(pretrained, task_vectors, 1.0 / len(task_vectors))


def _topk_threshold(tv: StateDict, k: float) -> float:
    """Magnitude threshold keeping the top-``k`` fraction of all entries of one task vector."""
    if k >= 1.0:
        return 0.0
    flat = torch.cat([v.abs().flatten() for v in tv.values()])
    n_keep = max(int(round(k * flat.numel())), 1)
    return float(torch.kthvalue(flat, flat.numel() - n_keep + 1).values)


def ties(pretrained: StateDict, task_vectors: dict[str, StateDict], k: float = 0.2, alpha: float = 1.0) -> StateDict:
    """TIES-Merging (Yadav et al. 2023): trim, elect sign, disjoint mean, then theta_0 + alpha * tau.

    1. Trim: keep each task vector's top-``k`` fraction of entries by magnitude (k=1.0 keeps all).
    2. Elect: per entry, the sign of the sum of the trimmed vectors.
    3. Disjoint mean: average only the non-zero entries whose sign agrees with the elected one.
    """
    if not 0.0 < k <= 1.0:
        raise ValueError(f"ties: k must be in (0, 1], got {k}")
    _check(task_vectors)
    thresholds = {t: _topk_threshold(tv, k) for t, tv in task_vectors.items()}

    def merged(key: str) -> torch.Tensor:
        trimmed = torch.stack([tv[key] * (tv[key].abs() >= thresholds[t]) if k < 1.0 else tv[key]
                               for t, tv in task_vectors.items()])              # (T, *shape)
        sign = torch.sign(trimmed.sum(0))                                        # elected sign
        agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
        return (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)

    return _apply(pretrained, merged, alpha)


def dare(pretrained: StateDict, task_vectors: dict[str, StateDict], p: float = 0.9, alpha: float = 1.0,
         seed: int = 0) -> StateDict:
    """DARE (Yu et al. 2024), beyond the paper: drop each task-vector entry with probability ``p``,
    rescale the rest by 1/(1-p), then task arithmetic."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dare: p must be in [0, 1), got {p}")
    _check(task_vectors)
    g = torch.Generator().manual_seed(seed)
    tvs = list(task_vectors.values())

    def merged(key: str) -> torch.Tensor:
        return sum(tv[key] * (torch.rand(tv[key].shape, generator=g) >= p) / (1 - p) for tv in tvs)

    return _apply(pretrained, merged, alpha)


def tall_masks(task_vectors: dict[str, StateDict], lam: float | dict[str, float] = 0.6,
               merged_tv: StateDict | None = None) -> dict[str, StateDict]:
    """TALL masks (Wang et al. 2024): m_t = |tau_t| >= lam_t * |tau_MTL - tau_t| (bool, per entry).

    ``merged_tv`` defaults to the task-arithmetic sum. ``lam`` may be one value or one per task.
    """
    keys = _check(task_vectors)
    if merged_tv is None:
        merged_tv = _summed(task_vectors)
    lams = lam if isinstance(lam, dict) else {t: lam for t in task_vectors}
    missing = [t for t in task_vectors if t not in lams]
    if missing:
        raise KeyError(f"tall_masks: lam has no value for task(s) {', '.join(missing)}; give one lam or one per task "
                       f"({', '.join(task_vectors)})")
    return {t: {k: tv[k].abs() >= lams[t] * (merged_tv[k] - tv[k]).abs() for k in keys}
            for t, tv in task_vectors.items()}


def tall_merged(pretrained: StateDict, task_vectors: dict[str, StateDict], task: str, lam: float,
                alpha: float = 1.0) -> StateDict:
    """The encoder TALL builds for one task: theta_0 + alpha * (m_task * tau_MTL).

    Each task gets its own encoder, so a TALL model runs one encoder pass per task (not a single
    shared encoder), which is why the paper lists it apart.
    """
    if task not in task_vectors:
        raise KeyError(f"tall_merged: no task vector for {task!r}; tasks: {', '.join(task_vectors) or 'none'}")
    merged_tv = _summed(task_vectors)
    mask = tall_masks({task: task_vectors[task]}, lam, merged_tv)[task]
    return _apply(pretrained, lambda k: merged_tv[k] * mask[k], alpha)


def consensus(pretrained: StateDict, task_vectors: dict[str, StateDict], lam: float = 0.6, min_tasks: int = 2,
              alpha: float = 1.0) -> StateDict:
    """Consensus merging (Wang et al. 2024): keep entries of tau_MTL selected by >= ``min_tasks`` TALL masks."""
    merged_tv = _summed(task_vectors)
    masks = tall_masks(task_vectors, lam, merged_tv)
    return _apply(pretrained, lambda k: merged_tv[k] * (sum(m[k].int() for m in masks.values()) >= min_tasks),
                  alpha)


@dataclass(frozen=True)
class MergeMethod:
    """A single-encoder merge in the registry :data:`MERGE_METHODS`.

    Attributes:
        name: registry key (``merge(name, ...)``, the ``merge_method`` notebook parameter).
        fn: ``fn(pretrained, task_vectors, alpha=..., **options) -> StateDict`` (the merged encoder).
        options: keyword options ``fn`` takes beyond ``alpha`` (e.g. ``("ties_k",)``).
        uses_alpha: whether ``alpha`` scales the result (False: the α sweep is skipped).
        per_task: True when the method builds one encoder per task (one encoder pass per task,
            as TALL masks), so its cost is not that of a single merged model.
        label: how results tables name it.
    """
    name: str
    fn: Callable[..., StateDict]
    options: tuple[str, ...] = ()
    uses_alpha: bool = True
    per_task: bool = False
    label: str = ""


MERGE_METHODS: Registry[MergeMethod] = Registry("merge method")


def register_merge_method(name: str, fn: Callable[..., StateDict] | None = None, *, options: tuple[str, ...] = (),
                          uses_alpha: bool = True, per_task: bool = False, label: str = "", replace: bool = False
                          ) -> Callable[..., StateDict] | Callable[[Callable[..., StateDict]], Callable[..., StateDict]]:
    """Register a merge method (directly, or as a decorator when ``fn`` is omitted).

        @register_merge_method("half", label="half of task arithmetic")
        def half(pretrained, task_vectors, alpha):
            return task_arithmetic(pretrained, task_vectors, alpha / 2)

    After that ``merge("half", ...)``, the ``merge_method`` notebook parameter and the results
    tables accept ``"half"``."""
    def add(f):
        MERGE_METHODS.register(name, MergeMethod(name, f, tuple(options), uses_alpha, per_task, label or name),
                               replace=replace)
        return f
    return add(fn) if fn is not None else add


register_merge_method("zeroshot", lambda pretrained, tvs, alpha: zero_shot(pretrained), uses_alpha=False,
                      label="zero-shot (α = 0)")
register_merge_method("average", lambda pretrained, tvs, alpha: weight_average(pretrained, tvs), uses_alpha=False,
                      label="weight average")
register_merge_method("ta", lambda pretrained, tvs, alpha: task_arithmetic(pretrained, tvs, alpha),
                      label="task arithmetic")
register_merge_method("ties", lambda pretrained, tvs, alpha, ties_k=0.2: ties(pretrained, tvs, k=ties_k, alpha=alpha),
                      options=("ties_k",), label="TIES")
register_merge_method("ties_k1", lambda pretrained, tvs, alpha: ties(pretrained, tvs, k=1.0, alpha=alpha),
                      label="TIES (k = 1.0)")     # the authors' code keeps every entry (no trim); "ties" uses ties_k
register_merge_method("dare", lambda pretrained, tvs, alpha, dare_p=0.9, seed=0: dare(pretrained, tvs, p=dare_p,
                                                                                    alpha=alpha, seed=seed),
                      options=("dare_p", "seed"), label="DARE")
register_merge_method("consensus", lambda pretrained, tvs, alpha, lam=0.6: consensus(pretrained, tvs, lam=lam,
                                                                                     alpha=alpha),
                      options=("lam",), label="consensus")


def merge(method: str, pretrained: StateDict, task_vectors: dict[str, StateDict], alpha: float = 1.0,
          **options: Any) -> StateDict:
    """One entry point for the single-encoder merges: ``method`` is a name in :data:`MERGE_METHODS`.

    ``options`` (``ties_k``, ``dare_p``, ``lam``, ``seed``, or a registered method's own) go to the
    methods that take them; a name that no registered method takes is an error, so a typo is caught.
    """
    spec = MERGE_METHODS[method]
    known = {o for m in MERGE_METHODS.values() for o in m.options}
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"merge: unknown option(s) {sorted(unknown)}; options of the registered methods: "
                         f"{', '.join(sorted(known))}")
    return spec.fn(pretrained, task_vectors, alpha=alpha, **{k: v for k, v in options.items() if k in spec.options})


def _best(scores: dict[float, float]) -> float:
    """The alpha of the highest finite score (the smaller alpha on a tie); errors when none is finite."""
    finite = {a: s for a, s in scores.items() if math.isfinite(s)}
    if not finite:
        raise ValueError("select_alpha: no finite score on the grid")
    return max(finite, key=lambda a: (finite[a], -a))


def extend_alpha(scores: dict[float, float], alpha_max: float = ALPHA_MAX, step: float = ALPHA_STEP) -> float | None:
    """The next alpha to try beyond the grid of ``scores`` ({alpha: score}), or None: while the best
    alpha is the largest one tried and below ``alpha_max``, the largest plus ``step`` (at most
    ``alpha_max``, rounded to 6 decimals so 1.0 + 0.1 is 1.1)."""
    top = max(scores)
    if _best(scores) != top or top >= alpha_max - 1e-9:
        return None
    return round(min(top + step, alpha_max), 6)


def select_alpha(score: Callable[[float], float], grid: Iterable[float] = ALPHA_GRID,
                 alpha_max: float | None = None, step: float = ALPHA_STEP) -> tuple[float, dict]:
    """The paper's protocol: evaluate ``score(alpha)`` (a validation Δm, higher is better) on the grid.

    With ``alpha_max`` (e.g. :data:`ALPHA_MAX`), a best alpha on the grid's upper edge extends the grid
    in steps of ``step`` until the best is no longer the largest alpha tried or ``alpha_max`` is
    reached (:func:`extend_alpha`); None (the default) keeps to the grid.

    Returns (best alpha, {alpha: score} over every alpha tried, in order). ``score`` must evaluate on
    the validation split; the test split is only touched once, afterwards, at the chosen alpha.
    """
    scores = {float(a): float(score(float(a))) for a in grid}
    best = _best(scores)
    if alpha_max is not None:
        while (a := extend_alpha(scores, alpha_max, step)) is not None:
            scores[a] = float(score(a))
        best = _best(scores)
    return best, scores


def tv_norms(task_vectors: dict[str, StateDict]) -> dict[str, float]:
    """L2 norm of each task vector over all its entries."""
    return {t: float(math.sqrt(sum(float((v.double() ** 2).sum()) for v in tv.values())))
            for t, tv in task_vectors.items()}


def tv_cosine(task_vectors: dict[str, StateDict]) -> torch.Tensor:
    """Pairwise cosine similarity (T, T) between flattened task vectors, in task order."""
    names = list(task_vectors)
    flat = torch.stack([torch.cat([v.flatten().double() for v in task_vectors[t].values()]) for t in names])
    flat = torch.nn.functional.normalize(flat, dim=1)
    return (flat @ flat.T).float()


def layer_groups(state: StateDict) -> dict[str, str]:
    """Map each float tensor name of a timm ViT state dict to its layer group:
    'embed' (patch/pos embedding, CLS), 'block<i>', or 'norm' (final norm and anything else)."""
    groups = {}
    for k in _float_keys(state):
        if k.startswith("blocks."):
            groups[k] = f"block{int(k.split('.')[1])}"
        elif k.startswith(("patch_embed", "pos_embed", "cls_token", "reg_token")):
            groups[k] = "embed"
        else:
            groups[k] = "norm"
    return groups


def apply_layer_coefficients(pretrained: StateDict, task_vectors: dict[str, StateDict],
                             coefficients: torch.Tensor | Sequence[Sequence[float]], groups: Sequence[str]
                             ) -> StateDict:
    """theta = theta_0 + sum_t lambda[t, g(k)] * tau_t[k], per float tensor ``k`` (the merge that
    :func:`simo_lite.coefficients.learn_layer_coefficients` learns, paper Fig. 2).

    ``coefficients``: lambda, shape (T, G), row ``i`` for the ``i``-th task of ``task_vectors`` (dict
    order), column ``j`` for the layer group ``groups[j]``; ``groups``: the G group names
    (:func:`layer_groups`' values: "embed", "block<i>", "norm"). Every group of ``pretrained`` must be
    one of ``groups``. Integer tensors are copied from ``pretrained``. All ones is task arithmetic at
    alpha = 1, all zeros theta_0.
    """
    keys = _check(task_vectors)
    lam = torch.as_tensor(coefficients, dtype=torch.float32).detach().cpu()
    tasks, groups = list(task_vectors), list(groups)
    if lam.shape != (len(tasks), len(groups)):
        raise ValueError(f"apply_layer_coefficients: coefficients have shape {tuple(lam.shape)}, expected "
                         f"(tasks, groups) = ({len(tasks)}, {len(groups)})")
    col = {g: j for j, g in enumerate(groups)}
    of = layer_groups(pretrained)
    missing = sorted({g for k, g in of.items() if k in keys and g not in col})
    if missing:
        raise KeyError(f"apply_layer_coefficients: no coefficients for layer group(s) {', '.join(missing)}; "
                       f"groups: {', '.join(groups)}")
    tvs = [task_vectors[t] for t in tasks]

    def merged(k: str) -> torch.Tensor:
        j = col[of[k]]
        return sum(float(lam[i, j]) * tv[k] for i, tv in enumerate(tvs))

    return _apply(pretrained, merged, 1.0)


def __getattr__(name: str):
    """``merging.learn_layer_coefficients``: :func:`simo_lite.coefficients.learn_layer_coefficients`,
    imported on first use (it trains on data, so it lives outside this state-dict module)."""
    if name == "learn_layer_coefficients":
        from .coefficients import learn_layer_coefficients
        return learn_layer_coefficients
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
