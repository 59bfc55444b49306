"""Parquet experiment store: every finished trial and every policy step, one file each.

One concept per module:

- :mod:`~autoloss_ray.store.schema`: the columns (:data:`TRIAL_SCHEMA`, :data:`POLICY_SCHEMA`),
  statuses, kinds, evaluation protocols, partitioning, names, and what a status means
  (:func:`trial_ok`, :func:`ok_mask`, :func:`failed_mask`, :func:`trial_succeeded`);
- :mod:`~autoloss_ray.store.records`: validation/coercion of trial and policy rows;
- :mod:`~autoloss_ray.store.trial_rows`: the row of a finished trial from its config and
  result (the store callback's pure part);
- :mod:`~autoloss_ray.store._atomic`: store roots (paths, ``s3://...?endpoint_override=``
  URIs) and atomic writes;
- :mod:`~autoloss_ray.store.experiment_store`: :class:`ExperimentStore`, the layout, writing,
  the manifests and the search lock, and the queries (trials, policy steps, experiments);
- :mod:`~autoloss_ray.store._reading`: how a table's files are read (found, checked, skipping
  bad or foreign files, read, a copied trial counted once);
- :mod:`~autoloss_ray.store.policy_writer`: :class:`PolicyWriter`, the searchers' step hook.

Every name is importable from ``autoloss_ray.store``. Nothing here imports ray.
"""

from __future__ import annotations

from autoloss_ray.store.experiment_store import ExperimentStore
from autoloss_ray.store.policy_writer import PolicyWriter
from autoloss_ray.store.records import (
    check_trial_value,
    normalize_policy_row,
    normalize_trial_row,
)
from autoloss_ray.store.schema import (
    EVAL_PROTOCOLS,
    KINDS,
    METRIC_COLUMNS,
    PARTITION,
    POLICY_FILE_SCHEMA,
    POLICY_SCHEMA,
    STATUSES,
    TRIAL_FILE_SCHEMA,
    TRIAL_SCHEMA,
    StoreError,
    StoreWarning,
    check_name,
    failed_mask,
    ok_mask,
    trial_ok,
    trial_succeeded,
)
from autoloss_ray.store.trial_rows import reward_from_metrics, trial_row

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
    "ExperimentStore",
    "PolicyWriter",
    "StoreError",
    "StoreWarning",
    "check_name",
    "check_trial_value",
    "failed_mask",
    "normalize_policy_row",
    "normalize_trial_row",
    "ok_mask",
    "reward_from_metrics",
    "trial_ok",
    "trial_row",
    "trial_succeeded",
]
