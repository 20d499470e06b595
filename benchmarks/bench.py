"""simo_lite benchmarks: every measured figure as a Markdown table on stdout and in one JSON file.

    python benchmarks/bench.py                       # cpu course timings (run or reused) + everything else
    python benchmarks/bench.py --skip-course         # skip the notebook timings (minutes -> ~3 min)
    python benchmarks/bench.py --profile smoke cpu   # time the course in both profiles
    python benchmarks/bench.py --quick --skip-course # tiny sizes, seconds (what the tests run)

Sections (keys of ``runs/bench/bench.json``):

``scenes``        SIMO-lite Scenes rendering speed, scenes/s at 64 and 128 px (``simo_lite.scenes.benchmark``).
``course``        wall-clock of every notebook per profile, from ``<run_dir>/runtimes.json`` written by
                  ``python -m simo_lite.course run``; the run dir is ``runs/bench/course-<profile>`` and a
                  complete one is reused (``--fresh-course`` re-runs it). Budgets: smoke <= 60 s per
                  notebook, the whole cpu course <= 15 min.
``merging``       time and peak memory of task arithmetic, TIES (k=0.2, k=1.0) and TALL masks on random
                  state dicts with ViT-B/16's shapes (85.8M parameters), for 2, 3 and 5 tasks. Every case
                  runs in a fresh Python process; see ``merge_case`` for how memory is measured.
``head_realign``  head realignment with cached features against re-running the encoder every step: same
                  batches, same metrics (to a tolerance), time ratio.
``table4``        realignment against joint MTL (the paper's Table 4): steps, samples, trainable parameters,
                  |D|, wall-clock and Δm, read from a course run's ``results/table-<tasks>.json`` (nothing
                  is retrained here).

Each section records its own settings; the file also records the date, host, CPU count, torch version,
device and git commit. It is written atomically.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:              # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

SCHEMA_VERSION = 1
SMOKE_BUDGET_S = 60.0                      # per notebook, smoke profile (tests/test_notebooks.py)
CPU_COURSE_BUDGET_S = 15 * 60.0            # the whole cpu course on 2 cores (README / issue 6)
MERGE_METHODS = ("ta", "ties_k0.2", "ties_k1.0", "tall_masks", "tall_one_task")
MERGE_LABELS = {"ta": "task arithmetic", "ties_k0.2": "TIES (k=0.2)", "ties_k1.0": "TIES (k=1.0)",
                "tall_masks": "TALL masks (all tasks)", "tall_one_task": "TALL encoder (one task)"}


# ----------------------------------------------------------------------------------------------
# Environment
# ----------------------------------------------------------------------------------------------
def git_commit(repo: Path = REPO) -> dict:
    """HEAD's hash and whether the work tree has uncommitted changes (None when git is unavailable)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": head or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_info() -> dict:
    import torch
    dev = "cpu"
    if torch.cuda.is_available():
        dev = f"cuda ({torch.cuda.get_device_name(0)})"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "hostname": socket.gethostname(), "cpu_count": os.cpu_count(), "cpu_usable": usable,
            "cpu_model": cpu_model(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "device": dev,
            "python": platform.python_version(), "platform": platform.platform(), **git_commit()}


