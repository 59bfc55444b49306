"""Joint image/label transforms (numpy in, torch out) and label validation.

Images travel as ``uint8`` numpy arrays ``[H, W, 3]``, labels as integer numpy arrays
``[H, W]``. Geometry is applied to both with the same parameters: bilinear for the image,
nearest for the label, so label values are never blended. Randomness comes only from the
``numpy.random.Generator`` handed in, which the datasets seed per (seed, index, draw).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from autoloss_ray.vocabulary import EVAL_PROTOCOLS, IGNORE_INDEX

__all__ = [
    "EVAL_PROTOCOLS",  # re-exported: defined in autoloss_ray.vocabulary
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "JointTransform",
    "as_size",
    "check_inference_size",
    "check_label_values",
    "inference_shape",
    "normalize",
    "parse_image_size",
    "resize_image",
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


_SIZE_RE = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?$")


def parse_image_size(value) -> int | tuple[int, int]:
    """A size from the command line or a config: ``96``, ``"96"``, ``"96x128"``,
    ``["96", "128"]``, ``(96, 128)`` -> ``96`` (square) or ``(96, 128)`` (height, width).

    The canonical form is an int when height == width (so old configs and manifests compare
    equal), else a tuple. Raises ValueError on anything else or on sizes < 1.
    """
    expected = f"image_size must be one int (square), 'HxW' or two ints H W, got {value!r}"
    tokens = value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match is None:
            raise ValueError(expected)
        tokens = [int(t) for t in match.groups() if t is not None]
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        tokens = [value]
    if not isinstance(tokens, (list, tuple)) or len(tokens) not in (1, 2):
        raise ValueError(expected)
    if len(tokens) == 1 and isinstance(tokens[0], str):
        return parse_image_size(tokens[0])
    ints = []
    for t in tokens:
        if isinstance(t, str) and re.fullmatch(r"\s*\d+\s*", t):
            ints.append(int(t))
        elif isinstance(t, (int, np.integer)) and not isinstance(t, bool):
            ints.append(int(t))
        else:
            raise ValueError(expected)
    if min(ints) < 1:
        raise ValueError(f"image_size must be >= 1 pixel, got {value!r}")
    h, w = ints[0], ints[-1]
    return h if h == w else (h, w)


def check_inference_size(value) -> str | tuple[int, int] | None:
    """``None`` (shorter side = the training size's shorter side, aspect kept), ``"native"``
    (the image's own resolution) or a size (see :func:`parse_image_size`) -> (h, w)."""
    if value is None or value == "native":
        return value
    return as_size(parse_image_size(value))


def inference_shape(
    native: tuple[int, int], size: tuple[int, int], inference_size=None
) -> tuple[int, int]:
    """The (h, w) at which a native ``(h0, w0)`` image is fed to the model when scored at
    native resolution: ``inference_size`` None scales it so its shorter side is
    ``min(size)`` (the training crops' scale at augmentation factor 1), keeping the aspect
    ratio; ``"native"`` keeps it; a pair is used as given."""
    h0, w0 = int(native[0]), int(native[1])
    if inference_size is None:
        factor = min(size) / min(h0, w0)
        return max(1, round(h0 * factor)), max(1, round(w0 * factor))
    if inference_size == "native":
        return h0, w0
    return as_size(inference_size)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 ``[H, W, 3]`` image to ``size = (h, w)``."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


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
    return resize_image(image, (h, w)), _resize_label(label, (h, w))


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
    """Raise ValueError if ``label`` holds a value outside ``[0, C) U {ignore_index}``.

    One elementwise pass finds whether any pixel is bad (the same test as on the unique
    values below); only then are the unique values computed, for the message."""
    label = np.asarray(label)
    outside = label >= num_classes
    if label.dtype.kind != "u":
        outside |= label < 0
    outside &= label != ignore_index
    if not outside.any():
        return
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
    Eval, ``protocol="train_size"``: resize both straight to ``size`` (the whole scene is
    kept; aspect may change; labels by nearest neighbour). Eval, ``protocol="native"``: the
    label is returned untouched at its own resolution and the image is resized to
    :func:`inference_shape` (``inference_size``), so the evaluator upsamples the logits to
    the label.
    Returns (image float32 [3, h, w] normalised, label int64 [h', w']).
    """

    size: tuple[int, int]
    train: bool
    ignore_index: int = IGNORE_INDEX
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip_prob: float = 0.5
    protocol: str = "train_size"
    inference_size: str | tuple[int, int] | None = None

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None, *,
        uint8_labels: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``uint8_labels``: a ``uint8`` label stays ``uint8`` (the same values; the
        evaluator stacks a batch in it and widens it once)."""
        if image.ndim != 3 or image.shape[2] != 3 or label.shape != image.shape[:2]:
            raise ValueError(
                f"expected an RGB image [H, W, 3] and a label [H, W] of the same size, got "
                f"{image.shape} and {label.shape}"
            )
        if (not self.train or rng is None) and self.protocol == "native":
            img = resize_image(image, inference_shape(label.shape, self.size,
                                                      self.inference_size))
            lab = label
        elif not self.train or rng is None:
            img, lab = resize_pair(image, label, self.size)
        else:
            img, lab = self._augment(image, label, rng)
        if uint8_labels and lab.dtype == np.uint8:
            return normalize(img), torch.from_numpy(lab.copy(order="C"))
        return normalize(img), torch.from_numpy(lab.astype(np.int64, order="C"))

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
