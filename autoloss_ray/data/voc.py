"""PASCAL VOC 2012 segmentation in torchvision's VOCdevkit layout, optional SBD augmentation.

``root`` may be the folder holding ``VOCdevkit/``, ``VOCdevkit/`` itself, or ``VOC2012/``:

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png          (palette PNG, 0..20, 255 = border/ignore)
    VOC2012/ImageSets/Segmentation/<split>.txt  (train, val, trainval)

Split ``train_aug`` is the usual 10,582-image augmented set: ids from
``ImageSets/Segmentation/train_aug.txt`` when present, else (SBD train + SBD val + VOC train)
minus VOC val; each label from ``SegmentationClassAug/<id>.png``, else
``SegmentationClass/<id>.png``, else the SBD ``cls/<id>.mat`` (torchvision's SBDataset layout
under ``sbd_root``: ``img/``, ``cls/``, ``train.txt``, ``val.txt``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autoloss_ray.data.base import FileDataset, read_label

__all__ = ["VOCSegmentation", "VOC_CLASSES"]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
AUG_SPLITS = ("train_aug", "trainaug")


def _voc_dir(root: Path) -> Path:
    for cand in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (cand / "ImageSets" / "Segmentation").is_dir():
            return cand
    raise FileNotFoundError(
        f"VOC: no VOC2012/ImageSets/Segmentation under {root}; expected torchvision's layout "
        "<root>/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}"
    )


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"VOC: split file {path} is missing")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    # train_aug.txt files sometimes list "/JPEGImages/x.jpg /SegmentationClassAug/x.png"
    return [Path(i).stem for i in ids]


class VOCSegmentation(FileDataset):
    name = "voc"
    title = "VOC"
    num_classes = 21
    class_names = VOC_CLASSES
    ignore_index = 255

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        sbd_root: str | Path | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.split = split
        self.voc = _voc_dir(self.root)
        seg = self.voc / "ImageSets" / "Segmentation"
        self.sbd = self._find_sbd(sbd_root)
        if split in AUG_SPLITS:
            if (seg / "train_aug.txt").is_file():
                ids = _read_ids(seg / "train_aug.txt")
            else:
                if self.sbd is None:
                    raise FileNotFoundError(
                        f"VOC: split {split!r} needs {seg / 'train_aug.txt'} or an SBD folder "
                        f"(img/, cls/, train.txt, val.txt): pass sbd_root=..."
                    )
                val = set(_read_ids(seg / "val.txt"))
                pool = _read_ids(self.sbd / "train.txt") + _read_ids(self.sbd / "val.txt")
                pool += _read_ids(seg / "train.txt")
                ids = sorted(set(pool) - val)
        else:
            ids = _read_ids(seg / f"{split}.txt")
        if not ids:
            raise ValueError(f"VOC: split {split!r} lists no images")
        self.items = [self._paths(i, aug=split in AUG_SPLITS) for i in ids]

    def _find_sbd(self, sbd_root: str | Path | None) -> Path | None:
        if sbd_root is not None:
            p = Path(sbd_root).expanduser()
            if not (p / "cls").is_dir():
                raise FileNotFoundError(f"VOC: SBD folder {p} has no cls/ subfolder")
            return p
        for cand in (self.root / "SBD", self.root / "benchmark_RELEASE" / "dataset"):
            if (cand / "cls").is_dir():
                return cand
        return None

    def _paths(self, image_id: str, *, aug: bool) -> tuple[Path, Path]:
        img = self.voc / "JPEGImages" / f"{image_id}.jpg"
        if not img.is_file() and self.sbd is not None and aug:
            img = self.sbd / "img" / f"{image_id}.jpg"
        if not img.is_file():
            raise FileNotFoundError(f"VOC: image file {img} (id {image_id}) is missing")
        candidates = [self.voc / "SegmentationClass" / f"{image_id}.png"]
        if aug:
            candidates.insert(0, self.voc / "SegmentationClassAug" / f"{image_id}.png")
            if self.sbd is not None:
                candidates.append(self.sbd / "cls" / f"{image_id}.mat")
        for lab in candidates:
            if lab.is_file():
                return img, lab
        raise FileNotFoundError(
            f"VOC: label file for id {image_id} is missing (looked for "
            f"{', '.join(str(c) for c in candidates)})"
        )

    def read_label_file(self, path: Path) -> np.ndarray:
        """A PNG label, or an SBD ``.mat`` file's ``GTcls.Segmentation``."""
        if path.suffix == ".mat":
            from scipy.io import loadmat

            try:
                label = np.asarray(loadmat(path)["GTcls"][0]["Segmentation"][0])
            except (KeyError, IndexError, ValueError, OSError) as exc:
                raise ValueError(
                    f"VOC: cannot read SBD label {path} (expected GTcls.Segmentation): {exc}"
                ) from None
        else:
            label = read_label(path)
        return label

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, label = self.read_pair(index)
        return image, label.astype(np.int64)
