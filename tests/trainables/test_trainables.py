"""The Ray Tune trainable under a real local Ray with fake GPUs (2 CPUs, 2 'GPUs')."""

from __future__ import annotations

import math

import pytest

from tests.tiny import tiny_trial

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

from trainables import proxy_task, trial_device, with_gpu_resources  # noqa: E402

SIX = ("miou", "fwiou", "biou", "bf1", "macc", "gacc")
CONFIG = tiny_trial(metric="miou", train_size=24, holdout_fraction=0.25, iterations=8, seed=0)


RAY_OPTIONS = {"num_gpus": 2}  # 2 CPUs and 2 fake GPUs (conftest's local_ray)


def _fit(trainable, param_space, tmp_path, name):
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors, grid.errors
    return [r.metrics for r in grid]


@pytest.mark.slow
def test_trainable_with_one_fake_gpu_per_trial_reports_metrics_and_divergence(local_ray, tmp_path):
    trainable = with_gpu_resources(proxy_task, gpus_per_trial=1, cpus_per_trial=1)
    space = {**CONFIG, "lr": tune.grid_search([0.02, 1e12])}
    results = sorted(_fit(trainable, space, tmp_path, "one_gpu"), key=lambda r: r["config"]["lr"])
    ok, diverged = results
    assert ok["status"] == "ok" and ok["error"] is None
    assert all(0.0 <= ok[k] <= 1.0 for k in SIX)
    assert ok["reward"] == pytest.approx(ok["miou"]) and ok["iterations"] == 8
    # a fake GPU id was assigned; without a CUDA runtime the trial says it used the CPU
    assert isinstance(ok["gpu_ids"], str) and ok["gpu_ids"] and "," not in ok["gpu_ids"]
    import torch

    assert ok["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert ok["node"] and ok["train_seconds"] > 0 and ok["kind"] == "search"
    assert diverged["status"] == "nan" and math.isnan(diverged["reward"])


@pytest.mark.slow
def test_fractional_gpus_pack_trials_and_bad_config_is_recorded(local_ray, tmp_path):
    trainable = with_gpu_resources(proxy_task, gpus_per_trial=0.5, cpus_per_trial=1)
    space = {**CONFIG, "seed": tune.grid_search([0, 1]), "search_step": 0}
    results = _fit(trainable, space, tmp_path, "half_gpu")
    assert len(results) == 2 and all(r["status"] == "ok" for r in results)
    assert all(r["gpu_ids"] and "," not in r["gpu_ids"] for r in results)
    assert all(set(SIX) <= set(r) for r in results)
    # a config error inside a trial is reported as a failed trial, not a crash of the run
    bad = _fit(trainable, {**CONFIG, "no_such_key": 1}, tmp_path, "bad")[0]
    assert bad["status"] == "failed" and "no_such_key" in bad["error"]
    assert math.isnan(bad["reward"])


@pytest.mark.slow  # the real (embedded) Ray's resources; the checks without Ray: below
def test_resources_fall_back_to_cpu_without_gpus(local_ray, monkeypatch):
    from trainables import proxy

    assert proxy.embedded_ray()  # the fixture's ray.init() started this Ray
    assert proxy._resources(1.0, 2) == {"cpu": 2.0, "gpu": 1.0}
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    with pytest.warns(UserWarning, match="no GPU"):
        assert proxy._resources(1.0, 1) == {"cpu": 1.0, "gpu": 0.0}


def test_bad_gpu_counts_are_refused_without_ray():
    with pytest.raises(ValueError, match="gpus_per_trial"):
        with_gpu_resources(proxy_task, gpus_per_trial=-1)
    with pytest.raises(ValueError, match="whole number"):
        with_gpu_resources(proxy_task, gpus_per_trial=1.5)


def test_resources_decided_lazily_before_ray_init(monkeypatch):
    from trainables import proxy

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    res = proxy.TrialResources(0.5, 1)
    import pickle

    res = pickle.loads(pickle.dumps(res))
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0, "GPU": 1.0})
    pgf = res({})
    assert pgf.required_resources == {"CPU": 1.0, "GPU": 0.5}


def test_trial_device_ignores_inherited_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    assert trial_device("auto") == ("cpu", [])
    assert trial_device("cpu")[0] == "cpu"


def test_a_joined_cluster_keeps_the_gpu_request_for_the_autoscaler(monkeypatch):
    """Only an embedded local Ray without GPU falls back to CPU; on a joined cluster with no
    GPU node yet the trials still ask for a GPU (the autoscaler starts GPU workers for them),
    unless its autoscaler config says no GPU can ever come. (Ray's answers stood in for; that
    the real embedded Ray counts as embedded: the slow test above.)"""
    from trainables import proxy

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(proxy, "embedded_ray", lambda: False)
    monkeypatch.setattr(proxy, "_max_cluster_gpus", lambda: None)  # autoscaler v1: unknown
    with pytest.warns(UserWarning, match="autoscaler"):
        assert proxy._resources(0.25, 1) == {"cpu": 1.0, "gpu": 0.25}
    monkeypatch.setattr(proxy, "_max_cluster_gpus", lambda: 0.0)
    with pytest.raises(ValueError, match="never|no GPU node type"):
        proxy._resources(1.0, 1)
    assert proxy._resources(0.0, 1) == {"cpu": 1.0, "gpu": 0.0}  # asked for CPU: no check
