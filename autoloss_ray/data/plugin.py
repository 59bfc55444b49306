"""A user's dataset, named ``MODULE:FUNCTION`` (``--dataset mydata:build``), as a trial's
:class:`~autoloss_ray.data.base.SegmentationDataset`.

The user writes one function::

    def build(*, split: str, train: bool, seed: int, image_size: tuple[int, int],
              root: str | None = None) -> torch.utils.data.Dataset: ...

- it may take any subset of these keywords (only those it names are passed; ``**kwargs``
  takes them all) and extra ones given as ``dataset_options``;
- ``split``: ``"train"`` (the search trains on it and rewards on a hold-out part of it),
  ``"val"``/``"test"`` (``retrain --eval-split``, ``evaluate --split``); ``train``: whether
  the items are for training (augment them) or for evaluation (do not); ``image_size``: the
  run's ``(h, w)`` training size; ``root``: ``--data-root`` (absolute) when given;
- it returns a map-style dataset (``__len__``, ``__getitem__``) whose items are
  ``(image, label)``: image a float tensor ``[3, H, W]`` (normalised as the model expects),
  label an integer tensor ``[H, W]`` of class ids in ``[0, C)`` or the ignore index
  (training items: image and label of one size, every item of one size; evaluation items may
  differ in size, the label at any resolution: logits are upsampled to it);
- the dataset (or ``--num-classes``) gives ``num_classes``; ``ignore_index`` (default 255)
  and ``class_names`` are read when present.

The hold-out part of the training split is read from a second copy built with
``train=False`` (never augmented); random augmentations of item ``i`` at draw ``d`` run under
torch/numpy/random generators seeded by ``(seed, i, d)``, so a trial is reproducible (the
global generators are restored afterwards). ``eval_protocol``/``inference_size`` do not
apply: the user's dataset decides the evaluation resolution. The device-resident training
batches (``data_on_device``) are not used with a plugin dataset (they need raw uint8 images).
"""

from __future__ import annotations

import inspect
import random
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from autoloss_ray.data.base import SegmentationDataset
from autoloss_ray.data.transforms import check_label_values
from autoloss_ray.plugins import call_plugin, load_callable
from autoloss_ray.vocabulary import IGNORE_INDEX

__all__ = ["PluginDataset", "seeded"]

# build_dataset passes these to every dataset; the user's dataset makes its own transforms
_BUILTIN_ONLY = ("eval_protocol", "inference_size", "scale_range", "flip_prob")


