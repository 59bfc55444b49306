"""The four searchers (ppo, random, tpe, cmaes) from the CLI, resumed from the store, and
common random numbers. Real subprocesses, real embedded Ray, real Parquet, tiny proxy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autoloss_app.cli import main as cli_main
from autoloss_ray.store import ExperimentStore
from tests.tiny import tiny_args, tiny_trial

SMALL = tiny_args(iterations=6, train_size=24)


def _autoloss(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autoloss_app.cli", *args],
                          capture_output=True, text=True, **kw)


def _key(df) -> dict:
    return {(int(a), int(b)): (list(t), float(r))
            for a, b, t, r in zip(df["step"], df["sample"], df["theta"], df["reward"])}


# --------------------------------------------------------------------------- pure parts
def _drive(searcher, f, n_max=100, prefix="t") -> list[dict]:
    """Run ``searcher`` one trial at a time on the objective ``f``; the trial records."""
    out = []
    for k in range(n_max):
        tid = f"{prefix}{k}"
        c = searcher.suggest(tid)
        if c is None or c == "FINISHED":
            break
        v = f(np.asarray(c["theta"]))
        searcher.on_trial_complete(tid, {"reward": v})
        out.append({"step": c["search_step"], "sample": c["search_sample"],
                    "config": {"theta": c["theta"]}, "value": v, "trial_id": tid})
    return out


@pytest.mark.parametrize("name", ["TPESearcher", "CMAESSearcher"])
def test_optuna_searchers_start_at_init_improve_and_replay_exactly(name: str) -> None:
    import searchers
    from autoloss_ray.losses import search_space

    cls = getattr(searchers, name)
    space = search_space("miou", "bezier")
    target = np.linspace(0.1, 0.9, space.dim)

    def f(theta):
        return -float(np.sum((theta - target) ** 2))

    make = lambda: cls(space, metric="reward", mode="max", steps=5,  # noqa: E731
                       samples_per_step=6, seed=11)
    run = _drive(make(), f)
    assert len(run) == 30 and [r["step"] for r in run] == [k // 6 for k in range(30)]
    assert run[0]["config"]["theta"] == pytest.approx(space.init.tolist())  # the start
    best = max(r["value"] for r in run)
    first_step_best = max(r["value"] for r in run[:6])
    assert best > first_step_best  # the model-based steps found better points
    # the same seed draws the same trials; another seed does not
    again = _drive(make(), f)
    assert [r["config"]["theta"] for r in again] == [r["config"]["theta"] for r in run]
    other = _drive(cls(space, metric="reward", mode="max", steps=5, samples_per_step=6,
                       seed=12), f)
    assert other[7]["config"]["theta"] != run[7]["config"]["theta"]
    # replay of the first 15 results (mid step 2), then the rest is what the full run drew
    fresh = make()
    assert fresh.replay(run[:15]) == 15
    rest = _drive(fresh, f, prefix="resumed")
    assert [(r["step"], r["sample"]) for r in rest] == [(r["step"], r["sample"])
                                                       for r in run[15:]]
    for a, b in zip(rest, run[15:]):
        assert a["config"]["theta"] == pytest.approx(b["config"]["theta"], abs=1e-12)
    # the answer is the best trial's theta
    best_run = max(run, key=lambda r: r["value"])
    assert fresh.best_theta.tolist() == pytest.approx(best_run["config"]["theta"])
    # a replay with another seed's record is refused
    with pytest.raises(ValueError, match="draws"):
        cls(space, metric="reward", mode="max", steps=5, samples_per_step=6,
            seed=12).replay(run[:8])


def test_missing_optuna_is_one_line_exit_2_and_nothing_written(tmp_path, capsys,
                                                              monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    store = tmp_path / "store"
    code = cli_main(["search", "--searcher", "tpe", "--store", str(store)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "optuna" in err and "pip install" in err
    assert not store.exists()


def test_train_seed_without_crn_is_per_trial_and_keeps_the_data() -> None:
    from autoloss_app.options import SearchOptions
    from autoloss_ray.train import trial_train_seed

    seeds = {trial_train_seed(3, s, m) for s in range(4) for m in range(8)}
    assert len(seeds) == 32 and all(0 <= v < 2**31 for v in seeds)
    assert trial_train_seed(3, 1, 2) == trial_train_seed(3, 1, 2)
    assert "crn" not in SearchOptions().resolved().trial_config()
    assert SearchOptions(crn=False).resolved().trial_config()["crn"] is False


def test_train_seed_changes_training_not_the_hold_out() -> None:
    from autoloss_ray.train import run_trial

    base = tiny_trial(iterations=4, train_size=24, holdout_fraction=0.25, seed=5, device="cpu")
    a = run_trial(base)
    b = run_trial({**base, "train_seed": 5})
    c = run_trial({**base, "train_seed": 6})
    assert a["train_seed"] == 5 and c["train_seed"] == 6
    assert a["reward"] == pytest.approx(b["reward"], abs=1e-7)  # train_seed=seed: identical
    assert a["num_eval"] == c["num_eval"]
    assert a["final_loss"] != pytest.approx(c["final_loss"], abs=1e-9)  # trained differently


# --------------------------------------------------------------------------- resume
@pytest.mark.parametrize("searcher", ["ppo", "random", "tpe", "cmaes"])
def test_each_searcher_resumes_from_its_store_rows_to_the_same_draws(
    tmp_path: Path, searcher: str
) -> None:
    """The search job's resume path without Ray: build_searcher's searcher, driven trial by
    trial, writes the rows the StoreCallback writes (and its policy rows); with the last
    trial's row and the last policy row lost, a fresh searcher replays the store
    (previous_results) and hands out exactly that one trial, with the same theta."""
    from autoloss_app.options import SearchOptions
    from autoloss_app.search_job import build_searcher, previous_results
    from autoloss_ray.losses import search_space
    from autoloss_ray.store import trial_row

    steps, samples = 2, 3
    opts = SearchOptions(searcher=searcher, store=str(tmp_path / "store"), experiment="s",
                         steps=steps, samples=samples, seed=2, model="tiny").resolved()
    store = ExperimentStore(opts.store)
    space = search_space(opts.metric, opts.parameterization)
    target = np.linspace(0.2, 0.8, space.dim)

    def run(s, prefix: str) -> list[dict]:
        out = []
        for rec in _drive(s, lambda th: 1.0 - float(np.mean((th - target) ** 2)),
                          prefix=prefix):
            config = {**opts.trial_config(), **rec["config"], "search_step": rec["step"],
                      "search_sample": rec["sample"]}
            store.write_trial(trial_row("s", rec["trial_id"], config,
                                        {"reward": rec["value"], "done": True}))
            out.append(rec)
        return out

    full = run(build_searcher(opts, store), "t")
    assert [(r["step"], r["sample"]) for r in full] == [
        (t, m) for t in range(steps) for m in range(samples)]
    assert list(store.policy("s")["step"]) == list(range(steps))
    if searcher in ("tpe", "cmaes"):  # no preset: the space's init is the first trial
        assert full[0]["config"]["theta"] == pytest.approx(space.init.tolist())
    thetas = [r["config"]["theta"] for r in full]
    assert len({tuple(t) for t in thetas}) == len(full)  # real draws
    assert all(space.contains(t) for t in thetas)

    last = full[-1]
    os.unlink(store.trial_path("s", last["trial_id"]))
    os.unlink(store.policy_path("s", steps - 1))
    fresh = build_searcher(opts, store)
    _, results = previous_results(store, "s")
    told = fresh.replay(results, quiet_steps={int(s) for s in store.policy("s")["step"]})
    assert told == steps * samples - 1
    rest = run(fresh, "resumed")
    assert [(r["step"], r["sample"]) for r in rest] == [(last["step"], last["sample"])]
    assert rest[0]["config"]["theta"] == pytest.approx(last["config"]["theta"], abs=1e-12)
    assert fresh.is_finished and list(store.policy("s")["step"]) == list(range(steps))


# --------------------------------------------------------------------------- CLI
@pytest.mark.slow
# One optuna searcher end to end (CLI, embedded Ray, Tune, store, export). Every searcher's
# resume path is test_each_searcher_resumes_from_its_store_rows_...; ppo, the default, runs
# and resumes from the CLI with real trials (Tune's files gone too, rewards and policy
# compared) in tests/app/test_service.py::test_resume_rebuilds_the_search_from_the_store_alone.
def test_cmaes_runs_from_the_cli_and_exports_its_best_trial(tmp_path: Path) -> None:
    import json

    from autoloss_ray.losses import search_space

    store, steps, samples = tmp_path / "store", 2, 2
    args = ["search", "--searcher", "cmaes", "--experiment", "s", "--store", str(store),
            "--steps", str(steps), "--samples", str(samples), "--seed", "2",
            "--export", str(tmp_path / "loss.json"), *SMALL]
    out = _autoloss(*args, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"with cmaes: {steps} steps x {samples} trials" in out.stdout
    assert "trial 4/4" in out.stdout
    assert "RuntimeWarning" not in out.stderr, out.stderr[-3000:]
    s = ExperimentStore(store)
    expected = _key(s.trials("s"))
    assert sorted(expected) == [(t, m) for t in range(steps) for m in range(samples)]
    assert list(s.policy("s")["step"]) == list(range(steps))
    init = search_space("miou", "bezier").init.tolist()
    assert expected[(0, 0)][0] == pytest.approx(init)  # the same start as PPO2's mu0
    # the answer (export) is the best trial's theta
    exported = json.loads((tmp_path / "loss.json").read_text())
    best = max(expected.values(), key=lambda v: v[1])[0]
    assert exported["theta"] == pytest.approx(best)


def test_baseline_mu_makes_sample_0_of_every_step_mu_itself(tmp_path) -> None:
    """``--baseline mu`` (the official PPO2 setting) builds: sample 0 of each step is the
    step's policy mean, recorded in the policy table, and the other samples are draws."""
    from autoloss_app.options import SearchOptions
    from autoloss_app.search_job import build_searcher

    opts = SearchOptions(searcher="ppo", baseline="mu", store=str(tmp_path / "store"),
                         experiment="mu", steps=3, samples=4, seed=5, model="tiny").resolved()
    store = ExperimentStore(opts.store)
    searcher = build_searcher(opts, store)
    target = np.linspace(0.3, 0.7, searcher.optimizer.dim)
    recs = _drive(searcher, lambda th: -float(np.sum((th - target) ** 2)))
    assert len(recs) == 12
    policy = store.policy("mu").sort_values("step")
    for step, mu in zip(policy["step"], policy["mu"]):
        thetas = [np.asarray(r["config"]["theta"]) for r in recs if r["step"] == step]
        np.testing.assert_allclose(thetas[0], np.asarray(mu), rtol=0, atol=1e-12)
        assert all(np.abs(t - thetas[0]).max() > 1e-6 for t in thetas[1:])
    assert not np.allclose(policy["mu"].iloc[0], policy["mu"].iloc[-1])  # mu moved
