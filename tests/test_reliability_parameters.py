"""Notebook parameters are checked in one place (``simo_lite.params``), the same way in every notebook.

- a matrix of (parameter, bad value) -> the clear message naming the valid values, through
  ``params.check`` and ``course.setup`` (fast);
- the same bad value gives the same message in every notebook that has the parameter (each
  notebook's own ``course.setup`` call is executed with its parameters-cell defaults);
- every parameter of every notebook's ``parameters`` cell reaches ``course.setup``;
- ``n_show`` adapts to a small split (a NYUv2 folder of 8 + 8 images, default parameters), while a
  too-large explicit value is an error, reported after the data and backbone errors;
- a few rows end to end: ``python -m simo_lite.course run --profile smoke --only NN -p NAME VALUE``.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from simo_lite import course, fixtures, params
from simo_lite import profiles as P

SMOKE = P.get("smoke")          # n_val = n_test = 32, embed_dim 48, 4 tapped layers
NOTEBOOKS = course.notebooks()

ALPHA = ("alpha must be a finite number: negative (choose it on the validation split) or a merging coefficient "
         "in [0, 2] (the validation grid is 0.0..1.0), got {}")
TIES_K = "ties_k must be a number in (0, 1] (the fraction of each task vector TIES keeps), got {}"
TASKS = ("tasks must be a task set (nyu3 = seg,depth,normals; diverse5 = seg,depth,normals,edges,albedo; "
         "taskonomy5 = autoencoder,depth,normals,keypoints,texture_edges) or task names separated by commas "
         "(seg, depth, normals, edges, albedo, shading, texture_edges, keypoints, autoencoder), got {}")
RANK = ("adapter_rank must be an integer in 1..48 (the rank of the realignment adapters, at most the encoder "
        "width 48), got {}")
REALIGN = "realign_samples must be an integer in 0..32 (0: all 32 val images; N: the first N), got {}"
N_SHOW = ("n_show must be an integer in 1..32 (images shown from the val or test split, at most the smaller: "
          "val 32, test 32), or 0 for auto (min(4, 32)), got {}")
MERGE = "merge_method must be one of zeroshot, average, ta, ties, ties_k1, dare, consensus, got {}"

# (parameter, bad value, the whole message) in the smoke profile
ROWS = [
    ("alpha", "abc", ALPHA.format("'abc'")),
    ("alpha", 7, ALPHA.format("7")),
    ("alpha", float("nan"), ALPHA.format("nan")),
    ("alpha", True, ALPHA.format("True")),
    ("ties_k", "abc", TIES_K.format("'abc'")),
    ("ties_k", 0, TIES_K.format("0")),
    ("ties_k", 1.5, TIES_K.format("1.5")),
    ("adapter_rank", 1.5, RANK.format("1.5")),
    ("adapter_rank", 0, RANK.format("0")),
    ("adapter_rank", 49, RANK.format("49")),
    ("adapter_rank", "abc", RANK.format("'abc'")),
    ("realign_samples", 1.5, REALIGN.format("1.5")),
    ("realign_samples", -1, REALIGN.format("-1")),
    ("realign_samples", 33, REALIGN.format("33")),
    ("tasks", "foo", TASKS.format("'foo' (unknown task 'foo')")),
    ("tasks", "seg,foo", TASKS.format("'seg,foo' (unknown task 'foo')")),
    ("tasks", "seg,seg", TASKS.format("'seg,seg' (duplicate task 'seg')")),
    ("tasks", "", TASKS.format("'' (no task)")),
    ("tasks", 3, TASKS.format("3")),
    ("merge_method", "foo", MERGE.format("'foo'")),
    ("merge_method", 1, MERGE.format("1")),
    ("seed", -1, "seed must be a non-negative integer, got -1"),
    ("seed", 1.5, "seed must be a non-negative integer, got 1.5"),
    ("seed", "0", "seed must be a non-negative integer, got '0'"),
    ("n_show", 33, N_SHOW.format("33")),
    ("n_show", -1, N_SHOW.format("-1")),
    ("n_show", 2.5, N_SHOW.format("2.5")),
    ("show_progress", "yes", "show_progress must be True or False, got 'yes'"),
    ("device", 3, "device must be 'auto', 'cpu' or 'cuda[:N]', got 3"),
    ("device", "tpu", "bad device 'tpu'; use 'auto', 'cpu' or 'cuda[:N]'"),
    ("run_dir", 3, "run_dir must be a folder path (empty: runs/<profile>-<seed> in the repository), got 3"),
    ("profile", "huge", "profile must be one of smoke, cpu, gpu, paper, got 'huge'"),
    ("dataset", "imagenet", "dataset must be one of scenes, nyuv2, cityscapes, got 'imagenet'"),
    ("backbone", 3, "backbone must be a timm model name such as 'vit_small_patch14_dinov2.lvd142m' (empty: the "
                    "course's own encoder), got 3"),
    ("data_dir", 3, "data_dir must be a folder path (the dataset's files; empty for scenes), got 3"),
    ("weights", 3, "weights must be a file path (the backbone's local weights; empty without a backbone), got 3"),
    ("dare_p", 1.0, "dare_p must be a number in [0, 1) (the fraction of each task vector DARE drops), got 1.0"),
    ("drift_images", 0, "drift_images must be an integer >= 1 (val images for the feature statistics; at most the "
                        "val split is used), got 0"),
    ("scatter_layer", 4, "scatter_layer must be an integer in -4..3 (4 tapped layers; negative counts from the "
                         "last), got 4"),
    ("lam_step", -0.5, "lam_step must be a number >= 0 (the step of the λ grid; 0: the profile's default), got -0.5"),
    ("lam_max", 0, "lam_max must be a number > 0 and >= lam_step (the end of the λ grid), got 0"),
    ("coef_steps", -1, "coef_steps must be a non-negative integer (0: the package default), got -1"),
]

# rows that need another parameter beside the bad one: (parameter, bad value, the others, message)
CROSS_ROWS = [
    ("compare_tasks", "nyu3", {"tasks": "seg,depth,normals"},
     "compare_tasks must be another task set than tasks (both are seg, depth, normals); task sets: nyu3, diverse5, taskonomy5, "
     "or task names separated by commas"),
    ("scatter_task", "edges", {"tasks": "nyu3"},
     "scatter_task must be one of the notebook's tasks (seg, depth, normals), or empty for the first, got 'edges'"),
    ("lam_max", 0.4, {"lam_step": 0.5},
     "lam_max must be a number > 0 and >= lam_step (the end of the λ grid), got 0.4 with lam_step 0.5"),
]


def _id(row) -> str:
    return f"{row[0]}={row[1]!r}"


def _exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


@pytest.mark.parametrize("name,bad,message", ROWS, ids=[_id(r) for r in ROWS])
def test_params_check_rejects_with_the_valid_values(name, bad, message):
    with pytest.raises(ValueError, match=_exact(message)):
        params.check(SMOKE, **{name: bad})


@pytest.mark.parametrize("name,bad,others,message", CROSS_ROWS, ids=[_id(r) for r in CROSS_ROWS])
def test_params_check_cross_rules(name, bad, others, message):
    with pytest.raises(ValueError, match=_exact(message)):
        params.check(SMOKE, **others, **{name: bad})


@pytest.mark.parametrize("name,bad,message", ROWS, ids=[_id(r) for r in ROWS])
def test_course_setup_gives_the_same_message(name, bad, message, tmp_path):
    kw = {"run_dir": str(tmp_path / "run"), name: bad}
    if name == "run_dir":
        kw["run_dir"] = bad
    with pytest.raises(ValueError, match=_exact(message)):
        course.setup(**{"profile": "smoke", **kw})


def test_good_values_are_normalised(capsys):
    out = params.check(SMOKE, tasks="seg, depth", compare_tasks="nyu3", alpha=1, ties_k=1, n_show=0,
                       realign_samples=0, adapter_rank=48, scatter_task="", scatter_layer=-4, show_progress=0)
    assert out == {"tasks": ("seg", "depth"), "compare_tasks": ("seg", "depth", "normals"), "alpha": 1.0,
                   "ties_k": 1.0, "n_show": 4, "realign_samples": 0, "adapter_rank": 48, "scatter_task": "seg",
                   "scatter_layer": -4, "show_progress": False}
    assert params.check(SMOKE, tasks="nyu3", scatter_task="depth")["scatter_task"] == "depth"
    assert params.check(SMOKE, alpha=-1.0) == {"alpha": -1.0}            # negative: chosen on val
    assert capsys.readouterr().out == ""
    assert params.check(SMOKE, alpha=1.5) == {"alpha": 1.5}              # accepted, with a note
    assert "alpha 1.5 is above the validation grid 0.0..1.0" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"^unknown notebook parameter\(s\) \['ties'\]; known: profile, "):
        params.check(SMOKE, ties=0.2)


def test_setup_tells_notebook_parameters_from_profile_fields(tmp_path):
    ctx = course.setup("smoke", run_dir=str(tmp_path / "a"), batch_size=8, ties_k=0.5, n_show=0)
    assert ctx.profile.batch_size == 8                                    # a profile field
    assert ctx.params["ties_k"] == 0.5 and ctx.params["n_show"] == 4      # notebook parameters
    assert ctx.params["seed"] == 0 and ctx.params["profile"] == "smoke"
    with pytest.raises(ValueError, match=r"unknown setup argument\(s\) \['tie_k'\]: neither a notebook parameter"):
        course.setup("smoke", run_dir=str(tmp_path / "b"), tie_k=0.5)


def test_restrict_narrows_after_the_course_wide_check(tmp_path):
    only = {"merge_method": ("ta", "ties")}
    with pytest.raises(ValueError, match=_exact("merge_method must be one of ta, ties in this notebook, got 'dare'")):
        course.setup("smoke", run_dir=str(tmp_path), merge_method="dare", restrict=only)
    with pytest.raises(ValueError, match=_exact(MERGE.format("'foo'"))):          # as in every other notebook
        course.setup("smoke", run_dir=str(tmp_path), merge_method="foo", restrict=only)


# ----------------------------------------------------------------------------------------------
# Every notebook: its parameters reach course.setup, and a bad value gives the same message
# ----------------------------------------------------------------------------------------------
def _parameters(nb) -> dict:
    cell = next(c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", []))
    return {s.targets[0].id: ast.literal_eval(s.value) for s in ast.parse(cell.source).body}


def _up_to_setup(nb) -> list[ast.stmt]:
    """The set-up cell's statements (the code cell after the parameters) up to ``ctx = ...setup(...)``."""
    k = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = next(c for c in nb.cells[k + 1:] if c.cell_type == "code")
    body = ast.parse(cell.source).body
    for i, stmt in enumerate(body):
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call) \
                and ast.unparse(stmt.value.func).endswith("course.setup"):
            return body[:i + 1]
    raise AssertionError("no ctx = course.setup(...) in the set-up cell")


