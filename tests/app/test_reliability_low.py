"""Issue 32, the remaining low items (docs/reliability.md): a checkpoint whose metadata does
not match its weights, a file that is no checkpoint or is empty, ``evaluate --train-size`` on
a real dataset, loss-file errors that name the file, a copied trial file counted once, a
directory (or a file) named for what it is, and ``experiment:NAME`` of a retrain experiment.

CLI cases run ``autoloss_app.cli.main`` in this process (argparse included) and check status
2, one line on stderr, that Ray was not started and that nothing was written. No Ray here."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch

from autoloss_ray.checkpoint import load_checkpoint, save_checkpoint
from autoloss_ray.models import build_model
from autoloss_ray.store import ExperimentStore, StoreWarning
from tests.store.test_store import full_row

CAMVID = Path("/work/shared/data/camvid")


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from autoloss_app.cli import main

    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err.strip()


def _refused(argv: list[str], capsys, *texts: str, root: Path | None = None) -> str:
    """Status 2, one line on stderr holding every text, no Ray, ``root`` unchanged."""
    before = _snapshot(root) if root is not None else None
    rc, out, err = _cli(argv, capsys)
    assert rc == 2, (rc, out[-2000:], err[-2000:])
    assert len(err.splitlines()) == 1, err
    for text in texts:
        assert text in err, (text, err)
    assert "Traceback" not in err
    ray = sys.modules.get("ray")
    assert not (ray is not None and ray.is_initialized()), "Ray was started"
    if root is not None:
        assert _snapshot(root) == before, "something was written"
    return err


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    """A real checkpoint of the tiny model for 3 classes (as `autoloss retrain` writes it)."""
    torch.manual_seed(0)
    return Path(save_checkpoint(tmp_path / "ck" / "good.pt", build_model("tiny", num_classes=3),
                                model_name="tiny", num_classes=3, dataset="synthetic",
                                image_size=32))


def _edit(src: Path, dst: Path, **change) -> Path:
    payload = torch.load(src, map_location="cpu", weights_only=True)
    for key, value in change.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value
    torch.save(payload, dst)
    return dst


# ------------------------------------------------- a: metadata that does not match weights
def test_a_checkpoint_whose_metadata_does_not_match_its_weights(checkpoint, tmp_path,
                                                                 capsys) -> None:
    model, meta = load_checkpoint(checkpoint)  # the sound one loads (control)
    assert meta["num_classes"] == 3 and meta["model"] == "tiny"
    size = _edit(checkpoint, tmp_path / "size.pt", num_classes=5)  # head of 3, says 5
    with pytest.raises(ValueError) as err:
        load_checkpoint(size)
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and str(size) in msg, msg
    assert "do not match its metadata" in msg and "size mismatch" in msg, msg
    other = _edit(checkpoint, tmp_path / "other.pt", model="lraspp_mobilenet_v3_large")
    with pytest.raises(ValueError, match="do not match its metadata"):
        load_checkpoint(other)
    unknown = _edit(checkpoint, tmp_path / "unknown.pt", model="nope")
    with pytest.raises(ValueError, match="names model 'nope', which cannot be built"):
        load_checkpoint(unknown)
    nomodel = _edit(checkpoint, tmp_path / "nomodel.pt", model=None)  # was KeyError: 'model'
    with pytest.raises(ValueError, match=r"lacks \['model'\]") as err:
        load_checkpoint(nomodel)
    assert str(nomodel) in str(err.value)
    badclasses = _edit(checkpoint, tmp_path / "badclasses.pt", num_classes="three")
    with pytest.raises(ValueError, match="num_classes must be an int"):
        load_checkpoint(badclasses)
    for path, text in ((size, "size mismatch"), (nomodel, "lacks ['model']")):
        _refused(["evaluate", "--checkpoint", path, "--image-size", "32"], capsys,
                 str(path), text, root=tmp_path)


# ------------------------------------------------- b: not a checkpoint, an empty file
def test_a_file_that_is_no_checkpoint_or_is_empty(tmp_path, capsys) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("hello, these are notes\n")
    pickled = tmp_path / "pickled.pt"
    with open(pickled, "wb") as f:
        pickle.dump({"weights": {1, 2}}, f)  # a pickle torch's weights-only loader refuses
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (text, pickled):
        with pytest.raises(ValueError) as err:
            load_checkpoint(path)
        msg = str(err.value)
        assert len(msg.splitlines()) == 1, msg
        assert f"{str(path)!r} is not an autoloss checkpoint (torch.load: " in msg, msg
        assert "weights_only" not in msg and "arbitrary code" not in msg, msg
        err = _refused(["evaluate", "--checkpoint", path], capsys, "is not an autoloss "
                       "checkpoint (torch.load: ", root=tmp_path)
        assert "weights_only" not in err
    with pytest.raises(ValueError, match=r"is empty \(0 bytes\)"):
        load_checkpoint(empty)
    _refused(["evaluate", "--checkpoint", empty], capsys, str(empty), "is empty", root=tmp_path)
    # a foreign torch file: a plain state dict is not a checkpoint of ours
    torch.save(build_model("tiny", num_classes=3).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ValueError, match="is not an autoloss-ray checkpoint"):
        load_checkpoint(tmp_path / "sd.pt")


# ------------------------------------------------- c: evaluate --train-size on CamVid
@pytest.mark.skipif(not (CAMVID / "val.txt").is_file(), reason="no CamVid at " + str(CAMVID))
def test_evaluate_train_size_on_camvid_scores_a_seeded_subset(tmp_path, capsys) -> None:
    from autoloss_ray.data import build_dataset, subset
    from autoloss_ray.train import evaluate_model

    root = str(CAMVID)
    full = build_dataset("camvid", root=root, split="val", image_size=64, train=False, seed=4,
                         eval_protocol="native", inference_size=None)
    torch.manual_seed(1)
    model = build_model("tiny", num_classes=full.num_classes)
    ck = save_checkpoint(tmp_path / "camvid.pt", model, model_name="tiny",
                         num_classes=full.num_classes, dataset="camvid", image_size=64)
    rc, out, err = _cli(["evaluate", "--checkpoint", ck, "--dataset", "camvid", "--data-root",
                         root, "--train-size", "3", "--seed", "4", "--batch-size", "3",
                         "--json"], capsys)
    assert rc == 0, err[-3000:]  # was: unexpected keyword argument 'length'
    got = json.loads(out.strip().splitlines()[-1])
    # the independent reference: the same seeded subset scored by the library directly
    part = subset(full, 3, seed=4)
    assert len(part) == 3 < len(full)
    want = evaluate_model(model, part, num_classes=full.num_classes,
                          ignore_index=full.ignore_index, boundary_tolerance=5, device="cpu",
                          batch_size=3)
    assert got == pytest.approx({k: want[k] for k in got}, abs=1e-6)
    other = subset(full, 3, seed=5)  # another seed: other images
    assert other.indices != part.indices
    _refused(["evaluate", "--checkpoint", ck, "--dataset", "camvid", "--data-root", root,
              "--train-size", "3", "--workers", "2"], capsys,
             "--train-size with --workers > 1 takes only the synthetic dataset")


# ------------------------------------------------- d: loss-file errors name the file
def _loss_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    from autoloss_ray.losses import SurrogateLoss

    tmp_path.mkdir()
    good = tmp_path / "good.json"
    SurrogateLoss.from_preset("miou", num_classes=3).to_file(good)
    data = json.loads(good.read_text())
    cases: dict[str, tuple[Path, str]] = {}

    def write(name: str, content: str | bytes, text: str) -> None:
        p = tmp_path / name
        p.write_bytes(content.encode() if isinstance(content, str) else content)
        cases[name] = (p, text)

    cases["missing"] = (tmp_path / "missing.json", "does not exist")
    (tmp_path / "dir.json").mkdir()
    cases["dir"] = (tmp_path / "dir.json", "is a directory")
    write("empty.json", "", "is empty")
    write("broken.json", '{"format": ', "is not JSON")
    write("binary.json", b"\xff\xfe\x00garbage", "is not JSON text")
    write("foreign.json", json.dumps({"format": "other"}), "not an autoloss-ray loss")
    write("nokeys.json", json.dumps({"format": data["format"], "version": 1}),
          "loss file lacks")
    write("newer.json", json.dumps({**data, "version": 99}), "is newer than supported")
    write("theta.json", json.dumps({**data, "theta": [0.1, 0.2]}), "theta")
    write("metric.json", json.dumps({**data, "metric": "nope"}), "nope")
    return cases


def test_every_loss_file_error_names_the_file(tmp_path, capsys) -> None:
    from autoloss_ray.losses import SurrogateLoss

    cases = _loss_files(tmp_path / "losses")
    SurrogateLoss.from_file(tmp_path / "losses" / "good.json")  # the control loads
    for name, (path, text) in cases.items():
        with pytest.raises((ValueError, TypeError, OSError)) as err:
            SurrogateLoss.from_file(path)
        msg = str(err.value)
        assert str(path) in msg and text in msg and len(msg.splitlines()) == 1, (name, msg)
    store = tmp_path / "store"
    for path, text in cases.values():
        err = _refused(["retrain", "--loss", f"file:{path}", "--store", store, "--experiment",
                        "rt", "--iterations", "2", "--image-size", "32"], capsys,
                       str(path), text, root=tmp_path)
        assert "(from 'file:" in err or "loss file" in err, err
    assert not any(store.rglob("*.json")) if store.exists() else True


# ------------------------------------------------- e: a copied trial file counted once
def test_a_copied_trial_file_is_counted_once_with_a_warning(tmp_path, capsys) -> None:
    from autoloss_ray.losses.presets import preset_theta

    parameterization, theta = preset_theta("miou")
    store = ExperimentStore(tmp_path / "store")
    for i in range(4):
        store.write_trial(full_row(i, experiment="e", parameterization=parameterization,
                                   theta=[float(v) for v in theta]))
    folder = tmp_path / "store" / "trials" / "experiment=e"
    original = folder / "trial_00001.parquet"
    copy = folder / "trial_00001 (copy).parquet"
    shutil.copy(original, copy)
    # a second copy of trial 2 that finished later with another reward: that row is kept
    later = ExperimentStore(tmp_path / "later")
    later.write_trial(full_row(2, experiment="e", parameterization=parameterization,
                               theta=[float(v) for v in theta], reward=0.9,
                               finished_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC)))
    newer = folder / "renamed.parquet"
    shutil.copy(tmp_path / "later" / "trials" / "experiment=e" / "trial_00002.parquet", newer)
    for experiment in ("e", None):
        with pytest.warns(StoreWarning) as seen:
            trials = store.trials(experiment)
        assert len(trials) == 4, trials[["trial_id", "finished_at"]]
        assert sorted(trials["trial_id"]) == [f"trial_{i:05d}" for i in range(4)]
        assert float(trials.loc[trials["trial_id"] == "trial_00002", "reward"].iloc[0]) == 0.9
        text = " | ".join(str(w.message) for w in seen)
        assert str(copy) in text and str(original) in text, text
        assert str(newer) in text and "counted once" in text, text
    # `autoloss report` (and the search's summary, the same reader) counts 4 trials, not 6
    with pytest.warns(StoreWarning, match="counted once"):
        rc, out, err = _cli(["report", "--store", tmp_path / "store", "--experiment", "e",
                             "--out", tmp_path / "report"], capsys)
    assert rc == 0, err
    report = "\n".join(p.read_text() for p in (tmp_path / "report").rglob("*.md"))
    assert "- trials: 4 (ok 4," in report, report[:2000]
    os.remove(copy)
    os.remove(newer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)  # no copies: no warning
        assert len(store.trials("e")) == 4


# ------------------------------------------------- f: a directory is not "does not exist"
def test_a_directory_or_a_file_is_named_for_what_it_is(tmp_path, capsys) -> None:
    from autoloss_app.options import SearchOptions
    from autoloss_ray.models import load_backbone_weights
    from autoloss_ray.validation import OptionsError

    folder = tmp_path / "folder"
    folder.mkdir()
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    store = tmp_path / "store"
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_checkpoint(folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_backbone_weights(build_model("tiny", num_classes=3), folder)
    with pytest.raises(OptionsError, match="--backbone-weights .* is a directory"):
        SearchOptions(store=str(store), model="lraspp_mobilenet_v3_large",
                      backbone_weights=str(folder)).resolved()
    with pytest.raises(OptionsError, match="--data-root .* is not a directory"):
        SearchOptions(store=str(store), dataset="camvid", data_root=str(a_file)).resolved()
    with pytest.raises(OptionsError, match="--data-root .* does not exist"):
        SearchOptions(store=str(store), dataset="camvid",
                      data_root=str(tmp_path / "nowhere")).resolved()
    _refused(["evaluate", "--checkpoint", folder], capsys, str(folder), "is a directory",
             root=tmp_path)
    _refused(["retrain", "--loss", f"file:{folder}", "--store", store, "--experiment", "rt"],
             capsys, str(folder), "is a directory", root=tmp_path)
    for command in (["retrain", "--loss", "ce", "--store", store, "--experiment", "rt"],
                    ["evaluate", "--checkpoint", tmp_path / "nothing.pt"]):
        _refused([*command, "--dataset", "camvid", "--data-root", a_file], capsys,
                 str(a_file), "is a file, not a directory", root=tmp_path)
        _refused([*command, "--dataset", "camvid", "--data-root", tmp_path / "nowhere"],
                 capsys, "nowhere", "does not exist", root=tmp_path)
    assert not store.exists()


# ------------------------------------------------- g: experiment:NAME of a retrain
def test_experiment_spec_of_a_retrain_experiment_says_so(tmp_path, capsys) -> None:
    from autoloss_ray.export import export_experiment
    from autoloss_ray.losses.presets import preset_theta

    parameterization, theta = preset_theta("miou")
    store = ExperimentStore(tmp_path / "store")
    for i in range(2):
        store.write_trial(full_row(i, experiment="rt", kind="retrain", loss="ce", theta=None,
                                   parameterization=None, step=0, sample=i))
    for i in range(4):
        store.write_trial(full_row(i, experiment="found", parameterization=parameterization,
                                   theta=[float(v) for v in theta]))
    with pytest.raises(ValueError) as err:
        export_experiment(store, "rt", tmp_path / "out.json", num_classes=3)
    msg = str(err.value)
    assert "'rt' is a retrain experiment, not a search" in msg, msg
    assert "searches there: found" in msg and "no successful trial" not in msg, msg
    assert not (tmp_path / "out.json").exists()
    export_experiment(store, "found", tmp_path / "ok.json", num_classes=3)  # control
    _refused(["retrain", "--loss", "experiment:rt", "--store", tmp_path / "store",
              "--experiment", "again", "--iterations", "2", "--image-size", "32"], capsys,
             "'rt' is a retrain experiment", "take a search's name", root=tmp_path)
