"""The baseline losses by name: :data:`BASELINES` and :func:`make_loss`."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from autoloss_ray.losses.baselines._base import _Baseline
from autoloss_ray.losses.baselines.ce import CrossEntropyLoss, WeightedCrossEntropyLoss
from autoloss_ray.losses.baselines.dice import DiceLoss
from autoloss_ray.losses.baselines.dpce import DPCELoss
from autoloss_ray.losses.baselines.lovasz import LovaszSoftmaxLoss
from autoloss_ray.losses.baselines.ssim import SSIMLoss
from autoloss_ray.vocabulary import IGNORE_INDEX

__all__ = ["BASELINES", "make_loss"]

BASELINES: dict[str, type[_Baseline]] = {
    "ce": CrossEntropyLoss,
    "wce": WeightedCrossEntropyLoss,
    "dpce": DPCELoss,
    "ssim": SSIMLoss,
    "dice": DiceLoss,
    "lovasz": LovaszSoftmaxLoss,
}


def make_loss(name: str, *, num_classes: int, ignore_index: int = IGNORE_INDEX, **kw: Any) -> nn.Module:
    """Build the baseline loss ``name`` (one of :data:`BASELINES`).

    ``kw`` goes to the class (e.g. ``weight=`` for ``"wce"``, ``alpha=``/``sigma=`` for
    ``"dpce"``, ``eps=`` for ``"dice"``).
    """
    if not isinstance(name, str) or name.lower() not in BASELINES:
        raise ValueError(f"unknown baseline loss {name!r}; valid names: {sorted(BASELINES)}")
    cls = BASELINES[name.lower()]
    try:
        return cls(num_classes=num_classes, ignore_index=ignore_index, **kw)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise TypeError(f"baseline {name!r} got an unsupported option: {exc}") from exc
        raise
