"""Reliability matrix, part 3: several processes on one run directory (issue 11).

* Two processes writing and reading the **same artifact** 300 times each (a table row as JSON, a
  checkpoint as safetensors): expected outcome **no error, every read complete and valid** (the
  store's writer uses a unique ``mkstemp`` file per write and ``os.replace``; the old fixed
  ``.json.tmp`` names failed with FileNotFoundError in 14-17 of 300 writes).
* Two **identical experiment runs** (``python -m simo_lite.experiment --profile smoke --tasks nyu3``)
  in two processes at once, into two fresh run directories: expected outcome **byte-identical
  checkpoints** (every ``.safetensors``, sha256) and **identical JSON** (tables, rows, sweeps,
  records) once the wall-clock fields are removed (``simo_lite.store.without_wall_clock``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from simo_lite import store as st

N = 300

WORKER = textwrap.dedent("""
    import json, os, sys, time
    import torch
    torch.set_num_threads(1)
    from simo_lite import store as st
    root, wid, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    art = st.Artifact("row", "seg+depth+normals-ta", {"row": "ta", "tasks": ["seg", "depth", "normals"]},
                      {"expert-seg": "a" * 12, "expert-depth": "b" * 12})
    s = st.Store(root)


    def once(mode, i):
        if mode == "json":                       # what Experiment.row writes and reads
            path = s.path("rows", art)
            s.write_json(path, {"row": "ta", "writer": wid, "i": i, "metrics": {"seg": i / 7}, "pad": "x" * 50_000},
                         art)
            got = s.read_json(path, art, require=("row", "writer", "i", "metrics", "pad"))
            return got is not None and len(got["pad"]) == 50_000 and got["metrics"]["seg"] == got["i"] / 7
        path = s.path("models", art, ".safetensors")  # what a model checkpoint is
        s.save_tensors(path, {"w": torch.full((128, 512), float(wid * 1000 + i))}, art)
        got = s.load_tensors(path, art)
        return got is not None and got["w"].shape == (128, 512) and bool((got["w"] == got["w"][0, 0]).all())


    while not os.path.exists(go):
        time.sleep(0.001)
    for mode in ("json", "tensors"):
        errors, reads = [], 0
        for i in range(n):
            try:
                ok = once(mode, i)
                reads += 1
                if not ok:
                    errors.append(f"{i}: invalid read")
            except Exception as e:
                errors.append(f"{i}: {type(e).__name__}: {e}")
        print(json.dumps({"mode": mode, "writer": wid, "writes": n, "reads": reads, "errors": len(errors),
                          "first": errors[:3]}), flush=True)
""")


def _two_writers(tmp_path: Path) -> dict[str, list[dict]]:
    """Run the two writer processes once, JSON rows first, then checkpoints: {mode: [result, result]}."""
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "run"), str(w), str(N), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in (1, 2)]
    time.sleep(0.2)
    go.touch()                                       # both start writing at the same moment
    out: dict[str, list[dict]] = {}
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
        for line in stdout.strip().splitlines():
            r = json.loads(line)
            out.setdefault(r["mode"], []).append(r)
    return out


@pytest.fixture(scope="module")
def writers(tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrent")
    return root, _two_writers(root)


CONCURRENCY_CASES = [
    ("same-row-json-300x2", "no error, every read valid", "json", "rows/seg+depth+normals-ta-*.json"),
    ("same-checkpoint-300x2", "no error, every read valid", "tensors", "models/seg+depth+normals-ta-*.safetensors"),
]


@pytest.mark.parametrize("case, outcome, mode, pattern", CONCURRENCY_CASES, ids=[c[0] for c in CONCURRENCY_CASES])
def test_concurrency_matrix(case, outcome, mode, pattern, writers):
    root, results = writers
    results = results[mode]
    print(case, results)
    assert len(results) == 2
    for r in results:
        assert r["errors"] == 0 and r["reads"] == N, r
    files = list((root / "run").glob(pattern))
    assert len(files) == 1
    # nothing left behind: no temporary files, and the final file is one writer's complete last write
    assert not [p for p in (root / "run").rglob("*") if p.name.endswith(".tmp")]
    if mode == "json":
        final = json.loads(files[0].read_text())
        assert final["i"] == N - 1 and final["artifact"]["name"] == "seg+depth+normals-ta"


def test_two_identical_experiment_runs_are_identical(tmp_path):
    """The acceptance check of issue 11: two identical smoke runs in two processes (started together,
    each with its own random hash seeds), into fresh folders."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"}
    runs = [tmp_path / "A", tmp_path / "B"]
    procs = [subprocess.Popen([sys.executable, "-m", "simo_lite.experiment", "--profile", "smoke", "--tasks", "nyu3",
                               "--device", "cpu", "--run-dir", str(r)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for r in runs]
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-3000:]
        assert "simo_lite.store: recomputing foundation" in stderr        # the misses are visible
    assert st.compare_runs(*runs) == []
    ckpts = sorted(p.relative_to(runs[0]) for p in runs[0].rglob("*.safetensors"))
    assert len(ckpts) >= 20 and any(str(p).startswith("foundation-") for p in ckpts)
    for p in ckpts:
        assert (runs[0] / p).read_bytes() == (runs[1] / p).read_bytes(), p
    for name in ("table-seg+depth+normals.json", "training-seg+depth+normals.json"):
        a, b = (json.loads((r / "results" / name).read_text()) for r in runs)
        assert st.without_wall_clock(a) == st.without_wall_clock(b)
        assert a != [] and a != {}