def _setup_call(nb) -> ast.Assign:
    return _up_to_setup(nb)[-1]


BOOKS = {p.name[:2]: nbformat.read(p, as_version=4) for p in NOTEBOOKS}


@pytest.mark.parametrize("key", sorted(BOOKS))
def test_every_parameter_reaches_setup(key):
    nb = BOOKS[key]
    call = _setup_call(nb).value
    # course.setup(globals()) takes every parameter the parameters cell defined, none passed by hand
    assert [ast.unparse(a) for a in call.args] == ["globals()"], f"{key}: setup is not given globals()"
    assert not {k.arg for k in call.keywords} & set(params.PARAMETERS), f"{key}: a parameter passed twice"
    for name in _parameters(nb):
        assert name in params.PARAMETERS, f"{key}: parameter {name} has no validator in simo_lite.params"


def _setup_error(key: str, run_dir: Path, **bad) -> str:
    """Run notebook ``key``'s set-up cell up to its course.setup call (imports included) on its
    defaults (smoke) plus ``bad``: the error message, empty if none."""
    nb = BOOKS[key]
    ns = {**_parameters(nb), "profile": "smoke", "run_dir": str(run_dir), "show_progress": False, **bad}
    try:
        exec(compile(ast.Module(_up_to_setup(nb), []), f"<{key} set-up>", "exec"), ns)
    except ValueError as e:
        return str(e)
    return ""


