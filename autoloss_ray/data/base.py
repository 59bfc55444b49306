"""Common base of the segmentation datasets and the hold-out subset.

Every dataset item is addressed either by an index ``i`` or by a pair ``(i, draw)``: the pair
form gives the augmentation its own seed (``numpy`` generator seeded by
``(dataset seed, i, draw)``), so a training run is reproducible whatever the number of
DataLoader workers. Plain ``dataset[i]`` uses ``draw = 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from autoloss_ray.data.transforms import (
    EVAL_PROTOCOLS,
    JointTransform,
    as_size,
    check_inference_size,
    check_label_values,
)

__all__ = ["SegmentationDataset", "SegmentationSubset", "read_rgb", "read_label"]


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
    ignore_index: int = 255

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
        self, index: int, *, augment: bool | None = None, draw: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ``index``; ``augment`` overrides the dataset's ``train`` flag."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {self.name} of length {n}")
        index = index % n
        augment = self.train if augment is None else augment
        image, label = self.load_raw(index)
        check_label_values(label, self.num_classes, self.ignore_index, self.describe(index))
        rng = np.random.default_rng([self.seed, index, int(draw)]) if augment else None
        return self.transform(augment)(image, label, rng)

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
        self, index: int, *, augment: bool | None = None, draw: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset.get(
            self.indices[index], augment=self.augment if augment is None else augment, draw=draw
        )

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(key, tuple):
            return self.get(int(key[0]), draw=int(key[1]))
        return self.get(int(key))

    def __repr__(self) -> str:
        return f"SegmentationSubset(len={len(self)}, augment={self.augment}, of={self.dataset!r})"
