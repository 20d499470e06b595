"""Shipped expert / MTL checkpoints (``simo_lite.shipped``, ``make experts``): written with a manifest,
loaded instead of trained when the key matches, ignored otherwise."""
from __future__ import annotations

import json

import pytest
import torch

from simo_lite import profiles, shipped, training
from simo_lite.checkpoints import sha256_file
from simo_lite.experiment import Experiment


@pytest.fixture(scope="module")
def shipped_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    run_dir = tmp_path_factory.mktemp("ship-run")
    m = shipped.ship("smoke", sets=("depth,normals",), seed=0, mtl=True, run_dir=run_dir, data_dir=data_dir,
                     command="test", mtl_factors=(1, 2),
                     realign=("depth,normals:ta+repr", "depth,normals:ta+lora:steps=3", "depth,normals:ta+head",
                              "depth,normals:zeroshot+head:steps=2:cached=0", "depth,normals:coefficients:steps=3"))
    m["by_name"] = {}
    for info in m["models"].values():
        m["by_name"].setdefault(info["name"], []).append(info)
    return data_dir, m


def test_ship_writes_models_and_a_manifest(shipped_dir):
    data_dir, m = shipped_dir
    assert sorted(m["by_name"]) == ["expert-depth", "expert-normals", "mtl-depth+normals"]
    assert len(m["by_name"]["mtl-depth+normals"]) == 2                     # MTL at 1x and 2x the budget
    assert {i["steps"] for i in m["by_name"]["mtl-depth+normals"]} == {12, 18}   # probe 6 + FT 6 or 12
    on_disk = json.loads(shipped.manifest_path("smoke", data_dir).read_text())
    assert on_disk["models"].keys() == m["models"].keys() and on_disk["command"] == "test"
    for key, info in m["models"].items():
        assert key == f"{info['name']}@{info['folder'].rsplit('-', 1)[1]}"
        folder = data_dir / info["folder"]
        assert (folder / "record.json").is_file() and (folder / "encoder.safetensors").is_file()
        assert not any(p.name.endswith("-state.safetensors") or p.name == "probe" for p in folder.iterdir())
        for name, digest in info["files"].items():
            assert sha256_file(folder / name) == digest
        assert info["steps"] > 0 and info["val_tail"] == info["val_tail"]      # a number, not NaN


def test_a_matching_run_loads_the_shipped_model_instead_of_training(shipped_dir, tmp_path, monkeypatch):
    data_dir, m = shipped_dir
    monkeypatch.setattr(training, "SHIPPED_DIR", data_dir)

    def no_training(*a, **k):
        raise AssertionError("trained although a shipped model matches")

    monkeypatch.setattr(training, "fit", no_training)
    exp = Experiment(profiles.get("smoke"), ("depth", "normals"), 0, "cpu", tmp_path / "run")
    model, record = exp.expert("depth")
    depth = m["by_name"]["expert-depth"][0]
    assert record.metrics["test"] == depth["test"]
    assert (tmp_path / "run" / "models" / depth["folder"].split("/")[1] / "record.json").is_file()
    _, mtl_record = exp.mtl()
    _, mtl2_record = exp.mtl(steps_factor=2)
    assert sorted([mtl_record.steps, mtl2_record.steps]) == [12, 18]
    assert {mtl_record.metrics["test"]["depth"], mtl2_record.metrics["test"]["depth"]} == \
        {i["test"]["depth"] for i in m["by_name"]["mtl-depth+normals"]}


def test_another_seed_trains(shipped_dir, tmp_path, monkeypatch):
    data_dir, _ = shipped_dir
    monkeypatch.setattr(training, "SHIPPED_DIR", data_dir)
    calls = []
    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    Experiment(profiles.get("smoke"), ("depth",), 1, "cpu", tmp_path / "run").expert("depth")
    assert calls, "seed 1 has no shipped model, so it must train"


