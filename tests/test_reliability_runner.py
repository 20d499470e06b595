"""Reliability matrix of the notebook runner (``python -m simo_lite.course run``), issue 11.

Every row is a case from the issue and its expected outcome, checked on what the user sees: the
runner is started as a command in a subprocess (``sys.executable -m simo_lite.course``, env ``CI=1``)
and the assertions read its exit code, stderr and stdout, and the files it leaves. Either a clear
error whose message names the valid values, before anything runs, or a recovery with identical
results. All runs go under a temporary runs folder (``SIMO_LITE_RUNS``), never into the repository's
``runs/``; every command runs through a small wrapper that reports, at exit, whether the runner
process imported torch (it must not: the kernels do) and its peak RSS.

Notebook executions are few (the smoke profile; 00 and 03 only): the README's commands run once in a
module fixture and the failure rows reuse their folders; error rows fail before any kernel starts.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from simo_lite import course

REPO = course.REPO
# the runner, with a report at exit: did this process import torch, and its own peak RSS (kB)
# (VmHWM, not getrusage: ru_maxrss keeps the parent's peak across fork + exec)
WRAPPER = ("import atexit, re, runpy, sys\n"
           "hwm = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
           "atexit.register(lambda: print('RUNNER torch_imported=%s maxrss_kb=%d' % ('torch' in sys.modules, "
           "hwm()), file=sys.stderr))\n"
           "sys.argv = ['simo_lite.course'] + sys.argv[1:]\n"
           "runpy.run_module('simo_lite.course', run_name='__main__', alter_sys=True)\n")
RUNNER_MAX_RSS_MB = 400          # torch alone is ~1 GB resident; the runner without it is < 100 MB


def _env(root: Path) -> dict:
    return {**os.environ, "CI": "1", "SIMO_LITE_RUNS": str(root), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _popen(args, root: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRAPPER, *map(str, args)], cwd=REPO, env=_env(root),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


class Result:
    def __init__(self, proc: subprocess.Popen, out: str, err: str):
        self.rc = proc.returncode
        self.stdout = out
        lines = err.splitlines()
        self.runner = [ln for ln in lines if ln.startswith("RUNNER ")]
        self.stderr = "\n".join(ln for ln in lines if not ln.startswith("RUNNER "))

    def check_runner(self) -> None:
        """The runner process never imported torch and stayed small."""
        assert self.runner, f"the wrapper did not report:\n{self.stderr}"
        m = re.match(r"RUNNER torch_imported=(\w+) maxrss_kb=(\d+)", self.runner[-1])
        assert m.group(1) == "False", "the runner process imported torch"
        assert int(m.group(2)) / 1024 < RUNNER_MAX_RSS_MB, f"runner peak RSS {int(m.group(2)) / 1024:.0f} MB"


def cli(*args, root: Path, timeout: float = 300) -> Result:
    proc = _popen(args, root)
    out, err = proc.communicate(timeout=timeout)
    res = Result(proc, out, err)
    res.check_runner()
    return res


def _tree_state(root: Path) -> dict:
    """{relative path: (size, mtime_ns, sha256)} of every file under ``root``."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns,
                                       hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def _folder_of(stdout: str) -> Path:
    m = re.search(r"^executed notebooks: (.+)$", stdout, re.M)
    assert m, f"no 'executed notebooks:' line in\n{stdout}"
    return Path(m.group(1).strip())


# ----------------------------------------------------------------------------------------------
# The README's runner commands, one after another (module fixture; the other rows reuse the folders)
# ----------------------------------------------------------------------------------------------
def readme_commands() -> list[list[str]]:
    """The ``python -m simo_lite.course run ...`` commands of README.md, as argument lists, made cheap:
    the smoke profile (unless given) and ``--only 00`` unless the command picks notebooks. Real-data
    commands (they need the datasets) are left out; the sweep command is in test_reliability_sweeps."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "README.md").read_text())
    cmds = []
    for m in re.finditer(r"python -m simo_lite\.course (run[^`\n#]*)", text):
        args = m.group(1).split()
        if "dataset" in args:
            continue
        if "--profile" not in args:
            args += ["--profile", "smoke"]
        if "--only" not in args:
            args += ["--only", "00"]
        if args not in cmds:
            cmds.append(args)
    return cmds


def _expected_folder(args: list[str]) -> str:
    """The folder name the naming rule gives: ``<profile>-<seed>[-name=value,...]``."""
    prof = args[args.index("--profile") + 1]
    params = _p_args(args)
    seed = params.pop("seed", args[args.index("--seed") + 1] if "--seed" in args else "0")
    suffix = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    return f"{prof}-{seed}" + (f"-{suffix}" if suffix else "")


@pytest.fixture(scope="module")
def readme_runs(tmp_path_factory):
    """Run the README's commands in order into a fresh runs folder; each must touch only its own folder."""
    root = tmp_path_factory.mktemp("runs")
    folders = {}
    for args in readme_commands():
        before = _tree_state(root)
        res = cli(*args, root=root)
        assert res.rc == 0, f"{' '.join(args)} failed:\n{res.stderr}\n{res.stdout}"
        out = _folder_of(res.stdout)
        folders[" ".join(args)] = (out, res)
        after = _tree_state(root)
        mine = out.relative_to(root)
        touched = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        foreign = sorted(k for k in touched if Path(k).parts[0] != mine.parts[0])
        assert not foreign, f"{' '.join(args)} touched other runs' files: {foreign[:5]}"
    return root, folders


