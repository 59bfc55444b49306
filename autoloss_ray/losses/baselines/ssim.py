"""``1 - SSIM`` between softmax probabilities and the one-hot target."""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from autoloss_ray.losses.baselines._base import _Baseline
from autoloss_ray.vocabulary import IGNORE_INDEX

__all__ = ["SSIMLoss"]


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).float()


class SSIMLoss(_Baseline):
    """``1 - SSIM`` between ``softmax(logits)`` and the one-hot target, per class.

    SSIM map per class with a ``window x window`` Gaussian (default 11, sigma 1.5; separable,
    replicate padding, i.e. scipy's ``mode="nearest"``), ``C1 = 0.01^2``, ``C2 = 0.03^2``.
    Ignored pixels are zeroed in both the probabilities and the one-hot target before
    filtering; the loss is
    ``sum_{valid i, c} (1 - ssim_ic) / (C * #valid)``.
    """

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        ignore_index: int = IGNORE_INDEX,
        window_size: int = 11,
        sigma: float = 1.5,
        c1: float = 0.01**2,
        c2: float = 0.03**2,
    ) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index)
        if not isinstance(window_size, numbers.Integral) or window_size < 1 or window_size % 2 == 0:
            raise ValueError(f"window_size must be an odd int >= 1, got {window_size!r}")
        if not (isinstance(sigma, numbers.Real) and sigma > 0):
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        self.window_size, self.sigma = int(window_size), float(sigma)
        self.c1, self.c2 = float(c1), float(c2)
        kernel = _gaussian_kernel(self.window_size, self.sigma)
        self.register_buffer("kernel", kernel, persistent=False)

    def _band(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """[n, n] matrix M with (M @ v) = 1-d Gaussian filter of v with replicate padding."""
        r = self.window_size // 2
        k = self.kernel.to(device=like.device, dtype=like.dtype)
        idx = torch.arange(n, device=like.device).unsqueeze(1) + torch.arange(
            -r, r + 1, device=like.device
        )
        m = torch.zeros(n, n, device=like.device, dtype=like.dtype)
        return m.scatter_add_(1, idx.clamp_(0, n - 1), k.expand(n, -1).contiguous())

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian filter of every map of x [B, H, W] with replicate padding.

        Done as two banded matrix products (``A @ x @ B^T``, the padding folded into the
        bands): exact, and on CPU an order of magnitude faster than single-channel conv2d.
        """
        return self._band(x.shape[-2], x) @ x @ self._band(x.shape[-1], x).T

    def _loss(self, logits, target, valid):
        n, c, h, w = logits.shape
        v = valid.unsqueeze(1).to(logits.dtype)
        p = torch.softmax(logits, dim=1) * v
        y = F.one_hot(target, c).permute(0, 3, 1, 2).to(p.dtype) * v
        stack = torch.stack([p, y, p * p, y * y, p * y], dim=0).reshape(5 * n * c, h, w)
        mu_p, mu_y, pp, yy, py = self._filter(stack).reshape(5, n, c, h, w)
        var_p = pp - mu_p * mu_p
        var_y = yy - mu_y * mu_y
        cov = py - mu_p * mu_y
        ssim = ((2 * mu_p * mu_y + self.c1) * (2 * cov + self.c2)) / (
            (mu_p * mu_p + mu_y * mu_y + self.c1) * (var_p + var_y + self.c2)
        )
        return ((1.0 - ssim) * v).sum() / (c * valid.sum().clamp_min(1).to(ssim.dtype))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window_size={self.window_size}, sigma={self.sigma}"
