"""The Ray Tune ``Searcher`` over the library's step protocol (what every step searcher shares).

:class:`autoloss_ray.search.step_protocol.StepProtocol` holds the search (steps of M samples,
failure values, step records, replay, warm start). This adapter only translates: trial ids <->
``(step, sample)`` (a trial Tune restarted under a new id maps through the step/sample keys of
its config; a trial id is told at most once), Tune's results -> a value or a fail reason (see
``on_trial_complete``), Tune's Searcher API (``set_search_properties``, ``set_max_concurrency``
returning True as Ray's HEBO searcher does, ``suggest``, ``add_evaluated_point``) and
``save``/``restore`` (the state pickled, format version :data:`_STATE_VERSION`). The restore
semantics are in :mod:`searchers.ppo2`; the bookkeeping of the trials (which trial carries
which sample, which were told, what an ending means) is :mod:`searchers.trial_ledger`.
"""

from __future__ import annotations

import copy
import logging
import pickle
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from autoloss_ray.search.step_protocol import StepProtocol
from searchers.space import BoxSpace, has_domains
from searchers.step_settings import StepSettings, with_step_keywords
from searchers.trial_ledger import TrialLedger, _as_float, trial_outcome

__all__ = ["StepSearcher"]

logger = logging.getLogger(__name__)

_STATE_VERSION = 1


