"""Check a dataset's files before anything runs: the split folders, their labels, label values.

``check_data(name, root=..., splits=[...])`` builds each split the run needs (which checks the
layout: every dataset's constructor refuses a missing split folder, a split without its
labels folder, images and labels that do not pair up) and reads a sample of label files
(``sample`` per split, evenly spaced over the split, first and last included) to check that
every value is a class id in ``[0, C)`` or the ignore index. The CLI and ``search.py`` call it
before Ray starts, so bad data fails in one line (exit 2) with nothing written; a bad label
file outside the sample still fails its trial with the file's name in the error. The folder
dataset (a user's own) is checked whole: :func:`autoloss_ray.data.folder.check_folder` reads
every mask of the splits once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from autoloss_ray.data.transforms import check_label_values
from autoloss_ray.vocabulary import IGNORE_INDEX

__all__ = ["check_data", "DEFAULT_SAMPLE"]

DEFAULT_SAMPLE = 16  # label files read per split


def check_data(
    name: str,
    *,
    root: str | Path | None,
    splits: Iterable[str],
    sample: int = DEFAULT_SAMPLE,
    dataset_options: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Raise ValueError / FileNotFoundError (one sentence naming the folder or file) when
    dataset ``name`` at ``root`` cannot serve every split in ``splits``; returns
    ``{split: number of images}``. ``sample`` label files per split are read and their values
    checked (``0`` skips the reading).
    """
    from autoloss_ray.data import build_dataset

    if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 0:
        raise ValueError(f"sample must be an int >= 0, got {sample!r}")
    options = dict(dataset_options or {})
    if ":" in str(name):
        # a user's MODULE:FUNCTION: checked by autoloss_ray.plugins.check_dataset (it needs
        # --num-classes when the dataset has no num_classes), which the options call
        return {}
    if name == "folder":
        from autoloss_ray.data.folder import check_folder

        if root is None or str(root) == "":
            raise ValueError("dataset 'folder' needs root= (data_root) pointing at its files")
        return check_folder(root, splits=[s for s in splits if s is not None],
                            ignore_index=options.get("ignore_index", IGNORE_INDEX))
    sizes: dict[str, int] = {}
    for split in dict.fromkeys(s for s in splits if s is not None):
        dataset = build_dataset(name, root=root, split=split, train=False, **options)
        n = len(dataset)
        if n == 0:
            raise ValueError(f"dataset {name!r} split {split!r} at {root} holds no images")
        sizes[split] = n
        if name == "synthetic" or sample == 0:
            continue  # generated, never out of range
        for i in sorted({int(v) for v in np.linspace(0, n - 1, min(n, int(sample))).round()}):
            _, label = dataset.load_raw(i)
            check_label_values(label, dataset.num_classes, dataset.ignore_index,
                               dataset.describe(i))
    return sizes
