"""Deprecated: the Ray Tune adapter of the step protocol lives in :mod:`searchers.step_searcher`.

Importing this module warns (``DeprecationWarning``); it goes away in the next release. It only
re-exports.
"""

from __future__ import annotations

import warnings

from searchers.step_searcher import _STATE_VERSION, StepSearcher  # noqa: F401

__all__ = ["StepSearcher"]

warnings.warn("searchers.steps is deprecated and will be removed in the next release; import "
              "from searchers.step_searcher instead", DeprecationWarning, stacklevel=2)
