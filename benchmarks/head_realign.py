"""``head_realign`` section: head realignment with cached encoder features against re-running the
encoder every step (``simo_lite.realign.head_realign(cached=...)``): same batches, same metrics (to
a tolerance), time ratio."""
from __future__ import annotations

import time

from benchmarks.common import md_table

FULL = dict(profile="cpu", steps=100, n_test=200)
QUICK = dict(profile="smoke", steps=4, n_test=None)     # seconds, for the tests


def run(profile: str = "cpu", steps: int = 100, tasks: str = "nyu3", n_test: int | None = None,
        seed: int = 0, tol: float = 1e-3) -> dict:
    """Realign the heads of (foundation encoder + fresh heads) both ways on the profile's val split.

    Same steps, batches and seeds on both paths; the test metrics must agree to ``tol`` (relative).
    Uses the shipped foundation encoder when there is one for the profile, else the random init.
    Returns the settings, ``setup_s``, ``"cached"`` and ``"uncached"`` (``wall_s`` seconds, steps,
    samples, trainable parameters, test metrics), ``max_rel_diff``, ``same_results`` and ``speedup``
    (uncached seconds / cached seconds).
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
        new, rec = head_realign(model, val, names, steps=steps, lr=P.lr_head_realign, batch_size=P.batch_size, seed=seed,
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


def markdown(section: dict) -> str:
    """A table of both paths (steps, samples, trainable params, seconds, test metrics), then the time
    ratio, the metric agreement and the settings."""
    sec = section
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
