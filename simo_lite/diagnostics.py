"""Observing the misalignment: how far the merged encoder's features drift from what each head expects.

Features are the heads' inputs, (N, L, 2C, h, w): N images, L tapped blocks, 2C channels (patch token
concatenated with the CLS token), h x w patch grid. Every statistic is computed per tapped layer on
the same validation images:

- ``mean_shift``  ||mu_merged - mu_expert|| / ||mu_expert||  (per-channel means over tokens)
- ``std_ratio``   mean over channels of sigma_merged / sigma_expert
- ``norm_ratio``  mean token norm merged / expert
- ``cka``         linear CKA (Kornblith et al. 2019) between token features, 1 = same up to rotation/scale
- ``cosine``      mean cosine similarity of corresponding tokens

plus the head-swap matrix, task-vector geometry (see ``merging.tv_norms``/``tv_cosine``) and the
paper's Fig. 1: normalised performance against the number of merged tasks.
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import torch

from .types import StateDict

__all__ = ["linear_cka", "feature_stats", "feature_drift", "head_swap_matrix", "merge_combinations"]


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between x (n, d1) and y (n, d2): ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same number of rows, got {x.shape[0]} and {y.shape[0]}")
    x = (x - x.mean(0)).double()
    y = (y - y.mean(0)).double()
    num = (y.T @ x).pow(2).sum()
    den = (x.T @ x).norm() * (y.T @ y).norm()
    return float(num / den) if den > 0 else float("nan")


def _tokens(feats: torch.Tensor, layer: int) -> torch.Tensor:
    """(N, L, 2C, h, w) -> tokens of one layer (N*h*w, 2C)."""
    f = feats[:, layer]                                                  # (N, 2C, h, w)
    return f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])


def feature_stats(feats: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-layer, per-channel mean and std and mean token norm: mean/std (L, 2C), norm (L,)."""
    L = feats.shape[1]
    toks = [_tokens(feats, l).double() for l in range(L)]
    return {"mean": torch.stack([t.mean(0) for t in toks]).float(), "std": torch.stack([t.std(0) for t in toks]).float(),
            "norm": torch.stack([t.norm(dim=1).mean() for t in toks]).float()}


def feature_drift(reference: torch.Tensor, other: torch.Tensor, max_tokens: int = 4096) -> list[dict]:
    """One row per tapped layer comparing ``other`` features to ``reference`` ones (same images).

    CKA uses at most ``max_tokens`` tokens (a fixed, evenly spaced subset) to stay cheap.
    """
    if reference.shape != other.shape:
        raise ValueError(f"feature shapes differ: {tuple(reference.shape)} vs {tuple(other.shape)}")
    rows = []
    for l in range(reference.shape[1]):
        a, b = _tokens(reference, l).double(), _tokens(other, l).double()
        mu_a, mu_b = a.mean(0), b.mean(0)
        sd_a, sd_b = a.std(0), b.std(0)
        idx = torch.linspace(0, len(a) - 1, min(max_tokens, len(a))).long()
        rows.append({
            "layer": l,
            "mean_shift": float((mu_b - mu_a).norm() / mu_a.norm().clamp(min=1e-12)),
            "std_ratio": float((sd_b / sd_a.clamp(min=1e-12)).mean()),
            "norm_ratio": float(b.norm(dim=1).mean() / a.norm(dim=1).mean().clamp(min=1e-12)),
            "cka": linear_cka(a[idx], b[idx]),
            "cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean()),
        })
    return rows


def head_swap_matrix(encoders: dict[str, StateDict], tasks: Sequence[str],
                     evaluate_encoder: Callable[[StateDict], dict[str, float]]) -> dict[str, dict[str, float]]:
    """Metric of every (encoder, head) pair: {encoder name: {task: metric}}.

    ``encoders`` maps a name (e.g. 'expert-seg', 'merged') to an encoder state dict;
    ``evaluate_encoder(state) -> {task: metric}`` evaluates that encoder with every task's expert head.
    """
    return {name: evaluate_encoder(state) for name, state in encoders.items()}


def merge_combinations(tasks: Sequence[str], score_subset: Callable[[tuple[str, ...]], dict[str, float]],
                       min_size: int = 1) -> dict[int, list[dict]]:
    """Normalised performance against the number of merged tasks, over every task subset (paper Fig. 1).

    ``score_subset(subset) -> {task: normalised performance}`` merges the experts of ``subset`` and
    scores each of its tasks against its expert. Returns {k: [{"tasks": subset, "mean": m, "per_task": {...}}]}.
    """
    if isinstance(tasks, str):
        raise TypeError(f"merge_combinations: tasks must be task names (e.g. ('seg', 'depth')), got the string {tasks!r}; "
                        f"resolve a task set with simo_lite.tasks.get_tasks")
    if min_size < 1:
        raise ValueError(f"merge_combinations: min_size must be >= 1 (subsets of at least one task), got {min_size}")
    out: dict[int, list[dict]] = {}
    tasks = list(tasks)
    for k in range(min_size, len(tasks) + 1):
        for subset in itertools.combinations(tasks, k):
            per = score_subset(subset)
            out.setdefault(k, []).append({"tasks": list(subset), "per_task": per,
                                          "mean": sum(per.values()) / len(per)})
    return out