def write_json_atomic(path: Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------
# Markdown helpers
# ----------------------------------------------------------------------------------------------
def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    return f"{n / 2 ** 20:,.0f} MiB" if n >= 2 ** 20 else f"{n / 2 ** 10:,.0f} KiB"


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------
def bench_scenes(sizes=(64, 128), n: int = 1000, repeats: int = 2) -> dict:
    """Scenes rendered per second (best of ``repeats`` runs of ``n`` scenes) at each size."""
    import torch

    from simo_lite import scenes
    rows = []
    for s in sizes:
        t0 = time.perf_counter()
        rate = scenes.benchmark(size=s, n=n, repeats=repeats)
        rows.append({"size": s, "scenes_per_s": rate, "n": n, "repeats": repeats,
                     "wall_s": time.perf_counter() - t0})
    return {"threads": torch.get_num_threads(), "rows": rows}


def scenes_markdown(sec: dict) -> str:
    return md_table(["image size", "scenes/s", "scenes per run", "best of"],
                    [[f"{r['size']}×{r['size']}", f"{r['scenes_per_s']:,.0f}", r["n"], r["repeats"]]
                     for r in sec["rows"]]) + f"\n\n({sec['threads']} torch threads)"


# ----------------------------------------------------------------------------------------------
# Course timings
# ----------------------------------------------------------------------------------------------
def notebook_names() -> list[str]:
    from simo_lite import course
    return [p.name for p in course.notebooks()]


def course_command(profile: str, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "simo_lite.course", "run", "--profile", profile, "--run-dir", str(run_dir)]


def read_course_timings(profile: str, run_dir: Path, names: list[str] | None = None) -> dict | None:
    """The timings of a complete course run in ``run_dir`` (None if runtimes.json lacks a notebook)."""
    path = Path(run_dir) / "runtimes.json"
    if not path.exists():
        return None
    runtimes = json.loads(path.read_text())
    names = names if names is not None else notebook_names()
    if not set(names) <= set(runtimes):
        return None
    meta_path = Path(run_dir) / "bench-meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    per_nb = {n: float(runtimes[n]) for n in names}
    total = sum(per_nb.values())
    rows = []
    for n, s in per_nb.items():
        if profile == "smoke":
            rows.append({"notebook": n, "wall_s": s, "budget_s": SMOKE_BUDGET_S, "pass": s <= SMOKE_BUDGET_S})
        else:
            rows.append({"notebook": n, "wall_s": s, "budget_s": None, "pass": None})
    budget_total = CPU_COURSE_BUDGET_S if profile == "cpu" else None
    mtime = _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).isoformat(timespec="seconds")
    return {"profile": profile, "run_dir": str(run_dir), "rows": rows, "total_s": total,
            "total_budget_s": budget_total,
            "total_pass": (total <= budget_total) if budget_total else all(r["pass"] for r in rows),
            "measured_at": meta.get("date", mtime), "host": meta.get("hostname"), "cpu_count": meta.get("cpu_count"),
            "command": meta.get("command", " ".join(["python"] + course_command(profile, run_dir)[1:]))}


def run_course(profile: str, run_dir: Path, fresh: bool = False) -> dict:
    """Run the course in ``profile`` into ``run_dir`` (reusing a complete earlier run unless ``fresh``).

    The scene cache is the run dir's own (``<run_dir>/cache``), so a fresh run renders its data like a
    fresh clone does.
    """
    run_dir = Path(run_dir)
    names = notebook_names()
    if not fresh:
        done = read_course_timings(profile, run_dir, names)
        if done is not None:
            done["reused"] = True
            return done
    if run_dir.exists():                           # partial or forced: start clean so nothing is reused
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    env = {**os.environ, "CI": "1", "SIMO_LITE_CACHE": str(run_dir / "cache"), "PYTHONUNBUFFERED": "1"}
    cmd = course_command(profile, run_dir)
    info = env_info()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env)
    wall = time.perf_counter() - t0
    shown = " ".join(["python"] + cmd[1:])
    write_json_atomic(run_dir / "bench-meta.json", {**info, "command": shown, "returncode": proc.returncode,
                                                    "wall_s": wall})
    out = read_course_timings(profile, run_dir, names)
    if proc.returncode != 0 or out is None:
        return {"profile": profile, "run_dir": str(run_dir), "error": f"course run failed (exit {proc.returncode})",
                "command": shown, "rows": [], "reused": False}
    out.update(reused=False, process_wall_s=wall)
    return out


