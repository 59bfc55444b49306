"""CamVid in the SegNet layout: ``<root>/<split>/*.png`` with labels in ``<root>/<split>annot``.

11 classes (0 sky ... 10 bicyclist); label 11 (unlabelled) becomes ``ignore_index`` 255.
Images and labels are paired by file name; a missing folder, an empty split or an image
without its label (or the reverse) is a clear error before anything trains.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autoloss_ray.data.base import FileDataset

__all__ = ["CamVid", "CAMVID_CLASSES"]

CAMVID_CLASSES = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign_symbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")


class CamVid(FileDataset):
    name = "camvid"
    title = "CamVid"
    num_classes = 11
    class_names = CAMVID_CLASSES
    ignore_index = 255
    unlabelled = 11

    def __init__(
        self, root: str | Path, *, split: str = "train", **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.split = split
        image_dir, label_dir = self.root / split, self.root / f"{split}annot"
        for d in (image_dir, label_dir):
            if not d.is_dir():
                raise FileNotFoundError(
                    f"CamVid: folder {d} is missing; expected the SegNet layout "
                    f"<root>/{split}/ (images) and <root>/{split}annot/ (labels)"
                )
        images = {p.name: p for p in image_dir.iterdir() if p.suffix.lower() in _IMAGE_EXTS}
        labels = {p.name: p for p in label_dir.iterdir() if p.suffix.lower() in _IMAGE_EXTS}
        if not images:
            raise ValueError(f"CamVid: no images in {image_dir}")
        only_img = sorted(set(images) - set(labels))
        only_lab = sorted(set(labels) - set(images))
        if only_img or only_lab:
            raise ValueError(
                f"CamVid: images and labels of split {split!r} do not pair up by file name: "
                f"{len(only_img)} image(s) without a label in {label_dir} (e.g. {only_img[:3]}), "
                f"{len(only_lab)} label(s) without an image in {image_dir} (e.g. {only_lab[:3]})"
            )
        names = sorted(images)
        self.items = [(images[n], labels[n]) for n in names]

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, label = self.read_pair(index)
        if label.dtype == np.uint8 and 0 <= self.ignore_index <= 255:
            # 8-bit maps stay 8-bit (the item's label becomes int64 once, in the transform):
            # an eighth of the bytes to remap, check, cache and resize
            return image, np.where(label == self.unlabelled, np.uint8(self.ignore_index),
                                   label)
        label = label.astype(np.int64)
        label[label == self.unlabelled] = self.ignore_index
        return image, label
