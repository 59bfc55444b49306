"""`autoloss retrain` and `autoloss evaluate` for real: Ray trials, store rows, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autoloss_app.cli import main as cli_main
from autoloss_ray.losses import search_space
from autoloss_ray.store import ExperimentStore
from tests.tiny import tiny_args

SMALL = tiny_args(iterations=12, train_size=24)


def _searched_store(root: Path, experiment: str = "searched") -> np.ndarray:
    """A store holding a finished 1-step mIoU search (as the search service writes it)."""
    space = search_space("miou")
    mu = np.clip(space.init + 0.05, space.low, space.high)
    store = ExperimentStore(root)
    config = {"metric": "miou", "parameterization": "bezier", "dataset": "synthetic",
              "num_classes": 8}
    for sample in range(2):
        store.write_trial({
            "experiment": experiment, "trial_id": f"t{sample}", "kind": "search", "step": 0,
            "sample": sample, "metric": "miou", "parameterization": "bezier",
            "theta": mu.tolist(), "reward": 0.5 + sample / 10, "status": "ok",
            "config": config,
        })
    store.write_policy({"experiment": experiment, "step": 0, "mu": mu.tolist(), "sigma": 0.2,
                        "rewards": [0.5, 0.6], "mean_reward": 0.55})
    return mu


@pytest.mark.parametrize(
    "args, message",
    [
        (["--loss", "focal"], "unknown loss"),
        (["--loss", "experiment:nope"], "no trials"),
        (["--loss", "preset:nope"], "unknown preset"),
        (["--loss", "file:/no/such.json"], "does not exist"),
        ([], "at least one --loss"),
    ],
)
def test_bad_retrain_input_is_refused_before_ray_starts(tmp_path: Path, capsys, args,
                                                        message) -> None:
    import ray

    code = cli_main(["retrain", "--store", str(tmp_path / "store"), *args])
    assert code == 2 and message in capsys.readouterr().err
    assert not ray.is_initialized()


def test_loss_file_of_another_metric_is_refused(tmp_path: Path, capsys) -> None:
    from autoloss_ray import SurrogateLoss

    path = tmp_path / "bf1.json"
    SurrogateLoss.from_preset("bf1", num_classes=8).to_file(path)
    assert cli_main(["retrain", "--store", str(tmp_path / "s"), "--metric", "miou",
                     "--loss", f"file:{path}"]) == 2
    assert "is a bf1 surrogate but --metric is miou" in capsys.readouterr().err


def test_evaluate_refuses_a_file_that_is_not_a_checkpoint(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    assert cli_main(["evaluate", "--checkpoint", str(bad)]) == 2
    assert "is not an autoloss checkpoint (torch.load: " in capsys.readouterr().err
    assert cli_main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")]) == 2


def test_repeats_must_be_positive(tmp_path: Path, capsys) -> None:
    assert cli_main(["retrain", "--store", str(tmp_path / "s"), "--loss", "ce",
                     "--repeats", "0"]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err


def test_a_bad_spec_after_good_ones_writes_no_loss_files(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ckpt"
    code = cli_main(["retrain", "--store", str(tmp_path / "store"), "--checkpoint-dir", str(out),
                     "--loss", "preset:miou", "--loss", "ce", "--loss", "focal"])
    assert code == 2 and "unknown loss 'focal'" in capsys.readouterr().err
    assert not out.exists()


def test_retrain_paths_of_a_local_store_sit_next_to_it(tmp_path: Path) -> None:
    from autoloss_app.retrain import retrain_paths

    store = tmp_path / "runs" / "store"
    paths = retrain_paths(str(store), "exp", None)
    assert paths.checkpoint_dir == str(tmp_path / "runs" / "retrain" / "exp")
    assert paths.train_storage == str(tmp_path / "runs" / "train")
    assert paths.tune_storage == str(tmp_path / "runs" / "tune")
    assert retrain_paths(str(store), "exp", str(tmp_path / "w")).checkpoint_dir == str(
        tmp_path / "w")


def test_retrain_paths_of_a_store_uri_stay_under_it(tmp_path: Path) -> None:
    from autoloss_app.options import OptionsError
    from autoloss_app.retrain import retrain_paths

    uri = "s3://bucket/prefix/?endpoint_override=127.0.0.1:9000&scheme=http"
    paths = retrain_paths(uri, "exp", str(tmp_path / "shared" / "ckpt"))
    # Ray Train's checkpoints under the store URI (its query kept at the end), never a
    # local path made of the URI such as <cwd>/s3:/bucket/train
    assert paths.train_storage == (
        "s3://bucket/prefix/train?endpoint_override=127.0.0.1:9000&scheme=http")
    assert paths.checkpoint_dir == str(tmp_path / "shared" / "ckpt")
    assert paths.tune_storage is None  # Ray's default, as `autoloss search` with a URI store
    with pytest.raises(OptionsError, match="is a URI: pass --checkpoint-dir"):
        retrain_paths(uri, "exp", None)
    with pytest.raises(OptionsError, match="must be a directory path"):
        retrain_paths(str(tmp_path / "store"), "exp", "s3://bucket/ckpt")


def test_ray_train_gets_a_store_uri_as_a_filesystem_and_a_bare_path() -> None:
    from trainables.retrain_ddp import storage_options

    assert storage_options("/abs/train") == {"storage_path": "/abs/train"}
    opts = storage_options(
        "s3://bucket/prefix/train?endpoint_override=127.0.0.1:9&scheme=http&region=eu-west-1")
    assert opts["storage_path"] == "bucket/prefix/train"  # no query left in Ray's joins
    assert type(opts["storage_filesystem"]).__name__ == "S3FileSystem"
    assert opts["storage_filesystem"].region == "eu-west-1"


@pytest.mark.parametrize("extra, message", [
    ([], "is a URI: pass --checkpoint-dir"),
    (["--checkpoint-dir", "s3://bucket/ckpt"], "must be a directory path"),
])
def test_retrain_with_a_store_uri_needs_a_local_checkpoint_dir(tmp_path: Path, monkeypatch,
                                                                capsys, extra, message) -> None:
    import ray

    monkeypatch.chdir(tmp_path)
    code = cli_main(["retrain", "--loss", "ce", "--store", "s3://bucket/prefix", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not ray.is_initialized() and not list(tmp_path.iterdir())  # nothing written


# ----------------------------------------------------------------- on Ray (after the tests above:
# they check that nothing started Ray, and the module's one Ray stays up until its end)


@pytest.fixture(scope="module")
def retrained(tmp_path_factory, local_ray):
    """One retrain run with four kinds of loss (baseline, preset, experiment, file)."""
    root = tmp_path_factory.mktemp("retrain")
    store = root / "store"
    mu = _searched_store(store)
    loss_file = root / "exported.json"
    assert cli_main(["export", "--store", str(store), "--experiment", "searched",
                     "--out", str(loss_file)]) == 0
    code = cli_main(["retrain", "--loss", "ce", "--loss", "preset:miou",
                     "--loss", "experiment:searched", "--loss", f"file:{loss_file}",
                     "--store", str(store), "--experiment", "rt",
                     "--checkpoint-dir", str(root / "ckpt"), *SMALL])
    return {"code": code, "store": store, "root": root, "mu": mu, "loss_file": loss_file}


@pytest.mark.slow
def test_retrain_lands_a_row_per_loss_with_all_metrics_and_weights(retrained) -> None:
    assert retrained["code"] == 0
    rows = ExperimentStore(retrained["store"]).trials("rt")
    assert sorted(rows["loss"]) == sorted(
        ["ce", "preset:miou", "experiment:searched", f"file:{retrained['loss_file']}"]
    )
    assert set(rows["kind"]) == {"retrain"} and set(rows["status"]) == {"ok"}
    assert set(rows["eval_protocol"]) == {"native"}  # labels scored at their own size
    assert rows[["miou", "fwiou", "biou", "bf1", "macc", "gacc"]].notna().all().all()
    assert all(Path(p).is_file() for p in rows["checkpoint"])
    # the experiment's loss and the exported file are the same loss: same seed, same result
    by_loss = rows.set_index("loss")
    exp = by_loss.loc["experiment:searched"]
    fil = by_loss.loc[f"file:{retrained['loss_file']}"]
    assert exp["miou"] == pytest.approx(fil["miou"])
    assert json.load(open(retrained["loss_file"]))["theta"] == pytest.approx(
        retrained["mu"].tolist())


@pytest.mark.slow
def test_evaluate_reproduces_the_retrain_metrics(retrained, capsys) -> None:
    rows = ExperimentStore(retrained["store"]).trials("rt").set_index("loss")
    ce = rows.loc["ce"]
    capsys.readouterr()
    assert cli_main(["evaluate", "--checkpoint", ce["checkpoint"], "--split", "val",
                     "--train-size", "24", "--batch-size", "4", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k in ("miou", "fwiou", "biou", "bf1", "macc", "gacc"):
        assert metrics[k] == pytest.approx(ce[k], abs=1e-9), k


@pytest.mark.slow
def test_evaluate_refuses_a_checkpoint_of_another_class_count(retrained, camvid_root,
                                                              capsys) -> None:
    ckpt = ExperimentStore(retrained["store"]).trials("rt")["checkpoint"].iloc[0]
    assert cli_main(["evaluate", "--checkpoint", ckpt, "--dataset", "camvid",
                     "--data-root", str(camvid_root), "--split", "val"]) == 2
    assert "trained for 8 classes" in capsys.readouterr().err


@pytest.mark.slow
def test_repeats_run_each_loss_with_successive_seeds(local_ray, tmp_path: Path, capsys) -> None:
    code = cli_main(["retrain", "--loss", "ce", "--repeats", "2", "--seed", "3",
                     "--store", str(tmp_path / "store"), "--experiment", "rep",
                     "--checkpoint-dir", str(tmp_path / "ckpt"), *SMALL])
    assert code == 0
    rows = ExperimentStore(tmp_path / "store").trials("rep")
    assert sorted(rows["seed"]) == [3, 4] and set(rows["loss"]) == {"ce"}
    assert sorted(Path(p).name for p in rows["checkpoint"]) == ["ce-seed3.pt", "ce-seed4.pt"]
    assert all(Path(p).is_file() for p in rows["checkpoint"])
    table = capsys.readouterr().out
    assert "| ce |" in table.replace("**", "") and "2" in table


@pytest.mark.slow
def test_evaluate_writes_an_evaluate_row_to_the_store(retrained, tmp_path: Path) -> None:
    ce = ExperimentStore(retrained["store"]).trials("rt").set_index("loss").loc["ce"]
    store = tmp_path / "evalstore"
    assert cli_main(["evaluate", "--checkpoint", ce["checkpoint"], "--split", "val",
                     "--train-size", "24", "--batch-size", "4", "--store", str(store),
                     "--experiment", "ev"]) == 0
    rows = ExperimentStore(store).trials("ev")
    assert len(rows) == 1 and rows["kind"].iloc[0] == "evaluate"
    assert rows["checkpoint"].iloc[0] == str(Path(ce["checkpoint"]).resolve())
    assert rows["miou"].iloc[0] == pytest.approx(ce["miou"], abs=1e-9)
