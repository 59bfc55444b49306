"""Monotone curves h: [0, 1] -> [0, 1] with h(0) = 0 and h(1) = 1 (the curves of
docs/paper.md#the-surrogate-losses).

Each :class:`Parameterization` maps a parameter vector ``theta`` (one curve) in its box to a
curve. Names (:func:`get_parameterization`):

- ``"bezier"``: piecewise quadratic Bezier curve with 2 segments (the paper's default).
  Control points P0 = (0, 0), P1, P2, P3, P4 = (1, 1); segment 1 is (P0, P1, P2), segment 2 is
  (P2, P3, P4). theta in [0, 1]^6, laid out ``(x1, y1, x2, y2, x3, y3)`` as *increments*: per
  coordinate, ``cp_1 = theta_1`` and ``cp_k = cp_{k-1} + theta_k (1 - cp_{k-1})``, so every
  admissible theta gives monotone control points. theta = (1/4, 1/4, 1/3, 1/3, 1/2, 1/2) is
  the identity curve.
- ``"bezier1"``: one quadratic segment (P0, P1, P2 = (1, 1)); theta = (x1, y1) in [0, 1]^2
  (for one point the increment is the point); (1/2, 1/2) is the identity.
- ``"linear"``: 5 line segments with knots x = 0, 0.2, ..., 1; the y increments are
  ``softmax(theta)``; theta is unbounded and theta = 0 is the identity (paper, Appendix B).
- ``"identity"``: h(x) = x, no parameters (the naive relaxation).

Evaluation (one formula for all, on whole tensors): every segment is a quadratic Bezier (a
line is one with its middle control point halfway). Each segment is split at its x-midpoint
into two *half-segments*; a half-segment is evaluated from its nearer end (the "anchor"), so
that h(0) = 0 and h(1) = 1 hold exactly and precision is best at the ends. With the segment's
x coordinates normalised from the anchor (u in [0, 1/2], middle control c in [0, 1]), the
curve parameter is the stable closed form

    t = u / (c + sqrt(c^2 + (1 - 2c) u)),

with ``c`` clamped to [EPS_C, 1 - EPS_C] (so ``dt/du = 1 / (2 sqrt(...))`` stays finite) and
``c^2 + (1 - 2c) u`` (>= min(c, 1 - c)^2 in exact arithmetic) floored at EPS_C^2 (rounding can
otherwise push it under 0 near c = 1). Segments narrower than EPS_W are degenerate (vertical
steps): u is then measured with unit width, so values and gradients stay finite. The segment
of each element is found with ``torch.bucketize`` and its coefficients gathered, so only one
segment is evaluated per element.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "Parameterization",
    "PARAMETERIZATIONS",
    "get_parameterization",
    "CurveTable",
    "curve_table",
    "evaluate_table",
    "evaluate_table_into",
    "Workspace",
    "EPS_C",
    "EPS_W",
    "SFLOOR",
    "IDENTITY_TABLE",
]

EPS_C = 1e-4  # middle control point kept this far (relative) from a segment's ends
EPS_W = 1e-6  # segments narrower than this are vertical steps
_TINY = 1e-30  # x <= this is x = 0 (it stays on the first half-segment)

# Rows of a coefficient table (one column per half-segment).
_A, _B, _C, _Y0, _YB, _YA = range(6)
_ROWS = 6
# floor of c^2 + (1 - 2c) u = c^2 (1 - u) + (1 - c)^2 u >= min(c, 1 - c)^2 >= EPS_C^2 (exact
# arithmetic); rounding near c = 1, u = 1 can push the computed value under it.
SFLOOR = EPS_C * EPS_C


@dataclass(frozen=True, eq=False)
class CurveTable:
    """A curve ready for evaluation: ``bounds`` [2S - 1] and ``coef`` [6, 2S] tensors.

    Identity curves have ``bounds is None``.
    """

    bounds: torch.Tensor | None
    coef: torch.Tensor | None

    @property
    def is_identity(self) -> bool:
        return self.bounds is None

    def to(self, device: torch.device | str, dtype: torch.dtype) -> CurveTable:
        if self.bounds is None:
            return self
        return CurveTable(self.bounds.to(device, dtype), self.coef.to(device, dtype))


IDENTITY_TABLE = CurveTable(None, None)


def _increments_to_points(inc: torch.Tensor) -> torch.Tensor:
    """[..., K] increments in [0, 1] -> [..., K] monotone points: cp_k = cp_{k-1} + th_k(1-cp_{k-1})."""
    # 1 - cp_k = prod_{j<=k} (1 - th_j)
    return 1.0 - torch.cumprod(1.0 - inc, dim=-1)


def _points_to_increments(points: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_increments_to_points` (numpy, [..., K]); clamped to [0, 1]."""
    points = np.asarray(points, dtype=np.float64)
    prev = np.concatenate([np.zeros_like(points[..., :1]), points[..., :-1]], axis=-1)
    room = 1.0 - prev
    inc = np.where(room > 0, (points - prev) / np.where(room > 0, room, 1.0), 0.0)
    return np.clip(inc, 0.0, 1.0)


