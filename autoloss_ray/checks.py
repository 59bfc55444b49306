"""Input checks shared by the metrics and the losses (one definition of each rule).

* :func:`check_num_classes`, :func:`check_ignore_index`, :func:`check_tolerance`: the
  arguments every metric and loss takes;
* :func:`check_logits_target`: the ``(logits, target)`` pair of every loss
  (:class:`~autoloss_ray.losses.SurrogateLoss` and the baselines), with one device rule: the
  target follows the logits (a CPU label batch with CUDA logits is copied to the GPU, as the
  logits carry the graph and decide where the work runs);
* :func:`resize_to_labels`: logits resized bilinearly to the label size;
* :func:`labels_outside`: the labels that are no class (and not excused, e.g. ignored);
* :func:`describe_values`: the few offending values an error message shows.

Every check raises TypeError (wrong kind of object) or ValueError (wrong value) with a
sentence saying what was expected and what came.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "check_num_classes",
    "check_ignore_index",
    "check_tolerance",
    "check_logits_target",
    "resize_to_labels",
    "describe_values",
    "labels_outside",
]


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral)


def check_num_classes(num_classes: Any, *, allow_none: bool = False) -> int | None:
    """``num_classes`` as an int >= 1 (None passes when ``allow_none``)."""
    if num_classes is None and allow_none:
        return None
    if not _is_int(num_classes):
        raise TypeError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return int(num_classes)


def check_ignore_index(ignore_index: Any, *, allow_none: bool = True) -> int | None:
    """``ignore_index`` as an int (None, "nothing ignored", passes when ``allow_none``)."""
    if ignore_index is None and allow_none:
        return None
    if not _is_int(ignore_index):
        kinds = "an int or None" if allow_none else "an int"
        raise TypeError(f"ignore_index must be {kinds}, got {ignore_index!r}")
    return int(ignore_index)


def check_tolerance(tolerance: Any) -> int:
    """The boundary tolerance (pixels) of BIoU/BF1 as an int >= 0."""
    if not _is_int(tolerance):
        raise TypeError(f"boundary_tolerance must be an int >= 0 (pixels), got {tolerance!r}")
    if tolerance < 0:
        raise ValueError(f"boundary_tolerance must be >= 0 pixels, got {tolerance}")
    return int(tolerance)


def describe_values(values: torch.Tensor, limit: int = 5) -> str:
    """The distinct values of ``values`` (any shape), at most ``limit`` of them, as text."""
    uniq = torch.unique(values)
    shown = ", ".join(str(int(v)) for v in uniq[:limit].tolist())
    return shown + (", ..." if uniq.numel() > limit else "")


def labels_outside(
    labels: torch.Tensor, num_classes: int, excused: Callable[[], torch.Tensor] | None = None
) -> tuple[bool, torch.Tensor | None]:
    """Which labels are no class: ``(all_classes, bad)``.

    labels: integer tensor (any shape, not empty). ``all_classes``: every value lies in
    [0, C). ``bad``: the values outside [0, C) at the positions the bool mask ``excused()``
    (same shape; built only when some value is outside) does not excuse, or None when there
    are none. On CPU one min/max pass when every value is a class; on a GPU one host read
    (two flags) unless some label is bad.
    """
    if labels.device.type != "cpu":  # each host read waits for the device: read once
        return _labels_outside_one_read(labels, num_classes, excused)
    lo, hi = (int(v) for v in torch.aminmax(labels))
    if lo >= 0 and hi < num_classes:
        return True, None
    bad = (labels < 0) | (labels >= num_classes)
    if excused is not None:
        bad &= ~excused()
    return False, (labels[bad] if bool(bad.any()) else None)


def _labels_outside_one_read(
    labels: torch.Tensor, num_classes: int, excused: Callable[[], torch.Tensor] | None
) -> tuple[bool, torch.Tensor | None]:
    """:func:`labels_outside` by one host read (two flags fetched together) when no label is
    bad: the GPU's way (the CPU's min/max pass reads twice but is faster there)."""
    outside = (labels < 0) | (labels >= num_classes)
    bad = outside & ~excused() if excused is not None else outside
    any_outside, any_bad = torch.stack([outside.any(), bad.any()]).tolist()
    return not any_outside, (labels[bad] if any_bad else None)


def _kind(x: Any) -> str:
    return f"a tensor of dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__


def check_logits_target(
    logits: Any, target: Any, *, num_classes: int | None, ignore_index: int | None,
    check_values: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a loss's inputs; return ``(logits, target)`` with the target int64 on the
    logits' device (the logits are returned as they came).

    logits: floating torch tensor [N, C, h, w]; target: integer (or bool) torch tensor
    [N, H, W] of class labels in [0, C) or ``ignore_index`` (None: every value must be a
    class). ``num_classes`` (None: not checked) must equal C. The spatial sizes may differ
    (:func:`resize_to_labels`). An empty batch passes. ``check_values=False`` skips the label
    values (types, shapes and sizes are still checked): for labels checked where they were
    loaded, since on a GPU the value check is a host read that waits for the device.
    """
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point:
        raise TypeError(f"logits must be a floating-point torch tensor [N, C, h, w], got "
                        f"{_kind(logits)}")
    if (not isinstance(target, torch.Tensor) or target.dtype.is_floating_point
            or target.dtype.is_complex):
        raise TypeError("target must be an integer torch tensor [N, H, W] of class labels, "
                        f"got {_kind(target)}")
    if logits.dim() != 4:
        raise ValueError(f"logits must have shape [N, C, h, w], got {tuple(logits.shape)}")
    if target.dim() != 3:
        raise ValueError(f"target must have shape [N, H, W], got {tuple(target.shape)}")
    if logits.shape[0] != target.shape[0]:
        raise ValueError(
            f"logits and target must have the same batch size, got logits "
            f"{tuple(logits.shape)} and target {tuple(target.shape)}"
        )
    c = logits.shape[1]
    if num_classes is not None and c != num_classes:
        raise ValueError(f"logits have {c} channels but num_classes={num_classes}")
    if target.device != logits.device:
        target = target.to(logits.device)
    target = target.to(torch.int64)
    if target.numel() == 0 or not check_values:
        return logits, target
    _, bad = labels_outside(target, c, None if ignore_index is None
                            else lambda: target == ignore_index)
    if bad is not None:
        raise ValueError(
            f"target holds labels outside 0..{c - 1}, i.e. outside [0, {c}), that are not "
            f"ignore_index={ignore_index}: {torch.unique(bad)[:5].tolist()}"
        )
    return logits, target


def resize_to_labels(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """logits [N, C, h, w] resized bilinearly (``align_corners=False``) to the target's
    [H, W] (target [N, H, W]); unchanged when the sizes agree."""
    if logits.shape[-2:] == target.shape[-2:]:
        return logits
    return F.interpolate(logits, size=tuple(target.shape[-2:]), mode="bilinear",
                         align_corners=False)
