"""Ray Tune ``Searcher`` adapters over :mod:`autoloss_ray.ppo` (PPO2 and random search).

Both searchers work step by step: a step's ``M`` configs are handed out by ``suggest`` (each
with ``"search_step"`` and ``"search_sample"`` keys), ``suggest`` returns ``None`` while the
step waits for its results, the optimizer is told once all ``M`` results are in, and
``Searcher.FINISHED`` is returned after ``steps`` steps. Use them with ``num_samples=-1`` (or
at least ``steps * samples_per_step``)::

    searcher = PPO2Searcher(search_space("miou"), metric="reward", mode="max",
                            steps=12, samples_per_step=32)
    tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1,
               max_concurrent_trials=32), param_space={...constants...}).fit()

Concurrency: ``set_max_concurrency`` returns True (as Ray's HEBO searcher does), so Tune's
``max_concurrent_trials``/``ConcurrencyLimiter`` (``batch=True`` or not) hand every call
through and the searcher itself never has more than that many trials in flight. ``batch``
changes nothing that is learned: the optimizer is told only when a whole step is in.

Every ending of a trial completes its sample, so a step cannot stall (see
``on_trial_complete``). Failures: a trial that errors, ends without the metric (a warning is
logged once), or reports a NaN/inf metric gets ``failure_reward`` (in the metric's units;
default ``None`` = the worst valid value seen so far in the search for the mode, i.e. the
lowest in max mode and the highest in min mode, the step's own values included) and is
recorded as failed, with the reason, in the step record (``failed``, ``fail_reasons``).

Early stopping (ASHA, HyperBand, stoppers): a trial a scheduler stops counts with the last
value it reported (what Ray's own searchers use), and ``stopped_early`` is recorded.

Restore (``Tuner.restore``): the whole state (optimizer, the step's samples, which sample each
trial id carries, which results were already told) is pickled at every experiment checkpoint.
Tune re-runs trials that were in flight at the checkpoint under their old trial ids, so their
results reach the right samples; samples that were handed out after the checkpoint are
handed out again with the same theta and sample index; a result that was already told is
never told twice (repeats are ignored). If Tune is told *not* to resume unfinished trials
(``resume_unfinished=False``), call :meth:`requeue_in_flight` on the searcher before ``fit``
so that those samples are handed out again.

Replay (what ``autoloss search --resume`` uses): :meth:`replay` fast-forwards a fresh
searcher through recorded results (the Parquet store's rows), re-drawing every step with the
same seed and checking each recorded config against its draw. It needs no Tune state at all,
so it is exact even when Tune's experiment checkpoint lags the store after a hard kill.
"""

from __future__ import annotations

import copy
import logging
import math
import pickle
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from autoloss_ray.ppo import PPO2, RandomSearch, check_samples_per_step
from searchers.space import BoxSpace, has_domains

__all__ = ["PPO2Searcher", "RandomSearcher"]

logger = logging.getLogger(__name__)

STEP_KEY = "search_step"
SAMPLE_KEY = "search_sample"

