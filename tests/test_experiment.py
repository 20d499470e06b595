"""Experiment: the cached pieces (alpha sweeps, table rows) are reused across instances, as notebooks do."""
from __future__ import annotations

import json

import pytest

from simo_lite import merging, profiles
from simo_lite.experiment import Experiment


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("exp")


@pytest.fixture(scope="module")
def exp(run_dir):
    return Experiment(profiles.get("smoke"), "seg,depth", seed=0, run_dir=run_dir)


def test_select_alpha_is_cached_on_disk(exp, run_dir, monkeypatch):
    grid = (0.0, 0.5, 1.0)
    alpha, scores = exp.select_alpha("ta", grid=grid)
    assert alpha in grid and set(scores) == set(grid)
    assert alpha == max(scores, key=scores.get)
    files = list((run_dir / "alphas").glob("seg+depth-*.json"))
    stored = json.loads(files[0].read_text())["val_metrics"]
    assert len(files) == 1 and {float(a) for a in stored} == set(grid)
    # the stored per-task metrics are what the scores were computed from
    for a in grid:
        assert scores[a] == pytest.approx(exp.score(stored[str(a)], split="val"))
    assert exp.alpha_sweep("ta", grid=grid)[alpha] == stored[str(alpha)]

    # a second Experiment (the next notebook) must not merge or evaluate again
    again = Experiment(profiles.get("smoke"), "seg,depth", seed=0, run_dir=run_dir)
    monkeypatch.setattr(merging, "merge", lambda *a, **k: pytest.fail("alpha sweep re-run"))
    alpha2, scores2 = again.select_alpha("ta", grid=grid)
    assert alpha2 == alpha and scores2 == scores

    # another grid or method is another sweep
    monkeypatch.undo()
    alpha3, scores3 = again.select_alpha("ta", grid=(0.0, 1.0))
    assert set(scores3) == {0.0, 1.0} and scores3[1.0] == pytest.approx(scores[1.0], rel=1e-6)
    assert len(list((run_dir / "alphas").glob("*.json"))) == 2


def test_row_is_cached_and_consistent(exp, run_dir):
    row = exp.row("ta")
    assert row["row"] == "ta" and set(row["metrics"]) == {"seg", "depth"}
    assert row["delta_m_ratio"] == pytest.approx(exp.score(row["metrics"], kind="ratio"))
    swept = {float(a) for a in row["val_scores"]}                  # the grid, extended while its edge is best
    assert row["alpha"] in swept and set(merging.ALPHA_GRID) <= swept and max(swept) <= merging.ALPHA_MAX
    again = Experiment(profiles.get("smoke"), "seg,depth", seed=0, run_dir=run_dir)
    assert again.row("ta") == json.loads(json.dumps(row, default=float))
    with pytest.raises(ValueError, match="unknown row"):
        exp.row("nope")


def test_merge_combinations_single_tasks_are_experts(exp):
    combos = exp.merge_combinations("ta")
    assert sorted(combos) == [1, 2]
    assert [c["tasks"] for c in combos[1]] == [["seg"], ["depth"]]
    for c in combos[1]:
        assert c["mean"] == pytest.approx(1.0)
    (pair,) = combos[2]
    assert set(pair["per_task"]) == {"seg", "depth"}
    assert pair["mean"] == pytest.approx(sum(pair["per_task"].values()) / 2)
    # the pair uses the alpha chosen on validation for the pair, i.e. the "ta" row's merge
    assert pair["per_task"] == pytest.approx(exp.normalized(exp.row("ta")["metrics"]))


def test_task_relationships_evaluates_the_foundation_once(exp, monkeypatch):
    calls = []
    evaluate = exp.evaluate
    monkeypatch.setattr(exp, "evaluate", lambda model, split="test", tasks=None:
                        (calls.append(split), evaluate(model, split, tasks))[1])
    lams = (0.0, 0.5, 1.0)
    rel = exp.task_relationships(lams)
    n_tasks = len(exp.tasks)
    # lam = 0 is theta_0 for every primary: one evaluation for all of them, then (n_lams - 1) per primary
    assert len(calls) == n_tasks * (len(lams) - 1) + 1 and set(calls) == {"val"}
    assert list(rel) == list(exp.tasks) and all(list(rel[p]) == list(lams) for p in exp.tasks)
    zero = [rel[p][0.0] for p in exp.tasks]
    assert all(z == zero[0] for z in zero) and len({id(z) for z in zero}) == n_tasks   # equal, not shared
    monkeypatch.undo()
    assert zero[0] == pytest.approx(exp.normalized(exp.evaluate(exp.with_heads(exp.foundation), "val"), "val"))
    for p in exp.tasks:                                                   # lam = 1: the primary's own expert
        assert rel[p][1.0][p] == pytest.approx(1.0, abs=1e-2)
    # without 0 on the grid every point is evaluated
    calls.clear()
    monkeypatch.setattr(exp, "evaluate", lambda model, split="test", tasks=None:
                        (calls.append(split), evaluate(model, split, tasks))[1])
    exp.task_relationships((0.5, 1.0))
    assert len(calls) == n_tasks * 2


