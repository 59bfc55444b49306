"""The search's answer: one rule, chosen per search (``autoloss search --answer``), for every
searcher (issue 29.2). Pure (numpy; pandas frames of the store passed in; no ray, no torch).

Rules (:data:`ANSWER_RULES`):

* ``best-trial`` (the default): the theta of the best successful search trial (highest
  reward), whatever the searcher;
* ``playoff``: the top ``k`` distinct search trials, plus PPO2's last policy mean, each
  re-trained with ``seeds`` fresh training seeds (:func:`playoff_train_seed`: the same seeds
  for every candidate, none a search trial used); the candidate with the best mean reward
  answers. Its trials are store rows of kind :data:`PLAYOFF_KIND` (``step`` = the candidate's
  index, ``sample`` = the seed's index, ``loss`` = ``playoff:<label>``);
* ``policy-mean``: PPO2's policy mean ``mu`` of the step with the best mean reward (the
  paper's text); only for PPO2 (:func:`check_answer` refuses it for other searchers).

A search's manifest records its rule as ``answer``; a manifest written before the option
existed has none and answers as it did then (:func:`legacy_answer`: PPO2 the policy mean,
the other searchers the best trial).

Shapes: theta [D]; ``trials`` / ``policy`` are the store's DataFrames
(:meth:`ExperimentStore.trials` / ``.policy``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ANSWER_RULES", "PLAYOFF_KIND", "PLAYOFF_STREAM", "check_answer", "legacy_answer",
           "manifest_answer", "best_trial_theta", "policy_mean_theta", "playoff_candidates",
           "playoff_train_seed", "playoff_results", "playoff_theta", "answer_theta",
           "answer_origin", "is_ppo"]

ANSWER_RULES = ("best-trial", "playoff", "policy-mean")
PLAYOFF_KIND = "playoff"
# the SeedSequence stream of the playoff's training seeds ("play"): a search trial's seed is
# ``seed`` (common random numbers) or SeedSequence([seed, step, sample]) (--no-crn), steps
# never reach this value
PLAYOFF_STREAM = 0x706C6179

# searchers (a policy row's ``searcher``, or the --searcher value) without a policy mean:
# lower-cased, less a Searcher/Search suffix (``RandomSearcher`` -> ``random``)
_NO_POLICY = frozenset({"random", "tpe", "cmaes", "optuna"})


def is_ppo(searcher: object) -> bool:
    """Whether ``searcher`` (``"ppo"``, ``"PPO2Searcher"``, ...) has a policy mean."""
    name = str(searcher).lower()
    for suffix in ("searcher", "search"):
        name = name.removesuffix(suffix)
    return name not in _NO_POLICY


def legacy_answer(searcher: object) -> str:
    """The rule of a search whose manifest predates ``--answer``: PPO2 the policy mean,
    random/TPE/CMA-ES the best trial."""
    return "policy-mean" if is_ppo(searcher) else "best-trial"


def check_answer(answer: Any, searcher: str) -> str:
    """``answer`` if it is a rule ``searcher`` can answer with, else a one-line ValueError."""
    if answer not in ANSWER_RULES:
        raise ValueError(f"--answer must be one of {', '.join(ANSWER_RULES)}, got {answer!r}")
    if answer == "policy-mean" and not is_ppo(searcher):
        raise ValueError(f"--answer policy-mean is PPO2's policy mean; --searcher {searcher} "
                         "has no policy: use best-trial or playoff")
    return answer


def manifest_answer(manifest: dict[str, Any] | None, policy=None) -> str | None:
    """The rule a search's manifest records; for a manifest without one (written before the
    option) the legacy rule of its searcher (the manifest's ``searcher``, else the policy
    rows'); None without a manifest (then :func:`autoloss_ray.report.best_theta`'s
    per-searcher rule applies)."""
    if manifest is None:
        return None
    if manifest.get("answer") is not None:
        return str(manifest["answer"])
    searcher = manifest.get("searcher")
    if searcher is None and policy is not None and len(policy) and "searcher" in policy:
        names = policy["searcher"].dropna()
        searcher = names.iloc[0] if len(names) else None
    return None if searcher is None else legacy_answer(searcher)


def _ok_search(trials):
    from autoloss_ray.store.schema import ok_mask

    if trials is None or not len(trials):
        return trials
    rows = trials[trials["kind"] == "search"] if "kind" in trials.columns else trials
    import pandas as pd

    rows = rows[ok_mask(rows) & rows["theta"].notna()]
    if "stopped_early" in rows.columns:  # a stopped trial's reward is a rung's (multi-fidelity)
        rows = rows[~rows["stopped_early"].eq(True)]
    return rows.assign(reward=pd.to_numeric(rows["reward"], errors="coerce")).dropna(
        subset=["reward"])


def _best_trial_row(trials):
    """The successful search trial with the highest reward (a row; None: none)."""
    ok = _ok_search(trials)
    if ok is None or not len(ok):
        return None
    return ok.loc[ok["reward"].idxmax()]


def _best_policy_row(policy):
    """The policy step with the best mean reward (a row; None without one)."""
    if policy is None or not len(policy):
        return None
    import pandas as pd

    mr = pd.to_numeric(policy["mean_reward"], errors="coerce")
    return policy.loc[mr.idxmax()] if mr.notna().any() else None


def best_trial_theta(trials) -> np.ndarray | None:
    """theta [D] of the successful search trial with the highest reward (None: none)."""
    row = _best_trial_row(trials)
    return None if row is None else np.asarray(row["theta"], dtype=np.float64)


def policy_mean_theta(policy) -> np.ndarray | None:
    """mu [D] of the policy step with the best mean reward (None without policy rows)."""
    row = _best_policy_row(policy)
    return None if row is None else np.asarray(row["mu"], dtype=np.float64)


def playoff_candidates(trials, policy, *, k: int, atol: float = 1e-9
                       ) -> list[tuple[str, np.ndarray]]:
    """The playoff's candidates: ``(label, theta [D])`` of the top ``k`` successful search
    trials by reward (distinct thetas; label ``trial <id>``), then PPO2's last policy mean
    (``mu_next`` of the last step; label ``last mu``) unless it repeats one of them."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"--playoff-k must be an int >= 1, got {k!r}")
    out: list[tuple[str, np.ndarray]] = []

    def add(label: str, theta: np.ndarray) -> None:
        if not any(np.allclose(theta, t, rtol=0, atol=atol) for _, t in out):
            out.append((label, theta))

    ok = _ok_search(trials)
    if ok is not None and len(ok):
        for r in ok.sort_values("reward", ascending=False, kind="stable").itertuples():
            if len(out) >= k:
                break
            add(f"trial {r.trial_id}", np.asarray(r.theta, dtype=np.float64))
    if policy is not None and len(policy) and "searcher" in policy.columns:
        names = policy["searcher"].dropna()
        if len(names) and all(is_ppo(s) for s in names):
            last = policy.loc[policy["step"].astype(int).idxmax()]
            mu = last["mu_next"] if last.get("mu_next") is not None else last["mu"]
            add("last mu", np.asarray(mu, dtype=np.float64))
    return out