def test_an_evidence_seed_ships_apart_and_loads_by_key(tmp_path, monkeypatch):
    """The multi-seed evidence's seed-1 models ship in data/evidence/seed-1/ (ship(data_dir=...)): a
    seed-1 run loads them without training; seed 0's folder stays untouched and a seed-2 run trains."""
    data_dir = tmp_path / "data"
    m = shipped.ship("smoke", sets=("depth",), seed=1, mtl=False, run_dir=tmp_path / "ship-run",
                     data_dir=data_dir / "evidence" / "seed-1", command="test")
    assert not (data_dir / "models-smoke").exists()
    (info,) = m["models"].values()
    assert m["seed"] == 1 and info["folder"].startswith("models-smoke/expert-depth-")
    monkeypatch.setattr(training, "SHIPPED_DIR", data_dir)
    real_fit, calls = training.fit, []
    monkeypatch.setattr(training, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    _, record = Experiment(profiles.get("smoke"), ("depth",), 1, "cpu", tmp_path / "run1").expert("depth")
    assert not calls and record.metrics["test"] == info["test"]
    Experiment(profiles.get("smoke"), ("depth",), 2, "cpu", tmp_path / "run2").expert("depth")
    assert calls, "seed 2 has no shipped model, so it must train"


def test_no_experts_ships_only_the_mtl_models(tmp_path):
    m = shipped.ship("smoke", sets=("depth,normals",), seed=0, mtl=True, experts=False, run_dir=tmp_path / "run",
                     data_dir=tmp_path / "data", command="test")
    assert [i["name"] for i in m["models"].values()] == ["mtl-depth+normals"]
    assert [p.name.rsplit("-", 1)[0] for p in (tmp_path / "data" / "models-smoke").iterdir()] == ["mtl-depth+normals"]


def test_a_damaged_shipped_model_is_not_used(shipped_dir, tmp_path, monkeypatch):
    data_dir, m = shipped_dir
    copy = tmp_path / "data"
    import shutil
    shutil.copytree(data_dir, copy)
    folder = copy / m["by_name"]["expert-normals"][0]["folder"]
    (folder / "encoder.safetensors").write_bytes(b"not a checkpoint")
    monkeypatch.setattr(training, "SHIPPED_DIR", copy)
    _, record = Experiment(profiles.get("smoke"), ("normals",), 0, "cpu", tmp_path / "run").expert("normals")
    assert record.steps > 0                                # trained afresh (the log says which file is corrupt)
    assert (tmp_path / "run" / "models").is_dir()


def test_copy_tree_replaces_a_folder_whole(tmp_path):
    import shutil as sh

    from simo_lite.atomic import copy_tree
    src = tmp_path / "src"
    (src / "probe").mkdir(parents=True)
    (src / "a.txt").write_text("new")
    (src / "probe" / "b.txt").write_text("x")
    dst = tmp_path / "out" / "dst"
    dst.mkdir(parents=True)
    (dst / "old.txt").write_text("old")
    assert copy_tree(src, dst, ignore=sh.ignore_patterns("probe")) == dst
    assert sorted(p.name for p in dst.iterdir()) == ["a.txt"] and (dst / "a.txt").read_text() == "new"
    assert sorted(p.name for p in dst.parent.iterdir()) == ["dst"]                 # no temporary left


def test_ship_writes_the_realignments_with_their_digests(shipped_dir):
    data_dir, m = shipped_dir
    assert list(m["realign"]) == ["depth,normals:ta+repr", "depth,normals:ta+lora:steps=3", "depth,normals:ta+head",
                                  "depth,normals:zeroshot+head:steps=2:cached=0", "depth,normals:coefficients:steps=3"]
    coef = m["realign"]["depth,normals:coefficients:steps=3"]
    assert coef["steps"] == 3 and coef["trainable_params"] == 2 * (profiles.get("smoke").depth + 2)  # (T, G) λ
    assert m["realign"]["depth,normals:ta+lora:steps=3"]["steps"] == 3
    assert m["realign"]["depth,normals:zeroshot+head:steps=2:cached=0"]["steps"] == 2 * 2     # 2 steps, 2 heads
    assert m["realign"]["depth,normals:ta+repr"]["steps"] == profiles.get("smoke").realign_steps
    on_disk = sorted(p.name for p in (data_dir / "models-smoke" / "realign").iterdir())
    assert on_disk == sorted(n for e in m["realign"].values() for n in e["files"])
    for e in m["realign"].values():
        assert {n.rsplit(".", 1)[1] for n in e["files"]} == {"json", "safetensors"}
        for name, digest in e["files"].items():
            assert sha256_file(data_dir / "models-smoke" / "realign" / name) == digest


def test_a_matching_run_loads_the_shipped_realignment(shipped_dir, tmp_path, monkeypatch):
    from simo_lite import realign
    data_dir, m = shipped_dir
    monkeypatch.setattr(training, "SHIPPED_DIR", data_dir)
    monkeypatch.setattr(training, "fit", lambda *a, **k: pytest.fail("trained an expert although one is shipped"))
    monkeypatch.setattr(realign, "fit", lambda *a, **k: pytest.fail("realigned although a realignment is shipped"))
    exp = Experiment(profiles.get("smoke"), ("depth", "normals"), 0, "cpu", tmp_path / "run")
    model = exp.merged_model("ta")[0]
    _, record = exp.fix("lora", model, steps=3)
    assert record.steps == 3 and record.wall_s == m["realign"]["depth,normals:ta+lora:steps=3"]["wall_s"]
    copied = sorted(p.name for p in (tmp_path / "run" / "realign").iterdir())
    assert copied == sorted(m["realign"]["depth,normals:ta+lora:steps=3"]["files"])
    _, head_record = exp.head_realigned(model)                               # the shipped head realignment
    assert head_record.wall_s == m["realign"]["depth,normals:ta+head"]["wall_s"]
    zs = exp.with_heads(exp.merge("zeroshot", 1.0))
    _, zs_record = exp.head_realigned(zs, cached=False, steps=2)
    assert zs_record.name == "head-realign-uncached" and zs_record.wall_s == \
        m["realign"]["depth,normals:zeroshot+head:steps=2:cached=0"]["wall_s"]


def test_a_matching_run_loads_the_shipped_layer_coefficients(shipped_dir, tmp_path, monkeypatch):
    """The learned layer coefficients ship like a realignment: a run of the same key copies them in and does
    not learn them again; the results-table row keeps the learning's recorded seconds."""
    from simo_lite import experiment
    data_dir, m = shipped_dir
    monkeypatch.setattr(training, "SHIPPED_DIR", data_dir)
    monkeypatch.setattr(experiment, "learn_layer_coefficients",
                        lambda *a, **k: pytest.fail("learned the coefficients although they are shipped"))
    exp = Experiment(profiles.get("smoke"), ("depth", "normals"), 0, "cpu", tmp_path / "run")
    coef, groups, losses, wall = exp.learned_coefficients(steps=3)
    entry = m["realign"]["depth,normals:coefficients:steps=3"]
    assert coef.shape == (2, len(groups)) and groups[0] == "embed" and len(losses) == 3
    assert wall == entry["wall_s"] and float(coef.min()) >= 0 and float(coef.max()) <= 1
    copied = sorted(p.name for p in (tmp_path / "run" / "realign").iterdir())
    assert copied == sorted(entry["files"])
    again = exp.layer_coefficients(steps=3)                                   # now the run's own copy
    assert all(torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b for a, b in zip(again, (coef, groups, losses)))


@pytest.mark.parametrize("spec", ["nyu3", "nyu3:ta", "nyu3:ta+bn", "nyu3:nope+repr", "nyu3:ta+repr:rank=0",
                                  "nyu3:ta+repr:width=3", "nyu3:ta+head:rank=2", "nyu3:ta+head:cached=2",
                                  "nyu3:coefficients:rank=2", "nyu3:coefficients:steps=0"])
def test_bad_realignment_specs_are_refused(spec, capsys):
    with pytest.raises(ValueError, match="bad"):
        shipped.parse_realign(spec)
    with pytest.raises(SystemExit) as e:
        shipped.main(["--profile", "smoke", "--realign", spec])
    assert e.value.code == 2 and "bad" in capsys.readouterr().err


def test_realignment_specs_parse():
    assert shipped.parse_realign("nyu3:ties+lora:rank=2:steps=50") == ("nyu3", "ties", "lora", {"rank": 2, "steps": 50})
    assert shipped.parse_realign("nyu3:ta+head:steps=25:cached=0") == ("nyu3", "ta", "head", {"steps": 25, "cached": False})


def test_the_course_realignments_parse():
    parsed = [shipped.parse_realign(spec) for spec in shipped.COURSE_REALIGN]
    assert {p[0] for p in parsed} == {"nyu3", "taskonomy5"}
    assert {p[2] for p in parsed} == {"head", "repr", "lora", "coefficients"}
    assert shipped.parse_realign("taskonomy5:coefficients:steps=7") == ("taskonomy5", "coefficients", "coefficients",
                                                                       {"steps": 7})
    assert len(set(shipped.COURSE_REALIGN)) == len(shipped.COURSE_REALIGN)


def test_copy_file_replaces_a_file_whole(tmp_path):
    from simo_lite.atomic import copy_file
    (tmp_path / "src.bin").write_bytes(b"new")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "dst.bin").write_bytes(b"old, longer")
    assert copy_file(tmp_path / "src.bin", tmp_path / "out" / "dst.bin") == tmp_path / "out" / "dst.bin"
    assert (tmp_path / "out" / "dst.bin").read_bytes() == b"new"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dst.bin"]        # no temporary left


