"""Parquet experiment store: every finished trial and every policy step, one file each.

Layout (a hive-partitioned Parquet dataset per table; ``root`` is a local directory or a
pyarrow filesystem URI, see :mod:`autoloss_ray.store._atomic`)::

    <root>/trials/experiment=<name>/<trial_id>.parquet        one row per finished trial
    <root>/policy/experiment=<name>/step-<k:06d>.parquet      one row per search step
    <root>/searches/<name>.json                               options the search ran with

The ``experiment`` column lives in the directory name (hive partitioning), not inside the
files, so ``pandas.read_parquet(f"{root}/trials")``, ``pyarrow.dataset.dataset(...,
partitioning="hive")`` and DuckDB's ``read_parquet('<root>/trials/*/*.parquet',
hive_partitioning=true)`` all return it as a column with no project code. The columns are
:mod:`autoloss_ray.store.schema`'s.

Every file is written atomically (:mod:`autoloss_ray.store._atomic`); a writer killed
mid-write leaves at most a hidden temp file, which readers never see and
:meth:`ExperimentStore.cleanup_temp` removes. Rewriting a trial id (or a policy step) replaces
its file: writes are idempotent, so a resumed search that reports a trial twice still holds
one row for it. Reading skips, with a :class:`StoreWarning`, files that are unreadable or of
another schema (:mod:`autoloss_ray.store._reading`: how a table's files are found, checked,
read and counted once). Nothing here imports ray.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from autoloss_ray.store._atomic import (
    is_temp_name,
    resolve_root,
    sub_uri,
    write_bytes_atomic,
    write_table_atomic,
)
from autoloss_ray.store._reading import (
    INT_MAPPER,
    empty_frame,
    read_files,
    readable_files,
    without_copies,
)
from autoloss_ray.store.records import normalize_policy_row, normalize_trial_row, row_table
from autoloss_ray.store.schema import (
    PARTITION,
    PARTITIONING,
    POLICY_FILE_SCHEMA,
    POLICY_SCHEMA,
    TRIAL_FILE_SCHEMA,
    TRIAL_SCHEMA,
    StoreError,
    check_name,
)

__all__ = ["ExperimentStore"]


class ExperimentStore:
    """Read and write the Parquet experiment store at ``root`` (see the module docstring).

    ``root``: a local directory (created on first write) or a pyarrow filesystem URI. An
    existing *file* at ``root`` is refused with :class:`StoreError`. The object is cheap and
    picklable (it only keeps ``root``); callables shipped to Ray should still hold the root
    string and build the store where they run (:class:`~autoloss_ray.store.PolicyWriter`
    does).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        loc = resolve_root(root)
        self._loc = loc
        self.root = loc.root
        self._fs: pafs.FileSystem = loc.fs
        self._base = loc.base
        self._local = loc.local

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

    @property
    def trials_uri(self) -> str:
        """Where the trials dataset lives (give it to pandas.read_parquet / DuckDB)."""
        return sub_uri(self.root, "trials")

    @property
    def policy_uri(self) -> str:
        return sub_uri(self.root, "policy")

    # -- writing
    def check_writable(self) -> None:
        """Write and remove a hidden probe file where trials, policy steps and manifests go
        (readers skip such names), so that a store that cannot be written is found before a
        search or a retrain trains anything. Raises :class:`StoreError` (one line)."""
        import uuid

        for table in ("trials", "policy", "searches"):
            path = f"{self._dir(table)}/.probe-{uuid.uuid4().hex}.tmp"
            try:
                write_bytes_atomic(self._loc, b"", path)
                self._fs.delete_file(path)
            except OSError as e:
                reason = " ".join(str(e).split())[:300] or type(e).__name__
                raise StoreError(f"cannot write to the store {self.root} ({table}/: "
                                 f"{reason}); check its permissions or give another "
                                 f"--store") from None

    def write_trial(self, row: Mapping[str, Any]) -> str:
        """Validate ``row`` (see :func:`normalize_trial_row`) and write it atomically as its
        trial's file, replacing an earlier file of the same trial id. Returns the path."""
        norm = normalize_trial_row(row)
        table = row_table(norm, TRIAL_FILE_SCHEMA)
        path = self.trial_path(norm["experiment"], norm["trial_id"])
        write_table_atomic(self._loc, table, path)
        return path

    def write_policy(self, row: Mapping[str, Any]) -> str:
        """Validate ``row`` (see :func:`normalize_policy_row`) and write it atomically as the
        file of its step (replacing an earlier one). Returns the path."""
        norm = normalize_policy_row(row)
        table = row_table(norm, POLICY_FILE_SCHEMA)
        path = self.policy_path(norm["experiment"], norm["step"])
        write_table_atomic(self._loc, table, path)
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
        write_bytes_atomic(self._loc, text.encode("utf-8"), path)
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

    # -- reading
    def _read(self, table: str, experiment: str | None, schema: pa.Schema,
              file_schema: pa.Schema, sort: list[str]):
        base = self._dir(table, None if experiment is None else check_name(experiment,
                                                                            "experiment"))
        if self._fs.get_file_info(base).type != pafs.FileType.Directory:
            return empty_frame(schema)
        files = readable_files(self._fs, base, file_schema)
        if experiment is None:
            tbl = read_files(self._fs, files, base, schema, partitioning=PARTITIONING)
        else:
            tbl = read_files(self._fs, files, base, file_schema, partitioning=None)
            tbl = tbl.add_column(0, schema.field(PARTITION),
                                 pa.array([experiment] * tbl.num_rows, pa.string()))
        tbl = tbl.select(schema.names)
        if tbl.num_rows:
            tbl = tbl.sort_by([(c, "ascending") for c in sort])
        df = tbl.to_pandas(types_mapper=INT_MAPPER.get)
        if table == "trials":
            df = without_copies(self._fs, df, files)
        return df

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
                if info.type == pafs.FileType.File and is_temp_name(info.base_name):
                    mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
                    if now - mtime >= older_than_s:
                        self._fs.delete_file(info.path)
                        removed.append(info.path)
        return removed