def playoff_train_seed(seed: int, j: int) -> int:
    """The training seed of the playoff's seed ``j`` (31 bits, from
    ``SeedSequence([seed, PLAYOFF_STREAM, j])``): the same for every candidate (a paired
    comparison) and never a search trial's."""
    state = np.random.SeedSequence([int(seed), PLAYOFF_STREAM, int(j)]).generate_state(1)
    return int(state[0] >> 1)


def playoff_results(trials):
    """One row per playoff candidate: ``candidate`` (its index), ``label``, ``theta``,
    ``n`` (its successful re-trainings), ``failed`` and ``mean_reward`` (over the successful
    ones; a failed re-training counts in ``failed`` only), best first. Empty without rows of
    kind :data:`PLAYOFF_KIND`."""
    import pandas as pd

    from autoloss_ray.store.schema import ok_mask

    cols = ["candidate", "label", "theta", "n", "failed", "mean_reward"]
    if trials is None or not len(trials) or "kind" not in trials.columns:
        return pd.DataFrame(columns=cols)
    rows = trials[(trials["kind"] == PLAYOFF_KIND) & trials["step"].notna()]
    if not len(rows):
        return pd.DataFrame(columns=cols)
    recs = []
    for c, g in rows.groupby("step", sort=True):
        ok = g[ok_mask(g)]
        rw = pd.to_numeric(ok["reward"], errors="coerce").dropna()
        label = g["loss"].dropna()
        recs.append({
            "candidate": int(c),
            "label": (str(label.iloc[0]).removeprefix("playoff:") if len(label) else str(c)),
            "theta": np.asarray(g["theta"].iloc[0], dtype=np.float64),
            "n": int(rw.size), "failed": int(len(g) - rw.size),
            "mean_reward": float(rw.mean()) if rw.size else float("nan"),
        })
    out = pd.DataFrame(recs, columns=cols)
    return out.sort_values(["mean_reward", "candidate"], ascending=[False, True],
                           na_position="last", kind="stable").reset_index(drop=True)