def test_a_damaged_shipped_realignment_is_not_used(shipped_dir, tmp_path, monkeypatch, caplog):
    """A shipped realignment whose tensors are damaged is a logged miss: the run trains its own and does
    not copy the damaged file."""
    import shutil

    from simo_lite import realign
    data_dir, m = shipped_dir
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    name = next(n for n in m["realign"]["depth,normals:ta+repr"]["files"] if n.endswith(".safetensors"))
    (copy / "models-smoke" / "realign" / name).write_bytes(b"not a checkpoint")
    monkeypatch.setattr(training, "SHIPPED_DIR", copy)
    calls = []
    real_fit = realign.fit
    monkeypatch.setattr(realign, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    exp = Experiment(profiles.get("smoke"), ("depth", "normals"), 0, "cpu", tmp_path / "run")
    with caplog.at_level("INFO", logger="simo_lite.store"):
        _, record = exp.fix("repr", exp.row_merge("ta")[0])
    assert calls == [1] and record.steps == profiles.get("smoke").realign_steps
    assert "corrupt" in caplog.text and "loaded the shipped realign" not in caplog.text
    assert (tmp_path / "run" / "realign" / name).read_bytes() != b"not a checkpoint"


def test_a_load_only_reship_keeps_the_manifest(shipped_dir, monkeypatch):
    """Shipping the same models again (all loaded, nothing trained) leaves the manifest untouched: the
    command and wall_s of the run that trained them stay, and the file is not rewritten."""
    data_dir, m = shipped_dir
    monkeypatch.setattr(training, "SHIPPED_DIR", data_dir)          # the new run finds them there, by key

    def no_training(*a, **k):
        raise AssertionError("trained although a shipped model matches")

    monkeypatch.setattr(training, "fit", no_training)
    path = shipped.manifest_path("smoke", data_dir)
    before, mtime = path.read_text(), path.stat().st_mtime_ns
    again = shipped.ship("smoke", sets=("depth,normals",), seed=0, mtl=True, run_dir=data_dir.parent / "ship-run-2",
                         data_dir=data_dir, command="a second command", mtl_factors=(1, 2),
                         realign=("depth,normals:ta+repr", "depth,normals:ta+lora:steps=3", "depth,normals:ta+head",
                                  "depth,normals:zeroshot+head:steps=2:cached=0", "depth,normals:coefficients:steps=3"))
    assert path.read_text() == before and path.stat().st_mtime_ns == mtime
    assert again["command"] == "test" and again["models"].keys() == m["models"].keys()