@contextmanager
def seeded(*key: int):
    """Seed torch's CPU generator, numpy's and ``random``'s global generators from ``key``
    for the ``with`` block and restore their states afterwards."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2)
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(state[0]))
        np.random.seed(int(state[1]))
        random.seed(int(state[1]))
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def _arguments(fn, spec: str, offered: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The keywords of ``offered`` that ``fn`` names (all with ``**kwargs``) plus ``options``
    (which it must take)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature: offer everything
        return {**offered, **options}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    unknown = [k for k in options if k not in named and not var_kw]
    if unknown:
        raise ValueError(f"--dataset {spec!r}: the function takes no option(s) {unknown}")
    return {**{k: v for k, v in offered.items() if var_kw or k in named}, **options}


class PluginDataset(SegmentationDataset):
    """The dataset of ``spec`` for one split (see the module docstring).

    Items: (image float32 [3, H, W], label int64 [H, W]) exactly as the user's dataset gives
    them (checked: types, shapes, dtypes, label values). ``get(i, augment=...)`` reads the
    training copy (``augment=True``) or the evaluation copy (``False``), each built on first
    use; both must have the same length."""

    def __init__(self, spec: str, *, split: str = "train", train: bool = True, seed: int = 0,
                 image_size: int | tuple[int, int] = 128, root: str | None = None,
                 num_classes: int | None = None, **options: Any) -> None:
        for key in _BUILTIN_ONLY:
            options.pop(key, None)
        super().__init__(image_size=image_size, train=train, seed=seed)
        self.spec, self.split = spec, str(split)
        self.name = spec
        self.root = None if root is None else str(root)
        self.options = options
        self._copies: dict[bool, Any] = {}
        first = self._copy(self.train)
        self._length = self._len(first)
        given = getattr(first, "num_classes", None)
        if given is not None:
            if isinstance(given, bool) or not isinstance(given, (int, np.integer)) or given < 2:
                raise ValueError(f"--dataset {spec!r}: num_classes of the dataset must be an "
                                 f"int >= 2, got {given!r}")
            if num_classes is not None and int(num_classes) != int(given):
                raise ValueError(f"num_classes {num_classes} does not match dataset {spec!r} "
                                 f"({given} classes)")
        elif num_classes is None:
            raise ValueError(f"--dataset {spec!r}: its dataset has no num_classes attribute; "
                             "give it one or pass --num-classes")
        self.num_classes = int(num_classes if given is None else given)
        self.ignore_index = int(getattr(first, "ignore_index", IGNORE_INDEX))
        names = getattr(first, "class_names", None)
        self.class_names = (tuple(str(n) for n in names) if names is not None
                            and len(names) == self.num_classes
                            else tuple(f"class{i}" for i in range(self.num_classes)))

    def _len(self, ds: Any) -> int:
        try:
            return int(len(ds))
        except TypeError:
            raise TypeError(f"--dataset {self.spec!r} returned a {type(ds).__name__} without "
                            "__len__; expected a map-style torch Dataset") from None

    def _copy(self, train: bool) -> Any:
        if train not in self._copies:
            fn = load_callable(self.spec, "dataset")
            offered = {"split": self.split, "train": train, "seed": self.seed,
                       "image_size": self.image_size, "root": self.root}
            ds = call_plugin(self.spec, "dataset",
                             **_arguments(fn, self.spec, offered, self.options))
            if not hasattr(ds, "__getitem__"):
                raise TypeError(f"--dataset {self.spec!r} returned a {type(ds).__name__}; "
                                "expected a map-style torch Dataset (__len__, __getitem__)")
            if self._copies and self._len(ds) != self._length:
                raise ValueError(f"--dataset {self.spec!r} split {self.split!r} has "
                                 f"{self._length} items with train={not train} but "
                                 f"{self._len(ds)} with train={train}")
            self._copies[train] = ds
        return self._copies[train]

    def __len__(self) -> int:
        return self._length

    def describe(self, index: int) -> str:
        return f"--dataset {self.spec!r} split {self.split!r} item {index}"

    def get(self, index: int, *, augment: bool | None = None,
            draw: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {self.spec} of length {n}")
        index = index % n
        augment = self.train if augment is None else bool(augment)
        ds = self._copy(augment)
        try:
            with seeded(self.seed, index, int(draw)):
                item = ds[index]
        except Exception as exc:  # noqa: BLE001 - the user's __getitem__
            from autoloss_ray.plugins import one_line

            raise ValueError(f"{self.describe(index)}: reading it raised "
                             f"{type(exc).__name__}: {one_line(exc)}") from None
        return self.check_item(item, index, augment)

    def check_item(self, item: Any, index: int,
                   augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(image float32 [3, H, W], label int64 [H, W]) of one user item, or a ValueError /
        TypeError of one sentence naming the item and what it holds."""
        where = self.describe(index)
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"{where} is a {type(item).__name__}; expected a pair "
                            "(image [3, H, W] float tensor, label [H, W] integer tensor)")
        image, label = item
        if not isinstance(image, torch.Tensor) or not isinstance(label, torch.Tensor):
            raise TypeError(f"{where}: expected (torch.Tensor, torch.Tensor), got "
                            f"({type(image).__name__}, {type(label).__name__})")
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"{where}: image has shape {list(image.shape)}; expected "
                             "[3, H, W]")
        if not image.is_floating_point():
            raise TypeError(f"{where}: image is {image.dtype}; expected a float tensor "
                            "(normalised, e.g. (x / 255 - mean) / std)")
        if label.ndim != 2:
            raise ValueError(f"{where}: label has shape {list(label.shape)}; expected [H, W]")
        if label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
            raise TypeError(f"{where}: label is {label.dtype}; expected an integer tensor "
                            "(torch.long) of class ids")
        if augment and tuple(image.shape[-2:]) != tuple(label.shape):
            raise ValueError(f"{where}: training image is {list(image.shape[-2:])} but its "
                             f"label is {list(label.shape)}; a training pair must be of one "
                             "size")
        label = label.detach().cpu().to(torch.int64)
        check_label_values(label.numpy(), self.num_classes, self.ignore_index, where)
        return image.detach().cpu().to(torch.float32), label

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image float32 [H, W, 3], label int64 [H, W]) of evaluation item ``index`` (the
        user's transforms already applied; :func:`autoloss_ray.data.check_data` reads its
        labels)."""
        image, label = self.get(index, augment=False)
        return image.permute(1, 2, 0).numpy(), label.numpy()

    def __repr__(self) -> str:
        return (f"PluginDataset({self.spec!r}, split={self.split!r}, len={len(self)}, "
                f"classes={self.num_classes}, train={self.train})")
