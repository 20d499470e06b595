"""Where things live: the repository, its notebooks, the shipped data, the run folders and the scene cache.

=================  ==========================================================================
name               folder
=================  ==========================================================================
REPO               the repository (the folder holding ``simo_lite/``)
NOTEBOOK_DIR       ``REPO/notebooks``: the course notebooks
DATA_DIR           ``REPO/data``: shipped files (the ``cpu`` foundation checkpoint)
runs_root()        ``$SIMO_LITE_RUNS`` when set (``--runs-root``), else ``REPO/runs``
cache_dir()        ``$SIMO_LITE_CACHE`` when set, else ``REPO/data/cache``: rendered Scenes splits
=================  ==========================================================================

The two functions read the environment on every call, so a test or ``--runs-root`` that sets the
variable takes effect at once. No torch here: the course runner imports this module.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO", "NOTEBOOK_DIR", "DATA_DIR", "runs_root", "cache_dir"]

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
DATA_DIR = REPO / "data"


def runs_root() -> Path:
    """The folder of the run folders: ``$SIMO_LITE_RUNS`` when set (``--runs-root``), else the repository's ``runs/``."""
    env = os.environ.get("SIMO_LITE_RUNS", "")
    return Path(env).expanduser().absolute() if env else REPO / "runs"


def cache_dir() -> Path:
    """The folder of cached Scenes splits: ``$SIMO_LITE_CACHE`` when set, else ``data/cache`` in the repository."""
    return Path(os.environ.get("SIMO_LITE_CACHE", DATA_DIR / "cache"))
