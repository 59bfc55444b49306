"""The proxy trial's GPU speed features, tested on CPU (issue 17): the dataset kept on the
device, channels_last, host reads every K iterations, bf16 autocast, and their switches."""

from __future__ import annotations

import math

import pytest
import torch

from autoloss_ray.data.device import DeviceBatches, batch_schedule
from autoloss_ray.train import METRIC_KEYS, TrialConfig, _InfiniteSampler, build_data, run_trial
from tests.tiny import tiny_trial

SMALL = tiny_trial(train_size=24, holdout_fraction=0.25, iterations=6, lr=0.05, seed=3,
                   device="cpu")


def _loader_batches(train_set, cfg):
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_sampler=torch.utils.data.BatchSampler(
            _InfiniteSampler(len(train_set), cfg.iterations * cfg.batch_size, cfg.seed),
            cfg.batch_size, drop_last=False))
    return list(loader)


def test_batch_schedule_is_the_dataloader_sampler_order():
    sched = batch_schedule(7, 5, 3, seed=11)
    flat = [i for i, _ in _InfiniteSampler(7, 15, 11)]
    assert sched.shape == (5, 3) and sched.reshape(-1).tolist() == flat


@pytest.mark.parametrize("flip_prob", [0.0, 0.5])
def test_device_batches_equal_the_dataloader_batches_without_scaling(flip_prob):
    cfg = TrialConfig.from_mapping({**SMALL, "dataset_options": {
        "scale_range": (1.0, 1.0), "flip_prob": flip_prob}})
    train_set, _ = build_data(cfg)
    old = _loader_batches(train_set, cfg)
    new = list(DeviceBatches(train_set, batch_size=cfg.batch_size, iterations=cfg.iterations,
                             seed=cfg.seed, device="cpu"))
    assert len(new) == len(old) == cfg.iterations
    flipped = 0
    for (xo, yo), (xn, yn) in zip(old, new):
        assert xn.dtype == torch.float32 and yn.dtype == torch.int64
        torch.testing.assert_close(xn, xo, atol=1e-5, rtol=0)
        assert torch.equal(yn, yo)
        flipped += int(not torch.equal(yo, yo.flip(-1)))
    assert flipped > 0  # the labels are not symmetric, so a wrong flip would be seen


def test_device_batches_follow_the_dataloader_geometry_with_scaling():
    """Same draws (scale, crop, flip) as the DataLoader path; only the resampling differs
    (grid_sample of the cached copy vs PIL on the original): labels agree on most pixels."""
    cfg = TrialConfig.from_mapping({**SMALL, "image_size": 48})
    train_set, _ = build_data(cfg)
    old = _loader_batches(train_set, cfg)
    dev = DeviceBatches(train_set, batch_size=cfg.batch_size, iterations=cfg.iterations,
                        seed=cfg.seed, device="cpu")
    again = DeviceBatches(train_set, batch_size=cfg.batch_size, iterations=cfg.iterations,
                          seed=cfg.seed, device="cpu")
    ignore = train_set.ignore_index
    agree = total = 0
    for t, (_xo, yo) in enumerate(old):
        xn, yn = dev.batch(t)
        x2, y2 = again.batch(t)
        assert torch.equal(xn, x2) and torch.equal(yn, y2)  # deterministic given the seed
        vals = set(torch.unique(yn).tolist())
        assert vals <= set(range(train_set.num_classes)) | {ignore}
        agree += int((yn == yo).sum())
        total += yn.numel()
    assert agree / total > 0.85, agree / total
    # a wrong offset or scale gives far less: shifted labels agree much less
    shifted = sum(int((dev.batch(t)[1] == yo.roll(7, -1)).sum()) for t, (_, yo) in enumerate(old))
    assert shifted / total < agree / total - 0.05


def test_device_batches_channels_last_and_padding_is_ignored():
    cfg = TrialConfig.from_mapping({**SMALL, "dataset_options": {"scale_range": (0.5, 0.5), "flip_prob": 0.0}})
    train_set, _ = build_data(cfg)
    dev = DeviceBatches(train_set, batch_size=4, iterations=2, seed=0, device="cpu",
                        channels_last=True)
    x, y = dev.batch(0)
    assert x.is_contiguous(memory_format=torch.channels_last)
    # scale 0.5: the image covers the top-left 16x16 of 32x32, the rest is padding
    assert bool((y[:, 16:, :] == train_set.ignore_index).all())
    assert bool((y[:, :, 16:] == train_set.ignore_index).all())
    assert bool((y[:, :16, :16] != train_set.ignore_index).any())
    assert float(x[:, :, 17:, 17:].abs().max()) < 1e-6  # mean colour = 0 after normalising


