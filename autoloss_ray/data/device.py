"""The search's training set decoded once and kept on the device, batches made there.

:class:`DeviceBatches` replaces the per-iteration ``DataLoader`` of a proxy trial (on by
default on CUDA, ``data_on_device`` in :class:`~autoloss_ray.train.TrialConfig`):

- every training image is decoded once and resized to ``image_size`` exactly as the
  evaluation transform does (``resize_pair``: bilinear image, nearest label, the whole scene),
  and kept as one ``uint8`` tensor ``[n, 3, h, w]`` (labels ``[n, h, w]``) on the device;
- the order of the images is the DataLoader path's (the same seeded epochs of permutations,
  :func:`batch_schedule`), and so are the random draws of every augmentation: each item ``k``
  takes the scale, crop offset and flip of ``numpy.random.default_rng([seed, index, k])``,
  drawn in the same order as :class:`~autoloss_ray.data.transforms.JointTransform`; the whole
  schedule is drawn on the host once and uploaded, so making a batch never waits for the host;
- the augmentation itself (scale by ``s``, pad bottom/right, crop, flip) is one
  ``grid_sample`` per batch on the device, applied to the cached ``image_size`` copy.

What differs from the DataLoader path (documented, tested): the scale is applied to the
cached ``image_size`` copy (bilinear, no antialiasing) instead of to the full-resolution image
(PIL bilinear), and an image whose aspect ratio differs from ``image_size`` is squashed to it
first (the DataLoader path scales its shorter side and crops). The padding is the mean colour
(0 after normalisation; the DataLoader path pads with the mean rounded to uint8) and
``ignore_index`` for labels, as there. Without scaling (``scale_range=(1, 1)``) and with images
already of ``image_size``, the batches equal the DataLoader path's (flips included).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from autoloss_ray.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_label_values,
    resize_pair,
)

__all__ = ["DeviceBatches", "batch_schedule"]


def batch_schedule(n: int, iterations: int, batch_size: int, seed: int) -> np.ndarray:
    """``[iterations, batch_size]`` item indices: seeded epochs of random permutations of
    ``range(n)``, the order of ``train._InfiniteSampler`` (the DataLoader path)."""
    rng = np.random.default_rng([seed, 31337])
    total = iterations * batch_size
    out = np.empty(total, dtype=np.int64)
    k = 0
    while k < total:
        perm = rng.permutation(n)
        m = min(n, total - k)
        out[k : k + m] = perm[:m]
        k += m
    return out.reshape(iterations, batch_size)


class DeviceBatches:
    """Iterate ``iterations`` training batches of ``dataset`` made on ``device``.

    dataset: a :class:`SegmentationDataset` or :class:`SegmentationSubset` (the trial's train
    split); its base dataset's ``image_size``, ``scale_range``, ``flip_prob``, ``seed`` and the
    subset's ``augment`` flag are used. Yields (images float32 [B, 3, h, w] normalised,
    labels int64 [B, h, w]) on ``device`` (images in ``channels_last`` if asked).
    """

    def __init__(
        self,
        dataset,
        *,
        batch_size: int,
        iterations: int,
        seed: int,
        device: torch.device | str,
        channels_last: bool = False,
    ) -> None:
        from autoloss_ray.data import _unwrap

        base, indices = _unwrap(dataset)
        self.device = torch.device(device)
        self.batch_size, self.iterations = int(batch_size), int(iterations)
        self.channels_last = bool(channels_last)
        self.augment = bool(getattr(dataset, "augment", getattr(dataset, "train", False)))
        self.size = base.image_size
        self.ignore_index = int(base.ignore_index)
        th, tw = self.size
        n = len(indices)
        images = np.empty((n, th, tw, 3), dtype=np.uint8)
        label_dtype = np.uint8 if 0 <= self.ignore_index < 256 and base.num_classes <= 256 else np.int64
        labels = np.empty((n, th, tw), dtype=label_dtype)
        for k, i in enumerate(indices):
            image, label = base.load_raw(int(i))
            check_label_values(label, base.num_classes, base.ignore_index, base.describe(int(i)))
            img, lab = resize_pair(image, label, self.size)
            images[k], labels[k] = img, lab
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(self.device)
        self.labels = torch.from_numpy(labels).to(self.device)
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

        sched = batch_schedule(n, self.iterations, self.batch_size, int(seed))
        self.schedule = torch.from_numpy(sched).to(self.device)
        self.theta = None
        if self.augment:
            theta = np.zeros((self.iterations, self.batch_size, 2, 3), dtype=np.float32)
            lo, hi = base.scale_range
            for t in range(self.iterations):
                for b in range(self.batch_size):
                    draw = t * self.batch_size + b
                    idx = int(indices[int(sched[t, b])])
                    rng = np.random.default_rng([base.seed, idx, draw])
                    theta[t, b] = _affine(rng, lo, hi, base.flip_prob, th, tw)
            self.theta = torch.from_numpy(theta).to(self.device)

    def __len__(self) -> int:
        return self.iterations

    def _normalise(self, img_u8: torch.Tensor) -> torch.Tensor:
        # the same float32 operations as transforms.normalize, in the same order
        return (img_u8.float() / 255.0 - self.mean) / self.std

    def batch(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``t`` (no host synchronisation)."""
        idx = self.schedule[t]
        x = self._normalise(self.images.index_select(0, idx))
        y = self.labels.index_select(0, idx)
        if self.theta is not None:
            grid = F.affine_grid(self.theta[t], list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            # labels + 1 sampled by nearest neighbour; the zero padding becomes ignore_index
            yl = F.grid_sample((y.to(torch.float32) + 1.0).unsqueeze(1), grid, mode="nearest",
                               padding_mode="zeros", align_corners=False).squeeze(1)
            y = torch.where(yl > 0, yl.to(torch.int64) - 1, self.ignore_index)
        else:
            y = y.to(torch.int64)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for t in range(self.iterations):
            yield self.batch(t)


def _affine(rng: np.random.Generator, lo: float, hi: float, flip_prob: float, th: int,
            tw: int) -> np.ndarray:
    """The ``affine_grid`` matrix (align_corners=False) of one random scale-crop-flip of an
    ``(th, tw)`` image to ``(th, tw)``, with JointTransform._augment's draws in its order.

    Output pixel j (of the crop) shows scaled pixel x + j (x + tw - 1 - j when flipped), i.e.
    input pixel (x + j + 1/2) / s - 1/2; in normalised coordinates u = +-x_out / s + b."""
    s = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
    nh, nw = max(1, round(th * s)), max(1, round(tw * s))
    y = int(rng.integers(0, max(nh, th) - th + 1))
    x = int(rng.integers(0, max(nw, tw) - tw + 1))
    flip = rng.random() < flip_prob
    # the scale actually applied per axis is nh / th (nw / tw), as resize_pair would
    sy, sx = nh / th, nw / tw
    return np.array(
        [[(-1.0 if flip else 1.0) / sx, 0.0, (2.0 * x / tw + 1.0) / sx - 1.0],
         [0.0, 1.0 / sy, (2.0 * y / th + 1.0) / sy - 1.0]],
        dtype=np.float32,
    )
