"""The course: notebook set-up helpers and the runner that executes the notebooks with papermill.

In a notebook (after the ``parameters`` cell)::

    ctx = simo_lite.course.setup(profile=profile, seed=seed, run_dir=run_dir, device=device,
                                 show_progress=show_progress)
    ctx.save_figure(fig, "samples")          # -> <run_dir>/figures/<notebook>-samples.png
    ctx.save_results("00_scenes", {...})     # -> <run_dir>/results/00_scenes.json

From a shell::

    python -m simo_lite.course run --profile cpu            # all notebooks, in order
    python -m simo_lite.course run --profile smoke --only 00 -p seed 1
    python -m simo_lite.course sweep grid.yaml               # parameter grid for assignments
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__
from . import profiles as P
from .training import progress_enabled

__all__ = ["Course", "setup", "notebooks", "run", "sweep", "REPO", "NOTEBOOK_BUDGET_S"]

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
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

    @property
    def figures(self) -> Path:
        return self.run_dir / "figures"

    @property
    def results(self) -> Path:
        return self.run_dir / "results"

    def save_figure(self, fig, name: str, notebook: str = "") -> Path:
        """Save a matplotlib figure as PNG under ``<run_dir>/figures`` and return its path."""
        self.figures.mkdir(parents=True, exist_ok=True)
        path = self.figures / f"{notebook + '-' if notebook else ''}{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        return path

    def save_results(self, name: str, results: dict) -> Path:
        """Write ``results`` as JSON to ``<run_dir>/results/<name>.json`` (atomic)."""
        self.results.mkdir(parents=True, exist_ok=True)
        path = self.results / f"{name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=1, default=float))
        os.replace(tmp, path)
        return path


def default_run_dir(profile: str, seed: int, dataset: str = "scenes") -> Path:
    """``runs/<profile>-<seed>``, or ``runs/<profile>-<dataset>-<seed>`` for a real dataset."""
    return REPO / "runs" / (f"{profile}-{seed}" if dataset == "scenes" else f"{profile}-{dataset}-{seed}")


def setup(profile: str = "cpu", seed: int = 0, run_dir: str = "", device: str = "auto",
          show_progress: bool = True, expect_version: str | None = None, dataset: str = "scenes",
          data_dir: str = "", backbone: str = "", weights: str = "", **overrides) -> Course:
    """Validate notebook parameters and return a :class:`Course`; prints a one-line summary.

    ``run_dir`` empty means ``runs/<profile>-<seed>`` in the repository (``runs/<profile>-<dataset>-<seed>``
    for a real dataset). ``dataset``/``data_dir`` pick the data (``scenes`` is rendered offline),
    ``backbone``/``weights`` a timm ViT loaded from a local file (docs/real-data.md). Invalid values
    stop with an error that lists the valid ones.
    """
    if expect_version is not None and expect_version != __version__:
        raise RuntimeError(f"this notebook expects simo_lite {expect_version}, found {__version__}: "
                           f"reinstall with `pip install -e .` from the repository")
    prof = P.validate(P.get(profile, dataset=dataset, data_dir=str(data_dir), backbone=backbone,
                            weights=str(weights), **overrides))
    prof = real_data_profile(prof, overrides)
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    dev = P.resolve_device(device)
    path = Path(run_dir) if run_dir else default_run_dir(prof.name, seed, prof.dataset)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    ctx = Course(prof, seed, dev, path, progress_enabled(show_progress))
    print(f"simo_lite {__version__} | torch {torch.__version__} | profile {prof.name} | seed {seed} | "
          f"device {dev} | run_dir {path}"
          + ("" if prof.dataset == "scenes" else f" | dataset {prof.dataset} ({prof.data_dir})")
          + (f" | backbone {prof.backbone} ({prof.weights})" if prof.backbone else ""))
    return ctx


def real_data_profile(prof: P.Profile, overrides: dict | None = None) -> P.Profile:
    """Fill a profile's fields from a timm backbone (patch, width, depth, heads) and a real dataset
    (split sizes from the files; augmentation on unless ``overrides`` says otherwise)."""
    overrides = overrides or {}
    fields = {}
    if prof.backbone:
        from .backbones import backbone_dims
        fields.update({k: v for k, v in backbone_dims(prof.backbone).items() if k not in overrides})
    if prof.dataset != "scenes":
        from .datasets import split_sizes
        sizes = split_sizes(prof.dataset, prof.data_dir)
        fields.update(n_train=sizes["train"], n_val=sizes["val"], n_test=sizes["test"])
        fields.setdefault("augment", overrides.get("augment", True))
    return P.get(prof, **fields) if fields else prof


# ----------------------------------------------------------------------------------------------
# Runner
# ----------------------------------------------------------------------------------------------
def notebooks(only=None) -> list[Path]:
    """The course notebooks in order (``NN_name.ipynb``), optionally only those whose prefix is in ``only``."""
    books = sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {str(o).zfill(2) for o in only}
        unknown = wanted - {b.name[:2] for b in books}
        if unknown:
            raise ValueError(f"no notebook numbered {sorted(unknown)}; have {[b.name[:2] for b in books]}")
        books = [b for b in books if b.name[:2] in wanted]
    return books


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
    value = parameters.get(name, "scenes" if name == "dataset" else "")
    return value not in ("", "scenes")


def _coerce(value: str):
    """Command-line parameter values: int, float, bool or string."""
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


def run(profile: str = "cpu", seed: int = 0, only=None, params: dict | None = None, run_dir: str | None = None,
        timeout_s: int | None = None, quiet: bool = False) -> Path:
    """Execute the notebooks with papermill into ``runs/<profile>-<seed>/`` and write ``report.md``."""
    import papermill as pm

    P.get(profile)  # validate early
    dataset = (params or {}).get("dataset", "scenes")
    out = Path(run_dir) if run_dir else default_run_dir(profile, seed, dataset)
    out.mkdir(parents=True, exist_ok=True)
    parameters = {"profile": profile, "seed": seed, "run_dir": str(out), "show_progress": False, **(params or {})}
    if dataset != "scenes" and "tasks" not in parameters:     # the dataset's labelled tasks, in every notebook
        from .datasets import DATASET_TASKS
        parameters["tasks"] = ",".join(DATASET_TASKS[dataset])
        own = DATASET_TASKS[dataset]        # 08 compares with a smaller set: the first two (or one) tasks
        parameters.setdefault("compare_tasks", ",".join(own[:2] if len(own) > 2 else own[:1]))
    timeout_s = timeout_s or NOTEBOOK_BUDGET_S.get(profile, 1800)
    runtimes = {}
    books = notebooks(only)
    skipped = [b for b in books if _scenes_only(b.name[:2], parameters)]
    for b in skipped:
        print(f"skipping {b.name}: {SCENES_ONLY[b.name[:2]][1]}")
    books = [b for b in books if b not in skipped]
    for i, nb in enumerate(books, 1):
        target = out / nb.name
        print(f"[{i}/{len(books)}] {nb.name} ({profile}) ...", end="", flush=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(target), parameters=parameters, kernel_name="python3",
                                progress_bar=False, cwd=str(NOTEBOOK_DIR), execution_timeout=timeout_s,
                                log_output=False)
        except Exception as e:  # papermill raises PapermillExecutionError with the failing cell
            print(f" FAILED after {time.perf_counter() - t0:.0f} s; see {target}")
            raise SystemExit(f"{nb.name} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        runtimes[nb.name] = time.perf_counter() - t0
        print(f" done in {runtimes[nb.name]:.0f} s")
    _merge_runtimes(out, profile, runtimes)
    write_run_meta(out, "python -m simo_lite.course run --profile " + profile
                   + "".join(f" -p {k} {v}" for k, v in (params or {}).items()))
    report = write_report(out)
    print(f"\nexecuted notebooks: {out}\nfigures:            {out / 'figures'}\n"
          f"results:            {out / 'results'}\nreport:             {report}")
    return out


def write_run_meta(out: Path, command: str) -> Path:
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
            "torch": torch.__version__, "device": str(P.resolve_device("auto")), "command": command}
    path = Path(out) / "run-meta.json"
    path.write_text(json.dumps(meta, indent=1))
    return path


def _merge_runtimes(out: Path, profile: str, runtimes: dict) -> None:
    path = out / "runtimes.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update({k: round(v, 1) for k, v in runtimes.items()})
    path.write_text(json.dumps(old, indent=1))


def write_report(out: Path) -> Path:
    """Render ``report.md`` from the run directory: runtimes, results tables and figure links."""
    out = Path(out)
    lines = [f"# simo_lite course run: {out.name}", ""]
    rt = out / "runtimes.json"
    if rt.exists():
        lines += ["## Runtimes", "", "| notebook | seconds |", "|---|---|"]
        for k, v in json.loads(rt.read_text()).items():
            lines.append(f"| {k} | {v:.0f} |")
        lines.append("")
    for md in sorted((out / "results").glob("*.md")):
        lines += [md.read_text().strip(), ""]
    figs = sorted((out / "figures").glob("*.png"))
    if figs:
        lines += ["## Figures", ""] + [f"- [{f.name}](figures/{f.name})" for f in figs]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def sweep(grid_file: str, profile: str = "smoke", only=None, collect: str = "") -> Path:
    """Run every combination of a YAML grid (``{param: [values, ...]}``) and tabulate the outcomes.

    Each combination runs into ``runs/sweep-<name>/<k>/``; the table (``sweep.md``) lists the parameters
    and every numeric entry of each run's ``results/*.json`` (or only keys containing ``collect``).
    """
    import yaml
    grid = yaml.safe_load(Path(grid_file).read_text())
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        raise ValueError(f"{grid_file}: expected a mapping of parameter -> list of values")
    keys = list(grid)
    base = REPO / "runs" / f"sweep-{Path(grid_file).stem}"
    rows = []
    for k, values in enumerate(itertools.product(*grid.values())):
        params = dict(zip(keys, values))
        seed = int(params.pop("seed", 0))
        print(f"== sweep {k}: {params} seed={seed}")
        out = run(profile, seed, only=only, params=params, run_dir=str(base / str(k)))
        flat = {}
        for f in sorted((out / "results").glob("*.json")):
            _flatten(json.loads(f.read_text()), f.stem, flat)
        rows.append({**params, "seed": seed, **{n: v for n, v in flat.items() if collect in n}})
    cols = list(dict.fromkeys(c for r in rows for c in r))
    table = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        table.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    (base / "sweep.md").write_text("\n".join(table) + "\n")
    (base / "sweep.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(table))
    return base


def _flatten(obj, prefix: str, out: dict) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}", out)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = obj


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m simo_lite.course", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute the course notebooks in order")
    r.add_argument("--profile", default="cpu", choices=sorted(P.PROFILES))
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--only", nargs="+", help="notebook numbers, e.g. 00 03")
    r.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[], help="notebook parameter")
    r.add_argument("--run-dir", default=None)
    r.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: profile budget)")
    s = sub.add_parser("sweep", help="run a YAML parameter grid and tabulate results")
    s.add_argument("grid")
    s.add_argument("--profile", default="smoke", choices=sorted(P.PROFILES))
    s.add_argument("--only", nargs="+")
    s.add_argument("--collect", default="", help="only tabulate result keys containing this text")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        run(args.profile, args.seed, args.only, {k: _coerce(v) for k, v in args.p}, args.run_dir, args.timeout)
    else:
        sweep(args.grid, args.profile, args.only, args.collect)


if __name__ == "__main__":
    main(sys.argv[1:])
