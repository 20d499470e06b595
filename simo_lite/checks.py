"""Auto-checks for the course exercises, and the concept questions.

Every exercise in a notebook is a function the learner writes; ``check_<name>(fn)`` calls it on small
random or hand-made inputs, compares the result with the tested implementation in the package
(``simo_lite.merging``, ``metrics``, ``diagnostics``, ``scenes``, ``models``, ``realign``) and prints
one line:

- ``✓ passed: <exercise>`` when every case agrees;
- ``… not implemented yet: ...`` when the function still raises ``NotImplementedError``;
- ``✗ <exercise>: <what is wrong>`` otherwise: wrong type, shape or dtype, or the first entry whose
  value differs, with the input case that produced it.

Checks return True or False and never raise on a wrong answer, so a student notebook keeps running;
pass ``strict=True`` to raise ``AssertionError`` instead (for tests and CI). A few exercises have no
package counterpart (the cost ratios of notebook 07); their reference is the formula written in the
check, stated in its docstring.

Concept questions: :func:`answer` prints whether the chosen option is right and the explanation of
that option; the questions, options and explanations live in :data:`QUESTIONS`.

    >>> from simo_lite import checks
    >>> checks.check_linear_cka(my_cka)          # doctest: +SKIP
    ✓ passed: linear CKA
    >>> checks.answer("04-q1", "b")               # doctest: +SKIP
"""
from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["QUESTIONS", "answer", "question", "CHECKS",
           "check_pixel_shares", "check_normals_from_depth",
           "check_vit_param_count", "check_oriented_ratio",
           "check_task_vector", "check_tv_norm",
           "check_task_arithmetic", "check_ties_elect_sign", "check_choose_alpha",
           "check_linear_cka", "check_mean_shift",
           "check_delta_m_ratio", "check_delta_m_eq2", "check_feature_cache_bytes",
           "check_lora_param_count", "check_fold_lora",
           "check_loss_recovered", "check_cost_percent",
           "check_tall_mask", "check_tv_cosine"]

PASS, FAIL, TODO = "✓", "✗", "…"


# ----------------------------------------------------------------------------------------------
# Machinery
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# 00 Scenes
# ----------------------------------------------------------------------------------------------
def check_pixel_shares(fn: Callable, strict: bool = False) -> bool:
    """``fn(seg, num_classes) -> (num_classes,) float64``: the share of pixels of each class id.

    ``seg`` is (N, H, W) int64; a class absent from ``seg`` gets 0; the shares sum to 1.
    """
    def body(fn):
        cases = [("a 2x3x4 map with classes 0..3 of 6", torch.randint(0, 4, (2, 3, 4), generator=_gen(0)), 6),
                 ("one pixel of class 2, 3 classes", torch.tensor([[[2]]]), 3),
                 ("a 1x8x8 map of 6 classes", torch.randint(0, 6, (1, 8, 8), generator=_gen(1)), 6)]
        for case, seg, n in cases:
            expected = torch.bincount(seg.flatten(), minlength=n).double() / seg.numel()
            _tensor(_call(fn, case, seg.clone(), n), expected, "the shares", case, atol=1e-9, rtol=1e-7)
    return _run("pixel shares", fn, body, strict)


def check_normals_from_depth(fn: Callable, strict: bool = False) -> bool:
    """``fn(depth, fov_deg) -> (N, 3, H, W)``: unit camera-frame normals from a depth map (N, 1, H, W).

    Compared with :func:`simo_lite.scenes.normals_from_depth` on tilted planes plus smooth bumps:
    back-project X = depth · ray (``scenes.camera_rays``), central differences, n = dX/dv × dX/du,
    normalised, border pixels 0.
    """
    from .scenes import normals_from_depth

    def body(fn):
        g = _gen(2)
        for size, fov in ((8, 60.0), (12, 45.0)):
            v, u = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
            slopes = torch.rand(2, 2, generator=g) - 0.5
            depth = (3 + slopes[:, :1, None] * u + slopes[:, 1:, None] * v + 0.1 * torch.sin(2 * u) * torch.cos(v))
            depth = depth[:, None]                                             # (2, 1, H, W)
            case = f"2 smooth depth maps of {size}x{size}, fov {fov}"
            expected = normals_from_depth(depth, fov_deg=fov)
            got = _call(fn, case, depth.clone(), fov)
            if isinstance(got, torch.Tensor) and got.shape == expected.shape:
                inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
                if torch.allclose(got[inner], -expected[inner], atol=1e-4):
                    raise _Wrong(f"the normals point away from the camera: take dX/dv × dX/du in that order "
                                 f"({case})")
                if torch.allclose(got[inner], expected[inner], atol=1e-4) and got.abs().sum() != expected.abs().sum():
                    raise _Wrong(f"interior pixels are right, but border pixels must be 0 (central differences "
                                 f"need both neighbours) ({case})")
            _tensor(got, expected, "the normals", case, atol=1e-4, rtol=1e-3)
    return _run("normals from depth", fn, body, strict)


