"""Keep the multi-seed evidence sweep's finished work in the repository, so the sweep resumes elsewhere.

The 3-seed evidence sweep (``make evidence``) takes longer on 2 cores than one sitting has, and its run
folders (``runs/evidence/cpu-<seed>/``) are not versioned. Its trained models ship in
``data/evidence/seed-<s>/`` (``make evidence-models``); this script keeps the rest of what the sweep
finished, the row records (``rows/*.json``) and the alpha sweeps (``alphas/*.json``): small JSON files whose
names carry the key of everything upstream, so a copied file is used only where the key still matches
(:meth:`simo_lite.experiment.Experiment.row` recomputes a row of any other key).

    python benchmarks/evidence_cache.py save      # runs/evidence/cpu-<s>/{rows,alphas} -> data/evidence/seed-<s>/
    python benchmarks/evidence_cache.py restore   # and back, never overwriting a file already in the run
    python benchmarks/evidence_cache.py add-rows SWEEP.json --rows mtl4x   # another sweep's rows into the tidy table

``add-rows`` puts the tidy rows of ``--rows`` from another sweep's ``results.json`` (the "MTL 4x" rows, which
train only at seed 0: ``make evidence-mtl4x`` keeps that sweep's table in ``docs/evidence-mtl4x-cpu.json``)
into ``docs/evidence-cpu.json``, replacing the rows of those names already there.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterator, Sequence

from simo_lite.atomic import copy_file, write_text

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("rows", "alphas")


def pairs(seeds: Sequence[int], runs: Path, data: Path, profile: str = "cpu") -> Iterator[tuple[Path, Path]]:
    """``(run folder, repository folder)`` of each seed and kept sub-folder."""
    for s in seeds:
        for f in FOLDERS:
            yield runs / f"{profile}-{s}" / f, data / f"seed-{s}" / f


def copy_json(src: Path, dst: Path, overwrite: bool) -> int:
    """Copy ``src/*.json`` into ``dst`` (each atomically, :func:`simo_lite.atomic.copy_file`); the number copied."""
    if not src.is_dir():
        return 0
    n = 0
    for f in sorted(src.glob("*.json")):
        target = dst / f.name
        if target.exists() and not overwrite:
            continue
        dst.mkdir(parents=True, exist_ok=True)
        copy_file(f, target)
        n += 1
    return n


def add_rows(tidy: list[dict], extra: list[dict], rows: Sequence[str]) -> list[dict]:
    """``tidy`` without its rows named in ``rows``, then ``extra``'s rows of those names (tidy row dicts)."""
    names = set(rows)
    return [r for r in tidy if r["row"] not in names] + [r for r in extra if r["row"] in names]


def main(argv: Sequence[str] | None = None) -> None:
    """``python benchmarks/evidence_cache.py save|restore [--seeds ...]``: copy the kept JSON one way;
    ``add-rows SWEEP.json [--rows ...]``: put another sweep's rows into the tidy table (:func:`add_rows`)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=("save", "restore", "add-rows"))
    ap.add_argument("sweep", nargs="?", help="add-rows: another sweep's results.json")
    ap.add_argument("--rows", nargs="+", default=["mtl4x"], help="add-rows: the row names to take from it")
    ap.add_argument("--table", default=str(REPO / "docs" / "evidence-cpu.json"), help="add-rows: the tidy table")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs", default=str(REPO / "runs" / "evidence"), help="the sweep's --runs-root")
    ap.add_argument("--data", default=str(REPO / "data" / "evidence"))
    args = ap.parse_args(argv)
    if args.action == "add-rows":
        if not args.sweep:
            ap.error("add-rows needs the sweep's results.json")
        missing = [p for p in (args.table, args.sweep) if not Path(p).is_file()]
        if missing:
            ap.error(f"add-rows: not found: {', '.join(missing)} (run `make evidence` for the table, and the other "
                     "sweep for its results.json)")
        tidy, extra = (json.loads(Path(p).read_text()) for p in (args.table, args.sweep))
        out = add_rows(tidy, extra, args.rows)
        write_text(Path(args.table), json.dumps(out, indent=1) + "\n")
        print(f"add-rows: {sum(r['row'] in args.rows for r in out)} rows of {', '.join(args.rows)} in {args.table} "
              f"({len(out)} in all)")
        return
    total = 0
    for run, kept in pairs(args.seeds, Path(args.runs), Path(args.data)):
        src, dst = (run, kept) if args.action == "save" else (kept, run)
        total += copy_json(src, dst, overwrite=args.action == "save")
    print(f"{args.action}: {total} files")


if __name__ == "__main__":
    main()
