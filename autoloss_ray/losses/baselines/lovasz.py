"""Lovasz-softmax loss (Berman et al., CVPR 2018)."""

from __future__ import annotations

import torch

from autoloss_ray.losses.baselines._base import _Baseline

__all__ = ["LovaszSoftmaxLoss"]


def _lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss, row-wise.

    fg_sorted [K, P] (0/1 ground truth sorted by decreasing error) -> [K, P]."""
    gts = fg_sorted.sum(dim=1, keepdim=True)
    intersection = gts - fg_sorted.cumsum(dim=1)
    union = gts + (1.0 - fg_sorted).cumsum(dim=1)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)


class LovaszSoftmaxLoss(_Baseline):
    """Lovasz-softmax loss (Berman, Rannen Triki, Blaschko, CVPR 2018).

    For each class c present in the (valid) target: errors ``e_i = |y_ic - p_ic|`` over all
    valid pixels of the batch, sorted decreasingly; loss_c = ``<e_sorted, grad Delta_J>`` with
    the Jaccard-loss increments of the sorted prefixes; the loss is the mean over present
    classes (0 if none). ``classes="present"``, ``per_image=False``.
    """

    def _loss(self, logits, target, valid):
        c = logits.shape[1]
        p = torch.softmax(logits, dim=1).permute(1, 0, 2, 3).reshape(c, -1)  # [C, NHW]
        flat_valid = valid.reshape(-1)
        labels = target.reshape(-1)[flat_valid]
        if labels.numel() == 0:
            return p.sum() * 0.0
        present = torch.bincount(labels, minlength=c)[:c].nonzero().squeeze(1)
        p = p[:, flat_valid][present]  # [K, P]
        fg = (labels.unsqueeze(0) == present.unsqueeze(1)).to(p.dtype)
        errors = (fg - p).abs()
        errors_sorted, perm = torch.sort(errors, dim=1, descending=True)
        grad = _lovasz_grad(torch.gather(fg, 1, perm))
        return (errors_sorted * grad).sum(dim=1).mean()
