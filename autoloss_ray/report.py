"""Tables and plots from the experiment store (no ray; matplotlib's Agg canvas, no pyplot).

Pure functions over pandas DataFrames (the store's :data:`~autoloss_ray.store.TRIAL_SCHEMA` /
:data:`~autoloss_ray.store.POLICY_SCHEMA` columns); the plotting ones write a PNG and return its
path, the table ones return Markdown text. :func:`write_search_report` puts them together for
one experiment (what ``autoloss report`` writes).

- :func:`results_table`: the paper's Table 2 shape: one row per loss, the six metrics in %,
  the best value of each column in bold.
- :func:`step_stats` / :func:`plot_search_curves`: mean and max reward per search step, one
  line pair per experiment (PPO2 next to random search, as the paper's Fig. 3).
- :func:`plot_curves`: the searched curves h(x) of a theta next to the identity.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autoloss_ray.plots import curve_groups, plot_curves, plot_search_curves
from autoloss_ray.store.schema import ok_mask
from autoloss_ray.vocabulary import METRICS

__all__ = [
    "METRIC_TITLES",
    "format_table",
    "results_table",
    "retrain_table",
    "step_stats",
    "plot_search_curves",
    "curve_groups",
    "plot_curves",
    "best_theta",
    "unrecorded_answer",
    "answers_with_best_trial",
    "BEST_TRIAL_SEARCHERS",
    "write_search_report",
]

METRIC_COLUMNS = METRICS  # the six metric names (one definition: autoloss_ray.vocabulary)
METRIC_TITLES = {"miou": "mIoU", "fwiou": "FWIoU", "biou": "BIoU", "bf1": "BF1",
                 "macc": "mAcc", "gacc": "gAcc"}


# ----------------------------------------------------------------------------- tables
def _fmt(v: float, decimals: int) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{decimals}f}"


def format_table(
    rows: pd.DataFrame,
    *,
    label_title: str = "loss",
    columns: Sequence[str] = METRIC_COLUMNS,
    titles: Mapping[str, str] | None = None,
    decimals: int = 2,
    bold_best: bool = True,
    higher_is_better: bool = True,
    count_columns: Sequence[str] = (),
) -> str:
    """Markdown table of ``rows`` (index = row labels, ``columns`` = numbers already scaled).

    The best value of each column (at the printed precision; ties all bold) is in **bold**;
    ``count_columns`` are printed as plain integers and never bold.
    """
    titles = {**METRIC_TITLES, **(titles or {})}
    header = f"| {label_title} | " + " | ".join(titles.get(c, c) for c in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    best: dict[str, float] = {}
    for c in columns:
        vals = pd.to_numeric(rows[c], errors="coerce").round(decimals).dropna()
        if bold_best and len(vals) and c not in count_columns:
            best[c] = float(vals.max() if higher_is_better else vals.min())
    for label, row in rows.iterrows():
        cells = []
        for c in columns:
            v = row[c]
            v = float("nan") if v is None or pd.isna(v) else float(v)
            text = _fmt(v, decimals) if c not in count_columns else str(int(v))
            if c in best and not math.isnan(v) and round(v, decimals) == best[c]:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_table(
    df: pd.DataFrame,
    *,
    label: str = "loss",
    metrics: Sequence[str] = METRIC_COLUMNS,
    percent: bool = True,
    decimals: int = 2,
    order: Sequence[str] | None = None,
    only_ok: bool = True,
) -> str:
    """The paper's Table 2 from result rows: one row per value of ``df[label]``.

    Several rows with the same label (seeds, repeats) are averaged and a ``runs`` column
    shows how many. Metrics are shown in % (``percent``) with ``decimals`` digits; the best
    per column is bold. Rows whose ``status`` is not "ok" are left out (``only_ok``).
    ``order`` fixes the row order (default: order of first appearance).
    """
    if label not in df.columns:
        raise ValueError(f"results_table: no column {label!r} in the data (columns: "
                         f"{list(df.columns)})")
    missing = [m for m in metrics if m not in df.columns]
    if missing:
        raise ValueError(f"results_table: metric column(s) {missing} missing from the data")
    data = df
    if only_ok and "status" in data.columns:
        data = data[ok_mask(data)]
    data = data[data[label].notna()]
    if data.empty:
        raise ValueError("results_table: no rows to tabulate (after dropping failed runs)")
    labels = list(dict.fromkeys(data[label].astype(str)))
    if order is not None:
        unknown = [o for o in order if o not in labels]
        if unknown:
            raise ValueError(f"results_table: order names {unknown} not in the data ({labels})")
        labels = list(order) + [x for x in labels if x not in order]
    keyed = data.assign(_label=data[label].astype(str))
    grouped = keyed.groupby("_label", sort=False)
    means = grouped[list(metrics)].mean(numeric_only=False).astype(float)
    counts = grouped.size()
    rows = means.loc[labels] * (100.0 if percent else 1.0)
    columns = list(metrics)
    titles = {}
    if (counts > 1).any():
        rows["runs"] = counts.loc[labels].astype(float)
        columns.append("runs")
        titles["runs"] = "runs"
    return format_table(rows, label_title=label, columns=columns, titles=titles,
                        decimals=decimals, count_columns=("runs",))


def retrain_table(trials: pd.DataFrame, *, percent: bool = True, decimals: int = 2) -> str:
    """Table 2 from the store's retrain rows (``kind == "retrain"``), one row per ``loss``."""
    rows = trials[trials["kind"] == "retrain"] if "kind" in trials.columns else trials
    if rows.empty:
        raise ValueError("retrain_table: the data has no retrain rows (kind == 'retrain')")
    return results_table(rows, label="loss", percent=percent, decimals=decimals)