def curve_table(xs: torch.Tensor, ys: torch.Tensor) -> CurveTable:
    """Table of a piecewise quadratic Bezier curve from its control points.

    xs, ys: [2S + 1] control points (P0 = (0, 0) ... P_2S = (1, 1)), monotone; segment k is
    (P_2k, P_2k+1, P_2k+2). Differentiable in xs, ys (torch ops only).
    """
    S = (xs.shape[0] - 1) // 2
    cols = []
    bounds = []
    for k in range(S):
        x0, xm, x1 = xs[2 * k], xs[2 * k + 1], xs[2 * k + 2]
        y0, ym, y1 = ys[2 * k], ys[2 * k + 1], ys[2 * k + 2]
        w = x1 - x0
        degenerate = w <= EPS_W
        w_safe = torch.where(degenerate, torch.ones_like(w), w)
        for anchor_start in (True, False):
            if anchor_start:
                xa, ya, yo, sign = x0, y0, y1, 1.0
                c = (xm - x0) / w_safe
            else:
                xa, ya, yo, sign = x1, y1, y0, -1.0
                c = (x1 - xm) / w_safe
            c = torch.where(degenerate, torch.full_like(c, 0.5), c).clamp(EPS_C, 1.0 - EPS_C)
            A = sign / w_safe
            B = -A * xa
            yb = 2.0 * (ym - ya)
            ya2 = ya - 2.0 * ym + yo
            cols.append(torch.stack([A, B, c, ya, yb, ya2]))
        mid = 0.5 * (x0 + x1)
        bounds.append(mid)
        if k < S - 1:
            bounds.append(x1)
    coef = torch.stack(cols, dim=1)
    b = torch.stack(bounds).detach().clamp(min=_TINY)
    return CurveTable(b, coef)