def test_readme_commands_each_write_only_their_own_folder(readme_runs):
    """Reliability matrix rows 1 (naming), 5 (unknown-parameter warnings), 6 (memory), 7 (TCP warning):
    ``run --only 03 -p merge_method ties -p seed 1`` wrote its results, executed notebook and report.md
    into ``runs/<profile>-0``, the seed-0 run. Now each README command runs into the folder its own
    parameters name (``smoke-1-merge_method=ties``, ``smoke-0``, ``smoke-1``), touches no other run's
    files, passes each notebook only the parameters it declares (no "Passed unknown parameter"), prints
    no "Kernel is running over TCP without encryption" line, and the runner never imports torch."""
    root, folders = readme_runs
    assert len(folders) >= 3, f"expected the README's runner commands, found {list(folders)}"
    names = set()
    for cmd, (out, res) in folders.items():
        args = cmd.split()
        assert out.parent == root and out.name == _expected_folder(args), (cmd, out)
        names.add(out.name)
        for f in ("report.md", "run-params.json", "run-meta.json", "runtimes.json"):
            assert (out / f).is_file(), f"{cmd}: no {f} in {out}"
        only = args[args.index("--only") + 1:]
        only = [a for a in only if re.fullmatch(r"\d\d", a)]
        executed = sorted(p.name[:2] for p in out.glob("[0-9][0-9]_*.ipynb"))
        assert executed == sorted(only), (cmd, executed)
        manifest = json.loads((out / "run-params.json").read_text())
        assert str(manifest["seed"]) in out.name.split("-")[1] and manifest["profile"] == "smoke"
        for nb in out.glob("[0-9][0-9]_*.ipynb"):         # the notebook ran with this folder as run_dir
            injected = [c for c in nbformat.read(nb, as_version=4).cells
                        if "injected-parameters" in c.metadata.get("tags", [])]
            assert injected and f"run_dir = \"{out}\"" in injected[0].source
        assert "Passed unknown parameter" not in res.stderr, res.stderr
        assert "without encryption" not in res.stderr, res.stderr
        assert "Traceback" not in res.stderr, res.stderr
    assert len(names) == len(folders), "two commands shared a folder"
    assert (root / "smoke-1-merge_method=ties").is_dir() and (root / "smoke-0").is_dir()


def _p_args(args: list[str]) -> dict:
    return {args[i + 1]: args[i + 2] for i, a in enumerate(args) if a == "-p"}


# ----------------------------------------------------------------------------------------------
# Error rows: a clear error naming the valid values, exit 2, before anything runs or is written
# ----------------------------------------------------------------------------------------------
def _setup_file(tmp: Path) -> dict:
    (tmp / "a-file").write_text("not a folder")
    other = tmp / "other-run"
    other.mkdir()
    (other / "run-params.json").write_text(json.dumps({"profile": "smoke", "seed": 0, "dataset": "scenes",
                                                       "ties_k": 0.5}))
    return {"file": tmp / "a-file", "other": other, "tmp": tmp}


