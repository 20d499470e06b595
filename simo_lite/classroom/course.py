"""The course: notebook set-up helpers and the runner that executes the notebooks with papermill.

In a notebook (after the ``parameters`` cell)::

    ctx = simo_lite.course.setup(profile=profile, seed=seed, run_dir=run_dir, device=device,
                                 show_progress=show_progress)
    ctx.show_figure(fig, "samples", notebook="00")   # shown, and saved as <run_dir>/figures/00-samples.png
    ctx.save_results("00_scenes", {...})     # -> <run_dir>/results/00_scenes.json

From a shell::

    python -m simo_lite.course run --profile cpu            # all notebooks, in order -> runs/cpu-0
    python -m simo_lite.course run --profile smoke --only 00 -p seed 1          # -> runs/smoke-1
    python -m simo_lite.course run --only 03 -p merge_method ties  # -> runs/cpu-0-merge_method=ties
    python -m simo_lite.course sweep grid.yaml               # parameter grid for assignments
    python -m simo_lite.course sweep seeds.yaml --workers 2 --threads 1   # two runs at a time

Each run's folder is named by the parameters that define it (:func:`default_run_dir`) and records
them in ``run-params.json``; the runner never writes into a folder made with other parameters.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import functools
import itertools
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, MutableMapping, Sequence

from .. import __version__
from .. import profiles as P
from ..atomic import write_bytes, write_text
from ..data import DATASETS, DEFAULT_DATASET
from ..paths import NOTEBOOK_DIR, REPO, runs_root
from ..progress import progress_enabled

if TYPE_CHECKING:
    import matplotlib.figure
    import torch

    from ..experiment import Experiment
    from ..types import Tasks

__all__ = ["Course", "setup", "notebooks", "run", "sweep", "default_run_dir", "runs_root", "atomic_write_text",
           "interactive_kernel", "UsageError", "NotebookFailed", "REPO", "NOTEBOOK_BUDGET_S"]

# REPO and NOTEBOOK_DIR (simo_lite.paths) are re-exported here: course.REPO keeps working
# per-notebook time limits (seconds) by profile, enforced by the runner
NOTEBOOK_BUDGET_S = {"smoke": 120, "cpu": 1200, "gpu": 3600, "paper": 4 * 3600}


@dataclass
class Course:
    """What every notebook needs: the resolved profile, device, seed and where outputs go."""
    profile: P.Profile
    seed: int
    device: torch.device
    run_dir: Path
    progress: bool
    params: dict | None = None     # the notebook parameters, checked and normalised (simo_lite.params.check)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The notebook's task names (the checked ``tasks`` parameter; ``nyu3`` when it has none)."""
        from ..tasks import get_tasks
        return tuple(get_tasks((self.params or {}).get("tasks", "nyu3")))

    def experiment(self, tasks: Tasks | None = None, **options: Any) -> "Experiment":
        """The notebook's :class:`~simo_lite.experiment.Experiment`, lazy (nothing loads until used).

        Built from the checked parameters: ``tasks`` (or the argument), ``ties_k``, ``adapter_rank``
        and ``realign_samples`` (0: every val image); ``options`` override them."""
        from ..experiment import Experiment
        p = self.params or {}
        opts = {k: p[k] for k in ("ties_k", "adapter_rank") if k in p}
        if "realign_samples" in p:
            opts["realign_samples"] = p["realign_samples"] or None
        return Experiment.from_course(self, self.tasks if tasks is None else tasks, **{**opts, **options})

    @property
    def figures(self) -> Path:
        """``<run_dir>/figures``, where :meth:`save_figure` writes."""
        return self.run_dir / "figures"

    @property
    def results(self) -> Path:
        """``<run_dir>/results``, where :meth:`save_results` writes."""
        return self.run_dir / "results"

    FIGURE_DPI = 110                  # saved PNGs: pixels per inch of figure size
    SMOKE_FIGURE_DPI = 72             # smoke profile (tests): smaller PNGs, one draw, no tight crop

    @property
    def figure_dpi(self) -> int:
        """Pixels per inch of the saved PNGs: :attr:`FIGURE_DPI`, or :attr:`SMOKE_FIGURE_DPI` in the
        smoke profile, whose figures are rendered without the tight crop (half the drawing time)."""
        return self.SMOKE_FIGURE_DPI if self.profile.name == "smoke" else self.FIGURE_DPI

    def figure_path(self, name: str, notebook: str = "") -> Path:
        """``<run_dir>/figures/<notebook>-<name>.png`` (``<name>.png`` without a notebook)."""
        return self.figures / f"{notebook + '-' if notebook else ''}{name}.png"

    def _render_png(self, fig: "matplotlib.figure.Figure") -> bytes:
        """``fig`` as PNG bytes at :attr:`figure_dpi`, cropped tight except in the smoke profile."""
        return _png(fig, self.figure_dpi, tight=self.profile.name != "smoke")

    def save_figure(self, fig: "matplotlib.figure.Figure", name: str, notebook: str = "") -> Path:
        """Save a matplotlib figure as PNG (:meth:`_render_png`) under ``<run_dir>/figures``, atomically,
        and return its path. The figure stays open."""
        return write_bytes(self.figure_path(name, notebook), self._render_png(fig))

    def show_figure(self, fig: "matplotlib.figure.Figure", name: str, notebook: str = "") -> Path:
        """Save ``fig`` like :meth:`save_figure` and, in an IPython kernel, show that same PNG as the
        cell's output and close the figure (one rendering instead of two: ``plt.show()`` would render
        it again). Displayed at the size the inline backend would use (100 px per inch). Outside
        IPython it only saves and leaves the figure open. Returns the PNG's path."""
        png = self._render_png(fig)
        path = write_bytes(self.figure_path(name, notebook), png)
        try:
            from IPython import get_ipython
        except ImportError:                 # no IPython: a plain script
            return path
        if get_ipython() is not None:
            import matplotlib.pyplot as plt
            from IPython.display import Image, display
            width = _png_width(png)
            display(Image(data=png, width=round(width * 100 / self.figure_dpi) if width else None))
            plt.close(fig)
        return path

    def save_results(self, name: str, results: dict) -> Path:
        """Write ``results`` as JSON to ``<run_dir>/results/<name>.json`` (atomic)."""
        self.results.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(self.results / f"{name}.json", json.dumps(results, indent=1, default=float))


def _png(fig: "matplotlib.figure.Figure", dpi: int, tight: bool = True) -> bytes:
    """``fig`` rendered as PNG bytes at ``dpi``; ``tight``: cropped to its drawn extent (which costs
    a second draw), else the whole canvas."""
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return buf.getvalue()


def _png_width(png: bytes) -> int | None:
    """The pixel width in a PNG's IHDR chunk (bytes 16-20), or None if ``png`` is not a PNG."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        return None
    return int.from_bytes(png[16:20], "big")


# progress_enabled (simo_lite.progress, no torch) and runs_root (simo_lite.paths) are imported above
# and keep their names here: course.progress_enabled, course.runs_root


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`simo_lite.atomic.write_text`, the one writer): a
    reader, or a run interrupted half-way, sees the old file or the new one, never a part."""
    return write_text(path, text)


