"""Checks of recorded results before a step protocol replays them (resume from the store).

A recorded result is a mapping with ``step``, ``sample`` (ints), ``config`` (the trial's
config, or at least its searched keys), ``value`` (the metric; NaN or None when the trial
failed) and optionally ``trial_id``. :meth:`autoloss_ray.search.step_protocol.StepProtocol.replay`
groups them by step (:func:`group_recorded`) and checks each against what it draws
(:func:`check_recorded`). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["group_recorded", "check_recorded"]


def group_recorded(
    results: Iterable[Mapping[str, Any]], *, steps: int, samples_per_step: int
) -> dict[int, dict[int, Mapping[str, Any]]]:
    """``{step: {sample: result}}`` of recorded results.

    Raises:
        ValueError: a result without integer step/sample, outside ``steps`` x
            ``samples_per_step``, recorded twice, or a step with missing results before a
            later step that has some.
    """
    by_step: dict[int, dict[int, Mapping[str, Any]]] = {}
    for r in results:
        try:
            step, sample = int(r["step"]), int(r["sample"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"each replayed result needs integer 'step' and 'sample'; got {dict(r)!r}"
            ) from None
        if not (0 <= step < steps and 0 <= sample < samples_per_step):
            raise ValueError(
                f"recorded trial (step {step}, sample {sample}) is outside this search "
                f"of {steps} steps x {samples_per_step} samples (fewer steps "
                "than were already run, or other samples per step?)"
            )
        if sample in by_step.setdefault(step, {}):
            raise ValueError(f"trial (step {step}, sample {sample}) is recorded twice")
        by_step[step][sample] = r
    if by_step:
        last = max(by_step)
        for step in range(last):
            have = len(by_step.get(step, {}))
            if have != samples_per_step:
                raise ValueError(
                    f"step {step} has {have} of {samples_per_step} results recorded "
                    f"but step {last} has some: the record is not from one run of this "
                    "search"
                )
    return by_step


def check_recorded(
    space: Any, drawn: np.ndarray, result: Mapping[str, Any], *, step: int, sample: int
) -> None:
    """Raise ``ValueError`` unless the recorded config's theta is ``drawn`` [D] (what the
    replaying protocol draws there; ``space.from_config`` maps a config to a theta)."""
    try:
        recorded = space.from_config(result["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"the recorded trial (step {step}, sample {sample}) has no valid config for this "
            f"search space ({e}): resume with the options of the original search"
        ) from None
    if not np.allclose(recorded, drawn, rtol=1e-9, atol=1e-12):
        raise ValueError(
            f"the recorded trial (step {step}, sample {sample}) has "
            f"{np.round(recorded, 6).tolist()} but this searcher draws "
            f"{np.round(drawn, 6).tolist()} there: resume with the options (seed, sigma, "
            "samples, parameterization, ...) of the original search"
        )
