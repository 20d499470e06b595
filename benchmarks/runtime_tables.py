"""Write the measured runtimes into each notebook's "## Runtime" cell (the table the course promises).

    python benchmarks/runtime_tables.py --smoke runs/smoke-0/runtimes.json --cpu runs/cpu-0/runtimes.json

Reads the ``runtimes.json`` that ``python -m simo_lite.course run`` writes (seconds per notebook) and
replaces the Markdown cell that starts with ``## Runtime`` in every ``notebooks/NN_*.ipynb``.
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Sequence

import nbformat

REPO = Path(__file__).resolve().parent.parent
ENCODERS = {"smoke": "4 blocks, width 48, 32 px", "cpu": "8 blocks, width 128, 64 px (1.6M parameters)",
            "gpu": "12 blocks, width 384, 128 px (21M parameters)"}


def runtime_cell(name: str, smoke: dict, cpu: dict, date: str) -> str:
    """The Markdown source of notebook ``name``'s "## Runtime" cell: its measured seconds per profile
    (``smoke``/``cpu``: ``{notebook: seconds}``), the whole cpu course in minutes, and how ``date``'s
    figures were measured."""
    def cell(rt, profile):
        return f"{rt[name]:.0f} s" if name in rt else "not measured"
    cpu_total = sum(cpu.values())
    return "\n".join([
        "## Runtime", "",
        "| profile | encoder | measured runtime of this notebook |", "|---|---|---|",
        f"| `smoke` | {ENCODERS['smoke']} | {cell(smoke, 'smoke')} |",
        f"| `cpu` | {ENCODERS['cpu']} | {cell(cpu, 'cpu')} (the whole course: {cpu_total / 60:.1f} min) |",
        f"| `gpu` | {ENCODERS['gpu']} | not measured yet |", "",
        f"Measured on {date} with `python -m simo_lite.course run --profile <profile>` (all notebooks in order, "
        "kernel start-up included) on a 2-core CPU. Each notebook loads what earlier ones stored in the run "
        "directory (models, α sweeps, realigned models, table rows); run alone on a fresh run directory it "
        "first trains what it needs, so it takes longer.",
    ])


def main(argv: Sequence[str] | None = None) -> None:
    """Rewrite the "## Runtime" cell of every course notebook from the two runtimes.json files."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", required=True)
    ap.add_argument("--cpu", required=True)
    ap.add_argument("--date", default=datetime.date.today().isoformat())
    args = ap.parse_args(argv)
    smoke, cpu = (json.loads(Path(p).read_text()) for p in (args.smoke, args.cpu))
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cells = [c for c in nb.cells if c.cell_type == "markdown" and c.source.lstrip().startswith("## Runtime")]
        if len(cells) != 1:
            raise SystemExit(f"{path.name}: expected one '## Runtime' cell, found {len(cells)}")
        cells[0].source = runtime_cell(path.name, smoke, cpu, args.date)
        nbformat.write(nb, path)
        print(f"{path.name}: smoke {smoke.get(path.name, float('nan')):.0f} s, cpu {cpu.get(path.name, float('nan')):.0f} s")


if __name__ == "__main__":
    main()