def interactive_kernel() -> bool:
    """Whether a notebook's widgets have a live front end to talk to; independent of ``show_progress``.

    True in an IPython kernel driven by a notebook front end (JupyterLab, Jupyter Notebook, VS Code):
    they send each cell with ``allow_stdin=True``, since a person can answer ``input()``. False under
    batch execution, papermill (the course runner), nbclient and ``jupyter nbconvert --execute``, which
    send ``allow_stdin=False`` (no one is there to answer, and no one to move a slider); False as well
    when ``CI`` or ``SIMO_LITE_QUIET`` is set (:data:`simo_lite.progress.QUIET_VARIABLES`), outside an
    IPython kernel (a plain Python or terminal IPython session) and when ipywidgets is not installed.
    Notebooks call it once and, when it is False, show the static figure instead of the widgets."""
    import importlib.util

    from ..progress import QUIET_VARIABLES
    if any(os.environ.get(v) for v in QUIET_VARIABLES):
        return False
    if importlib.util.find_spec("IPython") is None or importlib.util.find_spec("ipywidgets") is None:
        return False
    from IPython import get_ipython
    kernel = getattr(get_ipython(), "kernel", None)           # None outside a kernel (terminal IPython too)
    if kernel is None:
        return False
    try:
        parent = kernel.get_parent()                          # the execute request of the running cell
    except Exception:                                         # an older ipykernel: the shell keeps it
        parent = getattr(get_ipython(), "parent_header", None)
    content = parent.get("content", {}) if isinstance(parent, dict) else {}
    return bool(content.get("allow_stdin", False))


# never part of a run's identity: where it goes, how it shows progress, where it computes
_NOT_RUN_DEFINING = ("run_dir", "show_progress", "device")
# part of it (recorded in run-params.json) but paths, left out of the folder name
_NOT_IN_NAME = ("data_dir", "weights")


def default_run_dir(profile: str, seed: int, dataset: str = DEFAULT_DATASET, *, params: dict | None = None,
                    root: str | Path | None = None) -> Path:
    """The folder of a run, the one naming rule of setup, the runner and the sweeps.

    ``runs/<profile>-<seed>``, or ``runs/<profile>-<dataset>-<seed>`` for a real dataset, followed by
    ``-name=value,...`` for every other notebook parameter in ``params`` whose value is not the
    default of the notebooks (``runs/cpu-1-merge_method=ties``), so runs with other parameters never
    share a folder. ``run_dir``, ``show_progress`` and ``device`` are not part of a run's identity;
    ``data_dir`` and ``weights`` are, but as paths they stay out of the name (the folder's
    ``run-params.json`` records them and the runner refuses a folder made with other ones). ``root``
    replaces ``runs/`` (default: :func:`runs_root`, i.e. ``$SIMO_LITE_RUNS`` when set).
    """
    name = f"{profile}-{seed}" if dataset == DEFAULT_DATASET else f"{profile}-{dataset}-{seed}"
    named = {k: v for k, v in _defining(params or {}).items() if k not in _NOT_IN_NAME}
    if named:
        suffix = ",".join(f"{k}={_slug(v)}" for k, v in sorted(named.items()))
        if len(suffix) > 120:
            import hashlib
            suffix = "params-" + hashlib.sha1(json.dumps(named, sort_keys=True, default=str).encode()).hexdigest()[:10]
        name += "-" + suffix
    return (Path(root) if root else runs_root()) / name


_SETUP_DEFAULTS = dict(seed=0, run_dir="", device="auto", show_progress=True, dataset=DEFAULT_DATASET, data_dir="",
                       backbone="", weights="")
# parameters with an automatic value (0 / empty) that setup(globals()) replaces by the value used
_AUTO = ("n_show", "scatter_task")


