"""Validation and coercion of store rows: a trial or policy row -> plain Python values.

:func:`normalize_trial_row` / :func:`normalize_policy_row` check every column against the
schema (:mod:`autoloss_ray.store.schema`) and return the values the Parquet file holds;
:func:`check_trial_value` is the same check for one trial column (the row builder of
:mod:`autoloss_ray.store.trial_rows` uses it). Errors are :class:`StoreError` naming the
column. No I/O.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from autoloss_ray.store.schema import (
    EVAL_PROTOCOLS,
    KINDS,
    METRIC_COLUMNS,
    POLICY_SCHEMA,
    STATUSES,
    TRIAL_SCHEMA,
    StoreError,
    check_name,
)

__all__ = ["TRIAL_VALUE_COLUMNS", "check_trial_value", "normalize_policy_row", "normalize_trial_row", "row_table"]


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, (float, np.floating))) and not isinstance(
        v, (bool, np.bool_)
    )


def _to_str(v: Any, key: str, *, required: bool = False) -> str | None:
    if v is None and not required:
        return None
    if not isinstance(v, str) or (required and not v):
        raise StoreError(f"column {key!r} must be a {'non-empty ' if required else ''}string"
                         f"{'' if required else ' or None'}, got {type(v).__name__} {v!r:.80}")
    return v


def _to_int(v: Any, key: str, *, required: bool = False, nonneg: bool = False) -> int | None:
    if v is None and not required:
        return None
    if not _is_int(v):
        raise StoreError(f"column {key!r} must be an integer{'' if required else ' or None'}, "
                         f"got {type(v).__name__} {v!r:.80}")
    if nonneg and int(v) < 0:
        raise StoreError(f"column {key!r} must be >= 0, got {int(v)}")
    if not -(2**63) <= int(v) < 2**63:
        raise StoreError(f"column {key!r} must fit in 64 bits, got {int(v)}")
    return int(v)


def _to_float(v: Any, key: str) -> float | None:
    if v is None:
        return None
    if not _is_num(v):
        raise StoreError(f"column {key!r} must be a number (float, NaN allowed) or None, got "
                         f"{type(v).__name__} {v!r:.80}")
    return float(v)


def _to_floats(v: Any, key: str, *, required: bool = False) -> list[float] | None:
    if v is None and not required:
        return None
    if isinstance(v, np.ndarray):
        if v.ndim != 1 or not (np.issubdtype(v.dtype, np.number) and v.dtype != np.bool_):
            raise StoreError(f"column {key!r} must be a 1-D numeric array, got shape "
                             f"{v.shape} dtype {v.dtype}")
        return [float(x) for x in v]
    if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, Sequence):
        raise StoreError(f"column {key!r} must be a list of numbers"
                         f"{'' if required else ' or None'}, got {type(v).__name__} {v!r:.80}")
    out = []
    for i, x in enumerate(v):
        if not _is_num(x):
            raise StoreError(f"column {key!r}[{i}] must be a number, got "
                             f"{type(x).__name__} {x!r:.80}")
        out.append(float(x))
    return out


def _to_matrix(v: Any, key: str) -> list[list[float]] | None:
    if v is None:
        return None
    if isinstance(v, np.ndarray):
        if v.ndim != 2:
            raise StoreError(f"column {key!r} must be 2-D [M, D], got shape {v.shape}")
        v = list(v)
    if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, Sequence):
        raise StoreError(f"column {key!r} must be a list of lists of numbers or None, got "
                         f"{type(v).__name__}")
    return [_to_floats(r, f"{key}[{i}]", required=True) for i, r in enumerate(v)]


def _to_strs(v: Any, key: str) -> list[str | None] | None:
    if v is None:
        return None
    if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, (Sequence, np.ndarray)):
        raise StoreError(f"column {key!r} must be a list of strings or None, got "
                         f"{type(v).__name__}")
    for i, x in enumerate(v):
        if x is not None and not isinstance(x, str):
            raise StoreError(f"column {key!r}[{i}] must be a string or None, got "
                             f"{type(x).__name__} {x!r:.80}")
    return list(v)


def _to_bools(v: Any, key: str) -> list[bool] | None:
    if v is None:
        return None
    if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, (Sequence, np.ndarray)):
        raise StoreError(f"column {key!r} must be a list of booleans or None, got "
                         f"{type(v).__name__}")
    for i, x in enumerate(v):
        if not isinstance(x, (bool, np.bool_)):
            raise StoreError(f"column {key!r}[{i}] must be a bool, got {type(x).__name__}")
    return [bool(x) for x in v]


def _to_bool(v: Any, key: str) -> bool | None:
    if v is None:
        return None
    if not isinstance(v, (bool, np.bool_)):
        raise StoreError(f"column {key!r} must be a bool or None, got {type(v).__name__}")
    return bool(v)


def _to_json(v: Any, key: str) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        try:
            json.loads(v)
        except ValueError as e:
            raise StoreError(f"column {key!r} must hold valid JSON text: {e}") from None
        return v
    if isinstance(v, Mapping):
        return json.dumps(_jsonable(v), sort_keys=True, allow_nan=True)
    raise StoreError(f"column {key!r} must be a JSON string or a mapping, got "
                     f"{type(v).__name__}")


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return repr(v)


def _to_time(v: Any, key: str) -> _dt.datetime:
    if v is None:
        return _dt.datetime.now(_dt.UTC)
    if _is_num(v) and not isinstance(v, (bool, np.bool_)):
        if not math.isfinite(float(v)):
            raise StoreError(f"column {key!r} must be finite epoch seconds, got {v!r}")
        return _dt.datetime.fromtimestamp(float(v), tz=_dt.UTC)
    if isinstance(v, _dt.datetime):  # pandas.Timestamp is a datetime subclass
        return v.replace(tzinfo=_dt.UTC) if v.tzinfo is None else v
    raise StoreError(f"column {key!r} must be a datetime, epoch seconds or None, got "
                     f"{type(v).__name__} {v!r:.80}")


def _to_protocol(v: Any, key: str) -> str | None:
    if v is not None and v not in EVAL_PROTOCOLS:
        raise StoreError(
            f"column {key!r} must be one of {EVAL_PROTOCOLS} or None, got {v!r}"
        )
    return v


def _check_keys(row: Any, allowed: frozenset[str], what: str) -> None:
    if not isinstance(row, Mapping):
        raise StoreError(f"a {what} row must be a mapping, got {type(row).__name__}")
    unknown = sorted(set(row) - allowed)
    if unknown:
        raise StoreError(
            f"unknown {what} column(s) {unknown}; allowed: {sorted(allowed)} (put other "
            "values in 'extra', a mapping)"
        )


_TRIAL_STR = ("metric", "parameterization", "loss", "error", "node", "device", "dataset",
              "model", "checkpoint", "node_id", "node_ip")
_TRIAL_FLOAT = ("reward", *METRIC_COLUMNS, "train_seconds", "eval_seconds", "total_seconds")
_TRIAL_KEYS = frozenset(TRIAL_SCHEMA.names) | {"extra", "config"}
# the optional value columns of a trial row and the check of each (None is always allowed)
_TRIAL_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "step": partial(_to_int, nonneg=True),
    "sample": partial(_to_int, nonneg=True),
    "seed": _to_int,
    "iterations": _to_int,
    **dict.fromkeys(_TRIAL_STR, _to_str),
    **dict.fromkeys(_TRIAL_FLOAT, _to_float),
    "theta": _to_floats,
    "stopped_early": _to_bool,
    "eval_protocol": _to_protocol,
}
TRIAL_VALUE_COLUMNS = tuple(_TRIAL_CHECKS)  # the columns :func:`check_trial_value` knows


def check_trial_value(key: str, value: Any) -> Any:
    """``value`` as trial column ``key`` holds it (plain Python; None stays None).

    ``key`` is one of the optional value columns (``step``, ``sample``, ``seed``,
    ``iterations``, the string and float columns, ``theta``, ``stopped_early``,
    ``eval_protocol``). Raises :class:`StoreError` naming the column when the value does not
    fit; ``KeyError`` for another ``key``.
    """
    return _TRIAL_CHECKS[key](value, key)


def normalize_trial_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a trial row and return it with plain Python values (no I/O).

    Required: ``experiment``, ``trial_id`` (path-safe names) and ``status`` (ok/failed/nan).
    Everything else is optional (None -> null). ``config`` (a mapping) may stand in for
    ``config_json`` and ``extra`` (a mapping) for ``extra_json``. Unknown keys, wrong types and
    bad values raise :class:`StoreError` naming the column.
    """
    _check_keys(row, _TRIAL_KEYS, "trial")
    out: dict[str, Any] = {
        "experiment": check_name(row.get("experiment"), "experiment"),
        "trial_id": check_name(row.get("trial_id"), "trial_id"),
    }
    kind = row.get("kind", "search")
    if kind not in KINDS:
        raise StoreError(f"column 'kind' must be one of {KINDS}, got {kind!r}")
    out["kind"] = kind
    status = row.get("status")
    if status not in STATUSES:
        raise StoreError(f"column 'status' must be one of {STATUSES}, got {status!r}")
    out["status"] = status
    for k, check in _TRIAL_CHECKS.items():
        out[k] = check(row.get(k), k)
    if "config" in row and "config_json" in row:
        raise StoreError("give either 'config' (a mapping) or 'config_json' (text), not both")
    if "extra" in row and "extra_json" in row:
        raise StoreError("give either 'extra' (a mapping) or 'extra_json' (text), not both")
    out["config_json"] = _to_json(row.get("config", row.get("config_json")), "config_json")
    out["extra_json"] = _to_json(row.get("extra", row.get("extra_json")), "extra_json")
    out["finished_at"] = _to_time(row.get("finished_at"), "finished_at")
    return out


