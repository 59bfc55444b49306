"""Benchmark: autoloss_ray.metrics.evaluate vs torchmetrics mIoU vs a naive per-class version.

CamVid-sized batch (default N=32, 360x480, 12 classes, ignore 11). Uses the real CamVid labels
(trainannot/*.png) when present, else random blobs; the prediction is the label map shifted by
a few pixels with random blocks pasted in. Prints the times and their ratios to torchmetrics'
MulticlassJaccardIndex (mIoU alone), and checks the goals of issue 2:

- the four confusion-matrix metrics (mIoU, FWIoU, mAcc, gAcc) no slower than torchmetrics mIoU,
- all six metrics within 2x of torchmetrics mIoU (issue 31: within 0.5x),
- >= 10x faster than the naive per-class implementation (python loop over images and classes,
  numpy masks, scipy.ndimage morphology), whose results are checked against evaluate().

Run: .venv/bin/python bench/metrics.py [--n 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from autoloss_ray.metrics import METRICS, confusion_matrix, evaluate, scores_from_stats

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAMVID = REPO.parent / "shared" / "data" / "camvid"


def load_labels(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    ann = Path(args.data_root) / "trainannot"
    files = sorted(ann.glob("*.png"))[: args.n] if ann.is_dir() else []
    if len(files) == args.n:
        from PIL import Image

        labels = np.stack([np.array(Image.open(f)) for f in files]).astype(np.int64)
        if labels.shape[1:] == (args.height, args.width):
            return labels, f"CamVid {ann} ({len(files)} label maps)"
    rng = np.random.default_rng(args.seed)
    cell = 24
    grid = (args.n, args.height // cell + 1, args.width // cell + 1)
    coarse = rng.integers(0, args.classes, grid)
    labels = np.kron(coarse, np.ones((1, cell, cell), np.int64))[:, : args.height, : args.width]
    return np.ascontiguousarray(labels), "random blobs (CamVid not found)"


def make_pred(labels: np.ndarray, classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pred = np.roll(labels, shift=(3, -4), axis=(1, 2)).copy()
    n, h, w = pred.shape
    for i in range(n):
        for _ in range(20):
            y, x = rng.integers(0, h - 30), rng.integers(0, w - 30)
            pred[i, y : y + 30, x : x + 30] = rng.integers(0, classes)
    return pred


def naive_metrics(pred: np.ndarray, target: np.ndarray, C: int, ignore: int, r: int) -> dict:
    """Per-class python loops with numpy masks and scipy morphology (what one writes first)."""
    inter = np.zeros(C)
    union = np.zeros(C)
    binter = np.zeros(C)
    bunion = np.zeros(C)
    gt = np.zeros(C)
    cnt = np.zeros((4, C))
    k3 = np.ones((3, 3), bool)
    kr = np.ones((2 * r + 1, 2 * r + 1), bool)
    for p, t in zip(pred, target):
        valid = t != ignore
        bounds_t, bounds_p = [], []
        for c in range(C):
            tm = (t == c) & valid
            pm = p == c
            tb = tm & ~ndimage.binary_erosion(tm, k3, border_value=1)
            pb = pm & ~ndimage.binary_erosion(pm, k3, border_value=1)
            bounds_t.append(tb)
            bounds_p.append(pb)
        band = ndimage.binary_dilation(np.any(bounds_t, axis=0), kr, border_value=0)
        for c in range(C):
            tm = (t == c) & valid
            pm = (p == c) & valid
            inter[c] += np.sum(tm & pm)
            union[c] += np.sum(tm | pm)
            binter[c] += np.sum(tm & pm & band)
            bunion[c] += np.sum((tm | pm) & band)
            gt[c] += np.sum(tm)
            tb, pb = bounds_t[c], bounds_p[c]
            tbd = ndimage.binary_dilation(tb, kr, border_value=0)
            pbd = ndimage.binary_dilation(pb, kr, border_value=0)
            cnt[:, c] += [
                np.sum(pb & valid),
                np.sum(tb & valid),
                np.sum(pb & tbd & valid),
                np.sum(tb & pbd & valid),
            ]
    classes = [c for c in range(C) if c != ignore]

    def mean(vals):
        return sum(vals) / len(vals) if vals else math.nan

    total = gt.sum()
    iou = {c: inter[c] / union[c] for c in classes if union[c] > 0}
    f1 = []
    for c in classes:
        n_p, n_g, m_p, m_g = cnt[:, c]
        if n_p + n_g == 0:
            continue
        prec = m_p / n_p if n_p else 0.0
        rec = m_g / n_g if n_g else 0.0
        f1.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return {
        "miou": mean(list(iou.values())),
        "fwiou": sum(gt[c] / total * iou.get(c, 0.0) for c in classes),
        "biou": mean([binter[c] / bunion[c] for c in classes if bunion[c] > 0]),
        "bf1": mean(f1),
        "macc": mean([inter[c] / gt[c] for c in classes if gt[c] > 0]),
        "gacc": inter.sum() / total,
    }


def timeit(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=32, help="images in the batch (default 32)")
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--classes", type=int, default=12, help="num_classes (default 12)")
    ap.add_argument("--ignore", type=int, default=11, help="ignore_index (default 11)")
    ap.add_argument("--tolerance", type=int, default=5, help="boundary tolerance in pixels")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    ap.add_argument("--naive-repeats", type=int, default=1, help="timed repeats of the naive one")
    ap.add_argument("--data-root", default=str(DEFAULT_CAMVID), help="CamVid root (SegNet layout)")
    ap.add_argument("--device", default="cpu", help="torch device for evaluate/torchmetrics")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from torchmetrics.classification import MulticlassJaccardIndex

    labels, source = load_labels(args)
    pred_np = make_pred(labels, args.classes, args.seed)
    dev = torch.device(args.device)
    target = torch.from_numpy(labels).to(dev)
    pred = torch.from_numpy(pred_np).to(dev)
    C, ign, r = args.classes, args.ignore, args.tolerance

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def run_evaluate():
        out = evaluate(pred, target, C, ignore_index=ign, boundary_tolerance=r)
        sync()
        return out

    def run_confusion_only():
        cm = confusion_matrix(pred, target, C, ignore_index=ign)
        z = torch.zeros_like(cm)
        out = scores_from_stats(cm, z, torch.zeros(4, C, dtype=torch.int64), ignore_index=ign)
        sync()
        return {k: out[k] for k in ("miou", "fwiou", "macc", "gacc")}

    tm_miou = MulticlassJaccardIndex(num_classes=C, ignore_index=ign, average="macro").to(dev)

    def run_torchmetrics():
        tm_miou.reset()
        tm_miou.update(pred, target)
        out = float(tm_miou.compute())
        sync()
        return out

    t_tm, tm_val = timeit(run_torchmetrics, args.repeats)
    t_cm, cm_val = timeit(run_confusion_only, args.repeats)
    t_ev, ev_val = timeit(run_evaluate, args.repeats)
    t_nv, nv_val = timeit(lambda: naive_metrics(pred_np, labels, C, ign, r), args.naive_repeats)

    print(f"data: {source}; batch {tuple(labels.shape)}, {C} classes, ignore {ign}, tolerance {r}")
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, device {dev}; median of {args.repeats} "
        f"(naive: {args.naive_repeats})"
    )
    print()
    print("| method | metrics | time (ms) | / torchmetrics mIoU |")
    print("|---|---|---:|---:|")
    rows = [
        ("torchmetrics MulticlassJaccardIndex", "mIoU", t_tm),
        ("autoloss_ray confusion_matrix + scores", "mIoU FWIoU mAcc gAcc", t_cm),
        ("autoloss_ray evaluate", "all six", t_ev),
        ("naive per-class (numpy + scipy loops)", "all six", t_nv),
    ]
    for name, what, t in rows:
        print(f"| {name} | {what} | {t * 1e3:.1f} | {t / t_tm:.2f}x |")
    print()
    print(f"evaluate is {t_nv / t_ev:.1f}x faster than naive")
    diff_tm = abs(ev_val["miou"] - tm_val)
    diff_nv = max(abs(ev_val[k] - nv_val[k]) for k in METRICS)
    print(
        f"agreement: |mIoU - torchmetrics| = {diff_tm:.2e}; "
        f"max |evaluate - naive| = {diff_nv:.2e}"
    )
    print("values: " + ", ".join(f"{k}={ev_val[k]:.4f}" for k in METRICS))
    goals = [
        ("confusion-matrix metrics <= torchmetrics mIoU", t_cm <= t_tm),
        ("all six within 2x of torchmetrics mIoU", t_ev <= 2 * t_tm),
        ("all six <= 0.5x torchmetrics mIoU (issue 31)", t_ev <= 0.5 * t_tm),
        (">= 10x faster than naive", t_nv >= 10 * t_ev),
        ("same values", diff_tm < 1e-6 and diff_nv < 1e-9),
    ]
    for name, ok in goals:
        print(f"goal: {name}: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