def _playoff_winner(trials):
    """The playoff candidate with the best mean reward (a :func:`playoff_results` row;
    None: no playoff row succeeded)."""
    res = playoff_results(trials)
    if not len(res) or not np.isfinite(res["mean_reward"].iloc[0]):
        return None
    return res.iloc[0]


def playoff_theta(trials) -> np.ndarray | None:
    """theta [D] of the playoff candidate with the best mean reward (None: no playoff row
    succeeded)."""
    win = _playoff_winner(trials)
    return None if win is None else np.asarray(win["theta"], dtype=np.float64)


def answer_theta(trials, policy, answer: str) -> np.ndarray | None:
    """The answer [D] of ``answer`` (a rule of :data:`ANSWER_RULES`) on a search's rows.

    Raises ValueError for an unknown rule, for ``policy-mean`` without PPO2 policy rows and
    for ``playoff`` before its re-trainings are in the store. None: no successful trial."""
    if answer == "best-trial":
        return best_trial_theta(trials)
    if answer == "policy-mean":
        names = [] if policy is None or not len(policy) else policy["searcher"].dropna()
        if not len(names) or not all(is_ppo(s) for s in names):
            raise ValueError("answer policy-mean needs PPO2's policy rows; this search has "
                             "none (searcher: "
                             f"{', '.join(sorted(set(map(str, names)))) or 'unknown'})")
        return policy_mean_theta(policy)
    if answer == "playoff":
        theta = playoff_theta(trials)
        if theta is None and best_trial_theta(trials) is not None:
            raise ValueError("answer playoff: the playoff has no successful re-training in "
                             "the store yet; run `autoloss search --resume` of this "
                             "experiment to finish it")
        return theta
    raise ValueError(f"answer must be one of {', '.join(ANSWER_RULES)}, got {answer!r}")


def answer_origin(trials, policy, answer: str) -> dict[str, Any]:
    """Where the answer of ``answer`` comes from, for a loss file's ``meta``: ``best-trial``
    ``{trial_id, step, reward}`` of that trial; ``policy-mean`` ``{step, mean_reward}`` of
    the step whose mu it is; ``playoff`` ``{candidate, seeds, mean_reward}`` of the winning
    candidate (its label, its successful re-trainings). Empty when there is no such row;
    ValueError for an unknown rule."""
    if answer == "best-trial":
        row = _best_trial_row(trials)
        if row is None:
            return {}
        out: dict[str, Any] = {"trial_id": str(row["trial_id"])} if "trial_id" in row else {}
        if "step" in row and row["step"] == row["step"]:  # not NaN
            out["step"] = int(row["step"])
        return {**out, "reward": float(row["reward"])}
    if answer == "policy-mean":
        row = _best_policy_row(policy)
        return {} if row is None else {"step": int(row["step"]),
                                       "mean_reward": float(row["mean_reward"])}
    if answer == "playoff":
        win = _playoff_winner(trials)
        return {} if win is None else {"candidate": str(win["label"]), "seeds": int(win["n"]),
                                       "mean_reward": float(win["mean_reward"])}
    raise ValueError(f"answer must be one of {', '.join(ANSWER_RULES)}, got {answer!r}")
