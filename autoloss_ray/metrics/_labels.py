"""Checks of label maps (the metrics' inputs) and of the boundary class set."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

from autoloss_ray.checks import (
    check_ignore_index,
    check_num_classes,
    describe_values,
    labels_outside,
)
from autoloss_ray.vocabulary import BOUNDARY_CLASSES, IGNORE_INDEX

__all__ = ["check_boundary_classes", "check_labels"]


def check_boundary_classes(
    boundary_classes: Any, background_index: Any, num_classes: int
) -> int | None:
    """Validate ``boundary_classes`` / ``background_index``; return the class the boundary
    metrics leave out (``background_index`` for ``"foreground"``), or None (``"all"``)."""
    num_classes = check_num_classes(num_classes)
    if not isinstance(boundary_classes, str) or boundary_classes not in BOUNDARY_CLASSES:
        raise ValueError(
            f"boundary_classes must be one of {', '.join(map(repr, BOUNDARY_CLASSES))}, "
            f"got {boundary_classes!r}"
        )
    if isinstance(background_index, bool) or not isinstance(background_index, numbers.Integral):
        raise TypeError(f"background_index must be an int class index, got {background_index!r}")
    if not 0 <= background_index < num_classes:
        raise ValueError(
            f"background_index must be a class in 0..{num_classes - 1}, got {background_index}"
        )
    return int(background_index) if boundary_classes == "foreground" else None


def _as_tensor(x: Any, name: str, device: torch.device | None) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer):
            t = torch.from_numpy(np.ascontiguousarray(x).astype(np.int64, copy=False))
        else:
            raise TypeError(
                f"{name} must hold integer class labels, got a numpy array of dtype {x.dtype}"
            )
    elif isinstance(x, torch.Tensor):
        if x.dtype.is_floating_point or x.dtype.is_complex:
            raise TypeError(
                f"{name} must hold integer class labels, got a tensor of dtype {x.dtype} "
                "(take the argmax of the logits first)"
            )
        t = x
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy.ndarray of integer labels, "
            f"got {type(x).__name__}"
        )
    if device is not None and t.device != device:
        t = t.to(device)
    return t.to(torch.int64)



def _check(
    pred: Any,
    target: Any,
    num_classes: int,
    ignore_index: int | None,
    *,
    device: torch.device | str | None = None,
    values: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """:func:`check_labels` (same arguments and errors), returning ``(pred, target,
    pred_all_classes)``: the last is True when every pred value is a class, which spares the
    metrics a pass over pred. ``values=False``: types, devices and shapes only, not the label
    values (pred_all_classes then False): for a caller that checks them another way
    (:class:`MetricAccumulator` on CPU, in its counts kernel) and runs :func:`_check_values`
    where that does not apply or found a bad label (for the error)."""
    num_classes = check_num_classes(num_classes)
    ignore_index = check_ignore_index(ignore_index)
    dev = torch.device(device) if device is not None else None
    if dev is None:
        # A numpy array joins the device of a torch tensor given with it.
        for x in (target, pred):
            if isinstance(x, torch.Tensor):
                dev = x.device
                break
    if (
        device is None
        and isinstance(pred, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and pred.device != target.device
    ):
        raise ValueError(
            f"pred and target must be on the same device, got {pred.device} and {target.device}"
        )
    p = _as_tensor(pred, "pred", dev)
    t = _as_tensor(target, "target", dev)
    if p.shape != t.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}"
        )
    if t.dim() == 2:
        p, t = p.unsqueeze(0), t.unsqueeze(0)
    elif t.dim() != 3:
        raise ValueError(f"label maps must be [N, H, W] or [H, W], got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"label maps must not be empty, got shape {tuple(t.shape)}")

    if not values:
        return p, t, False
    return p, t, _check_values(p, t, num_classes, ignore_index)


def _check_values(p: torch.Tensor, t: torch.Tensor, num_classes: int,
                  ignore_index: int | None) -> bool:
    """The label-value half of :func:`_check` on its checked maps (``num_classes`` and
    ``ignore_index`` checked too): raises its errors, else returns ``pred_all_classes``."""
    C = num_classes
    _, bad = labels_outside(t, C, None if ignore_index is None else lambda: t == ignore_index)
    if bad is not None:
        kind = "negative labels" if int(bad.min()) < 0 else f"labels >= num_classes={C}"
        raise ValueError(
            f"target has {kind} that are not ignore_index={ignore_index}: values "
            f"{describe_values(bad)} (expected 0..{C - 1} or {ignore_index})"
        )
    pred_all_classes, bad = labels_outside(
        p, C, None if ignore_index is None else lambda: (p == ignore_index) & (t == ignore_index)
    )
    if bad is not None:
        kind = "negative labels" if int(bad.min()) < 0 else f"labels >= num_classes={C}"
        raise ValueError(
            f"pred has {kind}: values {describe_values(bad)} (expected 0..{C - 1}; "
            f"ignore_index={ignore_index} is allowed only where the target is ignored)"
        )
    return pred_all_classes


def check_labels(
    pred: Any,
    target: Any,
    num_classes: int,
    ignore_index: int | None = IGNORE_INDEX,
    *,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a pair of label maps and return them as int64 torch tensors [N, H, W].

    pred, target: torch tensors or numpy arrays of integer (or bool) labels, both [N, H, W] or
    both [H, W] (then N = 1). Torch inputs stay on their device (numpy ones join it);
    ``device`` moves both there. Raises TypeError for non-array or floating inputs, ValueError
    for shape mismatch, empty maps, target labels outside [0, num_classes) that are not
    ``ignore_index``, and pred labels outside [0, num_classes) (pred may be ``ignore_index``
    only where the target is ignored).
    """
    p, t, _ = _check(pred, target, num_classes, ignore_index, device=device)
    return p, t
