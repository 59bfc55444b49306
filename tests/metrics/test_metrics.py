"""Exact metrics (autoloss_ray.metrics) against an independent brute-force reference.

The reference below is written from DESIGN section 2 with numpy loops over images and classes
and scipy.ndimage morphology; it shares no code with the library.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from autoloss_ray.metrics import (
    METRICS,
    MetricAccumulator,
    bf1_counts,
    boundary_band,
    check_labels,
    confusion_matrix,
    evaluate,
    parse_metric,
    reward,
    scores_from_stats,
)
from autoloss_ray.metrics._boundary import _or_dilate
from autoloss_ray.morphology import dilate

# ---------------------------------------------------------------------------------------------
# independent reference
# ---------------------------------------------------------------------------------------------


def _ref_boundary(mask: np.ndarray) -> np.ndarray:
    """mask AND NOT erode3x3(mask); outside the image counts as inside the mask."""
    eroded = ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool), border_value=1)
    return mask & ~eroded


def _ref_dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """(2r+1)^2 square max, outside = 0."""
    if r == 0:
        return mask.copy()
    out = ndimage.grey_dilation(
        mask.astype(np.uint8), size=(2 * r + 1, 2 * r + 1), mode="constant", cval=0
    )
    return out > 0


def ref_stats(pred, target, C, ignore, r):
    """Dataset sums (confusion, band confusion, n_p, n_g, m_p, m_g) by brute force."""
    pred, target = np.asarray(pred), np.asarray(target)
    if target.ndim == 2:
        pred, target = pred[None], target[None]
    conf = np.zeros((C, C), np.int64)
    bconf = np.zeros((C, C), np.int64)
    cnt = np.zeros((4, C), np.int64)
    for p, t in zip(pred, target):
        valid = np.ones(t.shape, bool) if ignore is None else t != ignore
        union = np.zeros(t.shape, bool)
        for c in range(C):
            tm = (t == c) & (c != ignore)  # the ignore value is not a class of the target
            pm = p == c
            tb, pb = _ref_boundary(tm), _ref_boundary(pm)
            union |= tb
            tbd, pbd = _ref_dilate(tb, r), _ref_dilate(pb, r)
            cnt[0, c] += np.sum(pb & valid)
            cnt[1, c] += np.sum(tb & valid)
            cnt[2, c] += np.sum(pb & tbd & valid)
            cnt[3, c] += np.sum(tb & pbd & valid)
        band = _ref_dilate(union, r)
        for g in range(C):
            for q in range(C):
                hit = (t == g) & (p == q) & valid
                conf[g, q] += np.sum(hit)
                bconf[g, q] += np.sum(hit & band)
    return conf, bconf, cnt


def _ref_miou(conf, classes):
    ious = []
    for c in classes:
        denom = conf[c, :].sum() + conf[:, c].sum() - conf[c, c]
        if denom > 0:
            ious.append(conf[c, c] / denom)
    return sum(ious) / len(ious) if ious else math.nan


def ref_metrics(conf, bconf, cnt, C, ignore):
    classes = [c for c in range(C) if c != ignore]
    total = conf.sum()
    out = {"miou": _ref_miou(conf, classes), "biou": _ref_miou(bconf, classes)}
    fw = 0.0
    for c in classes:
        denom = conf[c, :].sum() + conf[:, c].sum() - conf[c, c]
        if conf[c, :].sum() > 0:
            fw += conf[c, :].sum() / total * conf[c, c] / denom
    out["fwiou"] = fw if total > 0 else math.nan
    accs = [conf[c, c] / conf[c, :].sum() for c in classes if conf[c, :].sum() > 0]
    out["macc"] = sum(accs) / len(accs) if accs else math.nan
    out["gacc"] = np.trace(conf) / total if total > 0 else math.nan
    f1s = []
    for c in classes:
        n_p, n_g, m_p, m_g = (int(v) for v in cnt[:, c])
        if n_p + n_g == 0:
            continue
        prec = m_p / n_p if n_p else 0.0
        rec = m_g / n_g if n_g else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0)
    out["bf1"] = sum(f1s) / len(f1s) if f1s else math.nan
    return out


def ref_evaluate(pred, target, C, ignore=255, r=5):
    return ref_metrics(*ref_stats(pred, target, C, ignore, r), C, ignore)


# ---------------------------------------------------------------------------------------------
# random label maps
# ---------------------------------------------------------------------------------------------


def blob_labels(rng, n, h, w, classes, cell=(3, 7)):
    """Piecewise-constant blobs of the given classes, plus some salt noise and thin lines."""
    classes = np.asarray(classes)
    out = np.empty((n, h, w), np.int64)
    for i in range(n):
        s = int(rng.integers(cell[0], cell[1] + 1))
        coarse = rng.choice(classes, size=(h // s + 2, w // s + 2))
        img = np.kron(coarse, np.ones((s, s), np.int64))
        oy, ox = rng.integers(0, s, size=2)
        img = img[oy : oy + h, ox : ox + w].copy()
        noise = rng.random((h, w)) < 0.03
        img[noise] = rng.choice(classes, size=int(noise.sum()))
        if h > 4 and rng.random() < 0.5:  # a one-pixel line
            img[int(rng.integers(0, h)), :] = rng.choice(classes)
        out[i] = img
    return out


def perturb(rng, labels, classes):
    """A 'prediction': shifted, with some blocks and pixels replaced."""
    p = np.roll(labels, shift=tuple(rng.integers(-2, 3, size=2)), axis=(1, 2)).copy()
    classes = np.asarray(classes)
    noise = rng.random(p.shape) < 0.05
    p[noise] = rng.choice(classes, size=int(noise.sum()))
    n, h, w = p.shape
    for i in range(n):
        y, x = rng.integers(0, h), rng.integers(0, w)
        p[i, y : y + 5, x : x + 6] = rng.choice(classes)
    return p


def add_ignore(rng, target, pred, ignore):
    """Ignore rectangles in target; pred may hold the ignore value there (allowed)."""
    target = target.copy()
    pred = pred.copy()
    n, h, w = target.shape
    for i in range(n):
        for _ in range(int(rng.integers(0, 3))):
            y, x = rng.integers(0, h), rng.integers(0, w)
            target[i, y : y + int(rng.integers(1, 8)), x : x + int(rng.integers(1, 8))] = ignore
    ign = target == ignore
    if rng.random() < 0.5:
        pred[ign & (rng.random(pred.shape) < 0.5)] = ignore
    return target, pred


CASES = [
    # (seed, C, ignore, tolerance, (n, h, w), classes present in target or None = all)
    (0, 5, 255, 2, (3, 20, 27), None),
    (1, 12, 255, 5, (2, 33, 40), [0, 3, 4, 7, 11]),  # absent classes
    (2, 3, None, 1, (2, 17, 19), None),  # no ignore index
    (3, 6, 5, 3, (3, 21, 16), None),  # ignore inside [0, C): not a class
    (4, 8, 255, 0, (2, 15, 22), None),  # tolerance 0, uint8 bit words (C = 8)
    (5, 16, 255, 4, (2, 26, 24), None),  # int32 bit words
    (6, 2, -1, 30, (2, 9, 13), None),  # negative ignore, tolerance larger than the image
    (7, 70, 255, 2, (1, 30, 36), None),  # several 63-class words
    (8, 4, 255, 5, (3, 1, 25), None),  # one-row images
    (9, 31, 255, 1, (2, 24, 20), None),
    (10, 1, 255, 2, (2, 10, 11), None),  # a single class
]


def make_case(seed, C, ignore, n_h_w, present):
    rng = np.random.default_rng(seed)
    n, h, w = n_h_w
    classes = list(range(C)) if present is None else present
    if ignore is not None and 0 <= ignore < C:
        classes = [c for c in classes if c != ignore]
    target = blob_labels(rng, n, h, w, classes)
    pred = perturb(rng, target, list(range(C)))
    if ignore is not None:
        target, pred = add_ignore(rng, target, pred, ignore)
    return target, pred


def assert_metrics_close(got, want, tol=1e-12):
    assert set(got) == set(METRICS)
    for k in METRICS:
        g, w = got[k], want[k]
        assert isinstance(g, float)
        if math.isnan(w):
            assert math.isnan(g), (k, g, w)
        else:
            assert abs(g - w) <= tol, (k, g, w)


# ---------------------------------------------------------------------------------------------
# against the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,C,ignore,tol,shape,present", CASES)
def test_matches_bruteforce_reference(seed, C, ignore, tol, shape, present):
    target, pred = make_case(seed, C, ignore, shape, present)
    conf, bconf, cnt = ref_stats(pred, target, C, ignore, tol)
    acc = MetricAccumulator(C, ignore_index=ignore, boundary_tolerance=tol)
    acc.update(torch.from_numpy(pred), torch.from_numpy(target))
    np.testing.assert_array_equal(acc.confusion.numpy(), conf)
    np.testing.assert_array_equal(acc.band_confusion.numpy(), bconf)
    np.testing.assert_array_equal(acc.bf1_counts.numpy(), cnt)
    want = ref_metrics(conf, bconf, cnt, C, ignore)
    assert_metrics_close(acc.compute(), want)
    got = evaluate(pred, target, C, ignore_index=ignore, boundary_tolerance=tol)
    assert_metrics_close(got, want)
    # low-level helpers agree with the reference as well
    np.testing.assert_array_equal(
        confusion_matrix(pred, target, C, ignore_index=ignore).numpy(), conf
    )
    np.testing.assert_array_equal(
        bf1_counts(pred, target, C, ignore_index=ignore, tolerance=tol).numpy(), cnt
    )
    band = boundary_band(target, C, ignore_index=ignore, tolerance=tol)
    band_conf = confusion_matrix(pred, target, C, ignore_index=ignore, mask=band)
    np.testing.assert_array_equal(band_conf.numpy(), bconf)


def test_one_class_and_all_ignored_images():
    rng = np.random.default_rng(11)
    C = 4
    target = np.zeros((4, 12, 14), np.int64)
    target[0] = 2  # one class, no boundary (the image border is not a boundary)
    target[1] = 255  # everything ignored
    target[2] = blob_labels(rng, 1, 12, 14, [0, 1, 3])[0]
    target[3] = 1
    target[3, 4:8, 5:9] = 255  # a one-class image with a hole: pixels next to it are boundary
    pred = perturb(rng, np.where(target == 255, 0, target), list(range(C)))
    pred[0] = 2
    want = ref_evaluate(pred, target, C, 255, 2)
    assert_metrics_close(evaluate(pred, target, C, boundary_tolerance=2), want)
    # the hole's rim (8-neighbourhood: 6x6 ring around the 4x4 hole) is a boundary of class 1
    assert bf1_counts(target[3], target[3], C, tolerance=2)[1, 1] == 36 - 16


def test_degenerate_inputs_give_nan_not_errors():
    t = np.full((2, 5, 5), 255)
    got = evaluate(np.zeros_like(t), t, 3)
    assert all(math.isnan(got[k]) for k in METRICS)
    t = np.full((5, 5), 1)  # one class, perfect: no boundary anywhere -> biou, bf1 undefined
    got = evaluate(t, t, 3)
    assert got["miou"] == got["fwiou"] == got["macc"] == got["gacc"] == 1.0
    assert math.isnan(got["biou"]) and math.isnan(got["bf1"])


def test_or_dilation_equals_morphology_dilate_per_bit():
    rng = np.random.default_rng(3)
    for dtype, nbits in ((torch.uint8, 8), (torch.int16, 15), (torch.int64, 63)):
        for r in (0, 1, 3, 7, 40):
            h, w = int(rng.integers(1, 20)), int(rng.integers(1, 20))
            bits_np = (rng.random((2, nbits, h, w)) < 0.04).astype(np.int64)
            masks = torch.from_numpy(bits_np).bool()  # [N, bits, H, W]
            packed = (torch.from_numpy(bits_np) << torch.arange(nbits).view(1, -1, 1, 1)).sum(1)
            got = _or_dilate(packed.to(dtype), r).to(torch.int64)
            want = dilate(masks, r)
            unpacked = ((got.unsqueeze(1) >> torch.arange(nbits).view(1, -1, 1, 1)) & 1).bool()
            assert torch.equal(unpacked, want), (dtype, r, h, w)


# ---------------------------------------------------------------------------------------------
# against torchmetrics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("C,ignore", [(7, 255), (6, 2), (9, None)])
def test_miou_fwiou_match_torchmetrics(C, ignore):
    tm = pytest.importorskip("torchmetrics.classification")
    rng = np.random.default_rng(C)
    present = [c for c in range(C) if c not in (1, ignore)]  # class 1 absent from the target
    target = blob_labels(rng, 3, 30, 41, present)
    pred_classes = [c for c in range(C) if c != 4]  # class 4 never predicted
    pred = perturb(rng, target, pred_classes)
    pred[pred == 4] = 0
    if ignore is not None and ignore >= C:
        target, pred = add_ignore(rng, target, pred, ignore)
        pred[pred == ignore] = 0  # torchmetrics needs pred in [0, C)
    elif ignore is not None:
        target[:, :3, :5] = ignore
    kwargs = {"num_classes": C, "ignore_index": ignore}
    macro = tm.MulticlassJaccardIndex(average="macro", **kwargs)
    weighted = tm.MulticlassJaccardIndex(average="weighted", **kwargs)
    acc = MetricAccumulator(C, ignore_index=ignore)
    for i in range(3):  # streamed over images on both sides
        p, t = torch.from_numpy(pred[i : i + 1]), torch.from_numpy(target[i : i + 1])
        macro.update(p, t)
        weighted.update(p, t)
        acc.update(p, t)
    got = acc.compute()
    # torchmetrics leaves out classes absent from both pred and target (our zero-denominator
    # rule) and the ignore class when ignore_index < C (our "ignore value is not a class").
    assert got["miou"] == pytest.approx(float(macro.compute()), abs=1e-6)
    assert got["fwiou"] == pytest.approx(float(weighted.compute()), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perfect_prediction_is_one(seed):
    rng = np.random.default_rng(seed)
    target = blob_labels(rng, 3, 25, 30, list(range(6)))
    target, _ = add_ignore(rng, target, target, 255)
    pred = np.where(target == 255, rng.integers(0, 6, target.shape), target)
    got = evaluate(pred, target, 6)
    assert got == {k: 1.0 for k in METRICS}


def test_chunked_accumulation_equals_one_call():
    target, pred = make_case(21, 9, 255, (6, 22, 25), None)
    whole = MetricAccumulator(9, boundary_tolerance=3)
    whole.update(pred, target)
    acc = MetricAccumulator(9, boundary_tolerance=3)
    acc.update(torch.from_numpy(pred[:1]), torch.from_numpy(target[:1]))
    acc.update(pred[1], target[1])  # a single [H, W] map, numpy
    acc.update(torch.from_numpy(pred[2:5]).int(), torch.from_numpy(target[2:5]).to(torch.uint8))
    acc.update(pred[5:].astype(np.int16), target[5:].astype(np.uint8))
    assert acc.num_images == 6
    assert torch.equal(acc.confusion, whole.confusion)
    assert torch.equal(acc.band_confusion, whole.band_confusion)
    assert torch.equal(acc.bf1_counts, whole.bf1_counts)
    assert acc.compute() == whole.compute()
    acc.reset()
    assert int(acc.confusion.sum()) == 0
    with pytest.raises(ValueError, match="no data"):
        acc.compute()


def test_different_image_sizes_accumulate():
    rng = np.random.default_rng(5)
    t1, t2 = blob_labels(rng, 2, 10, 12, [0, 1, 2]), blob_labels(rng, 1, 17, 9, [0, 1, 2])
    p1, p2 = perturb(rng, t1, [0, 1, 2]), perturb(rng, t2, [0, 1, 2])
    acc = MetricAccumulator(3, boundary_tolerance=2)
    acc.update(p1, t1)
    acc.update(p2, t2)
    c1, b1, n1 = ref_stats(p1, t1, 3, 255, 2)
    c2, b2, n2 = ref_stats(p2, t2, 3, 255, 2)
    assert_metrics_close(acc.compute(), ref_metrics(c1 + c2, b1 + b2, n1 + n2, 3, 255))


def test_class_permutation_invariance():
    C = 10
    target, pred = make_case(4, C, 255, (3, 28, 31), None)
    perm = np.random.default_rng(0).permutation(C)
    lut = np.concatenate([perm, np.zeros(256 - C, np.int64)])
    lut[255] = 255
    got = evaluate(pred, target, C)
    permuted = evaluate(lut[pred], lut[target], C)
    for k in METRICS:
        assert permuted[k] == pytest.approx(got[k], abs=1e-12)


def _camvid_labels(root: Path, k: int) -> np.ndarray:
    from PIL import Image

    files = sorted((root / "trainannot").glob("*.png"))[:k]
    assert files, "no label PNGs in trainannot/"
    return np.stack([np.array(Image.open(f)) for f in files]).astype(np.int64)


def test_camvid_labels(camvid_root):
    labels = _camvid_labels(camvid_root, 4)
    assert labels.shape[1:] == (360, 480)
    assert labels.max() <= 11
    assert evaluate(labels, labels, 11, ignore_index=11) == {k: 1.0 for k in METRICS}
    # a shifted prediction (void -> class 0) evaluates and matches the reference on two images
    pred = np.roll(labels, 3, axis=2)
    pred[pred == 11] = 0
    got = evaluate(pred, labels, 11, ignore_index=11)
    assert all(0.0 <= got[k] < 1.0 for k in METRICS)
    small_pred, small_target = pred[:2, ::2, ::2], labels[:2, ::2, ::2]
    want = ref_evaluate(small_pred, small_target, 11, 11, 5)
    assert_metrics_close(evaluate(small_pred, small_target, 11, ignore_index=11), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_gpu_and_matches_cpu():
    target, pred = make_case(0, 12, 255, (4, 64, 80), None)
    acc = MetricAccumulator(12)
    acc.update(torch.from_numpy(pred).cuda(), torch.from_numpy(target).cuda())
    assert acc.confusion.device.type == "cuda"
    acc.update(pred[:1], target[:1])  # numpy joins the accumulator's device
    assert acc.bf1_counts.device.type == "cuda"
    cpu = MetricAccumulator(12)
    cpu.update(pred, target)
    cpu.update(pred[:1], target[:1])
    assert torch.equal(acc.confusion.cpu(), cpu.confusion)
    assert torch.equal(acc.band_confusion.cpu(), cpu.band_confusion)
    assert torch.equal(acc.bf1_counts.cpu(), cpu.bf1_counts)
    assert acc.compute() == cpu.compute()


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

GOOD = np.zeros((2, 4, 5), np.int64)


@pytest.mark.parametrize(
    "pred,target,kwargs,exc,match",
    [
        (GOOD, GOOD[:, :3], {}, ValueError, "same shape"),
        (GOOD[0], GOOD, {}, ValueError, "same shape"),
        (GOOD.astype(np.float32), GOOD, {}, TypeError, "integer"),
        (GOOD, torch.zeros(2, 4, 5), {}, TypeError, "integer"),
        (GOOD, GOOD + 3, {}, ValueError, "target has labels >= num_classes"),
        (GOOD + 3, GOOD, {}, ValueError, "pred has labels >= num_classes"),
        (GOOD, GOOD - 1, {}, ValueError, "target has negative labels"),
        (GOOD - 1, GOOD, {}, ValueError, "pred has negative labels"),
        (GOOD + 255, GOOD, {}, ValueError, "only where the target is ignored"),
        (GOOD, GOOD, {"num_classes": 0}, ValueError, "num_classes"),
        (GOOD, GOOD, {"num_classes": 2.0}, TypeError, "num_classes"),
        (GOOD, GOOD, {"boundary_tolerance": -1}, ValueError, "boundary_tolerance"),
        (GOOD, GOOD, {"boundary_tolerance": 1.5}, TypeError, "boundary_tolerance"),
        (GOOD[:0], GOOD[:0], {}, ValueError, "empty"),
        (GOOD[:, :0], GOOD[:, :0], {}, ValueError, "empty"),
        (GOOD[0, 0], GOOD[0, 0], {}, ValueError, r"\[N, H, W\]"),
        (GOOD[None], GOOD[None], {}, ValueError, r"\[N, H, W\]"),
        (GOOD.tolist(), GOOD, {}, TypeError, "torch.Tensor or numpy.ndarray"),
        (GOOD, GOOD, {"ignore_index": "255"}, TypeError, "ignore_index"),
    ],
)
def test_bad_input_raises(pred, target, kwargs, exc, match):
    kwargs = {"num_classes": 3, **kwargs}
    with pytest.raises(exc, match=match):
        evaluate(pred, target, **kwargs)
    if "boundary_tolerance" not in kwargs:
        with pytest.raises(exc, match=match):
            confusion_matrix(pred, target, kwargs.pop("num_classes"), **kwargs)


def test_bad_input_low_level():
    with pytest.raises(ValueError, match="tolerance"):
        boundary_band(GOOD, 3, tolerance=-2)
    with pytest.raises(ValueError, match="tolerance"):
        bf1_counts(GOOD, GOOD, 3, tolerance=-2)
    with pytest.raises(ValueError, match="num_classes"):
        MetricAccumulator(0)
    with pytest.raises(ValueError, match="boundary_tolerance"):
        MetricAccumulator(3, boundary_tolerance=-1)
    with pytest.raises(ValueError, match="mask"):
        confusion_matrix(GOOD, GOOD, 3, mask=np.ones((2, 4, 4), bool))
    with pytest.raises(TypeError, match="mask"):
        confusion_matrix(GOOD, GOOD, 3, mask=np.ones((2, 4, 5)))
    with pytest.raises(ValueError, match=r"\[C, C\]"):
        scores_from_stats(torch.zeros(3, 3), torch.zeros(3, 2), torch.zeros(4, 3))
    # the error names the offending values
    with pytest.raises(ValueError, match="7"):
        check_labels(GOOD, np.full((2, 4, 5), 7), 3, 255)


def test_check_labels_conversions():
    p, t = check_labels(np.ones((4, 5), np.uint8), torch.zeros(4, 5, dtype=torch.bool), 2, 255)
    assert p.dtype == t.dtype == torch.int64 and p.shape == t.shape == (1, 4, 5)
    assert int(p.sum()) == 20 and int(t.sum()) == 0


# ---------------------------------------------------------------------------------------------
# metric specs and rewards
# ---------------------------------------------------------------------------------------------


def test_parse_metric_and_reward():
    assert parse_metric("miou") == ("miou",)
    assert parse_metric("miou+biou") == ("miou", "biou")
    assert parse_metric(" mIoU + BF1 ") == ("miou", "bf1")
    for bad in ("", "iou", "miou+", "miou+miou", "miou-biou"):
        with pytest.raises(ValueError, match="miou"):
            parse_metric(bad)
    with pytest.raises(TypeError):
        parse_metric(None)  # type: ignore[arg-type]
    values = {"miou": 0.5, "fwiou": 0.7, "biou": 0.25, "bf1": 0.1, "macc": 0.6, "gacc": 0.9}
    assert reward(values, "miou+biou") == 0.75
    assert reward(values, "gacc") == 0.9
    with pytest.raises(KeyError, match="bf1"):
        reward({"miou": 0.5}, "miou+bf1")
    with pytest.raises(ValueError, match="allowed"):
        reward(values, "dice")
