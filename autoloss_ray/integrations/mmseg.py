"""The searched loss as an mmsegmentation loss: ``type="AutoSegLoss"`` in mmengine's ``MODELS``.

Importing this module registers :class:`AutoSegLoss` in mmengine's root ``MODELS`` registry,
so every child registry (mmsegmentation's ``mmseg.registry.MODELS`` is one) builds it too.
In an mmseg config::

    custom_imports = dict(imports=["autoloss_ray.integrations.mmseg"],
                          allow_failed_imports=False)
    model = dict(decode_head=dict(
        loss_decode=dict(type="AutoSegLoss", loss_file="runs/my-loss.json",
                         num_classes=19, loss_weight=1.0)))

It has mmseg's loss interface: ``loss_name`` (the key of the loss in the loss dict; mmseg's
rule: it starts with ``loss_`` for a loss that enters the backward graph), ``loss_weight`` and
``forward(cls_score [N, C, h, w], label [N, H, W], weight=None, ignore_index=255, **kwargs)``
returning ``loss_weight`` times the :class:`~autoloss_ray.SurrogateLoss` value (a scalar).
The ``ignore_index`` of each call is the one used (mmseg's decode head passes its own);
``weight`` (a pixel sampler's [N, H, W] 0/1 weights, e.g. OHEM's) leaves out the pixels of
weight 0, since a metric surrogate has no per-pixel weights; other weights are refused. Other
keyword arguments of mmseg's losses (``avg_factor``, ``reduction_override``) are accepted and
have no effect: the loss is one number per batch, like the metric.

Needs ``mmengine`` (``pip install 'autoloss-ray[mmseg]'``); mmsegmentation itself is not
needed to build or test it (mmsegmentation 1.2.2 refuses the current mmcv, and mmcv does not
build without a matching CUDA toolchain).
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn as nn
from mmengine.registry import MODELS

from autoloss_ray.losses.surrogate import SurrogateLoss
from autoloss_ray.vocabulary import DEFAULT_PARAMETERIZATION, IGNORE_INDEX

__all__ = ["AutoSegLoss"]


@MODELS.register_module(name="AutoSegLoss")
class AutoSegLoss(nn.Module):
    """mmseg-style wrapper of a :class:`~autoloss_ray.SurrogateLoss`.

    Exactly one source of the curves (or none: the identity curves, the naive relaxation):

    * ``loss_file``: a JSON file of ``autoloss export`` / ``SurrogateLoss.to_file``; ``metric``
      may be given and must then equal the file's; ``num_classes`` may be left out to keep
      the file's;
    * ``preset``: the paper's searched curves of that metric (``metric`` defaults to it);
    * ``theta`` with ``parameterization``: explicit parameters of ``metric``.

    Args (keyword only): metric, num_classes, loss_file, preset, theta, parameterization
    ("bezier"), loss_weight (1.0, a finite number >= 0), loss_name ("loss_autoseg"), and any
    further keyword argument of :class:`SurrogateLoss` (``boundary_tolerance``,
    ``ignore_index`` (default 255; each call's ``ignore_index`` overrides it),
    ``boundary_classes``, ...).
    """

    def __init__(
        self,
        *,
        metric: str | None = None,
        num_classes: int | None = None,
        loss_file: str | os.PathLike | None = None,
        preset: str | None = None,
        theta: Any = None,
        parameterization: str = DEFAULT_PARAMETERIZATION,
        loss_weight: float = 1.0,
        loss_name: str = "loss_autoseg",
        **loss_kwargs: Any,
    ) -> None:
        super().__init__()
        given = [name for name, value in (("loss_file", loss_file), ("preset", preset),
                                          ("theta", theta)) if value is not None]
        if len(given) > 1:
            raise ValueError(f"AutoSegLoss takes one of loss_file, preset and theta, got "
                             f"{' and '.join(given)}")
        if isinstance(loss_weight, bool) or not isinstance(loss_weight, (int, float)):
            raise TypeError(f"loss_weight must be a number, got {loss_weight!r}")
        if not math.isfinite(loss_weight) or loss_weight < 0:
            raise ValueError(f"loss_weight must be a finite number >= 0, got {loss_weight!r}")
        if not isinstance(loss_name, str) or not loss_name.startswith("loss_"):
            raise ValueError("loss_name must be a string starting with 'loss_' (mmseg's rule "
                             "for a loss that enters the backward graph), got "
                             f"{loss_name!r}")
        if loss_file is not None:
            if num_classes is not None:
                loss_kwargs["num_classes"] = num_classes
            loss = SurrogateLoss.from_file(loss_file, **loss_kwargs)
            if metric is not None and metric != loss.metric:
                raise ValueError(f"metric={metric!r} differs from the metric {loss.metric!r} "
                                 f"of loss_file {os.fspath(loss_file)!r}")
        elif num_classes is None:
            raise ValueError("AutoSegLoss needs num_classes (or a loss_file that stores it)")
        elif preset is not None:
            if metric is not None and metric != preset:
                raise ValueError(f"metric={metric!r} differs from preset={preset!r}")
            loss = SurrogateLoss.from_preset(preset, num_classes=num_classes, **loss_kwargs)
        else:
            if metric is None:
                raise ValueError("AutoSegLoss needs metric (e.g. 'miou'), a loss_file or a "
                                 "preset")
            loss = SurrogateLoss(metric, num_classes=num_classes, theta=theta,
                                 parameterization=parameterization, **loss_kwargs)
        self.loss = loss
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name
        self._other: dict[int | None, SurrogateLoss] = {}

    @property
    def loss_name(self) -> str:
        """The key of this loss in mmseg's loss dict (starts with ``loss_``)."""
        return self._loss_name

    def _loss_for(self, ignore_index: int | None) -> SurrogateLoss:
        """The loss with the call's ``ignore_index`` (the same curves; built once each)."""
        if ignore_index == self.loss.ignore_index:
            return self.loss
        other = self._other.get(ignore_index)
        if other is None:
            other = SurrogateLoss.from_dict(self.loss.to_dict(), ignore_index=ignore_index,
                                            sync=self.loss.sync,
                                            check_labels=self.loss.check_labels)
            self._other[ignore_index] = other
        return other

    def forward(
        self,
        cls_score: torch.Tensor,
        label: torch.Tensor,
        weight: torch.Tensor | None = None,
        ignore_index: int | None = IGNORE_INDEX,
        **kwargs: Any,
    ) -> torch.Tensor:
        """``loss_weight`` x the surrogate loss of ``cls_score`` [N, C, h, w] (logits; resized
        to the labels bilinearly if smaller) against ``label`` [N, H, W]; a scalar tensor.
        ``weight`` [N, H, W] of 0/1 leaves out the pixels of weight 0."""
        loss = self._loss_for(ignore_index)
        if weight is not None:
            if not isinstance(weight, torch.Tensor) or not isinstance(label, torch.Tensor):
                raise TypeError("weight and label must be torch tensors [N, H, W], got "
                                f"{type(weight).__name__} and {type(label).__name__}")
            if weight.shape != label.shape:
                raise ValueError(f"weight must have the label's shape {tuple(label.shape)}, "
                                 f"got {tuple(weight.shape)}")
            if not bool(((weight == 0) | (weight == 1)).all()):
                raise ValueError("AutoSegLoss takes 0/1 pixel weights only (0 leaves a pixel "
                                 "out; a metric surrogate has no per-pixel weights), got "
                                 "other values")
            if ignore_index is None:
                raise ValueError("pixel weights need an ignore_index to leave pixels out, "
                                 "got ignore_index=None")
            label = torch.where(weight.to(label.device) == 0,
                                torch.full_like(label, ignore_index), label)
        return self.loss_weight * loss(cls_score, label)

    def extra_repr(self) -> str:
        return f"loss_name={self._loss_name!r}, loss_weight={self.loss_weight}"
