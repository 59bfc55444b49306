"""Exact (non-differentiable) segmentation metrics, accumulated over a whole dataset.

The definitions: docs/paper.md#the-exact-metrics. Six metrics (:data:`METRICS`): mIoU, FWIoU, boundary IoU (trimap IoU),
boundary F1, mean accuracy and global accuracy. Everything is summed over the dataset first
(confusion matrices and boundary counts) and turned into ratios last; nothing is averaged per
image. A class whose denominator is 0 is left out of a mean; a mean over an empty class set
(e.g. every pixel ignored, or no boundary anywhere for BIoU/BF1) is ``float("nan")``.

Conventions
-----------
- ``ignore_index``: pixels whose *target* equals it never count anywhere. The ignore value is
  not a class: it has no boundary in the target, and if it lies inside ``[0, C)`` that class is
  left out of every mean (as torchmetrics does). ``pred`` may hold the ignore value only at
  pixels whose target is ignored.
- Boundary of class c in a label map L: ``B_c = (L == c) & ~erode3x3(L == c)`` with the image
  border counting as inside (:func:`autoloss_ray.morphology.erode3x3`); the union over classes
  is computed on the label map itself with the same ``erode3x3`` (a pixel is on the boundary
  of its own class iff a 3x3 neighbour inside the image carries another value).
- Tolerance: ``(2r+1) x (2r+1)`` square dilation, outside the image = 0. The per-class
  dilations of BF1 are done on bit-packed class sets (OR over the square window, separable,
  with log-doubling) so that all classes cost a few integer ops; this equals
  :func:`autoloss_ray.morphology.dilate` of every class map exactly (tested).
- BF1: boundaries and dilations are computed on the full label maps; only the counting of
  ``n_p, n_g, m_p, m_g`` is restricted to valid pixels (target != ignore).
- ``boundary_classes``: ``"all"`` (default) builds the BIoU band from the boundaries of every
  class and averages BF1 over every class; ``"foreground"`` leaves the class
  ``background_index`` (default 0) out of both, as the official release's VOC evaluation does
  (``drop_bg``): band = D_r(union_{c != bg} B_c(target)), BF1 mean over c != bg.

Inputs are torch tensors (any device; the work runs there) or numpy arrays, integer (or bool)
label maps of shape [N, H, W] or [H, W].

Modules (everything public is re-exported here, so ``from autoloss_ray.metrics import ...``
is the one import path):

- :mod:`.vocabulary`: the six metric names (:data:`METRICS`), :func:`parse_metric` of sums
  such as ``"miou+biou"`` and :func:`reward` (the one vocabulary of the project);
- :mod:`._labels`: the checks of label maps (:func:`check_labels`,
  :func:`check_boundary_classes`);
- :mod:`._boundary`: class codes, label boundaries and their bit-packed tolerance dilations;
- :mod:`.counts`: the dataset-level sums (:func:`confusion_matrix`, :func:`boundary_band`,
  :func:`bf1_counts`);
- :mod:`.scores`: the six metrics from those sums (:func:`scores_from_stats`);
- :mod:`.accumulator`: :class:`MetricAccumulator` and :func:`evaluate`.
"""

from __future__ import annotations

from autoloss_ray.metrics._labels import check_boundary_classes, check_labels
from autoloss_ray.metrics.accumulator import MetricAccumulator, evaluate
from autoloss_ray.metrics.counts import bf1_counts, boundary_band, confusion_matrix
from autoloss_ray.metrics.scores import scores_from_stats
from autoloss_ray.vocabulary import BOUNDARY_CLASSES, METRICS, parse_metric, reward

__all__ = [
    "METRICS",
    "BOUNDARY_CLASSES",
    "evaluate",
    "MetricAccumulator",
    "check_labels",
    "check_boundary_classes",
    "confusion_matrix",
    "boundary_band",
    "bf1_counts",
    "scores_from_stats",
    "parse_metric",
    "reward",
]
