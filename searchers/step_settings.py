"""The constructor keywords every step searcher takes, defined once: :class:`StepSettings`.

:class:`searchers.step_searcher.StepSearcher` and its subclasses (``PPO2Searcher``,
``RandomSearcher``, ``TPESearcher``, ``CMAESSearcher``) take these keywords besides their own
(``config``/PPO2's settings, ``sigma``). A subclass's ``__init__`` names only its own keywords
and passes the rest on as ``**keywords``; :func:`with_step_keywords` gives it the full
signature (``inspect.signature``, ``help()`` and the API docs show every keyword, in the order
``space, metric, mode, steps, samples_per_step, <its own>, failure_reward, ..., key``).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from autoloss_ray.search.config import DEFAULT_SAMPLES_PER_STEP, DEFAULT_STEPS

__all__ = ["StepSettings", "STEP_SETTINGS", "with_step_keywords"]

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class StepSettings:
    """The keywords of every step searcher, with their defaults.

    Args:
        metric, mode: the result key to optimise and "max"/"min" (or None: from Tune).
        steps: T, the number of steps. samples_per_step: M, trials per step.
        failure_reward: the metric value of a failed / NaN trial (None: the worst valid value
            seen so far for the mode).
        points_to_evaluate: configs (or vectors) evaluated first, in step 0.
        seed: the sampling seed. step_callback: picklable callable(record) after each step.
        key: the trial config's key of the parameter vector.
    """

    metric: str | None = None
    mode: str | None = None
    steps: int = DEFAULT_STEPS
    samples_per_step: int = DEFAULT_SAMPLES_PER_STEP
    failure_reward: float | None = None
    points_to_evaluate: Sequence[Any] | None = None
    seed: Any = None
    step_callback: Callable[[dict], Any] | None = None
    key: str = "theta"

    @classmethod
    def of(cls, owner: str, keywords: Mapping[str, Any]) -> StepSettings:
        """The settings of ``keywords``; a keyword that is none of them is refused as Python
        refuses it for ``owner``'s ``__init__``."""
        for name in keywords:
            if name not in _NAMES:
                raise TypeError(f"{owner}.__init__() got an unexpected keyword argument {name!r}")
        return cls(**keywords)


# the names of the step settings, in their order
STEP_SETTINGS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(StepSettings))
_NAMES = frozenset(STEP_SETTINGS)


def with_step_keywords(*, extra_keywords: bool = False, **annotations: str) -> Callable[[_F], _F]:
    """Decorate a step searcher's ``__init__(self, space, *, <own keywords>, **keywords)``: its
    signature becomes ``(self, space, *, metric, mode, steps, samples_per_step, <own keywords>,
    failure_reward, points_to_evaluate, seed, step_callback, key)``.

    ``extra_keywords``: keep ``**keywords`` at the end (keywords that are no step setting mean
    something to the searcher, e.g. PPO2's settings). ``annotations``: a step setting's
    annotation as this searcher documents it (e.g. ``seed="int | None"``)."""
    unknown = set(annotations) - _NAMES
    if unknown:
        raise TypeError(f"not step settings: {sorted(unknown)}")

    def decorate(init: _F) -> _F:
        sig = inspect.signature(init)
        params = list(sig.parameters.values())
        if not params or params[-1].kind is not inspect.Parameter.VAR_KEYWORD:
            raise TypeError(f"{init.__qualname__} must take the step settings as **keywords")
        head = [p for p in params[:-1] if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        own = [p for p in params[:-1] if p.kind is inspect.Parameter.KEYWORD_ONLY]
        shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                    annotation=annotations.get(f.name, f.type))
                  for f in dataclasses.fields(StepSettings)]
        cut = [p.name for p in shared].index("samples_per_step") + 1
        merged = head + shared[:cut] + own + shared[cut:]
        if extra_keywords:
            merged.append(params[-1])
        init.__signature__ = sig.replace(parameters=merged)  # type: ignore[attr-defined]
        return init

    return decorate
