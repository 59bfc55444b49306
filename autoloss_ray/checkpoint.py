"""Trained-model checkpoints: weights plus what is needed to rebuild and evaluate the model.

A checkpoint is a ``torch.save`` dict ``{"format", "version", "model", "num_classes",
"dataset", "image_size", "ignore_index", "boundary_tolerance", "state_dict"}``, written
atomically (temp file + rename). No ray import.
"""

from __future__ import annotations

import os
from typing import Any

import torch

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
    ignore_index: int = 255,
    boundary_tolerance: int = 5,
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
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one clear error
        raise ValueError(f"{path!r} is not a readable autoloss-ray checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path!r} is not an autoloss-ray checkpoint (expected a file written by "
            "`autoloss retrain`)"
        )
    if num_classes is not None and int(payload["num_classes"]) != int(num_classes):
        raise ValueError(
            f"checkpoint {path!r} was trained for {payload['num_classes']} classes but the "
            f"dataset has {num_classes}"
        )
    model = build_model(payload["model"], num_classes=int(payload["num_classes"]))
    model.load_state_dict(payload["state_dict"])
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta
