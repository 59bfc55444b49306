"""Replay: a fresh step protocol fast-forwarded through recorded results (resume from the store).

A recorded result is a mapping with ``step``, ``sample`` (ints), ``config`` (the trial's
config, or at least its searched keys), ``value`` (the metric; NaN or None when the trial
failed) and optionally ``trial_id`` and ``stopped_early``. :func:`replay_results` (what
:meth:`autoloss_ray.search.step_protocol.StepProtocol.replay` runs) groups them by step
(:func:`group_recorded`), re-draws every step with the protocol's seed, checks each recorded
config against its draw (:func:`check_recorded`) and tells the recorded values again, so a
killed search resumes exactly. Pure: the protocol is all it changes.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["replay_results", "group_recorded", "check_recorded"]


def replay_results(
    protocol: Any, results: Iterable[Mapping[str, Any]], *, quiet_steps: Collection[int] = ()
) -> int:
    """Fast-forward a fresh protocol through results recorded by an earlier run of it.

    Args:
        protocol: a fresh :class:`~autoloss_ray.search.step_protocol.StepProtocol` (its
            ``space`` and ``optimizer`` set).
        results: one mapping per finished trial with ``step``, ``sample`` (ints),
            ``config`` (the trial's config, or at least its searched keys), ``value``
            (the metric; NaN or None for a failed trial) and optionally ``trial_id``
            and ``stopped_early`` (a scheduler stopped it: told as such again).
            Each ``(step, sample)`` at most once.
        quiet_steps: steps whose ``step_callback`` already ran; it is not called again
            for them.

    Returns:
        The number of results told.

    Raises:
        ValueError: the protocol is not fresh, a result is out of range or repeated, a
            step is missing results before a later step has some, or a recorded config
            is not what this protocol draws (the options differ from the original run).
    """
    if not protocol.fresh:
        raise ValueError("replay needs a fresh searcher (no step started yet)")
    by_step = group_recorded(results, steps=protocol.steps,
                             samples_per_step=protocol.samples_per_step)
    if not by_step:
        return 0
    last = max(by_step)
    quiet = {int(s) for s in quiet_steps}
    callback, told = protocol.step_callback, 0
    try:
        for step in range(last + 1):
            protocol.step_callback = None if step in quiet else callback
            protocol.start_step()
            assert protocol.space is not None and protocol.thetas is not None
            for i, r in sorted(by_step[step].items()):
                check_recorded(protocol.space, protocol.thetas[i], r, step=step, sample=i)
                value = r.get("value")
                value = math.nan if value is None else float(value)
                protocol.tell(i, r.get("trial_id"), value,
                              early=bool(r.get("stopped_early") or False))
                told += 1
    finally:
        protocol.step_callback = callback
    return told


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