def setup(profile: "str | MutableMapping" = "cpu", seed: int = 0, run_dir: str = "", device: str = "auto",
          show_progress: bool = True, expect_version: str | None = None, dataset: str = DEFAULT_DATASET,
          data_dir: str = "", backbone: str = "", weights: str = "", restrict: dict | None = None,
          **overrides: Any) -> Course:
    """Validate notebook parameters and return a :class:`Course`; prints a one-line summary.

    In a notebook, one call after the ``parameters`` cell::

        ctx = course.setup(globals())            # every parameter the cell defined, checked

    takes every notebook parameter (:data:`simo_lite.params.PARAMETERS`) defined in the namespace
    (papermill's injected values included), checks them all as below, and writes the value used back
    for the parameters with an automatic value (``n_show`` 0, an empty ``scatter_task``). Keyword
    arguments given beside the namespace (``restrict``, ``expect_version``, profile fields) apply as
    usual; a parameter given both ways is an error.

    ``run_dir`` empty means ``runs/<profile>-<seed>`` in the repository (``runs/<profile>-<dataset>-<seed>``
    for a real dataset). ``dataset``/``data_dir`` pick the data (``scenes`` is rendered offline),
    ``backbone``/``weights`` a timm ViT loaded from a local file (docs/real-data.md). Invalid values
    stop with an error that lists the valid ones.

    ``overrides`` are of two kinds, told apart by name: notebook parameters (``tasks``, ``alpha``,
    ``ties_k``, ``n_show``, ...: the names in :data:`simo_lite.params.PARAMETERS`), checked by
    :func:`simo_lite.params.check` the same way in every notebook and returned normalised in
    ``ctx.params`` (``n_show`` 0 becomes its auto value); and :class:`~simo_lite.profiles.Profile`
    fields (``batch_size=8``, ``augment=False``, ...), applied to the profile. ``restrict`` narrows
    a notebook parameter to the values one notebook supports (``{"merge_method": ("ta", "ties")}``).
    The data and backbone are checked first (their errors are the real ones), then the other
    parameters against the resolved profile (split sizes, encoder width), all before any work.
    """
    from . import params as NP
    if isinstance(profile, Mapping):
        namespace = profile
        given = {k: namespace[k] for k in NP.PARAMETERS if k in namespace}
        clash = sorted(set(given) & (set(overrides) | {k for k, v in dict(seed=seed, run_dir=run_dir, device=device,
                                     show_progress=show_progress, dataset=dataset, data_dir=data_dir,
                                     backbone=backbone, weights=weights).items() if v != _SETUP_DEFAULTS[k]}))
        if clash:
            raise ValueError(f"parameter(s) {clash} given both in the namespace and as keyword arguments")
        kw = {**dict(seed=seed, run_dir=run_dir, device=device, show_progress=show_progress, dataset=dataset,
                     data_dir=data_dir, backbone=backbone, weights=weights), **overrides, **given}
        kw.setdefault("profile", "cpu")
        ctx = setup(kw.pop("profile"), expect_version=expect_version, restrict=restrict, **kw)
        if isinstance(namespace, MutableMapping):
            for k in _AUTO:
                if k in given:
                    namespace[k] = ctx.params[k]
        return ctx
    if expect_version is not None and expect_version != __version__:
        raise RuntimeError(f"this notebook expects simo_lite {expect_version}, found {__version__}: "
                           f"reinstall with `pip install -e .` from the repository")
    notebook = {k: overrides.pop(k) for k in list(overrides) if k in NP.PARAMETERS}
    unknown = sorted(set(overrides) - set(P.Profile.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown setup argument(s) {unknown}: neither a notebook parameter "
                         f"({', '.join(NP.PARAMETERS)}) nor a profile field ({', '.join(P.Profile.__dataclass_fields__)})")
    # 1. the profile, data and backbone: a bad folder or backbone is reported before anything else
    values = NP.check(None, profile=profile, dataset=dataset, data_dir=data_dir, backbone=backbone, weights=weights)
    prof = P.validate(P.get(profile, dataset=dataset, data_dir=values["data_dir"], backbone=backbone,
                            weights=values["weights"], **overrides))
    prof = real_data_profile(prof, overrides)
    # 2. every other parameter, against the resolved profile, the same way in every notebook
    values.update(NP.check(prof, restrict=restrict, seed=seed, run_dir=run_dir, device=device,
                           show_progress=show_progress, **notebook))
    dev = values["device"]
    path = Path(run_dir) if run_dir else default_run_dir(prof.name, seed, prof.dataset)
    path.mkdir(parents=True, exist_ok=True)
    import torch  # here, not at the top: the course runner never imports torch
    torch.manual_seed(seed)
    ctx = Course(prof, seed, dev, path, progress_enabled(values["show_progress"]), values)
    print(f"simo_lite {__version__} | torch {torch.__version__} | profile {prof.name} | seed {seed} | "
          f"device {dev} | run_dir {path}"
          + (f" | dataset {prof.dataset} ({prof.data_dir})" if DATASETS[prof.dataset].from_files else "")
          + (f" | backbone {prof.backbone} ({prof.weights})" if prof.backbone else ""))
    return ctx


def real_data_profile(prof: P.Profile, overrides: dict | None = None) -> P.Profile:
    """Fill a profile's fields from a timm backbone (patch, width, depth, heads) and a dataset read
    from files (split sizes from the files, ``DatasetSpec.split_sizes``; augmentation on unless
    ``overrides`` says otherwise)."""
    overrides = overrides or {}
    fields = {}
    if prof.backbone:
        from ..backbones import backbone_dims
        fields.update({k: v for k, v in backbone_dims(prof.backbone).items() if k not in overrides})
    spec = DATASETS[prof.dataset]
    if spec.from_files:
        sizes = spec.split_sizes(prof)
        fields.update(n_train=sizes["train"], n_val=sizes["val"], n_test=sizes["test"])
        fields.setdefault("augment", overrides.get("augment", True))
    return P.get(prof, **fields) if fields else prof


# ----------------------------------------------------------------------------------------------
# Runner
# ----------------------------------------------------------------------------------------------
# The runner process stays light: it never imports torch (the kernels do). Every run goes into one
# folder named by default_run_dir from the parameters that define it, recorded in run-params.json;
# a folder made with other parameters is never written into.
RUN_PARAMS_FILE = "run-params.json"
SWEEP_CONFIRM_RUNS = 100        # a larger grid needs --yes (sweep(yes=True))


class UsageError(ValueError):
    """A run that cannot start (bad parameter, notebook number, run folder), raised before anything
    runs; the message names the valid values. The command line prints it without a traceback."""


class NotebookFailed(SystemExit):
    """A notebook raised: ``str(e)`` says which notebook, which cell and the notebook's own exception.

    A ``SystemExit`` (so a script that does not catch it stops with the message); ``run_dir`` is the
    run's folder."""

    def __init__(self, message: str, run_dir: Path | None = None):
        super().__init__(message)
        self.message = message
        self.run_dir = run_dir


def notebooks(only: Iterable[str | int] | None = None) -> list[Path]:
    """The course notebooks in order (``NN_name.ipynb``), optionally only those whose prefix is in ``only``."""
    books = sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {str(o).zfill(2) for o in only}
        have = [b.name[:2] for b in books]
        unknown = wanted - set(have)
        if unknown:
            raise UsageError(f"no notebook numbered {', '.join(sorted(unknown))}; valid notebook numbers: "
                             f"{', '.join(have)} ({', '.join(b.stem for b in books)})")
        books = [b for b in books if b.name[:2] in wanted]
    return books


def notebook_parameters(path: str | Path) -> dict:
    """The ``name = <literal>`` defaults of a notebook's ``parameters`` cell (``{}`` without one).

    Read from the file (no kernel, no papermill): tests/test_notebooks.py checks that every
    statement of that cell is such an assignment."""
    path = Path(path)
    stat = path.stat()
    return dict(_parameters_cached(str(path), stat.st_mtime_ns, stat.st_size))


_PARAMETER_CACHE: dict = {}


def _parameters_cached(path: str, mtime_ns: int, size: int) -> dict:
    key = (path, mtime_ns, size)
    if key not in _PARAMETER_CACHE:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
        found = {}
        for cell in nb.get("cells", []):
            if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
                src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
                for stmt in ast.parse(src).body:
                    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
                            and isinstance(stmt.targets[0], ast.Name):
                        try:
                            found[stmt.targets[0].id] = ast.literal_eval(stmt.value)
                        except ValueError:
                            found[stmt.targets[0].id] = None
                break
        _PARAMETER_CACHE[key] = found
    return _PARAMETER_CACHE[key]


def _course_defaults() -> dict[str, list]:
    """Every parameter of the course: ``{name: [its default in each notebook that declares it]}``."""
    out: dict[str, list] = {}
    for b in notebooks():
        for k, v in notebook_parameters(b).items():
            out.setdefault(k, []).append(v)
    return out


# notebooks that only apply to the offline course: {prefix: (parameter that rules them out, why)}
SCENES_ONLY = {
    "00": ("dataset", "it renders and checks the Scenes dataset (dataset is not 'scenes')"),
    "01": ("backbone", "it is about the course's own foundation encoder (a pretrained backbone is set)"),
}


def _scenes_only(prefix: str, parameters: dict) -> bool:
    """Whether notebook ``prefix`` does not apply to a run with these parameters (real data / backbone)."""
    if prefix not in SCENES_ONLY:
        return False
    name = SCENES_ONLY[prefix][0]
    value = parameters.get(name, DEFAULT_DATASET if name == "dataset" else "")
    return value not in ("", DEFAULT_DATASET)


def _coerce(value: str, default=None):
    """A command-line parameter value: typed like the notebooks' default when they have one (a text
    parameter stays text, ``-p alpha 1`` is 1.0), else int, float, bool or string."""
    if isinstance(default, str):
        return value
    if isinstance(default, bool):
        low = value.lower()
        return {"true": True, "false": False, "1": True, "0": False}.get(low, value)
    for cast in (int, float):
        try:
            v = cast(value)
        except ValueError:
            continue
        return float(v) if isinstance(default, float) else v
    return {"true": True, "false": False}.get(value.lower(), value)


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                             and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def _defining(params: dict) -> dict:
    """The parameters of ``params`` that define a run beyond its profile, seed and dataset: all but
    where it goes and how it shows (``run_dir``, ``show_progress``, ``device``), and none whose value
    is the default of every notebook that declares it."""
    defaults = _course_defaults()
    out = {}
    for k, v in params.items():
        if k in ("profile", "seed", "dataset") or k in _NOT_RUN_DEFINING:
            continue
        if k in defaults and all(_same(v, d) for d in defaults[k]):
            continue
        out[k] = v
    return out


def _slug(v) -> str:
    text = ("true" if v else "false") if isinstance(v, bool) else repr(v) if isinstance(v, float) else str(v)
    return "".join(c if c.isascii() and (c.isalnum() or c in "._+,-") else "_" for c in text)[:40] or "_"


def _reconcile(params: dict, name: str, value, flag: str):
    """``-p name X`` and ``flag X`` are the same setting: one value, or an error if they disagree."""
    if name not in params:
        return value
    given = params.pop(name)
    if value is not None:
        same = (Path(str(value)).expanduser().absolute() == Path(str(given)).expanduser().absolute()
                if name == "run_dir" else _same(value, given))
        if not same:
            raise UsageError(f"{flag} {value} and -p {name} {given} disagree: they are the same setting, give one")
    return given


def _check_known(names: Iterable[str], valid: Sequence[str], books: Sequence[Path], where: str = "") -> None:
    """Raise :class:`UsageError` for the names not in ``valid`` (the parameters of ``books``), with a
    close match suggested for each; ``where`` prefixes the message (the grid file)."""
    unknown = [k for k in names if k not in valid]
    if unknown:
        hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, valid, 1)) else repr(k)
                 for k in unknown]
        raise UsageError(f"{where}unknown parameter {', '.join(hints)}: not in the parameters cell of "
                         f"{', '.join(b.stem for b in books)}; valid parameters: {', '.join(valid)}")


