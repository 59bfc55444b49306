"""The step protocol of the step searchers (PPO2, random search, TPE/CMA-ES), without Ray.

A search is ``steps`` (T) steps of ``samples_per_step`` (M) samples. :class:`StepProtocol`
keeps the current step: the optimizer is asked for the step's M thetas when the step starts,
each sample is handed out once (``hand_out``), every ending of a sample is told back
(``tell``), and once all M are in, the optimizer is told the step's rewards and one **step
record** is written (see :data:`RECORD_KEYS`; it becomes a row of the store's policy table
through ``step_callback``). The Ray Tune adapters in ``searchers`` only translate: trial ids to
``(step, sample)``, Tune results to values and fail reasons, save/restore.

Failures: a sample told with a reason (:data:`FAIL_REASONS`) or a NaN/inf value is failed; the
optimizer gets ``failure_reward`` for it (in the metric's units; ``None`` = the worst valid
value seen so far in the search for the mode, the step's own values included, or 0.0 before
any). Rewards are the values in ``max`` mode and their negatives in ``min`` mode.

Stopped samples (multi-fidelity: a scheduler such as ASHA stopped the trial at a rung, its
value is that rung's reward, on another scale than a finished trial's): the optimizer is told
them *below every survivor* of their step (:func:`stopped_below`, in
:mod:`autoloss_ray.search.multifidelity`; survivors: neither stopped nor failed), in the order
of their rung values; optimizers that say ``ranks_stopped`` (PPO2) also get the mask and learn
from the step by rank. The record's ``mean_reward`` is the survivors' mean.

Replay (:meth:`StepProtocol.replay`, run by :mod:`autoloss_ray.search.replay`): a fresh
protocol fast-forwards through recorded results (the store's rows), re-drawing every step with
the same seed and checking each recorded config against its draw, so a killed search resumes
exactly.

Shapes: thetas [M, D] (D = the space's dimension), per-sample arrays [M].
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import numpy as np

from autoloss_ray.search._ask_tell import check_samples_per_step
from autoloss_ray.search.multifidelity import stopped_below
from autoloss_ray.search.replay import replay_results

__all__ = ["StepProtocol", "stopped_below", "STEP_KEY", "SAMPLE_KEY", "FAIL_REASONS", "RECORD_KEYS",
           "UNASSIGNED", "IN_FLIGHT", "TOLD"]

logger = logging.getLogger(__name__)

# config keys every handed-out sample carries
STEP_KEY = "search_step"
SAMPLE_KEY = "search_sample"

# the state of a sample of the current step
UNASSIGNED, IN_FLIGHT, TOLD = 0, 1, 2

# why a sample failed (None in ``fail_reasons`` when it did not)
FAIL_REASONS = ("error", "no result", "metric missing", "not finite")

# what a step record holds (lists have one entry per sample; ``mu``/``sigma``/``mu_next`` are
# what the optimizer reports; clip_fraction/approx_kl are PPO2's update diagnostics, None for
# optimizers without them)
RECORD_KEYS = (
    "step", "searcher", "metric", "mode", "mu", "mu_next", "sigma", "thetas", "configs",
    "rewards", "values", "failed", "fail_reasons", "stopped_early", "trial_ids",
    "mean_reward", "best_mu", "best_reward", "names", "clip_fraction", "approx_kl",
)

# the protocol's part of a searcher's saved state: state key -> attribute
_STATE_ATTRS = {
    "step": "step", "finished": "finished", "thetas": "thetas", "values": "values",
    "failed": "failed", "status": "status", "trial_ids": "trial_ids", "records": "records",
    "worst_value": "worst_value", "points": "points", "reasons": "reasons", "early": "early",
    "evaluated": "evaluated",
}


class StepProtocol:
    """Steps of M samples over an ask/tell optimizer (see the module docstring).

    Args (keyword-only):
        steps: T >= 1. samples_per_step: M >= 2.
        failure_reward: the value of a failed sample (None: the worst valid value seen).
        step_callback: ``callable(record)`` after each step (a deep copy of the record);
            an exception in it is logged, never raised.
        name: the searcher's name (the records' ``searcher``, log messages).

    Set before the first step: ``space`` (``to_config(theta [D]) -> dict``,
    ``from_config(config) -> theta [D]``, ``names``), ``optimizer`` (``ask() -> [M, D]``,
    ``tell(thetas, rewards)``, ``history[-1]``, ``best``, ``best_reward``), ``mode``
    ("min"/"max") and ``metric``; optionally ``points`` (thetas forced into step 0).
    """

    def __init__(
        self,
        *,
        steps: int,
        samples_per_step: int,
        failure_reward: float | None = None,
        step_callback: Callable[[dict], Any] | None = None,
        name: str = "StepProtocol",
    ) -> None:
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps (T) must be an int >= 1; got {steps!r}")
        check_samples_per_step(samples_per_step)
        if failure_reward is not None and not math.isfinite(float(failure_reward)):
            raise ValueError(
                f"failure_reward must be a finite number or None; got {failure_reward!r}"
            )
        if step_callback is not None and not callable(step_callback):
            raise TypeError(f"step_callback must be callable; got {step_callback!r}")
        self.steps = int(steps)
        self.samples_per_step = int(samples_per_step)
        self.failure_reward = None if failure_reward is None else float(failure_reward)
        self.step_callback = step_callback
        self.name = name
        self.metric: str | None = None
        self.mode: str | None = None
        self.space: Any = None
        self.optimizer: Any = None
        self.points: list[np.ndarray] = []
        self._warned_min = False
        self.step = 0
        self.finished = False
        self.thetas: np.ndarray | None = None  # [M, D] of the current step
        self.records: list[dict[str, Any]] = []
        self.worst_value: float | None = None
        self.evaluated: list[dict[str, Any]] = []  # points evaluated outside the search
        # multi-fidelity (a scheduler stops trials at rungs): stopped samples are told below
        # every survivor of their step, and a ranking optimizer learns the step by rank. Off
        # by default: without such a scheduler Tune's "ended early" also flags ordinary ends
        # of function trainables, which must not change an update.
        self.rank_stopped = False
        self._clear_samples()

    def _clear_samples(self) -> None:
        m = self.samples_per_step
        self.values = np.full(m, np.nan)  # metric values (told ones)
        self.failed = np.zeros(m, dtype=bool)
        self.status = np.zeros(m, dtype=np.int8)
        self.trial_ids: list[str | None] = [None] * m
        self.reasons: list[str | None] = [None] * m
        self.early = np.zeros(m, dtype=bool)

    @property
    def fresh(self) -> bool:
        """No step has started yet."""
        return self.step == 0 and self.thetas is None and not self.records

    # ------------------------------------------------------------------ handing out
    def _warn_min_mode_failure_reward(self) -> None:
        if self.mode == "min" and self.failure_reward == 0.0 and not self._warned_min:
            self._warned_min = True
            logger.warning(
                "%s: failure_reward=0.0 is a metric value; with mode='min' failed trials "
                "would look good. Pass failure_reward=None (worst seen) or a large value.",
                self.name,
            )

    def start_step(self) -> None:
        """Ask the optimizer for the step's M thetas (step 0: ``points`` first)."""
        self._warn_min_mode_failure_reward()
        thetas = np.asarray(self.optimizer.ask(), dtype=np.float64)
        if self.step == 0:
            for i, p in enumerate(self.points):
                thetas[i] = p
        self.thetas = thetas
        self.values = np.full(self.samples_per_step, np.nan)
        self.failed = np.zeros(self.samples_per_step, dtype=bool)
        self.status = np.zeros(self.samples_per_step, dtype=np.int8)
        self.trial_ids = [None] * self.samples_per_step
        self.reasons = [None] * self.samples_per_step
        self.early = np.zeros(self.samples_per_step, dtype=bool)

    @property
    def in_flight(self) -> int:
        """Samples of the current step handed out and not told yet."""
        return int((self.status == IN_FLIGHT).sum())

    def hand_out(self, trial_id: str | None, *, max_in_flight: int = 0) -> int | None:
        """The next sample index of the current step (starting it if needed), now in flight
        under ``trial_id``; None while the step waits for its results or ``max_in_flight``
        (> 0) samples are out."""
        if self.thetas is None:
            self.start_step()
        if max_in_flight and self.in_flight >= max_in_flight:
            return None
        free = np.flatnonzero(self.status == UNASSIGNED)
        if free.size == 0:
            return None
        i = int(free[0])
        self.status[i] = IN_FLIGHT
        self.trial_ids[i] = trial_id
        return i

    def config(self, step: int, i: int) -> dict:
        """The config of sample ``i`` of the current step (its theta, step and sample keys)."""
        assert self.space is not None and self.thetas is not None
        config = self.space.to_config(self.thetas[i])
        config[STEP_KEY] = int(step)
        config[SAMPLE_KEY] = int(i)
        return config

    def open_sample(self, step: int, i: int) -> int | None:
        """``i`` if (step, i) is a sample of the current step still waiting for its result."""
        if self.thetas is None or step != self.step:
            return None
        if not (0 <= i < self.samples_per_step) or self.status[i] == TOLD:
            return None
        return i

    def requeue(self) -> list[int]:
        """Make the in-flight samples of the current step unassigned again; their indices."""
        idx = np.flatnonzero(self.status == IN_FLIGHT)
        for i in idx:
            self.status[i] = UNASSIGNED
            self.trial_ids[i] = None
        return [int(i) for i in idx]

    # ------------------------------------------------------------------ telling
    def tell(
        self,
        i: int,
        trial_id: str | None,
        value: float,
        *,
        reason: str | None = None,
        early: bool = False,
    ) -> dict | None:
        """Sample ``i`` of the current step ended with ``value`` (failed when ``reason`` is
        given or the value is not finite; ``early``: a scheduler stopped it). Returns the
        step record when this completed the step, else None."""
        ok = math.isfinite(value) and reason is None
        self.values[i] = value if ok else math.nan
        self.failed[i] = not ok
        self.reasons[i] = None if ok else (reason or "not finite")
        self.early[i] = bool(early)
        self.status[i] = TOLD
        self.trial_ids[i] = trial_id
        # the failure rule's worst value: a rung's value is on another scale (multi-fidelity);
        # without it every valid value counts (Tune's "ended early" is not reliable enough)
        if ok and not (early and self.rank_stopped):
            worse = (lambda a, b: a < b) if self.mode == "max" else (lambda a, b: a > b)
            if self.worst_value is None or worse(value, self.worst_value):
                self.worst_value = value
        if np.all(self.status == TOLD):
            return self._finish_step()
        return None

    def failure_value(self) -> float:
        """The value a failed sample counts with now."""
        if self.failure_reward is not None:
            return self.failure_reward
        return 0.0 if self.worst_value is None else float(self.worst_value)

    def _finish_step(self) -> dict:
        assert self.thetas is not None
        values = np.where(self.failed, self.failure_value(), self.values)
        rewards = values if self.mode == "max" else -values
        stopped = (self.early & ~self.failed) if self.rank_stopped else np.zeros_like(
            self.failed)
        if stopped.any():
            worst = self.worst_value
            floor = None if worst is None else (worst if self.mode == "max" else -worst)
            rewards = stopped_below(rewards, stopped, self.failed, floor=floor)
        if stopped.any() and getattr(self.optimizer, "ranks_stopped", False):
            self.optimizer.tell(self.thetas, rewards, stopped=stopped)
        else:
            self.optimizer.tell(self.thetas, rewards)
        record = self._record(values, rewards)
        if stopped.any() and not stopped.all():
            record["mean_reward"] = float(np.mean(rewards[~stopped]))
        self.records.append(record)
        self.step += 1
        self.thetas = None
        self.status = np.zeros(self.samples_per_step, dtype=np.int8)
        if self.step >= self.steps:
            self.finished = True
        if self.step_callback is not None:
            try:
                self.step_callback(copy.deepcopy(record))
            except Exception:  # a failing callback (e.g. a store write) must not end the search
                logger.exception("step_callback failed for step %d", record["step"])
        return record

    def _record(self, values: np.ndarray, rewards: np.ndarray) -> dict[str, Any]:
        """The step record (:data:`RECORD_KEYS`) of the step just told."""
        assert self.thetas is not None
        hist = self.optimizer.history[-1]
        return {
            "step": self.step,
            "searcher": self.name,
            "metric": self.metric,
            "mode": self.mode,
            "mu": list(hist["mu"]),
            "mu_next": list(hist["mu_next"]),
            "sigma": hist["sigma"],
            "thetas": [list(map(float, t)) for t in self.thetas],
            "configs": [self.config(self.step, i) for i in range(self.samples_per_step)],
            "rewards": [float(r) for r in rewards],
            "values": [float(v) for v in values],
            "failed": [bool(f) for f in self.failed],
            "fail_reasons": list(self.reasons),
            "stopped_early": [bool(e) for e in self.early],
            "trial_ids": list(self.trial_ids),
            "mean_reward": float(np.mean(rewards)),
            "best_mu": [float(v) for v in self.optimizer.best],
            "best_reward": float(self.optimizer.best_reward),
            "names": list(self.space.names) if self.space is not None else None,
            "clip_fraction": hist.get("clip_fraction"),
            "approx_kl": hist.get("approx_kl"),
        }

    # ------------------------------------------------------------------ evaluated points
    def add_evaluated(
        self, theta: np.ndarray, value: float, *, error: bool = False, pruned: bool = False
    ) -> np.ndarray | None:
        """Record a point [D] evaluated outside the search (``evaluated``).

        Returns the new initial mean [D] while the search is fresh (a warm start: the best
        valid point added so far, by ``mode``), else None: a started step learns only from
        the samples it drew itself.
        """
        valid = not error and math.isfinite(value)
        warm = self.fresh
        self.evaluated.append(
            {
                "theta": [float(t) for t in theta],
                "value": value,
                "error": bool(error),
                "pruned": bool(pruned),
                "warm_start": warm,
            }
        )
        if not warm:
            logger.info(
                "%s: evaluated point recorded (step %d has started; it is not used by the "
                "update)", self.name, self.step,
            )
            return None
        pts = [e for e in self.evaluated if e["warm_start"] and not e["error"]
               and math.isfinite(e["value"])]
        if valid and pts:
            pick = max if self.mode == "max" else min
            best = pick(pts, key=lambda e: e["value"])
            return np.asarray(best["theta"])
        return None

    # ------------------------------------------------------------------ replay
    def replay(
        self, results: Iterable[Mapping[str, Any]], *, quiet_steps: Collection[int] = ()
    ) -> int:
        """Fast-forward this fresh protocol through results recorded by an earlier run of it;
        returns the number of results told (:func:`autoloss_ray.search.replay.replay_results`:
        what a result holds, ``quiet_steps``, the errors)."""
        return replay_results(self, results, quiet_steps=quiet_steps)

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """The protocol's part of a searcher's saved state (the optimizer not included)."""
        return {key: getattr(self, attr) for key, attr in _STATE_ATTRS.items()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Load :meth:`state` (keys added later default, so older states load)."""
        m = self.samples_per_step
        defaults = {"reasons": [None] * m, "early": np.zeros(m, dtype=bool), "evaluated": []}
        for key, attr in _STATE_ATTRS.items():
            setattr(self, attr, state[key] if key in state else defaults[key])
