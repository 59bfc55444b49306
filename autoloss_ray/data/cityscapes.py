"""Cityscapes in torchvision's layout, fine annotations, labelIds mapped to the 19 trainIds.

``<root>/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with
``<root>/gtFine/<split>/<city>/<name>_gtFine_labelIds.png``. Every labelId that is not one of
the 19 evaluated classes (and -1, license plate) becomes ``ignore_index`` 255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autoloss_ray.data.base import FileDataset

__all__ = ["Cityscapes", "CITYSCAPES_CLASSES", "LABEL_TO_TRAIN_ID"]

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
# labelId -> trainId for the 19 evaluated classes (cityscapesScripts labels.py).
LABEL_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
_NUM_LABEL_IDS = 34  # labelIds 0..33


class Cityscapes(FileDataset):
    name = "cityscapes"
    title = "Cityscapes"
    num_classes = 19
    class_names = CITYSCAPES_CLASSES
    ignore_index = 255

    def __init__(self, root: str | Path, *, split: str = "train", **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.split = split
        image_dir = self.root / "leftImg8bit" / split
        label_dir = self.root / "gtFine" / split
        for d in (image_dir, label_dir):
            if not d.is_dir():
                raise FileNotFoundError(
                    f"Cityscapes: folder {d} is missing; expected <root>/leftImg8bit/{split}/"
                    f"<city>/*_leftImg8bit.png and <root>/gtFine/{split}/<city>/"
                    "*_gtFine_labelIds.png"
                )
        self.items: list[tuple[Path, Path]] = []
        for img in sorted(image_dir.glob("*/*_leftImg8bit.png")):
            stem = img.name[: -len("_leftImg8bit.png")]
            lab = label_dir / img.parent.name / f"{stem}_gtFine_labelIds.png"
            if not lab.is_file():
                raise FileNotFoundError(f"Cityscapes: label file {lab} for image {img} is missing")
            self.items.append((img, lab))
        if not self.items:
            raise ValueError(f"Cityscapes: no *_leftImg8bit.png images under {image_dir}/<city>/")
        lut = np.full(256, -1, dtype=np.int64)  # -1 marks values that are not labelIds
        lut[:_NUM_LABEL_IDS] = self.ignore_index
        for label_id, train_id in LABEL_TO_TRAIN_ID.items():
            lut[label_id] = train_id
        self._lut = lut

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, raw = self.read_pair(index)
        lab_path = self.items[index][1]
        if raw.min() < 0 or raw.max() > 255 or (self._lut[raw.astype(np.int64)] < 0).any():
            bad = np.unique(raw[(raw < 0) | (raw >= _NUM_LABEL_IDS)])
            raise ValueError(
                f"Cityscapes: label file {lab_path} holds values {bad[:10].tolist()} that are "
                f"not labelIds 0..{_NUM_LABEL_IDS - 1}"
            )
        return image, self._lut[raw.astype(np.int64)]