def _dataset_tasks(dataset: str) -> tuple[str, ...]:
    """The tasks ``dataset`` labels (``simo_lite.data.DATASETS``, read without importing torch)."""
    return tuple(DATASETS[dataset].tasks)


@dataclass
class _Plan:
    """A checked run: where it goes and what each notebook is given; nothing has run yet."""
    profile: str
    seed: int
    dataset: str
    out: Path
    params: dict                        # the caller's parameters, typed (profile, seed, run_dir taken out)
    books: list                         # [(notebook path, the parameters its cell declares)]
    skipped: list
    manifest: dict                      # run-params.json
    timeout_s: int
    explicit_dir: bool


def _plan_run(profile=None, seed=None, only=None, params: dict | None = None, run_dir=None,
              timeout_s: int | None = None, root: Path | None = None) -> _Plan:
    """Check a run's parameters, notebooks and folder (raises :class:`UsageError`) without running it."""
    params = dict(params or {})
    profile = _reconcile(params, "profile", profile, "--profile")
    seed = _reconcile(params, "seed", seed, "--seed")
    run_dir = _reconcile(params, "run_dir", run_dir, "--run-dir")
    profile = "cpu" if profile is None else profile
    seed = 0 if seed is None else seed
    if profile not in P.PROFILES:
        raise UsageError(f"unknown profile {profile!r}; valid profiles: {', '.join(sorted(P.PROFILES))}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    dataset = params.get("dataset", DEFAULT_DATASET)
    if dataset not in P.DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(P.DATASETS)}")
    books = notebooks(only)
    declared = {b: notebook_parameters(b) for b in books}
    valid = sorted(set().union(*declared.values()) | {"profile", "seed", "run_dir"})
    _check_known(params, valid, books)
    defaults = _course_defaults()
    for k, v in list(params.items()):
        if isinstance(v, int) and not isinstance(v, bool) and any(isinstance(d, float) for d in defaults.get(k, [])):
            params[k] = float(v)                 # alpha=1 and alpha=1.0 are one run (and one folder)
        if k in ("data_dir", "weights") and isinstance(v, str) and v and Path(v).expanduser().exists():
            params[k] = str(Path(v).expanduser().absolute())   # the kernels run in notebooks/
    try:
        P.validate(P.get(profile, dataset=dataset, data_dir=str(params.get("data_dir", "")),
                         backbone=str(params.get("backbone", "")), weights=str(params.get("weights", ""))))
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    explicit = run_dir not in (None, "")
    out = Path(str(run_dir)).expanduser().absolute() if explicit else \
        default_run_dir(profile, seed, dataset, params=params, root=root)
    manifest = json.loads(json.dumps({"profile": profile, "seed": seed, "dataset": dataset, **_defining(params)}))
    parameters = {"profile": profile, "seed": seed, "run_dir": str(out), "show_progress": False, **params}
    # the notebooks' default tasks are written for the default dataset: another one gets its own tasks
    if dataset != DEFAULT_DATASET and "tasks" not in parameters:
        own = _dataset_tasks(dataset)
        parameters["tasks"] = ",".join(own)
        # 08 compares with a smaller set: the first two (or one) tasks
        parameters.setdefault("compare_tasks", ",".join(own[:2] if len(own) > 2 else own[:1]))
    skipped = [b for b in books if _scenes_only(b.name[:2], parameters)]
    plan_books = [(b, {k: v for k, v in parameters.items() if k in declared[b]}) for b in books if b not in skipped]
    _check_run_dir(out, manifest)
    return _Plan(profile, seed, dataset, out, params, plan_books, skipped, manifest,
                 timeout_s or NOTEBOOK_BUDGET_S.get(profile, 1800), explicit)