# ----------------------------------------------------------------------------------------------
# 01 Foundation encoder
# ----------------------------------------------------------------------------------------------
def check_vit_param_count(fn: Callable, strict: bool = False) -> bool:
    """``fn(embed_dim, depth, patch_size, img_size) -> int``: parameters of ``models.make_encoder``."""
    from .models import count_parameters, make_encoder

    def body(fn):
        for c, d, p, s in ((16, 1, 4, 8), (32, 2, 8, 32), (24, 3, 4, 12)):
            case = f"embed_dim={c}, depth={d}, patch_size={p}, img_size={s}"
            expected = count_parameters(make_encoder(img_size=s, patch_size=p, embed_dim=c, depth=d, num_heads=4,
                                                     seed=0))
            _number(_call(fn, case, c, d, p, s), expected, "the parameter count", case, integer=True)
    return _run("ViT parameter count", fn, body, strict)


def check_oriented_ratio(fn: Callable, strict: bool = False) -> bool:
    """``fn(metric, reference, higher_is_better) -> float``: > 1 means ``metric`` is better.

    metric / reference when higher is better, reference / metric otherwise; compared with
    :func:`simo_lite.metrics.normalized_performance`.
    """
    from .metrics import normalized_performance

    def body(fn):
        for m, r, hib in ((0.6, 0.4, True), (0.4, 0.6, True), (1.3, 0.8, False), (0.5, 2.0, False)):
            case = f"metric={m}, reference={r}, higher_is_better={hib}"
            expected = normalized_performance({"t": m}, {"t": r}, {"t": not hib})["t"]
            _number(_call(fn, case, m, r, hib), expected, "the ratio", case)
    return _run("oriented ratio", fn, body, strict)


# ----------------------------------------------------------------------------------------------
# 02 Training the experts
# ----------------------------------------------------------------------------------------------
def check_task_vector(fn: Callable, strict: bool = False) -> bool:
    """``fn(pretrained, finetuned) -> {name: tensor}``: θ_t − θ₀ over the floating-point tensors.

    Compared with :func:`simo_lite.merging.task_vectors`; integer buffers are left out; float32 out.
    """
    from .merging import task_vectors

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
    from .merging import tv_norms

    def body(fn):
        for seed in (6, 7):
            tv = _toy_tvs(seed, 1)["task0"]
            case = f"a task vector with tensors of shapes {[tuple(v.shape) for v in tv.values()]}"
            _number(_call(fn, case, {k: v.clone() for k, v in tv.items()}), tv_norms({"t": tv})["t"], "the norm", case)
    return _run("task-vector norm", fn, body, strict)


# ----------------------------------------------------------------------------------------------
# 03 Merging
# ----------------------------------------------------------------------------------------------
def check_task_arithmetic(fn: Callable, strict: bool = False) -> bool:
    """``fn(theta_0, task_vectors, alpha) -> state dict``: θ₀ + α Σ_t τ_t (``merging.task_arithmetic``).

    Floating-point tensors keep their dtype; other tensors (integer buffers) are copied unchanged.
    """
    from .merging import task_arithmetic

    def body(fn):
        theta_0, tvs = _toy_state(8), _toy_tvs(9)
        for alpha in (0.0, 0.3, 1.0):
            case = f"3 task vectors, alpha={alpha}, theta_0 with an int64 buffer"
            expected = task_arithmetic(theta_0, tvs, alpha)
            got = _call(fn, case, {k: v.clone() for k, v in theta_0.items()},
                        {t: {k: v.clone() for k, v in tv.items()} for t, tv in tvs.items()}, alpha)
            _state_dict(got, expected, "the merged state", case, check_dtype="exact")
    return _run("task arithmetic", fn, body, strict)


