"""The configuration of one proxy trial: :class:`TrialConfig` (its training defaults: the
paper's proxy task, docs/paper.md#the-search-ppo2-over-truncated-normals),
:func:`check_trial_config` and the training seed of a search trial."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autoloss_ray.vocabulary import (
    DEFAULT_BOUNDARY_TOLERANCE,
    DEFAULT_PARAMETERIZATION,
    EVAL_PROTOCOLS,
)

__all__ = ["TrialConfig", "check_trial_config", "check_rungs", "trial_train_seed"]

# Keys a searcher or Tune may add to a trial's config; accepted and only echoed back.
_META_PREFIX = "__"


@dataclass(kw_only=True)
class TrialConfig:
    """Every key a trial's config may hold, with its default (the training defaults are the
    paper's proxy task: docs/paper.md#the-search-ppo2-over-truncated-normals)."""

    # what to search / train with
    metric: str = "miou"
    parameterization: str = DEFAULT_PARAMETERIZATION
    theta: list[float] | None = None
    loss: str | None = None  # None: SurrogateLoss(metric, ...); a baseline name; a JSON path
    loss_options: dict[str, Any] = field(default_factory=dict)
    boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE
    # data
    dataset: str = "synthetic"  # a name of data.DATASETS or a user's "module:function"
    data_root: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    split: str = "train"
    eval_split: str | None = None  # None: evaluate on a hold-out part of `split`
    train_size: int = 0  # > 0: use a seeded subset of this many images (synthetic: its length)
    holdout_fraction: float = 0.1
    num_classes: int | None = None  # optional check against the dataset
    image_size: int | tuple[int, int] | list[int] | str = 128  # training crops: 96, (96, 128), "96x128"
    eval_protocol: str = "native"  # "native" (labels at their own size) | "train_size"
    inference_size: str | tuple[int, int] | list[int] | None = None  # native: None, "native", (h, w)
    num_workers: int = 0
    # DataLoader path (CPU default): each training image is decoded and checked once and kept,
    # at full resolution, in a cache of at most this many MiB per process (0: off); items
    # beyond the budget are read from their files each draw. Batches are the same either way.
    data_cache_mb: float = 1024.0
    # model and optimisation (the paper's proxy recipe)
    model: str = "lraspp_mobilenet_v3_large"  # a name of models.MODELS or "module:function"
    backbone_weights: str | None = None
    save_checkpoint: str | None = None  # path: save the trained weights there (retrain)
    loss_label: str | None = None  # how reports name the loss (retrain tables)
    iterations: int = 1000
    batch_size: int = 32
    eval_batch_size: int | None = None
    lr: float = 0.02
    poly_power: float = 0.9
    min_lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    head_lr_mult: float = 10.0
    # execution
    seed: int = 0
    # seed of the weight init, data order and augmentations; None: ``seed``. ``seed`` alone
    # fixes the data (synthetic images, subset, hold-out split), so a trial with another
    # train_seed is scored on the same hold-out.
    train_seed: int | None = None
    device: str = "auto"
    amp: bool = True
    deterministic: bool = True
    progress_every: int = 0
    # multi-fidelity: iterations (each in [1, iterations), increasing) after which the
    # hold-out reward is scored at the training size and reported (``run_trial``'s progress)
    rungs: list[int] = field(default_factory=list)
    # GPU speed (None: on for CUDA, off on CPU; each can be switched off; docstring of run_trial)
    amp_cpu: bool = False  # bf16 autocast of the forward on CPU too (off: CPU numbers unchanged)
    channels_last: bool | None = None
    data_on_device: bool | None = None
    cudnn_benchmark: bool | None = None
    check_every: int | None = None  # host reads of the loss: every K iterations (None: CUDA 50, CPU 1)
    # bookkeeping added by searchers (echoed, never used)
    search_step: int | None = None
    search_sample: int | None = None
    experiment: str | None = None

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any] | TrialConfig) -> TrialConfig:
        """Build from a dict; unknown keys are a ValueError naming them (keys starting with
        ``__``, which Tune's own helpers add, are ignored). ``None`` values take the default."""
        if isinstance(config, TrialConfig):
            return config
        if not isinstance(config, Mapping):
            raise TypeError(f"trial config must be a mapping, got {type(config).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in config if k not in names and not str(k).startswith(_META_PREFIX))
        if unknown:
            raise ValueError(
                f"unknown trial config key(s) {unknown}; expected some of {sorted(names)}"
            )
        defaults = {f.name for f in dataclasses.fields(cls) if f.name not in ("theta", "loss",
                    "data_root", "num_classes", "backbone_weights", "save_checkpoint", "loss_label", "eval_batch_size",
                    "eval_split", "search_step", "search_sample", "experiment",
                    "inference_size", "channels_last", "data_on_device", "cudnn_benchmark",
                    "check_every")}
        kwargs = {
            k: v for k, v in config.items() if k in names and not (v is None and k in defaults)
        }
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Cheap checks of types and ranges (the dataset/model/loss builders check the rest)."""
        from autoloss_ray.data.transforms import check_inference_size, parse_image_size

        self.image_size = parse_image_size(self.image_size)
        if self.eval_protocol not in EVAL_PROTOCOLS:
            raise ValueError(
                f"trial config 'eval_protocol' must be one of {EVAL_PROTOCOLS}, got "
                f"{self.eval_protocol!r}"
            )
        self.inference_size = check_inference_size(self.inference_size)
        ints = {
            "iterations": 1, "batch_size": 1, "num_workers": 0,
            "boundary_tolerance": 0, "train_size": 0, "progress_every": 0, "seed": 0,
        }
        for name, low in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"trial config {name!r} must be an int >= {low}, got {value!r}")
        for name in ("amp", "amp_cpu", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"trial config {name!r} must be true or false, got "
                                 f"{getattr(self, name)!r}")
        for name in ("channels_last", "data_on_device", "cudnn_benchmark"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"trial config {name!r} must be true, false or null (auto: on "
                                 f"for CUDA), got {value!r}")
        if self.check_every is not None and (
                isinstance(self.check_every, bool) or not isinstance(self.check_every, (int, np.integer))
                or self.check_every < 1):
            raise ValueError(f"trial config 'check_every' must be an int >= 1 or null, got "
                             f"{self.check_every!r}")
        self.rungs = check_rungs(self.rungs, self.iterations)
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {self.eval_batch_size!r}")
        for name in ("lr", "min_lr", "momentum", "weight_decay", "head_lr_mult", "poly_power",
                     "data_cache_mb"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"trial config {name!r} must be a finite number >= 0, got {value!r}")
        if self.eval_split is None and not 0.0 < float(self.holdout_fraction) < 1.0:
            raise ValueError(
                f"holdout_fraction must be in (0, 1), got {self.holdout_fraction!r}"
            )
        if self.theta is not None:
            theta = np.asarray(self.theta, dtype=np.float64)
            if theta.ndim != 1:
                raise ValueError(f"theta must be a flat list of numbers, got shape {theta.shape}")


def check_rungs(rungs: Any, iterations: int) -> list[int]:
    """``rungs`` as a list of ints, strictly increasing, each in [1, ``iterations``) (the
    final result at ``iterations`` is always reported); a ValueError otherwise."""
    if rungs is None:
        return []
    if isinstance(rungs, (str, bytes)) or not hasattr(rungs, "__iter__"):
        raise ValueError(f"trial config 'rungs' must be a list of iterations, got {rungs!r}")
    out = list(rungs)
    for r in out:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= r < iterations:
            raise ValueError(f"trial config 'rungs' must hold ints in [1, {iterations}) (below "
                             f"'iterations'), got {out!r}")
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"trial config 'rungs' must be strictly increasing, got {out!r}")
    return [int(r) for r in out]


def check_trial_config(config: Mapping[str, Any] | TrialConfig) -> TrialConfig:
    """Every check a trial makes on its config without touching data, weights or a device:
    keys, types and ranges (:meth:`TrialConfig.validate`), the metric, the dataset and model
    names, the curve family and the batch size the model needs. :func:`run_trial` calls it
    first; the CLI calls it on the options before Ray starts (one definition of the rules).
    Raises ValueError/TypeError with a sentence; returns the :class:`TrialConfig`."""
    from autoloss_ray.data import DATASETS
    from autoloss_ray.metrics import parse_metric
    from autoloss_ray.models import MODELS
    from autoloss_ray.plugins import is_plugin, parse_spec

    cfg = TrialConfig.from_mapping(config)
    parse_metric(cfg.metric)
    if is_plugin(cfg.dataset):  # a user's MODULE:FUNCTION, imported where it is built
        parse_spec(cfg.dataset, "dataset")
        if cfg.data_on_device:
            raise ValueError(f"data_on_device needs a built-in dataset (raw images); dataset "
                             f"{cfg.dataset!r} is a user's MODULE:FUNCTION")
    elif cfg.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; expected one of {sorted(DATASETS)} "
                         "or MODULE:FUNCTION")
    if is_plugin(cfg.model):
        parse_spec(cfg.model, "model")
    elif cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; expected one of {sorted(MODELS)} or "
                         "MODULE:FUNCTION")
    if cfg.loss is None:
        from autoloss_ray.losses.space import search_space

        search_space(cfg.metric, cfg.parameterization)
    if cfg.batch_size < 2 and cfg.model != "tiny" and not is_plugin(cfg.model):
        raise ValueError(
            f"batch_size must be >= 2 for {cfg.model} (its BatchNorm needs more than one "
            f"sample), got {cfg.batch_size}"
        )
    return cfg



def trial_train_seed(seed: int, step: int, sample: int) -> int:
    """The training seed of search trial (``step``, ``sample``) without common random numbers
    (``--no-crn``): a 31-bit int drawn from ``SeedSequence([seed, step, sample])``."""
    state = np.random.SeedSequence([int(seed), int(step), int(sample)]).generate_state(1)
    return int(state[0] >> 1)