def _check_run_dir(out: Path, manifest: dict) -> None:
    """A run folder must be a folder (or creatable) and hold no run made with other parameters."""
    for p in (out, *out.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "is a file" if p == out else f"lies under {p}, which is a file"
                raise UsageError(f"run folder {out} {where}, not a folder: pass another --run-dir")
            break
    path = out / RUN_PARAMS_FILE
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{path} cannot be read ({e}): remove it or pass another --run-dir") from None
    if old != manifest:
        diff = ", ".join(f"{k} {old[k]!r} there, {manifest[k]!r} here" if k in old and k in manifest else
                         f"{k} {old[k]!r} there, the default here" if k in old else
                         f"{k} {manifest[k]!r} here, the default there"
                         for k in sorted(set(old) | set(manifest)) if old.get(k, None) != manifest.get(k, None))
        raise UsageError(f"{out} holds a run made with other parameters ({diff}); it is never overwritten: "
                         f"pass another --run-dir, or remove that folder")


def _start_run_dir(plan: _Plan) -> None:
    out = plan.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create run folder {out}: {e.strerror or e}") from None
    if not (out / RUN_PARAMS_FILE).exists():
        if any(out.glob("[0-9][0-9]_*.ipynb")):
            print(f"note: {out} has no {RUN_PARAMS_FILE} (made by an older runner): "
                  f"it is taken to hold a run with these parameters")
        atomic_write_text(out / RUN_PARAMS_FILE, json.dumps(plan.manifest, indent=1) + "\n")


def _command_line(plan: _Plan, only) -> str:
    parts = ["python -m simo_lite.course run --profile", plan.profile, "--seed", str(plan.seed)]
    if only:
        parts += ["--only", *[str(o).zfill(2) for o in only]]
    parts += [f"-p {k} {v}" for k, v in plan.params.items()]
    if plan.explicit_dir:
        parts += ["--run-dir", str(plan.out)]
    return " ".join(parts)


def run(profile: str | None = None, seed: int | None = None, only: Iterable[str | int] | None = None,
        params: dict | None = None, run_dir: str | None = None, timeout_s: int | None = None,
        quiet: bool = False) -> Path:
    """Execute the notebooks with papermill into their run folder and write ``report.md``; return the folder.

    The folder is ``run_dir`` if given, else :func:`default_run_dir` of the run's parameters
    (``runs/cpu-1-merge_method=ties``). ``params`` are notebook parameters; ``profile``, ``seed`` and
    ``run_dir`` may be given either way (values that disagree are an error). Each notebook gets only
    the parameters its ``parameters`` cell declares; a name no selected notebook declares, an
    unknown notebook number, dataset or profile, a folder that is a file or holds a run made with
    other parameters, raise :class:`UsageError` before anything runs.

    Each notebook executes into ``.<name>.running.ipynb`` and replaces ``<name>.ipynb`` only when it
    completes; a failed or interrupted one is kept as ``<name>.failed.ipynb`` (marked so in its first
    cell) and raises :class:`NotebookFailed` (or ``KeyboardInterrupt``) with the notebook's own error.
    """
    plan = _plan_run(profile, seed, only, params, run_dir, timeout_s)
    _start_run_dir(plan)
    return _execute(plan, _command_line(plan, only), quiet=quiet)


def _execute(plan: _Plan, command: str, quiet: bool = False) -> Path:
    import papermill as pm

    out = plan.out
    for b in plan.skipped:
        print(f"skipping {b.name}: {SCENES_ONLY[b.name[:2]][1]}")
    n = len(plan.books)
    for i, (nb, nb_params) in enumerate(plan.books, 1):
        target, running = out / nb.name, out / f".{nb.stem}.running.ipynb"
        failed, klog = out / f"{nb.stem}.failed.ipynb", out / f".{nb.stem}.kernel.log"
        print(f"[{i}/{n}] {nb.name} ({plan.profile}) ...", end="", flush=True)
        t0 = time.perf_counter()
        ctrl_c = _CtrlC()
        try:
            try:
                with open(klog, "w") as log, ctrl_c:
                    pm.execute_notebook(str(nb), str(running), parameters=nb_params, kernel_name="python3",
                                        progress_bar=False, cwd=str(NOTEBOOK_DIR),
                                        execution_timeout=plan.timeout_s, log_output=False,
                                        kernel_manager_class=_kernel_manager_class(log),
                                        # the kernel is idle and every write done when the last cell ends:
                                        # stop it at once (a graceful stop costs 1.5-2.8 s per notebook)
                                        shutdown_kernel="immediate", engine_name=_papermill_engine())
            except Exception:
                if ctrl_c.pressed:      # Ctrl-C reaches the kernel too (same process group) and fails its cell
                    raise KeyboardInterrupt from None
                raise
            if ctrl_c.pressed:          # swallowed inside papermill/nbclient: still an interrupted run
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            dt = time.perf_counter() - t0
            with _no_sigint():
                print(" interrupted", flush=True)
                kept = _keep_failed(running, failed, f"interrupted (Ctrl-C) after {dt:.0f} s")
                klog.unlink(missing_ok=True)
            raise KeyboardInterrupt(
                f"interrupted: {nb.name} stopped after {dt:.0f} s"
                + (f"; the partial notebook is kept as {kept}" if kept else "")
                + (f"; {target} (the last complete run) is untouched" if target.exists() else "")) from None
        except Exception as e:  # papermill raises PapermillExecutionError with the failing cell
            dt = time.perf_counter() - t0
            with _no_sigint():
                print(f" FAILED after {dt:.0f} s", flush=True)
                message = _failure_message(nb.name, e)
                kept = _keep_failed(running, failed, message)
                # the kernel's own log only tells why a kernel died (else: shut-down noise)
                died = type(e).__name__ == "DeadKernelError"
                log_text = klog.read_text(errors="replace").strip() if died and klog.exists() else ""
                if not log_text:
                    klog.unlink(missing_ok=True)
            raise NotebookFailed(
                message + (f"\n  executed notebook (marked failed): {kept}" if kept else "")
                + (f"\n  {target} (the last complete run) is untouched" if target.exists() else "")
                + (f"\n  kernel log: {klog}" if log_text else ""), out) from None
        with _no_sigint():
            os.replace(running, target)
            failed.unlink(missing_ok=True)
            klog.unlink(missing_ok=True)
            dt = time.perf_counter() - t0
            _merge_runtimes(out, plan.profile, {nb.name: dt})
        print(f" done in {dt:.0f} s")
    write_run_meta(out, command, device=str(plan.params.get("device", "auto")))
    report = write_report(out)
    if not quiet:
        print(f"\nexecuted notebooks: {out}\nfigures:            {out / 'figures'}\n"
              f"results:            {out / 'results'}\nreport:             {report}")
    return out


class _Sigint:
    """Installs ``handler`` for SIGINT during the block and puts the previous handler back after it
    (outside the main thread, where signals cannot be handled, it does nothing)."""

    def __init__(self, handler):
        self._handler = handler

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:              # not the main thread
            self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


class _CtrlC(_Sigint):
    """Remembers a Ctrl-C (SIGINT) during the block and raises ``KeyboardInterrupt`` as usual.

    Libraries in the call (papermill, nbclient, the kernel's own interrupt) may swallow the
    ``KeyboardInterrupt`` or turn it into a cell error; ``pressed`` still says it happened, so an
    interrupted notebook is never taken for a complete or a failed one."""

    def __init__(self):
        super().__init__(self._pressed)
        self.pressed = False

    def _pressed(self, signum, frame):
        self.pressed = True
        raise KeyboardInterrupt


def _no_sigint() -> _Sigint:
    """Ctrl-C waits until the block is done (moving a notebook into place is never half done)."""
    return _Sigint(signal.SIG_IGN)


SAVE_EVERY_S = 1.0      # the running notebook is written at most this often while its cells run


@functools.cache
def _papermill_engine() -> str:
    """Register (on the first call) and name papermill's nbclient engine with sparser saves of the running
    notebook.

    papermill writes the whole notebook before and after every cell, markdown cells included: 120-170
    writes of a notebook that grows to 0.3-0.7 MB, about 1 s of a smoke notebook's 6-13 s. This engine
    writes it at most every :data:`SAVE_EVERY_S` seconds while cells run, and always at the end (papermill
    saves in ``notebook_complete`` whether the run succeeded, failed or was interrupted), so a killed run
    loses at most the last second of outputs from its partial notebook."""
    from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

    name = "simo_lite"

    class SparseSaves(NotebookExecutionManager):
        def save(self, **kw):
            if self.end_time is None and (self.now() - self.last_save_time).total_seconds() < SAVE_EVERY_S:
                return
            super().save(**kw)

    class Engine(NBClientEngine):
        @classmethod
        def execute_notebook(cls, nb, kernel_name, output_path=None, progress_bar=True, log_output=False,
                             autosave_cell_every=30, **kwargs):
            # papermill's Engine.execute_notebook (which has no hook for the manager) with the manager above
            nb_man = SparseSaves(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                                 autosave_cell_every=autosave_cell_every)
            nb_man.notebook_start()
            try:
                cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
            finally:
                nb_man.cleanup_pbar()
                nb_man.notebook_complete()
            return nb_man.nb

    papermill_engines.register(name, Engine)
    return name


def _kernel_manager_class(log):
    """The kernels' manager: their stderr (start-up and shut-down logs, not cell output) goes to ``log``,
    and the kernel channels are encrypted (CurveZMQ) when pyzmq and the kernel support it, which is
    also what ends ipykernel's warning about TCP without encryption."""
    import zmq
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    async def start_kernel(self, **kw):
        kw.setdefault("stderr", log)
        return await AsyncKernelManager.start_kernel(self, **kw)

    attrs = {"start_kernel": start_kernel}
    if "transport_encryption" in AsyncKernelManager.class_trait_names() and zmq.has("curve"):
        attrs["_course_encryption_default"] = default("transport_encryption")(lambda self: "auto")
    return type("CourseKernelManager", (AsyncKernelManager,), attrs)


def _failure_message(name: str, e: BaseException) -> str:
    """``03_merging.ipynb failed in cell 5: ValueError: merge_method must be one of ...``."""
    ename = getattr(e, "ename", None)
    if ename is not None:               # PapermillExecutionError: the notebook's own exception
        cell = getattr(e, "exec_count", None) or getattr(e, "cell_index", "?")
        evalue = (getattr(e, "evalue", "") or "").strip()
        return f"{name} failed in cell {cell}: {ename}" + (f": {evalue}" if evalue else "")
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{name} failed: {type(e).__name__}" + (f": {lines[0]}" if lines else "")


def _keep_failed(running: Path, failed: Path, why: str) -> Path | None:
    """Mark the partial notebook as failed (a first markdown cell and metadata) and keep it as ``failed``."""
    if not running.exists():
        return None
    try:
        import nbformat
        nb = nbformat.read(str(running), as_version=4)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        nb.metadata["simo_lite"] = {"status": "failed", "error": why, "when": stamp}
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(
            f"**THIS RUN FAILED — not a complete run** ({stamp}).\n\n`{why}`\n\nThe course runner kept this "
            f"partial notebook as `{failed.name}`; `{failed.name.replace('.failed', '')}`, if present, is the "
            f"last complete run.", metadata={"tags": ["simo-lite-failed"]}))
        atomic_write_text(failed, nbformat.writes(nb))
        running.unlink(missing_ok=True)
    except Exception:                   # unreadable partial file: keep it as it is, under the failed name
        os.replace(running, failed)
    return failed


