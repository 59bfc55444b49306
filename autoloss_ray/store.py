"""Parquet experiment store: every finished trial and every policy step, one file each.

Layout (a hive-partitioned Parquet dataset per table; ``root`` is a local directory or a
pyarrow filesystem URI such as ``s3://bucket/prefix`` or ``file:///abs/path``; an
S3-compatible server other than AWS goes in the URI's query, as pyarrow reads it:
``s3://bucket/prefix?endpoint_override=host:9000&scheme=http``; credentials never do: they
come from the environment, ``~/.aws`` or the instance role, as for any AWS SDK client)::

    <root>/trials/experiment=<name>/<trial_id>.parquet        one row per finished trial
    <root>/policy/experiment=<name>/step-<k:06d>.parquet      one row per search step
    <root>/searches/<name>.json                               options the search ran with

The ``experiment`` column lives in the directory name (hive partitioning), not inside the
files, so ``pandas.read_parquet(f"{root}/trials")``, ``pyarrow.dataset.dataset(...,
partitioning="hive")`` and DuckDB's ``read_parquet('<root>/trials/*/*.parquet',
hive_partitioning=true)`` all return it as a column with no project code.
:data:`TRIAL_SCHEMA` / :data:`POLICY_SCHEMA` are the logical schemas (experiment first);
:data:`TRIAL_FILE_SCHEMA` / :data:`POLICY_FILE_SCHEMA` are what each file holds.

Atomicity: a file is first written in full to a hidden temporary name in the same directory
(``.<name>.<uuid>.tmp``; the leading dot makes pyarrow/pandas skip it and it does not match
``*.parquet``), flushed and fsynced, then renamed onto its final name (``os.replace``, atomic on
POSIX). A writer killed mid-write leaves at most a hidden temp file, never a partial
``.parquet``; :meth:`ExperimentStore.cleanup_temp` removes stale ones. On object stores
(``s3``, ``gcs``; no atomic rename) the object is uploaded directly under its final key: an
object PUT only becomes visible once complete, which gives the same guarantee. Other pyarrow
filesystems use temp + ``FileSystem.move``.

Rewriting a trial id (or a policy step) replaces its file: writes are idempotent, so a resumed
search that reports a trial twice still holds one row for it. Nothing here imports ray.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import re
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = [
    "EVAL_PROTOCOLS",
    "METRIC_COLUMNS",
    "STATUSES",
    "TRIAL_SCHEMA",
    "TRIAL_FILE_SCHEMA",
    "POLICY_SCHEMA",
    "POLICY_FILE_SCHEMA",
    "ExperimentStore",
    "PolicyWriter",
    "StoreError",
    "StoreWarning",
    "check_name",
    "trial_succeeded",
]

METRIC_COLUMNS = ("miou", "fwiou", "biou", "bf1", "macc", "gacc")
STATUSES = ("ok", "failed", "nan")
# how the row's metrics were scored: labels at their native resolution, or image and label
# resized to the training size (rows of older stores have null: they are "train_size")
EVAL_PROTOCOLS = ("native", "train_size")
KINDS = ("search", "retrain", "evaluate")

_TS = pa.timestamp("us", tz="UTC")
_F64_LIST = pa.list_(pa.float64())

# ----------------------------------------------------------------------------- schemas
# The single place where the store's columns are defined. Add columns only at the end and
# only nullable: readers pass these schemas explicitly, so older files read with nulls.
TRIAL_SCHEMA = pa.schema(
    [
        pa.field("experiment", pa.string(), nullable=False),
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # search | retrain | evaluate
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
    ]
)

PARTITION = "experiment"
TRIAL_FILE_SCHEMA = pa.schema([f for f in TRIAL_SCHEMA if f.name != PARTITION])
POLICY_FILE_SCHEMA = pa.schema([f for f in POLICY_SCHEMA if f.name != PARTITION])
_PARTITIONING = ds.partitioning(pa.schema([(PARTITION, pa.string())]), flavor="hive")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_OBJECT_STORES = {"s3", "gcs"}


class StoreWarning(UserWarning):
    """A store file was skipped when reading (unreadable or of another schema)."""


def _skip(path: str, why: str) -> None:
    warnings.warn(f"store: skipping {path}: {why}", StoreWarning, stacklevel=4)


class StoreError(ValueError):
    """A row or a store location that the store refuses (raised before anything is written)."""


def check_name(value: Any, what: str) -> str:
    """``value`` as a path-safe name (letters, digits, ``_ . -``; no leading dot)."""
    if not isinstance(value, str) or not _NAME_RE.match(value) or value.endswith(".tmp"):
        raise StoreError(
            f"{what} must be a non-empty string of letters, digits and '_.-' (not starting "
            f"with '.', '_' or '-', at most 200 characters), got {value!r}"
        )
    return value


# ----------------------------------------------------------------------------- validation
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
        return _dt.datetime.now(_dt.timezone.utc)
    if _is_num(v) and not isinstance(v, (bool, np.bool_)):
        if not math.isfinite(float(v)):
            raise StoreError(f"column {key!r} must be finite epoch seconds, got {v!r}")
        return _dt.datetime.fromtimestamp(float(v), tz=_dt.timezone.utc)
    if isinstance(v, _dt.datetime):  # pandas.Timestamp is a datetime subclass
        return v.replace(tzinfo=_dt.timezone.utc) if v.tzinfo is None else v
    raise StoreError(f"column {key!r} must be a datetime, epoch seconds or None, got "
                     f"{type(v).__name__} {v!r:.80}")


_TRIAL_STR = ("metric", "parameterization", "loss", "error", "node", "device", "dataset",
              "model", "checkpoint", "node_id", "node_ip")
_TRIAL_FLOAT = ("reward", *METRIC_COLUMNS, "train_seconds", "eval_seconds", "total_seconds")
_TRIAL_KEYS = frozenset(TRIAL_SCHEMA.names) | {"extra", "config"}


def normalize_trial_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a trial row and return it with plain Python values (no I/O).

    Required: ``experiment``, ``trial_id`` (path-safe names) and ``status`` (ok/failed/nan).
    Everything else is optional (None -> null). ``config`` (a mapping) may stand in for
    ``config_json`` and ``extra`` (a mapping) for ``extra_json``. Unknown keys, wrong types and
    bad values raise :class:`StoreError` naming the column.
    """
    if not isinstance(row, Mapping):
        raise StoreError(f"a trial row must be a mapping, got {type(row).__name__}")
    unknown = sorted(set(row) - _TRIAL_KEYS)
    if unknown:
        raise StoreError(
            f"unknown trial column(s) {unknown}; allowed: {sorted(_TRIAL_KEYS)} (put other "
            "values in 'extra', a mapping)"
        )
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
    for k in ("step", "sample"):
        out[k] = _to_int(row.get(k), k, nonneg=True)
    for k in ("seed", "iterations"):
        out[k] = _to_int(row.get(k), k)
    for k in _TRIAL_STR:
        out[k] = _to_str(row.get(k), k)
    for k in _TRIAL_FLOAT:
        out[k] = _to_float(row.get(k), k)
    out["theta"] = _to_floats(row.get("theta"), "theta")
    if "config" in row and "config_json" in row:
        raise StoreError("give either 'config' (a mapping) or 'config_json' (text), not both")
    if "extra" in row and "extra_json" in row:
        raise StoreError("give either 'extra' (a mapping) or 'extra_json' (text), not both")
    out["config_json"] = _to_json(row.get("config", row.get("config_json")), "config_json")
    out["extra_json"] = _to_json(row.get("extra", row.get("extra_json")), "extra_json")
    out["finished_at"] = _to_time(row.get("finished_at"), "finished_at")
    out["stopped_early"] = _to_bool(row.get("stopped_early"), "stopped_early")
    protocol = row.get("eval_protocol")
    if protocol is not None and protocol not in EVAL_PROTOCOLS:
        raise StoreError(
            f"column 'eval_protocol' must be one of {EVAL_PROTOCOLS} or None, got {protocol!r}"
        )
    out["eval_protocol"] = protocol
    return out


