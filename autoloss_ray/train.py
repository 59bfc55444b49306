"""The proxy task without Ray: train a network with one loss, evaluate all six metrics.

``run_trial(config)`` is what every search trial runs (``trainables.proxy_task`` wraps it):

1. build the dataset, split off the hold-out part (seeded), build the model and the loss
   (``SurrogateLoss(metric, parameterization, theta)`` by default, a baseline name, or a
   loss JSON file), all validated before any compute;
2. iteration-based SGD with the paper's proxy recipe (lr 0.02, poly 0.9 down to 1e-4,
   momentum 0.9, weight decay 5e-4, head lr x10, batch 32, 128x128, 1000 iterations; every
   value is a config key), bf16/fp16 autocast on CUDA, the loss itself computed in fp32;
   on CUDA by default (each a config key, ``None`` = auto, ``False`` switches it off):
   ``channels_last`` model and images, ``data_on_device`` (the train split decoded once and
   kept on the device, batches made there: :mod:`autoloss_ray.data.device`),
   ``cudnn_benchmark`` (cuDNN picks its algorithms by timing: faster, not reproducible run to
   run) and ``check_every`` = 50 (the loss stays on the device and the host reads it every K
   iterations, so the loop never waits for the GPU; a non-finite loss is then found up to K-1
   steps late, and ``iterations`` still counts up to the first one). CPU defaults keep the
   DataLoader, no autocast (``amp_cpu`` turns bf16 autocast on) and a check every iteration,
   so CPU results are those of before;
3. a NaN/inf loss stops training: the trial is returned with ``status="nan"`` (recorded, no
   exception); a runtime error during compute (e.g. CUDA out of memory) gives
   ``status="failed"`` with the error text;
4. exact metrics on the hold-out split with ``MetricAccumulator``; ``reward`` is the
   configured metric (a sum for specs like ``"miou+biou"``). ``eval_protocol="native"``
   (default) scores every label map at its own resolution (the argmax of the logits upsampled
   bilinearly, ``align_corners=False``, to the label; the model sees the whole image at
   ``inference_size``); ``"train_size"`` scores image and label resized to ``image_size``
   (cheaper; the result says which in ``eval_protocol``).

Deterministic given ``seed`` on CPU (same thread count); on CUDA cuDNN is put in
deterministic mode but some kernels (bilinear upsampling backward) stay non-deterministic.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from autoloss_ray.metrics import METRICS

__all__ = ["TrialConfig", "check_trial_config", "run_trial", "evaluate_model", "resolve_device", "build_loss", "build_data", "METRIC_KEYS"]

METRIC_KEYS = METRICS  # the six metric names (one definition: autoloss_ray.metrics)

# Keys a searcher or Tune may add to a trial's config; accepted and only echoed back.
_META_PREFIX = "__"


@dataclass(kw_only=True)
class TrialConfig:
    """Every key a trial's config may hold, with its default (DESIGN section 5)."""

    # what to search / train with
    metric: str = "miou"
    parameterization: str = "bezier"
    theta: list[float] | None = None
    loss: str | None = None  # None: SurrogateLoss(metric, ...); a baseline name; a JSON path
    loss_options: dict[str, Any] = field(default_factory=dict)
    boundary_tolerance: int = 5
    # data
    dataset: str = "synthetic"
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
    # model and optimisation (the paper's proxy recipe)
    model: str = "lraspp_mobilenet_v3_large"
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
        from autoloss_ray.data.transforms import (
            EVAL_PROTOCOLS,
            check_inference_size,
            parse_image_size,
        )

        self.image_size = parse_image_size(self.image_size)
        if self.eval_protocol not in EVAL_PROTOCOLS:
            raise ValueError(
                f"trial config 'eval_protocol' must be one of {EVAL_PROTOCOLS}, got "
                f"{self.eval_protocol!r}"
            )
        self.inference_size = check_inference_size(self.inference_size)
        ints = {
            "iterations": 1, "batch_size": 1, "num_workers": 0,
            "boundary_tolerance": 0, "train_size": 0, "progress_every": 0,
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
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {self.eval_batch_size!r}")
        for name in ("lr", "min_lr", "momentum", "weight_decay", "head_lr_mult", "poly_power"):
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


def check_trial_config(config: Mapping[str, Any] | TrialConfig) -> TrialConfig:
    """Every check a trial makes on its config without touching data, weights or a device:
    keys, types and ranges (:meth:`TrialConfig.validate`), the metric, the dataset and model
    names, the curve family and the batch size the model needs. :func:`run_trial` calls it
    first; the CLI calls it on the options before Ray starts (one definition of the rules).
    Raises ValueError/TypeError with a sentence; returns the :class:`TrialConfig`."""
    from autoloss_ray.data import DATASETS
    from autoloss_ray.metrics import parse_metric
    from autoloss_ray.models import MODELS

    cfg = TrialConfig.from_mapping(config)
    parse_metric(cfg.metric)
    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; expected one of {sorted(DATASETS)}")
    if cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; expected one of {sorted(MODELS)}")
    if cfg.loss is None:
        from autoloss_ray.losses.space import search_space

        search_space(cfg.metric, cfg.parameterization)
    if cfg.batch_size < 2 and cfg.model != "tiny":
        raise ValueError(
            f"batch_size must be >= 2 for {cfg.model} (its BatchNorm needs more than one "
            f"sample), got {cfg.batch_size}"
        )
    return cfg


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
            **cfg.loss_options,
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

        return SurrogateLoss.from_file(cfg.loss, num_classes=num_classes, ignore_index=ignore_index)
    raise ValueError(
        f"loss must be None (the searched surrogate), a baseline name "
        f"{sorted(baselines.BASELINES)} or the path of a loss JSON file, got {cfg.loss!r}"
    )


def _class_weights(train_set, num_classes: int, ignore_index: int, max_items: int = 200):
    from autoloss_ray.losses.baselines import class_frequency_weights

    n = min(len(train_set), max_items)
    labels = (train_set.get(i, augment=False)[1] for i in range(n))
    return class_frequency_weights(labels, num_classes, ignore_index)


def trial_train_seed(seed: int, step: int, sample: int) -> int:
    """The training seed of search trial (``step``, ``sample``) without common random numbers
    (``--no-crn``): a 31-bit int drawn from ``SeedSequence([seed, step, sample])``."""
    state = np.random.SeedSequence([int(seed), int(step), int(sample)]).generate_state(1)
    return int(state[0] >> 1)


class _InfiniteSampler(torch.utils.data.Sampler):
    """Seeded epochs of random permutations, as ``(index, draw)`` pairs; ``draw`` is unique
    per fetched item, so augmentations are reproducible in any worker."""

    def __init__(self, n: int, total: int, seed: int) -> None:
        self.n, self.total, self.seed = n, total, seed

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, 31337])
        draw = 0
        while draw < self.total:
            for i in rng.permutation(self.n):
                if draw >= self.total:
                    return
                yield int(i), draw
                draw += 1

    def __len__(self) -> int:
        return self.total


