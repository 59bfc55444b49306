"""Common base of the segmentation datasets and the hold-out subset.

Every dataset item is addressed either by an index ``i`` or by a pair ``(i, draw)``: the pair
form gives the augmentation its own seed (``numpy`` generator seeded by
``(dataset seed, i, draw)``), so a training run is reproducible whatever the number of
DataLoader workers. Plain ``dataset[i]`` uses ``draw = 0``.

:meth:`SegmentationDataset.cache_decoded` keeps the decoded, checked ``(image, label)`` of
items after their first load, up to a byte budget, so that an item drawn again is neither
decoded nor checked again (the proxy trial turns it on for its training images on the
DataLoader path: ``data_cache_mb``). The cache holds what ``load_raw`` returned at full
resolution (the augmentation still scales and crops it each draw, with the same random
draws), so items are the same with or without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from autoloss_ray.data.transforms import (
    JointTransform,
    as_size,
    check_inference_size,
    check_label_values,
)
from autoloss_ray.vocabulary import EVAL_PROTOCOLS, IGNORE_INDEX

__all__ = ["SegmentationDataset", "SegmentationSubset", "DecodedCache", "read_rgb",
           "read_label"]


def read_rgb(path: Path) -> np.ndarray:
    """RGB uint8 [H, W, 3] from an image file (clear error if unreadable)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {path} is missing") from None
    except OSError as exc:
        raise ValueError(f"cannot read image file {path}: {exc}") from None


