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
        head, sep, query = root.partition("?")
        scheme = head.split("://", 1)[0].lower()
        if scheme in ("s3", "gs", "gcs") and not head.split("://", 1)[1].strip("/"):
            raise StoreError(f"store URI {root!r} names no bucket; expected "
                             f"{scheme}://BUCKET/PREFIX")
        try:
            fs, path = pafs.FileSystem.from_uri(_bounded_uri(root))
        except (pa.ArrowInvalid, ValueError, OSError) as e:
            raise StoreError(f"cannot open store URI {root!r}: {_first_line(e)}") from None
        display = head.rstrip("/") + sep + query
    else:
        fs, path = pafs.LocalFileSystem(), str(Path(root).expanduser().resolve())
        display = path
    loc = Location(fs=fs, base=path.rstrip("/") or "/", root=display,
                   local=isinstance(fs, pafs.LocalFileSystem))
    info = fs.get_file_info(loc.base) if loc.local else _first_contact(loc)
    if info.type == pafs.FileType.File:
        raise StoreError(
            f"store root {root!r} is an existing file; give a directory path (or a URI)"
        )
    return loc


def store_timeout() -> float:
    """Seconds a remote store may take to answer (``AUTOLOSS_STORE_TIMEOUT``, default 30)."""
    raw = os.environ.get("AUTOLOSS_STORE_TIMEOUT", "30")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise StoreError(f"AUTOLOSS_STORE_TIMEOUT must be a positive number of seconds, "
                         f"got {raw!r}")
    return value


def _bounded_uri(uri: str) -> str:
    """The URI pyarrow opens: a GCS URI gets ``retry_limit_seconds`` (pyarrow's default keeps
    retrying for 15 minutes, silently, where no credentials or network are) unless it has one."""
    head, sep, query = uri.partition("?")
    if head.split("://", 1)[0].lower() not in ("gs", "gcs") or "retry_limit_seconds=" in query:
        return uri
    limit = f"retry_limit_seconds={store_timeout():g}"
    return f"{head}?{query}&{limit}" if sep else f"{head}?{limit}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _first_contact(loc: Location) -> pafs.FileInfo:
    """The root's file info from a remote store, within :func:`store_timeout` seconds (run in
    a daemon thread: a store that never answers cannot hang the caller); an object store's
    bucket must exist. Errors become one-line :class:`StoreError` naming the store."""
    import threading

    timeout = store_timeout()
    bucket = loc.base.strip("/").split("/", 1)[0]
    object_store = loc.fs.type_name in _OBJECT_STORES
    answer: dict = {}

    def probe() -> None:
        try:
            if object_store and bucket:
                answer["bucket"] = loc.fs.get_file_info(bucket)
            answer["root"] = loc.fs.get_file_info(loc.base)
        except BaseException as e:  # noqa: BLE001 - reported to the caller below
            answer["error"] = e

    worker = threading.Thread(target=probe, name="autoloss-store-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise StoreError(
            f"the store {loc.root} did not answer within {timeout:g} s (is the endpoint "
            f"reachable, are credentials set?); AUTOLOSS_STORE_TIMEOUT sets the limit"
        )
    if "error" in answer:
        raise StoreError(f"cannot reach the store {loc.root}: {_first_line(answer['error'])}")
    if object_store and bucket and answer["bucket"].type == pafs.FileType.NotFound:
        raise StoreError(f"the bucket {bucket!r} of the store {loc.root} does not exist; "
                         f"create it first")
    return answer["root"]


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
