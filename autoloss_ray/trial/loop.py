"""The pieces of a trial's training loop: the seeded sampler, autocast, the GPU speed options
(see :mod:`autoloss_ray.train`), the training batches and the host reads of the loss."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from autoloss_ray.trial.config import TrialConfig


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
        # a user's MODULE:FUNCTION dataset has no raw images to keep on the device
        "data_on_device": auto(cfg.data_on_device) and ":" not in cfg.dataset,
        "cudnn_benchmark": auto(cfg.cudnn_benchmark),
        "check_every": cfg.check_every or (50 if cuda else 1),
    }


def _train_batches(cfg: TrialConfig, train_set, device: torch.device, speed: dict[str, Any],
                   seed: int, eval_sets=()):
    """Training batches on ``device``: the dataset kept on the device
    (:class:`~autoloss_ray.data.device.DeviceBatches`) or a DataLoader (the CPU default).
    On the DataLoader path the decoded cache also keeps the items of ``eval_sets`` (the
    hold-out, scored at every rung and at the end) that come from the training images'
    files (see :func:`_cache_decoded`)."""
    if speed["data_on_device"]:
        from autoloss_ray.data.device import DeviceBatches

        return DeviceBatches(train_set, batch_size=cfg.batch_size, iterations=cfg.iterations,
                             seed=seed, device=device, channels_last=speed["channels_last"])
    _cache_decoded(train_set, cfg.data_cache_mb, eval_sets)
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


def _cache_decoded(train_set, cache_mb: float, eval_sets=()) -> None:
    """Turn on the decoded cache (:meth:`SegmentationDataset.cache_decoded`) of the training
    items for the DataLoader path, ``cache_mb`` MiB at most (0: off). The cache keeps what
    ``load_raw`` returns and every draw is augmented from it as from the file, so the batches
    (and the reward) are the same as without it; each image is decoded and checked once per
    process instead of once per draw. A user's MODULE:FUNCTION dataset makes its own items
    and is not cached.

    ``eval_sets`` (None entries skipped): evaluation sets whose items are the training
    dataset's own (the hold-out split, on the same dataset object) or those of a dataset of
    the same class built on the same files (the hold-out rebuilt at the training size for
    the rungs) share that one cache and budget, so the hold-out is decoded and checked once
    for all the rung evaluations and the final one (issue 31); their items are transformed
    for their own protocol from the cached arrays, as from the files. Other evaluation sets
    (an ``eval_split``) are not cached."""
    from autoloss_ray.data import _unwrap
    from autoloss_ray.data.base import SegmentationDataset
    from autoloss_ray.data.plugin import PluginDataset

    if cache_mb <= 0:
        return
    base, indices = _unwrap(train_set)
    if not isinstance(base, SegmentationDataset) or isinstance(base, PluginDataset):
        return
    keep = set(indices)
    sharing = []
    for ds in eval_sets:
        if ds is None:
            continue
        try:
            other, other_indices = _unwrap(ds)
        except TypeError:
            continue
        if other is base or _same_items(base, other):
            keep.update(other_indices)
            if other is not base:
                sharing.append(other)
    cache = base.cache_decoded(int(cache_mb * 2**20), indices=keep)
    for other in sharing:
        other.decoded_cache = cache


# attributes that only shape an evaluation item after load_raw (the scoring protocol), or
# the cache itself: the rung set differs from the hold-out in these alone
_TRANSFORM_ATTRS = frozenset({"eval_protocol", "inference_size", "decoded_cache"})


def _same_items(a, b) -> bool:
    """Whether two datasets' ``load_raw`` return the same items: the same class and the same
    attributes (files, split, options, seed, size) but for the scoring protocol's."""
    if type(a) is not type(b):
        return False
    va = {k: v for k, v in vars(a).items() if k not in _TRANSFORM_ATTRS}
    vb = {k: v for k, v in vars(b).items() if k not in _TRANSFORM_ATTRS}
    if va.keys() != vb.keys():
        return False
    try:
        return all(np.array_equal(v, vb[k]) if isinstance(v, np.ndarray) else bool(v == vb[k])
                   for k, v in va.items())
    except Exception:  # values that do not compare: do not share
        return False


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

