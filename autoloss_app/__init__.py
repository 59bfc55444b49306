"""The autoloss application: the ``autoloss`` command line, the search job and its resume,
the retrain and evaluate jobs, and :func:`search_loss` (a search of the user's own training
function: ``from autoloss_app import search_loss, report``).

It wires the library (``autoloss_ray``), the Ray Tune searchers (``searchers``) and the
trainables (``trainables``) together; it may import all of them, and nothing imports it.
"""

from __future__ import annotations

from autoloss_ray._lazy import lazy_getattr

_EXPORTS = {
    "search_loss": "autoloss_app.user_search",
    "SearchLossResult": "autoloss_app.user_search",
    "TrialsFailedError": "autoloss_app.user_search",
    "report": "trainables.user_task",
    "TrialContext": "trainables.user_task",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
