"""Cross entropy, class-weighted cross entropy and the class weights of a dataset."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from autoloss_ray.checks import check_ignore_index, check_num_classes
from autoloss_ray.losses.baselines._base import _Baseline, _nll
from autoloss_ray.vocabulary import IGNORE_INDEX

__all__ = ["cross_entropy", "CrossEntropyLoss", "WeightedCrossEntropyLoss",
           "class_frequency_weights", "WEIGHT_METHODS"]

WEIGHT_METHODS = ("inverse_log", "median_frequency")


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """(Weighted) cross entropy over valid pixels; 0 on an all-ignored batch.

    logits [N, C, h, w], target [N, H, W]. Without ``weight``: mean over valid pixels. With
    ``weight`` [C]: ``sum w[y] nll / sum w[y]`` (PyTorch's ``reduction="mean"``).
    """
    if weight is None:
        return CrossEntropyLoss(ignore_index=ignore_index)(logits, target)
    return WeightedCrossEntropyLoss(weight, ignore_index=ignore_index)(logits, target)


class CrossEntropyLoss(_Baseline):
    """Mean of ``-log softmax(logits)[target]`` over valid pixels (0 if none)."""

    def _loss(self, logits, target, valid):
        nll = _nll(logits, target)
        v = valid.to(nll.dtype)
        return (nll * v).sum() / v.sum().clamp_min(1.0)


def _weight_tensor(weight: Any, num_classes: int | None) -> torch.Tensor:
    if isinstance(weight, torch.Tensor):
        weight = weight.detach().cpu().numpy()
    w = torch.as_tensor(np.asarray(weight, dtype=np.float64))
    if w.dim() != 1 or w.numel() == 0:
        raise ValueError(
            f"weight must be a 1-d sequence with one entry per class, got shape {tuple(w.shape)}"
        )
    if num_classes is not None and w.numel() != num_classes:
        raise ValueError(f"weight has {w.numel()} entries but num_classes={num_classes}")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weight must be finite and >= 0, got {w.tolist()}")
    return w.float()


class WeightedCrossEntropyLoss(_Baseline):
    """Class-weighted cross entropy: ``sum_i w[y_i] nll_i / sum_i w[y_i]`` over valid pixels.

    weight: [C] non-negative class weights, e.g. from :func:`class_frequency_weights`.
    Returns 0 when there is no valid pixel or every valid pixel has weight 0.
    """

    def __init__(
        self, weight: Any = None, *, num_classes: int | None = None, ignore_index: int = IGNORE_INDEX
    ) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index)
        if weight is None:
            raise ValueError(
                "weighted cross entropy needs class weights: compute them from the training "
                "labels with autoloss_ray.losses.baselines.class_frequency_weights(labels, "
                "num_classes, ignore_index=...) and pass weight=<those weights>"
            )
        w = _weight_tensor(weight, self.num_classes)
        if self.num_classes is None:
            self.num_classes = int(w.numel())
        self.register_buffer("weight", w)

    def _loss(self, logits, target, valid):
        nll = _nll(logits, target)
        w = self.weight.to(device=logits.device, dtype=nll.dtype)[target] * valid.to(nll.dtype)
        return (w * nll).sum() / w.sum().clamp_min(torch.finfo(nll.dtype).tiny)


def _label_array(labels: Any) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer label maps, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"each labels item must be [H, W] or [N, H, W], got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def class_frequency_weights(
    labels: Iterable[Any],
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    *,
    method: str = "inverse_log",
    c: float = 1.02,
) -> torch.Tensor:
    """Class weights from a dataset's label maps, for :class:`WeightedCrossEntropyLoss`.

    labels: an iterable of integer label maps ``[H, W]`` or batches ``[N, H, W]`` (torch or
    numpy); pixels equal to ``ignore_index`` are not counted. Returns float32 ``[C]``.

    - ``method="inverse_log"`` (ENet, Paszke et al. 2016): ``w_c = 1 / ln(c + p_c)`` with
      ``p_c`` the fraction of valid pixels of class c and ``c = 1.02``; weights lie in
      ``(1/ln(2.02), 1/ln(1.02)] = (1.42, 50.5]``; a class never seen gets ``1/ln(c)``.
    - ``method="median_frequency"`` (Eigen & Fergus 2015, SegNet): ``freq_c = count_c /
      (valid pixels of the images where c appears)``, ``w_c = median(freq) / freq_c`` (median
      over the classes that appear); a class never seen gets the largest seen weight.
    """
    num_classes = check_num_classes(num_classes)
    ignore_index = check_ignore_index(ignore_index, allow_none=False)
    if method not in WEIGHT_METHODS:
        raise ValueError(f"method must be one of {WEIGHT_METHODS}, got {method!r}")
    if not (isinstance(c, numbers.Real) and c > 1.0):
        raise ValueError(f"c must be a number > 1 (ENet uses 1.02), got {c!r}")
    counts = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)  # valid pixels of images containing c
    for item in labels:
        arr = _label_array(item)
        for img in arr:
            v = img[img != ignore_index]
            if v.size and (v.min() < 0 or v.max() >= num_classes):
                bad = np.unique(v[(v < 0) | (v >= num_classes)])[:5].tolist()
                raise ValueError(
                    f"labels hold values outside [0, {num_classes}) that are not "
                    f"ignore_index={ignore_index}: {bad}"
                )
            cnt = np.bincount(v, minlength=num_classes)
            counts += cnt
            image_pixels[cnt > 0] += v.size
    total = counts.sum()
    if total == 0:
        raise ValueError("class_frequency_weights got no valid (non-ignored) label pixel at all")
    if method == "inverse_log":
        w = 1.0 / np.log(c + counts / total)
    else:
        seen = counts > 0
        freq = np.zeros(num_classes)
        freq[seen] = counts[seen] / image_pixels[seen]
        w = np.zeros(num_classes)
        w[seen] = np.median(freq[seen]) / freq[seen]
        w[~seen] = w[seen].max()
    return torch.as_tensor(w, dtype=torch.float32)
