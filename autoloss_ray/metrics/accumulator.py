"""Streaming dataset-level accumulation of the six metrics, and one-shot :func:`evaluate`."""

from __future__ import annotations

from typing import Any

import torch

from autoloss_ray.checks import check_ignore_index, check_num_classes, check_tolerance
from autoloss_ray.metrics._labels import _check, _check_values, check_boundary_classes
from autoloss_ray.metrics.counts import _all_stats, _native_stats
from autoloss_ray.metrics.scores import scores_from_stats
from autoloss_ray.vocabulary import DEFAULT_BOUNDARY_TOLERANCE, IGNORE_INDEX

__all__ = ["MetricAccumulator", "evaluate"]


class MetricAccumulator:
    """Streaming dataset-level accumulation of all six metrics.

    ``update(pred, target)`` adds a batch ([N, H, W] or [H, W], torch or numpy; maps of
    different sizes in different batches are fine); ``compute()`` turns the sums into the six
    metrics; ``reset()`` starts over. The sums live on ``device`` if given, else on the device
    of the first batch (later batches are moved there).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int | None = IGNORE_INDEX,
        boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
        device: torch.device | str | None = None,
        boundary_classes: str = "all",
        background_index: int = 0,
    ) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.ignore_index = check_ignore_index(ignore_index)
        self.boundary_tolerance = check_tolerance(boundary_tolerance)
        self._background = check_boundary_classes(boundary_classes, background_index,
                                                  self.num_classes)
        self.boundary_classes = boundary_classes
        self.background_index = int(background_index)
        self.device = torch.device(device) if device is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        C = self.num_classes
        dev = self.device if self.device is not None else torch.device("cpu")
        self._confusion = torch.zeros(C, C, dtype=torch.int64, device=dev)
        self._band_confusion = torch.zeros(C, C, dtype=torch.int64, device=dev)
        self._bf1 = torch.zeros(4, C, dtype=torch.int64, device=dev)
        self._pixels = 0
        self._images = 0

    @property
    def confusion(self) -> torch.Tensor:
        """int64 [C, C] confusion matrix M[g, p] accumulated so far."""
        return self._confusion

    @property
    def band_confusion(self) -> torch.Tensor:
        """int64 [C, C] confusion matrix restricted to the boundary band."""
        return self._band_confusion

    @property
    def bf1_counts(self) -> torch.Tensor:
        """int64 [4, C] rows (n_p, n_g, m_p, m_g) accumulated so far."""
        return self._bf1

    @property
    def num_images(self) -> int:
        return self._images

    def update(self, pred: Any, target: Any) -> None:
        """Add a batch of label maps pred, target: [N, H, W] or [H, W]."""
        dev = self.device
        if dev is None and self._images > 0:
            dev = self._confusion.device
        p, t, pred_all_classes = _check(
            pred, target, self.num_classes, self.ignore_index, device=dev, values=False
        )
        # On CPU the counts kernel checks the label values as it counts (issue 31); the value
        # check runs where it does not apply (GPU: as before) or found a bad label (to raise).
        stats = _native_stats(p, t, self.num_classes, self.ignore_index,
                              self.boundary_tolerance, self._background)
        if stats is None:
            pred_all_classes = _check_values(p, t, self.num_classes, self.ignore_index)
        if self._confusion.device != t.device:  # first batch decides the device
            self._confusion = self._confusion.to(t.device)
            self._band_confusion = self._band_confusion.to(t.device)
            self._bf1 = self._bf1.to(t.device)
        cm, bcm, bf = stats if stats is not None else _all_stats(
            p, t, self.num_classes, self.ignore_index, self.boundary_tolerance, pred_all_classes,
            self._background,
        )
        self._confusion += cm
        self._band_confusion += bcm
        self._bf1 += bf
        self._images += t.shape[0]
        self._pixels += t.numel()

    def compute(self, *, sync: bool = False, group: Any = None) -> dict[str, float]:
        """The six metrics as floats in [0, 1] (nan for a mean over no class).

        sync=True: of the sums over all ranks of the torch.distributed ``group`` (default
        group; see :meth:`reduced`), which every rank must call together; this accumulator
        keeps its local sums.
        """
        if not isinstance(sync, bool):
            raise TypeError(f"sync must be True or False, got {sync!r}")
        if sync:
            return self.reduced(group=group).compute()
        if self._images == 0:
            raise ValueError("no data: call update(pred, target) at least once before compute()")
        return scores_from_stats(
            self._confusion, self._band_confusion, self._bf1, ignore_index=self.ignore_index,
            bf1_background=self._background,
        )

    def reduced(self, *, group: Any = None) -> MetricAccumulator:
        """A new accumulator holding the sums of this one over all ranks of a torch.distributed
        process group (default: the default group): one all-reduce of the integer counts
        (confusion matrices, BF1 counts, images, pixels), so N ranks that each saw a part of
        a dataset give exactly the numbers of one process that saw all of it. A collective:
        every rank calls it. The counts travel on the sums' device (pass ``device=`` to the
        accumulator so that a rank without batches matches the others, e.g. "cuda" for
        NCCL). This accumulator is unchanged. RuntimeError when torch.distributed is not
        initialized.
        """
        from autoloss_ray.distributed import all_reduce_counts

        C = self.num_classes
        dev = self._confusion.device
        meta = torch.tensor([self._images, self._pixels], dtype=torch.int64, device=dev)
        flat = torch.cat([self._confusion.reshape(-1), self._band_confusion.reshape(-1),
                          self._bf1.reshape(-1), meta])
        all_reduce_counts(flat)
        out = MetricAccumulator(C, ignore_index=self.ignore_index,
                                boundary_tolerance=self.boundary_tolerance, device=self.device,
                                boundary_classes=self.boundary_classes,
                                background_index=self.background_index)
        cc = C * C
        out._confusion = flat[:cc].view(C, C).clone()
        out._band_confusion = flat[cc:2 * cc].view(C, C).clone()
        out._bf1 = flat[2 * cc:2 * cc + 4 * C].view(4, C).clone()
        out._images, out._pixels = (int(v) for v in flat[2 * cc + 4 * C:])
        return out


def evaluate(
    pred: Any,
    target: Any,
    num_classes: int,
    *,
    ignore_index: int | None = IGNORE_INDEX,
    boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
    boundary_classes: str = "all",
    background_index: int = 0,
) -> dict[str, float]:
    """All six metrics of pred against target, accumulated over the batch.

    pred, target: integer label maps [N, H, W] or [H, W], torch (any device) or numpy.
    boundary_classes: "all" (default) or "foreground" (the BIoU band and the BF1 mean leave
    out ``background_index``, as the official VOC evaluation does).
    Returns {"miou", "fwiou", "biou", "bf1", "macc", "gacc"} as floats in [0, 1]; a mean over
    an empty class set (everything ignored; no boundary for biou/bf1) is nan.
    """
    acc = MetricAccumulator(
        num_classes, ignore_index=ignore_index, boundary_tolerance=boundary_tolerance,
        boundary_classes=boundary_classes, background_index=background_index,
    )
    acc.update(pred, target)
    return acc.compute()
