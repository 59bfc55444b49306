"""Ray Tune's searcher contract, run against PPO2Searcher and RandomSearcher.

Written from the intents of Ray's own ``tune/tests/test_searchers.py`` (invalid values,
add_evaluated_point/trials, save/restore, ConcurrencyLimiter, Repeater) and
``test_convergence.py`` (a quadratic with ExperimentPlateauStopper): every way a trial can end
must complete its sample (no stalled step), under ``tune.run`` and ``tune.Tuner``, on one CPU.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402
from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler  # noqa: E402
from ray.tune.search import ConcurrencyLimiter, Repeater, Searcher  # noqa: E402
from ray.tune.stopper import ExperimentPlateauStopper  # noqa: E402

from autoloss_ray.search import PPO2, RandomSearch  # noqa: E402
from autoloss_ray.store import ExperimentStore  # noqa: E402
from searchers import Box, PPO2Searcher, RandomSearcher  # noqa: E402
from tests import REPO  # noqa: E402
from trainables.store_callback import StoreCallback, trial_row  # noqa: E402

CLASSES = [PPO2Searcher, RandomSearcher]
T = 2  # steps of the Tune runs below


RAY_OPTIONS = {"num_cpus": 1}  # the contract holds on one CPU (conftest's local_ray)


def _space():
    return {"x": tune.uniform(-1.0, 1.0)}


def _run(api, trainable, searcher, tmp_path, *, param_space=None, num_samples=-1, **kw):
    """One experiment through ``tune.run`` or ``tune.Tuner``; returns the trials' results
    as (config, last metrics, errored) tuples."""
    param_space = _space() if param_space is None else param_space
    name = f"e{time.time_ns()}"
    if api == "run":
        scheduler = kw.pop("scheduler", None)
        analysis = tune.run(trainable, config=param_space, search_alg=searcher,
                            num_samples=num_samples, storage_path=str(tmp_path), name=name,
                            verbose=0, raise_on_failed_trial=False, reuse_actors=True,
                            scheduler=scheduler, **kw)
        return [(t.config, t.last_result, t.status == "ERROR") for t in analysis.trials]
    run_kw = {k: kw.pop(k) for k in ("stop", "callbacks") if k in kw}
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=num_samples,
                                    reuse_actors=True, **kw),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name=name, verbose=0,
                                  **run_kw),
    )
    grid = tuner.fit()
    return [(r.config, r.metrics, r.error is not None) for r in grid]


# --------------------------------------------------------------------------- trainables
ENDINGS = ["ok", "missing", "nan", "inf", "error", "silent", "ok"]


def ending_trainable(config):
    """Sample i ends in ENDINGS[i % 7]; 'ok' reports the quadratic (two of them, so the
    worst valid value of a step depends on the mode)."""
    kind = ENDINGS[config["search_sample"] % len(ENDINGS)]
    x = config["x"]
    if kind == "ok":
        tune.report({"loss": (x - 0.3) ** 2})
    elif kind == "missing":
        tune.report({"other": 1.0})
    elif kind == "nan":
        tune.report({"loss": float("nan")})
    elif kind == "inf":
        tune.report({"loss": float("inf")})
    elif kind == "error":
        raise RuntimeError("boom (intentional)")
    # "silent": returns without reporting anything


def iter_trainable(config):
    """Reports ``loss`` for up to 6 iterations (schedulers stop some early)."""
    for it in range(1, 7):
        tune.report({"loss": (config["x"] - 0.3) ** 2 + 1.0 / it, "it": it})


def quad_trainable(config):
    x = np.array([config[k] for k in sorted(config) if k.startswith("x")])
    tune.report({"loss": float(np.sum(x**2))})


# --------------------------------------------------------------------------- every ending
@pytest.mark.slow
@pytest.mark.parametrize("cls, api, mode", [  # every (searcher, API) and (API, mode) pair
    (PPO2Searcher, "run", "min"), (PPO2Searcher, "tuner", "max"),
    (RandomSearcher, "run", "max"), (RandomSearcher, "tuner", "min")])
def test_every_ending_completes_the_step(local_ray, tmp_path, cls, api, mode, caplog,
                                        monkeypatch):
    # Tune itself refuses a result without the metric unless strict checking is off; a
    # trainable that reports nothing at all reaches the searcher either way
    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    m = len(ENDINGS)  # one step holds every ending
    s = cls(metric="loss", mode=mode, steps=1, samples_per_step=m, seed=0)
    with caplog.at_level("WARNING", logger="searchers.step_searcher"):
        res = _run(api, ending_trainable, s, tmp_path)
    assert len(res) == m and s.is_finished and s.step == 1
    assert sum("without the metric" in r.message for r in caplog.records) == 1  # once
    (rec,) = s.history
    assert rec["fail_reasons"] == [None, "metric missing", "not finite", "not finite",
                                   "error", "metric missing", None]
    assert rec["failed"] == [False] + [True] * 5 + [False]
    ok = [rec["values"][0], rec["values"][6]]
    for i in (0, 6):
        assert rec["values"][i] == pytest.approx((rec["configs"][i]["x"] - 0.3) ** 2)
    assert ok[0] != ok[1]  # else the mode could not show
    # default failure value: the worst valid value of the step, for the mode
    worst = max(ok) if mode == "min" else min(ok)
    assert rec["values"][1:6] == [worst] * 5


# --------------------------------------------------------------------------- early stopping
@pytest.mark.slow
@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(
    "api, scheduler",
    [("run", lambda: ASHAScheduler(metric="loss", mode="min", max_t=6, grace_period=2,
                                   reduction_factor=2)),
     ("tuner", lambda: HyperBandScheduler(metric="loss", mode="min", max_t=6,
                                          reduction_factor=2))],
)
def test_early_stopped_trials_count_with_their_last_value(local_ray, tmp_path, cls, api,
                                                          scheduler):
    s = cls(metric="loss", mode="min", steps=T, samples_per_step=4, seed=1)
    cb = StoreCallback(str(tmp_path / "store"), "early", metric_spec="loss")
    res = _run(api, iter_trainable, s, tmp_path, scheduler=scheduler(), callbacks=[cb])
    assert len(res) == T * 4 and s.is_finished
    by_id = {}
    for cfg, metrics, err in res:
        assert not err
        by_id[(cfg["search_step"], cfg["search_sample"])] = metrics
    early = 0
    for rec in s.history:
        assert not any(rec["failed"])  # no stopped trial is a failure
        for i in range(4):
            last = by_id[(rec["step"], i)]
            assert rec["values"][i] == pytest.approx(last["loss"])  # its last reported value
            if last["it"] < 6:  # (at it == 6 ASHA's max_t decides STOP too: early as well)
                assert rec["stopped_early"][i]
            early += rec["stopped_early"][i]
    assert early > 0, "the scheduler stopped nothing; the test proves nothing"
    rows = ExperimentStore(str(tmp_path / "store")).trials("early")
    assert len(rows) == T * 4
    for _, row in rows.iterrows():
        rec = s.history[int(row["step"])]
        assert bool(row["stopped_early"]) == rec["stopped_early"][int(row["sample"])]


def test_store_row_flags_early_stop_and_reads_old_stores(tmp_path):
    cfg = {"search_step": 0, "search_sample": 1}
    stopped = trial_row("e", "t1", cfg, {"reward": 0.5, "done": False})
    finished = trial_row("e", "t2", cfg, {"reward": 0.5, "done": True})
    failed = trial_row("e", "t3", cfg, {"reward": 0.5, "done": False}, failed=True)
    assert (stopped["stopped_early"], finished["stopped_early"], failed["stopped_early"]) == (
        True, False, False)
    # a store written before the column reads with nulls
    import pyarrow as pa
    import pyarrow.parquet as pq

    from autoloss_ray.store import TRIAL_FILE_SCHEMA, normalize_trial_row

    store = ExperimentStore(str(tmp_path))
    store.write_trial(stopped)
    old_schema = pa.schema([f for f in TRIAL_FILE_SCHEMA if f.name != "stopped_early"])
    row = normalize_trial_row(finished)
    row.pop("experiment")
    row.pop("stopped_early")
    path = tmp_path / "trials" / "experiment=e" / "old.parquet"
    pq.write_table(pa.Table.from_pylist([row], schema=old_schema), str(path))
    df = store.trials("e").set_index("trial_id")
    assert bool(df.loc["t1", "stopped_early"]) is True
    assert df.loc["t2", "stopped_early"] is None or bool(np.isnan(df.loc["t2",
                                                                         "stopped_early"]))


# --------------------------------------------------------------------------- pause / resume
@pytest.mark.parametrize("cls", CLASSES)
def test_paused_then_stopped_trial_uses_last_reported_value(cls):
    s = cls(_space(), metric="loss", mode="min", steps=1, samples_per_step=3, seed=0)
    for i in range(3):
        s.suggest(f"t{i}")
    s.on_trial_result("t0", {"loss": 0.25, "done": False})
    s.on_pause("t0")
    s.on_unpause("t0")
    s.on_trial_result("t0", {"loss": 0.125, "done": False})
    s.on_pause("t0")
    s.on_trial_complete("t0")  # HyperBand stops a paused trial: no result
    s.on_trial_complete("t1")  # stopped before reporting anything
    s.on_trial_complete("t2", {"loss": 0.5, "done": True})
    rec = s.history[0]
    assert rec["values"] == [0.125, 0.5, 0.5]
    assert rec["stopped_early"] == [True, False, False]
    assert rec["fail_reasons"] == [None, "no result", None]


# --------------------------------------------------------------------------- failure value
@pytest.mark.parametrize("cls", CLASSES)
def test_default_failure_value_is_the_worst_for_the_mode(cls):
    for mode, expect in (("min", 3.0), ("max", 1.0)):
        s = cls(_space(), metric="m", mode=mode, steps=1, samples_per_step=3, seed=0)
        for i in range(3):
            s.suggest(f"t{i}")
        s.on_trial_complete("t0", {"m": 1.0})
        s.on_trial_complete("t1", {"m": 3.0})
        s.on_trial_complete("t2", error=True)
        rec = s.history[0]
        assert rec["values"][2] == expect
        # the failure is the worst reward of the step, whatever the mode
        assert rec["rewards"][2] == min(rec["rewards"])
    s = cls(_space(), metric="m", mode="min", steps=1, samples_per_step=2, seed=0,
            failure_reward=-5.0)  # explicit: the user's choice, even if it looks good
    s.suggest("a"), s.suggest("b")
    s.on_trial_complete("a", {"m": 1.0})
    s.on_trial_complete("b", error=True)
    assert s.history[0]["values"] == [1.0, -5.0]


# --------------------------------------------------------------------------- evaluated points
@pytest.mark.parametrize("cls", CLASSES)
def test_add_evaluated_point_warm_start_then_recorded_only(cls):
    s = cls(_space(), metric="loss", mode="min", steps=2, samples_per_step=4, seed=0)
    s.add_evaluated_point({"x": 0.8}, 0.5)
    s.add_evaluated_point({"x": -0.4}, 0.1)  # the best (min mode) becomes mu0
    s.add_evaluated_point({"x": 0.0}, float("nan"))
    s.add_evaluated_point({"x": 0.1}, 0.0, error=True)
    np.testing.assert_allclose(s.optimizer.mu, [-0.4])
    assert [p["warm_start"] for p in s.evaluated_points] == [True] * 4
    s.suggest("a")
    before = s.optimizer.state_dict()
    s.add_evaluated_point({"x": 0.3}, -10.0)  # after the first suggest: recorded only
    assert s.optimizer.state_dict() == before
    assert s.evaluated_points[-1]["warm_start"] is False
    with pytest.raises(ValueError, match="outside"):
        s.add_evaluated_point({"x": 3.0}, 1.0)
    with pytest.raises(ValueError, match="space and mode"):
        cls(metric="loss", mode="min").add_evaluated_point({"x": 0.1}, 1.0)


@pytest.fixture(scope="module")
def earlier_run(local_ray, tmp_path_factory):
    """An earlier experiment (Ray's ``ExperimentAnalysis``; a ``ResultGrid`` is not what
    Ray's ``add_evaluated_trials`` takes): x in {-0.9, 0.2, 0.7}, loss x**2."""
    return tune.run(quad_trainable, config={"x": tune.grid_search([-0.9, 0.2, 0.7])},
                    metric="loss", mode="min", storage_path=str(tmp_path_factory.mktemp("p")),
                    name="prev", verbose=0)


@pytest.mark.slow
@pytest.mark.parametrize("cls", CLASSES)
def test_add_evaluated_trials_from_an_earlier_run(earlier_run, tmp_path, cls):
    s = cls(_space(), metric="loss", mode="min", steps=1, samples_per_step=2, seed=0)
    s.add_evaluated_trials(earlier_run, "loss")
    assert sorted(p["value"] for p in s.evaluated_points) == pytest.approx([0.04, 0.49, 0.81])
    assert all(p["warm_start"] for p in s.evaluated_points)
    np.testing.assert_allclose(s.optimizer.mu, [0.2])
    # the warm-started searcher runs in Tune: step 0's mean (RandomSearcher: the recorded
    # centre, which its unbounded dimensions would be drawn around) is the best earlier point
    res = _run("tuner", quad_trainable, s, tmp_path, param_space={})
    assert len(res) == 2 and s.is_finished
    (rec,) = s.history
    np.testing.assert_allclose(rec["mu"], [0.2])
    assert [c["x"] for c, _, _ in sorted(res, key=lambda r: r[0]["search_sample"])] == \
        pytest.approx([c["x"] for c in rec["configs"]])


# --------------------------------------------------------------------------- concurrency
@pytest.mark.slow
@pytest.mark.parametrize("cls, api, batch", [
    (PPO2Searcher, "run", False), (RandomSearcher, "run", True),
    (RandomSearcher, "tuner", False), (PPO2Searcher, "tuner", True)])
def test_concurrency_limiter_batch_or_not(local_ray, tmp_path, cls, api, batch):
    s = cls(metric="loss", mode="min", steps=T, samples_per_step=4, seed=2)
    limited = ConcurrencyLimiter(s, max_concurrent=3, batch=batch)
    res = _run(api, quad_trainable, limited, tmp_path)
    assert len(res) == T * 4 and s.is_finished
    assert sorted((c["search_step"], c["search_sample"]) for c, _, _ in res) == [
        (t, i) for t in range(T) for i in range(4)]


# --------------------------------------------------------------------------- constants
@pytest.mark.slow
@pytest.mark.parametrize("cls, api", [(PPO2Searcher, "run"), (RandomSearcher, "tuner")])
def test_constants_pass_through_as_ray_passes_them(local_ray, tmp_path, cls, api):
    s = cls(metric="loss", mode="min", steps=1, samples_per_step=2, seed=0)
    space = {"x": tune.uniform(-1, 1), "size": (1, 2), "pair": (0.0, 1.0), "lst": [1, 2],
             "nested": {"c": "k", "y": tune.loguniform(1e-3, 1e-1)}}
    res = _run(api, quad_trainable, s, tmp_path, param_space=space)
    assert len(res) == 2
    for cfg, _, err in res:
        assert not err
        assert tuple(cfg["size"]) == (1, 2) and tuple(cfg["pair"]) == (0.0, 1.0)
        assert list(cfg["lst"]) == [1, 2] and cfg["nested"]["c"] == "k"
        assert 1e-3 <= cfg["nested"]["y"] <= 1e-1
    assert s.space.names == ("x", "nested/y")


@pytest.mark.parametrize("cls", CLASSES)
def test_ranges_come_from_domains_or_box_only(cls):
    s = cls({"x": Box(0.0, 2.0), "k": [0.0, 1.0]}, metric="m", mode="max", steps=1,
            samples_per_step=2, seed=0)
    assert s.space.names == ("x",) and s.suggest("a")["k"] == [0.0, 1.0]
    with pytest.raises(TypeError, match=r"Box\(0.0, 1.0\)"):
        cls({"x": (0.0, 1.0)})  # the old meaning of a bare tuple: a clear pointer to Box
    with pytest.raises(ValueError, match="inside a list"):
        cls({"x": [tune.uniform(0, 1), 2]})
    with pytest.raises(ValueError, match="inside a list"):  # from Tune's param_space too
        cls(metric="m", mode="max").set_search_properties(
            None, None, {"a": tune.uniform(0, 1), "b": [tune.uniform(0, 1)]})


@pytest.mark.slow
@pytest.mark.parametrize("cls, api", [(PPO2Searcher, "run"), (RandomSearcher, "tuner"),
                                      (PPO2Searcher, "tuner"), (RandomSearcher, "run")])
def test_nested_domain_in_a_list_is_refused_before_the_first_trial(local_ray, tmp_path, cls,
                                                                    api):
    s = cls(metric="loss", mode="min", steps=1, samples_per_step=2)
    with pytest.raises(ValueError, match="inside a list"):
        _run(api, quad_trainable, s, tmp_path,
             param_space={"x": tune.uniform(0, 1), "v": [tune.uniform(0, 1), 1]})
    assert s.step == 0 and s.space is None


# --------------------------------------------------------------------------- save / restore
@pytest.mark.slow
@pytest.mark.parametrize("cls, api1, api2", [(PPO2Searcher, "run", "tuner"),
                                             (RandomSearcher, "tuner", "run")])
def test_save_restore_into_a_fresh_instance_continues(local_ray, tmp_path, cls, api1, api2):
    def make():
        return cls(_space(), metric="loss", mode="min", steps=3, samples_per_step=3, seed=4)

    first = make()
    res1 = _run(api1, quad_trainable, first, tmp_path, param_space={}, num_samples=4)
    assert len(res1) == 4 and first.step == 1  # num_samples < T*M: Tune stopped early
    first.save(str(tmp_path / "s.pkl"))
    fresh = make()
    fresh.restore(str(tmp_path / "s.pkl"))
    fresh.requeue_in_flight()
    res2 = _run(api2, quad_trainable, fresh, tmp_path, param_space={})
    assert fresh.is_finished and len(res1) + len(res2) == 9 + 0  # sample 3 was told already
    # the same as one uninterrupted run (deterministic objective)
    ref = make()
    n = 0
    while True:
        c = ref.suggest(f"r{n}")
        if c is None or c == Searcher.FINISHED:
            if c == Searcher.FINISHED:
                break
            raise AssertionError("synchronous reference stalled")
        ref.on_trial_complete(f"r{n}", {"loss": c["x"] ** 2, "done": True})
        n += 1
    assert [r["thetas"] for r in fresh.history] == [r["thetas"] for r in ref.history]
    np.testing.assert_allclose([r["values"] for r in fresh.history],
                               [r["values"] for r in ref.history])


# --------------------------------------------------------------------------- Repeater
@pytest.mark.slow
@pytest.mark.parametrize("cls, api", [(PPO2Searcher, "run"), (RandomSearcher, "tuner")])
def test_repeater_averages_into_one_sample(local_ray, tmp_path, cls, api):
    s = cls(metric="loss", mode="min", steps=T, samples_per_step=3, seed=5)
    rep = Repeater(s, repeat=2, set_index=True)
    res = _run(api, quad_trainable, rep, tmp_path)
    assert len(res) == T * 3 * 2 and s.is_finished
    for rec in s.history:
        assert not any(rec["failed"]) and not any(rec["stopped_early"])
        for i in range(3):
            assert rec["values"][i] == pytest.approx(rec["configs"][i]["x"] ** 2)


# --------------------------------------------------------------------------- budgets
# num_samples smaller than T*M: the first half of the save/restore test (under each API)
@pytest.mark.slow
@pytest.mark.parametrize("cls, api", [(PPO2Searcher, "run"), (RandomSearcher, "tuner")])
def test_num_samples_larger_than_T_times_M_ends_with_finished(local_ray, tmp_path, cls, api):
    s = cls(metric="loss", mode="min", steps=T, samples_per_step=3, seed=6)
    res = _run(api, quad_trainable, s, tmp_path, num_samples=T * 3 + 5)
    assert len(res) == T * 3 and s.is_finished


@pytest.mark.slow
@pytest.mark.parametrize("cls, api", [(PPO2Searcher, "run"), (RandomSearcher, "tuner")])
def test_time_budget_ends_the_search_without_a_stall(local_ray, tmp_path, cls, api):
    s = cls(metric="loss", mode="min", steps=50, samples_per_step=4, seed=7)
    t0 = time.time()
    res = _run(api, sleepy_trainable, s, tmp_path, time_budget_s=4)
    assert time.time() - t0 < 60 and 0 < len(res) < 200 and not s.is_finished
    assert all(len(r["values"]) == 4 for r in s.history)  # only whole steps were told


def sleepy_trainable(config):
    time.sleep(0.2)
    tune.report({"loss": config["x"] ** 2})


# --------------------------------------------------------------------------- convergence
def _plateau_run(searcher, dim, budget=100):
    """Ray's convergence protocol without Ray (bench/searcher_convergence.py's plateau_run,
    the one the bench reports with): (trials run, stopped by plateau, best point)."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from searcher_convergence import plateau_run
    finally:
        sys.path.remove(str(REPO / "bench"))
    return plateau_run(searcher, dim, budget)


def test_convergence_measured_fixed_sigma_vs_schedule():
    """Seeded facts behind docs/own-task.md ("When PPO2 plateaus";
    bench/searcher_convergence.py has the full table): on the 1-D quadratic, sigma_decay makes
    every seed plateau near the optimum, sooner on average than the fixed sigma; in 4-D the
    stopper's std=0.001 is not reached in 100."""
    space1 = {"x0": tune.uniform(-2, 2)}
    fixed = [_plateau_run(PPO2Searcher(space1, metric="loss", mode="min", steps=12,
                                       samples_per_step=8, seed=s), 1) for s in range(5)]
    decay = [_plateau_run(PPO2Searcher(space1, metric="loss", mode="min", steps=12,
                                       samples_per_step=8, seed=s, sigma_decay=0.6), 1)
             for s in range(5)]
    assert all(d[1] and d[0] < 100 and abs(d[2][0]) < 0.05 for d in decay)
    assert np.mean([d[0] for d in decay]) < np.mean([f[0] for f in fixed])
    space4 = {f"x{i}": tune.uniform(-2, 2) for i in range(4)}
    four = _plateau_run(PPO2Searcher(space4, metric="loss", mode="min", steps=12,
                                     samples_per_step=8, seed=0, sigma_decay=0.6), 4)
    assert not four[1] and np.abs(four[2]).max() < 0.5


@pytest.mark.slow
@pytest.mark.parametrize("api", ["run", "tuner"])
def test_convergence_under_tune_with_plateau_stopper(local_ray, tmp_path, api):
    """Ray's test_convergence protocol: ConcurrencyLimiter(1), plateau stopper (tune.run's
    ``stop=`` / the Tuner's ``RunConfig(stop=...)``), on the 1-D case where PPO2 plateaus."""
    s = PPO2Searcher(metric="loss", mode="min", steps=12, samples_per_step=8, seed=0,
                     sigma_decay=0.6)
    res = _run(api, quad_trainable, ConcurrencyLimiter(s, max_concurrent=1), tmp_path,
               param_space={"x0": tune.uniform(-2, 2)}, num_samples=100,
               stop=ExperimentPlateauStopper("loss", top=3, patience=20, mode="min"))
    assert len(res) < 100
    best = min(res, key=lambda r: r[1].get("loss", math.inf))
    assert abs(best[0]["x0"]) < 0.05


# --------------------------------------------------------------------------- ask/tell
@pytest.mark.parametrize("make", [
    lambda: PPO2(low=[0.0], high=[1.0], mu0=[0.5], samples_per_step=2, seed=0),
    lambda: RandomSearch(low=[0.0], high=[1.0], samples_per_step=2, seed=0),
])
def test_tell_without_ask_is_refused(make):
    opt = make()
    with pytest.raises(ValueError, match="without a pending ask"):
        opt.tell([[0.1], [0.2]], [1.0, 2.0])
    x = opt.ask()
    opt.tell(x, [1.0, 2.0])
    with pytest.raises(ValueError, match="without a pending ask"):
        opt.tell(x, [1.0, 2.0])  # twice for one ask
