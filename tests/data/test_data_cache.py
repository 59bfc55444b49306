"""The decoded cache of a trial's training images (issue 31): each image is decoded and
checked once per process, and the batches, hence the reward, are the same as without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autoloss_ray.data import build_dataset, holdout_split, subset
from autoloss_ray.data.base import DecodedCache
from autoloss_ray.train import TrialConfig, run_trial
from autoloss_ray.trial.loop import _speed_options, _train_batches
from tests.tiny import tiny_trial

SMALL = tiny_trial(dataset="camvid", iterations=6, train_size=16, holdout_fraction=0.25, seed=3,
                   device="cpu")


def _batches(cfg: dict, train_set):
    c = TrialConfig.from_mapping(cfg)
    dev = torch.device("cpu")
    return [(x.clone(), y.clone())
            for x, y in _train_batches(c, train_set, dev, _speed_options(c, dev), c.seed)]


def _train_set(root: Path, **kw):
    full = build_dataset("camvid", root=root, split="train", image_size=32, train=True, seed=3,
                         **kw)
    return holdout_split(subset(full, 16, seed=3), 0.25, seed=3)[0]


def test_cached_batches_equal_uncached_and_each_image_is_decoded_once(camvid_root: Path,
                                                                      monkeypatch) -> None:
    cfg = {**SMALL, "data_root": str(camvid_root)}
    plain = _batches({**cfg, "data_cache_mb": 0}, _train_set(camvid_root))
    train_set = _train_set(camvid_root)
    base = train_set.dataset
    calls: list[int] = []
    load_raw = type(base).load_raw
    monkeypatch.setattr(base, "load_raw", lambda i: (calls.append(i), load_raw(base, i))[1])
    cached = _batches(cfg, train_set)
    assert base.decoded_cache is not None and len(base.decoded_cache) > 0
    assert len(plain) == len(cached) == SMALL["iterations"]
    for (x0, y0), (x1, y1) in zip(plain, cached):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    # 24 draws of 12 images: every image decoded once, repeats come from the cache
    assert len(calls) == len(set(calls)) == len(train_set)
    assert set(calls) == set(train_set.indices)
    # CamVid's 8-bit label files stay uint8 (values 0..10 and 255) from load_raw on; the
    # items' labels are int64
    image, label = base.decoded_cache.get(calls[0])
    assert label.dtype == np.uint8 and image.dtype == np.uint8
    assert cached[0][1].dtype == torch.int64
    assert not image.flags.writeable
    assert base.decoded_cache.nbytes == len(train_set) * 360 * 480 * 4


def test_a_trial_gives_the_same_result_with_and_without_the_cache(camvid_root: Path) -> None:
    cfg = {**SMALL, "data_root": str(camvid_root)}
    off = run_trial({**cfg, "data_cache_mb": 0})
    on = run_trial(cfg)
    assert on["status"] == off["status"] == "ok"
    timing = {"train_seconds", "eval_seconds", "images_per_second"}
    assert {k: v for k, v in on.items() if k not in timing} == \
        {k: v for k, v in off.items() if k not in timing}


def test_the_cache_keeps_to_its_budget_and_its_indices() -> None:
    img, lab = np.zeros((4, 5, 3), np.uint8), np.arange(20, dtype=np.int64).reshape(4, 5)
    cache = DecodedCache(max_bytes=2 * (60 + 20), indices=[0, 1, 2])
    for i in range(4):
        cache.put(i, img, lab)
    assert len(cache) == 2 and cache.nbytes == 160 and cache.get(2) is None  # over budget
    assert cache.get(3) is None  # not one of its indices
    got = cache.get(1)
    assert got[1].dtype == np.int64 and np.array_equal(got[1], lab)
    assert lab.flags.writeable and img.flags.writeable  # the caller's arrays are untouched
    wide = np.full((2, 2), 300, dtype=np.int64)  # does not fit uint8: kept as it is
    big = DecodedCache(max_bytes=1 << 20)
    big.put(0, img, wide)
    assert big.get(0)[1].dtype == np.int64 and big.nbytes == 60 + 32
    assert len(DecodedCache(0)) == 0


@pytest.mark.parametrize("value", [-1, float("nan"), "big"])
def test_data_cache_mb_must_be_a_number_at_least_zero(value) -> None:
    with pytest.raises(ValueError, match="data_cache_mb"):
        TrialConfig.from_mapping({"data_cache_mb": value})


def test_the_synthetic_trial_is_unchanged_by_the_cache() -> None:
    cfg = tiny_trial(iterations=5, train_size=24, holdout_fraction=0.25, seed=1, device="cpu")
    off, on = run_trial({**cfg, "data_cache_mb": 0}), run_trial(cfg)
    assert on["reward"] == off["reward"] and on["final_loss"] == off["final_loss"]


def test_the_hold_out_is_decoded_once_for_all_rungs_and_the_final_evaluation(
        camvid_root: Path, monkeypatch) -> None:
    """Issue 31: the hold-out items share the training images' decoded cache, also through
    the rungs' copy of the hold-out at the training size, so a native trial with rungs loads
    each image once; its result is the one without the cache."""
    from autoloss_ray.data.camvid import CamVid

    cfg = {**SMALL, "data_root": str(camvid_root), "eval_protocol": "native",
           "rungs": [2, 4]}
    off = run_trial({**cfg, "data_cache_mb": 0})
    calls: list[int] = []
    load_raw = CamVid.load_raw
    monkeypatch.setattr(CamVid, "load_raw",
                        lambda self, i: (calls.append(i), load_raw(self, i))[1])
    on = run_trial(cfg)
    assert on["status"] == off["status"] == "ok"
    timing = {"train_seconds", "eval_seconds", "images_per_second", "rung_seconds"}
    assert {k: v for k, v in on.items() if k not in timing} == \
        {k: v for k, v in off.items() if k not in timing}
    assert len(calls) == len(set(calls)) == SMALL["train_size"]
