"""The front end every baseline loss shares: input checks (:mod:`autoloss_ray.checks`, the
same rules as :class:`~autoloss_ray.losses.SurrogateLoss`), resize to the labels, float32
without autocast, the ignore mask."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from autoloss_ray.checks import (
    check_ignore_index,
    check_logits_target,
    check_num_classes,
    resize_to_labels,
)
from autoloss_ray.vocabulary import IGNORE_INDEX


def _no_autocast(device: torch.device):
    """A context that disables autocast on ``device`` (a no-op where autocast is unknown)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except (RuntimeError, ValueError):  # pragma: no cover - exotic device types
        return contextlib.nullcontext()


def _prepare(
    logits: Any, target: Any, num_classes: int | None, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate (:func:`autoloss_ray.checks.check_logits_target`: the target follows the
    logits' device), cast and resize. Returns (logits float32 [N,C,H,W], safe target [N,H,W]
    int64 with ignored pixels set to 0, valid mask bool [N,H,W])."""
    logits, target = check_logits_target(logits, target, num_classes=num_classes,
                                         ignore_index=ignore_index)
    valid = target != ignore_index
    logits = resize_to_labels(logits.float(), target)
    safe = torch.where(valid, target, torch.zeros_like(target))
    return logits, safe, valid


class _Baseline(nn.Module):
    """Shared front end: validation, resize, float32 without autocast, ignore mask."""

    def __init__(self, *, num_classes: int | None = None, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes, allow_none=True)
        self.ignore_index = check_ignore_index(ignore_index, allow_none=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits [N, C, h, w] float, target [N, H, W] int -> float32 scalar."""
        device = logits.device if isinstance(logits, torch.Tensor) else torch.device("cpu")
        with _no_autocast(device):
            x, safe, valid = _prepare(logits, target, self.num_classes, self.ignore_index)
            return self._loss(x, safe, valid)

    def _loss(
        self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """logits float32 [N,C,H,W], target [N,H,W] (ignored set to 0), valid bool [N,H,W]."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, ignore_index={self.ignore_index}"


def _nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel ``-log softmax(logits)[target]``: [N,C,H,W], [N,H,W] -> [N,H,W]."""
    return F.cross_entropy(logits, target, reduction="none")
