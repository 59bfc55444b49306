"""Trained-model checkpoints: weights plus what is needed to rebuild and evaluate the model.

A checkpoint is a ``torch.save`` dict ``{"format", "version", "model", "num_classes",
"dataset", "image_size", "ignore_index", "boundary_tolerance", "state_dict"}``, written
atomically (temp file + rename). No ray import.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from autoloss_ray.vocabulary import DEFAULT_BOUNDARY_TOLERANCE, IGNORE_INDEX

__all__ = ["save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "autoloss-ray/checkpoint"


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    *,
    model_name: str,
    num_classes: int,
    dataset: str,
    image_size: int | tuple[int, int] | list[int],
    ignore_index: int = IGNORE_INDEX,
    boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
) -> str:
    """Write ``model``'s weights and metadata to ``path``; returns the absolute path."""
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "model": model_name,
        "num_classes": int(num_classes),
        "dataset": dataset,
        # the training size: an int (square) or [h, w]
        "image_size": (int(image_size) if isinstance(image_size, int)
                       else [int(v) for v in image_size]),
        "ignore_index": int(ignore_index),
        "boundary_tolerance": int(boundary_tolerance),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(
    path: str | os.PathLike[str], *, num_classes: int | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint and load its weights: ``(model, metadata)``.

    ``num_classes``: the class count the caller's data has; a checkpoint trained for another
    count is a ValueError (its head could not score these labels).
    """
    from autoloss_ray.models import build_model

    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"checkpoint {path!r} is a directory; give the .pt file "
                                "`autoloss retrain` wrote")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise ValueError(f"checkpoint {path!r} is empty (0 bytes)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one clear error
        raise ValueError(f"{path!r} is not an autoloss checkpoint (torch.load: "
                         f"{_first_line(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path!r} is not an autoloss-ray checkpoint (expected a file written by "
            "`autoloss retrain`)"
        )
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise ValueError(f"checkpoint {path!r} lacks {missing} (a damaged or hand-made "
                         "checkpoint; write it with `autoloss retrain`)")
    try:
        classes = int(payload["num_classes"])
    except (TypeError, ValueError):
        raise ValueError(f"checkpoint {path!r}: num_classes must be an int, got "
                         f"{payload['num_classes']!r}") from None
    if not isinstance(payload["state_dict"], dict):
        raise ValueError(f"checkpoint {path!r}: state_dict must be a dict of tensors, got "
                         f"{type(payload['state_dict']).__name__}")
    if num_classes is not None and classes != int(num_classes):
        raise ValueError(
            f"checkpoint {path!r} was trained for {payload['num_classes']} classes but the "
            f"dataset has {num_classes}"
        )
    try:
        model = build_model(payload["model"], num_classes=classes)
    except (ValueError, TypeError, KeyError, ImportError, AttributeError) as exc:
        raise ValueError(f"checkpoint {path!r} names model {payload['model']!r}, which "
                         f"cannot be built: {_first_line(exc)}") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {path!r}: its weights do not match its metadata "
                         f"(model {payload['model']!r}, {classes} classes): "
                         f"{_state_dict_mismatch(exc)}") from None
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta


_REQUIRED = ("model", "num_classes", "state_dict")


def _first_line(exc: BaseException) -> str:
    """``exc``'s type and the first informative line of its message, on one line. torch's
    weights-only refusal is reduced to what it found (its advice to load with
    ``weights_only=False`` would run arbitrary code from a file that is not a checkpoint)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip().strip("'\"")]
    if lines and lines[0].startswith("Weights only load failed"):
        found = [ln for ln in lines[1:] if not ln.startswith(("Please file", "Check the"))]
        detail = found[0] if found else "not a weights-only torch file"
    else:
        detail = lines[0].strip("'\"") if lines else ""
    name = type(exc).__name__
    return f"{name}: {detail[:200]}" if detail else f"{name} (no message)"


def _state_dict_mismatch(exc: RuntimeError) -> str:
    """The first concrete mismatch of a ``load_state_dict`` error, on one line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
    more = len(lines) - 2
    return detail[:300] + (f" (and {more} more)" if more > 0 else "")
