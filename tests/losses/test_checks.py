"""One rule for the inputs of every loss (autoloss_ray.checks), used by SurrogateLoss and the
baselines alike: the same errors for the same bad input, and the target follows the logits'
device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoloss_ray.checks import (
    check_ignore_index,
    check_logits_target,
    check_num_classes,
    check_tolerance,
    labels_outside,
    resize_to_labels,
)
from autoloss_ray.losses.baselines import BASELINES, make_loss
from autoloss_ray.losses.surrogate import SurrogateLoss

C = 3


def _losses():
    out = {f"surrogate:{m}": SurrogateLoss(m, num_classes=C) for m in ("miou", "bf1")}
    for name in BASELINES:
        kw = {"weight": [1.0, 2.0, 0.5]} if name == "wce" else {}
        out[name] = make_loss(name, num_classes=C, **kw)
    return out


LOSSES = _losses()


def _inputs(n=2, h=6, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, C, h, w, generator=g)
    target = torch.randint(0, C, (n, h, w), generator=g)
    target[0, 0, :3] = 255
    return logits, target


@pytest.mark.parametrize("logits, target, exc, match", [
    (np.zeros((1, C, 4, 4), np.float32), torch.zeros(1, 4, 4, dtype=torch.long), TypeError,
     "logits must be a floating-point torch tensor"),
    (torch.zeros(1, C, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long),
     TypeError, "floating"),
    (torch.randn(1, C, 4, 4), torch.zeros(1, 4, 4), TypeError, "integer torch tensor"),
    (torch.randn(C, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), ValueError,
     r"\[N, C, h, w\], got \(3, 4, 4\)"),
    (torch.randn(1, C, 4, 4), torch.zeros(4, 4, dtype=torch.long), ValueError,
     r"\[N, H, W\], got \(4, 4\)"),
    (torch.randn(2, C, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), ValueError, "batch size"),
    (torch.randn(1, C + 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), ValueError,
     "4 channels but num_classes=3"),
    (torch.randn(1, C, 4, 4), torch.full((1, 4, 4), 7), ValueError,
     r"outside 0..2, i.e. outside \[0, 3\), that are not ignore_index=255: \[7\]"),
    (torch.randn(1, C, 4, 4), torch.full((1, 4, 4), -1), ValueError, r"\[-1\]"),
])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_gives_the_same_error_for_the_same_bad_input(name, logits, target, exc,
                                                                  match):
    with pytest.raises(exc, match=match):
        LOSSES[name](logits, target)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_bool_or_int32_target_is_a_label_map(name):
    """Any integer dtype (bool included) is a label map: same loss as the int64 target."""
    logits, _ = _inputs()
    target = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(1)) < 0.5
    want = LOSSES[name](logits, target.long())
    assert torch.equal(LOSSES[name](logits, target), want)
    assert torch.equal(LOSSES[name](logits, target.to(torch.int32)), want)


def test_check_logits_target_returns_int64_target_and_keeps_logits():
    logits, target = _inputs()
    z, t = check_logits_target(logits, target.to(torch.int16), num_classes=None,
                               ignore_index=255)
    assert z is logits and t.dtype == torch.int64 and torch.equal(t, target)
    # ignore_index=None: every value must be a class
    with pytest.raises(ValueError, match="ignore_index=None"):
        check_logits_target(logits, target, num_classes=C, ignore_index=None)
    # an empty batch passes the shared rule (SurrogateLoss refuses it itself)
    check_logits_target(torch.zeros(0, C, 2, 2), torch.zeros(0, 2, 2, dtype=torch.long),
                        num_classes=C, ignore_index=255)
    with pytest.raises(ValueError, match="empty input"):
        LOSSES["surrogate:miou"](torch.zeros(0, C, 2, 2), torch.zeros(0, 2, 2, dtype=torch.long))


def test_resize_to_labels_is_bilinear_without_corner_alignment():
    logits = torch.randn(1, C, 3, 5)
    target = torch.zeros(1, 6, 10, dtype=torch.long)
    want = torch.nn.functional.interpolate(logits, size=(6, 10), mode="bilinear",
                                           align_corners=False)
    assert torch.equal(resize_to_labels(logits, target), want)
    assert resize_to_labels(want, target) is want


@pytest.mark.parametrize("check, bad, exc, match", [
    (check_num_classes, 0, ValueError, "num_classes must be >= 1, got 0"),
    (check_num_classes, 2.0, TypeError, "num_classes must be an int >= 1, got 2.0"),
    (check_num_classes, True, TypeError, "num_classes"),
    (check_num_classes, None, TypeError, "num_classes"),
    (check_ignore_index, "255", TypeError, "ignore_index must be an int or None"),
    (check_tolerance, -1, ValueError, "boundary_tolerance must be >= 0 pixels, got -1"),
    (check_tolerance, 1.5, TypeError, "boundary_tolerance must be an int >= 0"),
])
def test_argument_checks(check, bad, exc, match):
    with pytest.raises(exc, match=match):
        check(bad)


def test_argument_checks_accept_numpy_ints_and_none_where_allowed():
    assert check_num_classes(np.int64(4)) == 4 and type(check_num_classes(np.int64(4))) is int
    assert check_num_classes(None, allow_none=True) is None
    assert check_ignore_index(None) is None
    with pytest.raises(TypeError, match="ignore_index must be an int, got None"):
        check_ignore_index(None, allow_none=False)
    assert check_tolerance(np.int32(0)) == 0
    # the losses' constructors use the same checks
    with pytest.raises(TypeError, match="num_classes must be an int >= 1"):
        SurrogateLoss("miou", num_classes="3")
    with pytest.raises(TypeError, match="num_classes must be an int >= 1"):
        make_loss("ce", num_classes="3")
    with pytest.raises(TypeError, match="ignore_index must be an int, got None"):
        make_loss("ce", num_classes=3, ignore_index=None)
    with pytest.raises(ValueError, match="boundary_tolerance must be >= 0"):
        SurrogateLoss("biou", num_classes=3, boundary_tolerance=-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_cpu_target_follows_cuda_logits(name):
    """The one device rule: the target is copied to the logits' device; the loss equals the
    loss of a target given on that device."""
    logits, target = _inputs()
    loss = LOSSES[name].to("cuda")
    z = logits.cuda()
    got = loss(z, target)
    assert got.device.type == "cuda"
    assert torch.equal(got, loss(z, target.cuda()))


@pytest.mark.parametrize("way", ["cpu min/max", "gpu one read"])
def test_labels_outside_against_brute_force(way):
    """Both ways (the CPU's min/max pass, the GPU's one read of two flags, run here on CPU
    tensors) against a loop over the values."""
    from autoloss_ray.checks import _labels_outside_one_read

    outside = labels_outside if way == "cpu min/max" else _labels_outside_one_read
    rng = np.random.default_rng(0)
    for i in range(40):
        high = 6 if i % 2 else 5  # even rounds: every bad value is excused or none is bad
        labels = torch.from_numpy(rng.integers(-2 if i % 4 == 1 else 0, high, size=(2, 5, 5)))
        excused = labels == 4
        all_classes, bad = outside(labels, 4, lambda e=excused: e)
        flat = labels.reshape(-1).tolist()
        want = [v for v, e in zip(flat, excused.reshape(-1).tolist())
                if not (0 <= v < 4) and not e]
        assert all_classes == all(0 <= v < 4 for v in flat)
        assert (bad is None) == (not want)
        if want:
            assert sorted(bad.tolist()) == sorted(want)
    inside = torch.tensor([[0, 3], [1, 2]])
    assert outside(inside, 4, None) == (True, None)


def test_check_labels_false_skips_only_the_label_values():
    """``SurrogateLoss(check_labels=False)`` (the proxy trial's loss, whose datasets check every
    label map) skips the value check; types and shapes are still refused."""
    logits, target = _inputs()
    bad = target.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match="target holds labels outside"):
        SurrogateLoss("miou", num_classes=logits.shape[1])(logits, bad)
    unchecked = SurrogateLoss("miou", num_classes=logits.shape[1], check_labels=False)
    assert torch.equal(unchecked(logits, target),
                       SurrogateLoss("miou", num_classes=logits.shape[1])(logits, target))
    with pytest.raises(ValueError, match="target must have shape"):
        unchecked(logits, target[0])
    with pytest.raises(TypeError, match="check_labels must be True or False"):
        SurrogateLoss("miou", num_classes=3, check_labels=1)
