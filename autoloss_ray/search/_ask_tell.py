"""The ask/tell bookkeeping PPO2 and random search share: validation, the pending step's
samples, the history and the state dict (format ``autoloss-ray/ppo-state``, version 1).

A step is ``ask() -> thetas [M, D]`` (the same array until it is told), then
``tell(thetas [M, D], rewards [M])``. Pure numpy.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from autoloss_ray.search.truncnorm import as_box

__all__ = ["AskTell", "check_samples_per_step", "STATE_FORMAT", "STATE_VERSION"]

STATE_FORMAT = "autoloss-ray/ppo-state"
STATE_VERSION = 1


def check_samples_per_step(samples_per_step: Any) -> int:
    """M as an int >= 2 (PPO needs an advantage to follow), or a ValueError."""
    if (
        isinstance(samples_per_step, bool)
        or not isinstance(samples_per_step, (int, np.integer))
        or samples_per_step < 2
    ):
        raise ValueError(f"samples_per_step (M) must be an int >= 2; got {samples_per_step!r}")
    return int(samples_per_step)


class AskTell:
    """Shared ask/tell bookkeeping: validation, pending samples, history, state."""

    _kind_name = "base"

    def _init_common(self, low: Any, high: Any, samples_per_step: int, seed: Any) -> None:
        self.low, self.high = as_box(low, high)
        self.samples_per_step = check_samples_per_step(samples_per_step)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self._pending: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.low.size)

    def _check_mu0(self, mu0: Any) -> np.ndarray:
        mu0 = np.atleast_1d(np.asarray(mu0, dtype=np.float64)).copy()
        if mu0.shape != self.low.shape:
            raise ValueError(f"mu0 must have shape ({self.dim},); got shape {mu0.shape}")
        if not np.all(np.isfinite(mu0)):
            raise ValueError(f"mu0 must be finite; got {mu0.tolist()}")
        out = np.flatnonzero((mu0 < self.low) | (mu0 > self.high))
        if out.size:
            d = int(out[0])
            raise ValueError(
                f"mu0 lies outside the box: mu0[{d}]={mu0[d]} is not in "
                f"[{self.low[d]}, {self.high[d]}]"
            )
        return mu0

    def _check_tell(self, thetas: Any, rewards: Any) -> tuple[np.ndarray, np.ndarray]:
        if self._pending is None:
            raise ValueError(
                f"tell() without a pending ask(): step {self.step} has not been asked for its "
                "samples yet; call ask(), evaluate its thetas, then tell() their rewards"
            )
        x = np.asarray(thetas, dtype=np.float64)
        r = np.asarray(rewards, dtype=np.float64)
        m, d = self.samples_per_step, self.dim
        if x.shape != (m, d):
            raise ValueError(f"thetas must have shape (M, D) = ({m}, {d}); got {x.shape}")
        if r.shape != (m,):
            raise ValueError(
                f"rewards must be a sequence of M={m} numbers (one per theta); got shape "
                f"{r.shape}"
            )
        if not np.all(np.isfinite(r)):
            bad = np.flatnonzero(~np.isfinite(r)).tolist()
            raise ValueError(
                f"rewards must be finite; got NaN/inf at samples {bad} (map failed trials to "
                "a failure reward before telling)"
            )
        if not np.all(np.isfinite(x)) or np.any(x < self.low) or np.any(x > self.high):
            raise ValueError("every theta must be finite and lie inside the box [low, high]")
        return x, r

    def ask(self) -> np.ndarray:
        """The current step's samples -> array [M, D] (the same array until ``tell``)."""
        if self._pending is None:
            self._pending = self._draw()
        return self._pending.copy()

    # subclasses implement _draw, tell, state_dict and load_state_dict
    def _draw(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _common_state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "kind": self._kind_name,
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "samples_per_step": self.samples_per_step,
            "seed": self.seed,
            "step": self.step,
            "rng": copy.deepcopy(self._rng.bit_generator.state),
            "pending": None if self._pending is None else self._pending.tolist(),
            "history": copy.deepcopy(self.history),
        }

    def _load_common(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not an {STATE_FORMAT} state dict: {type(state).__name__}")
        if state.get("kind") != self._kind_name:
            raise ValueError(
                f"state dict is for {state.get('kind')!r}, cannot load into {self._kind_name!r}"
            )
        low, high = as_box(state["low"], state["high"])
        if low.shape != self.low.shape:
            raise ValueError(
                f"state dict has D={low.size} but this optimizer has D={self.dim}"
            )
        self.low, self.high = low, high
        self.samples_per_step = int(state["samples_per_step"])
        self.seed = state["seed"]
        self.step = int(state["step"])
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = copy.deepcopy(state["rng"])
        self._pending = None if state["pending"] is None else np.asarray(state["pending"])
        self.history = copy.deepcopy(state["history"])