NB_NUMBERS = ", ".join(p.name[:2] for p in course.notebooks())
ERROR_ROWS = [
    # (row id, issue row, arguments, texts the terminal must show)
    ("unknown-notebook-09", "4: --only 09 gave a traceback",
     ["run", "--profile", "smoke", "--only", "09"], ["no notebook numbered 09", f"valid notebook numbers: {NB_NUMBERS}"]),
    ("unknown-dataset", "4: -p dataset imagenet gave KeyError: 'imagenet'",
     ["run", "--profile", "smoke", "-p", "dataset", "imagenet"], ["unknown dataset 'imagenet'",
                                                                 "valid datasets: scenes, nyuv2, cityscapes"]),
    ("run-dir-is-a-file", "4: a run dir that is a file gave a traceback",
     ["run", "--profile", "smoke", "--only", "00", "--run-dir", "{file}"], ["{file} is a file, not a folder"]),
    ("run-dir-under-a-file", "4: a run dir under a file gave a traceback",
     ["run", "--profile", "smoke", "--only", "00", "--run-dir", "{file}/sub"], ["lies under {file}, which is a file"]),
    ("seed-flag-vs-param", "1: --seed and -p seed named different runs",
     ["run", "--profile", "smoke", "--only", "00", "--seed", "2", "-p", "seed", "1"],
     ["--seed 2 and -p seed 1 disagree"]),
    ("profile-flag-vs-param", "1: --profile and -p profile",
     ["run", "--profile", "smoke", "--only", "00", "-p", "profile", "cpu"], ["--profile smoke and -p profile cpu disagree"]),
    ("run-dir-flag-vs-param", "1: -p run_dir X sent notebooks and report.md elsewhere than --run-dir",
     ["run", "--profile", "smoke", "--only", "00", "--run-dir", "{tmp}/a", "-p", "run_dir", "{tmp}/b"],
     ["disagree"]),
    ("typo-parameter", "2/5: a typo'd key only warned (papermill 'Passed unknown parameter')",
     ["run", "--profile", "smoke", "--only", "03", "-p", "merge_methd", "ties"],
     ["unknown parameter 'merge_methd' (did you mean 'merge_method'?)", "valid parameters: ", "merge_method, "]),
    ("parameter-of-no-selected-notebook", "5: a parameter no selected notebook declares",
     ["run", "--profile", "smoke", "--only", "00", "-p", "ties_k", "0.5"],
     ["unknown parameter 'ties_k'", "00_scenes", "valid parameters: "]),
    ("folder-of-another-run", "1: never overwrite a run made with other parameters",
     ["run", "--profile", "smoke", "--only", "00", "--run-dir", "{other}"],
     ["holds a run made with other parameters", "ties_k 0.5 there", "never overwritten"]),
    ("bad-seed", "1: the seed names the folder: it must be a non-negative integer",
     ["run", "--profile", "smoke", "--only", "00", "-p", "seed", "one"], ["seed must be a non-negative integer, got 'one'"]),
    ("unknown-profile", "4: unknown profile",
     ["run", "--profile", "huge"], ["invalid choice: 'huge'", "'cpu', 'gpu', 'paper', 'smoke'"]),
]


@pytest.mark.parametrize("row", ERROR_ROWS, ids=[r[0] for r in ERROR_ROWS])
def test_error_rows(row, tmp_path):
    """Reliability matrix: each case stops with exit 2 and one clear message naming the valid values,
    no traceback, and nothing is written (no run folder, no kernel)."""
    _, _issue, args, texts = row
    paths = _setup_file(tmp_path)
    root = tmp_path / "runs"
    before = _tree_state(tmp_path)
    res = cli(*[a.format(**paths) for a in args], root=root)
    assert res.rc == 2, (res.rc, res.stderr, res.stdout)
    for t in texts:
        assert t.format(**paths) in res.stderr, f"{t!r} not in stderr:\n{res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    assert not root.exists(), "an error row created the runs folder"
    assert _tree_state(tmp_path) == before, "an error row wrote files"


# ----------------------------------------------------------------------------------------------
# Failure and recovery rows (reuse the README runs' smoke-0 folder: notebook 00 in the smoke profile)
# ----------------------------------------------------------------------------------------------
def _copy_run(readme_runs, tmp_path) -> Path:
    root, _ = readme_runs
    dst = tmp_path / "run"
    shutil.copytree(root / "smoke-0", dst)
    return dst


