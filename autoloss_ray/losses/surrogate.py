"""Differentiable metric surrogates (docs/paper.md#the-surrogate-losses): :class:`SurrogateLoss`.

p = softmax(logits) (bilinearly resized to the label size if needed), y = one-hot target (zero
at ignored pixels), v = valid mask. Each logical operation is replaced by a parameterized
monotone curve applied to the soft argument (y is binary):
``AND(p, y) = h_and(p) y``, ``OR(p, y) = h_or(p) + y - h_or(p) y``.

Region metrics (mIoU, FWIoU, BIoU, mAcc, gAcc) only need, per class c and over weighted pixels
(weight v, times the target's boundary band for BIoU)::

    I_c = sum_{target = c} w h_and(p_c)          (the AND of the target class only)
    O_c = sum_{target != c} w h_or(p_c)          (U_c = O_c + n_c, n_c = sum_{target = c} w)

so h_and is evaluated on one probability per pixel, and h_or (mIoU, FWIoU, BIoU only) on every
(pixel, class). These statistics are computed by one fused autograd function, block by block
(cache-sized blocks on CPU, large blocks on GPU): softmax, the curve and its derivative, the
sums. It keeps only ``w (1 - y_c) h_or'(p_c)`` ([N, C, H, W], like the log-probabilities cross
entropy keeps) and ``w h_and'(p_t)`` ([N, H, W]) for backward, which recomputes the softmax per
block. Curve and statistics math is done in float32 (float64 for float64 logits), whatever the
autocast state.

BF1 builds a soft predicted boundary XOR(p_c, minpool3x3(p_c)) from h1..h4 (clamped at >= 0),
the exact target boundary, and tolerance by max-pooling (:mod:`autoloss_ray.morphology`, the
same operations as the exact metrics). The recall term needs the dilated soft boundary only at
target-boundary pixels, so it is read there alone (same values and gradient, ties included).

On CPU, both (region statistics and BF1) run on fused C++ kernels when they build
(built by :mod:`autoloss_ray.native`, bridged by :mod:`._native`: ``_RegionStatsNative``,
``_BF1Native``; one pass per direction, the BF1 soft boundary made one class plane at a time
and never stored); the torch code (:mod:`._eager`, :mod:`._boundary`) is the GPU path and the
fallback, and both are tested against each other. On CUDA the region statistics use the
Triton kernels of :mod:`._triton` and BF1's soft boundary and counts those of
:mod:`._triton_bf1` when available.

This module holds the loss itself (its arguments, checks, curve tables and the dispatch of a
call); the score of each metric term (the region statistics, BF1's counts) is
:mod:`._term_scores`, the search space :mod:`.space`, the file format :mod:`.loss_file`, the
paper's searched curves :mod:`.presets`.

Class sets (which classes a mean runs over) follow the exact metrics and are computed without
gradient from argmax(logits) and the target, so with one-hot logits every ``score`` equals
:func:`autoloss_ray.metrics.evaluate` on that batch (tested for every metric, parameterization
and random admissible theta). A mean over an empty class set gives score 0 (finite, zero
gradient), where ``evaluate`` reports nan.

A sum such as ``"miou+biou"`` has each term's own parameters (concatenated in order);
``score`` is the sum of the term scores and ``forward`` the sum of the term losses
(``len(terms) - score``; for one metric that is ``1 - score``).
"""


from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from autoloss_ray.checks import (
    check_ignore_index,
    check_logits_target,
    check_num_classes,
    check_tolerance,
    resize_to_labels,
)
from autoloss_ray.distributed import check_sync
from autoloss_ray.losses._eager import _compute_dtype
from autoloss_ray.losses._native import (
    _native_capable,
    _NonFiniteLogits,
    _target_prep,
    _use_native,
)
from autoloss_ray.losses._term_scores import bf1_score, region_score
from autoloss_ray.losses.loss_file import (
    FILE_FORMAT,
    FILE_VERSION,
    loss_arguments,
    loss_to_dict,
    read_loss_file,
    write_loss_file,
)
from autoloss_ray.losses.parameterizations import IDENTITY_TABLE, CurveTable, get_parameterization
from autoloss_ray.losses.presets import preset_theta
from autoloss_ray.losses.space import CURVES, SearchSpace, search_space
from autoloss_ray.metrics import check_boundary_classes, parse_metric
from autoloss_ray.vocabulary import (
    DEFAULT_BOUNDARY_TOLERANCE,
    DEFAULT_PARAMETERIZATION,
    IGNORE_INDEX,
)