_UNASSIGNED, _IN_FLIGHT, _TOLD = 0, 1, 2
_STATE_VERSION = 1


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class _StepSearcher(Searcher):
    """Shared machinery: a step of M samples, handed out and collected, then told."""

    def __init__(
        self,
        space: Any = None,
        *,
        metric: str | None = None,
        mode: str | None = None,
        steps: int = 12,
        samples_per_step: int = 32,
        failure_reward: float | None = None,
        points_to_evaluate: Sequence[Any] | None = None,
        seed: Any = None,
        step_callback: Callable[[dict], Any] | None = None,
        key: str = "theta",
    ) -> None:
        if mode is not None and mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}")
        if metric is not None and not isinstance(metric, str):
            raise TypeError(f"metric must be a str (one metric); got {metric!r}")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps (T) must be an int >= 1; got {steps!r}")
        check_samples_per_step(samples_per_step)
        if failure_reward is not None and not math.isfinite(float(failure_reward)):
            raise ValueError(
                f"failure_reward must be a finite number or None; got {failure_reward!r}"
            )
        if step_callback is not None and not callable(step_callback):
            raise TypeError(f"step_callback must be callable; got {step_callback!r}")
        super().__init__(metric=metric, mode=mode)
        self.steps = int(steps)
        self.samples_per_step = int(samples_per_step)
        self.failure_reward = None if failure_reward is None else float(failure_reward)
        self.seed = seed
        self.step_callback = step_callback
        self._key = key
        self._raw_points = list(points_to_evaluate) if points_to_evaluate else []
        self._max_concurrent = 0  # 0 = no limit of our own
        self._warned_min = False
        self._warned: set[str] = set()
        self._space: BoxSpace | None = None
        self._opt: Any = None
        self._reset_search_state()
        if space is not None:
            self._set_space(BoxSpace(space, key=key))

    # ------------------------------------------------------------------ setup
    def _reset_search_state(self) -> None:
        self._step = 0
        self._finished = False
        self._thetas: np.ndarray | None = None  # [M, D] of the current step
        self._values = np.full(self.samples_per_step, np.nan)  # metric values (told ones)
        self._failed = np.zeros(self.samples_per_step, dtype=bool)
        self._status = np.zeros(self.samples_per_step, dtype=np.int8)
        self._trial_ids: list[str | None] = [None] * self.samples_per_step
        self._trial_sample: dict[str, tuple[int, int]] = {}  # in-flight trial id -> (step, i)
        self._told_trials: set[str] = set()
        self._records: list[dict[str, Any]] = []
        self._worst_value: float | None = None
        self._points: list[np.ndarray] = []
        self._last_value: dict[str, float] = {}  # trial id -> last reported metric value
        self._finished_trials: set[str] = set()  # trial ids whose done=True result we saw
        self._reasons: list[str | None] = [None] * self.samples_per_step
        self._early = np.zeros(self.samples_per_step, dtype=bool)
        self._evaluated: list[dict[str, Any]] = []

    def _set_space(self, space: BoxSpace) -> None:
        self._space = space
        self._points = [space.from_config(p) for p in self._raw_points]
        if len(self._points) > self.samples_per_step:
            raise ValueError(
                f"points_to_evaluate has {len(self._points)} points but a step has only "
                f"samples_per_step={self.samples_per_step} samples"
            )
        mu0 = self._points[0] if self._points else space.init
        self._opt = self._make_optimizer(space, mu0)

    def _make_optimizer(self, space: BoxSpace, mu0: np.ndarray) -> Any:  # pragma: no cover
        raise NotImplementedError

    @property
    def space(self) -> BoxSpace | None:
        return self._space

    @property
    def optimizer(self) -> Any:
        """The underlying ask/tell optimizer (PPO2 or RandomSearch)."""
        return self._opt

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        if self._space is not None and has_domains(config):
            return False  # Tune raises its "search space already set" error
        if self._space is None and has_domains(config):
            # Tune's param_space: tuples and lists are constants, as Ray passes them
            self._set_space(BoxSpace(config, key=self._key, param_space=True))
        if metric:
            self._metric = metric
        if mode:
            if mode not in ("min", "max"):
                raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}")
            self._mode = mode
        num_samples = spec.get("num_samples")
        total = self.steps * self.samples_per_step
        if isinstance(num_samples, int) and 0 < num_samples < total:
            logger.warning(
                "num_samples=%d is smaller than steps * samples_per_step = %d: Tune will stop "
                "the search early; use num_samples=-1",
                num_samples,
                total,
            )
        return True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self._max_concurrent = int(max_concurrent)
        return True

    # ------------------------------------------------------------------ suggest
    def _check_ready(self) -> None:
        if self._space is None:
            raise ValueError(
                f"{type(self).__name__} has no search space: pass `space` or give Tune a "
                "param_space with tune.uniform / tune.loguniform entries"
            )
        if not self._metric or not self._mode:
            raise ValueError(
                f"{type(self).__name__} needs metric and mode: pass them to the searcher, or "
                "to TuneConfig together with a non-empty param_space (Ray forwards them only "
                "then)"
            )

    def _warn_min_mode_failure_reward(self) -> None:
        if self._mode == "min" and self.failure_reward == 0.0 and not self._warned_min:
            self._warned_min = True
            logger.warning(
                "%s: failure_reward=0.0 is a metric value; with mode='min' failed trials "
                "would look good. Pass failure_reward=None (worst seen) or a large value.",
                type(self).__name__,
            )

    def _start_step(self) -> None:
        thetas = np.asarray(self._opt.ask(), dtype=np.float64)
        if self._step == 0:
            for i, p in enumerate(self._points):
                thetas[i] = p
        m = self.samples_per_step
        self._thetas = thetas
        self._values = np.full(m, np.nan)
        self._failed = np.zeros(m, dtype=bool)
        self._status = np.zeros(m, dtype=np.int8)
        self._trial_ids = [None] * m
        self._reasons = [None] * m
        self._early = np.zeros(m, dtype=bool)

    def suggest(self, trial_id: str) -> dict | str | None:
        if self._finished:
            return Searcher.FINISHED
        self._check_ready()
        if self._thetas is None:
            self._warn_min_mode_failure_reward()
            self._start_step()
        in_flight = int((self._status == _IN_FLIGHT).sum())
        if self._max_concurrent and in_flight >= self._max_concurrent:
            return None
        free = np.flatnonzero(self._status == _UNASSIGNED)
        if free.size == 0:
            return None  # the step waits for its in-flight trials
        i = int(free[0])
        self._status[i] = _IN_FLIGHT
        self._trial_ids[i] = trial_id
        self._trial_sample[trial_id] = (self._step, i)
        return self._config(self._step, i)

    def _config(self, step: int, i: int) -> dict:
        assert self._space is not None and self._thetas is not None
        config = self._space.to_config(self._thetas[i])
        config[STEP_KEY] = int(step)
        config[SAMPLE_KEY] = int(i)
        return config

    # ------------------------------------------------------------------ results
    def _locate(self, trial_id: str, result: Mapping | None) -> int | None:
        """Sample index of the current step this trial carries, or None to ignore it."""
        if trial_id in self._told_trials:
            return None
        key = self._trial_sample.get(trial_id)
        if key is None and result:
            # A trial Tune restarted under a new id (same config): map it through its config.
            step = result.get(f"config/{STEP_KEY}", (result.get("config") or {}).get(STEP_KEY))
            sample = result.get(
                f"config/{SAMPLE_KEY}", (result.get("config") or {}).get(SAMPLE_KEY)
            )
            if step is not None and sample is not None:
                key = (int(step), int(sample))
        if key is None or self._thetas is None or key[0] != self._step:
            return None
        i = key[1]
        if not (0 <= i < self.samples_per_step) or self._status[i] == _TOLD:
            return None
        return i

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Learn the sample of a restarted trial early, so that an error later maps too.
        if trial_id not in self._trial_sample:
            i = self._locate(trial_id, result)
            if i is not None:
                self._trial_sample[trial_id] = (self._step, i)
        # Remember the last reported value: a trial a scheduler stops while it is paused
        # completes without a result, and then this value is what the searcher is told.
        if trial_id in self._trial_sample and self._metric and result and (
            self._metric in result
        ):
            self._last_value[trial_id] = _as_float(result[self._metric])
        if trial_id in self._trial_sample and result and result.get("done"):
            # Tune hands a trial's natural final result (done=True) to on_trial_result, but
            # not the one on which a scheduler or stopper decides STOP
            self._finished_trials.add(trial_id)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Tell the step a trial's end. Every ending completes its sample:

        * ``error=True``: failed (reason ``"error"``);
        * a result with the metric: that value (NaN/inf: failed, reason ``"not finite"``);
          if a scheduler (ASHA, HyperBand) or a stopper ended the trial (Tune then never
          shows its final result to ``on_trial_result``), the value counts and
          ``stopped_early`` is recorded;
        * a result without the metric: failed (reason ``"metric missing"``);
        * no result (stopped while pending/paused): the last value the trial reported
          (``stopped_early``), or failed (reason ``"no result"``) if it reported none.
        """
        i = self._locate(trial_id, result)
        self._trial_sample.pop(trial_id, None)
        last = self._last_value.pop(trial_id, None)
        ended_itself = trial_id in self._finished_trials
        self._finished_trials.discard(trial_id)
        if i is None:
            return
        value, reason, early = math.nan, None, False
        if error:
            reason = "error"
        elif result is None:
            if last is None:
                reason = "no result"
            else:
                value, early = last, True
        elif self._metric not in result:
            reason = "metric missing"
            self._warn_once(
                reason,
                f"trial {trial_id} ended without the metric {self._metric!r} in its result "
                f"(keys: {sorted(k for k in result if not k.startswith('config/'))}); it "
                "counts as a failed sample (failure_reward); further such trials are not "
                "logged",
            )
        else:
            value = _as_float(result[self._metric])
            # Tune puts done=False in every intermediate result; a result without the key
            # (e.g. Repeater's averaged one) is a finished trial
            # stopped early: Tune showed us earlier results of this trial but not its natural
            # final one (a STOP decision sets done=True without telling on_trial_result), or
            # the result says done=False. A trial stopped on its very first result cannot be
            # told from one that finished (Tune passes nothing else).
            early = ("done" in result and not bool(result["done"])) or (
                last is not None and not ended_itself
            )
        if reason is None and not math.isfinite(value):
            reason = "not finite"
        self._record(i, trial_id, value, reason=reason, early=early)

    def on_pause(self, trial_id: str) -> None:
        """A paused trial (HyperBand, PBT, HyperBandForBOHB) keeps its sample in flight; its
        last reported value is kept for the case a scheduler then stops it while paused."""

    def on_unpause(self, trial_id: str) -> None:
        """Resuming changes nothing: the sample completes when the trial ends."""

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning("%s: %s", type(self).__name__, message)

    def _record(
        self,
        i: int,
        trial_id: str | None,
        value: float,
        *,
        reason: str | None = None,
        early: bool = False,
    ) -> None:
        ok = math.isfinite(value) and reason is None
        self._values[i] = value if ok else math.nan
        self._failed[i] = not ok
        self._reasons[i] = None if ok else (reason or "not finite")
        self._early[i] = bool(early)
        self._status[i] = _TOLD
        self._trial_ids[i] = trial_id
        if trial_id is not None:
            self._told_trials.add(trial_id)
        if ok:
            worse = (lambda a, b: a < b) if self._mode == "max" else (lambda a, b: a > b)
            if self._worst_value is None or worse(value, self._worst_value):
                self._worst_value = value
        if np.all(self._status == _TOLD):
            self._finish_step()

    def _failure_value(self) -> float:
        if self.failure_reward is not None:
            return self.failure_reward
        return 0.0 if self._worst_value is None else float(self._worst_value)

    def _finish_step(self) -> None:
        assert self._thetas is not None
        values = np.where(self._failed, self._failure_value(), self._values)
        rewards = values if self._mode == "max" else -values
        self._opt.tell(self._thetas, rewards)
        hist = self._opt.history[-1]
        record = {
            "step": self._step,
            "searcher": type(self).__name__,
            "metric": self._metric,
            "mode": self._mode,
            "mu": list(hist["mu"]),
            "mu_next": list(hist["mu_next"]),
            "sigma": hist["sigma"],
            "thetas": [list(map(float, t)) for t in self._thetas],
            "configs": [self._config(self._step, i) for i in range(self.samples_per_step)],
            "rewards": [float(r) for r in rewards],
            "values": [float(v) for v in values],
            "failed": [bool(f) for f in self._failed],
            "fail_reasons": list(self._reasons),
            "stopped_early": [bool(e) for e in self._early],
            "trial_ids": list(self._trial_ids),
            "mean_reward": float(np.mean(rewards)),
            "best_mu": [float(v) for v in self._opt.best],
            "best_reward": float(self._opt.best_reward),
            "names": list(self._space.names) if self._space is not None else None,
        }
        self._records.append(record)
        self._step += 1
        self._thetas = None
        self._status = np.zeros(self.samples_per_step, dtype=np.int8)
        self._trial_sample = {}
        if self._step >= self.steps:
            self._finished = True
        if self.step_callback is not None:
            try:
                self.step_callback(copy.deepcopy(record))
            except Exception:  # a failing callback (e.g. a store write) must not end the search
                logger.exception("step_callback failed for step %d", record["step"])

    # ------------------------------------------------------------------ results view
    @property
    def step(self) -> int:
        """Number of completed steps."""
        return self._step

    @property
    def is_finished(self) -> bool:
        return self._finished

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per completed step (what ``step_callback`` receives)."""
        return copy.deepcopy(self._records)

    @property
    def best_theta(self) -> np.ndarray:
        """The optimizer's best point, in search coordinates."""
        return np.asarray(self._opt.best, dtype=np.float64)

    @property
    def best_config(self) -> dict:
        """The best point as a Tune config (without the step/sample keys)."""
        assert self._space is not None
        return self._space.to_config(self.best_theta)

    def requeue_in_flight(self) -> list[int]:
        """Hand out the current step's in-flight samples again (after a restore in which Tune
        does not re-run unfinished trials). Returns the re-queued sample indices."""
        idx = np.flatnonzero(self._status == _IN_FLIGHT)
        for i in idx:
            self._status[i] = _UNASSIGNED
            self._trial_ids[i] = None
        self._trial_sample = {}
        return [int(i) for i in idx]

    # ------------------------------------------------------------------ evaluated points
    def add_evaluated_point(
        self,
        parameters: Mapping[str, Any],
        value: float,
        error: bool = False,
        pruned: bool = False,
        intermediate_values: Sequence[float] | None = None,
    ) -> None:
        """Record a point evaluated outside this search (Ray's ``Searcher`` API).

        Before the first step has started (no ``suggest`` yet) it is a **warm start**: the
        best valid point added so far (by ``mode``) becomes the policy's initial mean
        ``mu0`` (PPO2; RandomSearcher: the centre of its unbounded dimensions), replacing
        the space's default or the first of ``points_to_evaluate``. Afterwards points are
        only recorded (``evaluated_points``), never mixed into a step's update: a PPO step
        learns from the samples it drew itself. ``add_evaluated_trials`` (Ray's default,
        over ``add_evaluated_point``) takes trials or an ``ExperimentAnalysis``.

        Raises:
            ValueError: no search space or mode yet, or ``parameters`` are not a point of
                this space.
        """
        if self._space is None or not self._mode:
            raise ValueError(
                f"{type(self).__name__}.add_evaluated_point needs the search space and mode "
                "first: pass space= and mode= to the searcher (a param_space reaches it only "
                "when Tune starts)"
            )
        theta = self._space.from_config(parameters)
        v = _as_float(value)
        valid = not error and math.isfinite(v)
        warm = self._step == 0 and self._thetas is None and not self._records
        self._evaluated.append(
            {
                "theta": [float(t) for t in theta],
                "value": v,
                "error": bool(error),
                "pruned": bool(pruned),
                "warm_start": warm,
            }
        )
        if not warm:
            logger.info(
                "%s: evaluated point recorded (step %d has started; it is not used by the "
                "update)", type(self).__name__, self._step,
            )
            return
        pts = [e for e in self._evaluated if e["warm_start"] and not e["error"]
               and math.isfinite(e["value"])]
        if valid and pts:
            pick = max if self._mode == "max" else min
            best = pick(pts, key=lambda e: e["value"])
            self._opt = self._make_optimizer(self._space, np.asarray(best["theta"]))

    @property
    def evaluated_points(self) -> list[dict[str, Any]]:
        """Points given through ``add_evaluated_point`` (theta, value, error, pruned,
        warm_start: whether it could still set mu0)."""
        return copy.deepcopy(self._evaluated)

    # ------------------------------------------------------------------ replay
    def replay(
        self,
        results: Iterable[Mapping[str, Any]],
        *,
        quiet_steps: Collection[int] = (),
    ) -> int:
        """Fast-forward a fresh searcher through results recorded by an earlier run of it.

        This is how a killed search resumes from its Parquet store (the store is the source
        of truth; Tune's own experiment checkpoint is synced in the background and can lag
        or mix two saves after a hard kill). The searcher draws each step exactly as the
        original run did (same seed, same tells), checks that every recorded config is the
        one it draws, and tells the recorded value. Samples without a result stay to be
        handed out by ``suggest``.

        Args:
            results: one mapping per finished trial with ``step``, ``sample`` (ints),
                ``config`` (the trial's config, or at least its searched keys), ``value``
                (the metric; NaN or None for a failed trial) and optionally ``trial_id``.
                Each ``(step, sample)`` at most once.
            quiet_steps: steps whose ``step_callback`` already ran (e.g. policy rows already
                in the store); the callback is not called again for them.

        Returns:
            The number of results told.

        Raises:
            ValueError: the searcher is not fresh, a result is out of range or repeated, a
                step is missing results before a later step has some, or a recorded config
                is not what this searcher draws (the options differ from the original run).
        """
        if self._step != 0 or self._thetas is not None or self._records:
            raise ValueError("replay needs a fresh searcher (no step started yet)")
        self._check_ready()
        by_step: dict[int, dict[int, Mapping[str, Any]]] = {}
        for r in results:
            try:
                step, sample = int(r["step"]), int(r["sample"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(
                    f"each replayed result needs integer 'step' and 'sample'; got {dict(r)!r}"
                ) from None
            if not (0 <= step < self.steps and 0 <= sample < self.samples_per_step):
                raise ValueError(
                    f"recorded trial (step {step}, sample {sample}) is outside this search "
                    f"of {self.steps} steps x {self.samples_per_step} samples (fewer steps "
                    "than were already run, or other samples per step?)"
                )
            if sample in by_step.setdefault(step, {}):
                raise ValueError(f"trial (step {step}, sample {sample}) is recorded twice")
            by_step[step][sample] = r
        if not by_step:
            return 0
        last = max(by_step)
        for step in range(last):
            have = len(by_step.get(step, {}))
            if have != self.samples_per_step:
                raise ValueError(
                    f"step {step} has {have} of {self.samples_per_step} results recorded but "
                    f"step {last} has some: the record is not from one run of this search"
                )
        quiet = {int(s) for s in quiet_steps}
        callback, told = self.step_callback, 0
        try:
            for step in range(last + 1):
                self.step_callback = None if step in quiet else callback
                self._warn_min_mode_failure_reward()
                self._start_step()
                assert self._space is not None and self._thetas is not None
                for i, r in sorted(by_step[step].items()):
                    try:
                        recorded = self._space.from_config(r["config"])
                    except (KeyError, TypeError, ValueError) as e:
                        raise ValueError(
                            f"the recorded trial (step {step}, sample {i}) has no valid "
                            f"config for this search space ({e}): resume with the options "
                            "of the original search"
                        ) from None
                    drawn = self._thetas[i]
                    if not np.allclose(recorded, drawn, rtol=1e-9, atol=1e-12):
                        raise ValueError(
                            f"the recorded trial (step {step}, sample {i}) has "
                            f"{np.round(recorded, 6).tolist()} but this searcher draws "
                            f"{np.round(drawn, 6).tolist()} there: resume with the options "
                            "(seed, sigma, samples, parameterization, ...) of the original "
                            "search"
                        )
                    value = r.get("value")
                    value = math.nan if value is None else float(value)
                    self._record(i, r.get("trial_id"), value)
                    told += 1
        finally:
            self.step_callback = callback
        return told

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict:
        return {
            "version": _STATE_VERSION,
            "class": type(self).__name__,
            "metric": self._metric,
            "mode": self._mode,
            "steps": self.steps,
            "samples_per_step": self.samples_per_step,
            "failure_reward": self.failure_reward,
            "seed": self.seed,
            "key": self._key,
            "raw_points": self._raw_points,
            "max_concurrent": self._max_concurrent,
            "space": self._space,
            "opt": None if self._opt is None else self._opt.state_dict(),
            "step": self._step,
            "finished": self._finished,
            "thetas": self._thetas,
            "values": self._values,
            "failed": self._failed,
            "status": self._status,
            "trial_ids": self._trial_ids,
            "trial_sample": self._trial_sample,
            "told_trials": self._told_trials,
            "records": self._records,
            "worst_value": self._worst_value,
            "points": self._points,
            "last_value": self._last_value,
            "finished_trials": self._finished_trials,
            "reasons": self._reasons,
            "early": self._early,
            "evaluated": self._evaluated,
        }

    def set_state(self, state: dict) -> None:
        if state.get("class") != type(self).__name__:
            raise ValueError(
                f"searcher state is for {state.get('class')!r}, not {type(self).__name__!r}"
            )
        state = copy.deepcopy(state)
        self._metric, self._mode = state["metric"], state["mode"]
        self.steps = state["steps"]
        self.samples_per_step = state["samples_per_step"]
        self.failure_reward = state["failure_reward"]
        self.seed = state["seed"]
        self._key = state["key"]
        self._raw_points = state["raw_points"]
        self._max_concurrent = state["max_concurrent"]
        self._space = state["space"]
        self._opt = None
        if state["opt"] is not None:
            self._opt = self._optimizer_from_state(state["opt"])
        self._step = state["step"]
        self._finished = state["finished"]
        self._thetas = state["thetas"]
        self._values = state["values"]
        self._failed = state["failed"]
        self._status = state["status"]
        self._trial_ids = state["trial_ids"]
        self._trial_sample = state["trial_sample"]
        self._told_trials = state["told_trials"]
        self._records = state["records"]
        self._worst_value = state["worst_value"]
        self._points = state["points"]
        # keys added later: states saved before them load with the defaults
        m = self.samples_per_step
        self._last_value = state.get("last_value", {})
        self._finished_trials = state.get("finished_trials", set())
        self._reasons = state.get("reasons", [None] * m)
        self._early = state.get("early", np.zeros(m, dtype=bool))
        self._evaluated = state.get("evaluated", [])

    def _optimizer_from_state(self, state: dict) -> Any:  # pragma: no cover
        raise NotImplementedError

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    def __repr__(self) -> str:
        dim = None if self._space is None else self._space.dim
        return (
            f"{type(self).__name__}(D={dim}, steps={self.steps}, "
            f"samples_per_step={self.samples_per_step}, step={self._step}, "
            f"metric={self._metric!r}, mode={self._mode!r})"
        )


class PPO2Searcher(_StepSearcher):
    """Ray Tune searcher running PPO2 over truncated normals (Auto Seg-Loss, DESIGN 4).

    Args:
        space: a SearchSpace-like object (config key "theta": list of floats), or a dict of
            name -> Box(low, high) / tune.uniform / tune.loguniform (tuples are constants),
            or None to take the box-shaped entries of Tune's param_space.
        metric, mode: the result key to optimise and "max"/"min".
        steps: T, PPO steps (12). samples_per_step: M, trials per step (32).
        sigma, clip_eps, lr, update_steps, baseline, include_mean: see ``autoloss_ray.ppo.PPO2``.
        failure_reward: metric value given to failed / NaN trials (None, the default: the
            worst valid value seen so far for the mode).
        sigma_decay, sigma_min: optional sigma schedule ``max(sigma * sigma_decay**t,
            sigma_min)`` for step t (default 1.0: fixed sigma, the paper's).
        points_to_evaluate: configs (or vectors) evaluated first, in step 0; the first one is
            the initial mu (e.g. a paper preset).
        seed: sampling seed. step_callback: picklable callable(record) after each update.
    """

    def __init__(
        self,
        space: Any = None,
        *,
        metric: str | None = None,
        mode: str | None = None,
        steps: int = 12,
        samples_per_step: int = 32,
        sigma: float = 0.2,
        clip_eps: float = 0.2,
        lr: float = 0.2,
        update_steps: int = 60,
        baseline: str = "mean",
        include_mean: bool = False,
        sigma_decay: float = 1.0,
        sigma_min: float = 0.0,
        failure_reward: float | None = None,
        points_to_evaluate: Sequence[Any] | None = None,
        seed: Any = None,
        step_callback: Callable[[dict], Any] | None = None,
        key: str = "theta",
    ) -> None:
        self._ppo_kwargs = dict(
            sigma=sigma,
            clip_eps=clip_eps,
            lr=lr,
            update_steps=update_steps,
            baseline=baseline,
            include_mean=include_mean,
            sigma_decay=sigma_decay,
            sigma_min=sigma_min,
        )
        # validate the optimizer arguments now, even when the space comes later
        PPO2(low=[0.0], high=[1.0], mu0=[0.5], samples_per_step=2, **self._ppo_kwargs)
        super().__init__(
            space,
            metric=metric,
            mode=mode,
            steps=steps,
            samples_per_step=samples_per_step,
            failure_reward=failure_reward,
            points_to_evaluate=points_to_evaluate,
            seed=seed,
            step_callback=step_callback,
            key=key,
        )

    def _make_optimizer(self, space: BoxSpace, mu0: np.ndarray) -> PPO2:
        return PPO2(
            low=space.low,
            high=space.high,
            mu0=mu0,
            samples_per_step=self.samples_per_step,
            seed=self.seed,
            **self._ppo_kwargs,
        )

    def _optimizer_from_state(self, state: dict) -> PPO2:
        return PPO2.from_state_dict(state)

    @property
    def mu(self) -> np.ndarray:
        """Current policy mean (search coordinates)."""
        return np.asarray(self._opt.mu, dtype=np.float64)


class RandomSearcher(_StepSearcher):
    """Random search over the same box, in the same steps (the paper's Fig. 3 baseline).

    Bounded dimensions are uniform; dimensions with an infinite bound are normal around the
    space's init (or the first point) with ``sigma``.
    """

    def __init__(
        self,
        space: Any = None,
        *,
        metric: str | None = None,
        mode: str | None = None,
        steps: int = 12,
        samples_per_step: int = 32,
        sigma: float = 0.2,
        failure_reward: float | None = None,
        points_to_evaluate: Sequence[Any] | None = None,
        seed: Any = None,
        step_callback: Callable[[dict], Any] | None = None,
        key: str = "theta",
    ) -> None:
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0; got {sigma!r}")
        self._sigma = float(sigma)
        super().__init__(
            space,
            metric=metric,
            mode=mode,
            steps=steps,
            samples_per_step=samples_per_step,
            failure_reward=failure_reward,
            points_to_evaluate=points_to_evaluate,
            seed=seed,
            step_callback=step_callback,
            key=key,
        )

    def _make_optimizer(self, space: BoxSpace, mu0: np.ndarray) -> RandomSearch:
        return RandomSearch(
            low=space.low,
            high=space.high,
            samples_per_step=self.samples_per_step,
            seed=self.seed,
            mu0=mu0,
            sigma=self._sigma,
        )

    def _optimizer_from_state(self, state: dict) -> RandomSearch:
        opt = RandomSearch(
            low=state["low"], high=state["high"], samples_per_step=state["samples_per_step"],
            mu0=state["mu0"], sigma=state["sigma"],
        )
        opt.load_state_dict(state)
        return opt