def read_label(path: Path) -> np.ndarray:
    """Integer label map [H, W] from a PNG (palette indices for mode 'P', never RGB)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA"):
                raise ValueError(
                    f"label file {path} is an {im.mode} image; expected a single-channel "
                    "(L, P or I) map of class ids"
                )
            return np.asarray(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"label file {path} is missing") from None
    except OSError as exc:
        raise ValueError(f"cannot read label file {path}: {exc}") from None


class DecodedCache:
    """Decoded, checked ``(image, label)`` pairs by item index, filled on first load while
    their bytes fit in ``max_bytes`` (items that do not fit are loaded from their files every
    time); ``indices``: the only items kept (None: any).

    Arrays are stored read-only, so no caller can change a cached item. An integer label
    whose values fit in ``uint8`` is stored as ``uint8`` (CamVid's int64 maps take an eighth)
    and handed back in its own dtype (the same values), so a hit equals a fresh load.
    Per process: with DataLoader workers, each worker fills its own copy."""

    def __init__(self, max_bytes: int, indices=None) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self.indices = None if indices is None else frozenset(int(i) for i in indices)
        self.nbytes = 0
        self.loads = 0  # items loaded from their files through this cache (hits do not count)
        self._items: dict[int, tuple[np.ndarray, np.ndarray, np.dtype]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        hit = self._items.get(index)
        if hit is None:
            return None
        image, label, dtype = hit
        return image, (label if label.dtype == dtype else label.astype(dtype))

    def put(self, index: int, image: np.ndarray, label: np.ndarray) -> None:
        self.loads += 1
        if index in self._items or (self.indices is not None and index not in self.indices):
            return
        stored = label
        if (label.dtype.kind in "iu" and label.dtype != np.uint8 and label.size
                and int(label.min()) >= 0 and int(label.max()) <= 255):
            stored = label.astype(np.uint8)
        size = image.nbytes + stored.nbytes
        if self.nbytes + size > self.max_bytes:
            return
        image = image.view()  # flags of a view: the caller's own arrays stay as they were
        image.flags.writeable = False
        stored = stored.view() if stored is label else stored
        stored.flags.writeable = False
        self._items[index] = (image, stored, label.dtype)
        self.nbytes += size


class SegmentationDataset(torch.utils.data.Dataset):
    """Base class: subclasses set ``num_classes``, ``class_names``, ``ignore_index`` and
    implement ``__len__`` and ``load_raw(i) -> (uint8 image [H, W, 3], int label [H, W])``
    with labels already mapped to ``[0, C) U {ignore_index}``.

    ``__getitem__`` returns (image float32 [3, h, w] normalised, label int64 [h, w]).
    Items that are not augmented follow ``eval_protocol``: ``"train_size"`` (default here)
    resizes image and label to ``image_size``; ``"native"`` keeps the label at its own
    resolution and feeds the image at ``inference_size`` (see
    :func:`~autoloss_ray.data.transforms.inference_shape`), so items of one dataset may
    differ in size (evaluate with :func:`autoloss_ray.train.evaluate_model`).
    """

    name: str = "base"
    num_classes: int
    class_names: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX
    decoded_cache: DecodedCache | None = None  # see cache_decoded

    def __init__(
        self,
        *,
        image_size: int | tuple[int, int] = 128,
        train: bool = True,
        seed: int = 0,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip_prob: float = 0.5,
        eval_protocol: str = "train_size",
        inference_size: str | tuple[int, int] | None = None,
    ) -> None:
        self.image_size = as_size(image_size)
        if eval_protocol not in EVAL_PROTOCOLS:
            raise ValueError(
                f"eval_protocol must be one of {EVAL_PROTOCOLS}, got {eval_protocol!r}"
            )
        self.eval_protocol = eval_protocol
        self.inference_size = check_inference_size(inference_size)
        self.train = bool(train)
        self.seed = int(seed)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be 0 < lo <= hi, got {scale_range!r}")
        self.flip_prob = float(flip_prob)

    # -- to implement -------------------------------------------------------------------
    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def describe(self, index: int) -> str:
        return f"{self.name} item {index}"

    # -- common -------------------------------------------------------------------------
    def cache_decoded(self, max_bytes: int, indices=None) -> DecodedCache:
        """Keep items' decoded, checked ``(image, label)`` after their first load, up to
        ``max_bytes`` in all (``indices``: only these items; None: any); returns the
        :class:`DecodedCache` (``max_bytes`` 0: nothing is kept). Items are unchanged."""
        self.decoded_cache = DecodedCache(max_bytes, indices)
        return self.decoded_cache

    def load_checked(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``load_raw(index)`` with its label values checked, through the decoded cache when
        there is one."""
        cache = self.decoded_cache
        if cache is not None:
            hit = cache.get(index)
            if hit is not None:
                return hit
        image, label = self.load_raw(index)
        check_label_values(label, self.num_classes, self.ignore_index, self.describe(index))
        if cache is not None:
            cache.put(index, image, label)
        return image, label

    def transform(self, augment: bool) -> JointTransform:
        return JointTransform(
            size=self.image_size,
            train=augment,
            ignore_index=self.ignore_index,
            scale_range=self.scale_range,
            flip_prob=self.flip_prob,
            protocol=self.eval_protocol,
            inference_size=self.inference_size,
        )

    def get(
        self, index: int, *, augment: bool | None = None, draw: int = 0,
        uint8_labels: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ``index``; ``augment`` overrides the dataset's ``train`` flag;
        ``uint8_labels``: a label map loaded as ``uint8`` comes back ``uint8`` (else int64)."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {self.name} of length {n}")
        index = index % n
        augment = self.train if augment is None else augment
        image, label = self.load_checked(index)
        rng = np.random.default_rng([self.seed, index, int(draw)]) if augment else None
        return self.transform(augment)(image, label, rng, uint8_labels=uint8_labels)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(key, tuple):
            index, draw = key
            return self.get(int(index), draw=int(draw))
        return self.get(int(key))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(len={len(self)}, classes={self.num_classes}, "
            f"image_size={self.image_size}, train={self.train})"
        )


class FileDataset(SegmentationDataset):
    """A dataset of ``(image file, label file)`` pairs, ``self.items``, set by the subclass's
    ``__init__``; ``title`` names the dataset in messages (e.g. ``"CamVid"``)."""

    title: str = "files"
    items: list[tuple[Path, Path]]

    def __len__(self) -> int:
        return len(self.items)

    def describe(self, index: int) -> str:
        return f"{self.title} label file {self.items[index][1]}"

    def read_label_file(self, path: Path) -> np.ndarray:
        """The raw label map [H, W] in a label file (a subclass with another format overrides
        it)."""
        return read_label(path)

    def read_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 image [H, W, 3], raw label map [H, W]) of item ``index``; ValueError when
        their sizes differ."""
        img_path, lab_path = self.items[index]
        image, label = read_rgb(img_path), self.read_label_file(lab_path)
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"{self.title}: image {img_path} is {image.shape[:2]} but its label {lab_path} "
                f"is {label.shape}"
            )
        return image, label


class SegmentationSubset(torch.utils.data.Dataset):
    """A subset of a :class:`SegmentationDataset` by indices, with its own ``augment`` flag
    (the hold-out part of a training split is evaluated without augmentation)."""

    def __init__(
        self, dataset: SegmentationDataset, indices: Sequence[int], *, augment: bool
    ) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.augment = bool(augment)
        self.train = self.augment

    num_classes = property(lambda self: self.dataset.num_classes)
    class_names = property(lambda self: self.dataset.class_names)
    ignore_index = property(lambda self: self.dataset.ignore_index)
    image_size = property(lambda self: self.dataset.image_size)
    name = property(lambda self: self.dataset.name)

    def __len__(self) -> int:
        return len(self.indices)

    def get(
        self, index: int, *, augment: bool | None = None, draw: int = 0,
        uint8_labels: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        extra = {"uint8_labels": True} if uint8_labels else {}
        return self.dataset.get(
            self.indices[index], augment=self.augment if augment is None else augment,
            draw=draw, **extra,
        )

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(key, tuple):
            return self.get(int(key[0]), draw=int(key[1]))
        return self.get(int(key))

    def __repr__(self) -> str:
        return f"SegmentationSubset(len={len(self)}, augment={self.augment}, of={self.dataset!r})"
