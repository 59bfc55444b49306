"""Ray Tune callback that writes every finished or errored trial into the Parquet store.

It runs in the Tune driver, so worker nodes need no shared file system: the driver writes one
Parquet file per trial (atomically) under ``<store>/trials/experiment=<name>/``.

    from trainables.store_callback import StoreCallback
    tune.RunConfig(callbacks=[StoreCallback(store_root, experiment, metric_spec)])

Rows are built from ``trial.config`` (``theta``, ``search_step``, ``search_sample``,
``metric``, ``parameterization``, ``seed``, ``dataset``, ``model``, ``loss_label`` or
``loss`` -> the ``loss`` column (the row label of the report's Table 2; a retrain with only a
theta gets ``"surrogate:<metric>"``), ``iterations``) and ``trial.last_result`` (``reward``, the six metrics, ``status``,
``error``, ``train_seconds``, ``eval_seconds``, ``node``, ``node_id``, ``node_ip``, ``device``,
``checkpoint``, ``eval_protocol``;
``stopped_early``: the last result says ``done=False``, i.e. a scheduler stopped the trial
before it finished, as Ray's ``add_evaluated_trials`` calls it "pruned"); other
result values go to ``extra_json`` and the whole config to ``config_json``. An errored trial
gets ``status="failed"`` and the text of its error.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from ray import tune

from autoloss_ray.store import (
    EVAL_PROTOCOLS,
    METRIC_COLUMNS,
    ExperimentStore,
    StoreError,
    check_name,
)

__all__ = ["StoreCallback", "trial_row"]

logger = logging.getLogger(__name__)

# Bookkeeping keys Tune adds to every result; not worth a column or extra_json.
_TUNE_KEYS = {
    "config", "done", "training_iteration", "trial_id", "date", "timestamp", "pid",
    "time_this_iter_s", "time_since_restore", "iterations_since_restore", "experiment_tag",
    "checkpoint_dir_name", "should_checkpoint",
}
_MAPPED_RESULT_KEYS = {
    "reward", *METRIC_COLUMNS, "status", "error", "train_seconds", "eval_seconds", "node",
    "device", "checkpoint", "iterations", "time_total_s", "hostname", "eval_protocol",
    "node_id", "node_ip",
}
_MAX_ERROR_CHARS = 8000


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _int(v: Any) -> int | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) and f == int(f) else None


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _error_text(trial: Any) -> str:
    """The error recorded for ``trial`` (its last failure), or a placeholder."""
    text = None
    try:
        path = getattr(trial, "error_file", None)
        if path:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
    except OSError:
        text = None
    if not text:
        try:
            text = trial.get_error()
        except Exception:  # noqa: BLE001 - storage may be gone; the row matters more
            text = None
    if not text:
        text = str(getattr(trial, "error_msg", "") or "trial errored (no error text recorded)")
    # keep the last failure only (the error file appends one block per failure)
    marker = text.rfind("Failure # ")
    if marker > 0:
        text = text[marker:]
    return text.strip()[-_MAX_ERROR_CHARS:]


def _reward_from_metrics(result: Mapping[str, Any], metric_spec: str | None) -> float | None:
    if not metric_spec:
        return None
    terms = [t.strip() for t in str(metric_spec).split("+")]
    values = [_num(result.get(t)) for t in terms]
    if any(v is None for v in values):
        return None
    return float(sum(values))  # type: ignore[arg-type]


def trial_row(
    experiment: str,
    trial_id: str,
    config: Mapping[str, Any] | None,
    result: Mapping[str, Any] | None,
    *,
    metric_spec: str | None = None,
    failed: bool = False,
    error: str | None = None,
    kind: str = "search",
    stopped_early: bool = False,
) -> dict[str, Any]:
    """The store row of one trial (no I/O; pure, so it is testable without Ray)."""
    config = dict(config or {})
    result = dict(result or {})
    row: dict[str, Any] = {
        "experiment": experiment,
        "trial_id": trial_id,
        "kind": result.get("kind") if result.get("kind") in ("search", "retrain", "evaluate")
        else kind,
        "step": _int(config.get("search_step")),
        "sample": _int(config.get("search_sample")),
        "metric": _str(config.get("metric", metric_spec)),
        "parameterization": _str(config.get("parameterization")),
        "loss": _str(config.get("loss_label") or config.get("loss")),
        "seed": _int(config.get("seed", result.get("seed"))),
        "dataset": _str(config.get("dataset")),
        "model": _str(config.get("model")),
        "iterations": _int(result.get("iterations", config.get("iterations"))),
    }
    if row["loss"] is None and row["kind"] != "search" and config.get("theta") is not None:
        row["loss"] = f"surrogate:{row['metric']}"  # a retrain with a given theta
    theta = config.get("theta")
    if theta is not None:
        try:
            row["theta"] = [float(v) for v in theta]
        except (TypeError, ValueError):
            row["theta"] = None
    for k in METRIC_COLUMNS:
        row[k] = _num(result.get(k))
    reward = _num(result.get("reward"))
    if reward is None:
        reward = _reward_from_metrics(result, row["metric"] or metric_spec)
    row["reward"] = reward
    row["train_seconds"] = _num(result.get("train_seconds"))
    row["eval_seconds"] = _num(result.get("eval_seconds"))
    total = _num(result.get("time_total_s"))
    if total is None and row["train_seconds"] is not None:
        total = row["train_seconds"] + (row["eval_seconds"] or 0.0)
    row["total_seconds"] = total
    row["node"] = _str(result.get("node", result.get("hostname")))
    row["node_id"] = _str(result.get("node_id"))
    row["node_ip"] = _str(result.get("node_ip"))
    row["device"] = _str(result.get("device"))
    ckpt = result.get("checkpoint")
    row["checkpoint"] = ckpt if isinstance(ckpt, str) else None
    protocol = result.get("eval_protocol")
    row["eval_protocol"] = protocol if protocol in EVAL_PROTOCOLS else None

    # Tune sets done=False in every intermediate result: a trial that completes (not errored)
    # with done=False was stopped by a scheduler while paused/pending (StoreCallback also
    # passes stopped_early=True when it saw the STOP decision); its values are the last
    # reported ones
    row["stopped_early"] = (not failed) and (
        stopped_early or ("done" in result and not bool(result["done"]))
    )
    if failed:
        row["status"] = "failed"
        row["error"] = error or _str(result.get("error")) or "trial errored"
    else:
        status = result.get("status")
        if status not in ("ok", "failed", "nan"):
            status = "ok" if reward is not None and math.isfinite(reward) else "nan"
        row["status"] = status
        row["error"] = _str(result.get("error"))
    extra = {
        k: v for k, v in result.items() if k not in _TUNE_KEYS and k not in _MAPPED_RESULT_KEYS
    }
    if extra:
        row["extra"] = extra
    row["config"] = config
    row["finished_at"] = time.time()
    return row


class StoreCallback(tune.Callback):
    """Write a store row for every trial that completes or errors (runs in the driver).

    Args:
        store_root: store path or URI (an :class:`ExperimentStore` root).
        experiment: experiment name (the partition the rows go to).
        metric_spec: the searched metric (e.g. ``"miou"``), used when a config has no
            ``metric`` key and to compute ``reward`` when a result lacks it.
        kind: ``"search"`` (default) or ``"retrain"`` / ``"evaluate"`` for those runs.
        retries: attempts per write before the error is raised (transient I/O on URIs).
    """

    def __init__(
        self,
        store_root: str,
        experiment: str,
        metric_spec: str | None = None,
        *,
        kind: str = "search",
        retries: int = 3,
    ) -> None:
        self.store_root = str(store_root)
        self.experiment = check_name(experiment, "experiment")
        self.metric_spec = metric_spec
        self.kind = kind
        self.retries = max(1, int(retries))
        self._store: ExperimentStore | None = None
        self._stopped: set[str] = set()  # trial ids a scheduler/stopper ended
        self.written: int = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_store"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_stopped", set())  # pickled before the early-stop flag

    @property
    def store(self) -> ExperimentStore:
        if self._store is None:
            self._store = ExperimentStore(self.store_root)
        return self._store

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        # Tune shows callbacks the result on which a scheduler or stopper decides STOP with
        # done=True; a trial's natural end arrives without a new result here.
        if result.get("done"):
            self._stopped.add(str(trial.trial_id))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial, failed=True)

    def _write(self, trial: Any, *, failed: bool) -> None:
        row = trial_row(
            self.experiment,
            str(trial.trial_id),
            getattr(trial, "config", None),
            getattr(trial, "last_result", None),
            metric_spec=self.metric_spec,
            failed=failed,
            error=_error_text(trial) if failed else None,
            kind=self.kind,
            stopped_early=str(trial.trial_id) in self._stopped,
        )
        self._stopped.discard(str(trial.trial_id))
        try:
            self._write_with_retries(row)
        except (StoreError, TypeError, OverflowError, pa.ArrowException) as e:
            # A value the schema refuses must not lose the trial: keep what is certain.
            logger.warning("store refused trial %s (%s); writing a reduced row", row["trial_id"],
                           e)
            minimal = {k: row[k] for k in ("experiment", "trial_id", "kind", "status",
                                           "error", "finished_at")}
            minimal["extra"] = {"store_error": str(e),
                                "row": {k: repr(v) for k, v in row.items()}}
            # keep what a resumed search replays (step, sample, theta, reward) if it is valid
            search_keys = {k: row.get(k) for k in ("step", "sample", "theta", "reward",
                                                   "metric", "parameterization")}
            try:
                self._write_with_retries({**minimal, **search_keys})
            except (StoreError, TypeError, OverflowError, pa.ArrowException):
                self._write_with_retries(minimal)
        self.written += 1

    def _write_with_retries(self, row: dict[str, Any]) -> None:
        for attempt in range(self.retries):
            try:
                self.store.write_trial(row)
                return
            except OSError:
                if attempt + 1 == self.retries:
                    raise
                time.sleep(0.5 * 2**attempt)
