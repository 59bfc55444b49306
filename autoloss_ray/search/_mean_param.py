"""The policy mean ``mu`` as unconstrained parameters ``z`` (what PPO2's Adam moves).

Per dimension of the box ``[low, high]``:

* bounded on both sides: ``mu = low + (high - low) * sigmoid(z)`` (logits);
* bounded below only:    ``mu = low + softplus(z)``;
* bounded above only:    ``mu = high - softplus(z)``;
* unbounded:             ``mu = z``.

Pure numpy; every array is [D].
"""

from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["MeanParameterization"]

# Dimension kinds of the mu parameterization.
_BOX, _LOWER, _UPPER, _FREE = 0, 1, 2, 3


class MeanParameterization:
    """``mu <-> z`` on the box ``low, high`` [D] (already validated, infinite bounds allowed).

    ``width`` [D] is ``high - low`` for dimensions bounded on both sides and 1 elsewhere (the
    unit of the policy scale there).
    """

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        lo_f, hi_f = np.isfinite(low), np.isfinite(high)
        self.kind = np.where(
            lo_f & hi_f, _BOX, np.where(lo_f, _LOWER, np.where(hi_f, _UPPER, _FREE))
        )
        self.all_box = bool(np.all(self.kind == _BOX))
        self.width = np.where(self.kind == _BOX, high - low, 1.0)
        # finite stand-ins for infinite bounds (unused where the kind ignores them)
        self.lo0 = np.where(lo_f, low, 0.0)
        self.hi0 = np.where(hi_f, high, 0.0)

    def to_z(self, mu: np.ndarray) -> np.ndarray:
        """z [D] of a mean mu [D] (mu on a finite bound is nudged 1e-9 inside)."""
        k = self.kind
        tiny = 1e-9
        u = np.clip((mu - self.lo0) / self.width, tiny, 1 - tiny)
        z_box = np.log(u) - np.log1p(-u)
        dl = np.maximum(mu - self.lo0, tiny)
        z_low = np.where(dl > 30, dl, np.log(np.expm1(np.minimum(dl, 30))))
        du = np.maximum(self.hi0 - mu, tiny)
        z_up = np.where(du > 30, du, np.log(np.expm1(np.minimum(du, 30))))
        return np.select([k == _BOX, k == _LOWER, k == _UPPER], [z_box, z_low, z_up], mu)

    def from_z(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mu [D], d mu / d z [D]) at z [D]."""
        s = special.expit(z)
        if self.all_box:  # the common case (e.g. Bezier parameters): no branching
            return self.lo0 + self.width * s, self.width * s * (1 - s)
        k = self.kind
        sp = np.logaddexp(0.0, z)  # softplus
        mu = np.where(k == _BOX, self.lo0 + self.width * s,
                      np.where(k == _LOWER, self.lo0 + sp,
                               np.where(k == _UPPER, self.hi0 - sp, z)))
        dmu = np.where(k == _BOX, self.width * s * (1 - s),
                       np.where(k == _LOWER, s, np.where(k == _UPPER, -s, 1.0)))
        return mu, dmu