def check_ties_elect_sign(fn: Callable, strict: bool = False) -> bool:
    """``fn(trimmed) -> tensor``: TIES' elected sign per entry of the stacked trimmed vectors (T, *shape).

    γ = sign(Σ_t trimmed_t), i.e. the sign with the larger total mass (not the majority count), 0 where
    the sum is 0. Reference: the sign of ``merging.ties`` with k = 1 (its disjoint mean has the elected sign).
    """
    from .merging import ties

    def reference(stack):
        tvs = {f"t{i}": {"w": v} for i, v in enumerate(stack)}
        return torch.sign(ties({"w": torch.zeros(stack.shape[1:])}, tvs, k=1.0, alpha=1.0)["w"])

    def body(fn):
        mass = torch.tensor([[0.9, 0.1, 0.0, -0.2], [-0.1, 0.1, 0.0, 0.5], [-0.1, -0.4, 0.0, -0.3]])
        case = "3 vectors where the majority of signs and the total mass disagree"
        got = _call(fn, case, mass.clone())
        if isinstance(got, torch.Tensor) and got.shape == mass.shape[1:] and got[0].item() < 0:
            raise _Wrong("entry 0 has two negative votes but a larger positive mass (+0.9 vs -0.2): TIES elects "
                         "the sign of the sum, not the majority of signs")
        _tensor(got, reference(mass), "the elected sign", case, check_dtype="none")
        stack = torch.randn(4, 3, 5, generator=_gen(10)) * (torch.rand(4, 3, 5, generator=_gen(11)) > 0.5)
        case = "4 random trimmed tensors of shape (3, 5)"
        _tensor(_call(fn, case, stack.clone()), reference(stack), "the elected sign", case, check_dtype="none")
    return _run("TIES sign election", fn, body, strict)


def check_choose_alpha(fn: Callable, strict: bool = False) -> bool:
    """``fn(scores) -> float``: the α with the highest validation score ``{alpha: score}``.

    The paper's protocol as in :func:`simo_lite.merging.select_alpha`: ties go to the smaller α, and
    non-finite scores (NaN) are ignored.
    """
    from .merging import select_alpha

    def body(fn):
        cases = [("a single peak", {0.0: -0.5, 0.1: -0.2, 0.2: -0.1, 0.3: -0.3}),
                 ("a tie between 0.2 and 0.4 (take the smaller)", {0.0: -0.5, 0.2: -0.1, 0.4: -0.1, 0.6: -0.4}),
                 ("a NaN score at 0.5", {0.0: -0.5, 0.5: float("nan"), 1.0: -0.45})]
        for case, scores in cases:
            expected = select_alpha(lambda a: scores[a], grid=list(scores))[0]
            _number(_call(fn, case, dict(scores)), expected, "the chosen alpha", case)
    return _run("choosing alpha", fn, body, strict)


# ----------------------------------------------------------------------------------------------
# 04 Misalignment
# ----------------------------------------------------------------------------------------------
def check_linear_cka(fn: Callable, strict: bool = False) -> bool:
    """``fn(x, y) -> float``: linear CKA between x (n, d1) and y (n, d2) (``diagnostics.linear_cka``)."""
    from .diagnostics import linear_cka

    def body(fn):
        x = torch.randn(50, 6, generator=_gen(12))
        q, _ = torch.linalg.qr(torch.randn(6, 6, generator=_gen(13)))
        cases = [("x and a random y of another width", x, torch.randn(50, 4, generator=_gen(14))),
                 ("x and a rotated, scaled, shifted copy of x (CKA 1)", x, 3 * x @ q + 2.0),
                 ("x and x + noise", x, x + 0.5 * torch.randn(50, 6, generator=_gen(15)))]
        for case, a, b in cases:
            _number(_call(fn, case, a.clone(), b.clone()), linear_cka(a, b), "CKA", case, atol=1e-5, rtol=1e-4)
    return _run("linear CKA", fn, body, strict)


def check_mean_shift(fn: Callable, strict: bool = False) -> bool:
    """``fn(reference, other) -> float``: ||μ_other − μ_ref|| / ||μ_ref|| for tokens (n, d).

    μ is the per-channel mean over the tokens; compared with ``mean_shift`` of
    :func:`simo_lite.diagnostics.feature_drift`.
    """
    from .diagnostics import feature_drift

    def body(fn):
        g = _gen(16)
        ref = torch.randn(3, 1, 8, 2, 2, generator=g) + 1.0                  # (N, L, 2C, h, w)
        other = ref * 1.2 + 0.3 * torch.randn(3, 1, 8, 2, 2, generator=g)
        tokens = lambda f: f[:, 0].permute(0, 2, 3, 1).reshape(-1, f.shape[2])  # noqa: E731  (N*h*w, 2C)
        case = "12 tokens of 8 channels"
        expected = feature_drift(ref, other)[0]["mean_shift"]
        _number(_call(fn, case, tokens(ref), tokens(other)), expected, "the mean shift", case, atol=1e-5, rtol=1e-4)
    return _run("relative mean shift", fn, body, strict)


