"""The options of a search of the user's own training function (``search_loss``):
:class:`UserSearchOptions` (validated before Ray starts; what the search manifest records) and
:func:`task_name` (the function's ``module:qualname``). The options it shares with ``autoloss
search`` are checked by :class:`~autoloss_app.common_options.CommonSearchOptions`, with
messages naming the keyword arguments. No ray import.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from autoloss_app.common_options import DEFAULT_ANSWER, CommonSearchOptions
from autoloss_app.option_checks import KEYWORDS, check_choice, default_tune_dir
from autoloss_ray.answer import ANSWER_RULES
from autoloss_ray.validation import OptionsError
from autoloss_ray.vocabulary import DEFAULT_BOUNDARY_TOLERANCE, IGNORE_INDEX

__all__ = ["UserSearchOptions", "task_name", "ANSWERS"]


# the rules of autoloss_ray.answer but the playoff, which re-trains the built-in proxy task
ANSWERS = tuple(rule for rule in ANSWER_RULES if rule != "playoff")


def task_name(train_fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a training function (what the manifest records)."""
    module = getattr(train_fn, "__module__", None) or type(train_fn).__module__
    name = getattr(train_fn, "__qualname__", None) or type(train_fn).__qualname__
    return f"{module}:{name}"


def _int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionsError(f"{name} must be an int >= {low}, got {value!r}")
    if value < low:
        raise OptionsError(f"{name} must be >= {low}, got {value}")


@dataclass(frozen=True, kw_only=True)
class UserSearchOptions(CommonSearchOptions):
    """The options of a search of a user task (what its manifest records): the options of
    every search (:class:`~autoloss_app.common_options.CommonSearchOptions`, the field names the
    searcher and the progress callback read) and the task's own."""

    task: str
    num_classes: int
    ignore_index: int | None = IGNORE_INDEX
    boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE
    config: dict[str, Any] = field(default_factory=dict)
    steps: int = 4
    samples: int = 8
    # the search's answer (what the summary, export and report use; see autoloss search
    # --answer): the best trial, or PPO2's policy mean of its best step
    answer: str = DEFAULT_ANSWER

    def resolved(self) -> UserSearchOptions:
        """``tune_dir`` as ``autoloss search`` takes it (:func:`default_tune_dir`); validated."""
        out = dataclasses.replace(self, tune_dir=default_tune_dir(self.store, self.tune_dir))
        out.validate()
        return out

    def validate(self) -> None:
        """Every check that needs no compute (the shared options':
        :meth:`~autoloss_app.common_options.CommonSearchOptions.validate_common`); messages
        name the keyword arguments."""
        from autoloss_ray.checks import check_ignore_index, check_tolerance
        from trainables.user_task import CONTEXT_KEYS

        self.validate_common(KEYWORDS)
        try:
            check_ignore_index(self.ignore_index)
            check_tolerance(self.boundary_tolerance)
        except (TypeError, ValueError) as exc:
            raise OptionsError(str(exc)) from None
        _int("num_classes", self.num_classes, 2)
        if self.ignore_index is not None and 0 <= self.ignore_index < self.num_classes:
            raise OptionsError(f"ignore_index {self.ignore_index} is one of the "
                               f"{self.num_classes} class ids; give a value outside "
                               f"[0, {self.num_classes}) such as 255, or None")
        check_choice(self.answer, ANSWERS, "answer",
                     " (a playoff re-trains the built-in proxy task)")
        if self.answer == "policy-mean" and self.searcher != "ppo":
            raise OptionsError(f"answer='policy-mean' is PPO2's policy mean; searcher "
                               f"{self.searcher!r} has none: use 'best-trial'")
        _int("steps", self.steps, 1)
        _int("samples", self.samples, 2)
        if not isinstance(self.config, Mapping):
            raise OptionsError(f"config must be a dict of constants for train_fn, got "
                               f"{type(self.config).__name__}")
        clash = sorted(set(self.config) & set(CONTEXT_KEYS))
        if clash:
            raise OptionsError(f"config may not set {clash}: the search gives train_fn those "
                               f"keys itself ({', '.join(CONTEXT_KEYS)})")
        if any(not isinstance(k, str) for k in self.config):
            raise OptionsError("config keys must be strings")
        try:
            json.dumps(self.config, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise OptionsError(f"config must hold JSON values (numbers, strings, lists, dicts; "
                               f"the store records it): {exc}") from None

    def trial_config(self) -> dict[str, Any]:
        """The constant part of every trial's config (the searcher adds ``theta``)."""
        return {
            "metric": self.metric, "parameterization": self.parameterization,
            "num_classes": self.num_classes, "ignore_index": self.ignore_index,
            "boundary_tolerance": self.boundary_tolerance, "seed": self.seed,
            "task": self.task, "user_config": dict(self.config),
        }