SAME_ROWS = [("ties_k", "abc"), ("ties_k", 1.5), ("alpha", 7), ("alpha", "abc"), ("tasks", "foo"),
             ("adapter_rank", 1.5), ("realign_samples", 1.5), ("merge_method", "foo"), ("seed", -1),
             ("n_show", 100), ("show_progress", "yes")]


@pytest.mark.parametrize("name,bad", SAME_ROWS, ids=[_id(r) for r in SAME_ROWS])
def test_same_bad_value_same_message_in_every_notebook(name, bad, tmp_path):
    having = [k for k, nb in BOOKS.items() if name in _parameters(nb)]
    assert len(having) >= 2 or name == "n_show"
    messages = {k: _setup_error(k, tmp_path / k, **{name: bad}) for k in having}
    with pytest.raises(ValueError) as e:                                 # the one validator's message

        params.check(SMOKE, **{name: bad})
    assert messages == {k: str(e.value) for k in having}, messages


@pytest.mark.parametrize("key", sorted(BOOKS))
def test_notebook_defaults_pass_setup(key, tmp_path):
    assert _setup_error(key, tmp_path) == ""


# ----------------------------------------------------------------------------------------------
# n_show on a small split: auto by default, an explicit too-large value is an error
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_nyu(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    return dict(dataset="nyuv2", data_dir=str(fixtures.write_nyuv2(root / "nyuv2", n_train=8, n_val=8)),
                backbone=fixtures.FIXTURE_BACKBONE,
                weights=str(fixtures.write_backbone_checkpoint(root / "w" / "test_vit.safetensors")))


def test_n_show_auto_on_a_small_split(small_nyu, tmp_path, capsys):
    ctx = course.setup("smoke", run_dir=str(tmp_path / "a"), n_show=0, **small_nyu)
    assert (ctx.profile.n_val, ctx.profile.n_test) == (5, 3)              # 8 + 8 images: 8 / 5 / 3
    assert ctx.params["n_show"] == 3
    assert "n_show auto: 3 images" in capsys.readouterr().out
    assert course.setup("smoke", run_dir=str(tmp_path / "b"), n_show=2, **small_nyu).params["n_show"] == 2
    with pytest.raises(ValueError, match=r"^n_show must be an integer in 1\.\.3 \(images shown from the val or test "
                                         r"split, at most the smaller: val 5, test 3\), or 0 for auto .*got 4$"):
        course.setup("smoke", run_dir=str(tmp_path / "c"), n_show=4, **small_nyu)


def test_data_and_backbone_errors_come_before_n_show(small_nyu, tmp_path):
    bad_show = {"n_show": 40, "ties_k": "abc"}
    with pytest.raises(FileNotFoundError, match="folder .*image not found; expected layout"):
        course.setup("smoke", run_dir=str(tmp_path), **{**small_nyu, "data_dir": str(tmp_path)}, **bad_show)
    with pytest.raises(ValueError, match="needs weights"):
        course.setup("smoke", run_dir=str(tmp_path), **{**small_nyu, "weights": ""}, **bad_show)
    with pytest.raises(Exception, match="no_such_vit"):
        course.setup("smoke", run_dir=str(tmp_path), **{**small_nyu, "backbone": "no_such_vit"}, **bad_show)


def test_notebook_02_setup_cell_on_8_plus_8_images_with_default_parameters(small_nyu, tmp_path, capsys):
    """The set-up cell of 02 as written, with the runner's parameters for the folder: no n_show error."""
    nb = BOOKS["02"]
    k = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    ns = {**_parameters(nb), "profile": "smoke", "run_dir": str(tmp_path / "run"), "show_progress": False,
          "tasks": "seg,depth,normals", **small_nyu}
    setup, settings = [c for c in nb.cells[k + 1:] if c.cell_type == "code"][:2]   # set-up, then derived values
    exec(compile(setup.source + "\n" + settings.source, "<02 set-up>", "exec"), ns)
    assert ns["n_show"] == 3 and ns["task_names"] == ("seg", "depth", "normals")
    assert len(ns["exp"].data["test"]["image"]) == 3


# ----------------------------------------------------------------------------------------------
# End to end: a real notebook execution from the terminal
# ----------------------------------------------------------------------------------------------
CLI_ROWS = [("05", "ties_k", "abc", TIES_K.format("'abc'")),
            ("07", "alpha", "7.5", ALPHA.format("7.5")),
            ("03", "adapter_rank", "1.5", RANK.format("1.5"))]


@pytest.mark.parametrize("key,name,value,message", CLI_ROWS, ids=[f"{r[0]}-{r[1]}={r[2]}" for r in CLI_ROWS])
def test_terminal_run_stops_with_the_message(key, name, value, message, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "CI": "1", "SIMO_LITE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "simo_lite.course", "run", "--profile", "smoke", "--only", key,
                           "-p", name, value, "--run-dir", str(run_dir)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    executed = nbformat.read(next(run_dir.glob(f"{key}_*.ipynb")), as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert [(o["ename"], o["evalue"]) for o in errors] == [("ValueError", message)]
    # DEPENDS ON THE RUNNER FIX (the runner printing the notebook's exception in the terminal): until it
    # lands the terminal shows only "NN_name.ipynb failed: PapermillExecutionError: ..." without the message.
    if message not in proc.stdout + proc.stderr:
        pytest.xfail("the runner does not print the notebook's exception in the terminal yet")