def course_markdown(sec: dict) -> str:
    if sec.get("error"):
        return f"{sec['profile']}: {sec['error']} (`{sec['command']}`)"
    rows = []
    for r in sec["rows"]:
        verdict = "–" if r["pass"] is None else ("pass" if r["pass"] else "FAIL")
        rows.append([r["notebook"], f"{r['wall_s']:.1f}", "–" if r["budget_s"] is None else f"{r['budget_s']:.0f}",
                     verdict])
    tb = sec.get("total_budget_s")
    total_verdict = "pass" if sec["total_pass"] else "FAIL"
    rows.append(["**total**", f"{sec['total_s']:.1f}", f"{tb:.0f}" if tb else "–", total_verdict])
    head = (f"profile `{sec['profile']}`, {'reused' if sec.get('reused') else 'run now'}; measured "
            f"{sec.get('measured_at', '?')}; `{sec['command']}`")
    return head + "\n\n" + md_table(["notebook", "seconds", "budget s", "verdict"], rows)


# ----------------------------------------------------------------------------------------------
# Merging on a ViT-B-sized encoder
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
    return sum(math.prod(s) for s in shapes.values())


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


def _merge_fn(method: str, pretrained: dict, tvs: dict):
    from simo_lite import merging
    if method == "ta":
        return lambda: merging.task_arithmetic(pretrained, tvs, alpha=0.3)
    if method == "ties_k0.2":
        return lambda: merging.ties(pretrained, tvs, k=0.2, alpha=1.0)
    if method == "ties_k1.0":
        return lambda: merging.ties(pretrained, tvs, k=1.0, alpha=1.0)
    if method == "tall_masks":
        return lambda: merging.tall_masks(tvs, lam=0.6)
    if method == "tall_one_task":
        return lambda: merging.tall_merged(pretrained, tvs, next(iter(tvs)), lam=0.6)
    raise ValueError(f"unknown merge benchmark method {method!r}; valid: {', '.join(MERGE_METHODS)}")


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