# ----------------------------------------------------------------------------------------------
# 05 Head realignment
# ----------------------------------------------------------------------------------------------
_DM_CASES = [
    ("3 tasks, mixed directions", {"seg": 0.5, "depth": 0.8, "normals": 30.0},
     {"seg": 0.6, "depth": 0.5, "normals": 20.0}, {"seg": False, "depth": True, "normals": True}),
    ("a doubled error", {"depth": 1.0}, {"depth": 0.5}, {"depth": True}),
    ("better than the baseline", {"seg": 0.7, "albedo": 0.05}, {"seg": 0.6, "albedo": 0.1},
     {"seg": False, "albedo": True}),
]


def _check_delta_m(fn, kind: str, title: str, strict: bool) -> bool:
    from .metrics import delta_m

    def body(fn):
        for case, m, b, low in _DM_CASES:
            got = _call(fn, case, dict(m), dict(b), dict(low))
            expected = delta_m(m, b, low, kind=kind)
            if isinstance(got, (int, float)) and not isinstance(got, bool) and math.isclose(got, 100 * expected):
                raise _Wrong(f"got {got:.4g}: return a fraction (-0.275 for -27.5 %), not a percentage ({case})")
            _number(got, expected, "Δm", case)
    return _run(title, fn, body, strict)


def check_delta_m_ratio(fn: Callable, strict: bool = False) -> bool:
    """``fn(metrics, baseline, lower_is_better) -> float``: mean_t normalised_t − 1 (the paper's tables).

    normalised_t = M_t / B_t, or B_t / M_t when lower is better; a fraction. Compared with
    :func:`simo_lite.metrics.delta_m` (``kind="ratio"``).
    """
    return _check_delta_m(fn, "ratio", "Δm, ratio form", strict)


def check_delta_m_eq2(fn: Callable, strict: bool = False) -> bool:
    """``fn(metrics, baseline, lower_is_better) -> float``: mean_t (−1)^l_t (M_t − B_t) / B_t (Eq. 2).

    A fraction; compared with :func:`simo_lite.metrics.delta_m` (``kind="relative"``).
    """
    return _check_delta_m(fn, "relative", "Δm, Eq. 2", strict)


def check_feature_cache_bytes(fn: Callable, strict: bool = False) -> bool:
    """``fn(n_images, n_taps, embed_dim, image_size, patch_size) -> int``: bytes of a float32 feature cache.

    The cache holds ``models.encoder_features`` of every image: (N, L, 2C, h, w) float32, h = w =
    image_size / patch_size. Compared with the size of real features from a small encoder.
    """
    from .models import encoder_features, make_encoder

    def body(fn):
        for n, c, s, p in ((3, 16, 16, 4), (2, 8, 16, 8)):
            taps = (0, 1)
            enc = make_encoder(img_size=s, patch_size=p, embed_dim=c, depth=2, num_heads=4, seed=0).eval()
            with torch.no_grad():
                feats = encoder_features(enc, torch.rand(n, 3, s, s, generator=_gen(17)), taps)
            expected = feats.numel() * feats.element_size()
            case = f"{n} images, {len(taps)} taps, embed_dim={c}, image_size={s}, patch_size={p}"
            _number(_call(fn, case, n, len(taps), c, s, p), expected, "the cache size in bytes", case, integer=True)
    return _run("feature cache size", fn, body, strict)


