"""Class codes, label boundaries and their tolerance dilations (inputs already validated).

A label map becomes class codes (the class c, or C for anything that is no class); the
boundary of class c is ``B_c = (L == c) & ~erode3x3(L == c)``; its tolerance dilation is an
OR over a (2r+1)^2 square, done on bit-packed class sets (see :mod:`autoloss_ray.metrics`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _codes_dtype(num_classes: int) -> torch.dtype:
    """Integer dtype for class codes in [0, C] and confusion indices < 2 (C+1)^2."""
    return torch.int16 if 2 * (num_classes + 1) ** 2 < 2**15 else torch.int64


def _stack_codes(
    maps: list[tuple[torch.Tensor, int | None]], num_classes: int
) -> torch.Tensor:
    """[(labels [N,H,W] int64, non-class value or None), ...] -> codes [N, K, H, W].

    A code is the class c for a class pixel and C for anything else (ignored target pixels,
    the ignore value in pred). Validated inputs: every value is a class or the given value.
    """
    first = maps[0][0]
    n, h, w = first.shape
    codes = torch.empty((n, len(maps), h, w), dtype=_codes_dtype(num_classes), device=first.device)
    for k, (labels, nonclass) in enumerate(maps):
        if nonclass is None:
            codes[:, k].copy_(labels)
        else:
            codes[:, k].copy_(torch.where(labels == nonclass, num_classes, labels))
    return codes


def _label_boundaries(codes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """codes [N, K, H, W] (values in [0, C], C = no class) -> bool [N, K, H, W].

    True where the pixel holds a class c and lies on B_c = (L==c) & ~erode3x3(L==c), i.e. some
    3x3 neighbour inside the image holds another code. Integer comparisons of neighbouring
    pixels, separably: ``row`` says a pixel equals its in-image left and right neighbours;
    a pixel is inside its class (no boundary) when its row is such and so are the in-image
    rows above and below, with the same value (the same sets as morphology.erode3x3, which
    the tests check).
    """
    H, W = codes.shape[-2:]
    row = torch.ones(codes.shape, dtype=torch.bool, device=codes.device)
    if W > 1:
        eq = codes[..., 1:] == codes[..., :-1]
        row[..., 1:] &= eq
        row[..., :-1] &= eq
    if H > 1:
        eq = codes[..., 1:, :] == codes[..., :-1, :]
        eq &= row[..., 1:, :]
        eq &= row[..., :-1, :]
        row[..., 1:, :] &= eq
        row[..., :-1, :] &= eq
    # row is now "all in-image 3x3 neighbours equal"; boundary = class pixel and not that
    return torch.lt(codes, num_classes).logical_and_(row.logical_not_())


def _or_dilate_axis(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """OR over a centred window of 2r+1 along ``dim`` (outside = 0); integer x."""
    n = x.shape[dim]
    r = min(radius, n - 1)  # a larger window adds nothing but zeros
    if r <= 0:
        return x
    length = 2 * r + 1
    pad = [0, 0] * (x.dim() - 1 - (dim % x.dim())) + [r, r]
    f = F.pad(x, pad)  # padded p; after the doublings f(j) = OR p[j .. j+k-1]
    k = 1
    while 2 * k <= length:
        m = f.shape[dim] - k
        f = f.narrow(dim, 0, m) | f.narrow(dim, k, m)
        k *= 2
    # OR p[j .. j+length-1] = OR x[j-r .. j+r]
    return f.narrow(dim, 0, n) | f.narrow(dim, length - k, n)


def _or_dilate(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Square (2r+1)^2 OR-dilation of an integer bit map [..., H, W], outside = 0.

    Per bit, equals morphology.dilate(bit map, radius) (separable max = OR on {0, 1}).
    """
    if radius == 0:
        return x
    return _or_dilate_axis(_or_dilate_axis(x, radius, -2), radius, -1)


def _bits_dtype(num_classes: int) -> tuple[torch.dtype, int]:
    """Smallest integer dtype and the number of classes per word of a bit-packed class set."""
    if num_classes <= 8:
        return torch.uint8, 8
    if num_classes <= 15:
        return torch.int16, 15
    if num_classes <= 31:
        return torch.int32, 31
    return torch.int64, 63


class _BoundaryStats:
    """Class boundaries of label maps and their tolerance dilations as bit-packed class sets.

    codes: [N, K, H, W] (from :func:`_stack_codes`). ``boundary``: bool [N, K, H, W], pixel on
    the boundary of its own class. ``words``: per word of ``per_word`` classes, an integer map
    [N, K, H, W] whose bit (c - word start) is D_r(B_c) at that pixel.
    """

    def __init__(self, codes: torch.Tensor, num_classes: int, tolerance: int) -> None:
        C = num_classes
        self.num_classes = C
        self.codes = codes
        self.boundary = _label_boundaries(codes, C)
        dtype, per_word = _bits_dtype(C)
        self.per_word = per_word
        self.words: list[torch.Tensor] = []
        n_words = math.ceil(C / per_word)
        for w in range(n_words):
            if n_words == 1:  # boundary pixels have codes < C <= bits of the dtype
                member, shift = self.boundary, codes
            else:
                lo = w * per_word
                member = self.boundary & (codes >= lo) & (codes < lo + per_word)
                shift = (codes - lo).clamp(0, per_word - 1)
            bits = torch.bitwise_left_shift(member.to(dtype), shift.to(dtype))
            self.words.append(_or_dilate(bits, tolerance))

    def dilated_any(self, channel: int) -> torch.Tensor:
        """bool [N, H, W]: D_r(union_c B_c) of map ``channel``."""
        out = self.words[0][:, channel] != 0
        for word in self.words[1:]:
            out |= word[:, channel] != 0
        return out

    def counts(self, valid: torch.Tensor) -> torch.Tensor:
        """int64 [4, C] rows (n_p, n_g, m_p, m_g), counted at valid pixels only.

        Channel 0 is pred, channel 1 is target.
        """
        C = self.num_classes
        out = []
        for ch, other in ((0, 1), (1, 0)):  # pred boundary vs target dilation, and back
            sel = (self.boundary[:, ch] & valid).reshape(-1).nonzero().squeeze(1)
            cls = self.codes[:, ch].reshape(-1)[sel].to(torch.int64)
            hit = torch.zeros_like(cls)
            for w, word in enumerate(self.words):
                lo = w * self.per_word
                shift = (cls - lo).clamp(0, self.per_word - 1)
                dil = word[:, other].reshape(-1)[sel].to(torch.int64)
                bit = torch.bitwise_right_shift(dil, shift) & 1
                if len(self.words) > 1:
                    bit &= ((cls >= lo) & (cls < lo + self.per_word)).to(torch.int64)
                hit |= bit
            both = torch.bincount(cls + C * hit, minlength=2 * C)
            out.append((both[:C] + both[C:], both[C:]))  # (n, m)
        (n_p, m_p), (n_g, m_g) = out
        return torch.stack([n_p, n_g, m_p, m_g])


def _pred_nonclass(num_classes: int, ignore_index: int | None, pred_all_classes: bool):
    """The value of pred that is no class (ignore_index outside [0, C)), or None if none."""
    if pred_all_classes or ignore_index is None or 0 <= ignore_index < num_classes:
        return None
    return ignore_index
