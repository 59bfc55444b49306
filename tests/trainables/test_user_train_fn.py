"""`autoloss_app.search_loss`: a search of the user's own training function on Ray Tune.

The slow test runs a real search (embedded Ray) of :func:`train_tiny`, a training function
written as a user would: a small conv net trained a few steps on synthetic data with the
sampled loss, scored with the exact metrics. The fast tests cover the bad inputs (refused
before Ray starts, nothing written), the trial's result rules and the export of a store
that records no class count (refused instead of building a dataset).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from autoloss_app import report, search_loss
from autoloss_app.cli import main as cli_main
from autoloss_app.options import OptionsError
from autoloss_ray.store import ExperimentStore
from tests import REPO

C = 4  # the task's class count: not the synthetic dataset's


def _data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded toy task: images [8, 3, 12, 20] whose labels [8, 12, 20] are the signs of the
    first two channels (4 classes), a few pixels ignored (255)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, 12, 20, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    y[:, 0, :3] = 255
    return x, y


def train_tiny(loss, config):
    """The user's training function: (loss, config) -> metrics. Misbehaves on purpose in
    step 0: sample 1 raises, sample 2 returns a list."""
    from autoloss_ray import evaluate

    if (config["step"], config["sample"]) == (0, 1):
        raise RuntimeError("boom on purpose")
    if (config["step"], config["sample"]) == (0, 2):
        return [0.5]
    x, y = _data(config["seed"])
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, config["num_classes"], 1))
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    for it in range(config["iterations"]):
        opt.zero_grad()
        value = loss(model(x), y)
        value.backward()
        opt.step()
        if it == config["iterations"] - 1:
            report(iteration=it, loss=value.item())
    with torch.no_grad():
        metrics = evaluate(model(x).argmax(1), y, config["num_classes"])
    return {**metrics, "iterations": config["iterations"], "final_loss": value.item()}


# ----------------------------------------------------------------------------- the search
@pytest.mark.slow
def test_search_of_a_user_function_stores_reports_exports_and_resumes(tmp_path, capsys,
                                                                      monkeypatch):
    import ray

    from autoloss_ray import SurrogateLoss
    from trainables.user_task import run_user_trial

    store = tmp_path / "store"
    common = dict(num_classes=C, experiment="mine", samples=3, store=store, seed=3,
                  config={"lr": 0.5, "iterations": 8}, gpus_per_trial=0)
    try:
        first = search_loss(train_tiny, steps=2, **common)
        rows = first.trials.sort_values(["step", "sample"]).reset_index(drop=True)
        assert len(rows) == 6 and set(rows["kind"]) == {"search"}
        failed = rows[rows["status"] == "failed"]
        assert [(int(r.step), int(r.sample)) for r in failed.itertuples()] == [(0, 1), (0, 2)]
        assert "RuntimeError: boom on purpose" in failed["error"].iloc[0]
        assert "test_user_train_fn.py" in failed["error"].iloc[0]  # where it was raised
        assert "train_fn must return a dict of metrics" in failed["error"].iloc[1]
        ok = rows[rows["status"] == "ok"]
        assert len(ok) == 4 and first.summary["failed"] == 2
        # reward == the metric the function returned; recompute one trial without Ray
        assert np.allclose(ok["reward"], ok["miou"]) and ok["reward"].between(0, 1).all()
        row = ok.iloc[-1]
        config = {**json.loads(row["config_json"]), "theta": list(row["theta"])}
        again = run_user_trial(train_tiny, config, device="cpu")
        assert again["status"] == "ok" and again["reward"] == pytest.approx(row["reward"],
                                                                           abs=1e-6)
        assert json.loads(row["config_json"])["num_classes"] == C
        assert json.loads(row["extra_json"])["final_loss"] == pytest.approx(
            again["final_loss"], rel=1e-5)
        assert int(row["iterations"]) == 8
        out = capsys.readouterr().out
        assert "[autoloss] step 1/2  trial 1/6" in out and "failed 2" in out

        # resume with one more step: only the new step's trials run
        second = search_loss(train_tiny, steps=3, resume=True, export=tmp_path / "loss.json",
                             report_dir=tmp_path / "report", **common)
        resumed_out = capsys.readouterr().out
        # the docs' "own Ray Tune code" block (docs/own-task.md) runs as printed, on the same Ray
        page = (REPO / "docs" / "own-task.md").read_text()
        section = page.split("## Use the searcher in your own Ray Tune code", 1)[1]
        code = section.split("```python\n", 1)[1].split("```", 1)[0]
        (tmp_path / "readme").mkdir()
        monkeypatch.chdir(tmp_path / "readme")
        import ray.train.constants
        import ray.tune.experiment.experiment

        # Tune's default folder (~/ray_results) for the block's Tuner: under tmp_path here
        for module in (ray.train.constants, ray.tune.experiment.experiment):
            monkeypatch.setattr(module, "DEFAULT_STORAGE_PATH", str(tmp_path / "ray_results"))
        exec(compile(code, "docs/own-task.md", "exec"), {"__name__": "readme_block"})
    finally:
        ray.shutdown()
    readme_store = ExperimentStore(tmp_path / "readme" / "runs" / "store")
    assert len(readme_store.trials("mine")) == 8 and len(readme_store.policy("mine")) == 2
    assert set(readme_store.trials("mine")["status"]) == {"ok"}
    assert SurrogateLoss.from_file(tmp_path / "readme" / "runs" / "mine-loss.json"
                                   ).num_classes == 4
    assert any((tmp_path / "ray_results").iterdir())
    rows2 = second.trials
    assert len(rows2) == 9 and not rows2.duplicated(["step", "sample"]).any()
    kept = rows2.set_index("trial_id").loc[list(rows["trial_id"]), "finished_at"]
    assert kept.tolist() == rows.set_index("trial_id")["finished_at"].tolist()
    assert "resuming: 6 trials from the store, 3 to run" in resumed_out

    # export: the task's class count, the search's answer
    loss = SurrogateLoss.from_file(second.export)
    assert loss.num_classes == C and second.best_theta is not None
    assert np.allclose(loss.theta, second.best_theta, atol=1e-6)
    assert json.loads(Path(second.export).read_text())["meta"]["task"].endswith(":train_tiny")
    assert second.loss().num_classes == C
    # the CLI's export and report need nothing from the built-in tasks
    out = tmp_path / "cli.json"
    assert cli_main(["export", "--store", str(store), "--experiment", "mine",
                     "--out", str(out)]) == 0
    assert SurrogateLoss.from_file(out).num_classes == C
    md = Path(second.report["markdown"]).read_text()
    assert "trials: 9 (ok 7, failed 2" in md and Path(second.report["curves"]).is_file()


# ----------------------------------------------------------------------------- bad input
def _two_args(loss, config):
    return {"miou": 0.5}


def _unpicklable():
    import threading

    lock = threading.Lock()

    def train(loss, config):
        with lock:
            return {"miou": 0.5}

    return train


def _manifest(store: Path, experiment: str, **over) -> None:
    """The manifest search_loss writes, of a search of _two_args (no Ray, no trial)."""
    from autoloss_app.resume import search_manifest
    from autoloss_app.user_search import UserSearchOptions, task_name

    opts = UserSearchOptions(task=task_name(_two_args), num_classes=C, experiment=experiment,
                             store=str(store), steps=1, samples=2, **over)
    ExperimentStore(store).write_search(experiment, search_manifest(opts))


BAD = [
    ({"train_fn": 42}, "train_fn must be a function train_fn(loss, config)"),
    ({"train_fn": lambda loss: {}}, "train_fn must take two positional arguments (loss, config)"),
    ({"train_fn": _unpicklable()}, "train_fn cannot be sent to the Ray workers"),
    ({"num_classes": 1}, "num_classes must be >= 2, got 1"),
    ({"num_classes": True}, "num_classes must be an int >= 2, got True"),
    ({"num_classes": "4"}, "num_classes must be an int >= 2, got '4'"),
    ({"num_classes": 2.5}, "num_classes must be an int >= 2, got 2.5"),
    ({"ignore_index": 2}, "ignore_index 2 is one of the 4 class ids"),
    ({"metric": "iou"}, "unknown metric 'iou'"),
    ({"steps": 0}, "steps must be >= 1, got 0"),
    ({"samples": 1}, "samples must be >= 2, got 1"),
    ({"seed": 1.5}, "seed must be an integer >= 0, got 1.5"),
    ({"searcher": "ppo2"}, "searcher must be one of ppo, random, tpe, cmaes, got 'ppo2'"),
    ({"experiment": "../up"}, "experiment must be 1-128 letters"),
    ({"config": {"seed": 1}}, "config may not set ['seed']"),
    ({"config": {"f": object()}}, "config must hold JSON values"),
    ({"config": [1]}, "config must be a dict of constants for train_fn, got list"),
    ({"gpus_per_trial": float("nan")}, "gpus_per_trial must be a finite number"),
    ({"cpus_per_trial": 0}, "gpus_per_trial must be >= 0 and cpus_per_trial > 0"),
    ({"sigma": -1.0}, "sigma must be > 0"),
    ({"resume": True}, "resume=True: experiment 'mine' has no search in the store"),
    ({"answer": "playoff"}, "answer must be one of best-trial, policy-mean (a playoff"),
    ({"answer": "policy-mean", "searcher": "random"}, "answer='policy-mean' is PPO2's"),
    ({"runtime_env": "."}, "runtime_env must be a dict (Ray's runtime environment), got str"),
]


@pytest.mark.parametrize("over, message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_arguments_are_refused_before_ray_with_one_line(tmp_path, over, message):
    import ray

    kwargs = dict(num_classes=C, experiment="mine", steps=1, samples=2, gpus_per_trial=0,
                  store=tmp_path / "store", export=tmp_path / "out" / "loss.json")
    kwargs.update(over)
    train_fn = kwargs.pop("train_fn", _two_args)
    with pytest.raises((ValueError, TypeError)) as err:
        search_loss(train_fn, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not ray.is_initialized()
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_num_classes_is_required():
    with pytest.raises(TypeError, match="num_classes"):
        search_loss(_two_args, experiment="mine", steps=1, samples=2)  # type: ignore[call-arg]


def test_existing_searches_are_refused_unless_they_are_this_tasks_resume(tmp_path, capsys):
    import ray

    store = tmp_path / "store"
    kwargs = dict(num_classes=C, steps=1, samples=2, gpus_per_trial=0, store=store)
    _manifest(store, "mine")
    with pytest.raises(OptionsError, match="already has a search in .*; pass resume=True"):
        search_loss(_two_args, experiment="mine", **kwargs)
    _manifest(store, "lr", config={"lr": 0.1})
    with pytest.raises(OptionsError, match=r"config was \{'lr': 0.1\}, now \{'lr': 0.2\}"):
        search_loss(_two_args, experiment="lr", resume=True, config={"lr": 0.2}, **kwargs)
    # the task's name is its module's import name (tests.trainables.test_user_train_fn here)
    with pytest.raises(OptionsError, match=f"task was '{re.escape(__name__)}:_two_args', now "):
        search_loss(train_tiny, experiment="mine", resume=True, **kwargs)
    ExperimentStore(store).write_search("cli", {"metric": "miou", "steps": 1, "samples": 2})
    with pytest.raises(OptionsError, match="is an `autoloss search` of a built-in task"):
        search_loss(_two_args, experiment="cli", resume=True, **kwargs)
    # and `autoloss search --resume` refuses the user task's experiment
    assert cli_main(["search", "--store", str(store), "--experiment", "mine", "--resume",
                     "--gpus-per-trial", "0"]) == 2
    err = capsys.readouterr().err
    assert f"is a search of the Python function {__name__}:_two_args; resume it with " \
           "search_loss(..., resume=True)" in err
    assert not ray.is_initialized() and ExperimentStore(store).trials("mine").empty


# ----------------------------------------------------------------------------- one trial
def test_user_result_rules():
    from trainables.user_task import user_result

    r = user_result({"miou": 0.25, "biou": torch.tensor(0.5), "epochs": np.int64(3),
                     "note": "x"}, "miou+biou")
    assert r["reward"] == 0.75 and r["status"] == "ok" and r["error"] is None
    assert r["epochs"] == 3 and type(r["epochs"]) is int and r["note"] == "x"
    assert math.isnan(r["gacc"])  # not returned: NaN
    assert user_result({"miou": float("nan")}, "miou")["status"] == "nan"
    cases = [
        ([0.5], TypeError, "train_fn must return a dict of metrics such as {'miou': 0.61}, "
                           "got list"),
        ({"gacc": 0.5}, ValueError, "train_fn's result has no 'miou'"),
        ({"miou": 61.0}, ValueError, "metrics are fractions in [0, 1]"),
        ({"miou": "high"}, ValueError, "a metric must be a number"),
        ({"miou": True}, ValueError, "a metric must be a number"),
        ({"miou": 0.5, "reward": 1.0}, ValueError, "the key(s) ['reward'], which the search"),
        ({"miou": 0.5, "model": object()}, ValueError, "extra values must be numbers"),
        ({"miou": 0.5, 3: 1}, TypeError, "result keys must be strings"),
    ]
    for returned, kind, message in cases:
        with pytest.raises(kind) as err:
            user_result(returned, "miou")
        assert message in str(err.value), (returned, str(err.value))


def test_one_trial_without_ray_builds_the_sampled_loss_seeds_and_fails_cleanly():
    from autoloss_ray import SurrogateLoss, search_space
    from trainables.user_task import run_user_trial

    theta = [float(v) for v in search_space("miou").init + 0.01]
    config = {"metric": "miou", "parameterization": "bezier", "num_classes": 5,
              "ignore_index": 255, "boundary_tolerance": 5, "seed": 7, "task": "t",
              "user_config": {"lr": 0.1}, "theta": theta, "search_step": 1,
              "search_sample": 0}
    seen = {}

    def train(loss, context):
        seen["loss"], seen["context"] = loss, context
        seen["draw"] = torch.rand(3)
        report(epoch=1)  # outside Tune: nothing
        with pytest.raises(TypeError):
            context["seed"] = 1
        return {"miou": 0.4}

    result = run_user_trial(train, config, device="cpu", trial_id="abc")
    assert result["status"] == "ok" and result["reward"] == 0.4 and result["num_classes"] == 5
    loss, context = seen["loss"], seen["context"]
    assert isinstance(loss, SurrogateLoss) and loss.num_classes == 5
    assert np.allclose(loss.theta, theta)
    assert dict(context) == {"seed": 7, "trial_id": "abc", "step": 1, "sample": 0,
                             "num_classes": 5, "ignore_index": 255, "theta": tuple(theta),
                             "metric": "miou", "parameterization": "bezier", "device": "cpu",
                             "lr": 0.1}
    assert torch.equal(seen["draw"], torch.rand(3, generator=torch.Generator().manual_seed(7)))

    def broken(loss, context):
        return 1 / 0

    failed = run_user_trial(broken, config)
    assert failed["status"] == "failed" and math.isnan(failed["reward"])
    assert failed["error"].startswith("ZeroDivisionError: division by zero (at ")
    assert "in broken)" in failed["error"]
    with pytest.raises(ValueError, match=r"reserved key\(s\) \['reward'\]"):
        report(reward=1.0)


# ----------------------------------------------------------------------------- export
def test_export_of_a_store_without_a_class_count_is_refused_not_guessed(tmp_path, capsys,
                                                                       monkeypatch):
    import autoloss_ray.data
    from autoloss_ray import SurrogateLoss, search_space
    from autoloss_ray.export import export_experiment
    from tests.store.test_store import full_row

    def no_dataset(*args, **kwargs):
        raise AssertionError("export built a dataset to find a class count")

    monkeypatch.setattr(autoloss_ray.data, "build_dataset", no_dataset)
    theta = [float(v) for v in search_space("miou").init]
    store = ExperimentStore(tmp_path / "store")
    for i in range(2):  # config and extra values without num_classes (an older store)
        store.write_trial(full_row(i, experiment="old", config={"metric": "miou"},
                                   theta=theta))
    with pytest.raises(ValueError, match=r"experiment 'old' records no class count .*; pass "
                                         r"it: num_classes=C \(autoloss export --num-classes"):
        export_experiment(store, "old", tmp_path / "a.json")
    assert cli_main(["export", "--store", str(store.root), "--experiment", "old",
                     "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "records no class count" in err
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "b.json").exists()
    # given: used; recorded by the trials (a proxy trial reports it): used
    export_experiment(store, "old", tmp_path / "c.json", num_classes=6)
    assert SurrogateLoss.from_file(tmp_path / "c.json").num_classes == 6
    for i in range(2):
        store.write_trial(full_row(i, experiment="new", config={"metric": "miou"},
                                   theta=theta, extra={"num_classes": 7}))
    export_experiment(store, "new", tmp_path / "d.json")
    assert SurrogateLoss.from_file(tmp_path / "d.json").num_classes == 7