# ----------------------------------------------------------------------------- search curves
def step_stats(policy: pd.DataFrame | None = None,
               trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per search step: ``n`` trials, ``mean_reward`` and ``max_reward`` (failed/NaN rewards
    left out). Uses the trial rows when given (one row per trial), else the policy rows
    (their ``rewards`` lists). Returns columns step, n, mean_reward, max_reward."""
    cols = ["step", "n", "mean_reward", "max_reward"]
    if trials is not None and len(trials) and "step" in trials.columns:
        t = trials[trials["step"].notna()].copy()
        t["reward"] = pd.to_numeric(t["reward"], errors="coerce").astype(float)
        if "status" in t.columns:
            t.loc[~ok_mask(t), "reward"] = np.nan
        t["step"] = t["step"].astype(int)
        g = t.groupby("step")["reward"]
        out = pd.DataFrame({"n": g.size(), "mean_reward": g.mean(), "max_reward": g.max()})
        return out.reset_index()[cols]
    if policy is not None and len(policy):
        recs = []
        for _, r in policy.sort_values("step").iterrows():
            rw = np.asarray(r["rewards"], dtype=float)
            fin = rw[np.isfinite(rw)]
            recs.append({"step": int(r["step"]), "n": int(rw.size),
                         "mean_reward": float(fin.mean()) if fin.size else float("nan"),
                         "max_reward": float(fin.max()) if fin.size else float("nan")})
        return pd.DataFrame(recs, columns=cols)
    return pd.DataFrame(columns=cols)


# The searchers whose answer is their best trial (they have no policy mean to trust), by the
# name the policy rows record: the ``--searcher`` value or the searcher's class name
# (``RandomSearcher``, ``TPESearcher``, ``CMAESSearcher``). Every other searcher (PPO2) answers
# with the policy mean of its best step.
BEST_TRIAL_SEARCHERS = frozenset({"random", "tpe", "cmaes", "optuna"})


def answers_with_best_trial(searcher: object) -> bool:
    """Whether ``searcher`` (a policy row's ``searcher`` name) answers with its best trial:
    its lower-cased name, less a ``Searcher``/``Search`` suffix, is in
    :data:`BEST_TRIAL_SEARCHERS`."""
    name = str(searcher).lower()
    for suffix in ("searcher", "search"):
        name = name.removesuffix(suffix)
    return name in BEST_TRIAL_SEARCHERS


def unrecorded_answer(policy: pd.DataFrame | None) -> str:
    """The rule :func:`best_theta` applies to a store without a manifest (``answer`` None):
    ``"policy-mean"`` when it has policy rows with a mean reward whose searcher is not one
    that answers with its best trial (PPO2), else ``"best-trial"``."""
    if policy is not None and len(policy):
        searcher = policy["searcher"].dropna() if "searcher" in policy.columns else []
        best_trial = len(searcher) and all(answers_with_best_trial(s) for s in searcher)
        if not best_trial and pd.to_numeric(policy["mean_reward"], errors="coerce").notna().any():
            return "policy-mean"
    return "best-trial"


def best_theta(trials: pd.DataFrame, policy: pd.DataFrame | None = None, *,
               answer: str | None = None) -> np.ndarray | None:
    """The search's answer [D], the one rule of ``autoloss report``, ``autoloss export`` and
    a search's summary.

    ``answer``: the search's rule (:data:`autoloss_ray.answer.ANSWER_RULES`, what its
    manifest records: :func:`autoloss_ray.answer.manifest_answer`; see
    :func:`autoloss_ray.answer.answer_theta`). None (a store without a manifest): the
    per-searcher rule of searches before ``--answer``: the policy mean ``mu`` of the step
    with the best mean reward for PPO2; for the searchers that answer with their best trial
    (:func:`answers_with_best_trial`: random, TPE, CMA-ES) or without policy rows, the best
    trial's theta."""
    if answer is not None:
        from autoloss_ray.answer import answer_theta

        return answer_theta(trials, policy, answer)
    if unrecorded_answer(policy) == "policy-mean":
        from autoloss_ray.answer import policy_mean_theta

        return policy_mean_theta(policy)
    if trials is not None and len(trials):
        if "kind" in trials.columns and (trials["kind"] == "search").any():
            trials = trials[trials["kind"] == "search"]
        ok = trials[ok_mask(trials) & trials["theta"].notna()]
        if "stopped_early" in ok.columns:  # a stopped trial's reward is a rung's
            ok = ok[~ok["stopped_early"].eq(True)]
        rw = pd.to_numeric(ok["reward"], errors="coerce")
        if rw.notna().any():
            return np.asarray(ok.loc[rw.idxmax(), "theta"], dtype=np.float64)
    return None


# ----------------------------------------------------------------------------- full report
def _first(series: pd.Series) -> Any:
    s = series.dropna()
    return s.iloc[0] if len(s) else None


def write_search_report(
    store: Any,
    experiment: str,
    out_dir: str | os.PathLike[str],
    *,
    compare: Sequence[str] = (),
    get_parameterization: Callable[[str], Any] | None = None,
    trials: pd.DataFrame | None = None,
    policy: pd.DataFrame | None = None,
) -> dict[str, str]:
    """Write ``report.md``, ``search_curve.png`` and ``curves.png`` for ``experiment``.

    ``store``: an :class:`~autoloss_ray.store.ExperimentStore` (or its root). ``compare``:
    other experiments (e.g. the random-search run) drawn in the same search-curve plot. Retrain
    rows of the experiment (if any) become a Table-2-shaped table. ``trials`` / ``policy``:
    the experiment's store rows when the caller has just read them (else they are read).
    Returns name -> path. Raises ValueError when the experiment is not in the store.
    """
    from autoloss_ray.store import ExperimentStore

    if not isinstance(store, ExperimentStore):
        store = ExperimentStore(store)
    known = store.experiments()
    for name in [experiment, *compare]:
        if name not in known:
            raise ValueError(f"experiment {name!r} is not in the store {store.root} "
                             f"(it has: {', '.join(known) or 'none'})")
    out = Path(out_dir)
    created = _new_dirs(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _write_search_report(store, experiment, out, compare=compare,
                                    get_parameterization=get_parameterization,
                                    trials=trials, policy=policy)
    except BaseException:
        for d in created:  # a failed report leaves no empty folder behind
            shutil.rmtree(d, ignore_errors=True)
        raise


def _new_dirs(out: Path) -> list[Path]:
    """The folders ``out.mkdir(parents=True)`` would create, outermost first."""
    new: list[Path] = []
    probe = out.absolute()
    while not probe.exists():
        new.insert(0, probe)
        probe = probe.parent
    return new[:1]


def _write_search_report(store, experiment: str, out: Path, *, compare: Sequence[str],
                         get_parameterization: Callable[[str], Any] | None,
                         trials: pd.DataFrame | None, policy: pd.DataFrame | None
                         ) -> dict[str, str]:
    trials = store.trials(experiment) if trials is None else trials
    policy = store.policy(experiment) if policy is None else policy
    paths: dict[str, str] = {}
    search = trials[trials["kind"] == "search"]
    metric = _first(search["metric"]) if len(search) else _first(trials["metric"])
    param = _first(search["parameterization"]) if len(search) else None

    md = [f"# Report: experiment `{experiment}`", ""]
    if len(search) or len(policy):
        counts = search["status"].value_counts().to_dict()
        md += [
            f"- metric: `{metric}`, parameterization: `{param}`",
            f"- trials: {len(search)} (ok {counts.get('ok', 0)}, failed "
            f"{counts.get('failed', 0)}, nan {counts.get('nan', 0)}); policy steps: "
            f"{len(policy)}",
        ]
        ok = search[ok_mask(search)]
        if len(ok):
            best = ok.loc[pd.to_numeric(ok["reward"]).idxmax()]
            md.append(f"- best trial: `{best['trial_id']}` (step {best['step']}, reward "
                      f"{float(best['reward']):.4f})")
        if len(policy):
            b = policy.loc[pd.to_numeric(policy["mean_reward"]).idxmax()]
            md.append(f"- best step by mean reward: {int(b['step'])} "
                      f"({float(b['mean_reward']):.4f})")
        md.append("")
        stats = step_stats(policy, search if len(search) else None)
        if len(stats):
            md += ["## Reward per step", "", "| step | trials | mean reward | max reward |",
                   "|---|---|---|---|"]
            md += [f"| {int(r.step)} | {int(r.n)} | {_fmt(r.mean_reward, 4)} | "
                   f"{_fmt(r.max_reward, 4)} |" for r in stats.itertuples()]
            md.append("")
            runs = {experiment: stats}
            for other in compare:
                runs[other] = step_stats(store.policy(other),
                                         store.trials(other).query("kind == 'search'"))
            paths["search_curve"] = plot_search_curves(
                runs, out / "search_curve.png",
                title=f"search reward per step ({metric})")
            md += ["![reward per step](search_curve.png)", ""]
        if len(ok):
            top = ok.assign(trial=ok["trial_id"]).sort_values("reward", ascending=False).head(5)
            md += ["## Best trials (metrics in %)", "",
                   results_table(top, label="trial", only_ok=True), ""]
        from autoloss_ray.answer import manifest_answer, playoff_results

        answer = manifest_answer(store.read_search(experiment), policy)
        playoff = playoff_results(trials)
        if len(playoff):
            md += ["## Playoff (the top trials re-trained with fresh seeds)", "",
                   "| candidate | re-trainings | failed | mean reward |", "|---|---|---|---|"]
            md += [f"| {r.label} | {r.n} | {r.failed} | {_fmt(r.mean_reward, 4)} |"
                   for r in playoff.itertuples()]
            md.append("")
        try:
            theta = best_theta(trials, policy, answer=answer)
        except ValueError as e:
            theta = None
            md += [f"(no answer yet: {e})", ""]
        if theta is not None and metric and param:
            try:
                paths["curves"] = plot_curves(metric, param, theta, out / "curves.png",
                                              title=f"searched curves ({metric}, {param})",
                                              get_parameterization=get_parameterization)
                md += ["## Searched curves", "",
                       f"answer: {answer or 'per searcher (no manifest)'}; theta: `"
                       + ", ".join(f"{v:.4f}" for v in theta) + "`", "",
                       "![searched curves h(x) vs identity](curves.png)", ""]
            except (ImportError, ValueError) as e:
                md += [f"(curves not plotted: {e})", ""]
    retrain = trials[trials["kind"] == "retrain"]
    if len(retrain) and ok_mask(retrain).any():
        md += ["## Retrained networks (metrics in %, best per column in bold)", "",
               retrain_table(retrain), ""]
    paths["markdown"] = str(out / "report.md")
    Path(paths["markdown"]).write_text("\n".join(md))
    return paths
