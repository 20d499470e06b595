"""``scenes`` section: SIMO-lite Scenes rendering rate, scenes per second at each image size
(:func:`simo_lite.scenes.benchmark`)."""
from __future__ import annotations

import time
from typing import Sequence

from benchmarks.common import md_table

FULL = dict(sizes=(64, 128), n=1000, repeats=2)
QUICK = dict(sizes=(64, 128), n=16, repeats=1)          # seconds, for the tests


def run(sizes: Sequence[int] = (64, 128), n: int = 1000, repeats: int = 2) -> dict:
    """Render ``n`` scenes ``repeats`` times at every size in ``sizes`` (pixels per side).

    Returns ``{"threads": torch threads, "rows": [{"size", "scenes_per_s" (best run), "n", "repeats",
    "wall_s" (seconds for that size, all repeats)}]}``."""
    import torch

    from simo_lite import scenes
    rows = []
    for s in sizes:
        t0 = time.perf_counter()
        rate = scenes.benchmark(size=s, n=n, repeats=repeats)
        rows.append({"size": s, "scenes_per_s": rate, "n": n, "repeats": repeats,
                     "wall_s": time.perf_counter() - t0})
    return {"threads": torch.get_num_threads(), "rows": rows}


def markdown(section: dict) -> str:
    """The section as a Markdown table (size, scenes/s, scenes per run, best of) and the thread count."""
    return md_table(["image size", "scenes/s", "scenes per run", "best of"],
                    [[f"{r['size']}×{r['size']}", f"{r['scenes_per_s']:,.0f}", r["n"], r["repeats"]]
                     for r in section["rows"]]) + f"\n\n({section['threads']} torch threads)"
