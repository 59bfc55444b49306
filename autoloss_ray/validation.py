"""Input rules shared by the library, the trainables and the application (no ray import).

* :class:`OptionsError`: bad user input, detected before any compute.
* :func:`check_resources`: the resource rule of every trial.
* The experiment-name rule: letters, digits and ``_ . -``, not starting with ``.``, ``_`` or
  ``-``. Two lengths, for two reasons: a *new* search name is at most
  :data:`SEARCH_NAME_MAX` (128) characters, so that derived names (a retrain experiment
  ``<name>-retrain-...``, Tune's trial directories) stay below the store's limit;
  the store accepts any path-safe name of at most :data:`STORE_NAME_MAX` (200) characters
  (what file systems and object stores allow in one path component, with room for
  ``.parquet``/``.tmp`` suffixes).
"""

from __future__ import annotations

import math
import re

__all__ = ["OptionsError", "check_resources", "missing_resources", "SEARCH_NAME_MAX",
           "STORE_NAME_MAX", "SEARCH_NAME_RE", "STORE_NAME_RE"]

SEARCH_NAME_MAX = 128
STORE_NAME_MAX = 200


def _name_re(max_len: int) -> re.Pattern[str]:
    # \Z, not $: "$" also matches before a trailing newline ("name\n" made a folder so named)
    return re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{max_len - 1}}}\Z")


SEARCH_NAME_RE = _name_re(SEARCH_NAME_MAX)
STORE_NAME_RE = _name_re(STORE_NAME_MAX)


class OptionsError(ValueError):
    """Bad user input, detected before any compute."""


def check_resources(gpus_per_trial: float, cpus_per_trial: float, *, flags: bool = True
                    ) -> None:
    """The resource rule of every trial (``trainables.with_gpu_resources`` applies it too):
    finite, GPUs >= 0 (whole above 1), CPUs > 0. ``flags``: name the command-line options
    (``--gpus-per-trial``) or the keyword arguments (``gpus_per_trial``) in the message."""
    g, c = (("--gpus-per-trial", "--cpus-per-trial") if flags
            else ("gpus_per_trial", "cpus_per_trial"))
    for name, value in ((g, gpus_per_trial), (c, cpus_per_trial)):
        if isinstance(value, float) and not math.isfinite(value):
            raise OptionsError(f"{name} must be a finite number, got {value}")
    if gpus_per_trial < 0 or cpus_per_trial <= 0:
        raise OptionsError(
            f"{g} must be >= 0 and {c} > 0, got {gpus_per_trial} and {cpus_per_trial}"
        )
    if gpus_per_trial > 1 and gpus_per_trial != int(gpus_per_trial):
        raise OptionsError(f"{g} above 1 must be a whole number, got {gpus_per_trial}")


def missing_resources(need: dict[str, float], have: dict[str, float]) -> dict[str, tuple]:
    """The resources of ``need`` (what must be placed at once, e.g. ``{"CPU": 3.0}``) that
    ``have`` (a cluster's totals, as ``ray.cluster_resources()``) cannot give: name ->
    (needed, available). Empty when everything fits."""
    return {k: (float(v), float(have.get(k, 0.0))) for k, v in need.items()
            if float(v) > float(have.get(k, 0.0)) + 1e-9}
