"""Joint image/label transforms (numpy in, torch out) and label validation.

Images travel as ``uint8`` numpy arrays ``[H, W, 3]``, labels as integer numpy arrays
``[H, W]``. Geometry is applied to both with the same parameters: bilinear for the image,
nearest for the label, so label values are never blended. Randomness comes only from the
``numpy.random.Generator`` handed in, which the datasets seed per (seed, index, draw).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "JointTransform",
    "as_size",
    "check_label_values",
    "normalize",
    "resize_pair",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def as_size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``128`` -> ``(128, 128)``; ``(h, w)`` stays. Raises ValueError on sizes < 1."""
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(f"image_size must be an int or a pair (h, w), got {image_size!r}")
    if min(size) < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size!r}")
    return size


def normalize(image: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` normalised with ImageNet mean/std."""
    x = image.astype(np.float32) / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def resize_pair(
    image: np.ndarray, label: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Resize image (bilinear) and label (nearest) to ``size = (h, w)``."""
    h, w = size
    if image.shape[:2] == (h, w) and label.shape == (h, w):
        return image, label
    img = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    lab = _resize_label(label, (h, w))
    return img, lab


def _resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if label.shape == (h, w):
        return label
    # Nearest neighbour by index arithmetic: exact for any integer dtype (PIL's nearest on
    # mode "I" would work too, but this keeps int64 labels untouched).
    ys = np.minimum((np.arange(h) + 0.5) * label.shape[0] / h, label.shape[0] - 1).astype(np.int64)
    xs = np.minimum((np.arange(w) + 0.5) * label.shape[1] / w, label.shape[1] - 1).astype(np.int64)
    return label[ys[:, None], xs[None, :]]


def check_label_values(
    label: np.ndarray, num_classes: int, ignore_index: int, where: str
) -> None:
    """Raise ValueError if ``label`` holds a value outside ``[0, C) U {ignore_index}``."""
    values = np.unique(label)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]
    if bad.size:
        raise ValueError(
            f"{where}: label values {bad[:10].tolist()} are outside the dataset's classes "
            f"0..{num_classes - 1} (and ignore {ignore_index})"
        )


@dataclass(frozen=True)
class JointTransform:
    """Resize (eval) or random scale-crop + horizontal flip (train) of an image/label pair.

    Train: scale the pair so that its shorter side is ``s * min(size)`` with ``s`` uniform in
    ``scale_range``, pad to at least ``size`` (image with the mean colour, label with
    ``ignore_index``), crop a random ``size`` window, flip with probability ``flip_prob``.
    Eval: resize straight to ``size`` (the whole scene is kept; aspect may change).
    Returns (image float32 [3, h, w] normalised, label int64 [h, w]).
    """

    size: tuple[int, int]
    train: bool
    ignore_index: int = 255
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip_prob: float = 0.5

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if image.ndim != 3 or image.shape[2] != 3 or label.shape != image.shape[:2]:
            raise ValueError(
                f"expected an RGB image [H, W, 3] and a label [H, W] of the same size, got "
                f"{image.shape} and {label.shape}"
            )
        if not self.train or rng is None:
            img, lab = resize_pair(image, label, self.size)
        else:
            img, lab = self._augment(image, label, rng)
        return normalize(img), torch.from_numpy(np.ascontiguousarray(lab).astype(np.int64))

    def _augment(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        th, tw = self.size
        lo, hi = self.scale_range
        s = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
        h0, w0 = label.shape
        factor = s * min(th, tw) / min(h0, w0)
        nh, nw = max(1, round(h0 * factor)), max(1, round(w0 * factor))
        img, lab = resize_pair(image, label, (nh, nw))
        ph, pw = max(th - nh, 0), max(tw - nw, 0)
        if ph or pw:
            mean = np.round(IMAGENET_MEAN * 255).astype(np.uint8)
            img_p = np.empty((nh + ph, nw + pw, 3), dtype=np.uint8)
            img_p[:] = mean
            img_p[:nh, :nw] = img
            lab_p = np.full((nh + ph, nw + pw), self.ignore_index, dtype=lab.dtype)
            lab_p[:nh, :nw] = lab
            img, lab = img_p, lab_p
        y = int(rng.integers(0, lab.shape[0] - th + 1))
        x = int(rng.integers(0, lab.shape[1] - tw + 1))
        img, lab = img[y : y + th, x : x + tw], lab[y : y + th, x : x + tw]
        if rng.random() < self.flip_prob:
            img, lab = img[:, ::-1], lab[:, ::-1]
        return img, lab
