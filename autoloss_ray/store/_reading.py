"""Reading a table of the store: its files found, checked, read and counted once.

What :meth:`ExperimentStore.trials <autoloss_ray.store.ExperimentStore.trials>` and
:meth:`~autoloss_ray.store.ExperimentStore.policy` read with, on any pyarrow filesystem: the
data files of a table's folder as pyarrow's dataset discovery finds them, those whose footer
does not read or whose schema is another table's skipped with a :class:`StoreWarning`
(:func:`readable_files`); one read of them all, or file by file should a data page fail
(:func:`read_files`); a trial whose file was copied under another name counted once
(:func:`without_copies`); the pandas conversion that keeps a missing int as ``<NA>``
(:data:`INT_MAPPER`, :func:`empty_frame`). The layout (which folder holds what) and the
writing are :mod:`autoloss_ray.store.experiment_store`'s. Nothing here imports ray.
"""

from __future__ import annotations

import warnings

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from autoloss_ray.store.schema import PARTITION, StoreWarning

__all__ = ["INT_MAPPER", "empty_frame", "readable_files", "read_files", "without_copies"]


def skip(path: str, why: str) -> None:
    warnings.warn(f"store: skipping {path}: {why}", StoreWarning, stacklevel=4)


def _int_mapper() -> dict:
    import pandas as pd

    return {pa.int64(): pd.Int64Dtype()}


class _LazyMapper:
    """pyarrow int64 -> pandas nullable Int64 (so a missing step stays <NA>, not a float)."""

    def get(self, t: pa.DataType):
        return _int_mapper().get(t)


INT_MAPPER = _LazyMapper()


def empty_frame(schema: pa.Schema):
    return schema.empty_table().to_pandas(types_mapper=INT_MAPPER.get)


def readable_files(fs: pafs.FileSystem, base: str, file_schema: pa.Schema) -> list[str]:
    """The data files under ``base`` (as pyarrow's dataset discovery finds them: no
    leading ``.`` or ``_``) whose footer reads and whose schema is this table's: every
    required column present and no column of another type. Others are skipped with a
    :class:`StoreWarning` naming them (a corrupted, truncated or foreign file must not
    block the experiment; a resume re-runs a trial whose file is skipped)."""
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    files = sorted(
        i.path for i in infos
        if i.type == pafs.FileType.File
        and not any(part.startswith((".", "_"))
                    for part in i.path[len(base):].strip("/").split("/"))
    )
    good = []
    for path in files:
        try:
            with fs.open_input_file(path) as f:
                found = pq.ParquetFile(f).schema_arrow
        except Exception as exc:  # noqa: BLE001 - any unreadable footer: skip the file
            skip(path, f"unreadable ({type(exc).__name__}: {exc})")
            continue
        missing = [fl.name for fl in file_schema
                   if not fl.nullable and fl.name not in found.names]
        wrong = [f"{fl.name} ({found.field(fl.name).type}, expected {fl.type})"
                 for fl in file_schema
                 if fl.name in found.names and found.field(fl.name).type != fl.type]
        if missing or wrong:
            skip(path, "not a file of this table ("
                 + "; ".join(([f"missing {missing}"] if missing else [])
                             + ([f"wrong types {wrong}"] if wrong else [])) + ")")
            continue
        good.append(path)
    return good


def read_files(fs: pafs.FileSystem, files: list[str], base: str, schema: pa.Schema,
               partitioning) -> pa.Table:
    """One table of ``files``; should the whole read fail (a data page corrupted behind a
    sound footer), each file is read on its own and the failing ones are skipped."""
    def read(paths: list[str]) -> pa.Table:
        return ds.dataset(paths, schema=schema, format="parquet", filesystem=fs,
                          partitioning=partitioning, partition_base_dir=base).to_table()

    if not files:
        return schema.empty_table()
    try:
        return read(files)
    except (OSError, pa.ArrowException) as exc:
        if len(files) == 1:
            skip(files[0], f"unreadable ({type(exc).__name__}: {exc})")
            return schema.empty_table()
    parts = []
    for path in files:
        try:
            parts.append(read([path]))
        except (OSError, pa.ArrowException) as exc:
            skip(path, f"unreadable ({type(exc).__name__}: {exc})")
    return pa.concat_tables(parts) if parts else schema.empty_table()


def without_copies(fs: pafs.FileSystem, df, files: list[str]):
    """``df`` with one row per (experiment, trial_id): a trial file copied under another
    name holds the same trial again, which must not count twice. The row finished last
    is kept, and a :class:`StoreWarning` names the files that hold the same trial."""
    dup = df.duplicated(["experiment", "trial_id"], keep=False)
    if not dup.any():
        return df
    wanted = set(zip(df.loc[dup, "experiment"].astype(str),
                     df.loc[dup, "trial_id"].astype(str)))
    holders: dict[tuple[str, str], list[str]] = {}
    for path in files:
        folder = path.rstrip("/").rsplit("/", 2)[-2]
        experiment = folder[len(PARTITION) + 1:] if folder.startswith(PARTITION + "=") \
            else None
        if not any(e == experiment for e, _ in wanted):
            continue
        try:
            with fs.open_input_file(path) as f:
                ids = pq.read_table(f, columns=["trial_id"]).column(0).to_pylist()
        except Exception:  # noqa: BLE001 - it was read a moment ago; name it anyway
            ids = []
        for trial_id in ids:
            if (experiment, str(trial_id)) in wanted:
                holders.setdefault((experiment, str(trial_id)), []).append(path)
    for (experiment, trial_id), paths in sorted(holders.items()):
        warnings.warn(
            f"store: trial {trial_id!r} of experiment {experiment!r} is in "
            f"{len(paths)} files ({', '.join(sorted(paths))}); counted once (the row "
            "finished last); remove the copies", StoreWarning, stacklevel=4)
    if not holders:
        warnings.warn(f"store: trials {sorted(wanted)} appear more than once; each counted "
                      "once (the row finished last)", StoreWarning, stacklevel=4)
    order = df.sort_values("finished_at", kind="stable").index
    keep = ~df.loc[order].duplicated(["experiment", "trial_id"], keep="last")
    return df.loc[sorted(order[keep.to_numpy()])].reset_index(drop=True)