def _autocast(device: torch.device, enabled: bool, *, cpu: bool = False):
    """bf16 (fp16 where bf16 is missing) autocast on CUDA when ``enabled``; bf16 on CPU only
    when ``cpu`` is also true."""
    if device.type == "cpu" and enabled and cpu:
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    if not enabled or device.type != "cuda":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def _speed_options(cfg: TrialConfig, device: torch.device) -> dict[str, Any]:
    """The GPU speed switches of a trial resolved for ``device`` (None: on for CUDA)."""
    cuda = device.type == "cuda"

    def auto(value: bool | None) -> bool:
        return cuda if value is None else bool(value)

    return {
        "channels_last": auto(cfg.channels_last),
        "data_on_device": auto(cfg.data_on_device),
        "cudnn_benchmark": auto(cfg.cudnn_benchmark),
        "check_every": cfg.check_every or (50 if cuda else 1),
    }


def _train_batches(cfg: TrialConfig, train_set, device: torch.device, speed: dict[str, Any],
                   seed: int):
    """Training batches on ``device``: the dataset kept on the device
    (:class:`~autoloss_ray.data.device.DeviceBatches`) or a DataLoader (the CPU default)."""
    if speed["data_on_device"]:
        from autoloss_ray.data.device import DeviceBatches

        return DeviceBatches(train_set, batch_size=cfg.batch_size, iterations=cfg.iterations,
                             seed=seed, device=device, channels_last=speed["channels_last"])
    pin = device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_sampler=torch.utils.data.BatchSampler(
            _InfiniteSampler(len(train_set), cfg.iterations * cfg.batch_size, seed),
            cfg.batch_size,
            drop_last=False,
        ),
        num_workers=cfg.num_workers,
        pin_memory=pin,
    )
    fmt = torch.channels_last if speed["channels_last"] else torch.contiguous_format
    return ((images.to(device, non_blocking=pin).contiguous(memory_format=fmt),
             labels.to(device, non_blocking=pin)) for images, labels in loader)