def evaluate_table(
    table: CurveTable, x: torch.Tensor, *, derivative: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """h(x) (and dh/dx if ``derivative``) for x in [0, 1] of any shape, same dtype as x.

    (x outside [0, 1] is extrapolated from the end half-segments; values stay finite.)

    Only the half-segment that holds each element is evaluated (bucketize + gather).
    Differentiable in x and in the table's coefficients.
    """
    if table.is_identity:
        return (x, torch.ones_like(x)) if derivative else x
    coef = table.coef
    if coef.dtype != x.dtype or coef.device != x.device:
        table = table.to(x.device, x.dtype)
        coef = table.coef
    # No clamps on x, u or t: torch's clamp passes no gradient at the bounds (x = 0, 1 are
    # common). Rounding may put u a hair below 0; s is floored, so everything stays finite.
    idx = torch.bucketize(x, table.bounds, right=True)
    co = coef.index_select(1, idx.reshape(-1)).view(_ROWS, *x.shape)
    u = torch.addcmul(co[_B], co[_A], x)
    c = co[_C]
    s = torch.addcmul(u, c, c - 2.0 * u).clamp(min=SFLOOR)  # c^2 + (1 - 2c) u
    r = s.sqrt()
    t = u / (c + r)
    h = torch.addcmul(co[_YB], co[_YA], t) * t + co[_Y0]
    if not derivative:
        return h
    d = torch.addcmul(co[_YB], co[_YA], t, value=2.0) * co[_A] * 0.5 / r
    return h, d


class Workspace:
    """Reusable scratch buffers for :func:`evaluate_table_into` (no allocation per call).

    Large temporary tensors are slow on CPU (each one is fresh memory from the OS); blocked
    code evaluates the curve on cache-sized pieces with these buffers instead.
    """

    def __init__(self, numel: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self.numel = int(numel)
        self.idx = torch.empty(numel, dtype=torch.int64, device=device)
        self.co = torch.empty((_ROWS, numel), dtype=dtype, device=device)
        self.a = torch.empty(numel, dtype=dtype, device=device)
        self.b = torch.empty(numel, dtype=dtype, device=device)
        self.c = torch.empty(numel, dtype=dtype, device=device)

    def get(self, name: str, n: int) -> torch.Tensor:
        buf = getattr(self, name)
        return buf[..., :n]


def evaluate_table_into(
    table: CurveTable,
    x: torch.Tensor,
    h_out: torch.Tensor,
    d_out: torch.Tensor | None,
    ws: Workspace,
) -> None:
    """:func:`evaluate_table` without autograd and without allocations.

    x: contiguous 1-d [n] (n <= ws.numel), values in [0, 1]; writes h(x) into ``h_out`` and,
    if given, h'(x) into ``d_out`` (both contiguous [n], x's dtype; may not alias x).
    ``table`` must already be on x's device and dtype. Same formula as evaluate_table.
    """
    n = x.numel()
    if table.is_identity:
        h_out.copy_(x)
        if d_out is not None:
            d_out.fill_(1.0)
        return
    idx = ws.get("idx", n)
    torch.bucketize(x, table.bounds, right=True, out=idx)
    co = ws.get("co", n)
    torch.index_select(table.coef, 1, idx, out=co)
    u = torch.addcmul(co[_B], co[_A], x, out=ws.get("a", n))
    r = torch.add(co[_C], u, alpha=-2.0, out=ws.get("b", n))
    torch.addcmul(u, co[_C], r, out=r)
    r.clamp_(min=SFLOOR).sqrt_()
    t = torch.add(co[_C], r, out=ws.get("c", n))
    torch.div(u, t, out=t)
    torch.addcmul(co[_YB], co[_YA], t, out=h_out)
    h_out.mul_(t).add_(co[_Y0])
    if d_out is not None:
        torch.addcmul(co[_YB], co[_YA], t, value=2.0, out=d_out)
        d_out.mul_(co[_A]).div_(r).mul_(0.5)


@dataclass(frozen=True, eq=False)
class Parameterization:
    """A family of monotone curves on [0, 1] with h(0) = 0 and h(1) = 1.

    name, dim_per_curve, low / high (numpy [dim_per_curve], +-inf for unbounded dims),
    identity_theta (numpy [dim_per_curve]). ``curve(theta, x)`` evaluates h on a tensor.
    """

    name: str
    dim_per_curve: int
    low: np.ndarray = field(repr=False)
    high: np.ndarray = field(repr=False)
    identity_theta: np.ndarray = field(repr=False)
    segments: int = 0

    # -- theta -> control points -------------------------------------------------------------
    def control_points(self, theta) -> tuple[torch.Tensor, torch.Tensor]:
        """Control points (xs, ys), each [2S + 1] including (0, 0) and (1, 1).

        theta: Tensor or array [dim_per_curve]. Torch ops only (differentiable in theta).
        """
        th = self._as_theta(theta)
        zero = th.new_zeros(1)
        one = th.new_ones(1)
        if self.name in ("bezier", "bezier1"):
            xs = _increments_to_points(th[0::2])
            ys = _increments_to_points(th[1::2])
        elif self.name == "linear":
            xs = torch.arange(1, self.segments, dtype=th.dtype, device=th.device) / self.segments
            ys = torch.cumsum(torch.softmax(th, dim=0), dim=0)[:-1]
            # a line as a quadratic Bezier: middle control points halfway
            kx = torch.cat([zero, xs, one])
            ky = torch.cat([zero, ys, one])
            mx = 0.5 * (kx[:-1] + kx[1:])
            my = 0.5 * (ky[:-1] + ky[1:])
            allx = torch.stack([kx[:-1], mx], dim=1).reshape(-1)
            ally = torch.stack([ky[:-1], my], dim=1).reshape(-1)
            return torch.cat([allx, one]), torch.cat([ally, one])
        else:  # identity
            return torch.cat([zero, one]), torch.cat([zero, one])
        return torch.cat([zero, xs, one]), torch.cat([zero, ys, one])

    def table(self, theta) -> CurveTable:
        """The evaluation table of the curve (differentiable in theta)."""
        if self.name == "identity":
            return IDENTITY_TABLE
        xs, ys = self.control_points(theta)
        return curve_table(xs, ys)

    def curve(self, theta, x: torch.Tensor) -> torch.Tensor:
        """h(x) for a tensor x with values in [0, 1]; differentiable in x and theta.

        theta: Tensor or array [dim_per_curve]; x: any shape (float). Returns x's shape/dtype.
        """
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            raise TypeError(f"x must be a floating torch.Tensor, got {type(x).__name__}")
        if self.name == "identity":
            self._as_theta(theta)
            return x
        th = self._as_theta(theta, dtype=x.dtype if x.dtype == torch.float64 else torch.float32,
                            device=x.device)
        out = evaluate_table(self.table(th), x.to(th.dtype))
        return out.to(x.dtype)

    def curve_derivative(self, theta, x: torch.Tensor) -> torch.Tensor:
        """dh/dx at x (no autograd needed)."""
        if self.name == "identity":
            return torch.ones_like(x)
        th = self._as_theta(theta, dtype=x.dtype if x.dtype == torch.float64 else torch.float32,
                            device=x.device)
        return evaluate_table(self.table(th), x.to(th.dtype), derivative=True)[1].to(x.dtype)

    # -- checks ------------------------------------------------------------------------------
    def _as_theta(self, theta, *, dtype=None, device=None) -> torch.Tensor:
        if theta is None:
            theta = self.identity_theta
        if isinstance(theta, torch.Tensor):
            th = theta.to(dtype=dtype or (theta.dtype if theta.dtype.is_floating_point
                                           else torch.float64), device=device or theta.device)
        else:
            th = torch.as_tensor(np.asarray(theta, dtype=np.float64), dtype=dtype or torch.float64,
                                 device=device)
        th = th.reshape(-1)
        if th.numel() != self.dim_per_curve:
            raise ValueError(
                f"a {self.name!r} curve takes {self.dim_per_curve} parameters, got {th.numel()}"
            )
        return th

    def contains(self, theta) -> bool:
        th = np.asarray(theta, dtype=np.float64).reshape(-1)
        return (
            th.shape == (self.dim_per_curve,)
            and bool(np.all(np.isfinite(th)))
            and bool(np.all(th >= self.low))
            and bool(np.all(th <= self.high))
        )

    def to_theta(self, xs, ys) -> np.ndarray:
        """Inverse of the increment map for Bezier curves: interior control points -> theta.

        xs, ys: the interior control points [2S - 1] (without (0,0) and (1,1)), monotone.
        """
        if self.name not in ("bezier", "bezier1"):
            raise ValueError(f"to_theta is defined for Bezier parameterizations, not {self.name!r}")
        xs = np.asarray(xs, dtype=np.float64)
        ys = np.asarray(ys, dtype=np.float64)
        k = self.dim_per_curve // 2
        if xs.shape != (k,) or ys.shape != (k,):
            raise ValueError(f"{self.name!r} needs {k} interior control points per axis, "
                             f"got {xs.shape} and {ys.shape}")
        th = np.empty(2 * k)
        th[0::2] = _points_to_increments(xs)
        th[1::2] = _points_to_increments(ys)
        return th


def _bezier(segments: int, name: str) -> Parameterization:
    k = 2 * segments - 1  # interior control points
    ident = np.array([1.0 / (k + 1 - j) for j in range(k)])  # evenly spaced points 1/(k+1)..
    return Parameterization(
        name=name,
        dim_per_curve=2 * k,
        low=np.zeros(2 * k),
        high=np.ones(2 * k),
        identity_theta=np.repeat(ident, 2),
        segments=segments,
    )


PARAMETERIZATIONS: dict[str, Parameterization] = {
    "bezier": _bezier(2, "bezier"),
    "bezier1": _bezier(1, "bezier1"),
    "linear": Parameterization(
        name="linear",
        dim_per_curve=5,
        low=np.full(5, -math.inf),
        high=np.full(5, math.inf),
        identity_theta=np.zeros(5),
        segments=5,
    ),
    "identity": Parameterization(
        name="identity",
        dim_per_curve=0,
        low=np.zeros(0),
        high=np.zeros(0),
        identity_theta=np.zeros(0),
        segments=1,
    ),
}


def get_parameterization(name: str) -> Parameterization:
    """The parameterization called ``name`` (one of :data:`PARAMETERIZATIONS`)."""
    if not isinstance(name, str) or name not in PARAMETERIZATIONS:
        raise ValueError(
            f"unknown parameterization {name!r}; expected one of {', '.join(PARAMETERIZATIONS)}"
        )
    return PARAMETERIZATIONS[name]
