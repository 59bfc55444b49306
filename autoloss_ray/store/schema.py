"""The store's columns, partitioning, names and the meaning of a trial's ``status``.

The single place where the store's columns are defined. Add columns only at the end and only
nullable: readers pass these schemas explicitly, so older files read with nulls.
:data:`TRIAL_SCHEMA` / :data:`POLICY_SCHEMA` are the logical schemas (``experiment`` first);
:data:`TRIAL_FILE_SCHEMA` / :data:`POLICY_FILE_SCHEMA` are what each file holds (the
``experiment`` column lives in the directory name, hive partitioning). Nothing here does I/O.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from autoloss_ray.validation import STORE_NAME_RE
from autoloss_ray.vocabulary import EVAL_PROTOCOLS, METRICS

__all__ = [
    "EVAL_PROTOCOLS",
    "KINDS",
    "METRIC_COLUMNS",
    "PARTITION",
    "POLICY_FILE_SCHEMA",
    "POLICY_SCHEMA",
    "STATUSES",
    "TRIAL_FILE_SCHEMA",
    "TRIAL_SCHEMA",
    "StoreError",
    "StoreWarning",
    "check_name",
    "failed_mask",
    "ok_mask",
    "trial_ok",
    "trial_succeeded",
]

METRIC_COLUMNS = METRICS  # the metric vocabulary (autoloss_ray.vocabulary, torch-free)
# ok: the trial finished and was scored; failed: it raised (its error is in ``error``);
# nan: it finished but diverged (non-finite parameters or reward)
STATUSES = ("ok", "failed", "nan")
# how the row's metrics were scored: EVAL_PROTOCOLS (autoloss_ray.vocabulary; rows of older
# stores have null: they are "train_size")
# playoff: a search's top trials re-trained with fresh seeds after it (autoloss_ray.answer;
# step = the candidate, sample = the seed); readers of search rows select kind "search"
KINDS = ("search", "retrain", "evaluate", "playoff")

_TS = pa.timestamp("us", tz="UTC")
_F64_LIST = pa.list_(pa.float64())

TRIAL_SCHEMA = pa.schema(
    [
        pa.field("experiment", pa.string(), nullable=False),
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # search | retrain | evaluate | playoff
        pa.field("step", pa.int64()),  # search step (None outside a search)
        pa.field("sample", pa.int64()),  # index of the trial within its step
        pa.field("metric", pa.string()),  # target metric spec, e.g. "miou" or "miou+biou"
        pa.field("parameterization", pa.string()),
        pa.field("loss", pa.string()),  # loss label (retrain: "ce", "preset:miou", a path...)
        pa.field("theta", _F64_LIST),
        pa.field("reward", pa.float64()),
        *[pa.field(m, pa.float64()) for m in METRIC_COLUMNS],
        pa.field("status", pa.string(), nullable=False),  # ok | failed | nan
        pa.field("error", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("iterations", pa.int64()),
        pa.field("train_seconds", pa.float64()),
        pa.field("eval_seconds", pa.float64()),
        pa.field("total_seconds", pa.float64()),
        pa.field("node", pa.string()),
        pa.field("device", pa.string()),
        pa.field("dataset", pa.string()),
        pa.field("model", pa.string()),
        pa.field("checkpoint", pa.string()),  # path of saved weights (retrain)
        pa.field("config_json", pa.string()),  # the trial's full config, JSON
        pa.field("extra_json", pa.string()),  # any other result values, JSON
        pa.field("finished_at", _TS, nullable=False),
        # True: a scheduler (ASHA, HyperBand, a stopper) ended the trial before it finished;
        # its reward is the last value it reported. Null in stores written before the column.
        pa.field("stopped_early", pa.bool_()),
        pa.field("eval_protocol", pa.string()),  # native | train_size (null: older store)
        # where the trial ran, as Ray names it (``node`` is the hostname, which all nodes of
        # one machine or of same-named containers share); null in stores of older versions
        pa.field("node_id", pa.string()),  # Ray node id (hex)
        pa.field("node_ip", pa.string()),  # the node's IP address as Ray reports it
    ]
)

POLICY_SCHEMA = pa.schema(
    [
        pa.field("experiment", pa.string(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),
        pa.field("searcher", pa.string()),  # e.g. PPO2Searcher, RandomSearcher
        pa.field("metric", pa.string()),  # the searched metric spec
        pa.field("mu", _F64_LIST, nullable=False),  # policy mean used to sample this step
        pa.field("sigma", pa.float64()),
        pa.field("rewards", _F64_LIST, nullable=False),  # as fed to the optimizer
        pa.field("mean_reward", pa.float64()),  # default: NaN-aware mean of rewards
        pa.field("max_reward", pa.float64()),  # best reward within this step (computed)
        pa.field("best_reward", pa.float64()),  # the searcher's best so far, as it reports it
        pa.field("best_mu", _F64_LIST),  # the searcher's answer so far (PPO2: best step's mu)
        pa.field("mu_next", _F64_LIST),  # mu after this step's update
        pa.field("thetas", pa.list_(_F64_LIST)),  # the step's samples [M][D]
        pa.field("trial_ids", pa.list_(pa.string())),  # Tune trial ids of the samples
        pa.field("failed", pa.list_(pa.bool_())),  # which samples failed (failure reward)
        pa.field("extra_json", pa.string()),
        pa.field("finished_at", _TS, nullable=False),
        # PPO update diagnostics of this step, as CleanRL logs them: the fraction of ratios
        # the clip cut and the approximate KL between the old and the new policy. Null for
        # searchers without an update and in stores written before the columns.
        pa.field("clip_fraction", pa.float64()),
        pa.field("approx_kl", pa.float64()),
    ]
)

PARTITION = "experiment"
TRIAL_FILE_SCHEMA = pa.schema([f for f in TRIAL_SCHEMA if f.name != PARTITION])
POLICY_FILE_SCHEMA = pa.schema([f for f in POLICY_SCHEMA if f.name != PARTITION])
PARTITIONING = ds.partitioning(pa.schema([(PARTITION, pa.string())]), flavor="hive")



class StoreWarning(UserWarning):
    """A store file was skipped when reading (unreadable or of another schema)."""


class StoreError(ValueError):
    """A row or a store location that the store refuses (raised before anything is written)."""


def check_name(value: Any, what: str) -> str:
    """``value`` as a path-safe name (letters, digits, ``_ . -``; no leading dot)."""
    if not isinstance(value, str) or not STORE_NAME_RE.match(value) or value.endswith(".tmp"):
        raise StoreError(
            f"{what} must be a non-empty string of letters, digits and '_.-' (not starting "
            f"with '.', '_' or '-', at most 200 characters), got {value!r}"
        )
    return value


# ----------------------------------------------------------------------------- status rules
# Two questions are asked of a finished trial, with two rules on purpose:
# - did it produce a result to show/use (tables, export, counts of failures, exit codes):
#   its status is "ok" (:func:`trial_ok`, :func:`ok_mask`);
# - does it count for the searcher (replay on resume, progress after a resume): it did not
#   raise and its reward is a finite number (:func:`trial_succeeded`); otherwise the
#   searcher gave it the failure reward.
# "Raised an error" alone (status "failed"; a diverged "nan" trial is a result) is
# :func:`failed_mask`.
def trial_ok(status: Any) -> bool:
    """Whether a trial with this ``status`` finished and was scored (``status == "ok"``).

    "failed" (it raised) and "nan" (it diverged) are not ok; neither is any other value.
    """
    return status == "ok"


def ok_mask(rows: Any) -> Any:
    """:func:`trial_ok` over a DataFrame of trial rows: a boolean Series, True where the
    row's ``status`` is ``"ok"``."""
    return rows["status"] == "ok"


def failed_mask(rows: Any) -> Any:
    """True where a trial row raised an error (``status == "failed"``); a diverged trial
    (``"nan"``) is a result, not an error."""
    return rows["status"] == "failed"


def trial_succeeded(status: Any, reward: Any) -> bool:
    """Whether a stored search trial counts for the searcher: it did not fail and its reward
    is a finite number (otherwise the searcher gave it the failure reward)."""
    try:
        return status != "failed" and reward is not None and math.isfinite(float(reward))
    except (TypeError, ValueError):
        return False
