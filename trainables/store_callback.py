"""Ray Tune callback that writes every finished or errored trial into the Parquet store.

It runs in the Tune driver, so worker nodes need no shared file system: the driver writes one
Parquet file per trial (atomically) under ``<store>/trials/experiment=<name>/``.

    from trainables.store_callback import StoreCallback
    tune.RunConfig(callbacks=[StoreCallback(store_root, experiment, metric_spec)])

Translation only: a Ray ``Trial`` (its id, config, last result, error file, whether a
scheduler stopped it) -> :func:`autoloss_ray.store.trial_row` (which says which config and
result keys become which columns) -> :meth:`ExperimentStore.write_trial`. An errored trial
gets ``status="failed"`` and the text of its last failure.
"""

from __future__ import annotations

import time
from typing import Any

from ray import tune

from autoloss_ray.store import ExperimentStore, check_name, trial_row

__all__ = ["StoreCallback", "trial_row", "unsaved_root"]

_MAX_ERROR_CHARS = 8000


def _error_text(trial: Any) -> str:
    """The error recorded for ``trial`` (its last failure), or a placeholder."""
    text = None
    try:
        path = getattr(trial, "error_file", None)
        if path:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
    except OSError:
        text = None
    if not text:
        try:
            text = trial.get_error()
        except Exception:  # noqa: BLE001 - storage may be gone; the row matters more
            text = None
    if not text:
        text = str(getattr(trial, "error_msg", "") or "trial errored (no error text recorded)")
    # keep the last failure only (the error file appends one block per failure)
    marker = text.rfind("Failure # ")
    if marker > 0:
        text = text[marker:]
    return text.strip()[-_MAX_ERROR_CHARS:]


class StoreCallback(tune.Callback):
    """Write a store row for every trial that completes or errors (runs in the driver).

    Args:
        store_root: store path or URI (an :class:`ExperimentStore` root).
        experiment: experiment name (the partition the rows go to).
        metric_spec: the searched metric (e.g. ``"miou"``), used when a config has no
            ``metric`` key and to compute ``reward`` when a result lacks it.
        kind: ``"search"`` (default) or ``"retrain"`` / ``"evaluate"`` for those runs.
        retries: attempts per write before the error is raised (transient I/O on URIs).
    """

    def __init__(
        self,
        store_root: str,
        experiment: str,
        metric_spec: str | None = None,
        *,
        kind: str = "search",
        retries: int = 3,
    ) -> None:
        self.store_root = str(store_root)
        self.experiment = check_name(experiment, "experiment")
        self.metric_spec = metric_spec
        self.kind = kind
        self.retries = max(1, int(retries))
        self._store: ExperimentStore | None = None
        self._stopped: set[str] = set()  # trial ids a scheduler/stopper ended
        self.written: int = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_store"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_stopped", set())  # pickled before the early-stop flag

    @property
    def store(self) -> ExperimentStore:
        if self._store is None:
            self._store = ExperimentStore(self.store_root)
        return self._store

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        # Tune shows callbacks the result on which a scheduler or stopper decides STOP with
        # done=True; a trial's natural end arrives without a new result here.
        if result.get("done"):
            self._stopped.add(str(trial.trial_id))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial, failed=True)

    def _write(self, trial: Any, *, failed: bool) -> None:
        row = trial_row(
            self.experiment,
            str(trial.trial_id),
            getattr(trial, "config", None),
            getattr(trial, "last_result", None),
            metric_spec=self.metric_spec,
            failed=failed,
            error=_error_text(trial) if failed else None,
            kind=self.kind,
            stopped_early=str(trial.trial_id) in self._stopped,
        )
        self._stopped.discard(str(trial.trial_id))
        # trial_row nulls (and names in extra_json) a value its column refuses, so the row
        # always writes: a trial is never lost to one odd value
        self._write_with_retries(row)
        self.written += 1

    def _write_with_retries(self, row: dict[str, Any]) -> None:
        for attempt in range(self.retries):
            try:
                self.store.write_trial(row)
                return
            except OSError as exc:
                if attempt + 1 == self.retries:
                    self._keep_unsaved(row, exc)
                    return
                time.sleep(0.5 * 2**attempt)

    def _keep_unsaved(self, row: dict[str, Any], exc: OSError) -> None:
        """The store refused a finished trial's row: keep it as a store of its own (one
        Parquet file, same layout) under :func:`unsaved_root` and say where, so that nothing
        computed is lost; copying its ``trials/`` into the store recovers it."""
        import sys

        root = unsaved_root()
        path = ExperimentStore(root).write_trial(row)
        print(f"[autoloss] warning: the store {self.store_root} refused trial "
              f"{row.get('trial_id')} ({' '.join(str(exc).split())[:200]}); its row is kept "
              f"in {path} (copy {root}/trials/ into the store to recover it)",
              file=sys.stderr, flush=True)


def unsaved_root() -> str:
    """Where rows the store refused are kept: ``$AUTOLOSS_UNSAVED_DIR``, else
    ``autoloss-unsaved`` in the driver's working folder."""
    import os

    return os.path.abspath(os.environ.get("AUTOLOSS_UNSAVED_DIR") or "autoloss-unsaved")
