"""The package's layers: one home for each shared helper, and imports that stay light.

- ``simo_lite.progress``: the one progress-bar rule (on unless ``show=False``; off under CI or
  SIMO_LITE_QUIET) and the only tqdm import;
- ``simo_lite.paths``: the one definition of the repository and its folders;
- ``simo_lite.merging`` is state-dict algebra (no model, task or training import), learned
  coefficients live in ``simo_lite.coefficients``, data loading in ``simo_lite.data``;
- the modules the course runner reads (profiles, data, paths, progress, types, course) import no torch;
- freezing weights goes through ``training.set_trainable``, the encoder's input scaling through
  ``backbones.encoder_io``, dataset differences through ``simo_lite.data.DATASETS``.

Source checks list the other modules that still have to switch (``PENDING``): they may keep the
old code until they do, and no other module may add it.
"""
from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simo_lite import paths, progress

PACKAGE = Path(__file__).resolve().parent.parent / "simo_lite"
SOURCES = {p.relative_to(PACKAGE).as_posix(): p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py"))}

# modules maintained elsewhere that have not switched to the shared helper yet (may shrink to nothing)
PENDING = {
    "repo": {"classroom/student.py", "classroom/questions.py"},
    "tqdm": {"classroom/grade.py"},
    "requires_grad": set(),
    "input_scaling": set(),
    "dataset_names": set(),
}


def _code(text: str) -> str:
    """``text`` without comments and string literals (docstrings included), roughly: enough for greps."""
    text = re.sub(r'("""|\'\'\')(?:.|\n)*?\1', "", text)
    text = re.sub(r"#[^\n]*", "", text)
    return text


def _found(pattern: str, strip_strings: bool = True) -> set[str]:
    rx = re.compile(pattern)
    return {name for name, text in SOURCES.items() if rx.search(_code(text) if strip_strings else text)}


# ---------------------------------------------------------------------------------------------
# progress bars
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env,show,expected", [
    ({}, None, True), ({}, True, True), ({}, False, False),
    ({"CI": "1"}, True, False), ({"SIMO_LITE_QUIET": "1"}, None, False), ({"CI": ""}, True, True),
])
def test_one_rule_for_progress_bars(monkeypatch, env, show, expected):
    for v in progress.QUIET_VARIABLES:
        monkeypatch.delenv(v, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert progress.progress_enabled(show) is expected
    it = progress.progress(range(3), "x", show=show, disable=False, file=io.StringIO())
    assert hasattr(it, "set_postfix") is expected and list(it) == [0, 1, 2]


def test_short_loops_get_no_bar(monkeypatch):
    for v in progress.QUIET_VARIABLES:
        monkeypatch.delenv(v, raising=False)
    r = range(4)
    assert progress.progress(r, "x", min_total=5) is r
    assert progress.progress(r, "x", total=10, min_total=5, file=io.StringIO()) is not r


def test_tqdm_is_imported_in_one_place():
    assert _found(r"\bfrom tqdm|\bimport tqdm") - PENDING["tqdm"] == {"progress.py"}


def test_the_old_names_of_the_rule_are_the_rule():
    from simo_lite import course, training
    assert training.progress_enabled is progress.progress_enabled is course.progress_enabled


# ---------------------------------------------------------------------------------------------
# paths
# ---------------------------------------------------------------------------------------------
def test_paths(monkeypatch, tmp_path):
    from simo_lite import course, foundation
    assert paths.REPO == PACKAGE.parent and paths.NOTEBOOK_DIR == paths.REPO / "notebooks"
    assert course.REPO is paths.REPO and course.NOTEBOOK_DIR is paths.NOTEBOOK_DIR
    assert foundation.SHIPPED_DIR == paths.DATA_DIR == paths.REPO / "data"
    monkeypatch.setenv("SIMO_LITE_RUNS", str(tmp_path / "runs"))
    assert paths.runs_root() == course.runs_root() == tmp_path / "runs"
    monkeypatch.delenv("SIMO_LITE_RUNS")
    assert paths.runs_root() == paths.REPO / "runs"


def test_the_repository_is_located_in_one_place():
    found = _found(r"__file__\)\.resolve\(\)\.(parent\.parent|parents\[\d\])")
    assert found - PENDING["repo"] == {"paths.py"}


# ---------------------------------------------------------------------------------------------
# layers and light imports
# ---------------------------------------------------------------------------------------------
def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "; import sys; print(' '.join(sorted(sys.modules)))"],
                         check=True, capture_output=True, text=True).stdout.split()
    return set(out)


@pytest.mark.parametrize("module", ["profiles", "data", "paths", "progress", "types", "registry", "course"])
def test_runner_side_modules_import_without_torch(module):
    assert "torch" not in _modules_after(f"import simo_lite.{module}")


def test_merging_is_state_dict_algebra():
    loaded = _modules_after("import simo_lite.merging")
    assert not {"simo_lite.training", "simo_lite.models", "simo_lite.tasks", "simo_lite.coefficients",
                "simo_lite.data", "timm"} & loaded


def test_data_loading_and_coefficients_have_their_own_modules():
    from simo_lite import coefficients, data, merging, training
    assert training.load_data is data.load_data
    assert merging.learn_layer_coefficients is coefficients.learn_layer_coefficients
    assert "def load_data" not in SOURCES["training.py"]
    assert "def learn_layer_coefficients" not in SOURCES["merging.py"]


def test_weights_are_frozen_through_set_trainable():
    assert _found(r"requires_grad_\(") - PENDING["requires_grad"] == {"training.py"}
    assert len(re.findall(r"requires_grad_\(", _code(SOURCES["training.py"]))) == 1   # inside set_trainable


def test_the_input_scaling_is_written_once():
    assert _found(r"\* 2 - 1") - PENDING["input_scaling"] == {"backbones.py"}


def test_dataset_names_are_compared_nowhere():
    """Code looks datasets up in the registry (``simo_lite.data.DATASETS``) instead of comparing names."""
    names = r"""["'](?:scenes|nyuv2|cityscapes)["']"""
    compared = _found(rf"[!=]=\s*{names}|{names}\s*[!=]=|in \(\s*{names}", strip_strings=False)
    assert compared - PENDING["dataset_names"] == set()


def test_type_aliases_have_one_home():
    from simo_lite import merging, types
    assert merging.StateDict is types.StateDict
    assert {n for n, t in SOURCES.items() if re.search(r"(?m)^(StateDict|Split|Splits)\s*=", t)} == {"types.py"}