def test_head_realigned_is_the_direct_call_on_the_first_val_images(exp):
    """Notebook 05's sample-budget curve and budget tries call realign.head_realign on the first n val images
    with exp.head_realigned's settings, and at the notebook's own n reuse exp.head_realigned's result: the
    two must be the same realignment."""
    import torch

    from simo_lite import realign
    p, n = exp.profile, len(exp.data["val_realign"]["image"])
    model = exp.with_heads(exp.merge("ta", 0.5))
    ref, ref_record = exp.head_realigned(model)
    val_n = {k: v[:n] for k, v in exp.data["val"].items()}
    new, record = realign.head_realign(model, val_n, exp.tasks, steps=p.head_steps, lr=p.lr_head_realign,
                                       batch_size=p.batch_size, seed=exp.seed, device=exp.device)
    assert (record.steps, record.samples) == (ref_record.steps, ref_record.samples)
    for (k, a), b in zip(new.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu()), k
    assert exp.score(exp.evaluate(new, "val"), split="val") == exp.score(exp.evaluate(ref, "val"), split="val")


def test_method_predictions_are_each_methods_maps_on_one_image(exp):
    """The rows of the all-methods prediction grid (07, 08): the labels, each expert on its own task, MTL,
    the merge at alpha* and the fixes on it, each equal to predicting with that model directly."""
    import torch

    from simo_lite.tasks import get_task
    image, rows = exp.method_predictions("ta", fixes=("head",), index=1)
    test = exp.data["test"]
    assert torch.equal(image, test["image"][1])
    _, alpha, _ = exp.merged_model("ta")
    assert list(rows) == ["target", "experts", "MTL", f"ta (α* = {alpha:g})", "ta+head"]
    assert all(set(r) == set(exp.tasks) for r in rows.values())

    def direct(model, t):
        with torch.no_grad():
            return get_task(t).predict(model.eval()(test["image"][1:2].to(exp.device))[t])[0].cpu()

    for t in exp.tasks:
        assert torch.equal(rows["target"][t], test[t][1])
        assert torch.equal(rows["experts"][t], direct(exp.expert(t)[0], t))
        assert torch.equal(rows["MTL"][t], direct(exp.mtl()[0], t))
        assert torch.equal(rows["ta+head"][t], direct(exp.fix("head", exp.merged_model("ta")[0])[0], t))
        assert rows["target"][t].shape[-2:] == image.shape[-2:] == rows["MTL"][t].shape[-2:]


# ------------------------------------------------------------------------------------------------
# a lazy Experiment: nothing is loaded, trained or written until asked for
# ------------------------------------------------------------------------------------------------
_FILE_EVENTS = ("open", "os.mkdir", "os.listdir", "os.scandir", "os.rename", "os.replace", "os.remove", "os.rmdir",
                "shutil.rmtree", "shutil.copyfile")
_audit = {"on": False, "events": []}


def _audit_hook(event, args):           # audit hooks cannot be removed: a no-op unless switched on
    if _audit["on"] and event in _FILE_EVENTS:
        _audit["events"].append((event, args[0] if args else None))


def test_constructing_an_experiment_touches_no_file_and_is_fast(tmp_path, monkeypatch):
    import sys
    import time

    import simo_lite.experiment as E
    for name in ("load_data", "load_foundation", "train_expert", "train_mtl"):
        monkeypatch.setattr(E, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} called while constructing"))
    prof = profiles.get("smoke")
    if _audit_hook not in getattr(sys, "_simo_lite_hooks", ()):
        sys.addaudithook(_audit_hook)
        sys._simo_lite_hooks = (*getattr(sys, "_simo_lite_hooks", ()), _audit_hook)
    _audit.update(on=True, events=[])
    try:
        t0 = time.perf_counter()
        exp = Experiment(prof, "nyu3", seed=0, run_dir=tmp_path / "run", realign_samples=8)
        dt = time.perf_counter() - t0
    finally:
        _audit["on"] = False
    assert _audit["events"] == [], _audit["events"]
    assert dt < 0.05, f"constructing took {1000 * dt:.1f} ms"
    assert not (tmp_path / "run").exists()
    assert exp.tasks == ("seg", "depth", "normals") and exp.store.root == tmp_path / "run"
    # bad settings are still refused at construction
    with pytest.raises(ValueError, match="realign_samples must be in 1.."):
        Experiment(prof, "nyu3", run_dir=tmp_path / "run", realign_samples=prof.n_val + 1)


def test_inputs_load_on_first_use(exp, run_dir):
    fresh = Experiment(profiles.get("smoke"), "seg,depth", seed=0, run_dir=run_dir, realign_samples=8)
    assert fresh._data is None and fresh._foundation is None
    assert fresh.data_key == exp.data_key                       # the same data as the module's experiment
    assert len(fresh.data["val_realign"]["image"]) == 8 and fresh.data["val"] is not fresh.data["val_realign"]
    assert fresh.foundation_key == exp.foundation_key and fresh.foundation_hash == exp.foundation_hash
    assert fresh.foundation.keys() == exp.foundation.keys()


def test_rows_by_id_pair_or_spec_are_one_row(exp):
    from simo_lite.rows import RowSpec
    a = exp.row_artifact("ta")
    assert exp.row_artifact(("ta", None)).key == a.key == exp.row_artifact(RowSpec("ta")).key
    assert a.upstream["merge-ta"] == exp.merge_artifact("ta").key
    assert "merge-zeroshot" not in exp.row_artifact("zeroshot").upstream       # no alpha, no merge artifact
    assert exp.row_artifact("mtl").upstream["mtl"] == exp.mtl_artifact().key
    with pytest.raises(ValueError, match="unknown row 'ta\\+nope'"):
        exp.row(("ta", "nope"))