def _row_failure_keeps_last_good_then_recovers(readme_runs, tmp_path):
    """Rows 3 and 1: a failing notebook printed ``NN failed: PapermillExecutionError: `` and nothing else,
    and overwrote the last good executed notebook. Now the terminal shows the notebook's own error and
    the exit code is 1; the good notebook is untouched; the failed one is kept as ``.failed.ipynb``,
    marked in its first cell. A re-run with ``-p run_dir`` (the same setting as ``--run-dir``) puts
    everything in that folder, removes the failed copy and gives identical results."""
    run = _copy_run(readme_runs, tmp_path)
    good = _tree_state(run)
    res = cli("run", "--profile", "smoke", "--only", "00", "--run-dir", run, "--timeout", "1", root=tmp_path / "r")
    assert res.rc == 1, res.stderr
    assert "00_scenes.ipynb failed: CellTimeoutError: A cell timed out" in res.stderr, res.stderr
    assert "the last complete run) is untouched" in res.stderr and "Traceback" not in res.stderr
    after = _tree_state(run)
    for name in ("00_scenes.ipynb", "report.md", "results/00_scenes.json", "runtimes.json"):
        assert after[name] == good[name], f"{name} changed by the failed run"
    failed = nbformat.read(run / "00_scenes.failed.ipynb", as_version=4)
    assert "THIS RUN FAILED" in failed.cells[0].source and failed.metadata["simo_lite"]["status"] == "failed"
    assert not list(run.glob(".*running*")) and not list(run.glob(".*.tmp"))

    res = cli("run", "--profile", "smoke", "--only", "00", "-p", "run_dir", run, root=tmp_path / "r")
    assert res.rc == 0, res.stderr
    assert _folder_of(res.stdout) == run and not (tmp_path / "r").exists()
    assert not (run / "00_scenes.failed.ipynb").exists()
    assert _measured(run / "results/00_scenes.json") == _measured(readme_runs[0] / "smoke-0/results/00_scenes.json")
    assert (run / "report.md").stat().st_mtime_ns > good["report.md"][1]


def _measured(path: Path) -> dict:
    """A results file without its wall-clock throughput figures (``*_per_s*``), the only keys that vary."""
    return {k: v for k, v in json.loads(path.read_text()).items() if "per_s" not in k}


