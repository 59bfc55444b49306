"""Resume of a search: its manifest (the resolved options the store keeps), which options may
change on resume, the options a resume takes from the manifest, the checks that refuse a
start over an existing search or a resume that would search differently (``autoloss search``
and ``search_loss``), and the finished trials the searcher replays.

No ray import: the searcher replays :func:`previous_results` before Ray starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from typing import TYPE_CHECKING, Any

from autoloss_app.options import LEGACY_MANIFEST, OptionsError, SearchOptions

if TYPE_CHECKING:  # the store (pyarrow) loads when a resume reads it, not with the CLI
    from autoloss_app.user_options import UserSearchOptions
    from autoloss_ray.store import ExperimentStore

__all__ = ["RUNTIME_OPTIONS", "NOT_FROM_MANIFEST", "search_manifest", "check_resume_options",
           "check_not_user_task", "options_from_manifest", "check_search_start",
           "check_same_task", "previous_results"]

logger = logging.getLogger(__name__)


# The two option lists of a resume, here together (a resume checks one, the CLI reads the
# other). RUNTIME_OPTIONS: the options that may change between a search and its resume: where
# and how fast it runs, what it writes at the end, file locations (a resume may run on another
# machine) and T (a resume may extend a search); every other option must be as the manifest
# says. NOT_FROM_MANIFEST: the options a resume never takes from the original search's
# manifest (a subset of RUNTIME_OPTIONS plus the identity of the run): where it is (tune_dir
# defaults to one beside the store), what this invocation writes at the end, how it talks.
RUNTIME_OPTIONS = frozenset({
    "gpus_per_trial", "cpus_per_trial", "max_concurrent", "store", "tune_dir", "address",
    "resume", "export", "report_dir", "verbose", "data_root", "backbone_weights", "steps",
    "recipe",
    # the answer rule: what happens after the search's trials, not what they draw
    "answer", "playoff_k", "playoff_seeds",
})
NOT_FROM_MANIFEST = frozenset({"store", "experiment", "resume", "export", "report_dir",
                               "verbose", "address", "tune_dir"})


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


def search_manifest(opts: SearchOptions) -> dict[str, Any]:
    """The resolved options of a search as plain JSON values (what the store keeps)."""
    return _jsonable(dataclasses.asdict(opts))


def check_not_user_task(manifest: dict[str, Any] | None, experiment: str) -> None:
    """Refuse to resume, as an ``autoloss search``, a search of the user's own Python function
    (``autoloss_app.search_loss``; its manifest names the function as ``task``)."""
    if manifest is not None and manifest.get("task") is not None:
        raise OptionsError(
            f"experiment {experiment!r} is a search of the Python function "
            f"{manifest['task']}; resume it with search_loss(..., resume=True)")


def check_resume_options(opts: SearchOptions, manifest: dict[str, Any]) -> None:
    """Raise :class:`OptionsError` when ``opts`` would search differently from ``manifest``.

    Only the runtime options (resources, addresses, output paths, T) may change on resume.
    """
    now = search_manifest(opts)
    manifest = {**LEGACY_MANIFEST, **manifest}

    def name(k: str) -> str:
        return k if k == "extra_config" else f"--{k.replace('_', '-')}"

    diffs = [
        f"{name(k)} was {manifest[k]!r}, now {now[k]!r}"
        for k in sorted(now)
        if k not in RUNTIME_OPTIONS and k in manifest and manifest[k] != now[k]
    ]
    if diffs:
        raise OptionsError(
            f"--resume of experiment {opts.experiment!r} must search as the original run did; "
            + "; ".join(diffs)
        )


def options_from_manifest(opts: SearchOptions, manifest: dict[str, Any],
                          explicit: set[str]) -> SearchOptions:
    """``opts`` of ``autoloss search --resume`` with every option the command line does not
    give (not in ``explicit``) taken from the search's ``manifest``, but the options of
    :data:`NOT_FROM_MANIFEST`; a manifest of an older version answers for the options it lacks
    as :data:`autoloss_app.options.LEGACY_MANIFEST` says. Refuses a ``search_loss`` search's
    manifest (:func:`check_not_user_task`)."""
    check_not_user_task(manifest, opts.experiment)
    fields = {f.name for f in dataclasses.fields(SearchOptions)}
    manifest = {**LEGACY_MANIFEST, **manifest}
    taken = {k: v for k, v in manifest.items()
             if k in fields and k not in NOT_FROM_MANIFEST and k not in explicit}
    return dataclasses.replace(opts, **taken)


def check_search_start(opts: SearchOptions, manifest: dict[str, Any] | None, previous) -> None:
    """The checks of ``autoloss search`` before Ray starts or anything is written, given the
    experiment's ``manifest`` (None: none) and its finished search trials ``previous``
    (:func:`previous_results`): without ``--resume`` the experiment has no trials; with it,
    there is a search to resume, not a ``search_loss`` one, and ``opts`` search as it did
    (:func:`check_resume_options`; a store without a manifest is resumed with a warning)."""
    if not opts.resume and len(previous):
        raise OptionsError(
            f"experiment {opts.experiment!r} already has trials in {opts.store}; pass --resume "
            "to continue it or choose another --experiment"
        )
    if opts.resume:
        if manifest is None and not len(previous):
            raise OptionsError(
                f"--resume: experiment {opts.experiment!r} has no search in the store "
                f"{opts.store} to resume; run without --resume to start it"
            )
        check_not_user_task(manifest, opts.experiment)
        if manifest is not None:
            check_resume_options(opts, manifest)
        else:
            logger.warning("experiment %s has no search manifest (a store of an older "
                           "version): only options that change the draws can be checked; "
                           "this run's options are recorded as the search's",
                           opts.experiment)


def check_same_task(opts: UserSearchOptions, manifest: dict[str, Any] | None,
                    previous) -> None:
    """``search_loss``: refuse to resume (or add to) an experiment that is not this task's
    search, or to resume it with options that would search differently."""
    if manifest is None and len(previous):
        raw = previous["config_json"].dropna()
        manifest = {"task": json.loads(raw.iloc[0]).get("task") if len(raw) else None}
    if manifest is None:
        return
    if manifest.get("task") is None:
        raise OptionsError(f"experiment {opts.experiment!r} in {opts.store} is an `autoloss "
                           "search` of a built-in task; search_loss resumes only its own "
                           "searches: choose another experiment")
    diffs = [f"{k} was {manifest[k]!r}, now {v!r}"
             for k, v in sorted(search_manifest(opts).items())
             if k not in RUNTIME_OPTIONS and k in manifest and manifest[k] != v]
    if diffs:
        raise OptionsError(f"resume of experiment {opts.experiment!r} must search as the "
                           "original run did; " + "; ".join(diffs))


def _flag(value) -> bool:
    """A store's nullable bool column value -> bool (null: False)."""
    return bool(value) if value is not None and value == value else False


