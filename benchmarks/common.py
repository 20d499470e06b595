"""What every benchmark section and the results document share: paths, time budgets, the environment
record, atomic JSON files and Markdown formatting."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any, Callable

from simo_lite.atomic import write_text

REPO = Path(__file__).resolve().parent.parent
PAPER_TABLES = REPO / "benchmarks" / "paper_tables.json"      # the paper's numbers, and only there
SCHEMA_VERSION = 1                                             # of runs/bench/bench.json

# The course's time budgets, in seconds, defined here once. The per-notebook *timeout* that
# ``python -m simo_lite.course run`` enforces is another figure: ``simo_lite.course.NOTEBOOK_BUDGET_S``.
BUDGETS = {
    "smoke_notebook_s": 60.0,        # every notebook in the smoke profile, kernel start-up included
    "cpu_course_s": 15 * 60.0,       # the whole cpu course, all notebooks in order, on 2 cores
}


# ----------------------------------------------------------------------------------------------
# Environment
# ----------------------------------------------------------------------------------------------
def git_commit(repo: Path = REPO) -> dict:
    """``{"commit": HEAD's hash, "dirty": uncommitted changes to tracked files}``; both None when git
    is unavailable."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": head or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo; the platform's processor or machine name elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_info() -> dict:
    """Where and when a measurement runs: UTC date (ISO, seconds), host, CPU count (all and usable by
    this process), CPU model, torch version and thread count, OMP_NUM_THREADS, device, Python,
    platform, and the git commit (:func:`git_commit`)."""
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


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
def write_json_atomic(path: Path, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (:func:`simo_lite.atomic.write_text`); creates the
    parent directory; returns the path."""
    return write_text(path, json.dumps(obj, indent=1, default=float))


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`simo_lite.atomic.write_text`); creates the parent
    directory; returns the path."""
    return write_text(path, text)


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Lay out a matplotlib figure, save it as PNG at ``path`` (parent created) and close it; returns the path."""
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def write_section(stem: str | Path, result: dict, markdown: Callable[[dict], str],
                  plot: Callable[[dict, Path], Path] | None = None) -> str:
    """A benchmark section's outputs: ``<stem>.json`` (``result``), ``<stem>.md`` (``markdown(result)``) and,
    with ``plot``, ``<stem>.png``; all atomic. Returns the Markdown (for printing)."""
    stem = Path(stem)
    text = markdown(result)
    write_json_atomic(stem.with_suffix(".json"), result)
    write_text_atomic(stem.with_suffix(".md"), text)
    if plot is not None:
        plot(result, stem.with_suffix(".png"))
    return text


def load_json(path: str | Path) -> object | None:
    """The parsed JSON at ``path``, or None when the file is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------
def md_table(header: list[str], rows: list[list]) -> str:
    """A GitHub Markdown table (no trailing newline); cells are ``str()``-ed, pipes are not escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt_bytes(n: float | None) -> str:
    """A byte count in binary units, rounded: "1,234 MiB" from 1 MiB up, else "12 KiB"; "–" for None."""
    if n is None:
        return "–"
    return f"{n / 2 ** 20:,.0f} MiB" if n >= 2 ** 20 else f"{n / 2 ** 10:,.0f} KiB"