def _row_ctrl_c(readme_runs, tmp_path):
    """Rows 3 and 4: Ctrl-C left a half-run notebook that looked complete and a KeyboardInterrupt
    traceback. Now it ends with one line on stderr and exit code 130; the last complete notebook is
    untouched, the partial one is kept as ``.failed.ipynb`` (marked), and no kernel is left running."""
    run = _copy_run(readme_runs, tmp_path)
    good = _tree_state(run)
    proc = _popen(["run", "--profile", "smoke", "--only", "00", "--run-dir", run], tmp_path / "r",
                  start_new_session=True)               # its own process group, as a terminal's job is
    t0 = time.time()
    while not (run / ".00_scenes.running.ipynb").exists():
        assert proc.poll() is None and time.time() - t0 < 60, "the notebook never started"
        time.sleep(0.05)
    time.sleep(1.0)
    kernels = _children(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)                  # what Ctrl-C in a terminal sends
    out, err = proc.communicate(timeout=60)
    res = Result(proc, out, err)
    res.check_runner()
    assert res.rc == 130, (res.rc, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: 00_scenes.ipynb stopped"), res.stderr
    assert "untouched" in lines[0]
    after = _tree_state(run)
    assert after["00_scenes.ipynb"] == good["00_scenes.ipynb"]
    failed = nbformat.read(run / "00_scenes.failed.ipynb", as_version=4)
    assert "THIS RUN FAILED" in failed.cells[0].source and "Ctrl-C" in failed.cells[0].source
    assert not list(run.glob(".*running*"))
    assert kernels, "no kernel process was seen"
    time.sleep(0.5)
    assert not [k for k in kernels if Path(f"/proc/{k}").exists() and _state(k) != "Z"], "a kernel is left running"


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                status = (d / "status").read_text()
            except OSError:
                continue
            if re.search(rf"^PPid:\s+{pid}$", status, re.M):
                out.append(int(d.name))
    return out


def _state(pid: int) -> str:
    try:
        return re.search(r"^State:\s+(\w)", Path(f"/proc/{pid}/status").read_text(), re.M).group(1)
    except (OSError, AttributeError):
        return "gone"


RECOVERY_ROWS = [
    pytest.param(_row_failure_keeps_last_good_then_recovers, id="failed-notebook-keeps-good-then-recovers"),
    pytest.param(_row_ctrl_c, id="ctrl-c-one-line-exit-130"),
]


@pytest.mark.parametrize("row", RECOVERY_ROWS)
def test_failure_rows(row, readme_runs, tmp_path):
    row(readme_runs, tmp_path)


# ----------------------------------------------------------------------------------------------
# In-process rows (no kernel)
# ----------------------------------------------------------------------------------------------
def test_runner_module_does_not_import_torch():
    """Row 6: the runner process imported torch (~1 GB RSS) beside each kernel."""
    code = ("import sys; from simo_lite import course; "
            "course._plan_run('smoke', 0, ['00', '03'], {'merge_method': 'ties'}, None, root='/nonexistent/x'); "
            "course.default_run_dir('cpu', 1, params={'merge_method': 'ties'}); "
            "import papermill; assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(Path("/nonexistent/runs")),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_each_notebook_gets_only_its_declared_parameters(tmp_path):
    """Row 5: real-data runs warned "Passed unknown parameter: compare_tasks" in every notebook."""
    data = tmp_path / "cityscapes"
    data.mkdir()
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    plan = course._plan_run("smoke", 0, ["05", "08"], {"dataset": "cityscapes", "data_dir": str(data),
                                                        "backbone": "vit_tiny", "weights": str(weights)},
                            None, root=tmp_path / "runs")
    given = {nb.name[:2]: params for nb, params in plan.books}
    assert "compare_tasks" not in given["05"] and given["08"]["compare_tasks"] == "seg"
    for nb, params in plan.books:
        assert set(params) <= set(course.notebook_parameters(nb)), nb.name
    assert plan.out == tmp_path / "runs" / "smoke-cityscapes-0-backbone=vit_tiny"


def test_naming_rule_is_one_function():
    """Row 1: one naming rule (default_run_dir) for setup, run and sweep, from the defining parameters."""
    d = course.default_run_dir
    root = Path("/r")
    assert d("cpu", 0, root=root) == root / "cpu-0"                       # setup's call, positional
    assert d("cpu", 1, "nyuv2", root=root) == root / "cpu-nyuv2-1"
    assert d("cpu", 1, params={"merge_method": "ties", "alpha": -1.0, "show_progress": False,
                               "device": "cpu", "run_dir": "x"}, root=root) == root / "cpu-1-merge_method=ties"
    assert d("cpu", 1, params={"ties_k": 0.5, "merge_method": "ties"}, root=root).name == \
        "cpu-1-merge_method=ties,ties_k=0.5"
    assert d("cpu", 0, params={"tasks": "a/b c"}, root=root).name == "cpu-0-tasks=a_b_c"
    assert d("cpu", 0, "nyuv2", params={"data_dir": "/d", "weights": "/w.pth"}, root=root).name == "cpu-nyuv2-0"


def test_atomic_write_text(tmp_path):
    """Row 8: the runner's writes are atomic (a unique temporary file, then os.replace)."""
    p = course.atomic_write_text(tmp_path / "a.json", "1")
    course.atomic_write_text(p, "2")
    assert p.read_text() == "2" and sorted(x.name for x in tmp_path.iterdir()) == ["a.json"]
    assert (p.stat().st_mode & 0o777) == (0o666 & ~_umask())


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_runner_engine_saves_the_running_notebook_sparsely_and_always_at_the_end(tmp_path, monkeypatch):
    """papermill writes the whole notebook before and after every cell; the runner's engine writes it at
    most every ``SAVE_EVERY_S`` while cells run and always at the end, with every output in it."""
    import papermill as pm
    import papermill.engines as pe

    cells = [nbformat.v4.new_markdown_cell(f"text {i}") for i in range(30)]
    cells += [nbformat.v4.new_code_cell("import time\nx = 41"), nbformat.v4.new_code_cell("time.sleep(1.3)"),
              nbformat.v4.new_code_cell("print(x + 1)")]
    src = tmp_path / "tiny.ipynb"
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, src)
    writes = []
    real = pe.write_ipynb
    monkeypatch.setattr(pe, "write_ipynb", lambda nb, path: (writes.append(path), real(nb, path))[1])
    counts = {}
    for engine in (None, course._papermill_engine()):
        writes.clear()
        out = tmp_path / f"out-{engine}.ipynb"
        pm.execute_notebook(str(src), str(out), kernel_name="python3", progress_bar=False, engine_name=engine,
                            shutdown_kernel="immediate")
        counts[engine] = len(writes)
        done = nbformat.read(out, as_version=4)
        assert done.cells[-1].outputs[0]["text"] == "42\n" and done.metadata.papermill["duration"] > 1.3
    assert counts[None] >= 2 * len(cells)                  # papermill's own: before and after every cell
    assert 2 <= counts["simo_lite"] <= 5, counts            # start, after the 1.3 s cell, the end
