"""The search's answer rule (issue 29.2): best-trial (default), playoff, policy-mean, for every
searcher, recorded in the manifest and followed by export, report and the summary; manifests
from before the option answer as they did. Stores written by hand (real Parquet), plus one
tiny real playoff run on Ray (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autoloss_app.cli import build_parser, explicit_search_options, search_options_from_args
from autoloss_app.cli import main as cli_main
from autoloss_app.options import OptionsError, SearchOptions
from autoloss_app.playoff import playoff_configs
from autoloss_app.search_job import summarize
from autoloss_ray.answer import (
    ANSWER_RULES,
    answer_theta,
    legacy_answer,
    manifest_answer,
    playoff_candidates,
    playoff_results,
    playoff_train_seed,
)
from autoloss_ray.export import export_experiment
from autoloss_ray.losses import search_space
from autoloss_ray.report import write_search_report
from autoloss_ray.store import ExperimentStore, trial_row
from autoloss_ray.trial.config import trial_train_seed
from tests.tiny import tiny_args

D = int(search_space("miou", "bezier").init.size)
# the rewards of the hand-written search: 3 steps x 3 samples (step 1 has the best mean,
# trial s2-1 the best single reward; s2-2 "diverged" with a higher reward-like value)
REWARDS = [[0.30, 0.32, 0.31], [0.50, 0.52, 0.51], [0.20, 0.60, 0.10]]


def _theta(step: int, sample: int) -> list[float]:
    return [round(0.05 + 0.1 * step + 0.03 * sample + 0.001 * d, 6) for d in range(D)]


def _mu(step: int) -> list[float]:
    return [0.5 + 0.01 * step] * D


def write_search(root: Path, *, experiment: str = "s", searcher: str = "ppo",
                 manifest: dict | None = None) -> ExperimentStore:
    """A finished search by hand: trial rows (one 'nan' status), policy rows, a retrain row
    with a higher reward than any search trial, and the manifest."""
    store = ExperimentStore(root)
    for step, rewards in enumerate(REWARDS):
        for sample, r in enumerate(rewards):
            config = {"metric": "miou", "parameterization": "bezier", "num_classes": 5,
                      "seed": 0, "theta": _theta(step, sample), "search_step": step,
                      "search_sample": sample}
            store.write_trial(trial_row(experiment, f"s{step}-{sample}", config,
                                        {"reward": r, "miou": r}))
        store.write_policy({"experiment": experiment, "step": step, "mu": _mu(step),
                            "mu_next": _mu(step + 1), "rewards": rewards, "sigma": 0.2,
                            "searcher": "PPO2Searcher" if searcher == "ppo" else searcher})
    bad = {"metric": "miou", "parameterization": "bezier", "num_classes": 5,
           "theta": [0.99] * D, "search_step": 3, "search_sample": 0}
    store.write_trial(trial_row(experiment, "diverged", bad, {"reward": 0.95,
                                                              "status": "nan"}))
    store.write_trial(trial_row(experiment, "retrained",
                                {"metric": "miou", "theta": [0.7] * D, "loss": "x"},
                                {"reward": 0.99, "kind": "retrain"}))
    if manifest is not None:
        store.write_search(experiment, {"searcher": searcher, "metric": "miou", **manifest})
    return store


def _exported(store: ExperimentStore, tmp_path: Path, experiment: str = "s") -> dict:
    path = export_experiment(store, experiment, tmp_path / f"{experiment}.json")
    return json.loads(Path(path).read_text())


# --------------------------------------------------------------------------- the rules
def test_best_trial_is_the_default_and_export_report_follow_it(tmp_path) -> None:
    assert SearchOptions().answer == "best-trial" and ANSWER_RULES[0] == "best-trial"
    assert build_parser().parse_args(["search"]).answer == "best-trial"
    store = write_search(tmp_path / "store", manifest={"answer": "best-trial"})
    out = _exported(store, tmp_path)
    # s2-1 (0.60): not the diverged trial (nan status), not the retrain row, not the best mu
    assert out["theta"] == pytest.approx(_theta(2, 1))
    assert out["meta"]["answer"] == "best-trial"
    # the meta names that trial, not the step with the best mean reward (step 1)
    assert {k: out["meta"].get(k) for k in ("trial_id", "step", "reward")} == {
        "trial_id": "s2-1", "step": 2, "reward": 0.60}
    assert "mean_reward" not in out["meta"]
    # the summary line names the same trial; its best reward is not the diverged trial's
    opts = SearchOptions(model="tiny", store=str(tmp_path / "store"), experiment="s")
    summary = summarize(opts.resolved(), store)
    assert summary["best_theta"] == pytest.approx(_theta(2, 1))
    assert summary["answer_origin"] == {"trial_id": "s2-1", "step": 2, "reward": 0.60}
    assert summary["best_trial_reward"] == 0.60  # not 0.95 (status nan) nor 0.99 (a retrain)
    assert (summary["best_step"], summary["best_mean_reward"]) == (1, pytest.approx(0.51))
    # options not resolved (answer None): the legacy rule of a PPO2 store, the policy mean
    legacy = summarize(SearchOptions(model="tiny", store=str(tmp_path / "store"),
                                     experiment="s", answer=None), store)
    assert legacy["answer_origin"] == {"step": 1, "mean_reward": pytest.approx(0.51)}
    assert legacy["best_theta"] == pytest.approx(_mu(1))
    md = Path(write_search_report(store, "s", tmp_path / "rep")["markdown"]).read_text()
    assert "answer: best-trial; theta: `" + ", ".join(f"{v:.4f}" for v in _theta(2, 1)) in md


def test_policy_mean_answers_the_best_steps_mu(tmp_path) -> None:
    store = write_search(tmp_path / "store", manifest={"answer": "policy-mean"})
    out = _exported(store, tmp_path)
    assert out["theta"] == pytest.approx(_mu(1))  # step 1: mean 0.51
    assert out["meta"]["step"] == 1 and out["meta"]["mean_reward"] == pytest.approx(0.51)
    assert "trial_id" not in out["meta"]
    for searcher in ("random", "tpe", "cmaes"):  # the library refuses it without PPO2 rows
        other = write_search(tmp_path / searcher, searcher=searcher)
        with pytest.raises(ValueError, match="needs PPO2's policy rows"):
            answer_theta(other.trials("s"), other.policy("s"), "policy-mean")


@pytest.mark.parametrize("searcher", ["random", "tpe", "cmaes"])
def test_policy_mean_is_refused_for_other_searchers_in_one_line(searcher, capsys,
                                                                 tmp_path) -> None:
    with pytest.raises(OptionsError, match=f"--searcher {searcher} has no policy") as e:
        SearchOptions(searcher=searcher, answer="policy-mean", model="tiny").resolved()
    assert "\n" not in str(e.value)
    code = cli_main(["search", "--searcher", searcher, "--answer", "policy-mean",
                     "--store", str(tmp_path / "st"), "--model", "tiny"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "policy-mean" in err
    assert not (tmp_path / "st").exists()  # refused before anything is written


def test_bad_answer_options_are_one_line_errors() -> None:
    cases = [(dict(answer="median"), "--answer must be one of"),
             (dict(answer="playoff", playoff_k=0), "--playoff-k must be an int >= 1"),
             (dict(answer="playoff", playoff_seeds=0), "--playoff-seeds must be an int >= 1"),
             (dict(searcher="random", startup="uniform"), "--startup: options of PPO2"),
             (dict(searcher="tpe", mirrored=True, advantages="rank"),
              "--advantages, --mirrored: options of PPO2"),
             (dict(startup="sobol"), "--startup must be one of")]
    for kw, match in cases:
        with pytest.raises(OptionsError, match=match) as e:
            SearchOptions(model="tiny", **kw).resolved()
        assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- legacy manifests
def test_manifests_before_the_option_answer_as_they_did(tmp_path) -> None:
    # PPO2: the policy mean; the other searchers: the best trial
    ppo = write_search(tmp_path / "ppo", manifest={})
    assert manifest_answer(ppo.read_search("s")) == "policy-mean"
    assert _exported(ppo, tmp_path)["theta"] == pytest.approx(_mu(1))
    for searcher in ("random", "tpe", "cmaes"):
        st = write_search(tmp_path / searcher, searcher=searcher, manifest={})
        assert legacy_answer(searcher) == "best-trial"
        out = _exported(st, tmp_path)
        assert out["theta"] == pytest.approx(_theta(2, 1))
        assert (out["meta"]["trial_id"], out["meta"]["step"]) == ("s2-1", 2)
    # a store without any manifest keeps the per-searcher rule as well
    bare = write_search(tmp_path / "bare")
    assert manifest_answer(bare.read_search("s")) is None
    out = _exported(bare, tmp_path)
    assert out["theta"] == pytest.approx(_mu(1))
    assert (out["meta"]["step"], out["meta"]["mean_reward"]) == (1, pytest.approx(0.51))
    # resolving old options: answer None is the searcher's old rule
    assert SearchOptions(answer=None, model="tiny").resolved().answer == "policy-mean"
    assert SearchOptions(answer=None, searcher="random",
                         model="tiny").resolved().answer == "best-trial"


def test_resume_of_a_legacy_manifest_keeps_its_rule_and_may_change_it(tmp_path) -> None:
    from autoloss_app.resume import check_resume_options, search_manifest

    store_dir = tmp_path / "store"
    old = search_manifest(SearchOptions(model="tiny", store=str(store_dir),
                                        experiment="s").resolved())
    del old["answer"], old["playoff_k"], old["playoff_seeds"]  # written before the option
    ExperimentStore(store_dir).write_search("s", old)

    def resumed(*extra: str) -> SearchOptions:
        argv = ["search", "--resume", "--store", str(store_dir), "--experiment", "s", *extra]
        args = build_parser().parse_args(argv)
        opts = search_options_from_args(args, explicit=explicit_search_options(argv[1:]))
        return opts.resolved()

    opts = resumed()
    assert opts.answer == "policy-mean"  # what the PPO2 search answered when it ran
    check_resume_options(opts, old)  # the rule is no reason to refuse a resume
    assert resumed("--answer", "playoff").answer == "playoff"  # a resume may change it


# --------------------------------------------------------------------------- playoff
def _write_playoff(store: ExperimentStore, cands, rewards, experiment: str = "s") -> None:
    """Playoff rows: rewards[c][j] (None: the re-training failed)."""
    for c, ((label, theta), rs) in enumerate(zip(cands, rewards)):
        for j, r in enumerate(rs):
            config = {"metric": "miou", "theta": list(theta), "search_step": c,
                      "search_sample": j, "train_seed": playoff_train_seed(0, j),
                      "loss_label": f"playoff:{label}"}
            result = ({"reward": r, "kind": "playoff"} if r is not None else
                      {"status": "failed", "error": "boom", "kind": "playoff"})
            store.write_trial(trial_row(experiment, f"p{c}-{j}", config, result,
                                        failed=r is None))


def test_playoff_candidates_are_the_top_k_trials_and_the_last_mu(tmp_path) -> None:
    store = write_search(tmp_path / "store", manifest={"answer": "playoff"})
    cands = playoff_candidates(store.trials("s"), store.policy("s"), k=2)
    assert [c[0] for c in cands] == ["trial s2-1", "trial s1-1", "last mu"]
    assert cands[2][1].tolist() == pytest.approx(_mu(3))  # mu after the last update
    rand = write_search(tmp_path / "rand", searcher="random")
    assert [c[0] for c in playoff_candidates(rand.trials("s"), rand.policy("s"), k=3)] == [
        "trial s2-1", "trial s1-1", "trial s1-2"]  # no policy mean to add
    with pytest.raises(ValueError, match="--playoff-k must be an int >= 1"):
        playoff_candidates(rand.trials("s"), rand.policy("s"), k=0)


def test_playoff_answers_the_best_mean_of_its_retrainings(tmp_path) -> None:
    store = write_search(tmp_path / "store", manifest={"answer": "playoff"})
    # before the playoff ran: export says so in one line
    with pytest.raises(ValueError, match="no successful re-training") as e:
        export_experiment(store, "s", tmp_path / "x.json")
    assert "\n" not in str(e.value)
    cands = playoff_candidates(store.trials("s"), store.policy("s"), k=2)
    # the search's best trial loses the playoff; the failed re-training counts for nothing
    _write_playoff(store, cands, [[0.40, 0.44], [0.47, None], [0.45, 0.46]])
    res = playoff_results(store.trials("s"))
    assert res["label"].tolist() == ["trial s1-1", "last mu", "trial s2-1"]
    assert res["n"].tolist() == [1, 2, 2] and res["failed"].tolist() == [1, 0, 0]
    assert res["mean_reward"].tolist() == pytest.approx([0.47, 0.455, 0.42])
    out = _exported(store, tmp_path)
    assert out["theta"] == pytest.approx(_theta(1, 1)) and out["meta"]["answer"] == "playoff"
    assert {k: out["meta"][k] for k in ("candidate", "seeds")} == {"candidate": "trial s1-1",
                                                                     "seeds": 1}
    assert out["meta"]["mean_reward"] == pytest.approx(0.47)
    md = Path(write_search_report(store, "s", tmp_path / "rep")["markdown"]).read_text()
    assert "## Playoff" in md and "| trial s1-1 | 1 | 1 | 0.4700 |" in md
    # the search's own tables still count search trials only
    assert "trials: 10 (ok 9, failed 0, nan 1)" in md


def test_playoff_configs_use_fresh_paired_seeds_and_run_only_what_is_missing(tmp_path):
    store = write_search(tmp_path / "store", manifest={"answer": "playoff"})
    opts = SearchOptions(model="tiny", answer="playoff", playoff_k=2, playoff_seeds=3,
                         store=str(tmp_path / "store"), experiment="s", crn=False).resolved()
    configs = playoff_configs(opts, store.trials("s"), store.policy("s"))
    assert len(configs) == 3 * 3 and all("crn" not in c for c in configs)
    seeds = {(c["search_step"], c["search_sample"]): c["train_seed"] for c in configs}
    for j in range(3):  # the same seed j for every candidate: a paired comparison
        assert len({seeds[(c, j)] for c in range(3)}) == 1
    fresh = {seeds[(0, j)] for j in range(3)}
    assert len(fresh) == 3 and opts.seed not in fresh
    used = {trial_train_seed(opts.seed, s, m) for s in range(3) for m in range(3)}
    assert not fresh & used  # no search trial (--no-crn) trained with these seeds
    assert [c["loss_label"] for c in configs[::3]] == [
        "playoff:trial s2-1", "playoff:trial s1-1", "playoff:last mu"]
    cands = playoff_candidates(store.trials("s"), store.policy("s"), k=2)
    _write_playoff(store, cands[:2], [[0.4, 0.41], [None]])  # a failed one counts as run
    left = playoff_configs(opts, store.trials("s"), store.policy("s"))
    assert {(c["search_step"], c["search_sample"]) for c in left} == (
        {(c, j) for c in range(3) for j in range(3)} - {(0, 0), (0, 1), (1, 0)})
    # with --playoff-k 1 candidate 1 would be the last mu, not the stored trial s1-1
    other = SearchOptions(model="tiny", answer="playoff", playoff_k=1,
                          store=str(tmp_path / "store"), experiment="s").resolved()
    with pytest.raises(OptionsError, match="original --playoff-k"):
        playoff_configs(other, store.trials("s"), store.policy("s"))


SMALL = tiny_args(iterations=4, train_size=16, model="tiny")


@pytest.mark.slow
def test_a_tiny_real_playoff_on_ray_answers_for_export_and_summary(tmp_path) -> None:
    """autoloss search --answer playoff end to end: 1 step x 2 trials of PPO2, then the top
    1 trial and the last mu re-trained with 1 fresh seed each (2 real proxy trials; the
    seeds' pairing is checked without Ray above)."""
    store_dir = tmp_path / "store"
    argv = ["search", "--experiment", "p", "--store", str(store_dir), "--steps", "1",
            "--samples", "2", "--answer", "playoff", "--playoff-k", "1", "--playoff-seeds",
            "1", "--gpus-per-trial", "0", "--export", str(tmp_path / "loss.json"), *SMALL]
    out = subprocess.run([sys.executable, "-m", "autoloss_app.cli", *argv],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "[autoloss] playoff: 2 re-trainings (2 candidates x up to 1 fresh seeds)" in (
        out.stdout)
    store = ExperimentStore(store_dir)
    trials = store.trials("p")
    assert (trials["kind"] == "search").sum() == 2
    play = trials[trials["kind"] == "playoff"]
    assert sorted(zip(play["step"], play["sample"])) == [(0, 0), (1, 0)]
    search = trials[trials["kind"] == "search"]
    best_id = search.loc[search["reward"].astype(float).idxmax(), "trial_id"]
    assert set(play["loss"]) == {"playoff:last mu", f"playoff:trial {best_id}"}
    assert {json.loads(c)["train_seed"] for c in play["config_json"]} == {
        playoff_train_seed(0, 0)}
    assert (play["status"] == "ok").all()
    assert store.read_search("p")["answer"] == "playoff"
    res = playoff_results(trials)
    winner = np.asarray(res["theta"].iloc[0])
    exported = json.loads((tmp_path / "loss.json").read_text())
    assert exported["theta"] == pytest.approx(winner.tolist())
    done = json.loads(out.stdout.split("[autoloss] done: ", 1)[1].splitlines()[0])
    assert done["answer"] == "playoff" and done["trials"] == 2
    assert done["best_theta"] == pytest.approx(winner.tolist(), abs=1e-6)
    assert [p["label"] for p in done["playoff"]] == res["label"].tolist()


# --------------------------------------------------------------------------- PPO2's options
def test_ppo2_options_from_the_command_line_reach_the_searcher_and_replay(tmp_path) -> None:
    """--startup uniform --advantages rank --mirrored: parsed, recorded in the manifest, built
    into PPO2, the policy table shows the uniform step (box centre, then mu_1 = its best
    trial), a fresh searcher replays the store's trials to the same draws, and a resume
    with other PPO2 options is refused."""
    from autoloss_app.resume import check_resume_options, search_manifest
    from autoloss_app.search_job import build_searcher

    argv = ["search", "--startup", "uniform", "--advantages", "rank", "--mirrored",
            "--store", str(tmp_path / "store"), "--experiment", "o", "--steps", "3",
            "--samples", "4", "--model", "tiny", "--seed", "3"]
    opts = search_options_from_args(build_parser().parse_args(argv)).resolved()
    manifest = search_manifest(opts)
    assert (manifest["startup"], manifest["advantages"], manifest["mirrored"]) == (
        "uniform", "rank", True)
    store = ExperimentStore(opts.store)
    searcher = build_searcher(opts, store)
    ppo = searcher.optimizer
    assert (ppo.startup, ppo.advantage_rule, ppo.mirrored) == ("uniform", "rank", True)
    target = np.linspace(0.2, 0.8, ppo.dim)
    results = []
    for k in range(12):
        c = searcher.suggest(f"t{k}")
        v = -float(np.sum((np.asarray(c["theta"]) - target) ** 2))
        searcher.on_trial_complete(f"t{k}", {"reward": v})
        results.append({"step": c["search_step"], "sample": c["search_sample"],
                        "config": {"theta": c["theta"]}, "value": v, "trial_id": f"t{k}"})
    policy = store.policy("o").sort_values("step")
    box = 0.5 * (ppo.low + ppo.high)
    np.testing.assert_allclose(policy["mu"].iloc[0], box)
    step0 = [r for r in results if r["step"] == 0]
    best0 = max(step0, key=lambda r: r["value"])["config"]["theta"]
    np.testing.assert_allclose(policy["mu"].iloc[1], best0, atol=1e-7)
    fresh = build_searcher(opts, ExperimentStore(tmp_path / "other"))
    assert fresh.replay(results) == 12
    np.testing.assert_array_equal(fresh.optimizer.mu, searcher.optimizer.mu)
    for flag, value in (("startup", "policy"), ("advantages", "baseline"), ("mirrored", False)):
        changed = SearchOptions(**{**{k: getattr(opts, k) for k in (
            "store", "experiment", "steps", "samples", "model", "seed", "startup",
            "advantages", "mirrored")}, flag: value}).resolved()
        with pytest.raises(OptionsError, match=f"--{flag} was"):
            check_resume_options(changed, manifest)
