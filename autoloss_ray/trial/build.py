"""What a trial is built from: the device, the data (train and evaluation sets) and the loss."""

from __future__ import annotations

import os

import torch

from autoloss_ray.trial.config import TrialConfig

__all__ = ["resolve_device", "build_data", "build_loss"]


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; explicit names are checked."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here")
    return dev


def build_data(cfg: TrialConfig):
    """(train set, evaluation set) for a trial: hold-out of ``split`` or ``eval_split``."""
    from autoloss_ray.data import build_dataset, holdout_split, subset

    options = dict(cfg.dataset_options)
    if ":" in cfg.dataset and cfg.num_classes is not None:  # a user's MODULE:FUNCTION
        options.setdefault("num_classes", cfg.num_classes)
    if cfg.dataset == "synthetic" and cfg.train_size > 0:
        options.setdefault("length", cfg.train_size)
    common = dict(root=cfg.data_root, image_size=cfg.image_size, seed=cfg.seed,
                  eval_protocol=cfg.eval_protocol, inference_size=cfg.inference_size, **options)
    full = build_dataset(cfg.dataset, split=cfg.split, train=True, **common)
    if cfg.dataset != "synthetic" and cfg.train_size > 0:
        full = subset(full, cfg.train_size, seed=cfg.seed)
    if cfg.num_classes is not None and cfg.num_classes != full.num_classes:
        raise ValueError(
            f"num_classes {cfg.num_classes} does not match dataset {cfg.dataset!r} "
            f"({full.num_classes} classes)"
        )
    if cfg.eval_split is None:
        return holdout_split(full, cfg.holdout_fraction, seed=cfg.seed)
    evalset = build_dataset(cfg.dataset, split=cfg.eval_split, train=False, **common)
    return full, evalset


# The trial's datasets check every label map they load (``SegmentationDataset.get``,
# ``DeviceBatches``), so its surrogates skip the per-call label check: on a GPU that check is
# a host read that waits for the device every iteration.
_CHECKED_LABELS = {"check_labels": False}


def build_loss(cfg: TrialConfig, num_classes: int, ignore_index: int, train_set=None):
    """The training loss of a trial (an ``nn.Module`` taking (logits, target))."""
    from autoloss_ray.metrics import parse_metric

    parse_metric(cfg.metric)  # the reward's metric must be valid whatever the loss
    if cfg.loss is None:
        from autoloss_ray.losses.surrogate import SurrogateLoss

        theta = None if cfg.theta is None else [float(v) for v in cfg.theta]
        return SurrogateLoss(
            cfg.metric,
            num_classes=num_classes,
            parameterization=cfg.parameterization,
            theta=theta,
            ignore_index=ignore_index,
            boundary_tolerance=cfg.boundary_tolerance,
            **{**_CHECKED_LABELS, **cfg.loss_options},
        )
    from autoloss_ray.losses import baselines

    if cfg.loss in baselines.BASELINES:
        options = dict(cfg.loss_options)
        if cfg.loss == "wce" and train_set is not None:
            # class-frequency weights from the training labels, under whatever name the
            # weighted-CE class takes them (unless the config gives them)
            import inspect

            params = inspect.signature(baselines.BASELINES["wce"]).parameters
            key = next((k for k in ("weight", "weights", "class_weights") if k in params), None)
            if key is not None and key not in options:
                options[key] = _class_weights(train_set, num_classes, ignore_index)
        return baselines.make_loss(
            cfg.loss, num_classes=num_classes, ignore_index=ignore_index, **options
        )
    if os.path.isfile(str(cfg.loss)):
        from autoloss_ray.losses.surrogate import SurrogateLoss

        return SurrogateLoss.from_file(cfg.loss, num_classes=num_classes,
                                       ignore_index=ignore_index, **_CHECKED_LABELS)
    raise ValueError(
        f"loss must be None (the searched surrogate), a baseline name "
        f"{sorted(baselines.BASELINES)} or the path of a loss JSON file, got {cfg.loss!r}"
    )


def _class_weights(train_set, num_classes: int, ignore_index: int, max_items: int = 200):
    from autoloss_ray.losses.baselines import class_frequency_weights

    n = min(len(train_set), max_items)
    labels = (train_set.get(i, augment=False)[1] for i in range(n))
    return class_frequency_weights(labels, num_classes, ignore_index)

