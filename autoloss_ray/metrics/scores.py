"""The six metrics from dataset-level sums (docs/paper.md#the-exact-metrics)."""

from __future__ import annotations

import torch

__all__ = ["scores_from_stats"]


def _nanmean(values: torch.Tensor, include: torch.Tensor) -> float:
    n = int(include.sum())
    return float(values[include].sum() / n) if n else float("nan")


def _miou(cm: torch.Tensor, classes: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    tp = cm.diagonal()
    row, col = cm.sum(1), cm.sum(0)
    denom = row + col - tp
    iou = torch.where(denom > 0, tp / denom.clamp(min=1), torch.zeros_like(tp))
    return _nanmean(iou, (denom > 0) & classes), iou, row


def scores_from_stats(
    confusion: torch.Tensor,
    band_confusion: torch.Tensor,
    bf1_counts: torch.Tensor,
    *,
    ignore_index: int | None = None,
    bf1_background: int | None = None,
) -> dict[str, float]:
    """The six metrics from dataset-level sums (docs/paper.md#the-exact-metrics).

    confusion, band_confusion: [C, C] counts M[g, p]; bf1_counts: [4, C] rows
    (n_p, n_g, m_p, m_g). A class with a zero denominator is left out of a mean; an empty mean
    is nan. ``ignore_index`` inside [0, C) names a class that is left out of every mean;
    ``bf1_background`` a class left out of the BF1 mean (``boundary_classes="foreground"``).
    Returns {metric: float} in METRICS order.
    """
    cm = torch.as_tensor(confusion).detach().to("cpu", torch.float64)
    bcm = torch.as_tensor(band_confusion).detach().to("cpu", torch.float64)
    bf = torch.as_tensor(bf1_counts).detach().to("cpu", torch.float64)
    C = cm.shape[0]
    if cm.shape != (C, C) or bcm.shape != (C, C) or bf.shape != (4, C):
        raise ValueError(
            "expected confusion [C, C], band_confusion [C, C] and bf1_counts [4, C], got "
            f"{tuple(cm.shape)}, {tuple(bcm.shape)} and {tuple(bf.shape)}"
        )
    classes = torch.ones(C, dtype=torch.bool)
    if ignore_index is not None and 0 <= ignore_index < C:
        classes[ignore_index] = False

    total = cm.sum()
    tp = cm.diagonal()
    row = cm.sum(1)
    miou, iou, _ = _miou(cm, classes)
    biou, _, _ = _miou(bcm, classes)
    gacc = float(tp.sum() / total) if total > 0 else float("nan")
    acc = tp / row.clamp(min=1)
    macc = _nanmean(acc, (row > 0) & classes)
    fwiou = float((row * iou * classes).sum() / total) if total > 0 else float("nan")

    n_p, n_g, m_p, m_g = bf
    prec = torch.where(n_p > 0, m_p / n_p.clamp(min=1), torch.zeros_like(n_p))
    rec = torch.where(n_g > 0, m_g / n_g.clamp(min=1), torch.zeros_like(n_g))
    s = prec + rec
    f1 = torch.where(s > 0, 2 * prec * rec / torch.where(s > 0, s, 1.0), torch.zeros_like(s))
    bf1_classes = classes
    if bf1_background is not None:
        bf1_classes = classes.clone()
        bf1_classes[bf1_background] = False
    bf1 = _nanmean(f1, ((n_p + n_g) > 0) & bf1_classes)
    return {"miou": miou, "fwiou": fwiou, "biou": biou, "bf1": bf1, "macc": macc, "gacc": gacc}
