"""Parquet experiment store: schema round trip, readers, atomicity, concurrency, validation."""

from __future__ import annotations

import datetime as dt
import json
import math
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from autoloss_ray.store import (
    METRIC_COLUMNS,
    POLICY_FILE_SCHEMA,
    POLICY_SCHEMA,
    TRIAL_FILE_SCHEMA,
    TRIAL_SCHEMA,
    ExperimentStore,
    PolicyWriter,
    StoreError,
)
from tests import REPO


def full_row(i: int = 0, experiment: str = "exp-a", **over) -> dict:
    row = {
        "experiment": experiment,
        "trial_id": f"trial_{i:05d}",
        "kind": "search",
        "step": i // 4,
        "sample": i % 4,
        "metric": "miou",
        "parameterization": "bezier",
        "loss": None,
        "theta": [0.25, 0.25, 1 / 3, 1 / 3, 0.5, 0.5 + i / 100],
        "reward": 0.5 + i / 1000,
        **{m: 0.1 * (k + 1) + i / 1000 for k, m in enumerate(METRIC_COLUMNS)},
        "status": "ok",
        "error": None,
        "seed": 1000 + i,
        "iterations": 60,
        "train_seconds": 1.5,
        "eval_seconds": 0.25,
        "total_seconds": 1.75,
        "node": "node-1",
        "device": "cpu",
        "dataset": "synthetic",
        "model": "tiny",
        "checkpoint": None,
        "config": {"theta": [0.25], "lr": 0.02, "np": np.float32(2.0)},
        "extra": {"final_loss": 0.3},
        "finished_at": dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC),
    }
    row.update(over)
    return row


def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix == ".parquet")


# ----------------------------------------------------------------------------- round trip
def test_schema_round_trip(tmp_path):
    store = ExperimentStore(tmp_path / "store")
    rows = [full_row(i) for i in range(6)]
    rows.append(full_row(6, status="failed", reward=None, error="boom\nTraceback ...",
                         theta=None, miou=None, step=None, sample=None, seed=None))
    rows.append(full_row(7, status="nan", reward=float("nan"), miou=float("nan")))
    for r in rows:
        store.write_trial(r)
    df = store.trials("exp-a")
    assert list(df.columns) == TRIAL_SCHEMA.names
    assert len(df) == 8
    by_id = df.set_index("trial_id")
    for r in rows:
        got = by_id.loc[r["trial_id"]]
        assert got["experiment"] == "exp-a"
        assert got["status"] == r["status"]
        for k in ("reward", *METRIC_COLUMNS, "train_seconds", "eval_seconds", "total_seconds"):
            want = r[k]
            if want is None or (isinstance(want, float) and math.isnan(want)):
                assert pd.isna(got[k]), k
            else:
                assert got[k] == pytest.approx(want, abs=0), k
        for k in ("step", "sample", "seed", "iterations"):
            assert (pd.isna(got[k]) if r[k] is None else int(got[k]) == r[k]), k
        if r["theta"] is None:
            assert got["theta"] is None
        else:
            np.testing.assert_array_equal(np.asarray(got["theta"]), np.asarray(r["theta"]))
        assert (pd.isna(got["error"]) if r["error"] is None else got["error"] == r["error"])
        assert got["finished_at"] == pd.Timestamp(r["finished_at"])
        cfg = json.loads(got["config_json"])
        assert cfg == {"theta": [0.25], "lr": 0.02, "np": 2.0}
        assert json.loads(got["extra_json"]) == {"final_loss": 0.3}
    # each file holds exactly the file schema (experiment comes from the directory)
    files = parquet_files(tmp_path / "store")
    assert len(files) == 8
    for f in files:
        assert pq.read_schema(f).remove_metadata().equals(TRIAL_FILE_SCHEMA)
        assert f.parent.name == "experiment=exp-a"