@pytest.mark.slow
def test_run_trial_speed_options_on_cpu():
    base = run_trial({**SMALL, "check_every": 1})
    late = run_trial({**SMALL, "check_every": 4})  # same computation, fewer host reads
    for k in (*METRIC_KEYS, "initial_loss", "final_loss", "iterations"):
        assert late[k] == base[k], k
    fast = run_trial({**SMALL, "data_on_device": True, "channels_last": True, "amp_cpu": True,
                      "check_every": 3})
    assert fast["status"] == "ok" and fast["iterations"] == SMALL["iterations"]
    assert math.isfinite(fast["final_loss"]) and all(0 <= fast[k] <= 1 for k in METRIC_KEYS)


@pytest.mark.slow
def test_non_finite_loss_found_with_late_checks():
    early = run_trial({**SMALL, "iterations": 12, "lr": 1e12, "check_every": 1})
    late = run_trial({**SMALL, "iterations": 12, "lr": 1e12, "check_every": 8})
    assert early["status"] == late["status"] == "nan"
    assert "at iteration" in early["error"] and early["iterations"] < 8
    # the same first bad iteration, found at the 8th; iterations counts up to it
    assert late["error"] == early["error"] and late["iterations"] == early["iterations"]


@pytest.mark.parametrize("key,value", [("channels_last", "yes"), ("data_on_device", 1),
                                       ("cudnn_benchmark", "auto"), ("check_every", 0),
                                       ("check_every", True), ("amp_cpu", 2)])
def test_speed_option_validation(key, value):
    with pytest.raises(ValueError, match=key):
        TrialConfig.from_mapping({**SMALL, key: value})


@pytest.mark.parametrize("metric", ["miou", "bf1"])
@pytest.mark.parametrize("native", [True, False])
def test_surrogates_sum_in_float32_under_bf16_autocast(metric, native, monkeypatch):
    from autoloss_ray.losses import surrogate as surrogates
    from autoloss_ray.losses.surrogate import SurrogateLoss

    if not native:
        monkeypatch.setattr(surrogates, "_use_native", lambda z: False)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 5, 24, 24, generator=g).bfloat16()
    t = torch.randint(0, 5, (2, 24, 24), generator=g)
    t[:, :3] = 255
    loss = SurrogateLoss(metric, num_classes=5, ignore_index=255)
    ref = loss(z.float(), t)  # the same bf16-representable logits, in float32
    zz = z.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(zz, t)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    out.backward()
    zr = z.float().requires_grad_(True)
    loss(zr, t).backward()
    assert zz.grad.dtype == torch.bfloat16
    torch.testing.assert_close(zz.grad.float(), zr.grad, atol=1e-3, rtol=2e-2)
    # and the truth table holds in bf16 too: one-hot logits give the exact metric
    from autoloss_ray.metrics import evaluate

    onehot = torch.nn.functional.one_hot(t.clamp(max=4), 5).permute(0, 3, 1, 2).bfloat16() * 40
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = loss.score(onehot, t)
    exact = evaluate(t.clamp(max=4), t, 5, ignore_index=255)[metric]
    assert float(s) == pytest.approx(float(exact), abs=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_trial_with_the_speed_defaults_and_device_batches():
    result = run_trial({**SMALL, "device": "cuda"})
    assert result["status"] == "ok" and result["iterations"] == SMALL["iterations"]
    assert all(0 <= result[k] <= 1 for k in METRIC_KEYS)
    cfg = TrialConfig.from_mapping(SMALL)
    train_set, _ = build_data(cfg)
    kw = dict(batch_size=4, iterations=3, seed=0)
    cpu = DeviceBatches(train_set, device="cpu", **kw)
    gpu = DeviceBatches(train_set, device="cuda", channels_last=True, **kw)
    for t in range(3):
        (xc, yc), (xg, yg) = cpu.batch(t), gpu.batch(t)
        assert xg.is_cuda and xg.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(xg.cpu(), xc, atol=1e-4, rtol=0)
        assert float((yg.cpu() == yc).float().mean()) > 0.99