def merge_case(method: str, n_tasks: int, shapes: dict, seed: int = 0, repeat_under_s: float = 10.0) -> dict:
    """Time and peak memory of one merge, measured in this process (call it in a fresh one).

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
    fixed = _mallopt(64 * 1024, 128 * 1024)
    pretrained, tvs = _random_state_dicts(shapes, n_tasks, seed)
    fn = _merge_fn(method, pretrained, tvs)
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


def merge_case_subprocess(method: str, n_tasks: int, shape_kw: dict, seed: int = 0, timeout: float = 600) -> dict:
    """:func:`merge_case` in a fresh Python process (no heap left over from earlier cases)."""
    spec = json.dumps({"method": method, "n_tasks": n_tasks, "shape_kw": shape_kw, "seed": seed})
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_merge-case", spec],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        return {"method": method, "n_tasks": n_tasks, "error": proc.stderr.strip().splitlines()[-1:] or
                [f"exit {proc.returncode}"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_merging(n_tasks=(2, 3, 5), methods=MERGE_METHODS, shape_kw: dict | None = None, seed: int = 0,
                  fresh_process: bool = True) -> dict:
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


def merging_markdown(sec: dict) -> str:
    rows = []
    for r in sec["rows"]:
        if "error" in r:
            rows.append([MERGE_LABELS.get(r["method"], r["method"]), r["n_tasks"], "error: " + " ".join(r["error"]),
                         "", "", "", ""])
            continue
        warm = r.get("wall_warm_s")
        rows.append([MERGE_LABELS.get(r["method"], r["method"]), r["n_tasks"], f"{r['wall_cold_s']:.2f}",
                     "–" if warm is None else f"{warm:.2f}",
                     f"{fmt_bytes(r['peak_extra_bytes'])} ({r['peak_extra_x_encoder']:.2f}×)",
                     f"{fmt_bytes(r['result_bytes'])} ({r['result_x_encoder']:.2f}×)",
                     f"{fmt_bytes(r['inputs_bytes'])}"])
    return (f"{sec['encoder']}: {sec['params']:,} parameters, one float32 encoder = "
            f"{fmt_bytes(sec['encoder_bytes'])}\n\n"
            + md_table(["method", "tasks", "seconds (cold)", "seconds (warm)", "peak extra RSS (× encoder)",
                        "result (× encoder)",
                        "inputs held (θ_0 + task vectors)"], rows))


# ----------------------------------------------------------------------------------------------
# Head realignment: cached features vs the encoder every step
# ----------------------------------------------------------------------------------------------
def bench_head_realign(profile: str = "cpu", steps: int = 100, tasks: str = "nyu3", n_test: int | None = None,
                       seed: int = 0, tol: float = 1e-3) -> dict:
    """Realign the heads of (foundation encoder + fresh heads) both ways on the profile's val split.

    Same steps, batches and seeds on both paths; the test metrics must agree to ``tol`` (relative).
    Uses the shipped foundation encoder when there is one for the profile, else the random init.
    """
    import torch

    from simo_lite import profiles
    from simo_lite.foundation import SHIPPED_DIR, load_foundation, random_encoder_state
    from simo_lite.realign import head_realign
    from simo_lite.scenes import load_split
    from simo_lite.tasks import get_tasks
    from simo_lite.training import build_model, evaluate

    P = profiles.get(profile)
    names = get_tasks(tasks)
    t_setup = time.perf_counter()
    if (SHIPPED_DIR / f"foundation-{P.name}.safetensors").exists():
        encoder_state, _ = load_foundation(P)
        encoder = "shipped foundation encoder"
    else:
        encoder_state, encoder = random_encoder_state(P, seed), "random-init encoder (no shipped foundation)"
    val = load_split("val", P.n_val, size=P.image_size, seed=seed, max_objects=P.max_objects)
    n_test = min(n_test or P.n_test, P.n_test)
    test = {k: v[:n_test] for k, v in load_split("test", P.n_test, size=P.image_size, seed=seed,
                                                   max_objects=P.max_objects).items()}
    model = build_model(encoder_state, P, names, seed=seed).eval()
    setup_s = time.perf_counter() - t_setup
    out = {"profile": P.name, "tasks": list(names), "steps_per_head": steps, "batch_size": P.batch_size,
           "n_val": P.n_val, "n_test": n_test, "encoder": encoder, "encoder_params":
           sum(p.numel() for p in model.encoder.parameters()), "setup_s": setup_s,
           "threads": torch.get_num_threads(), "tolerance": tol}
    for cached in (True, False):
        t0 = time.perf_counter()
        new, rec = head_realign(model, val, names, steps=steps, lr=P.lr_head, batch_size=P.batch_size, seed=seed,
                                cached=cached)
        wall = time.perf_counter() - t0
        key = "cached" if cached else "uncached"
        out[key] = {"wall_s": wall, "record_wall_s": rec.wall_s, "steps": rec.steps, "samples": rec.samples,
                    "trainable_params": rec.trainable_params, "test": evaluate(new, test, names)}
    c, u = out["cached"]["test"], out["uncached"]["test"]
    out["max_rel_diff"] = max(abs(c[t] - u[t]) / max(abs(c[t]), 1e-12) for t in names)
    out["same_results"] = out["max_rel_diff"] <= tol and out["cached"]["steps"] == out["uncached"]["steps"]
    out["speedup"] = out["uncached"]["wall_s"] / out["cached"]["wall_s"]
    return out


def head_realign_markdown(sec: dict) -> str:
    rows = []
    for key in ("cached", "uncached"):
        r = sec[key]
        rows.append([key, r["steps"], r["samples"], f"{r['trainable_params']:,}", f"{r['wall_s']:.2f}",
                     ", ".join(f"{t} {v:.4g}" for t, v in r["test"].items())])
    return (md_table(["features", "steps", "samples", "trainable params", "seconds", "test metrics"], rows)
            + f"\n\nuncached / cached time: **{sec['speedup']:.2f}×**; max relative metric difference "
              f"{sec['max_rel_diff']:.1e} (tolerance {sec['tolerance']:g}: "
              f"{'same results' if sec['same_results'] else 'DIFFERENT results'}); profile `{sec['profile']}`, "
              f"{sec['n_val']} val images, {sec['steps_per_head']} steps per head, metrics on {sec['n_test']} test "
              f"images, {sec['encoder']} "
              f"({sec['encoder_params']:,} parameters)")


# ----------------------------------------------------------------------------------------------
# Table 4: realignment vs joint MTL, from a course run's results
# ----------------------------------------------------------------------------------------------
TABLE4_ROWS = ("experts", "mtl", "ta+head", "ta+repr", "ta+lora", "ties+head", "ties+repr", "ties+lora")


def find_results_dir(candidates) -> Path | None:
    for c in candidates:
        if c and (Path(c) / "results").is_dir() and any((Path(c) / "results").glob("table-*.json")):
            return Path(c)
    return None


def table4_from_run(run_dir: Path, profile: str | None = None) -> dict:
    """Cost rows of every ``results/table-<tasks>.json`` in ``run_dir`` (written by
    ``Experiment.results_table``: course notebook 07, or ``python -m simo_lite.experiment``)."""
    from simo_lite import profiles
    run_dir = Path(run_dir)
    res = run_dir / "results"
    sets = []
    for path in sorted(res.glob("table-*.json")):
        table = {r["row"]: r for r in json.loads(path.read_text())}
        tasks = path.stem[len("table-"):]
        prof = profile or _profile_of(run_dir, tasks)
        n_train = n_val = D_source = None
        nb07 = res / "07_joint_mtl.json"
        if nb07.exists():
            j = json.loads(nb07.read_text())
            if "+".join(j.get("tasks", [])) == tasks:
                n_train, n_val, D_source = j.get("n_train"), j.get("n_realign"), str(nb07)
        if n_train is None and prof in profiles.PROFILES:
            n_train, n_val = profiles.PROFILES[prof].n_train, profiles.PROFILES[prof].n_val
            D_source = f"the {prof} profile (n_train, n_val)"
        n_tasks = len(tasks.split("+"))
        rows = []
        for name in TABLE4_ROWS:
            if name not in table:
                continue
            r = table[name]
            c = r["cost"]
            D = n_train if name in ("experts", "mtl") else n_val
            rows.append({"row": name, "steps": c["steps"], "samples": c["samples"],
                         "trainable_params": c["trainable_params"], "wall_s": c["wall_s"], "D": D,
                         "delta_m_ratio": r["delta_m_ratio"], "delta_m_relative": r["delta_m_relative"],
                         "per_expert_steps": c["steps"] / n_tasks if name == "experts" else None})
        mtl = next((r for r in rows if r["row"] == "mtl"), None)
        for r in rows:
            r["pct_of_mtl"] = None if mtl is None else {
                k: (100 * r[k] / mtl[k] if mtl[k] else None) for k in ("steps", "samples", "trainable_params",
                                                                     "wall_s", "D") if r[k] is not None}
        sets.append({"tasks": tasks, "profile": prof, "source": str(path), "n_train": n_train, "n_val": n_val,
                     "D_source": D_source, "rows": rows})
    return {"run_dir": str(run_dir), "sets": sets}


def _profile_of(run_dir: Path, tasks: str) -> str | None:
    tr = run_dir / "results" / f"training-{tasks}.json"
    if tr.exists():
        return json.loads(tr.read_text()).get("profile")
    for nb in ("07_joint_mtl.json", "05_head_realignment.json"):
        p = run_dir / "results" / nb
        if p.exists():
            return json.loads(p.read_text()).get("profile")
    head = run_dir.name.split("-")
    if head and head[0] in ("smoke", "cpu", "gpu"):
        return head[0]
    if len(head) > 1 and head[-1] in ("smoke", "cpu", "gpu"):      # runs/bench/course-<profile>
        return head[-1]
    return None


def table4_markdown(sec: dict) -> str:
    parts = []
    for s in sec["sets"]:
        rows = []
        for r in s["rows"]:
            p = r["pct_of_mtl"] or {}

            def cell(v, k, fmt):
                return f"{fmt(v)} ({p[k]:.0f}%)" if p.get(k) is not None and r["row"] != "mtl" else fmt(v)
            steps = cell(r["steps"], "steps", lambda v: f"{v:,}")
            if r["per_expert_steps"] is not None:
                steps += f"; {r['per_expert_steps']:,.0f} per expert"
            rows.append([r["row"], steps,
                         cell(r["samples"], "samples", lambda v: f"{v:,}"),
                         cell(r["trainable_params"], "trainable_params", lambda v: f"{v:,}"),
                         cell(r["D"], "D", lambda v: "–" if v is None else f"{v:,}"),
                         cell(r["wall_s"], "wall_s", lambda v: f"{v:.1f}"),
                         f"{100 * r['delta_m_ratio']:+.1f}%"])
        parts.append(f"{s['tasks']} ({s['profile']} profile), from `{s['source']}`; percentages of MTL's; the "
                     f"experts row sums steps, samples and wall-clock over the experts, trainable params are "
                     f"one expert's\n\n"
                     + md_table(["row", "steps", "samples", "trainable params", "\\|D\\|", "wall s", "Δm (ratio)"],
                                rows))
    return "\n\n".join(parts) if parts else "not run: no results/table-*.json in " + sec["run_dir"]


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------
def _section(name: str, fn, results: dict, render, errors: dict):
    print(f"\n## {name}\n", flush=True)
    t0 = time.perf_counter()
    try:
        sec = fn()
    except Exception as e:      # one failing section must not lose the others
        errors[name] = f"{type(e).__name__}: {e}"
        print(f"{name}: FAILED: {errors[name]}", flush=True)
        return None
    sec["section_wall_s"] = time.perf_counter() - t0
    results[name] = sec
    print(render(sec), flush=True)
    return sec


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", nargs="+", default=["smoke", "cpu"], choices=["smoke", "cpu", "gpu"],
                    help="course profile(s) to time (default: smoke and cpu)")
    ap.add_argument("--skip-course", action="store_true", help="do not run the course (timings of complete "
                    "earlier runs in runs/bench/course-* are still reported)")
    ap.add_argument("--fresh-course", action="store_true", help="re-run the course even if a complete run exists")
    ap.add_argument("--out", default=str(REPO / "runs" / "bench" / "bench.json"))
    ap.add_argument("--course-root", default=str(REPO / "runs" / "bench"),
                    help="course runs go to <course-root>/course-<profile>")
    ap.add_argument("--results-run-dir", default=None,
                    help="run dir whose results/table-*.json feed Table 4 (default: the first with results of "
                         "runs/<profile>-0, larger profiles first, then the course run dirs)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for tests: smoke head realignment, small "
                    "encoder for merging, few scenes")
    ap.add_argument("--only", nargs="+", choices=["scenes", "course", "merging", "head_realign", "table4"],
                    help="run only these sections")
    ap.add_argument("--merge-tasks", nargs="+", type=int, default=None)
    ap.add_argument("--head-profile", default="cpu", choices=["smoke", "cpu", "gpu"],
                    help="profile whose sizes the head-realignment comparison uses (default cpu; quick: smoke)")
    ap.add_argument("--head-steps", type=int, default=None, help="head realignment steps per head (default 100; "
                    "quick: 4)")
    ap.add_argument("--_merge-case", dest="merge_case", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.merge_case:                                        # child process of merge_case_subprocess
        spec = json.loads(args.merge_case)
        row = merge_case(spec["method"], spec["n_tasks"], vit_shapes(**spec["shape_kw"]), spec["seed"])
        print(json.dumps(row))
        return row

    wanted = set(args.only or ["scenes", "course", "merging", "head_realign", "table4"])
    if args.skip_course:
        wanted.discard("course")
    t_all = time.perf_counter()
    out: dict = {"schema": SCHEMA_VERSION, "env": env_info(),
                 "command": "python benchmarks/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "quick": args.quick}
    errors: dict = {}
    e = out["env"]
    print(f"# simo_lite benchmarks\n\n{e['date']} | {e['hostname']} | {e['cpu_model']} | {e['cpu_count']} CPUs "
          f"({e['cpu_usable']} usable) | torch {e['torch']} ({e['torch_threads']} threads) | {e['device']} | "
          f"commit {(e['commit'] or '?')[:12]}{' (dirty)' if e['dirty'] else ''}")

    if "scenes" in wanted:
        kw = dict(sizes=(64, 128), n=16, repeats=1) if args.quick else dict(sizes=(64, 128), n=1000, repeats=2)
        _section("scenes", lambda: bench_scenes(**kw), out, scenes_markdown, errors)

    course_root = Path(args.course_root)
    course: dict = {}
    profiles_run = [] if "course" not in wanted else list(dict.fromkeys(args.profile))
    for p in ("smoke", "cpu", "gpu"):
        run_dir = course_root / f"course-{p}"
        if p in profiles_run:
            print(f"\n## course ({p})\n", flush=True)
            try:
                course[p] = run_course(p, run_dir, fresh=args.fresh_course)
            except Exception as ex:
                errors[f"course-{p}"] = f"{type(ex).__name__}: {ex}"
                continue
            print(course_markdown(course[p]), flush=True)
        else:
            done = read_course_timings(p, run_dir) if run_dir.exists() else None
            if done is not None:
                done["reused"] = True
                course[p] = done
                print(f"\n## course ({p}, earlier run)\n\n{course_markdown(done)}", flush=True)
    if course:
        out["course"] = course

    if "merging" in wanted:
        if args.quick:
            kw = dict(n_tasks=tuple(args.merge_tasks or (2,)), methods=("ta", "ties_k0.2", "tall_masks"),
                      shape_kw=QUICK_SHAPES)
        else:
            kw = dict(n_tasks=tuple(args.merge_tasks or (2, 3, 5)))
        _section("merging", lambda: bench_merging(**kw), out, merging_markdown, errors)

    if "head_realign" in wanted:
        prof = "smoke" if args.quick else args.head_profile
        steps = args.head_steps or (4 if args.quick else 100)
        _section("head_realign", lambda: bench_head_realign(prof, steps=steps, n_test=None if args.quick else 200),
                 out, head_realign_markdown, errors)

    if "table4" in wanted:
        order = sorted(args.profile, key=lambda p: p == "smoke")     # the larger profile's results first
        cands = [args.results_run_dir] if args.results_run_dir else \
            [REPO / "runs" / f"{p}-0" for p in order] + [course_root / f"course-{p}" for p in order]
        found = find_results_dir(cands)
        if found is None:
            print(f"\n## table4\n\nnot run: no results/table-*.json in {', '.join(str(c) for c in cands)}")
            out["table4"] = {"run_dir": None, "sets": [], "searched": [str(c) for c in cands]}
        else:
            _section("table4", lambda: table4_from_run(found), out, table4_markdown, errors)

    out["errors"] = errors
    out["wall_s"] = time.perf_counter() - t_all
    path = write_json_atomic(Path(args.out), out)
    print(f"\nwrote {path} in {out['wall_s']:.0f} s" + (f"; {len(errors)} section(s) failed: {sorted(errors)}"
                                                     if errors else ""))
    return out


if __name__ == "__main__":
    res = main()
    sys.exit(1 if res.get("errors") else 0)