__all__ = ["CURVES", "SearchSpace", "search_space", "SurrogateLoss", "FILE_FORMAT",
           "FILE_VERSION"]


class SurrogateLoss(nn.Module):
    """Parameterized differentiable surrogate of a segmentation metric (or a sum of metrics).

    Args:
        metric: "miou", "fwiou", "biou", "bf1", "macc", "gacc" or a sum such as "miou+biou".
        num_classes: C. parameterization: "bezier" (default), "bezier1", "linear", "identity".
        theta: parameters (length ``search_space(metric, parameterization).dim``) or None for
            the identity curves (the naive relaxation).
        ignore_index: target value that never counts. boundary_tolerance: BIoU/BF1 radius (px).
        sync: "none" (default): the statistics are pooled over the local mini-batch (the
            paper's per-GPU pooling). "ddp": the per-class sums (I_c, U_c, BF1's soft counts,
            the counts that decide the class sets) are summed over the ranks of the default
            torch.distributed group before the ratios, so every rank's loss is the loss of the
            global batch, and its gradient, once DDP has averaged it over the ranks, is the
            global-batch gradient (each rank's logits get ``world_size`` times their share;
            :mod:`autoloss_ray.distributed`). Needs an initialized process group at forward
            time and the same loss on every rank; one all-reduce of a few [C] vectors per
            metric term. Not stored by :meth:`to_dict` (a runtime choice, like the device).
        boundary_classes: "all" (default) or "foreground": the BIoU band is built from the
            target boundaries of the classes other than ``background_index`` (default 0) and
            BF1 averages over those classes only, as the official release does with
            ``drop_bg`` on VOC (see :func:`autoloss_ray.metrics.evaluate`).
        nonfinite: what ``score``/``forward`` do with NaN or +inf logits: ``"propagate"``
            (default) gives a NaN/inf loss, as a diverged network's loss should look (the
            proxy task stops a trial on a non-finite loss); ``"raise"`` raises ValueError
            saying how many logits are non-finite. -inf logits are a legal zero probability
            either way.
        check_labels: True (default): every call checks that each target label is a class
            or ``ignore_index`` (a ValueError names the bad values). False skips that check,
            for labels checked where they were loaded (the proxy trial's datasets check every
            label map they read): on a GPU the check is the loss's one host read per call
            that waits for the device (BF1 keeps one more, the number of target-boundary
            sites). Types and shapes are checked either way; a bad label then gives wrong
            numbers or a device-side error, not the ValueError. Not stored by
            :meth:`to_dict`.

    ``score(logits [N, C, h, w], target [N, H, W])`` -> scalar tensor (sum of the metrics'
    soft scores); ``forward`` -> sum of the per-metric losses 1 - score_m.
    """

    def __init__(
        self,
        metric: str,
        *,
        num_classes: int,
        parameterization: str = DEFAULT_PARAMETERIZATION,
        theta: Any = None,
        ignore_index: int = IGNORE_INDEX,
        boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
        sync: str = "none",
        boundary_classes: str = "all",
        background_index: int = 0,
        nonfinite: str = "propagate",
        check_labels: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(check_labels, bool):
            raise TypeError(f"check_labels must be True or False, got {check_labels!r}")
        self.check_labels = check_labels
        self.sync = check_sync(sync)
        if nonfinite not in ("propagate", "raise"):
            raise ValueError(f"nonfinite must be 'propagate' or 'raise', got {nonfinite!r}")
        self.nonfinite = nonfinite
        num_classes = check_num_classes(num_classes)
        ignore_index = check_ignore_index(ignore_index)
        boundary_tolerance = check_tolerance(boundary_tolerance)
        self.space = search_space(metric, parameterization)
        self.metric = self.space.metric
        self.terms = parse_metric(self.metric)
        self.parameterization = self.space.parameterization
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.boundary_tolerance = int(boundary_tolerance)
        self._background = check_boundary_classes(boundary_classes, background_index,
                                                  self.num_classes)
        self.boundary_classes = boundary_classes
        self.background_index = int(background_index)
        th = self.space.init.copy() if theta is None else self.space.validate(theta)
        self.register_buffer("_theta", torch.tensor(th, dtype=torch.float64), persistent=True)
        self._tables: dict[tuple[str, str], CurveTable] = {}
        self._tables_key: tuple | None = None
        self._placed: dict[tuple, dict[tuple[str, str], CurveTable]] = {}

    # -- properties --------------------------------------------------------------------------
    @property
    def search_space(self) -> SearchSpace:
        return self.space

    @property
    def theta(self) -> np.ndarray:
        """A numpy copy of the parameters."""
        return self._theta.detach().cpu().numpy().copy()

    def extra_repr(self) -> str:
        return (f"metric={self.metric!r}, num_classes={self.num_classes}, "
                f"parameterization={self.parameterization!r}, ignore_index={self.ignore_index}"
                + (f", sync={self.sync!r}" if self.sync != "none" else ""))

    def curve_tables(self) -> dict[tuple[str, str], CurveTable]:
        """(metric, curve) -> CurveTable (float64, CPU), rebuilt when theta changes."""
        key = (self._theta._version, self._theta.data_ptr())
        if key != self._tables_key:
            par = get_parameterization(self.parameterization)
            th = self._theta.detach().cpu()
            self._tables = {}
            for term, curve, sl in self.space.slices:
                with torch.no_grad():
                    self._tables[(term, curve)] = (
                        IDENTITY_TABLE if par.name == "identity" else par.table(th[sl])
                    )
            self._tables_key = key
            self._placed = {}
        return self._tables

    def _tables_on(self, device: torch.device, dtype: torch.dtype
                   ) -> dict[tuple[str, str], CurveTable]:
        """:meth:`curve_tables` on ``device`` in ``dtype``, kept until theta changes (no copy
        to the device per call)."""
        tables = self.curve_tables()
        placed = self._placed.get((device, dtype))
        if placed is None:
            placed = {k: t.to(device, dtype) for k, t in tables.items()}
            self._placed[(device, dtype)] = placed
        return placed

    def prepare(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> None:
        """Build the curve tables and place them on ``device`` in ``dtype`` now, not in the
        first call. On CUDA that first placement reads theta back to the host and copies the
        tables from pageable host memory, each a wait for the device; a training loop calls
        this once before its first iteration so that none of it happens inside the loop
        (``dtype``: the compute dtype, float32 for float32/bf16/fp16 logits, float64 for
        float64 logits). The tables stay placed until theta changes."""
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:  # the key the loss's calls will use
            dev = torch.device("cuda", torch.cuda.current_device())
        self._tables_on(dev, dtype)

    # -- checks ------------------------------------------------------------------------------
    def _check(self, logits: torch.Tensor, target: torch.Tensor, *, check_values: bool = True
               ) -> tuple[torch.Tensor, ...]:
        """The shared loss-input rules (:func:`autoloss_ray.checks.check_logits_target`: the
        target follows the logits' device; the label values only when ``check_values`` and
        ``check_labels``), then the surrogate's own: no empty batch, and with
        ``nonfinite="raise"`` no NaN/+inf logit. Returns (logits resized to the labels,
        target int64).

        With ``check_values=False`` the caller checks the label values itself, before
        anything else here: :meth:`score` on the fused CPU path, whose target pass counts the
        bad labels and then calls :meth:`_raise_bad_labels`."""
        logits, target = check_logits_target(logits, target, num_classes=self.num_classes,
                                             ignore_index=self.ignore_index,
                                             check_values=self.check_labels and check_values)
        return logits, target

    def _check_rest(self, logits: torch.Tensor, target: torch.Tensor
                    ) -> tuple[torch.Tensor, ...]:
        if target.numel() == 0 or logits.numel() == 0:
            raise ValueError(f"empty input: logits {tuple(logits.shape)}, target "
                             f"{tuple(target.shape)}")
        if self.nonfinite == "raise":
            bad = torch.isnan(logits) | (logits == float("inf"))
            if bool(bad.any()):
                raise ValueError(
                    f"logits hold {int(bad.sum())} NaN or +inf value(s) of "
                    f"{logits.numel()} (nonfinite='raise'); the network has diverged"
                )
        return resize_to_labels(logits, target), target

    def _raise_bad_labels(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Raise the label check's ValueError (the fused target pass found bad labels)."""
        check_logits_target(logits, target, num_classes=self.num_classes,
                            ignore_index=self.ignore_index, check_values=True)
        raise AssertionError("the native target pass and the label check disagree")

    # -- scores ------------------------------------------------------------------------------
    def score(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Sum of the soft scores of the metric terms (each in [0, 1]); a scalar tensor."""
        on_cpu = _native_capable(logits)
        logits, target = self._check(logits, target, check_values=not on_cpu)
        prep = None
        C = self.num_classes
        if on_cpu:
            # one native pass over the labels: their check, the region kernels' target and
            # weights, BIoU's band (before the other checks, where the label check was)
            cd = _compute_dtype(logits)
            r = self.boundary_tolerance if "biou" in self.terms else -1
            prep = _target_prep(target, C, self.ignore_index, cd, band_radius=r,
                                background=self._background)
            if self.check_labels and prep[3]:
                self._raise_bad_labels(logits, target)
        logits, target = self._check_rest(logits, target)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            cd = _compute_dtype(logits)
            tables = self._tables_on(logits.device, cd)
            classes = torch.ones(C, dtype=torch.bool, device=logits.device)
            if self.ignore_index is not None and 0 <= self.ignore_index < C:
                classes[self.ignore_index] = False
            fused = _use_native(logits)
            if fused:
                try:
                    return self._terms(logits, target, classes, tables, cd, True, prep)
                except _NonFiniteLogits:  # NaN/inf logits: the eager path, as autograd does
                    pass
            return self._terms(logits, target, classes, tables, cd, False, None)

    def _terms(self, logits, target, classes, tables, cd, fused, prep):
        """The sum of the term scores (:meth:`score` after its checks); ``prep``: the fused
        path's :func:`._native._target_prep` of the target (None: not fused)."""
        if fused and "bf1" not in self.terms:
            valid = tgt = None  # the region kernels take prep's target and weights
        elif fused and prep[3]:
            # unchecked labels that are no class (check_labels=False): not valid, as prep
            # has them, and -1 in BF1's label map (no index outside [0, C))
            valid = prep[1] != 0
            target = tgt = torch.where(valid, target, -1)
        else:
            if self.ignore_index is None:
                valid = torch.ones_like(target, dtype=torch.bool)
            else:
                valid = target != self.ignore_index
            tgt = torch.where(valid, target, 0)
        total = None
        for term in self.terms:
            if term == "bf1":
                s = bf1_score(self, logits, target, valid, classes, tables, cd, fused)
            else:
                s = region_score(self, term, logits, target, tgt, valid, classes, tables, cd,
                                 fused, prep if fused else None)
            total = s if total is None else total + s
        return total

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return len(self.terms) - self.score(logits, target)

    # -- persistence (the format: autoloss_ray.losses.loss_file) ---------------------------
    def to_dict(self, meta: dict | None = None) -> dict[str, Any]:
        return loss_to_dict(self, meta)

    def to_file(self, path: str | os.PathLike, *, meta: dict | None = None) -> None:
        """Write the loss as human-readable JSON (atomically)."""
        write_loss_file(self.to_dict(meta), path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> SurrogateLoss:
        metric, kw = loss_arguments(data, **overrides)
        return cls(metric, **kw)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides: Any) -> SurrogateLoss:
        """Load a loss written by :meth:`to_file`; keyword overrides replace stored values."""
        data = read_loss_file(path)  # its errors name the path
        try:
            return cls.from_dict(data, **overrides)
        except (ValueError, TypeError) as exc:
            kind = TypeError if isinstance(exc, TypeError) else ValueError
            raise kind(f"loss file {os.fspath(path)!r}: {exc}") from None

    @classmethod
    def from_preset(cls, name: str, *, num_classes: int, **kwargs: Any) -> SurrogateLoss:
        """The paper's searched loss for metric ``name``
        (docs/paper.md#the-papers-released-curves-presets)."""
        parameterization, theta = preset_theta(name)
        return cls(name, num_classes=num_classes, parameterization=parameterization,
                   theta=theta, **kwargs)
