"""The shipped expert (and MTL) checkpoints in ``data/``: write them, and say which ones match.

Converged experts take longer to train than a class has (the cpu course runs in minutes), so the
repository ships the cpu profile's models of the default task sets, like the foundation encoder:
``data/models-<profile>/<name>-<key>/`` (``encoder.safetensors``, ``head-<task>.safetensors``,
``record.json``, every file carrying the model's store key) and the manifest
``data/models-<profile>.json`` (the command, every file's sha256, the training record: steps, seconds,
test metrics, the validation-loss tail). :func:`simo_lite.training.train_expert` and ``train_mtl``
load a shipped model when its key matches the run's (same recipe, profile, seed, data and foundation)
and copy it into the run directory; any other configuration trains as before.

The realignments the course trains (heads, or adapters + heads: 0.1–1.1 MB each in the cpu profile) ship the
same way in ``data/models-<profile>/realign/`` (``--realign SET:METHOD+FIX[:OPTION=VALUE...]``, FIX head,
repr or lora), loaded by :mod:`simo_lite.realign` when their key matches.

    python -m simo_lite.shipped --profile cpu --sets nyu3 taskonomy5 --mtl --mtl-sets nyu3 --realign course  # make experts

The multi-seed evidence's other models (seeds 1 and 2, and seed 0's MTL models the course does not use) ship
apart, in ``data/evidence/seed-<s>/`` (``make evidence-models``; found by key like the course's).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from . import paths
from .atomic import copy_file, copy_tree

__all__ = ["manifest_path", "ship", "parse_realign", "COURSE_REALIGN", "main"]

log = logging.getLogger(__name__)


def manifest_path(profile_name: str, data_dir: str | Path | None = None) -> Path:
    """``data/models-<profile>.json``: the manifest of the shipped models of a profile."""
    return Path(data_dir or paths.DATA_DIR) / f"models-{profile_name}.json"


REALIGN_OPTIONS = {"head": ("steps", "cached"), "repr": ("rank", "steps"), "lora": ("rank", "steps")}

# the realignments the course's notebooks compute with their default parameters (``--realign course``):
# 05 head realignment (its budget of steps, the cached / uncached comparison at an eighth of the steps and the
# step curve at a quarter and a half), 06 block adapters (step curve, rank 2) and LoRA, 07's table (and the
# benchmark's ties_k1+head), 08's set and its learned layer coefficients
COURSE_REALIGN = ("nyu3:ta+head", "nyu3:ta+head:steps=25", "nyu3:ta+head:steps=25:cached=0", "nyu3:ta+head:steps=50",
                  "nyu3:ta+head:steps=100", "nyu3:ties+head", "nyu3:zeroshot+head", "nyu3:ties_k1+head",
                  "nyu3:ta+repr", "nyu3:ta+repr:steps=50", "nyu3:ta+repr:steps=100", "nyu3:ta+repr:rank=2",
                  "nyu3:ta+lora", "nyu3:ties+repr", "nyu3:ties+lora", "taskonomy5:ta+head", "taskonomy5:ta+repr",
                  "taskonomy5:coefficients")


def parse_realign(spec: str) -> tuple[str, str, str, dict]:
    """``"nyu3:ta+repr:steps=100"`` -> ``("nyu3", "ta", "repr", {"steps": 100})``: a task set, a merge
    method, a fix that trains ("head", "repr" or "lora") and its options (``rank``, ``steps``: positive
    integers; ``cached`` for "head": 0 or 1). ``"taskonomy5:coefficients[:steps=N]"`` ->
    ``("taskonomy5", "coefficients", "coefficients", {...})``: the learned layer coefficients
    (``Experiment.layer_coefficients``, paper Fig. 2), which train too."""
    from . import merging
    parts = spec.split(":")
    if len(parts) >= 2 and parts[1] == "coefficients":
        options = {}
        for opt in parts[2:]:
            name, _, value = opt.partition("=")
            if name != "steps" or not value.isdigit() or int(value) < 1:
                raise ValueError(f"bad option {opt!r} in {spec!r}: coefficients take steps=N (a positive integer)")
            options[name] = int(value)
        return parts[0], "coefficients", "coefficients", options
    row = parts[1] if len(parts) > 1 else ""
    method, _, fix = row.partition("+")
    if len(parts) < 2 or method not in merging.MERGE_METHODS or fix not in REALIGN_OPTIONS:
        raise ValueError(f"bad realignment {spec!r}: give SET:METHOD+FIX[:OPTION=VALUE...] with FIX one of "
                         f"{', '.join(REALIGN_OPTIONS)} and METHOD one of {', '.join(merging.MERGE_METHODS)}, "
                         f"e.g. nyu3:ta+repr:steps=100")
    options = {}
    for opt in parts[2:]:
        name, _, value = opt.partition("=")
        if name not in REALIGN_OPTIONS[fix] or not value.isdigit() or (name != "cached" and int(value) < 1) \
                or (name == "cached" and value not in ("0", "1")):
            raise ValueError(f"bad option {opt!r} in {spec!r}: {fix} takes "
                             + ", ".join(f"{n}=" + ("0|1" if n == "cached" else "N (a positive integer)")
                                         for n in REALIGN_OPTIONS[fix]))
        options[name] = bool(int(value)) if name == "cached" else int(value)
    return parts[0], method, fix, options


def _ship_realign(profile, specs: Sequence[str], seed: int, run_dir: Path, out: Path) -> dict:
    """Compute (or find in ``run_dir``) each realignment of ``specs`` on the merge at its validation-chosen
    alpha and copy its files into ``out``; ``{spec: manifest entry}``."""
    from .checkpoints import sha256_file
    from .experiment import Experiment
    from .fixes import realign_path
    entries, parsed = {}, [(spec, *parse_realign(spec)) for spec in specs]      # every spec checked first
    for spec, tasks, method, fix, options in parsed:
        exp = Experiment(profile, tasks, seed, "cpu", run_dir)
        if fix == "coefficients":                                                 # learned, not a fix of a merge
            coef, _, losses, wall = exp.learned_coefficients(**options)
            src = exp.coefficients_path(**options)
            steps, trainable = len(losses), int(coef.numel())
        else:
            model = exp.row_merge(method)[0]                                      # as the table's row
            _, record = exp.fix(fix, model, **options)
            src = realign_path(exp, model, fix, **options)
            steps, trainable, wall = record.steps, record.trainable_params, record.wall_s
        files = {}
        for f in (src.with_suffix(".json"), src):           # the tensors last: a reader sees a record first
            files[f.name] = sha256_file(copy_file(f, out / f.name))
        entries[spec] = {"files": files, "steps": steps, "trainable_params": trainable, "wall_s": wall}
    return entries


def ship(profile_name: str = "cpu", sets: Sequence[str] = ("nyu3", "taskonomy5"), seed: int = 0,
         mtl: bool = True, run_dir: str | Path | None = None, data_dir: str | Path | None = None,
         command: str = "", mtl_factors: Sequence[int] = (1,), mtl_sets: Sequence[str] | None = None,
         realign: Sequence[str] = (), experts: bool = True, **overrides: object) -> dict:
    """Train (or load from ``run_dir``) the experts of every task in ``sets`` and, with ``mtl``, the MTL
    model of each set (one per fine-tuning budget factor in ``mtl_factors``: 1, and 4 for the "MTL 4x"
    row; ``mtl_sets``: the sets whose MTL models ship, default all of ``sets``); copy each into
    ``data/models-<profile>/`` (atomically, replacing an older copy of the same key); with ``realign``
    (specs of :func:`parse_realign`), those realignments (heads or adapters) too, into its ``realign/`` folder;
    write the manifest (a re-ship that finds the same models keeps the manifest as it is, with the command and
    seconds of the run that trained them). ``experts=False``: ship the MTL models only (e.g. a set whose experts ship
    elsewhere). Returns the manifest. Folders and realignment files of other keys are removed."""
    from . import profiles, training
    from .checkpoints import sha256_file
    from .experiment import Experiment
    from .store import Store
    from .tasks import get_tasks

    profile = profiles.get(profile_name, **overrides)
    run_dir = Path(run_dir or paths.runs_root() / f"ship-{profile_name}-{seed}")
    data_dir = Path(data_dir or paths.DATA_DIR)
    out_root = data_dir / f"models-{profile.name}"
    out_root.mkdir(parents=True, exist_ok=True)
    tasks = tuple(dict.fromkeys(t for s in sets for t in get_tasks(s)))
    exp = Experiment(profile, tasks, seed, "cpu", run_dir)
    jobs = [(exp.expert_artifact(t), lambda t=t: exp.expert(t)) for t in tasks] if experts else []
    if mtl:
        for s in (sets if mtl_sets is None else mtl_sets):
            e = Experiment(profile, s, seed, "cpu", run_dir)
            for f in mtl_factors:
                jobs.append((e.mtl_artifact(f), lambda e=e, f=f: e.mtl(steps_factor=f)))
    t0 = time.perf_counter()
    models = {}
    for art, train in jobs:
        _, record = train()
        src = Store(run_dir).model_dir(art)
        dst = copy_tree(src, out_root / src.name, ignore=shutil.ignore_patterns("*-state.safetensors", "probe"))
        rec = record.to_dict()
        models[f"{art.name}@{art.key}"] = {"name": art.name, "key": art.key, "folder": f"{out_root.name}/{dst.name}",
                            "files": {f.name: sha256_file(f) for f in sorted(dst.iterdir())},
                            "steps": rec["steps"], "wall_s": rec["wall_s"], "test": rec["metrics"].get("test"),
                            "val_tail": training.val_tail_improvement(rec)}
    realigned = _ship_realign(profile, realign, seed, run_dir, out_root / "realign") if realign else {}
    keep = {m["folder"].split("/", 1)[1] for m in models.values()} | {"realign"}
    for stale in out_root.iterdir():
        if stale.is_dir() and stale.name not in keep:
            shutil.rmtree(stale)
    keep_files = {name for e in realigned.values() for name in e["files"]}
    for stale in ((out_root / "realign").iterdir() if (out_root / "realign").is_dir() else ()):
        if stale.name not in keep_files:
            stale.unlink()
    manifest = {"command": command or f"python -m simo_lite.shipped --profile {profile_name}", "profile": profile_name,
                "seed": seed, "sets": list(sets), "foundation_key": exp.foundation_key, "data_key": exp.data_key,
                "profile_config": profile.to_dict(), "models": models, "realign": realigned,
                "wall_s": time.perf_counter() - t0}
    manifest = json.loads(json.dumps(manifest, default=float))          # as it reads back from disk
    path = manifest_path(profile.name, data_dir)
    old = _read_manifest(path)
    if old is not None and all(old.get(k) == v for k, v in manifest.items() if k not in ("command", "wall_s")):
        log.info("%s already describes these models: kept as it is (its command and wall_s too)", path)
        return old                 # a re-ship that only loaded: the manifest keeps the command that trained them
    from .atomic import write_text
    write_text(path, json.dumps(manifest, indent=1))
    return manifest


def _read_manifest(path: Path) -> dict | None:
    """The manifest at ``path`` as a dict, or None where there is none or it is not valid JSON."""
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m simo_lite.shipped``: write the shipped models of a profile (``make experts``)."""
    ap = argparse.ArgumentParser(prog="python -m simo_lite.shipped", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--sets", nargs="+", default=["nyu3", "taskonomy5"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mtl", action="store_true", help="ship the MTL model of each set too")
    ap.add_argument("--no-experts", action="store_true", help="ship only the MTL models (with --mtl)")
    ap.add_argument("--mtl-factors", type=int, nargs="+", default=[1],
                    help="MTL fine-tuning budgets as multiples of the profile's (default: 1; 1 4 adds the MTL 4x row)")
    ap.add_argument("--mtl-sets", nargs="+", default=None, help="with --mtl: the sets whose MTL models ship "
                    "(default: every set of --sets)")
    ap.add_argument("--realign", nargs="+", default=[], metavar="SET:METHOD+FIX[:OPTION=VALUE...]",
                    help="realignments (FIX head, repr or lora) to ship too, on the merge as the results table "
                         "makes it (e.g. nyu3:ta+head nyu3:ta+repr nyu3:ta+lora:rank=2 nyu3:ta+head:steps=50:cached=0), "
                         "or SET:coefficients[:steps=N], the learned layer coefficients; "
                         "'course': those the course's notebooks compute with their default parameters")
    ap.add_argument("--run-dir", default=None, help="where the models are trained (or found); "
                    "default: runs/ship-<profile>-<seed>")
    ap.add_argument("--data-dir", default=None, help="default: the repository's data/")
    args = ap.parse_args(argv)
    args.realign = [x for spec in args.realign for x in (COURSE_REALIGN if spec == "course" else (spec,))]
    for spec in args.realign:
        try:
            parse_realign(spec)
        except ValueError as e:
            ap.error(str(e))
    command = "python -m simo_lite.shipped " + " ".join(argv if argv is not None else sys.argv[1:])
    m = ship(args.profile, args.sets, args.seed, args.mtl, args.run_dir, args.data_dir, command=command,
             mtl_factors=args.mtl_factors, mtl_sets=args.mtl_sets, realign=args.realign,
             experts=not args.no_experts)
    for info in m["models"].values():
        print(f"{info['name']}: {info['folder']} ({info['steps']} steps, {info['wall_s']:.0f} s, "
              f"val-loss tail {100 * info['val_tail']:+.2f} %)")
    for spec, info in m["realign"].items():
        print(f"realign {spec}: {', '.join(info['files'])} ({info['steps']} steps, {info['wall_s']:.0f} s)")
    print(f"manifest: {manifest_path(args.profile, args.data_dir)}")


if __name__ == "__main__":
    main()
