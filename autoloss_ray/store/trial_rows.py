"""The store row of one finished trial, built from its config and its last reported result.

Pure (no I/O, no ray): ``trainables.StoreCallback`` only translates a Ray ``Trial`` (its id,
its error text, its last result) into a call of :func:`trial_row`. Every column is checked
with the store's own check (:func:`autoloss_ray.store.records.check_trial_value`); a value
that does not fit becomes null and is named in ``extra_json`` (``store_error``, ``refused``),
so the row always writes and the trial is never lost.

From ``config``: ``theta``, ``search_step``, ``search_sample``, ``metric``,
``parameterization``, ``seed``, ``dataset``, ``model``, ``loss_label`` or ``loss`` -> the
``loss`` column (the row label of the report's Table 2; a retrain with only a theta gets
``"surrogate:<metric>"``), ``iterations``. From ``result``: ``reward`` (else the sum of the
metrics the metric spec names), the six metrics, ``status``, ``error``, ``train_seconds``,
``eval_seconds``, ``time_total_s``, ``node`` (or ``hostname``), ``node_id``, ``node_ip``,
``device``, ``checkpoint``, ``eval_protocol``, ``kind``; ``stopped_early``: the last result
says ``done=False``, i.e. a scheduler stopped the trial before it finished (Ray's
``add_evaluated_trials`` calls it "pruned"). Other result values go to ``extra_json`` and the
whole config to ``config_json``. A failed trial gets ``status="failed"`` and its error text.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from autoloss_ray.store.records import TRIAL_VALUE_COLUMNS, check_trial_value
from autoloss_ray.store.schema import (
    EVAL_PROTOCOLS,
    KINDS,
    METRIC_COLUMNS,
    STATUSES,
    StoreError,
)
from autoloss_ray.vocabulary import parse_metric

__all__ = ["reward_from_metrics", "trial_row"]

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


# Reported values are read leniently (anything float() takes is a number, anything else is
# None); whether the result fits its column is then the store's check alone.
def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _int(v: Any) -> int | None:
    f = _num(v)
    return int(f) if f is not None and math.isfinite(f) and f == int(f) else None


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def reward_from_metrics(result: Mapping[str, Any], metric_spec: str | None) -> float | None:
    """The sum of the metrics ``metric_spec`` names (``"miou+biou"``) as ``result`` reports
    them, or None when the spec is empty or a term is missing/not a number."""
    if not metric_spec:
        return None
    try:
        terms = parse_metric(str(metric_spec))
    except ValueError:
        return None
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
    """The store row of one trial (see the module docstring; no I/O).

    ``metric_spec``: the searched metric, used when ``config`` has no ``metric`` and to
    compute ``reward`` when ``result`` lacks it. ``failed``: the trial raised (``error`` is
    its text). ``stopped_early``: a scheduler or stopper ended it. ``experiment``,
    ``trial_id`` and ``kind`` are checked when the row is written.
    """
    config = dict(config or {})
    result = dict(result or {})
    row: dict[str, Any] = {
        "experiment": experiment,
        "trial_id": trial_id,
        "kind": result.get("kind") if result.get("kind") in KINDS else kind,
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
        reward = reward_from_metrics(result, row["metric"] or metric_spec)
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
        # a proxy trial's last result is a rung report only when a scheduler stopped it there
        or result.get("rung_iteration") is not None
    )
    if failed:
        row["status"] = "failed"
        row["error"] = error or _str(result.get("error")) or "trial errored"
    else:
        status = result.get("status")
        if status not in STATUSES:
            status = "ok" if reward is not None and math.isfinite(reward) else "nan"
        row["status"] = status
        row["error"] = _str(result.get("error"))
    extra = {
        k: v for k, v in result.items() if k not in _TUNE_KEYS and k not in _MAPPED_RESULT_KEYS
    }
    # each value against its column, with the store's own check: a value that does not fit
    # (a seed beyond 64 bits, a negative step) becomes null and is named in extra_json
    problems, refused = [], {}
    for k in TRIAL_VALUE_COLUMNS:
        if k in row:
            try:
                row[k] = check_trial_value(k, row[k])
            except StoreError as e:
                problems.append(str(e))
                refused[k] = repr(row[k])
                row[k] = None
    if problems:
        extra["store_error"] = "; ".join(problems)
        extra["refused"] = refused
    if extra:
        row["extra"] = extra
    row["config"] = config
    row["finished_at"] = time.time()
    return row
