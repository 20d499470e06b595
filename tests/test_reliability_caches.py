"""Reliability matrix, part 1: caches and inputs (issue 11).

Every row is one way a run directory goes wrong or one bad input, with its expected outcome:

* **recover, identical**: the damaged artifact is a logged cache miss (logger ``simo_lite.store``,
  the line names the artifact, the file and the error) and is recomputed to exactly what was there;
* **recompute**: an input changed (recipe, learning rate, dataset files): every artifact downstream
  misses with ``key changed: ...`` naming what changed, and nothing stale is served;
* **load, noted**: the artifact is valid and served; a note is logged (another thread count);
* **error**: a bad argument or file stops at once with a message naming it and the valid values.

Part 2 (interrupted training) and part 3 (concurrent processes, identical runs) are
``test_reliability_interrupts.py`` and ``test_reliability_concurrency.py``.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from simo_lite import backbones, fixtures, foundation, profiles, training
from simo_lite import store as st
from simo_lite.experiment import Experiment, main

TASKS = "seg,depth"


# ------------------------------------------------------------------------------------------------
# a complete smoke run directory, built once; every case damages a copy of it
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def profile():
    return profiles.get("smoke")


@pytest.fixture(scope="module")
def base(tmp_path_factory, profile):
    run = tmp_path_factory.mktemp("base-run")
    exp = Experiment(profile, TASKS, seed=0, run_dir=run)
    rows = {r: exp.row(r) for r in ("experts", "ta", "ta+repr")}
    merged = exp.merged_model("ta")[0]
    realigned = exp.repr_realigned(merged, kind="block")[0]
    return dict(run=run, rows=rows, sweep=exp.alpha_sweep("ta"),
                experts={t: (_state(exp.expert(t)[0]), exp.expert(t)[1].to_dict()) for t in exp.tasks},
                realigned=_state(realigned), foundation=(run / f"foundation-{exp.foundation_hash}.safetensors"))


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _one(run: Path, pattern: str) -> Path:
    files = sorted(run.glob(pattern))
    assert len(files) == 1, (pattern, files)
    return files[0]


def _new_exp(run, profile=None):
    return Experiment(profile or profiles.get("smoke"), TASKS, seed=0, run_dir=run)


def _no_training(*a, **k):
    raise AssertionError("trained although a valid checkpoint exists")


# -- damage ---------------------------------------------------------------------------------------
def _garbage(path: Path) -> None:
    path.write_bytes(b"{not json \xff")


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _edit_json(path: Path, fn) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def _wrong_shape_head(path: Path) -> None:
    """Same metadata (right key), tensors of another shape."""
    meta = st.read_metadata(path)
    bad = {k: torch.zeros(tuple(s + 1 for s in v.shape) or (2,)) for k, v in st.load_tensors(path).items()}
    st.save_tensors(bad, path, metadata=meta)


def _retag_foundation(path: Path) -> None:
    """A foundation whose stored header says it was pretrained on other images."""
    meta = st.read_metadata(path)
    header = json.loads(meta["artifact"])
    header["upstream"]["data-train-images"] = "0" * 12
    header["key"] = "f" * 12
    st.save_tensors(st.load_tensors(path), path, metadata={**meta, "artifact": json.dumps(header)})


def _as_old_version(run: Path, pattern: str) -> None:
    """Make an artifact look like one of a run directory from before the store: other key, no header."""
    path = _one(run, pattern)
    target = path.with_name(path.name.replace(path.name.rsplit("-", 1)[1].split(".")[0], "0123456789ab"))
    if path.is_dir():
        _edit_json(path / "record.json", lambda o: o.pop("artifact"))
    else:
        _edit_json(path, lambda o: o.pop("artifact"))
    path.rename(target)


# -- checks: act on the damaged copy, compare with the intact run ---------------------------------
def _row_check(name):
    def check(exp, base):
        assert st.without_wall_clock(exp.row(name)) == st.without_wall_clock(base["rows"][name])
        art = exp.row_artifact(name)                     # and it is stored again, valid
        assert exp.store.read_json(exp.store.path("rows", art), art) == exp.row(name)
    return check


def _sweep_check(exp, base):
    assert exp.alpha_sweep("ta") == base["sweep"]


def _expert_check(task):
    def check(exp, base):
        model, rec = exp.expert(task)
        ref_state, ref_rec = base["experts"][task]
        assert _same_state(_state(model), ref_state)
        assert st.without_wall_clock(rec.to_dict()) == st.without_wall_clock(json.loads(json.dumps(ref_rec)))
    return check


def _realign_check(exp, base):
    model = exp.repr_realigned(exp.merged_model("ta")[0], kind="block")[0]
    assert _same_state(_state(model), base["realigned"])


def _foundation_check(exp, base):
    exp.foundation                                                     # loaded (here: pretrained) on first use
    path = exp.run_dir / base["foundation"].name
    assert path.read_bytes() == base["foundation"].read_bytes()       # pretrained again, byte-identical
    assert st.without_wall_clock(exp.row("ta")) == st.without_wall_clock(base["rows"]["ta"])


#      id, expected outcome, damage(run), check(exp, base), logged reason (regex)
CACHE_CASES = [
    ("alpha-json-garbage", "recover, identical", lambda r: _garbage(_one(r, "alphas/*-ta-*.json")), _sweep_check,
     r"recomputing alpha seg\+depth-ta: corrupt file alphas/seg\+depth-ta-\w+\.json: (JSON|Unicode)DecodeError"),
    ("alpha-json-empty", "recover, identical", lambda r: _one(r, "alphas/*-ta-*.json").write_text(""),
     _sweep_check, r"corrupt file alphas/.*JSONDecodeError"),
    ("alpha-json-bad-metrics", "recover, identical",
     lambda r: _edit_json(_one(r, "alphas/*-ta-*.json"), lambda o: o.update(val_metrics={"x": 1})),
     _sweep_check, r"corrupt file alphas/.*(bad val_metrics|not the grid)"),
    ("row-json-truncated", "recover, identical", lambda r: _truncate(_one(r, "rows/*-ta-*.json")), _row_check("ta"),
     r"recomputing row seg\+depth-ta: corrupt file rows/seg\+depth-ta-\w+\.json: JSONDecodeError"),
    ("row-json-not-an-object", "recover, identical", lambda r: _one(r, "rows/*-ta-*.json").write_text("[1, 2]"),
     _row_check("ta"), r"corrupt file rows/.*a JSON list, expected an object"),
    ("row-json-missing-field", "recover, identical",
     lambda r: _edit_json(_one(r, "rows/*-ta-*.json"), lambda o: o.pop("metrics")), _row_check("ta"),
     r"corrupt file rows/.*missing field\(s\) \['metrics'\]"),
    ("row-json-of-another-row", "recover, identical",
     lambda r: shutil.copy(_one(r, "rows/*-experts-*.json"), _one(r, "rows/*-ta-*.json")), _row_check("ta"),
     r"corrupt file rows/seg\+depth-ta-.*stores key \w+, its name says"),
    ("record-without-record-key", "recover, identical",
     lambda r: _edit_json(_one(r, "models/expert-seg-*") / "record.json", lambda o: o.pop("record")),
     _expert_check("seg"),
     r"recomputing expert expert-seg: corrupt file .*record\.json: missing field\(s\) \['record'\]"),
    ("record-json-garbage", "recover, identical", lambda r: _garbage(_one(r, "models/expert-seg-*") / "record.json"),
     _expert_check("seg"), r"recomputing expert expert-seg: corrupt file .*record\.json"),
    ("head-right-key-wrong-shape", "recover, identical",
     lambda r: _wrong_shape_head(_one(r, "models/expert-seg-*") / "head-seg.safetensors"), _expert_check("seg"),
     r"recomputing expert expert-seg: corrupt file .*head-seg\.safetensors: RuntimeError"),
    ("encoder-truncated", "recover, identical",
     lambda r: _truncate(_one(r, "models/expert-depth-*") / "encoder.safetensors"), _expert_check("depth"),
     r"recomputing expert expert-depth: corrupt file models/expert-depth-\w+/encoder\.safetensors: "),
    ("encoder-of-another-expert", "recover, identical",
     lambda r: shutil.copy(_one(r, "models/expert-depth-*") / "encoder.safetensors",
                           _one(r, "models/expert-seg-*") / "encoder.safetensors"),
     _expert_check("seg"),
     r"recomputing expert expert-seg: corrupt file .*encoder\.safetensors: stores key \w+, its name says"),
    ("realign-garbage", "recover, identical", lambda r: _garbage(_one(r, "realign/repr-block-*.safetensors")),
     _realign_check, r"recomputing realign repr-block-r16: corrupt file repr-block-r16-\w+\.safetensors: "),
    ("realign-record-missing", "recover, identical", lambda r: _one(r, "realign/repr-block-*.json").unlink(),
     _realign_check, r"recomputing realign repr-block-r16: not found"),
    ("foundation-truncated", "recover, identical bytes", lambda r: _truncate(_one(r, "foundation-*.safetensors")),
     _foundation_check, r"recomputing foundation foundation-\w+: corrupt file foundation-\w+\.safetensors: "),
    ("foundation-of-other-images", "recompute", lambda r: _retag_foundation(_one(r, "foundation-*.safetensors")),
     _foundation_check, r"recomputing foundation foundation-\w+: key changed: upstream data-train-images changed"),
    ("old-run-dir-row", "detected stale, recomputed", lambda r: _as_old_version(r, "rows/*-ta-*.json"),
     _row_check("ta"), r"recomputing row seg\+depth-ta: key changed: no key chain stored .*\(was seg\+depth-ta-0123"),
    ("old-run-dir-expert", "detected stale, recomputed", lambda r: _as_old_version(r, "models/expert-seg-*"),
     _expert_check("seg"), r"recomputing expert expert-seg: key changed: no key chain stored"),
]


@pytest.mark.parametrize("case, outcome, damage, check, logged", CACHE_CASES, ids=[c[0] for c in CACHE_CASES])
def test_cache_matrix(case, outcome, damage, check, logged, base, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    damage(run)
    caplog.set_level(logging.INFO, logger="simo_lite")
    check(_new_exp(run), base)
    lines = [r.getMessage() for r in caplog.records if r.name == "simo_lite.store"]
    assert any(re.search(logged, ln) for ln in lines), (outcome, lines)
    recomputes = [ln for ln in lines if ln.startswith("recomputing")]
    assert len(recomputes) <= 4, recomputes       # only what was damaged (and what is built from it)


# ------------------------------------------------------------------------------------------------
# changed inputs: nothing stale is served
# ------------------------------------------------------------------------------------------------
def _recipe_change(monkeypatch):
    """A new expert recipe: the version bumped and a 3x fine-tuning learning rate (in the code)."""
    monkeypatch.setattr(training, "RECIPE_VERSION", training.RECIPE_VERSION + 1)
    real_fit = training.fit

    def fit(model, data, tasks, steps, lr, *a, **k):
        return real_fit(model, data, tasks, steps, lr * 3 if k.get("name", "").endswith("/finetune") else lr, *a, **k)
    monkeypatch.setattr(training, "fit", fit)
    return profiles.get("smoke")


CHANGE_CASES = [
    ("recipe-version-and-3x-lr", "recompute experts and every row", _recipe_change,
     [r"recomputing expert expert-seg: key changed: config version \(2 -> 3\) changed",
      r"recomputing row seg\+depth-ta: key changed: upstream expert-depth, expert-seg, merge-ta changed",
      r"recomputing alpha seg\+depth-ta: key changed: upstream expert-depth, expert-seg changed"]),
    ("profile-lr-finetune-3x", "recompute experts and every row",
     lambda mp: profiles.get("smoke", lr_finetune=3 * profiles.get("smoke").lr_finetune),
     [r"recomputing expert expert-seg: key changed: config profile\.lr_finetune \(0\.0005 -> 0\.0015",
      r"recomputing row seg\+depth-ta: key changed: upstream expert-depth, expert-seg, merge-ta changed; config "
      r"profile\.lr_finetune"]),
]


@pytest.mark.parametrize("case, outcome, change, logged", CHANGE_CASES, ids=[c[0] for c in CHANGE_CASES])
def test_changed_inputs_matrix(case, outcome, change, logged, base, tmp_path, caplog, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    prof = change(monkeypatch)
    caplog.set_level(logging.INFO, logger="simo_lite")
    exp = _new_exp(run, prof)
    row = exp.row("ta")
    lines = [r.getMessage() for r in caplog.records if r.name == "simo_lite.store"]
    for pattern in logged:
        assert any(re.search(pattern, ln) for ln in lines), (pattern, lines)
    # the experts were retrained with the new recipe, and the row was computed from them
    assert not _same_state(_state(exp.expert("seg")[0]), base["experts"]["seg"][0])
    assert row["metrics"] != base["rows"]["ta"]["metrics"]
    assert row["normalized"] == pytest.approx(exp.normalized(row["metrics"]))
    assert len(list((run / "rows").glob("*-ta-*.json"))) == 2 and len(list((run / "models").glob("expert-seg-*"))) == 2


def test_replaced_real_dataset_files_retrain_the_expert(tmp_path, caplog):
    """NYUv2 images replaced by others (same counts, same shapes): another data key, a new expert."""
    root = fixtures.write_nyuv2(tmp_path / "nyuv2", n_train=4, n_val=4, hw=(72, 96))
    prof = profiles.get("smoke", dataset="nyuv2", data_dir=str(root))
    state = foundation.random_encoder_state(prof)
    run = tmp_path / "run"
    data = training.load_data(prof)
    m1, _ = training.train_expert("depth", state, "random-init", prof, data, run)
    again, _ = training.train_expert("depth", state, "random-init", prof, training.load_data(prof), run)
    assert _same_state(_state(m1), _state(again))                           # same files: loaded
    img = root / "train" / "image" / "0.npy"
    np.save(img, 1.0 - np.load(img))                                       # another image, same shape
    caplog.set_level(logging.INFO, logger="simo_lite")
    m2, _ = training.train_expert("depth", state, "random-init", prof, training.load_data(prof), run)
    assert not _same_state(_state(m1), _state(m2))
    assert any("recomputing expert expert-depth: key changed: upstream data changed" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert len(list((run / "models").glob("expert-depth-*"))) == 2


def test_other_thread_count_is_recorded_not_keyed(base, tmp_path, caplog, monkeypatch):
    """An expert made with 7 threads loads (no retraining) with a logged note; every artifact records it."""
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    rec = _one(run, "models/expert-seg-*") / "record.json"
    assert json.loads(rec.read_text())["artifact"]["threads"] == torch.get_num_threads()
    assert json.loads(st.read_metadata(rec.parent / "encoder.safetensors")["artifact"])["threads"] \
        == torch.get_num_threads()
    assert json.loads(_one(run, "rows/*-ta-*.json").read_text())["artifact"]["threads"] == torch.get_num_threads()
    _edit_json(rec, lambda o: o["artifact"].update(threads=7))
    caplog.set_level(logging.INFO, logger="simo_lite")
    monkeypatch.setattr(training, "fit", _no_training)
    _expert_check("seg")(_new_exp(run), base)
    assert any("expert expert-seg made with 7 threads" in r.getMessage() and "recorded, not keyed" in r.getMessage()
               for r in caplog.records)


def test_existing_results_are_reused_not_recomputed(base, tmp_path, caplog, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    caplog.set_level(logging.INFO, logger="simo_lite")
    monkeypatch.setattr(training, "fit", _no_training)
    exp = _new_exp(run)
    for name in ("experts", "ta", "ta+repr"):
        assert exp.row(name) == json.loads(json.dumps(base["rows"][name]))
    assert not [r for r in caplog.records if r.getMessage().startswith("recomputing")]


# ------------------------------------------------------------------------------------------------
# inputs: the experiment CLI and weights files
# ------------------------------------------------------------------------------------------------
CLI_CASES = [
    ("paper-profile-on-scenes", ["--profile", "paper", "--tasks", "nyu3"],
     ["the 'paper' profile is the paper's real-data set-up", "nyuv2", "cityscapes"]),
    ("negative-seed", ["--profile", "smoke", "--seed", "-1"], ["--seed must be a non-negative integer, got -1"]),
    ("unknown-task-set", ["--profile", "smoke", "--tasks", "nyu4"], ["unknown task 'nyu4'", "nyu3", "diverse5", "seg"]),
    ("second-task-set-bad", ["--profile", "smoke", "--tasks", "nyu3", "seg,foo"],
     ["unknown task 'foo'", "valid tasks"]),
    ("unknown-device", ["--profile", "smoke", "--device", "tpu"], ["bad device 'tpu'", "'auto', 'cpu' or 'cuda[:N]'"]),
    ("unknown-profile", ["--profile", "huge"], ["invalid choice: 'huge'", "smoke"]),
    ("real-dataset-without-folder", ["--profile", "smoke", "--dataset", "nyuv2"], ["needs data_dir"]),
    ("real-dataset-missing-folder", ["--profile", "smoke", "--dataset", "nyuv2", "--data-dir", "/nonexistent/nyu"],
     ["'/nonexistent/nyu' is not a folder"]),
    ("weights-without-backbone", ["--profile", "smoke", "--weights", "w.pth"], ["weights given without backbone"]),
]
if not torch.cuda.is_available():
    CLI_CASES.append(("cuda-without-gpu", ["--profile", "smoke", "--device", "cuda"], ["CUDA is not available"]))


@pytest.mark.parametrize("case, argv, expected", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_validation_matrix(case, argv, expected, tmp_path, capsys, monkeypatch):
    """Rejected before any data is rendered or loaded, with a one-line ``error: ...`` and no traceback."""
    import simo_lite.experiment as E
    monkeypatch.setattr(E, "load_data", lambda *a, **k: pytest.fail("data loaded before validation"))
    monkeypatch.setattr(E, "Experiment", lambda *a, **k: pytest.fail("experiment started before validation"))
    with pytest.raises(SystemExit) as e:
        main([*argv, "--run-dir", str(tmp_path / "run")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    error_lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(error_lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in error_lines[0], (text, err)
    assert not (tmp_path / "run").exists()


def test_cli_default_run_dir_is_the_courses(monkeypatch, tmp_path):
    import simo_lite.course as C
    import simo_lite.experiment as E
    calls = []
    monkeypatch.setattr(C, "default_run_dir", lambda *a, **k: calls.append((a, k)) or tmp_path / "named")
    args, prof, tasks, device, run_dir = E._parse_args(["--profile", "smoke", "--seed", "3", "--tasks", "nyu3",
                                                         "--device", "cpu"])
    assert calls == [(("smoke", 3, "scenes"), {})] and run_dir == tmp_path / "named"
    assert tasks == ["nyu3"] and str(device) == "cpu"


def _random_bytes(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _pickled_object(path: Path) -> Path:
    torch.save({"weight": torch.zeros(2), "fn": fixtures.write_nyuv2}, path)     # a non-tensor global
    return path


WEIGHTS_CASES = [
    ("random-bytes-pth", lambda d: _random_bytes(d / "w.pth"), "is not a valid PyTorch checkpoint"),
    ("random-bytes-pt", lambda d: _random_bytes(d / "w.pt"), "is not a valid PyTorch checkpoint"),
    ("empty-bin", lambda d: _empty(d / "w.bin"), "is not a valid PyTorch checkpoint"),
    ("random-bytes-safetensors", lambda d: _random_bytes(d / "w.safetensors"), "is not a valid safetensors file"),
    ("pickle-with-code", lambda d: _pickled_object(d / "w.pth"), "loads weights only (no pickled code)"),
]


@pytest.mark.parametrize("case, make, expected", WEIGHTS_CASES, ids=[c[0] for c in WEIGHTS_CASES])
def test_weights_file_matrix(case, make, expected, tmp_path):
    path = make(tmp_path)
    with pytest.raises(backbones.BackboneError) as e:
        backbones.load_backbone(fixtures.FIXTURE_BACKBONE, path)
    msg = str(e.value)
    assert str(path) in msg and expected in msg, msg
    assert "weights_only=False" not in msg, msg                 # never suggested as a fix


def test_store_write_leaves_no_temporary_files(tmp_path):
    art = st.Artifact("row", "t-ta", {"a": 1}, {"expert-seg": "x" * 12})
    s = st.Store(tmp_path)
    path = s.path("rows", art)
    for i in range(3):
        s.write_json(path, {"i": i}, art)
    assert s.read_json(path, art) == {"i": 2}
    assert sorted(p.name for p in (tmp_path / "rows").iterdir()) == [path.name]
    assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)      # usual permissions, not mkstemp's
