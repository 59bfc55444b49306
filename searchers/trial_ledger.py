"""What Ray Tune told a step searcher about its trials, and what a trial's end means.

:class:`TrialLedger` keeps, for :class:`searchers.step_searcher.StepSearcher`, which Tune trial
carries which ``(step, sample)`` of the current step (a trial Tune restarted under a new id maps
through the step/sample keys of its config), which trial ids were told (a trial id is told at
most once), the last metric value each trial reported, and which trials Tune showed a natural
final result (``done=True``). :func:`trial_outcome` turns an ending into what the step protocol
is told: a value, a fail reason, and whether the trial stopped early (the rules are
:meth:`StepSearcher.on_trial_complete <searchers.step_searcher.StepSearcher.on_trial_complete>`'s).
Both are pure: no Tune, no logging.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from autoloss_ray.search.step_protocol import SAMPLE_KEY, STEP_KEY, StepProtocol

__all__ = ["TrialLedger", "trial_outcome"]


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class TrialLedger:
    """The trials of a step searcher, by Tune trial id.

    * ``samples``: in-flight trial id -> ``(step, sample index)``;
    * ``told``: the trial ids whose sample was told;
    * ``last_value``: trial id -> the last metric value it reported (what a trial a scheduler
      stops while it is paused is told);
    * ``finished``: the trial ids whose ``done=True`` result Tune showed ``on_trial_result``.

    Saved in the searcher's state under the keys ``trial_sample``, ``told_trials``,
    ``last_value`` and ``finished_trials`` (:meth:`state`, :meth:`from_state`).
    """

    def __init__(self) -> None:
        self.samples: dict[str, tuple[int, int]] = {}  # in-flight trial id -> (step, i)
        self.told: set[str] = set()
        self.last_value: dict[str, float] = {}  # trial id -> last reported metric value
        self.finished: set[str] = set()  # trial ids whose done=True result we saw

    def hand_out(self, trial_id: str, step: int, i: int) -> None:
        """``trial_id`` carries sample ``i`` of ``step``."""
        self.samples[trial_id] = (step, i)

    def locate(self, protocol: StepProtocol, trial_id: str, result: Mapping | None
               ) -> int | None:
        """Sample index of the current step this trial carries, or None to ignore it."""
        if trial_id in self.told:
            return None
        key = self.samples.get(trial_id)
        if key is None and result:
            # A trial Tune restarted under a new id (same config): map it through its config.
            step = result.get(f"config/{STEP_KEY}", (result.get("config") or {}).get(STEP_KEY))
            sample = result.get(
                f"config/{SAMPLE_KEY}", (result.get("config") or {}).get(SAMPLE_KEY)
            )
            if step is not None and sample is not None:
                key = (int(step), int(sample))
        return None if key is None else protocol.open_sample(key[0], key[1])

    def see_result(self, protocol: StepProtocol, trial_id: str, result: dict,
                   metric: str | None) -> None:
        """Note an intermediate result of ``trial_id`` (``on_trial_result``)."""
        # Learn the sample of a restarted trial early, so that an error later maps too.
        if trial_id not in self.samples:
            i = self.locate(protocol, trial_id, result)
            if i is not None:
                self.samples[trial_id] = (protocol.step, i)
        # Remember the last reported value: a trial a scheduler stops while it is paused
        # completes without a result, and then this value is what the searcher is told.
        if trial_id in self.samples and metric and result and metric in result:
            self.last_value[trial_id] = _as_float(result[metric])
        if trial_id in self.samples and result and result.get("done"):
            # Tune hands a trial's natural final result (done=True) to on_trial_result, but
            # not the one on which a scheduler or stopper decides STOP
            self.finished.add(trial_id)

    def end(self, protocol: StepProtocol, trial_id: str, result: Mapping | None
            ) -> tuple[int | None, float | None, bool]:
        """Forget the ended ``trial_id``: ``(its sample index or None to ignore it, the last
        value it reported or None, whether Tune showed its done=True result)``."""
        i = self.locate(protocol, trial_id, result)
        self.samples.pop(trial_id, None)
        last = self.last_value.pop(trial_id, None)
        ended_itself = trial_id in self.finished
        self.finished.discard(trial_id)
        return i, last, ended_itself

    def mark_told(self, trial_id: str | None) -> None:
        if trial_id is not None:
            self.told.add(trial_id)

    def forget_in_flight(self) -> None:
        """No trial carries a sample of the current step any more (the step completed, was
        re-queued or replayed)."""
        self.samples = {}

    def state(self) -> dict[str, Any]:
        return {
            "trial_sample": self.samples,
            "told_trials": self.told,
            "last_value": self.last_value,
            "finished_trials": self.finished,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TrialLedger:
        ledger = cls()
        ledger.samples = state["trial_sample"]
        ledger.told = state["told_trials"]
        # keys added later: states saved before them load with the defaults
        ledger.last_value = state.get("last_value", {})
        ledger.finished = state.get("finished_trials", set())
        return ledger


def trial_outcome(result: Mapping | None, metric: str | None, *, error: bool,
                  last: float | None, ended_itself: bool) -> tuple[float, str | None, bool]:
    """``(value, fail reason or None, stopped early)`` of a trial's end: ``result`` and
    ``error`` as Tune passes them to ``on_trial_complete``, ``last`` and ``ended_itself`` from
    :meth:`TrialLedger.end`. The reasons: ``"error"``, ``"no result"``, ``"metric missing"``,
    ``"not finite"``."""
    value, reason, early = math.nan, None, False
    if error:
        reason = "error"
    elif result is None:
        if last is None:
            reason = "no result"
        else:
            value, early = last, True
    elif metric not in result:
        reason = "metric missing"
    else:
        value = _as_float(result[metric])
        # Tune puts done=False in every intermediate result; a result without the key
        # (e.g. Repeater's averaged one) is a finished trial.
        # Stopped early: Tune showed us earlier results of this trial but not its natural
        # final one (a STOP decision sets done=True without telling on_trial_result), or
        # the result says done=False. A trial stopped on its very first result cannot be
        # told from one that finished (Tune passes nothing else).
        early = ("done" in result and not bool(result["done"])) or (
            last is not None and not ended_itself
        )
        if "rung_iteration" in result:  # the proxy trial's rung report: stopped at a rung
            early = True
        elif "rung_reward" in result:  # a trial with rungs reports its end without one
            early = False
    if reason is None and not math.isfinite(value):
        reason = "not finite"
    return value, reason, early
