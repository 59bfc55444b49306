"""The store package: frozen file layout, stores of older versions, status rules, row building.

The schema literals below are written out by hand (not derived from the code): a change of a
column's name, type, nullability or position in the files fails here first. Add columns only
at the end (nullable), and then add them here too.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import autoloss_ray.store as store_pkg
from autoloss_ray.store import (
    POLICY_FILE_SCHEMA,
    POLICY_SCHEMA,
    TRIAL_FILE_SCHEMA,
    TRIAL_SCHEMA,
    ExperimentStore,
    PolicyWriter,
    StoreError,
    failed_mask,
    ok_mask,
    trial_ok,
    trial_row,
    trial_succeeded,
)
from tests import FIXTURES

V0 = FIXTURES / "store_v0"  # written by the code before the split

TRIAL_FILE_COLUMNS = """
trial_id string required
kind string required
step int64
sample int64
metric string
parameterization string
loss string
theta list<item: double>
reward double
miou double
fwiou double
biou double
bf1 double
macc double
gacc double
status string required
error string
seed int64
iterations int64
train_seconds double
eval_seconds double
total_seconds double
node string
device string
dataset string
model string
checkpoint string
config_json string
extra_json string
finished_at timestamp[us, tz=UTC] required
stopped_early bool
eval_protocol string
node_id string
node_ip string
"""

POLICY_FILE_COLUMNS = """
step int64 required
searcher string
metric string
mu list<item: double> required
sigma double
rewards list<item: double> required
mean_reward double
max_reward double
best_reward double
best_mu list<item: double>
mu_next list<item: double>
thetas list<item: list<item: double>>
trial_ids list<item: string>
failed list<item: bool>
extra_json string
finished_at timestamp[us, tz=UTC] required
clip_fraction double
approx_kl double
"""


def _columns(schema: pa.Schema) -> list[tuple[str, str, bool]]:
    # a list's child is named "item" in Arrow and "element" in a Parquet file: not compared
    return [(f.name, str(f.type).replace("<element:", "<item:"), not f.nullable)
            for f in schema]


def _expected(spec: str) -> list[tuple[str, str, bool]]:
    out = []
    for line in spec.strip().splitlines():
        required = line.endswith(" required")
        name, typ = line.removesuffix(" required").split(" ", 1)
        out.append((name, typ, required))
    return out


def _trial(i: int, **over) -> dict:
    row = {"experiment": "exp", "trial_id": f"t{i}", "kind": "search", "step": 0, "sample": i,
           "metric": "miou", "theta": [0.5, 0.25], "reward": 0.5, "miou": 0.5,
           "status": "ok", "config": {"lr": 0.1}, "extra": {"final_loss": 0.2},
           "finished_at": dt.datetime(2025, 1, 1, 0, 0, i, tzinfo=dt.UTC)}
    row.update(over)
    return row


# ----------------------------------------------------------------------------- layout
def test_files_written_through_the_public_api_have_the_frozen_schemas(tmp_path):
    assert _columns(TRIAL_FILE_SCHEMA) == _expected(TRIAL_FILE_COLUMNS)
    assert _columns(POLICY_FILE_SCHEMA) == _expected(POLICY_FILE_COLUMNS)
    assert TRIAL_SCHEMA.names == ["experiment", *TRIAL_FILE_SCHEMA.names]
    assert POLICY_SCHEMA.names == ["experiment", *POLICY_FILE_SCHEMA.names]
    store = ExperimentStore(tmp_path)
    trial_path = store.write_trial(_trial(0))
    policy_path = PolicyWriter(str(tmp_path), "exp", searcher="PPO2Searcher")(
        {"step": 3, "mu": [0.5, 0.5], "sigma": 0.2, "rewards": [0.1, 0.3]})
    assert trial_path == f"{tmp_path}/trials/experiment=exp/t0.parquet"
    assert policy_path == f"{tmp_path}/policy/experiment=exp/step-000003.parquet"
    trial_file = pq.read_schema(trial_path).remove_metadata()
    policy_file = pq.read_schema(policy_path).remove_metadata()
    assert _columns(trial_file) == _expected(TRIAL_FILE_COLUMNS)
    assert _columns(policy_file) == _expected(POLICY_FILE_COLUMNS)
    assert trial_file.equals(TRIAL_FILE_SCHEMA) and policy_file.equals(POLICY_FILE_SCHEMA)
    # pyarrow's own hive reading (no project code) sees the experiment column
    assert set(pd.read_parquet(tmp_path / "trials")["experiment"]) == {"exp"}


def test_a_store_written_before_the_split_reads_back(tmp_path):
    """``tests/fixtures/store_v0`` was written with the public API by the single-module store
    (before ``autoloss_ray/store/`` and before the policy diagnostics columns)."""
    root = tmp_path / "v0"
    shutil.copytree(V0, root)
    store = ExperimentStore(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no file of the old store is skipped
        trials, policy = store.trials(), store.policy()
    assert store.experiments() == ["exp-a", "exp-r"]
    assert list(trials.columns) == TRIAL_SCHEMA.names
    assert list(policy.columns) == POLICY_SCHEMA.names
    assert list(trials["trial_id"]) == ["t000", "t001", "t002", "r1"]
    assert list(trials["status"]) == ["ok", "failed", "nan", "ok"]
    assert trials["reward"].iloc[0] == pytest.approx(0.4) and pd.isna(trials["reward"].iloc[1])
    assert list(trials["theta"].iloc[1]) == pytest.approx([0.1, 0.5, 0.75])
    assert json.loads(trials["config_json"].iloc[0]) == {"arr": [0, 1, 2], "lr": 0.01}
    assert bool(trials["stopped_early"].iloc[2]) is True
    assert trials["loss"].iloc[3] == "surrogate:miou" and trials["kind"].iloc[3] == "retrain"
    assert list(policy["step"]) == [0, 1]
    assert list(policy["failed"].iloc[0]) == [False, True, False]
    assert policy["max_reward"].iloc[0] == pytest.approx(0.6)
    # the columns added after it read as null
    assert policy["clip_fraction"].isna().all() and policy["approx_kl"].isna().all()
    one_policy = store.policy("exp-a")
    assert list(one_policy.columns) == POLICY_SCHEMA.names
    assert one_policy["clip_fraction"].isna().all() and one_policy["approx_kl"].isna().all()
    assert store.read_search("exp-a") == {"samples": 3, "steps": 2}
    # and the experiment reads the same through the one-experiment path
    one = store.trials("exp-a")
    pd.testing.assert_frame_equal(one.reset_index(drop=True),
                                  trials[trials["experiment"] == "exp-a"].reset_index(drop=True))


def test_policy_diagnostics_columns_round_trip_and_are_checked(tmp_path):
    writer = PolicyWriter(str(tmp_path), "exp")
    writer({"step": 0, "mu": [0.5], "rewards": [0.1], "clip_fraction": np.float32(0.25),
            "approx_kl": 0.0125})
    writer({"step": 1, "mu": [0.5], "rewards": [0.1]})  # a searcher without an update
    policy = ExperimentStore(tmp_path).policy("exp")
    assert policy["clip_fraction"].iloc[0] == pytest.approx(0.25)
    assert policy["approx_kl"].iloc[0] == pytest.approx(0.0125)
    assert pd.isna(policy["clip_fraction"].iloc[1]) and pd.isna(policy["approx_kl"].iloc[1])
    assert pd.isna(policy["extra_json"].iloc[0])  # columns, not extra_json
    with pytest.raises(StoreError, match="approx_kl"):
        writer({"step": 2, "mu": [0.5], "rewards": [0.1], "approx_kl": "small"})


# ----------------------------------------------------------------------------- status rules
def test_status_rules():
    frame = pd.DataFrame({"status": ["ok", "failed", "nan", "ok"],
                          "reward": [0.5, None, float("nan"), float("inf")]})
    assert list(ok_mask(frame)) == [True, False, False, True]
    assert list(failed_mask(frame)) == [False, True, False, False]
    assert [trial_ok(s) for s in ("ok", "failed", "nan", None, "OK")] == [True] + [False] * 4
    # the searcher's rule: not raised and a finite reward
    assert [trial_succeeded(s, r) for s, r in zip(frame["status"], frame["reward"])] == [
        True, False, False, False]
    assert trial_succeeded("nan", 0.3) and not trial_succeeded("ok", "x")
    assert not trial_succeeded("ok", None)


# ----------------------------------------------------------------------------- trial rows
def test_trial_row_nulls_a_refused_value_and_keeps_the_rest(tmp_path):
    cfg = {"search_step": -1, "search_sample": 2, "seed": 2**70, "theta": [0.5, 0.5],
           "metric": "miou", "parameterization": "bezier"}
    result = {"reward": 0.7, "miou": 0.7, "status": "ok", "node": "n1", "final_loss": 0.1,
              "done": True}
    row = trial_row("exp", "t9", cfg, result)
    assert row["step"] is None and row["seed"] is None  # negative step; seed past 64 bits
    assert (row["sample"], row["reward"], row["node"], row["status"]) == (2, 0.7, "n1", "ok")
    assert "must be >= 0" in row["extra"]["store_error"]
    assert "64 bits" in row["extra"]["store_error"]
    assert row["extra"]["refused"] == {"step": "-1", "seed": str(2**70)}
    assert row["extra"]["final_loss"] == 0.1
    ExperimentStore(tmp_path).write_trial(row)  # always writable
    got = ExperimentStore(tmp_path).trials("exp").iloc[0]
    assert pd.isna(got["step"]) and got["parameterization"] == "bezier"


def test_trial_row_reads_reported_values_leniently():
    row = trial_row("e", "t1", {"search_step": 2.0, "theta": np.array([1, 2])},
                    {"miou": np.float32(0.25), "biou": "0.5", "train_seconds": 2,
                     "eval_seconds": 1}, metric_spec="miou+biou")
    assert row["step"] == 2 and row["theta"] == [1.0, 2.0]
    assert row["reward"] == pytest.approx(0.75)  # summed from the spec's metrics
    assert row["status"] == "ok" and row["total_seconds"] == 3.0
    missing = trial_row("e", "t2", {}, {"miou": 0.25}, metric_spec="miou+biou")
    assert missing["reward"] is None and missing["status"] == "nan"
    failed = trial_row("e", "t3", {}, {"reward": 0.5}, failed=True, error="boom")
    assert (failed["status"], failed["error"], failed["stopped_early"]) == ("failed", "boom",
                                                                          False)
    assert math.isclose(failed["reward"], 0.5)


def test_the_store_columns_of_the_metrics_are_the_metric_vocabulary():
    # the store keeps its own literal so that importing it needs no torch (metrics does)
    from autoloss_ray.metrics import METRICS

    assert store_pkg.METRIC_COLUMNS == METRICS


def test_every_name_of_the_single_module_is_still_importable():
    names = ("EVAL_PROTOCOLS", "KINDS", "METRIC_COLUMNS", "PARTITION", "POLICY_FILE_SCHEMA",
             "POLICY_SCHEMA", "STATUSES", "TRIAL_FILE_SCHEMA", "TRIAL_SCHEMA",
             "ExperimentStore", "PolicyWriter", "StoreError", "StoreWarning", "check_name",
             "normalize_policy_row", "normalize_trial_row", "trial_succeeded")
    missing = [n for n in names if not hasattr(store_pkg, n)]
    assert not missing, missing
    assert set(store_pkg.__all__) <= set(dir(store_pkg))
