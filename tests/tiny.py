"""The tiny proxy trial every test that trains starts from, as a trial config and as CLI flags.

Only what every copy agreed on is here (the ``tiny`` model on ``synthetic`` scenes, 32-pixel
crops, batches of 4); each module passes its own sizes (iterations, train size, seed, ...) on
top, so a test's numbers stay visible where it asserts on them. Keys a module does not pass
take TrialConfig's / the CLI's defaults, as before.
"""

from __future__ import annotations

from typing import Any

TINY_TRIAL: dict[str, Any] = {"model": "tiny", "dataset": "synthetic", "image_size": 32,
                              "batch_size": 4}
# the CLI flags of the same sizes; --model only where a module names it (the CLI's default
# model differs: a module that left it out searched the default one, and still does)
TINY_FLAGS: dict[str, Any] = {"image_size": 32, "batch_size": 4}


def tiny_trial(**overrides: Any) -> dict[str, Any]:
    """A trial config (``run_trial``, ``TrialConfig.from_mapping``, a Tune param space):
    :data:`TINY_TRIAL` with ``overrides`` on top."""
    return {**TINY_TRIAL, **overrides}


def tiny_args(**flags: Any) -> list[str]:
    """``autoloss`` flags: :data:`TINY_FLAGS` with ``flags`` on top, ``train_size=16`` ->
    ``--train-size 16``."""
    return [part for key, value in {**TINY_FLAGS, **flags}.items()
            for part in (f"--{key.replace('_', '-')}", str(value))]