def test_policy_round_trip_and_writer_pickles(tmp_path):
    root = str(tmp_path / "store")
    writer = pickle.loads(pickle.dumps(PolicyWriter(root, "exp-p", searcher="ppo2")))
    for step in range(3):
        record = {
            "step": step,
            "mu": np.full(4, 0.1 * step),
            "sigma": 0.2,
            "rewards": np.array([0.1, 0.4, float("nan"), 0.2]) + step,
            "mean_reward": 0.3 + step,
            "best_mu": np.zeros(4),
            "thetas": np.ones((4, 4)) * step,
            "mu_next": [0.5] * 4,
            "some_new_key": {"x": np.int64(3)},
        }
        writer(record)
    writer({"step": 1, "mu": [9.0] * 4, "sigma": 0.2, "rewards": [1.0, 2.0]})  # rewrite step 1
    pol = ExperimentStore(root).policy("exp-p")
    assert list(pol.columns) == POLICY_SCHEMA.names
    assert list(pol["step"]) == [0, 1, 2]
    assert pol.loc[0, "searcher"] == "ppo2"
    np.testing.assert_allclose(pol.loc[2, "rewards"][[0, 1, 3]], [2.1, 2.4, 2.2])
    assert math.isnan(pol.loc[2, "rewards"][2])
    assert pol.loc[2, "max_reward"] == pytest.approx(2.4)  # NaN-aware, computed
    assert pd.isna(pol.loc[2, "best_reward"])  # only what the searcher reports
    assert pol.loc[2, "mean_reward"] == pytest.approx(2.3)  # given value kept
    assert json.loads(pol.loc[2, "extra_json"]) == {"some_new_key": {"x": 3}}
    np.testing.assert_array_equal(np.stack(pol.loc[2, "thetas"]), np.full((4, 4), 2.0))
    assert list(pol.loc[1, "mu"]) == [9.0] * 4  # replaced, not duplicated
    assert pol.loc[1, "mean_reward"] == pytest.approx(1.5)  # default = mean of rewards
    for f in parquet_files(tmp_path / "store"):
        assert pq.read_schema(f).remove_metadata().equals(POLICY_FILE_SCHEMA)


# ----------------------------------------------------------------------------- plain readers
def test_readable_with_pandas_pyarrow_duckdb(tmp_path):
    store = ExperimentStore(tmp_path / "store")
    for i in range(5):
        store.write_trial(full_row(i, experiment="exp-a"))
    for i in range(3):
        store.write_trial(full_row(i, experiment="exp-b", reward=float(i)))
    store.write_policy({"experiment": "exp-a", "step": 0, "mu": [0.5], "rewards": [1.0]})

    df = pd.read_parquet(tmp_path / "store" / "trials")
    assert len(df) == 8
    assert sorted(df["experiment"].astype(str).unique()) == ["exp-a", "exp-b"]
    assert df[df["experiment"] == "exp-b"]["reward"].sum() == pytest.approx(3.0)

    dset = ds.dataset(str(tmp_path / "store" / "trials"), format="parquet", partitioning="hive")
    t = dset.to_table(filter=ds.field("experiment") == "exp-a")
    assert t.num_rows == 5 and set(t.column("trial_id").to_pylist()) == {
        f"trial_{i:05d}" for i in range(5)}

    duckdb = pytest.importorskip("duckdb")
    glob = str(tmp_path / "store" / "trials" / "*" / "*.parquet")
    res = duckdb.sql(
        f"SELECT experiment, count(*) AS n, max(reward) AS best FROM "
        f"read_parquet('{glob}', hive_partitioning=true) GROUP BY experiment ORDER BY 1"
    ).fetchall()
    assert res == [("exp-a", 5, pytest.approx(0.504)), ("exp-b", 3, 2.0)]
    pol = duckdb.sql(
        f"SELECT experiment, step, mu FROM read_parquet("
        f"'{tmp_path / 'store' / 'policy' / '*' / '*.parquet'}', hive_partitioning=true)"
    ).fetchall()
    assert pol == [("exp-a", 0, [0.5])]

    assert store.experiments() == ["exp-a", "exp-b"]
    all_df = store.trials()
    assert len(all_df) == 8 and list(all_df.columns) == TRIAL_SCHEMA.names


def test_rewriting_a_trial_replaces_it(tmp_path):
    store = ExperimentStore(tmp_path)
    store.write_trial(full_row(1, reward=0.1))
    store.write_trial(full_row(1, reward=0.9))
    df = store.trials("exp-a")
    assert len(df) == 1 and df.loc[0, "reward"] == 0.9
    assert len(parquet_files(tmp_path)) == 1


def test_empty_and_missing_store(tmp_path):
    store = ExperimentStore(tmp_path / "does" / "not" / "exist")
    assert store.trials().empty and list(store.trials().columns) == TRIAL_SCHEMA.names
    assert store.policy("x").empty and list(store.policy().columns) == POLICY_SCHEMA.names
    assert store.experiments() == []
    assert not (tmp_path / "does").exists()  # reading creates nothing


