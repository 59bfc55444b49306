"""Datasets of the proxy task: synthetic (default), CamVid, VOC, Cityscapes, a user's folder
(:mod:`autoloss_ray.data.folder`); hold-out split.

``build_dataset(name, root=..., split=..., image_size=..., train=..., seed=...)`` returns a
:class:`~autoloss_ray.data.base.SegmentationDataset` whose items are
(image float32 [3, H, W] normalised, label int64 [H, W]) with ``num_classes``,
``ignore_index`` and ``class_names`` attributes. ``holdout_split`` carves the search's
hold-out set out of a training split (the paper rewards on images the proxy never saw).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autoloss_ray.data.base import SegmentationDataset, SegmentationSubset
from autoloss_ray.data.camvid import CamVid
from autoloss_ray.data.check import check_data
from autoloss_ray.data.cityscapes import Cityscapes
from autoloss_ray.data.folder import FolderDataset
from autoloss_ray.data.synthetic import SyntheticScenes
from autoloss_ray.data.voc import VOCSegmentation

__all__ = [
    "DATASETS",
    "SegmentationDataset",
    "SegmentationSubset",
    "build_dataset",
    "check_data",
    "holdout_split",
    "subset",
]

DATASETS: dict[str, type[SegmentationDataset]] = {
    "synthetic": SyntheticScenes,
    "camvid": CamVid,
    "voc": VOCSegmentation,
    "cityscapes": Cityscapes,
    "folder": FolderDataset,
}


def build_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    split: str = "train",
    image_size: int | tuple[int, int] | str = 128,
    train: bool = True,
    seed: int = 0,
    **kwargs: Any,
) -> SegmentationDataset:
    """Dataset ``name`` (one of ``DATASETS``, or a user's ``MODULE:FUNCTION``: see
    :mod:`autoloss_ray.data.plugin`). ``train`` turns on augmentation.

    Extra keyword arguments go to the dataset class (e.g. ``length`` for synthetic,
    ``sbd_root`` for voc, ``scale_range`` / ``flip_prob`` / ``eval_protocol`` /
    ``inference_size`` for all). ``image_size`` may be an int (square), ``(h, w)`` or "HxW".
    """
    from autoloss_ray.data.transforms import parse_image_size

    image_size = parse_image_size(image_size)
    if ":" in str(name):  # a user's MODULE:FUNCTION (autoloss_ray.data.plugin)
        from autoloss_ray.data.plugin import PluginDataset

        return PluginDataset(name, root=None if root is None else str(Path(root).expanduser()),
                             split=split, image_size=image_size, train=train, seed=seed,
                             **kwargs)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    cls = DATASETS[name]
    common = dict(split=split, image_size=image_size, train=train, seed=seed, **kwargs)
    if name == "synthetic":
        if root is not None:
            raise ValueError(f"the synthetic dataset takes no data root, got root={root!r}")
        return cls(**common)
    if root is None or str(root) == "":
        raise ValueError(f"dataset {name!r} needs root= (data_root) pointing at its files")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} for dataset {name!r} is not a directory")
    return cls(root, **common)


def holdout_split(
    dataset: SegmentationDataset, fraction: float, seed: int = 0
) -> tuple[SegmentationSubset, SegmentationSubset]:
    """Seeded random split into (search-train, hold-out) parts of ``dataset``.

    The hold-out part has ``round(fraction * len)`` items (at least 1) and is never augmented;
    the train part keeps the dataset's ``train`` flag. Raises ValueError if either part would
    be empty or ``fraction`` is not in (0, 1).
    """
    fraction = float(fraction)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    n = len(dataset)
    n_hold = max(1, int(round(fraction * n)))
    if n_hold >= n:
        raise ValueError(
            f"a hold-out fraction of {fraction} leaves no training images out of {n} "
            f"(hold-out {n_hold}); use a larger dataset or a smaller fraction"
        )
    perm = np.random.default_rng([int(seed), 104729]).permutation(n)
    hold, train = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    base, idx_map = _unwrap(dataset)
    return (
        SegmentationSubset(base, [idx_map[i] for i in train], augment=dataset.train),
        SegmentationSubset(base, [idx_map[i] for i in hold], augment=False),
    )


def subset(
    dataset: SegmentationDataset, size: int, seed: int = 0
) -> SegmentationDataset | SegmentationSubset:
    """A seeded random ``size``-item subset (the whole dataset if ``size`` <= 0 or >= len)."""
    n = len(dataset)
    if size <= 0 or size >= n:
        return dataset
    idx = np.sort(np.random.default_rng([int(seed), 15485863]).permutation(n)[:size])
    base, idx_map = _unwrap(dataset)
    return SegmentationSubset(base, [idx_map[i] for i in idx], augment=dataset.train)


def _unwrap(dataset) -> tuple[SegmentationDataset, Sequence[int]]:
    if isinstance(dataset, SegmentationSubset):
        return dataset.dataset, dataset.indices
    if isinstance(dataset, SegmentationDataset):
        return dataset, range(len(dataset))
    raise TypeError(f"expected a SegmentationDataset or subset, got {type(dataset).__name__}")