class StepSearcher(Searcher):
    """Base of the step searchers: a :class:`StepProtocol` behind Ray Tune's Searcher API.

    Subclasses implement ``_make_optimizer(space, mu0)`` and ``_optimizer_from_state(state)``.
    Its keywords (``metric``, ``mode``, ``steps``, ...) are the fields of
    :class:`~searchers.step_settings.StepSettings`; a subclass's ``__init__`` takes its own
    keywords and passes the rest on.
    """

    @with_step_keywords()
    def __init__(self, space: Any = None, **keywords: Any) -> None:
        s = StepSettings.of(type(self).__name__, keywords)
        if s.mode is not None and s.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'; got {s.mode!r}")
        if s.metric is not None and not isinstance(s.metric, str):
            raise TypeError(f"metric must be a str (one metric); got {s.metric!r}")
        self._protocol = StepProtocol(
            steps=s.steps, samples_per_step=s.samples_per_step, failure_reward=s.failure_reward,
            step_callback=s.step_callback, name=type(self).__name__,
        )
        super().__init__(metric=s.metric, mode=s.mode)
        self._protocol.metric, self._protocol.mode = self._metric, self._mode
        self.seed = s.seed
        self._key = s.key
        self._raw_points = list(s.points_to_evaluate) if s.points_to_evaluate else []
        self._max_concurrent = 0  # 0 = no limit of our own
        self._warned: set[str] = set()
        self._trials = TrialLedger()
        if space is not None:
            self._set_space(BoxSpace(space, key=s.key))

    # ------------------------------------------------------------------ setup
    @property
    def steps(self) -> int:
        return self._protocol.steps

    @property
    def samples_per_step(self) -> int:
        return self._protocol.samples_per_step

    @property
    def failure_reward(self) -> float | None:
        return self._protocol.failure_reward

    @property
    def rank_stopped(self) -> bool:
        """Multi-fidelity: scheduler-stopped samples ranked below their step's survivors
        (:class:`autoloss_ray.search.step_protocol.StepProtocol`); on for ``--scheduler asha``."""
        return self._protocol.rank_stopped

    @rank_stopped.setter
    def rank_stopped(self, value: bool) -> None:
        self._protocol.rank_stopped = bool(value)

    @property
    def step_callback(self) -> Callable[[dict], Any] | None:
        return self._protocol.step_callback

    @step_callback.setter
    def step_callback(self, callback: Callable[[dict], Any] | None) -> None:
        self._protocol.step_callback = callback

    def _set_space(self, space: BoxSpace) -> None:
        points = [space.from_config(p) for p in self._raw_points]
        if len(points) > self.samples_per_step:
            raise ValueError(
                f"points_to_evaluate has {len(points)} points but a step has only "
                f"samples_per_step={self.samples_per_step} samples"
            )
        self._protocol.space, self._protocol.points = space, points
        mu0 = points[0] if points else space.init
        self._protocol.optimizer = self._make_optimizer(space, mu0)

    def _make_optimizer(self, space: BoxSpace, mu0: np.ndarray) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _optimizer_from_state(self, state: dict) -> Any:  # pragma: no cover
        raise NotImplementedError

    @property
    def space(self) -> BoxSpace | None:
        return self._protocol.space

    @property
    def optimizer(self) -> Any:
        """The underlying ask/tell optimizer (PPO2, RandomSearch, ...)."""
        return self._protocol.optimizer

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        if self.space is not None and has_domains(config):
            return False  # Tune raises its "search space already set" error
        if self.space is None and has_domains(config):
            # Tune's param_space: tuples and lists are constants, as Ray passes them
            self._set_space(BoxSpace(config, key=self._key, param_space=True))
        if metric:
            self._metric = self._protocol.metric = metric
        if mode:
            if mode not in ("min", "max"):
                raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}")
            self._mode = self._protocol.mode = mode
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

    def _check_ready(self) -> None:
        if self.space is None:
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

    # ------------------------------------------------------------------ suggest
    def suggest(self, trial_id: str) -> dict | str | None:
        p = self._protocol
        if p.finished:
            return Searcher.FINISHED
        self._check_ready()
        i = p.hand_out(trial_id, max_in_flight=self._max_concurrent)
        if i is None:
            return None  # the step waits for its in-flight trials
        self._trials.hand_out(trial_id, p.step, i)
        return p.config(p.step, i)

    # ------------------------------------------------------------------ results
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._trials.see_result(self._protocol, trial_id, result, self._metric)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Tell the step a trial's end. Every ending completes its sample:

        * ``error=True``: failed (reason ``"error"``);
        * a result with the metric: that value (NaN/inf: failed, reason ``"not finite"``);
          if a scheduler (ASHA, HyperBand) or a stopper ended the trial (Tune then never
          shows its final result to ``on_trial_result``), the value counts and
          ``stopped_early`` is recorded; a trial with rungs (multi-fidelity) says it
          itself: its last result is a rung report (``rung_iteration``: stopped) or its
          final result (``rung_reward`` NaN and no ``rung_iteration``: finished);
        * a result without the metric: failed (reason ``"metric missing"``);
        * no result (stopped while pending/paused): the last value the trial reported
          (``stopped_early``), or failed (reason ``"no result"``) if it reported none.
        """
        i, last, ended_itself = self._trials.end(self._protocol, trial_id, result)
        if i is None:
            return
        value, reason, early = trial_outcome(result, self._metric, error=error, last=last,
                                             ended_itself=ended_itself)
        if reason == "metric missing":
            self._warn_once(
                reason,
                f"trial {trial_id} ended without the metric {self._metric!r} in its result "
                f"(keys: {sorted(k for k in result if not k.startswith('config/'))}); it "
                "counts as a failed sample (failure_reward); further such trials are not "
                "logged",
            )
        self._tell(i, trial_id, value, reason=reason, early=early)

    def _tell(self, i: int, trial_id: str | None, value: float, **kw: Any) -> None:
        self._trials.mark_told(trial_id)
        if self._protocol.tell(i, trial_id, value, **kw) is not None:
            self._trials.forget_in_flight()  # the step is complete

    def on_pause(self, trial_id: str) -> None:
        """A paused trial (HyperBand, PBT, HyperBandForBOHB) keeps its sample in flight; its
        last reported value is kept for the case a scheduler then stops it while paused."""

    def on_unpause(self, trial_id: str) -> None:
        """Resuming changes nothing: the sample completes when the trial ends."""

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning("%s: %s", type(self).__name__, message)

    # ------------------------------------------------------------------ results view
    @property
    def step(self) -> int:
        """Number of completed steps."""
        return self._protocol.step

    @property
    def is_finished(self) -> bool:
        return self._protocol.finished

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per completed step (what ``step_callback`` receives)."""
        return copy.deepcopy(self._protocol.records)

    @property
    def best_theta(self) -> np.ndarray:
        """The optimizer's best point, in search coordinates."""
        return np.asarray(self.optimizer.best, dtype=np.float64)

    @property
    def best_config(self) -> dict:
        """The best point as a Tune config (without the step/sample keys)."""
        assert self.space is not None
        return self.space.to_config(self.best_theta)

    def requeue_in_flight(self) -> list[int]:
        """Hand out the current step's in-flight samples again (after a restore in which Tune
        does not re-run unfinished trials). Returns the re-queued sample indices."""
        self._trials.forget_in_flight()
        return self._protocol.requeue()

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
        if self.space is None or not self._mode:
            raise ValueError(
                f"{type(self).__name__}.add_evaluated_point needs the search space and mode "
                "first: pass space= and mode= to the searcher (a param_space reaches it only "
                "when Tune starts)"
            )
        theta = self.space.from_config(parameters)
        mu0 = self._protocol.add_evaluated(theta, _as_float(value), error=error, pruned=pruned)
        if mu0 is not None:
            self._protocol.optimizer = self._make_optimizer(self.space, mu0)

    @property
    def evaluated_points(self) -> list[dict[str, Any]]:
        """Points given through ``add_evaluated_point`` (theta, value, error, pruned,
        warm_start: whether it could still set mu0)."""
        return copy.deepcopy(self._protocol.evaluated)

    # ------------------------------------------------------------------ replay
    def replay(
        self, results: Iterable[Mapping[str, Any]], *, quiet_steps: Collection[int] = ()
    ) -> int:
        """Fast-forward a fresh searcher through results recorded by an earlier run of it
        (see :meth:`autoloss_ray.search.step_protocol.StepProtocol.replay`; the Parquet store's rows
        are the source of truth, Tune's experiment checkpoint can lag after a hard kill).

        Returns the number of results told; raises ``ValueError`` as the protocol does."""
        if self._protocol.fresh:
            self._check_ready()
        results = list(results)
        told = self._protocol.replay(results, quiet_steps=quiet_steps)
        self._trials.told.update(r["trial_id"] for r in results
                                 if r.get("trial_id") is not None)
        self._trials.forget_in_flight()
        return told

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict:
        opt = self.optimizer
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
            "space": self.space,
            "opt": None if opt is None else opt.state_dict(),
            **self._trials.state(),
            **self._protocol.state(),
        }

    def set_state(self, state: dict) -> None:
        if state.get("class") != type(self).__name__:
            raise ValueError(
                f"searcher state is for {state.get('class')!r}, not {type(self).__name__!r}"
            )
        state = copy.deepcopy(state)
        old = self.__dict__.get("_protocol")
        # a searcher pickled by a version before the protocol kept its callback itself
        callback = old.step_callback if old is not None else self.__dict__.get("step_callback")
        p = self._protocol = StepProtocol(
            steps=state["steps"], samples_per_step=state["samples_per_step"],
            failure_reward=state["failure_reward"], step_callback=callback,
            name=type(self).__name__,
        )
        p._warned_min = bool(getattr(old, "_warned_min", self.__dict__.get("_warned_min")))
        self._metric, self._mode = state["metric"], state["mode"]
        p.metric, p.mode = self._metric, self._mode
        self.seed = state["seed"]
        self._key = state["key"]
        self._raw_points = state["raw_points"]
        self._max_concurrent = state["max_concurrent"]
        p.space = state["space"]
        if state["opt"] is not None:
            p.optimizer = self._optimizer_from_state(state["opt"])
        p.load_state(state)
        self._trials = TrialLedger.from_state(state)
        self.__dict__.setdefault("_warned", set())

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            try:
                state = pickle.load(f)
            except (EOFError, pickle.UnpicklingError) as exc:
                # e.g. a driver killed while Tune copied its checkpoint into storage
                raise ValueError(
                    f"the searcher checkpoint {checkpoint_path} is truncated or corrupt "
                    f"({type(exc).__name__}: {exc}); restore from another copy, or rebuild "
                    "the search from its store with `autoloss search --resume`") from exc
        self.set_state(state)

    def __repr__(self) -> str:
        dim = None if self.space is None else self.space.dim
        return (
            f"{type(self).__name__}(D={dim}, steps={self.steps}, "
            f"samples_per_step={self.samples_per_step}, step={self.step}, "
            f"metric={self._metric!r}, mode={self._mode!r})"
        )
