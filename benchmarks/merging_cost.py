"""``merging`` section: time and peak memory of the merges on random state dicts with ViT-B/16's
shapes (85.8M parameters), for several task counts. Every case runs in a fresh Python process; see
:func:`merge_case` for how memory is measured.

The cases (:data:`CASES`) are data: a name, a label and how to build the merge from
``simo_lite.merging`` (its registry ``MERGE_METHODS`` through ``merging.merge``, or the TALL functions,
which build one encoder per task and are not in the registry).

    python -m benchmarks.merging_cost '{"method": "ta", "n_tasks": 2, "shape_kw": {}, "seed": 0}'

runs one case in this process and prints its row as JSON (what :func:`merge_case_subprocess` calls).
"""
from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from simo_lite import merging

from benchmarks.common import REPO, fmt_bytes, md_table


# ----------------------------------------------------------------------------------------------
# The cases
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MergeCase:
    """One benchmarked merge.

    Attributes:
        label: how tables name it.
        build: ``build(pretrained, task_vectors)`` -> a zero-argument callable that runs the merge and
            returns its result (a state dict, or TALL's masks).
    """
    label: str
    build: Callable[[dict, dict], Callable[[], dict]]


def registry_case(method: str, **kwargs: Any) -> MergeCase:
    """A case dispatched through ``merging.merge(method, pretrained, tvs, **kwargs)``; its label is the
    registry's, with the method's options appended ("TIES (k=0.2)")."""
    spec = merging.MERGE_METHODS[method]
    opts = [f"{o.split('_', 1)[-1]}={kwargs[o]}" for o in spec.options if o in kwargs]
    label = spec.label + (f" ({', '.join(opts)})" if opts else "")
    return MergeCase(label, lambda pretrained, tvs: lambda: merging.merge(method, pretrained, tvs, **kwargs))


CASES: dict[str, MergeCase] = {
    "ta": registry_case("ta", alpha=0.3),
    "ties_k0.2": registry_case("ties", alpha=1.0, ties_k=0.2),
    "ties_k1.0": registry_case("ties", alpha=1.0, ties_k=1.0),
    "tall_masks": MergeCase("TALL masks (all tasks)",
                            lambda pretrained, tvs: lambda: merging.tall_masks(tvs, lam=0.6)),
    "tall_one_task": MergeCase("TALL encoder (one task)",
                               lambda pretrained, tvs: lambda: merging.tall_merged(pretrained, tvs, next(iter(tvs)),
                                                                                   lam=0.6)),
}
QUICK_CASES = ("ta", "ties_k0.2", "tall_masks")


def case(name: str) -> MergeCase:
    """The case called ``name`` in :data:`CASES` (ValueError listing the valid names otherwise)."""
    if name not in CASES:
        raise ValueError(f"unknown merge benchmark method {name!r}; valid: {', '.join(CASES)}")
    return CASES[name]


def label(name: str) -> str:
    """The table label of case ``name`` (the name itself for an unknown case)."""
    return CASES[name].label if name in CASES else name