def _first_nonfinite(loss_log: torch.Tensor, lo: int, hi: int) -> tuple[int, float] | None:
    """(iteration, value) of the first non-finite loss in ``loss_log[lo:hi]``, or None (one
    host read)."""
    chunk = loss_log[lo:hi].cpu()
    bad = (~torch.isfinite(chunk)).nonzero()
    if bad.numel() == 0:
        return None
    i = int(bad[0, 0])
    return lo + i, float(chunk[i])


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate_model(
    model: torch.nn.Module,
    dataset,
    *,
    num_classes: int,
    ignore_index: int,
    boundary_tolerance: int = 5,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    num_workers: int = 0,
    amp: bool = True,
) -> dict[str, float]:
    """The six exact metrics of ``model`` on ``dataset``, accumulated over the whole dataset
    with :class:`MetricAccumulator`.

    Each item's prediction is the argmax of the model's logits upsampled (bilinear,
    ``align_corners=False``) to that item's label map, so the metrics are computed at the
    labels' resolution, whatever the size the model saw. Items may differ in image and label
    size (a dataset with ``eval_protocol="native"``): each loader batch of ``batch_size``
    items is split into groups of one image size and one label size, and each group is one
    forward pass. Labels are never resized here.
    """
    from autoloss_ray.metrics import MetricAccumulator

    device = torch.device(device)
    pin = device.type == "cuda"
    accumulator = MetricAccumulator(
        num_classes, ignore_index=ignore_index, boundary_tolerance=boundary_tolerance,
        device=device,
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin,
        collate_fn=_collate_by_size,
    )
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for groups in loader:
            for images, labels in groups:
                images = images.to(device, non_blocking=pin)
                labels = labels.to(device, non_blocking=pin)
                with _autocast(device, amp):
                    logits = model(images)
                if logits.shape[-2:] != labels.shape[-2:]:
                    logits = torch.nn.functional.interpolate(
                        logits.float(), size=labels.shape[-2:], mode="bilinear",
                        align_corners=False,
                    )
                accumulator.update(logits.argmax(dim=1), labels)
    model.train(was_training)
    return {k: float(v) for k, v in accumulator.compute().items()}