_POLICY_KEYS = frozenset(POLICY_SCHEMA.names) | {"extra"}


def normalize_policy_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a policy row (see :data:`POLICY_SCHEMA`). ``max_reward`` is always the
    largest non-NaN reward of the step; ``mean_reward`` defaults to their mean."""
    if not isinstance(row, Mapping):
        raise StoreError(f"a policy row must be a mapping, got {type(row).__name__}")
    unknown = sorted(set(row) - _POLICY_KEYS)
    if unknown:
        raise StoreError(
            f"unknown policy column(s) {unknown}; allowed: {sorted(_POLICY_KEYS)} (put other "
            "values in 'extra', a mapping)"
        )
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


def _table(row: dict[str, Any], file_schema: pa.Schema) -> pa.Table:
    try:
        return pa.Table.from_pylist([{k: row[k] for k in file_schema.names}], schema=file_schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:  # pragma: no cover - guarded above
        raise StoreError(f"row does not fit the store schema: {e}") from None


def _int_mapper() -> dict:
    import pandas as pd

    return {pa.int64(): pd.Int64Dtype()}


class _LazyMapper:
    """pyarrow int64 -> pandas nullable Int64 (so a missing step stays <NA>, not a float)."""

    def get(self, t: pa.DataType):
        return _int_mapper().get(t)


_INT_MAPPER = _LazyMapper()


def _empty(schema: pa.Schema):
    return schema.empty_table().to_pandas(types_mapper=_INT_MAPPER.get)


# ----------------------------------------------------------------------------- the store
def trial_succeeded(status: Any, reward: Any) -> bool:
    """Whether a stored search trial counts for the searcher: it did not fail and its reward
    is a finite number (otherwise the searcher gave it the failure reward)."""
    try:
        return status != "failed" and reward is not None and math.isfinite(float(reward))
    except (TypeError, ValueError):
        return False


class ExperimentStore:
    """Read and write the Parquet experiment store at ``root`` (see the module docstring).

    ``root``: a local directory (created on first write) or a pyarrow filesystem URI. An
    existing *file* at ``root`` is refused with :class:`StoreError`. The object is cheap and
    picklable (it only keeps ``root``); callables shipped to Ray should still hold the root
    string and build the store where they run (:class:`PolicyWriter` does).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        if isinstance(root, os.PathLike):
            root = os.fspath(root)
        if not isinstance(root, str) or not root:
            raise StoreError(f"store root must be a path or URI string, got {root!r}")
        if "://" in root:
            try:
                fs, path = pafs.FileSystem.from_uri(root)
            except (pa.ArrowInvalid, ValueError, OSError) as e:
                raise StoreError(f"cannot open store URI {root!r}: {e}") from None
            head, sep, query = root.partition("?")
            self.root = head.rstrip("/") + sep + query
        else:
            fs, path = pafs.LocalFileSystem(), str(Path(root).expanduser().resolve())
            self.root = path
        self._fs: pafs.FileSystem = fs
        self._base = path.rstrip("/") or "/"
        self._local = isinstance(fs, pafs.LocalFileSystem)
        info = fs.get_file_info(self._base)
        if info.type == pafs.FileType.File:
            raise StoreError(
                f"store root {root!r} is an existing file; give a directory path (or a URI)"
            )

    # -- pickling: keep only the root (filesystem handles may hold credentials/sessions)
    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"])

    def __repr__(self) -> str:
        return f"ExperimentStore({self.root!r})"

    # -- paths
    @property
    def filesystem(self) -> pafs.FileSystem:
        return self._fs

    def _dir(self, table: str, experiment: str | None = None) -> str:
        d = f"{self._base}/{table}"
        return d if experiment is None else f"{d}/{PARTITION}={experiment}"

    def trial_path(self, experiment: str, trial_id: str) -> str:
        """Path (within :attr:`filesystem`) of a trial's file."""
        directory = self._dir("trials", check_name(experiment, "experiment"))
        return f"{directory}/{check_name(trial_id, 'trial_id')}.parquet"

    def policy_path(self, experiment: str, step: int) -> str:
        directory = self._dir("policy", check_name(experiment, "experiment"))
        return f"{directory}/step-{step:06d}.parquet"

    def _sub_uri(self, table: str) -> str:
        head, sep, query = self.root.partition("?")  # keep ?endpoint_override=... at the end
        return f"{head}/{table}{sep}{query}"

    @property
    def trials_uri(self) -> str:
        """Where the trials dataset lives (give it to pandas.read_parquet / DuckDB)."""
        return self._sub_uri("trials")

    @property
    def policy_uri(self) -> str:
        return self._sub_uri("policy")

    # -- writing
    def write_trial(self, row: Mapping[str, Any]) -> str:
        """Validate ``row`` (see :func:`normalize_trial_row`) and write it atomically as its
        trial's file, replacing an earlier file of the same trial id. Returns the path."""
        norm = normalize_trial_row(row)
        table = _table(norm, TRIAL_FILE_SCHEMA)
        path = self.trial_path(norm["experiment"], norm["trial_id"])
        self._atomic_write(table, path)
        return path

    def write_policy(self, row: Mapping[str, Any]) -> str:
        """Validate ``row`` (see :func:`normalize_policy_row`) and write it atomically as the
        file of its step (replacing an earlier one). Returns the path."""
        norm = normalize_policy_row(row)
        table = _table(norm, POLICY_FILE_SCHEMA)
        path = self.policy_path(norm["experiment"], norm["step"])
        self._atomic_write(table, path)
        return path

    def search_path(self, experiment: str) -> str:
        """Path of the search manifest of ``experiment`` (the options it was started with)."""
        return f"{self._dir('searches')}/{check_name(experiment, 'experiment')}.json"

    def write_search(self, experiment: str, options: Mapping[str, Any]) -> str:
        """Write the search manifest of ``experiment`` atomically (JSON of ``options``).

        ``options`` must be JSON-serialisable (plain values, lists, dicts); a resumed search
        compares its options with it.
        """
        try:
            text = json.dumps({"experiment": check_name(experiment, "experiment"),
                               "options": dict(options)}, sort_keys=True, indent=1)
        except (TypeError, ValueError) as e:
            raise StoreError(f"search options of {experiment!r} are not JSON: {e}") from None
        path = self.search_path(experiment)
        self._atomic_write_bytes(text.encode("utf-8"), path)
        return path

    def read_search(self, experiment: str) -> dict[str, Any] | None:
        """The options ``experiment`` was started with, or None when it has no manifest."""
        path = self.search_path(experiment)
        if self._fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self._fs.open_input_stream(path) as f:
            data = f.read()
        try:
            return dict(json.loads(data.decode("utf-8"))["options"])
        except (ValueError, KeyError, TypeError) as e:
            raise StoreError(f"search manifest {path} is unreadable: {e}") from None

    @contextlib.contextmanager
    def search_lock(self, experiment: str):
        """Hold the advisory lock of ``experiment`` (``searches/<name>.lock``) for a search.

        A second search of the same experiment on this store is refused with
        :class:`StoreError` naming the holder's pid and host. The lock is an ``flock`` on the
        file, which the kernel drops when its holder exits however it exits (kill -9
        included), so a lock file left by a dead process never blocks. Local stores only
        (object stores have no locks; one writer per experiment is then up to the user).
        """
        if not self._local:
            yield None
            return
        import fcntl
        import socket

        path = f"{self._dir('searches')}/{check_name(experiment, 'experiment')}.lock"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "?"
                raise StoreError(
                    f"experiment {experiment!r} is being searched by another process "
                    f"({holder}; lock {path}); wait for it to end or use another --experiment"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except OSError:
                same = False
            if not same:  # the holder removed the file between our open and our flock
                os.close(fd)
                fd = -1
                with self.search_lock(experiment) as again:
                    yield again
                return
            info = f"pid {os.getpid()} on host {socket.gethostname()}"
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
            try:
                yield path
            finally:
                try:
                    os.unlink(path)  # still ours: nobody else can take an flock'd file
                except OSError:
                    pass
        finally:
            if fd >= 0:
                os.close(fd)

    def _atomic_write(self, table: pa.Table, path: str) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self._atomic_write_bytes(sink.getvalue().to_pybytes(), path)

    def _atomic_write_bytes(self, data: bytes, path: str) -> None:
        directory, name = path.rsplit("/", 1)
        tmp = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
        if self._local:
            os.makedirs(directory, exist_ok=True)
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            try:  # make the rename itself durable
                fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:  # pragma: no cover - platforms without directory fsync
                pass
            return
        self._fs.create_dir(directory, recursive=True)
        if self._fs.type_name in _OBJECT_STORES:
            # No atomic rename on object stores, but a PUT is all-or-nothing.
            with self._fs.open_output_stream(path) as out:
                out.write(data)
            return
        with self._fs.open_output_stream(tmp) as out:
            out.write(data)
        self._fs.move(tmp, path)

    # -- reading
    def _read(self, table: str, experiment: str | None, schema: pa.Schema,
              file_schema: pa.Schema, sort: list[str]):
        base = self._dir(table, None if experiment is None else check_name(experiment,
                                                                            "experiment"))
        if self._fs.get_file_info(base).type != pafs.FileType.Directory:
            return _empty(schema)
        files = self._readable_files(base, file_schema)
        if experiment is None:
            tbl = self._read_files(files, base, schema, partitioning=_PARTITIONING)
        else:
            tbl = self._read_files(files, base, file_schema, partitioning=None)
            tbl = tbl.add_column(0, schema.field(PARTITION),
                                 pa.array([experiment] * tbl.num_rows, pa.string()))
        tbl = tbl.select(schema.names)
        if tbl.num_rows:
            tbl = tbl.sort_by([(c, "ascending") for c in sort])
        return tbl.to_pandas(types_mapper=_INT_MAPPER.get)

    def _readable_files(self, base: str, file_schema: pa.Schema) -> list[str]:
        """The data files under ``base`` (as pyarrow's dataset discovery finds them: no
        leading ``.`` or ``_``) whose footer reads and whose schema is this table's: every
        required column present and no column of another type. Others are skipped with a
        :class:`StoreWarning` naming them (a corrupted, truncated or foreign file must not
        block the experiment; a resume re-runs a trial whose file is skipped)."""
        infos = self._fs.get_file_info(pafs.FileSelector(base, recursive=True))
        files = sorted(
            i.path for i in infos
            if i.type == pafs.FileType.File
            and not any(part.startswith((".", "_"))
                        for part in i.path[len(base):].strip("/").split("/"))
        )
        good = []
        for path in files:
            try:
                with self._fs.open_input_file(path) as f:
                    found = pq.ParquetFile(f).schema_arrow
            except Exception as exc:  # noqa: BLE001 - any unreadable footer: skip the file
                _skip(path, f"unreadable ({type(exc).__name__}: {exc})")
                continue
            missing = [fl.name for fl in file_schema
                       if not fl.nullable and fl.name not in found.names]
            wrong = [f"{fl.name} ({found.field(fl.name).type}, expected {fl.type})"
                     for fl in file_schema
                     if fl.name in found.names and found.field(fl.name).type != fl.type]
            if missing or wrong:
                _skip(path, "not a file of this table ("
                      + "; ".join(([f"missing {missing}"] if missing else [])
                                  + ([f"wrong types {wrong}"] if wrong else [])) + ")")
                continue
            good.append(path)
        return good

    def _read_files(self, files: list[str], base: str, schema: pa.Schema,
                    partitioning) -> pa.Table:
        """One table of ``files``; should the whole read fail (a data page corrupted behind a
        sound footer), each file is read on its own and the failing ones are skipped."""
        def read(paths: list[str]) -> pa.Table:
            return ds.dataset(paths, schema=schema, format="parquet", filesystem=self._fs,
                              partitioning=partitioning, partition_base_dir=base).to_table()

        if not files:
            return schema.empty_table()
        try:
            return read(files)
        except (OSError, pa.ArrowException) as exc:
            if len(files) == 1:
                _skip(files[0], f"unreadable ({type(exc).__name__}: {exc})")
                return schema.empty_table()
        parts = []
        for path in files:
            try:
                parts.append(read([path]))
            except (OSError, pa.ArrowException) as exc:
                _skip(path, f"unreadable ({type(exc).__name__}: {exc})")
        return pa.concat_tables(parts) if parts else schema.empty_table()

    def trials(self, experiment: str | None = None):
        """All trial rows (or one experiment's) as a pandas DataFrame with the columns of
        :data:`TRIAL_SCHEMA`, sorted by experiment, step, sample, finish time. Empty (with the
        columns) when nothing was written yet."""
        return self._read("trials", experiment, TRIAL_SCHEMA, TRIAL_FILE_SCHEMA,
                          ["experiment", "step", "sample", "finished_at", "trial_id"])

    def policy(self, experiment: str | None = None):
        """All policy rows (or one experiment's), columns of :data:`POLICY_SCHEMA`, sorted by
        experiment and step."""
        return self._read("policy", experiment, POLICY_SCHEMA, POLICY_FILE_SCHEMA,
                          ["experiment", "step"])

    def experiments(self) -> list[str]:
        """Names of the experiments with trials or policy rows, sorted."""
        names: set[str] = set()
        for table in ("trials", "policy"):
            base = self._dir(table)
            if self._fs.get_file_info(base).type != pafs.FileType.Directory:
                continue
            for info in self._fs.get_file_info(pafs.FileSelector(base)):
                stem = info.base_name
                if info.type == pafs.FileType.Directory and stem.startswith(PARTITION + "="):
                    names.add(stem[len(PARTITION) + 1:])
        return sorted(names)

    def cleanup_temp(self, *, older_than_s: float = 3600.0) -> list[str]:
        """Delete temp files left by killed writers (older than ``older_than_s``); returns
        their paths. Readers never see them, so this is only housekeeping."""
        removed = []
        now = time.time()
        for table in ("trials", "policy", "searches"):
            base = self._dir(table)
            if self._fs.get_file_info(base).type != pafs.FileType.Directory:
                continue
            for info in self._fs.get_file_info(pafs.FileSelector(base, recursive=True)):
                if (info.type == pafs.FileType.File and info.base_name.startswith(".")
                        and info.base_name.endswith(".tmp")):
                    mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
                    if now - mtime >= older_than_s:
                        self._fs.delete_file(info.path)
                        removed.append(info.path)
        return removed


# ----------------------------------------------------------------------------- policy hook
class PolicyWriter:
    """Picklable ``callable(record)`` for a searcher's ``step_callback``: writes the policy row.

    ``record`` is the searcher's step record (``step``, ``mu``, ``sigma``, ``rewards``,
    ``mean_reward``, optional ``best_mu``, ``best_reward``, ``thetas``, ``mu_next``,
    ``trial_ids``, ``failed``, ``searcher``, ``metric``); numpy values are fine; keys the
    store has no column for (``configs``, ``values``, ``names``, ...) go to ``extra_json``. Holds only the root string and the experiment name.
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