# ----------------------------------------------------------------------------------------------
# The encoder's shapes and random inputs
# ----------------------------------------------------------------------------------------------
def vit_shapes(embed_dim: int = 768, depth: int = 12, patch_size: int = 16, img_size: int = 224,
               in_chans: int = 3, mlp_ratio: float = 4.0) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of a timm ``VisionTransformer`` with a CLS token and no classifier (num_classes=0),
    in ``state_dict`` order. The defaults are ViT-B/16 at 224 px: 85,798,656 parameters."""
    C, H = embed_dim, int(embed_dim * mlp_ratio)
    n_tok = (img_size // patch_size) ** 2 + 1
    shapes: dict[str, tuple[int, ...]] = {"cls_token": (1, 1, C), "pos_embed": (1, n_tok, C),
                                          "patch_embed.proj.weight": (C, in_chans, patch_size, patch_size),
                                          "patch_embed.proj.bias": (C,)}
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({b + "norm1.weight": (C,), b + "norm1.bias": (C,),
                       b + "attn.qkv.weight": (3 * C, C), b + "attn.qkv.bias": (3 * C,),
                       b + "attn.proj.weight": (C, C), b + "attn.proj.bias": (C,),
                       b + "norm2.weight": (C,), b + "norm2.bias": (C,),
                       b + "mlp.fc1.weight": (H, C), b + "mlp.fc1.bias": (H,),
                       b + "mlp.fc2.weight": (C, H), b + "mlp.fc2.bias": (C,)})
    shapes.update({"norm.weight": (C,), "norm.bias": (C,)})
    return shapes


QUICK_SHAPES = dict(embed_dim=256, depth=4, patch_size=16, img_size=64)      # ~3.2M parameters, ~13 MB


def n_params(shapes: dict) -> int:
    """Number of parameters (entries) of a ``{name: shape}`` table."""
    return sum(math.prod(s) for s in shapes.values())


def _random_state_dicts(shapes: dict, n_tasks: int, seed: int = 0):
    """θ_0 (std 0.02) and ``n_tasks`` task vectors (std 1e-3), allocated once and filled in place.

    Values come from one pool of normal samples read at a different offset for every tensor and task
    (a full normal draw per entry would make input creation dominate the benchmark's run time); the
    pool is freed before anything is measured. No temporaries are left behind, so the heap is clean.
    """
    import torch
    g = torch.Generator().manual_seed(seed)
    pool_n = 1 << 22
    pool = torch.randn(pool_n, generator=g)

    def fill(shape, std, k):
        t = torch.empty(shape)
        flat = t.view(-1)
        off = (k * 7919 + 104729) % pool_n
        pos = 0
        while pos < flat.numel():
            chunk = min(pool_n - off, flat.numel() - pos)
            flat[pos:pos + chunk].copy_(pool[off:off + chunk])
            pos += chunk
            off = 0
        return t.mul_(std)

    k = 0
    pretrained = {}
    for name, s in shapes.items():
        pretrained[name] = fill(s, 0.02, k)
        k += 1
    tvs = {}
    for t in range(n_tasks):
        tvs[f"task{t}"] = {}
        for name, s in shapes.items():
            tvs[f"task{t}"][name] = fill(s, 1e-3, k)
            k += 1
    del pool
    return pretrained, tvs


# ----------------------------------------------------------------------------------------------
# Memory measurement
# ----------------------------------------------------------------------------------------------
def _rss_bytes() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _hwm_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _tensor_bytes(obj) -> int:
    import torch
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    return 0


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3       # glibc mallopt parameters


def _mallopt(mmap_threshold: int, trim_threshold: int) -> bool:
    """Set glibc's malloc thresholds (False where the C library has no mallopt)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and \
            bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        return False


# ----------------------------------------------------------------------------------------------
# One case, and the section
# ----------------------------------------------------------------------------------------------
def merge_case(method: str, n_tasks: int, shapes: dict, seed: int = 0, repeat_under_s: float = 10.0) -> dict:
    """Time and peak memory of one merge (case ``method`` of :data:`CASES`), measured in this process
    (call it in a fresh one). Returns the row: seconds, bytes and multiples of one float32 encoder.

    Memory: glibc's mmap threshold is first fixed at 64 KiB, so every tensor buffer is its own mapping
    and goes back to the OS when freed (by default glibc raises the threshold as large blocks are
    freed, then keeps freed temporaries in its heap: the process' RSS then grows by a varying amount,
    1.6x to 4.3x an encoder for the same TALL case in our runs). The inputs (θ_0 and the task vectors)
    are built, the kernel's peak-RSS counter is reset to the current RSS (``/proc/self/clear_refs``)
    and the merge runs: ``peak_extra_bytes`` = peak RSS during the merge − RSS before it, i.e. the
    merge's live tensors at their worst moment (result and temporaries; tracemalloc would not see
    them, torch's CPU tensors bypass Python's allocator). Where the counter cannot be reset,
    ``ru_maxrss`` is used (input creation allocates no temporaries, so it is the same peak).

    Time: ``wall_cold_s`` is that first run, every buffer freshly mapped (first-touch page faults
    included). A merge that took less than ``repeat_under_s`` then runs twice more with glibc's usual
    32 MiB threshold, reusing its heap: ``wall_warm_s`` is the faster of those two. ``wall_s`` is the
    warm time where measured, else the cold one.
    """
    import resource

    import torch
    build = case(method).build
    fixed = _mallopt(64 * 1024, 128 * 1024)
    pretrained, tvs = _random_state_dicts(shapes, n_tasks, seed)
    fn = build(pretrained, tvs)
    gc.collect()
    encoder_bytes = _tensor_bytes(pretrained)
    inputs_bytes = encoder_bytes + _tensor_bytes(tvs)
    base = _rss_bytes()
    reset = _reset_hwm()
    t0 = time.perf_counter()
    out = fn()
    cold = time.perf_counter() - t0
    if reset and _hwm_bytes() is not None:
        peak, how = _hwm_bytes(), "VmHWM after reset (/proc/self/clear_refs)"
    else:
        peak, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss"
    how += ", glibc mmap threshold fixed at 64 KiB" if fixed else ", default allocator"
    result_bytes = _tensor_bytes(out)
    extra = None if base is None else max(peak - base, 0)
    warm = None
    if cold < repeat_under_s:
        _mallopt(32 * 2 ** 20, 64 * 2 ** 20)
        for _ in range(2):
            del out
            gc.collect()
            t0 = time.perf_counter()
            out = fn()
            warm = min(warm or float("inf"), time.perf_counter() - t0)
    return {"method": method, "n_tasks": n_tasks, "params": n_params(shapes),
            "wall_s": warm if warm is not None else cold, "wall_cold_s": cold, "wall_warm_s": warm,
            "encoder_bytes": encoder_bytes, "inputs_bytes": inputs_bytes, "result_bytes": result_bytes,
            "rss_before_bytes": base, "peak_rss_bytes": peak, "peak_extra_bytes": extra,
            "peak_extra_x_encoder": None if extra is None else extra / encoder_bytes,
            "result_x_encoder": result_bytes / encoder_bytes, "peak_method": how,
            "threads": torch.get_num_threads()}


def run_spec(spec: dict) -> dict:
    """:func:`merge_case` of a spec ``{"method", "n_tasks", "shape_kw", "seed"}`` (the child's job)."""
    return merge_case(spec["method"], spec["n_tasks"], vit_shapes(**spec["shape_kw"]), spec["seed"])


def merge_case_subprocess(method: str, n_tasks: int, shape_kw: dict, seed: int = 0, timeout: float = 600) -> dict:
    """:func:`merge_case` in a fresh Python process (no heap left over from earlier cases); its row, or
    ``{"method", "n_tasks", "error": [last line of the child's stderr]}``."""
    spec = json.dumps({"method": method, "n_tasks": n_tasks, "shape_kw": shape_kw, "seed": seed})
    proc = subprocess.run([sys.executable, "-m", "benchmarks.merging_cost", spec],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        return {"method": method, "n_tasks": n_tasks, "error": proc.stderr.strip().splitlines()[-1:] or
                [f"exit {proc.returncode}"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


FULL = dict(n_tasks=(2, 3, 5))
QUICK = dict(n_tasks=(2,), methods=QUICK_CASES, shape_kw=QUICK_SHAPES)      # seconds, for the tests


def run(n_tasks: Sequence[int] = (2, 3, 5), methods: Sequence[str] = tuple(CASES), shape_kw: dict | None = None,
        seed: int = 0,
        fresh_process: bool = True) -> dict:
    """Every case of ``methods`` (names in :data:`CASES`) at every task count of ``n_tasks``, on an
    encoder of :func:`vit_shapes` ``(**shape_kw)`` (default ViT-B/16).

    Returns ``{"encoder", "shape_kw", "params", "encoder_bytes" (float32), "fresh_process", "rows"
    (:func:`merge_case`'s, plus ``case_wall_s``: seconds the case took, process start included),
    "memory_note"}``."""
    shape_kw = dict(shape_kw or {})
    shapes = vit_shapes(**shape_kw)
    rows = []
    for t in n_tasks:
        for m in methods:
            t0 = time.perf_counter()
            row = merge_case_subprocess(m, t, shape_kw, seed) if fresh_process else merge_case(m, t, shapes, seed)
            row["case_wall_s"] = time.perf_counter() - t0
            rows.append(row)
    return {"encoder": "ViT-B/16 (timm vit_base_patch16_224, num_classes=0)" if not shape_kw else
            f"ViT {shape_kw}", "shape_kw": shape_kw, "params": n_params(shapes),
            "encoder_bytes": 4 * n_params(shapes), "fresh_process": fresh_process, "rows": rows,
            "memory_note": "peak extra RSS of the merge in a fresh process (θ_0 and task vectors already "
                           "allocated; glibc mmap threshold fixed at 64 KiB so RSS follows live tensors), in "
                           "bytes and as a multiple of one float32 encoder; see merge_case"}


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------
def markdown(section: dict) -> str:
    """A line on the encoder, then one table row per case: cold and warm seconds, peak extra RSS,
    result and inputs held (MiB, and multiples of one float32 encoder)."""
    rows = []
    for r in section["rows"]:
        if "error" in r:
            rows.append([label(r["method"]), r["n_tasks"], "error: " + " ".join(r["error"]), "", "", "", ""])
            continue
        warm = r.get("wall_warm_s")
        rows.append([label(r["method"]), r["n_tasks"], f"{r['wall_cold_s']:.2f}",
                     "–" if warm is None else f"{warm:.2f}",
                     f"{fmt_bytes(r['peak_extra_bytes'])} ({r['peak_extra_x_encoder']:.2f}×)",
                     f"{fmt_bytes(r['result_bytes'])} ({r['result_x_encoder']:.2f}×)",
                     f"{fmt_bytes(r['inputs_bytes'])}"])
    return (f"{section['encoder']}: {section['params']:,} parameters, one float32 encoder = "
            f"{fmt_bytes(section['encoder_bytes'])}\n\n"
            + md_table(["method", "tasks", "seconds (cold)", "seconds (warm)", "peak extra RSS (× encoder)",
                        "result (× encoder)",
                        "inputs held (θ_0 + task vectors)"], rows))


METHOD_NOTE = ("Memory is the peak resident-set growth of a fresh Python process while it merges, its "
               "inputs (θ_0 and the task vectors) already allocated: the kernel's peak counter is reset "
               "just before the merge (`/proc/self/clear_refs`), and glibc's mmap threshold is fixed at "
               "64 KiB so that freed tensors go back to the OS and the figure follows the merge's live "
               "tensors (result and temporaries) instead of allocator caching, which otherwise adds a "
               "varying amount. tracemalloc would miss torch's CPU tensors. \"× encoder\" divides by one "
               "float32 encoder. Cold time: the first run, every buffer freshly mapped; warm time: best "
               "of two further runs with glibc's usual thresholds (only for merges under 10 s).")


def reading(section: dict) -> list[str]:
    """Markdown bullet lines, one per case: peak memory (× encoder) and cold seconds at the fewest and
    most tasks measured, then a blank line; [] when no case succeeded."""
    rows = [r for r in section["rows"] if "error" not in r]
    if not rows:
        return []
    lines = []
    for m in CASES:
        rs = sorted((r for r in rows if r["method"] == m), key=lambda r: r["n_tasks"])
        if not rs:
            continue
        lo, hi = rs[0], rs[-1]
        lines.append(f"- {CASES[m].label}: peak {lo['peak_extra_x_encoder']:.2f}× an encoder at "
                     f"{lo['n_tasks']} tasks" + (f", {hi['peak_extra_x_encoder']:.2f}× at {hi['n_tasks']}; "
                                                  f"cold {lo['wall_cold_s']:.2f} s → {hi['wall_cold_s']:.2f} s"
                                                  if hi is not lo else f", cold {lo['wall_cold_s']:.2f} s")
                     + f" (it reads inputs of {1 + lo['n_tasks']}"
                     + (f"–{1 + hi['n_tasks']}" if hi is not lo else "") + "× an encoder)")
    return lines + [""]


if __name__ == "__main__":                       # one case, in this (fresh) process: its row as JSON
    print(json.dumps(run_spec(json.loads(sys.argv[1]))))
