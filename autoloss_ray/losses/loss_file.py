"""The loss file format (``FILE_FORMAT``): a :class:`~autoloss_ray.losses.SurrogateLoss` as
human-readable JSON, written atomically, and read back into constructor arguments."""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["FILE_FORMAT", "FILE_VERSION", "loss_to_dict", "write_loss_file", "loss_arguments",
           "read_loss_file"]

FILE_FORMAT = "autoloss-ray/loss"
FILE_VERSION = 1

_STORED = ("num_classes", "ignore_index", "boundary_tolerance", "boundary_classes",
           "background_index")


def loss_to_dict(loss: Any, meta: dict | None = None) -> dict[str, Any]:
    """The file content of ``loss`` (a SurrogateLoss), with ``meta`` when given."""
    d: dict[str, Any] = {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "metric": loss.metric,
        "parameterization": loss.parameterization,
        "theta": [float(v) for v in loss.theta],
        "num_classes": loss.num_classes,
        "ignore_index": loss.ignore_index,
        "boundary_tolerance": loss.boundary_tolerance,
        "boundary_classes": loss.boundary_classes,
        "background_index": loss.background_index,
    }
    if meta is not None:
        d["meta"] = meta
    return d


def write_loss_file(data: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``data`` (from :func:`loss_to_dict`) as indented JSON at ``path`` (atomically)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a directory; give a .json file path")
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def loss_arguments(data: dict[str, Any], **overrides: Any) -> tuple[str, dict[str, Any]]:
    """(metric, keyword arguments of SurrogateLoss) of a loss file's content; keyword
    ``overrides`` replace stored values. ValueError for a file of another format, a newer
    version, missing keys or no ``num_classes``."""
    if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
        raise ValueError(f"not an autoloss-ray loss (expected format {FILE_FORMAT!r})")
    if int(data.get("version", 0)) > FILE_VERSION:
        raise ValueError(f"loss file version {data.get('version')} is newer than "
                         f"supported ({FILE_VERSION})")
    missing = [k for k in ("metric", "parameterization", "theta") if k not in data]
    if missing:
        raise ValueError(f"loss file lacks {missing}")
    kw: dict[str, Any] = {
        "parameterization": data["parameterization"],
        "theta": data["theta"],
    }
    for key in _STORED:
        if key in data:
            kw[key] = data[key]
    kw.update(overrides)
    if kw.get("num_classes") is None:
        raise ValueError("num_classes is neither in the file nor given")
    return data["metric"], kw


def read_loss_file(path: str | os.PathLike) -> Any:
    """The parsed JSON of a loss file. Every error names ``path``: FileNotFoundError,
    IsADirectoryError, PermissionError, or ValueError (empty, not JSON text)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"loss file {path!r} is a directory; give the .json file "
                                "`autoloss export` (or SurrogateLoss.to_file) wrote")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"loss file {path!r} does not exist") from None
    except OSError as exc:
        kind = PermissionError if isinstance(exc, PermissionError) else OSError
        raise kind(f"loss file {path!r} cannot be read: "
                        f"{exc.strerror or type(exc).__name__}") from None
    if not raw.strip():
        raise ValueError(f"loss file {path!r} is empty")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"loss file {path!r} is not JSON text (not UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"loss file {path!r} is not JSON ({exc})") from None
