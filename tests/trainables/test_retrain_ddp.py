"""`autoloss retrain --workers 2` on Ray Train (TorchTrainer, Gloo on CPU), for real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoloss_app.cli import main as cli_main
from autoloss_ray.store import ExperimentStore
from tests.tiny import tiny_args, tiny_trial

SMALL = tiny_args(iterations=8, train_size=16, model="tiny")
METRICS = ("miou", "fwiou", "biou", "bf1", "macc", "gacc")


RAY_OPTIONS = {"num_cpus": 4}  # two workers of 1 CPU and their trainer (conftest's local_ray)


@pytest.mark.slow
def test_retrain_with_two_workers_lands_rows_that_evaluate_reproduces(local_ray, tmp_path,
                                                                       capsys) -> None:
    store = tmp_path / "store"
    code = cli_main(["retrain", "--workers", "2", "--loss", "preset:miou", "--loss-sync", "ddp",
                     "--checkpoint-every", "4", "--store", str(store), "--experiment", "ddp",
                     "--checkpoint-dir", str(tmp_path / "ckpt"), *SMALL])
    assert code == 0
    rows = ExperimentStore(store).trials("ddp")
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["kind"] == "retrain" and row["loss"] == "preset:miou"
    extra = json.loads(row["extra_json"]) if "extra_json" in rows else {}
    assert extra.get("workers") == 2, extra
    assert Path(row["checkpoint"]).is_file()
    for workers in ("1", "2"):
        capsys.readouterr()
        assert cli_main(["evaluate", "--checkpoint", row["checkpoint"], "--split", "val",
                         "--train-size", "16", "--batch-size", "4", "--json",
                         "--workers", workers]) == 0
        metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        for k in METRICS:
            assert metrics[k] == row[k], (workers, k)
    # the official VOC boundary convention reaches the sharded evaluation too
    foreground = []
    for workers in ("1", "2"):
        assert cli_main(["evaluate", "--checkpoint", row["checkpoint"], "--split", "val",
                         "--train-size", "16", "--batch-size", "4", "--json",
                         "--boundary-classes", "foreground", "--workers", workers]) == 0
        foreground.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert foreground[0] == foreground[1]
    assert foreground[0]["bf1"] != row["bf1"] and foreground[0]["miou"] == row["miou"]


@pytest.mark.slow
def test_a_worker_killed_mid_training_resumes_from_the_last_checkpoint(local_ray,
                                                                        tmp_path) -> None:
    from trainables.retrain_ddp import _trainer, ddp_train_loop

    marker = tmp_path / "died"
    cfg = tiny_trial(loss="ce", metric="miou", iterations=8, train_size=16, eval_split="val",
                     seed=0, checkpoint_every=3, fail_once=[1, 5, str(marker)])
    result = _trainer(ddp_train_loop, cfg, name="kill", workers=2, gpus_per_worker=0,
                      cpus_per_worker=1, storage=str(tmp_path / "train"),
                      max_failures=2).fit()
    assert result.error is None
    m = result.metrics
    assert marker.exists()  # rank 1 did die at iteration 5
    assert m["status"] == "ok" and m["workers"] == 2
    # the checkpoint taken after iteration 3 (the latest when rank 1 died). The spare failure
    # is Ray's: on a loaded machine Train's PlacementGroupCleaner has taken a missing state-API
    # answer for a dead controller and removed a live worker group (seen in two pytest-xdist
    # workers; Ray 2.60's is_actor_alive treats a missing answer as dead, as the review of
    # ray-project/ray PR 65447 notes); a restart after the one this test causes may resume
    # from iteration 6
    assert m["resumed_from"] in (3, 6), m["resumed_from"]
    assert m["iterations"] == 8
    assert all(0.0 <= m[k] <= 1.0 for k in METRICS)


def test_bad_worker_options_are_refused_before_ray_starts(tmp_path, capsys) -> None:
    code = cli_main(["retrain", "--workers", "3", "--loss", "ce", "--batch-size", "4",
                     "--store", str(tmp_path / "s")])
    assert code == 2
    assert "multiple of --workers" in capsys.readouterr().err
    assert not (tmp_path / "retrain").exists()
