"""The searcher hook: a picklable ``step_callback`` that writes each search step's policy row.

A searcher (``searchers.PPO2Searcher``, ...) calls it with its step record in the Tune driver;
it holds only the store root and the experiment name, so it pickles with the searcher.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from autoloss_ray.store.experiment_store import ExperimentStore
from autoloss_ray.store.schema import POLICY_SCHEMA, check_name

__all__ = ["PolicyWriter"]


class PolicyWriter:
    """Picklable ``callable(record)`` for a searcher's ``step_callback``: writes the policy row.

    ``record`` is the searcher's step record (``step``, ``mu``, ``sigma``, ``rewards``,
    ``mean_reward``, optional ``best_mu``, ``best_reward``, ``thetas``, ``mu_next``,
    ``trial_ids``, ``failed``, ``searcher``, ``metric``, ``clip_fraction``, ``approx_kl``);
    numpy values are fine; keys the store has no column for (``configs``, ``values``,
    ``names``, ...) go to ``extra_json``. Holds only the root string and the experiment name.
    """

    def __init__(self, store_uri: str | os.PathLike[str], experiment: str,
                 *, searcher: str | None = None) -> None:
        self.store_uri = os.fspath(store_uri)
        self.experiment = check_name(experiment, "experiment")
        self.searcher = searcher
        self._store: ExperimentStore | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"store_uri": self.store_uri, "experiment": self.experiment,
                "searcher": self.searcher}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._store = None

    @property
    def store(self) -> ExperimentStore:
        if self._store is None:
            self._store = ExperimentStore(self.store_uri)
        return self._store

    def __call__(self, record: Mapping[str, Any]) -> str:
        known = set(POLICY_SCHEMA.names) - {"experiment", "extra_json", "finished_at",
                                            "max_reward"}
        row: dict[str, Any] = {k: record[k] for k in known if k in record}
        sigma = row.get("sigma")
        if isinstance(sigma, (list, tuple, np.ndarray)):  # a per-dimension sigma
            arr = np.asarray(sigma, dtype=np.float64).ravel()
            row["sigma"] = float(arr[0]) if arr.size and np.all(arr == arr[0]) else None
            extra_sigma = arr.tolist()
        else:
            extra_sigma = None
        if row.get("searcher") is None and self.searcher is not None:
            row["searcher"] = self.searcher
        extra = {k: v for k, v in record.items()
                 if k not in known and k not in ("experiment", "finished_at")}
        if extra_sigma is not None:
            extra["sigma_per_dim"] = extra_sigma
        if extra:
            row["extra"] = extra
        row["experiment"] = self.experiment
        return self.store.write_policy(row)