_POLICY_KEYS = frozenset(POLICY_SCHEMA.names) | {"extra"}


def normalize_policy_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a policy row (see :data:`POLICY_SCHEMA`). ``max_reward`` is always the
    largest non-NaN reward of the step; ``mean_reward`` defaults to their mean."""
    _check_keys(row, _POLICY_KEYS, "policy")
    out: dict[str, Any] = {
        "experiment": check_name(row.get("experiment"), "experiment"),
        "step": _to_int(row.get("step"), "step", required=True, nonneg=True),
        "searcher": _to_str(row.get("searcher"), "searcher"),
        "metric": _to_str(row.get("metric"), "metric"),
        "mu": _to_floats(row.get("mu"), "mu", required=True),
        "sigma": _to_float(row.get("sigma"), "sigma"),
        "rewards": _to_floats(row.get("rewards"), "rewards", required=True),
        "best_reward": _to_float(row.get("best_reward"), "best_reward"),
        "best_mu": _to_floats(row.get("best_mu"), "best_mu"),
        "mu_next": _to_floats(row.get("mu_next"), "mu_next"),
        "thetas": _to_matrix(row.get("thetas"), "thetas"),
        "trial_ids": _to_strs(row.get("trial_ids"), "trial_ids"),
        "failed": _to_bools(row.get("failed"), "failed"),
        "clip_fraction": _to_float(row.get("clip_fraction"), "clip_fraction"),
        "approx_kl": _to_float(row.get("approx_kl"), "approx_kl"),
    }
    finite = [r for r in out["rewards"] if not math.isnan(r)]
    mean = _to_float(row.get("mean_reward"), "mean_reward")
    out["mean_reward"] = mean if mean is not None else (
        float(np.mean(finite)) if finite else float("nan"))
    if row.get("max_reward") is not None:
        raise StoreError("column 'max_reward' is computed from 'rewards'; do not give it")
    out["max_reward"] = max(finite) if finite else float("nan")
    if "extra" in row and "extra_json" in row:
        raise StoreError("give either 'extra' (a mapping) or 'extra_json' (text), not both")
    out["extra_json"] = _to_json(row.get("extra", row.get("extra_json")), "extra_json")
    out["finished_at"] = _to_time(row.get("finished_at"), "finished_at")
    return out


def row_table(row: Mapping[str, Any], file_schema: pa.Schema) -> pa.Table:
    """One normalized row as a one-row table of ``file_schema`` (what one file holds)."""
    try:
        return pa.Table.from_pylist([{k: row[k] for k in file_schema.names}], schema=file_schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:  # pragma: no cover - guarded above
        raise StoreError(f"row does not fit the store schema: {e}") from None


