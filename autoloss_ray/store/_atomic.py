"""Where a store lives (a local directory or a pyarrow filesystem URI) and atomic writes there.

``root`` is a local directory or a pyarrow filesystem URI such as ``s3://bucket/prefix`` or
``file:///abs/path``; an S3-compatible server other than AWS goes in the URI's query, as
pyarrow reads it: ``s3://bucket/prefix?endpoint_override=host:9000&scheme=http``; credentials
never do: they come from the environment, ``~/.aws`` or the instance role, as for any AWS SDK
client.

Atomicity: a file is first written in full to a hidden temporary name in the same directory
(``.<name>.<uuid>.tmp``; the leading dot makes pyarrow/pandas skip it and it does not match
``*.parquet``), flushed and fsynced, then renamed onto its final name (``os.replace``, atomic on
POSIX). A writer killed mid-write leaves at most a hidden temp file, never a partial
``.parquet``. On object stores (``s3``, ``gcs``; no atomic rename) the object is uploaded
directly under its final key: an object PUT only becomes visible once complete, which gives
the same guarantee. Other pyarrow filesystems use temp + ``FileSystem.move``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from autoloss_ray.store.schema import StoreError

__all__ = ["Location", "is_temp_name", "resolve_root", "sub_uri", "write_bytes_atomic",
           "write_table_atomic"]

_OBJECT_STORES = {"s3", "gcs"}


@dataclass(frozen=True)
class Location:
    """A resolved store root: its filesystem, its base path there, and how to name it."""

    fs: pafs.FileSystem
    base: str  # path within ``fs``, no trailing slash ("/" for the root)
    root: str  # the root as the user names it (absolute path, or the URI with its query)
    local: bool  # a local file system (atomic rename, fsync, flock)


def resolve_root(root: str | os.PathLike[str]) -> Location:
    """Resolve a store root (path or URI) to its :class:`Location`.

    Raises :class:`StoreError` for an empty or non-string root, a URI pyarrow cannot open, or
    an existing *file* at the root.
    """
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
        display = head.rstrip("/") + sep + query
    else:
        fs, path = pafs.LocalFileSystem(), str(Path(root).expanduser().resolve())
        display = path
    loc = Location(fs=fs, base=path.rstrip("/") or "/", root=display,
                   local=isinstance(fs, pafs.LocalFileSystem))
    if fs.get_file_info(loc.base).type == pafs.FileType.File:
        raise StoreError(
            f"store root {root!r} is an existing file; give a directory path (or a URI)"
        )
    return loc


def sub_uri(root: str, table: str) -> str:
    """``root/table`` keeping a URI's query (``?endpoint_override=...``) at the end (a
    trailing slash of the root is not doubled)."""
    head, sep, query = root.partition("?")
    return f"{head.rstrip('/')}/{table}{sep}{query}"


def is_temp_name(base_name: str) -> bool:
    """Whether a file name is a writer's temporary (``.<name>.<uuid>.tmp``)."""
    return base_name.startswith(".") and base_name.endswith(".tmp")


def write_table_atomic(loc: Location, table: pa.Table, path: str) -> None:
    """Write ``table`` as one Parquet file at ``path`` (within ``loc.fs``) atomically."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes_atomic(loc, sink.getvalue().to_pybytes(), path)


def write_bytes_atomic(loc: Location, data: bytes, path: str) -> None:
    """Write ``data`` at ``path`` (within ``loc.fs``) so readers see all of it or nothing."""
    directory, name = path.rsplit("/", 1)
    tmp = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
    if loc.local:
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
    fs = loc.fs
    fs.create_dir(directory, recursive=True)
    if fs.type_name in _OBJECT_STORES:
        # No atomic rename on object stores, but a PUT is all-or-nothing.
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, path)