def test_file_as_root_refused(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("not a directory")
    with pytest.raises(StoreError, match="existing file"):
        ExperimentStore(f)
    with pytest.raises(StoreError, match="existing file"):
        ExperimentStore(f"file://{f}")


def test_uri_roots(tmp_path):
    store = ExperimentStore(f"file://{tmp_path}/s")
    store.write_trial(full_row(0))
    assert len(ExperimentStore(tmp_path / "s").trials()) == 1
    assert store.root == f"file://{tmp_path}/s"
    assert len(pickle.loads(pickle.dumps(store)).trials("exp-a")) == 1
    # a non-local pyarrow filesystem takes the temp + move path
    mock = ExperimentStore("mock:///st")
    mock.write_trial(full_row(3))
    mock.write_trial(full_row(3, reward=0.25))
    df = mock.trials()
    assert len(df) == 1 and df.loc[0, "reward"] == 0.25


@pytest.mark.parametrize(
    "over, match",
    [
        ({"status": "done"}, "status"),
        ({"status": None}, "status"),
        ({"reward": "0.5"}, "reward"),
        ({"miou": [0.5]}, "miou"),
        ({"step": 1.0}, "step"),
        ({"step": True}, "step"),
        ({"sample": -1}, "sample"),
        ({"seed": "7"}, "seed"),
        ({"theta": "0.1,0.2"}, "theta"),
        ({"theta": [0.1, None]}, r"theta'\[1\]"),
        ({"theta": np.zeros((2, 2))}, "theta"),
        ({"metric": 3}, "metric"),
        ({"node": b"x"}, "node"),
        ({"kind": "other"}, "kind"),
        ({"trial_id": "../../etc"}, "trial_id"),
        ({"trial_id": ".hidden"}, "trial_id"),
        ({"trial_id": ""}, "trial_id"),
        ({"experiment": "a/b"}, "experiment"),
        ({"experiment": None}, "experiment"),
        ({"config_json": "{not json"}, "config_json"),
        ({"finished_at": "yesterday"}, "finished_at"),
        ({"rewardd": 0.5}, "unknown trial column"),
    ],
)
def test_bad_rows_refused_before_writing(tmp_path, over, match):
    store = ExperimentStore(tmp_path / "s")
    with pytest.raises(StoreError, match=match):
        store.write_trial(full_row(0, **over))
    assert not (tmp_path / "s").exists()


def test_policy_writer_takes_a_searcher_record(tmp_path):
    # the shape searchers.PPO2Searcher hands its step_callback
    record = {
        "step": 0, "searcher": "PPO2Searcher", "metric": "reward", "mode": "max",
        "mu": [0.25, 0.5], "mu_next": [0.3, 0.5], "sigma": 0.2,
        "thetas": [[0.2, 0.4], [0.3, 0.6], [0.1, 0.5]],
        "configs": [{"theta": [0.2, 0.4], "search_step": 0, "search_sample": 0}] * 3,
        "rewards": [0.4, 0.6, 0.0], "values": [0.4, 0.6, 0.0], "failed": [False, False, True],
        "trial_ids": ["a_00000", "a_00001", None], "mean_reward": 1 / 3,
        "best_mu": [0.25, 0.5], "best_reward": 1 / 3, "names": ["miou.and.0", "miou.and.1"],
    }
    PolicyWriter(tmp_path, "exp")(record)
    row = ExperimentStore(tmp_path).policy("exp").iloc[0]
    assert row["searcher"] == "PPO2Searcher" and row["metric"] == "reward"
    assert list(row["failed"]) == [False, False, True]
    assert list(row["trial_ids"]) == ["a_00000", "a_00001", None]
    assert row["max_reward"] == pytest.approx(0.6) and row["best_reward"] == pytest.approx(1 / 3)
    extra = json.loads(row["extra_json"])
    assert set(extra) == {"mode", "configs", "values", "names"}


def test_bad_policy_rows_refused(tmp_path):
    store = ExperimentStore(tmp_path / "s")
    good = {"experiment": "e", "step": 0, "mu": [0.1], "rewards": [0.2]}
    for over, match in [({"mu": None}, "mu"), ({"rewards": "x"}, "rewards"),
                        ({"step": -1}, "step"), ({"thetas": [[0.1], "a"]}, "thetas"),
                        ({"sigma": "0.2"}, "sigma"), ({"junk": 1}, "unknown policy"),
                        ({"failed": [1, 0]}, "failed"), ({"trial_ids": [1]}, "trial_ids"),
                        ({"max_reward": 1.0}, "computed")]:
        with pytest.raises(StoreError, match=match):
            store.write_policy({**good, **over})
    with pytest.raises(StoreError, match="mapping"):
        store.write_trial([("experiment", "e")])
    assert not (tmp_path / "s").exists()
    assert isinstance(StoreError("x"), ValueError)


def test_search_manifest_round_trip_and_errors(tmp_path):
    s = ExperimentStore(tmp_path / "store")
    assert s.read_search("exp") is None
    opts = {"metric": "miou", "seed": 3, "sigma": 0.2, "extra_config": {"a": [1, 2]}}
    path = s.write_search("exp", opts)
    assert path.endswith("searches/exp.json")
    assert s.read_search("exp") == opts
    assert s.experiments() == []  # a manifest alone is not an experiment with rows
    opts2 = {**opts, "seed": 4}
    s.write_search("exp", opts2)  # replaced atomically
    assert s.read_search("exp") == opts2
    assert not [p for p in (tmp_path / "store" / "searches").iterdir()
                if p.name.startswith(".")]  # no temp file left behind
    with pytest.raises(StoreError, match="not JSON"):
        s.write_search("exp2", {"f": object()})
    assert s.read_search("exp2") is None
    (tmp_path / "store" / "searches" / "bad.json").write_text("{not json")
    with pytest.raises(StoreError, match="unreadable"):
        s.read_search("bad")
    with pytest.raises(StoreError):
        s.write_search("../escape", opts)


def test_store_imports_no_ray():
    code = "import sys, autoloss_ray.store, autoloss_ray.report; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- concurrency
def test_concurrent_threads_with_readers(tmp_path):
    store = ExperimentStore(tmp_path)
    n_threads, per_thread = 6, 15
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(k: int) -> None:
        try:
            for i in range(per_thread):
                store.write_trial(full_row(k * 100 + i, reward=float(k)))
                store.write_trial(full_row(999, reward=float(k)))  # all fight over one id
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader() -> None:
        try:
            while not stop.is_set():
                df = store.trials("exp-a")
                assert df["status"].eq("ok").all()
                pd.read_parquet(tmp_path / "trials")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    store.write_trial(full_row(999, reward=0.0))  # the plain reader needs the directory
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(n_threads)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers + threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors
    df = store.trials("exp-a")
    assert len(df) == n_threads * per_thread + 1
    assert df.set_index("trial_id").loc["trial_00999", "reward"] in {
        float(k) for k in range(n_threads)}
    assert not [p for p in tmp_path.rglob(".*.tmp")]


def _process_writer(root: str, k: int, n: int) -> None:
    store = ExperimentStore(root)
    for i in range(n):
        store.write_trial(full_row(k * 1000 + i, experiment=f"proc-{k % 2}"))
        store.write_policy({"experiment": "shared", "step": i, "mu": [float(k)],
                            "rewards": [float(k)]})


def test_concurrent_processes(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_process_writer, args=(str(tmp_path), k, 20)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = ExperimentStore(tmp_path)
    df = store.trials()
    assert len(df) == 60
    assert (df.groupby("experiment", observed=True).size().to_dict()
            == {"proc-0": 40, "proc-1": 20})
    pol = store.policy("shared")
    assert list(pol["step"]) == list(range(20))  # one row per step, whoever won
    assert store.experiments() == ["proc-0", "proc-1", "shared"]


# ----------------------------------------------------------------------------- killed writers
_BLOCKING_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from autoloss_ray.store import ExperimentStore
    store = ExperimentStore(sys.argv[1])
    store.write_trial({"experiment": "k", "trial_id": "done", "status": "ok", "reward": 1.0})
    real_replace = os.replace
    def hang(src, dst):
        print("IN_RENAME", src, flush=True)
        time.sleep(600)
    os.replace = hang
    store.write_trial({"experiment": "k", "trial_id": "half", "status": "ok",
                       "theta": [0.5] * 1000})
    """
)


def test_writer_killed_before_rename_leaves_nothing_visible(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _BLOCKING_WRITER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline()
        assert line.startswith("IN_RENAME"), line
        tmp_file = Path(line.split()[1])
        assert tmp_file.exists() and tmp_file.name.startswith(".")  # fully written temp
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    store = ExperimentStore(tmp_path)
    assert list(store.trials("k")["trial_id"]) == ["done"]
    assert len(pd.read_parquet(tmp_path / "trials")) == 1
    duckdb = pytest.importorskip("duckdb")
    assert duckdb.sql(f"SELECT count(*) FROM '{tmp_path}/trials/*/*.parquet'").fetchall() == [(1,)]
    assert store.cleanup_temp(older_than_s=3600) == []  # too fresh
    removed = store.cleanup_temp(older_than_s=0)
    assert [Path(p).name for p in removed] == [tmp_file.name]
    assert not tmp_file.exists()


_STREAM_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from autoloss_ray.store import ExperimentStore
    store = ExperimentStore(sys.argv[1])
    rng = np.random.default_rng(0)
    i = 0
    while True:
        store.write_trial({"experiment": "s", "trial_id": f"t{i % 40}", "status": "ok",
                           "step": i, "theta": rng.random(50_000), "reward": float(i)})
        if i == 5:
            print("STARTED", flush=True)
        i += 1
    """
)


@pytest.mark.slow
def test_writer_killed_mid_stream_no_partial_file(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _STREAM_WRITER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    reads = 0
    try:
        assert proc.stdout.readline().strip() == "STARTED"
        store = ExperimentStore(tmp_path)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:  # readers racing the writer never see a torn file
            df = store.trials("s")
            assert len(df) >= 1
            assert all(len(t) == 50_000 for t in df["theta"])
            reads += 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert reads > 3
    files = parquet_files(tmp_path)
    assert 1 <= len(files) <= 40
    for f in files:  # every visible file is complete
        t = pq.read_table(f)
        assert t.num_rows == 1 and len(t.column("theta")[0]) == 50_000
    df = pd.read_parquet(tmp_path / "trials")
    assert len(df) == len(files)


# ----------------------------------------------------------------------------- Tune callback
class _FakeTrial:
    def __init__(self, trial_id, config, last_result, error_file=None):
        self.trial_id = trial_id
        self.config = config
        self.last_result = last_result
        self.error_file = error_file

    def get_error(self):
        return None


def test_store_callback_rows_from_fake_trials(tmp_path):
    pytest.importorskip("ray")
    from trainables.store_callback import StoreCallback

    cb = pickle.loads(pickle.dumps(StoreCallback(str(tmp_path), "cb", "miou+biou")))
    config = {"theta": np.linspace(0, 1, 12).tolist(), "search_step": 2, "search_sample": 5,
              "parameterization": "bezier", "seed": 7, "dataset": "synthetic",
              "model": "tiny", "iterations": 60}
    result = {"miou": 0.4, "biou": 0.2, "fwiou": 0.5, "bf1": 0.3, "macc": 0.6, "gacc": 0.7,
              "status": "ok", "error": None, "train_seconds": 2.0, "eval_seconds": 0.5,
              "node": "n1", "device": "cuda:0", "final_loss": 0.1, "time_total_s": 3.0,
              "config": config, "training_iteration": 1, "done": True}
    cb.on_trial_complete(iteration=1, trials=[], trial=_FakeTrial("abc_00001", config, result))
    err = tmp_path / "error.txt"
    err.write_text("Failure # 1 (occurred at x)\nold\nFailure # 2 (occurred at y)\n"
                   "ValueError: theta out of box\n")
    cb.on_trial_error(iteration=2, trials=[],
                      trial=_FakeTrial("abc_00002", {**config, "search_sample": 6}, {}, err))
    nan_result = {**result, "miou": float("nan"), "status": "nan"}
    cb.on_trial_complete(iteration=3, trials=[],
                         trial=_FakeTrial("abc_00003", {**config, "search_sample": 7},
                                          nan_result))
    df = ExperimentStore(tmp_path).trials("cb").set_index("trial_id")
    assert len(df) == 3 and cb.written == 3
    ok = df.loc["abc_00001"]
    assert ok["status"] == "ok" and ok["reward"] == pytest.approx(0.6)  # miou + biou
    assert (ok["step"], ok["sample"], ok["seed"], ok["iterations"]) == (2, 5, 7, 60)
    assert ok["metric"] == "miou+biou" and ok["parameterization"] == "bezier"
    assert list(ok["theta"]) == pytest.approx(config["theta"])
    assert (ok["node"], ok["device"], ok["total_seconds"]) == ("n1", "cuda:0", 3.0)
    assert json.loads(ok["extra_json"]) == {"final_loss": 0.1}
    assert json.loads(ok["config_json"])["search_step"] == 2
    bad = df.loc["abc_00002"]
    assert bad["status"] == "failed" and pd.isna(bad["reward"]) and pd.isna(bad["miou"])
    assert "theta out of box" in bad["error"] and "old" not in bad["error"]
    assert df.loc["abc_00003", "status"] == "nan"
    assert pd.isna(ok["loss"]) and ok["kind"] == "search"

    # a value the schema refuses (a seed beyond int64) keeps the trial, and what a resumed
    # search replays (step, sample, theta, reward)
    cb.on_trial_complete(iteration=4, trials=[], trial=_FakeTrial(
        "abc_00004", {**config, "search_sample": 8, "seed": 2**70}, result))
    big = ExperimentStore(tmp_path).trials("cb").set_index("trial_id").loc["abc_00004"]
    assert (big["step"], big["sample"], big["status"]) == (2, 8, "ok")
    assert big["reward"] == pytest.approx(0.6) and pd.isna(big["seed"])
    assert list(big["theta"]) == pytest.approx(config["theta"])
    assert "64 bits" in json.loads(big["extra_json"])["store_error"]

    rcb = StoreCallback(str(tmp_path), "rt", "miou", kind="retrain")
    for tid, extra in (("r1", {"loss": "lovasz"}), ("r2", {"loss": "/x/l.json",
                                                            "loss_label": "searched"}),
                       ("r3", {})):
        rcb.on_trial_complete(iteration=1, trials=[], trial=_FakeTrial(
            tid, {**config, "metric": "miou", **extra},
            {**result, "checkpoint": f"/ckpt/{tid}.pt"}))
    rt = ExperimentStore(tmp_path).trials("rt").set_index("trial_id")
    assert list(rt["loss"]) == ["lovasz", "searched", "surrogate:miou"]
    assert set(rt["kind"]) == {"retrain"} and rt.loc["r1", "checkpoint"] == "/ckpt/r1.pt"


@pytest.mark.slow
def test_store_callback_in_a_real_tune_run(local_ray, tmp_path):
    from ray import tune

    from trainables.store_callback import StoreCallback

    def trainable(config):
        if config["search_sample"] == 1:
            raise RuntimeError("synthetic failure for the store test")
        tune.report({"reward": 0.1 * config["search_sample"], "miou": 0.1 *
                     config["search_sample"], "status": "ok", "node": "here", "device": "cpu"})

    tuner = tune.Tuner(
        trainable,
        param_space={"search_sample": tune.grid_search([0, 1, 2]), "search_step": 0,
                     "theta": [0.5, 0.5], "metric": "miou"},
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "tune"), name="cbtest", verbose=0,
            callbacks=[StoreCallback(str(tmp_path / "store"), "real", "miou")],
        ),
        tune_config=tune.TuneConfig(reuse_actors=True),
    )
    tuner.fit()
    df = ExperimentStore(tmp_path / "store").trials("real")
    assert len(df) == 3
    assert list(df["sample"]) == [0, 1, 2]
    assert list(df["status"]) == ["ok", "failed", "ok"]
    assert "synthetic failure for the store test" in df.loc[1, "error"]
    assert df.loc[2, "reward"] == pytest.approx(0.2)