# ----------------------------------------------------------------------------------------------
# 06 Representation realignment
# ----------------------------------------------------------------------------------------------
def _tiny_lora(rank: int, embed_dim: int = 16, depth: int = 2, seed: int = 0):
    from .models import make_encoder
    from .realign import add_lora
    enc = make_encoder(img_size=16, patch_size=8, embed_dim=embed_dim, depth=depth, num_heads=4, seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        wrapper = add_lora(enc, rank=rank)
    return enc, wrapper


def check_lora_param_count(fn: Callable, strict: bool = False) -> bool:
    """``fn(depth, embed_dim, rank) -> int``: LoRA parameters on qkv, proj, fc1 and fc2 of every block.

    Compared with the trainable ``lora_`` parameters PEFT adds through :func:`simo_lite.realign.add_lora`
    to a small ViT (MLP ratio 4).
    """
    def body(fn):
        for depth, c, r in ((2, 16, 4), (1, 32, 2)):
            enc, _ = _tiny_lora(r, embed_dim=c, depth=depth)
            expected = sum(p.numel() for n, p in enc.named_parameters() if "lora_" in n)
            case = f"depth={depth}, embed_dim={c}, rank={r}"
            _number(_call(fn, case, depth, c, r), expected, "the LoRA parameter count", case, integer=True)
    return _run("LoRA parameter count", fn, body, strict)


def check_fold_lora(fn: Callable, strict: bool = False) -> bool:
    """``fn(weight, lora_A, lora_B, scaling) -> tensor``: the folded weight W + scaling · B A.

    ``weight`` (out, in), ``lora_A`` (r, in), ``lora_B`` (out, r). Compared with the weight that
    :func:`simo_lite.realign.fold_lora` (PEFT's merge_and_unload) writes into a small ViT.
    """
    from .realign import fold_lora

    def body(fn):
        enc, wrapper = _tiny_lora(4)
        g = _gen(18)
        layers = {}
        with torch.no_grad():
            for name in ("blocks.0.attn.qkv", "blocks.1.mlp.fc2"):
                layer = enc.get_submodule(name)
                layer.lora_B["default"].weight.copy_(0.1 * torch.randn(layer.lora_B["default"].weight.shape,
                                                                         generator=g))
                layers[name] = (layer.base_layer.weight.clone(), layer.lora_A["default"].weight.clone(),
                                layer.lora_B["default"].weight.clone(), float(layer.scaling["default"]))
        folded = fold_lora(wrapper)
        for name, (w, a, b, s) in layers.items():
            case = f"{name}: weight {tuple(w.shape)}, rank {a.shape[0]}, scaling {s}"
            _tensor(_call(fn, case, w.clone(), a.clone(), b.clone(), s), folded.get_submodule(name).weight,
                    "the folded weight", case, atol=1e-6, rtol=1e-5, check_dtype="exact")
            w2, s2 = w.clone(), 0.5
            case = f"{name} with scaling {s2}"
            _tensor(_call(fn, case, w2, a.clone(), b.clone(), s2), w + s2 * b @ a, "the folded weight", case,
                    atol=1e-6, rtol=1e-5, check_dtype="exact")
    return _run("folding LoRA", fn, body, strict)


# ----------------------------------------------------------------------------------------------
# 07 Joint MTL
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# 08 Task relationships
# ----------------------------------------------------------------------------------------------
def check_tall_mask(fn: Callable, strict: bool = False) -> bool:
    """``fn(tau_t, tau_mtl, lam) -> bool tensor``: TALL's mask |τ_t| ≥ λ · |τ_MTL − τ_t| for one tensor.

    Compared with :func:`simo_lite.merging.tall_masks` (τ_MTL = Σ_t τ_t).
    """
    from .merging import tall_masks

    def body(fn):
        tvs = _toy_tvs(19)
        tau_mtl = {k: sum(tv[k] for tv in tvs.values()) for k in tvs["task0"]}
        for lam in (0.2, 0.6, 1.0):
            masks = tall_masks(tvs, lam)
            for t in ("task0", "task2"):
                case = f"{t} of 3 random task vectors, tensor 'w' (4, 3), lam={lam}"
                _tensor(_call(fn, case, tvs[t]["w"].clone(), tau_mtl["w"].clone(), lam), masks[t]["w"], "the mask",
                        case, check_dtype="exact")
    return _run("TALL mask", fn, body, strict)


def check_tv_cosine(fn: Callable, strict: bool = False) -> bool:
    """``fn(task_vectors) -> (T, T) tensor``: cosine similarity of the flattened task vectors.

    All tensors of a task vector are flattened into one vector; rows and columns in the dict's task
    order. Compared with :func:`simo_lite.merging.tv_cosine`.
    """
    from .merging import tv_cosine

    def body(fn):
        tvs = _toy_tvs(20, 4)
        tvs["task3"] = {k: -2 * v for k, v in tvs["task0"].items()}       # cosine -1 with task0
        case = "4 task vectors of two tensors each (task3 = -2 x task0)"
        _tensor(_call(fn, case, {t: {k: v.clone() for k, v in tv.items()} for t, tv in tvs.items()}), tv_cosine(tvs),
                "the cosine matrix", case, atol=1e-5, check_dtype="none")
    return _run("task-vector cosine", fn, body, strict)


CHECKS: dict[str, Callable] = {n[len("check_"):]: f for n, f in globals().items() if n.startswith("check_")}
"""Every check by exercise name, e.g. ``CHECKS["linear_cka"]``."""


# ----------------------------------------------------------------------------------------------
# Concept questions
# ----------------------------------------------------------------------------------------------
def _q(question: str, options: dict[str, str], answer: str, explanations: dict[str, str]) -> dict:
    assert answer in options and set(explanations) == set(options), question
    return {"question": question, "options": options, "answer": answer, "explanations": explanations}


QUESTIONS: dict[str, dict] = {
    "00-q1": _q(
        "Why are the Scenes labels exact, with no label noise?",
        {"a": "They are rendered at a higher resolution and downsampled.",
         "b": "They are computed from the geometry of the first surface each camera ray hits.",
         "c": "A pretrained network labels every image and its errors are filtered out."},
        "b",
        {"a": "No supersampling happens: one ray per pixel. Downsampling would even blur class boundaries.",
         "b": "Right: the ray caster knows which surface it hit, where and with which normal, so every label "
              "is read off the geometry, not estimated from the shaded image.",
         "c": "No network is involved in making the data; that is what makes the labels exact."}),
    "00-q2": _q(
        "The floor covers 40 % of the pixels and the sphere class 3 %. How much does the sphere class count "
        "in mean IoU, compared with the floor?",
        {"a": "3/40 as much.", "b": "As much as the floor.", "c": "Not at all, it is too rare."},
        "b",
        {"a": "That would be a pixel-weighted average (pixel accuracy behaves like this); mIoU is not weighted.",
         "b": "Right: mIoU averages the per-class IoUs with equal weight, so rare classes matter as much as "
              "common ones (a class absent from prediction and target is skipped).",
         "c": "Only a class absent from both prediction and target is skipped; a rare class counts fully."}),
    "01-q1": _q(
        "A colleague probes the random encoder, finds a depth MAE of 1.3 m and concludes that random features "
        "already know depth. Best answer?",
        {"a": "Yes, random projections preserve depth.",
         "b": "Compare with a head that ignores the image: part of the score is the output bias and the depth prior.",
         "c": "Random encoders cannot be probed."},
        "b",
        {"a": "This over-interprets one number: without a floor to compare with, it says nothing about the features.",
         "b": "Right: the head starts from a sensible bias (4 m) and can learn position cues, so measure the "
              "no-image floor first; the gap to the foundation is what pretraining contributed.",
         "c": "False: section 4 of the notebook probes it."}),
    "01-q2": _q(
        "What does a linear probe on frozen features measure?",
        {"a": "How much of the task can be read from the features with an (almost) linear head.",
         "b": "How well the encoder can be fine-tuned on the task.",
         "c": "The encoder's pretraining loss."},
        "a",
        {"a": "Right: the encoder is frozen and the head is (almost) linear, so the score reflects what the "
              "features already expose.",
         "b": "Fine-tuning changes the encoder; a probe does not, so it says little about fine-tuning.",
         "c": "The pretraining loss is measured by the decoder on hidden patches, not by a probe."}),
    "02-q1": _q(
        "Why are the heads not part of the task vectors?",
        {"a": "They are too small to matter.",
         "b": "Each head is task-specific and kept as is next to the merged encoder: there is nothing to merge.",
         "c": "Their weights do not change during fine-tuning."},
        "b",
        {"a": "Size is not the reason: even a large head would not be merged.",
         "b": "Right: heads of different tasks have different output channels and meanings; the merged model "
              "keeps every expert's head.",
         "c": "False: the heads train in both stages (the probe and fine-tuning)."}),
    "02-q2": _q(
        "Why does the recipe train a linear probe before full fine-tuning (LP-FT)?",
        {"a": "A random head would send large, meaningless gradients into the pretrained encoder at the start.",
         "b": "The probe is cheaper, so it saves training time overall.",
         "c": "Full fine-tuning cannot train a head from scratch."},
        "a",
        {"a": "Right (Kumar et al. 2022): starting fine-tuning from a working head distorts the features less, "
              "so the encoder moves less, which is what gets merged.",
         "b": "The probe is an extra stage, so LP-FT costs more steps, not fewer.",
         "c": "It can; it just damages the pretrained features more while the head is still random."}),
    "03-q1": _q(
        "TIES (k = 1) and task arithmetic (α = 1) merge T identical task vectors τ. What do they give?",
        {"a": "Both give T·τ.", "b": "TIES gives τ, task arithmetic T·τ.", "c": "TIES gives τ/T, task arithmetic τ."},
        "b",
        {"a": "Task arithmetic sums, but TIES' disjoint mean averages the agreeing values.",
         "b": "Right: the mean of equal values is that value, the sum is T times it. So TIES' α lives on the "
              "scale of one task vector and TA's on the scale of 1/T of their sum.",
         "c": "The disjoint mean does not divide by T again: the average of T copies of τ is τ."}),
    "03-q2": _q(
        "Why is α chosen on the validation split and the test split evaluated only once, at the chosen α?",
        {"a": "The test split is larger, so it is slower to evaluate.",
         "b": "Choosing α by its test score would make the test score an optimistic, leaked estimate.",
         "c": "The validation split gives higher scores."},
        "b",
        {"a": "Speed is not the reason; in the smoke profile the test split is as small as validation.",
         "b": "Right: any choice made by looking at the test split fits it; the test number then no longer "
              "estimates performance on unseen data.",
         "c": "Scores on either split are what they are; the point is to keep the test split unseen."}),
    "04-q1": _q(
        "At one layer the merged features have CKA 1.0 with the expert's but twice their norm. Does the "
        "expert's head (a BatchNorm with frozen statistics, then a 1x1 convolution) read them correctly?",
        {"a": "Yes: CKA 1 means the features are identical.",
         "b": "No: CKA ignores a global scale, the frozen BatchNorm statistics do not.",
         "c": "Only if the token cosine is also 1."},
        "b",
        {"a": "CKA 1 means identical up to a rotation and a global scale, not identical.",
         "b": "Right: the head subtracts and divides by statistics fixed during training, so scaled features "
              "reach its convolution shifted and scaled.",
         "c": "Cosine ignores each token's norm too, so cosine 1 would not rule out the scale change either."}),
    "04-q2": _q(
        "Can an off-diagonal entry of the head-swap matrix exceed 100 %?",
        {"a": "No, each expert's own encoder is the best possible one for its head.",
         "b": "Yes, when another expert's encoder serves the head better than its own did.",
         "c": "Only on the diagonal."},
        "b",
        {"a": "Nothing guarantees that: an undertrained expert, or a related task, can do better.",
         "b": "Right: that is the head-swap view of a beneficial task relationship (the paper's Sec. 6.4).",
         "c": "The diagonal is exactly 100 % by construction; only off-diagonal entries can differ."}),
    "05-q1": _q(
        "Why can head realignment cache the encoder's features, but representation realignment cannot?",
        {"a": "The heads are smaller than the encoder.",
         "b": "The encoder's weights do not change during head realignment.",
         "c": "The validation split is small."},
        "b",
        {"a": "True but not the reason: a small head on a changing encoder still needs fresh features.",
         "b": "Right: a cache is valid while the function that produced it stays fixed; adapters inside the "
              "encoder change its features at every step.",
         "c": "That makes the cache small, but a large split could be cached on disk just as well."}),
    "05-q2": _q(
        "A merged model doubles the depth error of the expert (lower is better). What does depth contribute "
        "to Δm in the ratio form and in Eq. 2?",
        {"a": "−50 % and −100 %.", "b": "−100 % and −50 %.", "c": "−50 % in both."},
        "a",
        {"a": "Right: the ratio form uses B/M − 1 = 0.5 − 1, Eq. 2 uses −(M − B)/B = −1; the ratio form is "
              "bounded below by −100 %, Eq. 2 is not.",
         "b": "Swapped: the ratio form divides the expert's error by the model's.",
         "c": "The two forms agree only for small changes; a doubled error is not small."}),
    "06-q1": _q(
        "After training, which model can be deployed as a plain encoder of the merged model's size?",
        {"a": "The block-adapted one.", "b": "The LoRA one, after folding.", "c": "Both."},
        "b",
        {"a": "A block adapter transforms the block's output, which no single weight produces: it stays an "
              "extra module at inference.",
         "b": "Right: folding adds B·A into the weight it sits beside, so the encoder keeps exactly the merged "
              "encoder's tensors.",
         "c": "Only LoRA folds; block adapters keep their parameters at inference."}),
    "06-q2": _q(
        "Why is the adapter's up-projection B initialised with zeros?",
        {"a": "So that the adapted model starts exactly at the merged model.",
         "b": "To save memory.",
         "c": "So that no gradient reaches A during the first step."},
        "a",
        {"a": "Right: B·A = 0 at the start, so every adapted block computes what the merged block computed "
              "(the notebook checks the features are unchanged).",
         "b": "Zeros take as much memory as any other values.",
         "c": "A side effect, not the purpose: the point is to start from the merged model."}),
    "07-q1": _q(
        "The paper's Δ_MTL column is ...",
        {"a": "Eq. 2, the mean signed relative difference to the experts.",
         "b": "the mean normalised performance minus 1.",
         "c": "the drop of the worst task."},
        "b",
        {"a": "The paper writes Eq. 2 down, but its printed numbers are the ratio form (notebook 07 checks it "
              "on every quoted row).",
         "b": "Right: mean_t M̃_t − 1, with M̃ = M/B (B/M when lower is better).",
         "c": "Δ_MTL averages the tasks."}),
    "07-q2": _q(
        "Head realignment trains the T heads one after another. Run in parallel on T workers, its wall-clock "
        "would be about ...",
        {"a": "1/T of the sequential time (the slowest head).",
         "b": "the same as sequentially.",
         "c": "T times the sequential time."},
        "a",
        {"a": "Right: the heads are independent, so they parallelise perfectly (the shared feature cache is "
              "computed once before).",
         "b": "That would be true if the heads shared a gradient, but they do not.",
         "c": "Parallel workers do not add work."}),
    "08-q1": _q(
        "On the probe θ₀ + λ·τ_p, the encoder at λ = 1 is ...",
        {"a": "p's expert encoder.", "b": "the merged encoder.", "c": "the foundation encoder."},
        "a",
        {"a": "Right: θ₀ + (θ_p − θ₀) = θ_p, so p's own head is back at its expert's performance.",
         "b": "The merged encoder adds every task's vector; the probe adds one.",
         "c": "That is λ = 0."}),
    "08-q2": _q(
        "Two task vectors have cosine ≈ 0. Does that guarantee that adding τ_s does not hurt task t?",
        {"a": "Yes: orthogonal vectors do not interfere.",
         "b": "No: an orthogonal move in weight space can still change the features t's head relies on.",
         "c": "Only for TIES."},
        "b",
        {"a": "Orthogonality is about the weights; the heads read features, and the network is not linear in "
              "its weights.",
         "b": "Right: notebook 08 correlates the cosine with the measured effect, and the correlation is "
              "far from perfect.",
         "c": "The merging method does not change what the cosine measures."}),
}
"""Concept questions by id ``"NN-qK"``: question, options, the right answer and an explanation per option."""


def question(qid: str) -> None:
    """Print a concept question and its options."""
    q = _get(qid)
    print(f"{qid}: {q['question']}")
    for k, v in q["options"].items():
        print(f"  ({k}) {v}")


def _get(qid: str) -> dict:
    if qid not in QUESTIONS:
        raise KeyError(f"unknown question {qid!r}; known: {', '.join(QUESTIONS)}")
    return QUESTIONS[qid]


def answer(qid: str, choice: str | None, strict: bool = False) -> bool:
    """Grade the answer ``choice`` ("a", "b", ...) to question ``qid``; print right/wrong and why.

    ``None`` (not answered yet) prints the options and returns False without revealing the answer.
    """
    q = _get(qid)
    letters = ", ".join(f'"{k}"' for k in q["options"])
    if choice is None:
        print(f"{TODO} {qid}: not answered yet: set your answer to one of {letters} and run the cell again")
        ok = False
    elif not isinstance(choice, str) or choice.strip().lower().strip("()") not in q["options"]:
        print(f"{FAIL} {qid}: {choice!r} is not an option; choose one of {letters}")
        ok = False
    else:
        c = choice.strip().lower().strip("()")
        ok = c == q["answer"]
        print(f"{PASS + ' right' if ok else FAIL + ' not quite'}: ({c}) {q['options'][c]}")
        print(f"  {q['explanations'][c]}")
    if strict and not ok:
        raise AssertionError(f"{qid}: wrong or missing answer {choice!r}")
    return ok