def _torch_version() -> str:
    """torch's installed version, without importing torch."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("torch")
    except PackageNotFoundError:
        return "?"


def _device_guess(device: str = "auto") -> str:
    """The device of ``device`` (``auto``: CUDA when present) without importing torch, unless it is loaded."""
    if "torch" in sys.modules:
        return str(P.resolve_device(device))
    if device != "auto":
        return device
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1") or "+cpu" in _torch_version():
        return "cpu"
    gpus = Path("/proc/driver/nvidia/gpus")
    return "cuda" if gpus.is_dir() and any(gpus.iterdir()) else "cpu"


def write_run_meta(out: Path, command: str, device: str = "auto") -> Path:
    """``<run_dir>/run-meta.json``: when, where and how the run was made (read by docs/results.md)."""
    import datetime
    import platform
    import socket
    cpu_model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "hostname": socket.gethostname(), "cpu_model": cpu_model, "cpu_count": os.cpu_count(),
            "torch": _torch_version(), "device": _device_guess(device), "command": command}
    return atomic_write_text(Path(out) / "run-meta.json", json.dumps(meta, indent=1))


def _merge_runtimes(out: Path, profile: str, runtimes: dict) -> None:
    path = Path(out) / "runtimes.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update({k: round(v, 1) for k, v in runtimes.items()})
    atomic_write_text(path, json.dumps(old, indent=1))


def write_report(out: Path) -> Path:
    """Render ``report.md`` from the run directory: runtimes, results tables and figure links
    (:func:`simo_lite.report.run_report`)."""
    from ..report import run_report
    return atomic_write_text(Path(out) / "report.md", run_report(out))


def _results_snapshot(out: Path) -> dict:
    d = Path(out) / "results"
    if not d.is_dir():
        return {}
    snap = {}
    for f in d.glob("*.json"):
        try:
            st = f.stat()
        except OSError:
            continue
        snap[f.name] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return snap


def run_label(profile: str, seed: int, dataset: str = DEFAULT_DATASET, *, params: dict | None = None) -> str:
    """The name of a run's configuration: its :func:`default_run_dir` folder name without the seed
    (``smoke-1-merge_method=ties`` -> ``smoke-merge_method=ties``, ``cpu-0`` -> ``cpu``), the ``run``
    of its rows in a multi-seed collection (:func:`simo_lite.report.tidy_rows`)."""
    name = default_run_dir(profile, seed, dataset, params=params, root=Path("/")).name
    prefix = f"{profile}-{seed}" if dataset == DEFAULT_DATASET else f"{profile}-{dataset}-{seed}"
    return prefix[:-len(f"-{seed}")] + name[len(prefix):]


def sweep(grid_file: str, profile: str | None = None, only: Sequence[str | int] | None = None, collect: str = "",
          run_dir: str | None = None, yes: bool = False, workers: int = 1, threads: int | None = None,
          executor: str | None = None) -> Path:
    """Run every combination of a YAML grid (``{param: [values, ...]}``) and tabulate the outcomes.

    Each combination runs into ``<run_dir>/<its default_run_dir name>`` (``run_dir`` defaults to
    ``runs/sweep-<grid name>``), e.g. ``runs/sweep-grid/smoke-0-merge_method=ties,ties_k=0.5``, whose
    ``run-params.json`` records its parameters. The table (``sweep.md``, ``sweep.json`` in ``run_dir``,
    rewritten after every combination) lists each combination's parameters, its status and every
    numeric entry of the ``results/*.json`` files its own run wrote (only keys containing ``collect``,
    if given); results already in a reused folder are never collected. The grid is checked before
    anything runs: unknown parameter names (with the valid ones), empty or repeated value lists, and
    every combination's run folder; more than :data:`SWEEP_CONFIRM_RUNS` runs need ``yes``. A failed
    combination is marked in the table and the others still run; then :class:`NotebookFailed` is raised.

    ``executor`` (:data:`simo_lite.classroom.executor.EXECUTORS`; default ``serial`` for one worker,
    else ``pool``) runs the combinations one after the other in this process (``serial``), or
    ``workers`` at a time in worker processes (``pool``; ``submitit``: Slurm or submitit's local
    executor), each with ``threads`` torch/OpenMP threads (inherited by its notebook kernels; default:
    the cores shared between the workers); a worker's notebook output goes to its run folder's
    ``sweep.log``. The results tables (``results/table-*.json``) the runs wrote are collected in
    ``<runs folder>/sweeps/<grid name>/`` (tidy table, mean ± SD across seeds, a Δm plot:
    :func:`simo_lite.multiseed.write_collection`).
    """
    import yaml

    from .executor import EXECUTORS
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError(f"--workers must be a positive integer, got {workers!r}")
    mode = executor or ("pool" if workers > 1 else "serial")
    if mode not in EXECUTORS:
        raise UsageError(f"unknown executor {mode!r}; valid executors: {', '.join(EXECUTORS)}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"--threads must be a positive integer, got {threads!r}")
    if mode == "serial" and workers > 1:
        raise UsageError(f"--workers {workers} runs combinations in worker processes: give --executor pool or "
                         f"submitit, not serial")
    path = Path(grid_file)
    try:
        grid = yaml.safe_load(path.read_text())
    except OSError as e:
        raise UsageError(f"cannot read grid file {grid_file}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{grid_file} is not valid YAML: {e}") from None
    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) for v in grid.values()):
        raise UsageError(f"{grid_file}: expected a mapping of parameter -> list of values, e.g. "
                         f"'merge_method: [ta, ties]'")
    for k, values in grid.items():
        if not values:
            raise UsageError(f"{grid_file}: {k!r} has an empty list of values, which gives zero runs; "
                             f"give at least one value")
        if any(isinstance(v, (list, dict)) or v is None for v in values):
            raise UsageError(f"{grid_file}: {k!r}: every value must be a number, text or true/false, got {values}")
        seen = [v for i, v in enumerate(values) if any(_same(v, w) for w in values[:i])]
        if seen:
            raise UsageError(f"{grid_file}: {k!r} lists {seen[0]!r} more than once (the same run twice)")
    if "run_dir" in grid:
        raise UsageError(f"{grid_file}: run_dir cannot be swept: every combination gets its own folder "
                         f"under the sweep's --run-dir")
    if "profile" in grid and profile is not None:
        raise UsageError(f"{grid_file} sweeps profile and --profile {profile} is given: give one")
    books = notebooks(only)
    _check_known(grid, sorted(set().union(*(notebook_parameters(b) for b in books))), books, f"{grid_file}: ")
    profile = profile or "smoke"
    base = Path(run_dir).expanduser().absolute() if run_dir else runs_root() / f"sweep-{path.stem}"
    for p in (base, *base.parents):
        if p.exists() and not p.is_dir():
            where = "is a file" if p == base else f"lies under {p}, which is a file"
            raise UsageError(f"sweep folder {base} {where}, not a folder: pass another --run-dir")
        if p.exists():
            break
    keys = list(grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*grid.values())]
    plans = []
    for combo in combos:            # every combination is checked before the first one runs
        params = dict(combo)
        prof = params.pop("profile", profile)
        plans.append(_plan_run(prof, None, only, params, None, root=base))
    folders = [p.out for p in plans]
    if len(set(folders)) < len(folders):
        dup = next(f for f in folders if folders.count(f) > 1)
        raise UsageError(f"{grid_file}: two combinations are the same run ({dup.name}): remove the repeated value")
    shape = " x ".join(f"{len(v)} {k}" for k, v in grid.items())
    print(f"sweep {path.stem}: {len(combos)} run{'s' if len(combos) != 1 else ''} ({shape}) of "
          f"{', '.join(b.stem for b in books)} in {base}")
    if len(combos) > SWEEP_CONFIRM_RUNS and not yes:
        raise UsageError(f"{grid_file} has {len(combos)} combinations (more than {SWEEP_CONFIRM_RUNS}): "
                         f"pass --yes to run them all")
    base.mkdir(parents=True, exist_ok=True)
    rows = [{**combo, **({} if "seed" in combo else {"seed": plan.seed}), "status": "not run",
             "run_dir": str(plan.out)} for combo, plan in zip(combos, plans)]
    failures = []
    tables: dict[int, list[str]] = {}         # the results tables each finished run wrote

    def record(k: int, outcome: tuple[dict, str, list[str]]) -> None:
        update, message, written = outcome
        rows[k].update(update)
        if message:                 # marked in the table; the other combinations still run
            failures.append(message.splitlines()[0])
            print(message, file=sys.stderr)
        tables[k] = written

    table = base / "sweep.md"
    if mode == "serial":
        from .executor import pinned_threads
        for k, (combo, plan) in enumerate(zip(combos, plans)):
            print(f"== sweep {k + 1}/{len(combos)}: {combo} -> {plan.out.name}")
            try:
                with pinned_threads(threads):
                    outcome = _run_combination(plan, f"python -m simo_lite.course sweep {grid_file} "
                                                     f"(combination {combo})", collect)
            except KeyboardInterrupt as e:
                rows[k]["status"] = "interrupted"
                with _no_sigint():
                    table = _write_sweep_table(base, rows)
                raise KeyboardInterrupt(f"{e or 'interrupted'}; the sweep table of the finished runs: {table}") from None
            record(k, outcome)
            table = _write_sweep_table(base, rows)
    else:
        table = _sweep_in_workers(grid_file, combos, plans, rows, base, collect, record, mode, workers, threads)
    print(table.read_text())
    _collect_sweep(path.stem, plans, rows, tables)
    if failures:
        raise NotebookFailed(f"{len(failures)} of {len(combos)} sweep runs failed (table: {table}):\n  "
                             + "\n  ".join(failures), base)
    return base


def _run_combination(plan: _Plan, command: str, collect: str = "", log: bool = False) -> tuple[dict, str, list[str]]:
    """Run one sweep combination into its folder: (its table row's update: status and the collected
    results, the failure message or "", the ``table-*.json`` files it wrote). ``log``: the notebooks'
    output goes to ``<run folder>/sweep.log`` (a worker process). Module-level: a job for the executors."""
    import contextlib
    before = _results_snapshot(plan.out)
    try:
        _start_run_dir(plan)
        with contextlib.ExitStack() as stack:
            if log:
                out = stack.enter_context(open(plan.out / "sweep.log", "w", buffering=1))
                stack.enter_context(contextlib.redirect_stdout(out))
                stack.enter_context(contextlib.redirect_stderr(out))
            _execute(plan, command)
    except (NotebookFailed, UsageError) as e:
        message = getattr(e, "message", str(e))
        return {"status": "failed: " + message.splitlines()[0]}, message, []
    flat: dict = {}
    after = _results_snapshot(plan.out)
    written = sorted(n for n, st in after.items() if before.get(n) != st)     # written by this run only
    for name in written:
        f = plan.out / "results" / name
        _flatten(json.loads(f.read_text()), f.stem, flat)
    return ({"status": "ok", **{n: v for n, v in flat.items() if collect in n}}, "",
            [n for n in written if n.startswith("table-")])


def _sweep_in_workers(grid_file: str, combos: list[dict], plans: list[_Plan], rows: list[dict], base: Path,
                      collect: str, record, mode: str, workers: int, threads: int | None) -> Path:
    """The combinations as jobs of :func:`simo_lite.classroom.executor.run_jobs`; the table is rewritten
    as each one finishes. Returns the table's path."""
    from .executor import Job, default_threads, run_jobs
    threads = default_threads(workers) if threads is None else threads
    print(f"== sweep on {mode}: {min(workers, len(combos))} at a time, {threads} thread{'s' if threads != 1 else ''} "
          f"each; each run's notebook output in <run folder>/sweep.log")
    jobs = [Job(_run_combination, (plan, f"python -m simo_lite.course sweep {grid_file} (combination {combo})",
                                   collect, True), name=plan.out.name) for combo, plan in zip(combos, plans)]
    finished = []
    table = base / "sweep.md"

    def done(k: int, job: Job, result) -> None:
        nonlocal table
        finished.append(k)
        if isinstance(result, BaseException):       # the job itself broke (its worker died, ...)
            message = f"{plans[k].out.name}: {type(result).__name__}: {result}".strip()
            result = ({"status": "failed: " + message.splitlines()[0]}, message, [])
        print(f"== sweep {len(finished)}/{len(combos)} done: {combos[k]} -> {plans[k].out.name}: "
              f"{result[0]['status'].splitlines()[0]}")
        record(k, result)
        table = _write_sweep_table(base, rows)

    try:
        run_jobs(jobs, executor=mode, workers=workers, threads=threads, folder=base / ".submitit", on_done=done)
    except KeyboardInterrupt as e:
        for k in range(len(rows)):
            if k not in finished:
                rows[k]["status"] = "interrupted"
        with _no_sigint():
            table = _write_sweep_table(base, rows)
        raise KeyboardInterrupt(f"{e or 'interrupted'}; the sweep table of the finished runs: {table}") from None
    return table


def _collect_sweep(name: str, plans: list[_Plan], rows: list[dict], tables: dict[int, list[str]]) -> Path | None:
    """The results tables the sweep's runs wrote, in ``<runs folder>/sweeps/<name>/`` (nothing when
    none wrote one): :func:`simo_lite.multiseed.write_collection`."""
    from .. import multiseed, report
    tidy = []
    for k, written in sorted(tables.items()):
        if not written or rows[k]["status"] != "ok":
            continue
        plan = plans[k]
        label = run_label(plan.profile, plan.seed, plan.dataset, params=plan.params)
        for records, names in multiseed.read_tables(plan.out, written):
            tidy += report.tidy_rows(records, run=label, seed=plan.seed, metric_names=names)
    if not tidy:
        return None
    folder = runs_root() / multiseed.COLLECTION_DIR / name
    paths = multiseed.write_collection(tidy, folder, title=f"sweep {name}")
    print(f"collected {len(tidy)} tidy rows of {sum(1 for w in tables.values() if w)} runs in {folder}: "
          f"{', '.join(paths)}")
    return folder


def _write_sweep_table(base: Path, rows: list[dict]) -> Path:
    """``sweep.md`` (status and results per combination, folder last; :func:`simo_lite.report.sweep_markdown`)
    and ``sweep.json``, atomically."""
    from ..report import sweep_markdown
    atomic_write_text(base / "sweep.json", json.dumps(rows, indent=1))
    return atomic_write_text(base / "sweep.md", sweep_markdown(rows))


def _flatten(obj, prefix: str, out: dict) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}", out)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = obj


def main(argv: Sequence[str] | None = None) -> None:
    """Command line of ``python -m simo_lite.course``: ``run`` the notebooks in order or ``sweep`` a YAML
    grid; exits with status 2 on a usage error, 1 when a notebook fails, 130 when interrupted."""
    from .executor import EXECUTORS
    ap = argparse.ArgumentParser(prog="python -m simo_lite.course", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute the course notebooks in order")
    r.add_argument("--profile", default=None, choices=sorted(P.PROFILES), help="default: cpu (same as -p profile)")
    r.add_argument("--seed", type=int, default=None, help="default: 0 (same as -p seed)")
    r.add_argument("--only", nargs="+", help="notebook numbers, e.g. 00 03")
    r.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[], help="notebook parameter")
    r.add_argument("--run-dir", default=None, help="the run's folder (same as -p run_dir; default: named by "
                                                   "the parameters under the runs folder)")
    r.add_argument("--runs-root", default=None, help="folder of the run folders (default: $SIMO_LITE_RUNS or runs/)")
    r.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: profile budget)")
    s = sub.add_parser("sweep", help="run a YAML parameter grid and tabulate results")
    s.add_argument("grid")
    s.add_argument("--profile", default=None, choices=sorted(P.PROFILES), help="default: smoke")
    s.add_argument("--only", nargs="+")
    s.add_argument("--collect", default="", help="only tabulate result keys containing this text")
    s.add_argument("--run-dir", default=None, help="the sweep's folder (default: <runs folder>/sweep-<grid name>)")
    s.add_argument("--runs-root", default=None, help="folder of the run folders (default: $SIMO_LITE_RUNS or runs/)")
    s.add_argument("--yes", action="store_true", help=f"run a grid of more than {SWEEP_CONFIRM_RUNS} combinations")
    s.add_argument("--workers", type=int, default=1, help="combinations run at a time, in worker processes "
                                                          "(default 1: one after the other, in this process)")
    s.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads of each run (default: the "
                                                             "cores shared between the workers)")
    s.add_argument("--executor", default=None, choices=EXECUTORS,
                   help="serial (this process), pool (local worker processes) or submitit (Slurm, else "
                        "submitit's local executor); default: serial for one worker, else pool")
    args = ap.parse_args(argv)
    try:
        if args.runs_root:
            os.environ["SIMO_LITE_RUNS"] = str(Path(args.runs_root).expanduser().absolute())
        if args.cmd == "run":
            defaults = {k: v[0] for k, v in _course_defaults().items()}
            params = {k: _coerce(v, defaults.get(k)) for k, v in args.p}
            run(args.profile, args.seed, args.only, params, args.run_dir, args.timeout)
        else:
            sweep(args.grid, args.profile, args.only, args.collect, args.run_dir, args.yes, workers=args.workers,
                  threads=args.threads, executor=args.executor)
    except UsageError as e:
        print(f"{ap.prog} {args.cmd}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except NotebookFailed as e:
        print(e.message, file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:
        print(str(e) or "interrupted", file=sys.stderr)
        sys.exit(130)


def cli() -> None:
    """``python -m simo_lite.course``: :func:`main` on the command line; Ctrl-C outside the runner's own
    handling (e.g. while importing) still ends with one line and exit status 130."""
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
