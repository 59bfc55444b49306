"""Progress of a running search: a line per finished trial and Ray metrics for the dashboard.

The Ray metrics (``ray.util.metrics`` gauges, tagged by experiment) show in the dashboard's
Metrics view (with Prometheus/Grafana set up as Ray documents) as
``ray_autoloss_step``, ``ray_autoloss_trials_done``, ``ray_autoloss_best_reward`` and
``ray_autoloss_mean_reward``.
"""

from __future__ import annotations

import math
import time
from typing import IO, Any

from ray import tune

from autoloss_ray.store import trial_ok, trial_succeeded

__all__ = ["ProgressCallback"]


class ProgressCallback(tune.Callback):
    """Prints ``step s/T  trials d/T*M  best r  step-mean r`` and exports the same as gauges."""

    def __init__(
        self, *, experiment: str, steps: int, samples: int, stream: IO[str] | None = None
    ) -> None:
        self.experiment = experiment
        self.steps = steps
        self.samples = samples
        self.stream = stream
        self.done = 0
        self.failed = 0
        self.best = -math.inf
        self.step_rewards: dict[int, list[float]] = {}
        self._gauges: dict[str, Any] | None = None
        self._start = time.monotonic()

    def count_previous(self, rows) -> None:
        """Start the counts from the store rows of a resumed search (a DataFrame with
        ``step``, ``reward`` and ``status``), so progress reads ``trial 7/12`` after a resume."""
        stopped = (rows["stopped_early"].eq(True) if "stopped_early" in rows.columns
                   else [False] * len(rows))
        for step, reward, status, stop in zip(rows["step"], rows["reward"], rows["status"],
                                              stopped):
            self.done += 1
            ok = trial_succeeded(status, reward)
            self.failed += int(not ok)
            if ok and not stop:  # a stopped trial's reward is a rung's
                self.best = max(self.best, float(reward))
                self.step_rewards.setdefault(int(step), []).append(float(reward))

    # Gauges are created lazily: they must not be pickled with the callback.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_gauges"] = None
        state["stream"] = None if self.stream is None else "stdout"
        return state

    def __setstate__(self, state: dict) -> None:
        import sys

        stream = state.get("stream")
        state["stream"] = sys.stdout if stream == "stdout" else None
        self.__dict__.update(state)

    def _metrics(self) -> dict[str, Any]:
        if self._gauges is None:
            from ray.util.metrics import Gauge

            tags = ("experiment",)
            self._gauges = {
                "step": Gauge("autoloss_step", "current search step (1-based)", tag_keys=tags),
                "trials_done": Gauge(
                    "autoloss_trials_done", "finished trials (ok or failed)", tag_keys=tags
                ),
                "best_reward": Gauge(
                    "autoloss_best_reward", "best trial reward so far", tag_keys=tags
                ),
                "mean_reward": Gauge(
                    "autoloss_mean_reward", "mean reward of the current step", tag_keys=tags
                ),
            }
        return self._gauges

    def _record(self, trial, reward: float | None, failed: bool,
                stopped_at: int | None = None) -> None:
        self.done += 1
        self.failed += int(failed)
        step = int(trial.config.get("search_step", 0))
        # a trial a scheduler stopped at a rung: its reward is the rung's (another scale)
        if stopped_at is None and reward is not None and math.isfinite(reward):
            self.best = max(self.best, reward)
            self.step_rewards.setdefault(step, []).append(reward)
        rewards = self.step_rewards.get(step, [])
        mean = sum(rewards) / len(rewards) if rewards else float("nan")
        tags = {"experiment": self.experiment}
        try:
            gauges = self._metrics()
            gauges["step"].set(step + 1, tags=tags)
            gauges["trials_done"].set(self.done, tags=tags)
            if math.isfinite(self.best):
                gauges["best_reward"].set(self.best, tags=tags)
            if math.isfinite(mean):
                gauges["mean_reward"].set(mean, tags=tags)
        except Exception:  # metrics are best effort: never stop a search for a chart
            pass
        if self.stream is not None:
            total = self.steps * self.samples
            elapsed = time.monotonic() - self._start
            status = ("FAILED" if failed else f"reward {reward:.4f}" if stopped_at is None
                      else f"stopped at iteration {stopped_at} (rung reward {reward:.4f})")
            print(
                f"[autoloss] step {step + 1}/{self.steps}  trial {self.done}/{total}  "
                f"{status}  best {self.best:.4f}  step-mean {mean:.4f}  "
                f"failed {self.failed}  {elapsed:.0f}s",
                file=self.stream,
                flush=True,
            )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        reward = result.get("reward")
        stopped_at = result.get("rung_iteration")  # the last result is a rung report
        if stopped_at is not None and reward is not None:
            self._record(trial, float(reward), False, stopped_at=int(stopped_at))
            return
        failed = not trial_ok(result.get("status", "ok")) or reward is None
        self._record(trial, None if reward is None else float(reward), failed)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._record(trial, None, True)