def previous_results(store: ExperimentStore, experiment: str, *, trials=None):
    """The finished search trials of ``experiment`` in the store, one per (step, sample).

    Returns ``(rows, results)``: the store rows (a DataFrame) and the mappings
    :meth:`searchers.PPO2Searcher.replay` takes. Should the store hold one sample twice
    (a run of an older version resumed through Tune's own checkpoint, whose restored
    searcher handed a sample out again and was told the new result), the last finished row
    counts. ``trials``: the experiment's rows when the caller has just read them (else they
    are read here).
    """
    from autoloss_ray.store import trial_succeeded

    rows = store.trials(experiment) if trials is None else trials
    if len(rows):
        rows = rows[(rows["kind"] == "search") & rows["step"].notna() & rows["sample"].notna()]
        rows = rows.sort_values("finished_at", kind="stable")
        dups = rows.duplicated(["step", "sample"], keep="last")
        if dups.any():
            logger.warning("experiment %s: %d repeated trial(s) in the store; the last "
                           "finished one of each sample counts", experiment, int(dups.sum()))
            rows = rows[~dups]
    results = []
    for r in rows.itertuples(index=False):
        ok = trial_succeeded(r.status, r.reward)
        theta = None if r.theta is None else [float(v) for v in r.theta]
        results.append({
            "step": int(r.step), "sample": int(r.sample), "config": {"theta": theta},
            "value": float(r.reward) if ok else math.nan, "trial_id": r.trial_id,
            "stopped_early": _flag(getattr(r, "stopped_early", False)),
        })
    return rows, results