def _collate_by_size(
    items: list[tuple[torch.Tensor, torch.Tensor]],
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A batch of (image [3, h, w], label [H, W]) items -> stacked groups of equal sizes, in
    order of first appearance."""
    groups: dict[tuple, tuple[list, list]] = {}
    for image, label in items:
        key = (tuple(image.shape), tuple(label.shape))
        images, labels = groups.setdefault(key, ([], []))
        images.append(image)
        labels.append(label)
    return [(torch.stack(i), torch.stack(t)) for i, t in groups.values()]


def run_trial(
    config: Mapping[str, Any] | TrialConfig,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one proxy model; see the module docstring.

    Returns a dict with ``reward``, the six metrics, ``status`` ("ok", "nan", "failed"),
    ``error``, ``iterations`` (completed), ``train_seconds``, ``eval_seconds``, ``device``,
    ``device_name``, ``node``, ``final_loss`` (mean of the last 10 losses),
    ``initial_loss`` (mean of the first 10), ``images_per_second`` and the sizes of the
    splits. Bad configuration raises ValueError/TypeError/FileNotFoundError before compute.
    ``progress`` (optional) is called every ``progress_every`` iterations with
    ``{"iteration", "loss", "lr"}``.
    """
    from autoloss_ray.metrics import reward
    from autoloss_ray.models import build_model, param_groups

    cfg = check_trial_config(config)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)

    # --- everything that can fail on bad input, before any compute -------------------
    train_set, eval_set = build_data(cfg)
    num_classes, ignore_index = train_set.num_classes, train_set.ignore_index
    criterion = build_loss(cfg, num_classes, ignore_index, train_set)
    train_seed = cfg.seed if cfg.train_seed is None else int(cfg.train_seed)
    torch.manual_seed(train_seed)
    np.random.seed(train_seed % (2**32))
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = cfg.deterministic
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark is not False
    model = build_model(cfg.model, num_classes=num_classes, backbone_weights=cfg.backbone_weights)

    result: dict[str, Any] = {
        "reward": float("nan"),
        **{k: float("nan") for k in METRIC_KEYS},
        "status": "ok",
        "error": None,
        "iterations": 0,
        "train_seconds": 0.0,
        "eval_seconds": 0.0,
        "device": device.type if device.index is None else f"{device.type}:{device.index}",
        "device_name": _device_name(device),
        "node": socket.gethostname(),
        "final_loss": float("nan"),
        "initial_loss": float("nan"),
        "images_per_second": float("nan"),
        "num_train": len(train_set),
        "num_eval": len(eval_set),
        "metric": cfg.metric,
        "seed": cfg.seed,
        "train_seed": train_seed,
        "eval_protocol": cfg.eval_protocol,
    }
    if cfg.eval_protocol == "native":
        result["inference_size"] = (cfg.inference_size if cfg.inference_size is not None
                                    else "short_side")
    model.to(device)
    criterion.to(device)
    optimizer = torch.optim.SGD(
        param_groups(model, cfg.lr, cfg.head_lr_mult),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    speed = _speed_options(cfg, device)
    from autoloss_ray.losses.surrogate import SurrogateLoss

    # surrogates read bf16 logits themselves and sum in float32; other losses get fp32 logits
    raw_logits = isinstance(criterion, SurrogateLoss)
    if speed["channels_last"]:
        model.to(memory_format=torch.channels_last)
    # the loss of every iteration stays on the device; the host reads it every K iterations
    loss_log = torch.full((cfg.iterations,), float("nan"), dtype=torch.float64, device=device)
    K = speed["check_every"]
    try:
        # (decoding the dataset onto the device, if asked, is not part of train_seconds)
        batches = _train_batches(cfg, train_set, device, speed, train_seed)
        _sync(device)
        start = time.perf_counter()
        model.train()
        done = 0
        for it, (images, labels) in enumerate(batches):
            factor = (1.0 - it / cfg.iterations) ** cfg.poly_power
            for group in optimizer.param_groups:
                group["lr"] = (group["initial_lr"] - cfg.min_lr) * factor + cfg.min_lr
            with _autocast(device, cfg.amp, cpu=cfg.amp_cpu):
                logits = model(images)
            # surrogates take any float logits and compute in float32 themselves; others in fp32
            loss = criterion(logits if raw_logits else logits.float(), labels)
            loss_log[it] = loss.detach()
            if K == 1:  # read before the step: a non-finite loss never reaches the weights
                bad = _first_nonfinite(loss_log, it, it + 1)
                if bad is not None:
                    result["status"] = "nan"
                    result["error"] = f"loss became {bad[1]} at iteration {bad[0]}"
                    break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done = it + 1
            if K > 1 and (done % K == 0 or done == cfg.iterations):
                bad = _first_nonfinite(loss_log, done - ((done - 1) % K) - 1, done)
                if bad is not None:
                    result["status"] = "nan"
                    result["error"] = f"loss became {bad[1]} at iteration {bad[0]}"
                    done = bad[0]
                    break
            if progress is not None and cfg.progress_every and done % cfg.progress_every == 0:
                progress({"iteration": done, "loss": float(loss_log[it]),
                          "lr": optimizer.param_groups[0]["lr"]})
        result["iterations"] = done
        _sync(device)
        train_seconds = time.perf_counter() - start
        result["train_seconds"] = train_seconds
        if result["iterations"]:
            result["images_per_second"] = result["iterations"] * cfg.batch_size / max(
                train_seconds, 1e-9
            )
        losses = loss_log[:done].cpu().numpy()
        if losses.size:
            result["initial_loss"] = float(np.mean(losses[:10]))
            result["final_loss"] = float(np.mean(losses[-10:]))
        if result["status"] == "ok" and not all(
            bool(torch.isfinite(p).all()) for p in model.parameters()
        ):
            result["status"] = "nan"
            result["error"] = "model parameters became non-finite during training"
        if result["status"] != "ok":
            return result

        # --- evaluation on the hold-out split ------------------------------------------
        start = time.perf_counter()
        metrics = evaluate_model(
            model, eval_set, num_classes=num_classes, ignore_index=ignore_index,
            boundary_tolerance=cfg.boundary_tolerance, device=device,
            batch_size=cfg.eval_batch_size or cfg.batch_size, num_workers=cfg.num_workers,
            amp=cfg.amp,
        )
        if cfg.save_checkpoint:
            from autoloss_ray.checkpoint import save_checkpoint

            result["checkpoint"] = save_checkpoint(
                cfg.save_checkpoint, model, model_name=cfg.model, num_classes=num_classes,
                dataset=cfg.dataset, image_size=cfg.image_size, ignore_index=ignore_index,
                boundary_tolerance=cfg.boundary_tolerance,
            )
        result["eval_seconds"] = time.perf_counter() - start
        for k in METRIC_KEYS:
            result[k] = float(metrics[k])
        result["reward"] = float(reward(metrics, cfg.metric))
    except RuntimeError as exc:  # e.g. CUDA out of memory: record, do not crash the search
        result["status"] = "failed"
        result["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    return result