def test_node_id_and_ip_are_columns_and_older_files_without_them_still_read(tmp_path):
    import pyarrow as pa

    store = ExperimentStore(tmp_path / "store")
    nid = "ab" * 28
    store.write_trial(full_row(0, node_id=nid, node_ip="10.0.0.7"))
    # a file of an older version: the trial file schema without the two new columns
    old_schema = pa.schema([f for f in TRIAL_FILE_SCHEMA if f.name not in ("node_id",
                                                                             "node_ip")])
    new = pq.read_table(parquet_files(tmp_path / "store")[0])
    old = new.select(old_schema.names).set_column(
        old_schema.get_field_index("trial_id"), "trial_id", pa.array(["trial_old"]))
    pq.write_table(old, tmp_path / "store/trials/experiment=exp-a/trial_old.parquet")
    df = store.trials("exp-a").set_index("trial_id")
    assert df.loc["trial_00000", "node_id"] == nid
    assert df.loc["trial_00000", "node_ip"] == "10.0.0.7"
    assert pd.isna(df.loc["trial_old", "node_id"]) and pd.isna(df.loc["trial_old", "node_ip"])
    assert len(store.trials()) == 2  # the all-experiments (hive) read too
    with pytest.raises(StoreError, match="node_ip"):
        store.write_trial(full_row(1, node_ip=7))
