"""Multi-fidelity (issue 29.4): rung reporting of the proxy trial, stopped samples in the
step protocol and PPO2 (ranked below every survivor), and ``autoloss search --scheduler asha``
end to end on the embedded Ray."""

from __future__ import annotations

import numpy as np
import pytest

from autoloss_ray.train import run_trial
from tests.tiny import tiny_trial

TINY = tiny_trial(train_size=24, iterations=12, seed=3, device="cpu")


def test_rungs_report_and_leave_the_final_result_unchanged():
    rows: list[dict] = []
    plain = run_trial(TINY)
    with_rungs = run_trial({**TINY, "rungs": [4, 8]}, progress=rows.append)
    # a rung restores every random state: the same seed trains to the same final result
    for key in ("reward", "miou", "bf1", "final_loss", "initial_loss", "iterations"):
        assert with_rungs[key] == plain[key], key
    assert [r["rung_iteration"] for r in rows] == [4, 8]
    for r in rows:
        assert r["reward"] == r["rung_reward"] == r["miou"]
        assert 0.0 <= r["reward"] <= 1.0
    assert with_rungs["rung_seconds"] > 0.0 and "rung_seconds" not in plain
    assert rows[1]["miou"] != rows[0]["miou"]  # scored after different training


@pytest.mark.parametrize("rungs, match", [
    ([0, 4], r"ints in \[1, 12\)"),
    ([4, 12], r"ints in \[1, 12\)"),
    ([8, 4], "strictly increasing"),
    ([4, 4], "strictly increasing"),
    ("4,8", "list of iterations"),
    ([4.0], r"ints in \[1, 12\)"),
])
def test_bad_rungs_are_one_line_errors(rungs, match):
    from autoloss_ray.train import check_trial_config

    with pytest.raises(ValueError, match=match):
        check_trial_config({**TINY, "rungs": rungs})


# --------------------------------------------------------------------------- stopped samples
def test_stopped_below_ranks_stopped_under_every_survivor():
    from scipy.stats import rankdata

    from autoloss_ray.search.step_protocol import stopped_below

    rewards = np.array([0.30, 0.50, 0.20, 0.60, 0.40, -1.0])
    stopped = np.array([False, False, True, True, False, False])
    failed = np.array([False, False, False, False, False, True])
    out = stopped_below(rewards, stopped, failed)
    survivors = [0, 1, 4]
    assert out[survivors].tolist() == rewards[survivors].tolist()
    assert out[5] == -1.0  # a failed sample keeps its failure reward
    assert out[[2, 3]].max() < out[survivors].min()  # 0.6 (a rung value) now below 0.3
    assert out[3] > out[2]  # the order among the stopped samples stays
    ranks = rankdata(out[:5])
    assert sorted(ranks[survivors]) == [3, 4, 5] and ranks[3] == 2 and ranks[2] == 1
    # no survivor: the floor (worst finished value seen) takes the survivors' place
    alone = stopped_below(np.array([0.9, 0.8]), np.array([True, True]), floor=0.1)
    assert alone.max() < 0.1 and alone[0] > alone[1]
    assert stopped_below(np.array([0.9, 0.8]), np.array([True, True])).tolist() == [0.9, 0.8]
    with pytest.raises(ValueError, match="same shape"):
        stopped_below(np.zeros(3), np.zeros(2, dtype=bool))


class _Space:
    names = ("a", "b")

    def to_config(self, theta):
        return {"theta": [float(t) for t in theta]}

    def from_config(self, config):
        return np.asarray(config["theta"])


def _protocol(advantages="baseline", steps=2, m=6):
    from autoloss_ray.search import PPO2, StepProtocol

    p = StepProtocol(steps=steps, samples_per_step=m, name="PPO2Searcher")
    p.rank_stopped = True  # what build_searcher sets for --scheduler asha
    p.space, p.mode, p.metric = _Space(), "max", "reward"
    p.optimizer = PPO2(low=[0, 0], high=[1, 1], mu0=[0.5, 0.5], samples_per_step=m, seed=7,
                       advantages=advantages)
    return p


# step 0: samples 1 and 4 were stopped at a rung; their rung values (0.9, 0.7) are larger
# than any survivor's final reward, on another scale
VALUES = [[0.30, 0.90, 0.10, 0.40, 0.70, 0.20], [0.25, 0.35, 0.15, 0.45, 0.05, 0.30]]
STOPPED = [[False, True, False, False, True, False], [False] * 6]


def _run(p, values=VALUES, stopped=STOPPED):
    rows = []
    for vals, stops in zip(values, stopped):
        for i in range(len(vals)):
            p.hand_out(f"t{p.step}-{i}")
        step = p.step
        configs = [p.config(step, i) for i in range(len(vals))]
        for i, (v, s) in enumerate(zip(vals, stops)):
            p.tell(i, f"t{step}-{i}", v, early=s)
            rows.append({"step": step, "sample": i, "config": configs[i], "value": v,
                         "trial_id": f"t{step}-{i}", "stopped_early": s})
    return rows


@pytest.mark.parametrize("advantages", ["baseline", "rank"])
def test_ppo2_learns_stopped_samples_by_rank(advantages):
    from autoloss_ray.search import PPO2

    p = _protocol(advantages)
    rows = _run(p)
    record = p.records[0]
    assert record["stopped_early"] == STOPPED[0]
    assert record["values"] == VALUES[0]  # the record keeps what was reported
    told = np.asarray(record["rewards"])
    adv = p.optimizer.advantages(told, rank=True)
    survivors = [0, 2, 3, 5]
    assert adv[[1, 4]].max() < adv[survivors].min()
    assert adv[1] > adv[4] and told[1] > told[4]  # 0.9 > 0.7 at the rung: order kept
    assert record["mean_reward"] == pytest.approx(np.mean([0.30, 0.10, 0.40, 0.20]))
    assert p.optimizer.history[0]["stopped"] == STOPPED[0]
    assert p.worst_value == pytest.approx(0.05)  # from finished samples only
    # independent reference: a plain PPO2 with rank advantages told any rewards of the same
    # order (stopped far below) takes the same step
    ref = PPO2(low=[0, 0], high=[1, 1], mu0=[0.5, 0.5], samples_per_step=6, seed=7,
               advantages="rank")
    thetas = ref.ask()
    assert np.allclose(thetas, record["thetas"])
    ref.tell(thetas, [0.30, -9.0, 0.10, 0.40, -10.0, 0.20])
    assert np.allclose(ref.mu, record["mu_next"])
    # a step without stopped samples is unchanged by the feature (baseline rule stays)
    plain = PPO2(low=[0, 0], high=[1, 1], mu0=[0.5, 0.5], samples_per_step=6, seed=7,
                 advantages=advantages)
    plain.tell(plain.ask(), VALUES[0])
    assert not np.allclose(plain.mu, record["mu_next"]) or advantages == "rank"

    # replay (resume) tells the stopped samples as stopped again: the same records
    replayed = _protocol(advantages)
    assert replayed.replay(rows) == 12
    for a, b in zip(p.records, replayed.records):
        assert a["rewards"] == b["rewards"] and a["mu_next"] == b["mu_next"]
    # ...and the flag matters: replayed without it, step 0 learns from the rung values, its
    # mu differs and step 1's recorded draws are refused
    forgot = _protocol(advantages)
    with pytest.raises(ValueError, match=r"recorded trial \(step 1"):
        forgot.replay([{**r, "stopped_early": False} for r in rows])


def test_ppo2_refuses_stopped_samples_above_a_survivor():
    from autoloss_ray.search import PPO2

    opt = PPO2(low=[0, 0], high=[1, 1], mu0=[0.5, 0.5], samples_per_step=3, seed=0)
    with pytest.raises(ValueError, match="below every survivor"):
        opt.tell(opt.ask(), [0.1, 0.5, 0.2], stopped=[False, True, False])
    with pytest.raises(ValueError, match="shape"):
        opt.tell(opt.ask(), [0.1, 0.5, 0.2], stopped=[False, True])


# --------------------------------------------------------------------------- the options
@pytest.mark.parametrize("iterations, grace, factor", [
    (80, 20, 2.0), (80, 10, 3.0), (1000, 100, 3.0), (60, 15, 2.0), (80, 20, 1.5), (12, 3, 2.0),
])
def test_asha_rungs_are_ray_asha_milestones_below_the_end(iterations, grace, factor):
    from ray.tune.schedulers import ASHAScheduler

    from autoloss_app.options import asha_rungs

    asha = ASHAScheduler(time_attr="rung_iteration", metric="rung_reward", mode="max",
                         max_t=iterations, grace_period=grace, reduction_factor=factor)
    milestones = sorted(m for m, _ in asha._brackets[0]._rungs if m < iterations)
    rungs = asha_rungs(iterations, grace, factor)
    assert len(rungs) == len(milestones)
    # each rung is the first whole iteration at or past its milestone (where ASHA records it)
    assert all(m <= r < m + 1 for r, m in zip(rungs, milestones))


def test_scheduler_options_reach_the_trial_config_and_bad_ones_are_one_line_errors(tmp_path):
    from autoloss_app.cli import build_parser, search_options_from_args
    from autoloss_app.options import OptionsError

    def opts(*extra):
        argv = ["search", "--store", str(tmp_path / "s"), "--model", "tiny",
                "--iterations", "80", *extra]
        return search_options_from_args(build_parser().parse_args(argv)).resolved()

    assert "rungs" not in opts().trial_config()  # fifo, the default
    asha = opts("--scheduler", "asha")
    assert asha.trial_config()["rungs"] == [20, 40]  # grace 80 // 4, factor 2
    assert opts("--scheduler", "asha", "--grace-period", "10", "--reduction-factor",
                "3").trial_config()["rungs"] == [10, 30]
    for extra, match in [
        (("--grace-period", "10"), "options of --scheduler asha"),
        (("--scheduler", "asha", "--grace-period", "80"), r"--grace-period must be an int in"),
        (("--scheduler", "asha", "--grace-period", "0"), r"--grace-period must be an int in"),
        (("--scheduler", "asha", "--reduction-factor", "1"), "--reduction-factor must be"),
    ]:
        with pytest.raises(OptionsError, match=match) as info:
            opts(*extra)
        assert "\n" not in str(info.value)
    help_text = build_parser()._subparsers._group_actions[0].choices["search"].format_help()
    for flag in ("--scheduler", "--grace-period", "--reduction-factor"):
        assert flag in help_text


# --------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_asha_search_end_to_end_stops_trials_and_ranks_them_last(tmp_path):
    """autoloss search --scheduler asha on the embedded Ray: 2 PPO2 steps x 4 trials, one at a
    time (a deterministic order), rungs at 2 and 4 of 8 iterations."""
    import json
    import subprocess
    import sys

    from autoloss_ray.store import ExperimentStore

    store_dir = tmp_path / "store"
    argv = ["search", "--experiment", "a", "--store", str(store_dir), "--steps", "2",
            "--samples", "4", "--max-concurrent", "1", "--scheduler", "asha",
            "--grace-period", "2", "--reduction-factor", "2", "--iterations", "8",
            "--image-size", "32", "--train-size", "16", "--batch-size", "4", "--model", "tiny",
            "--gpus-per-trial", "0", "--seed", "1"]
    out = subprocess.run([sys.executable, "-m", "autoloss_app.cli", *argv],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    store = ExperimentStore(store_dir)
    trials = store.trials("a")
    assert len(trials) == 8
    stopped = trials[trials["stopped_early"].eq(True)]
    finished = trials[~trials["stopped_early"].eq(True)]
    assert 1 <= len(stopped) < 8
    assert set(stopped["iterations"]) <= {2, 4}  # stopped at a rung
    assert (stopped["eval_protocol"] == "train_size").all()
    assert (finished["iterations"] == 8).all() and (finished["status"] == "ok").all()
    # every step record ranks its stopped samples below every survivor
    policy = store.policy("a").sort_values("step")
    assert len(policy) == 2
    for rec in policy.itertuples():
        rows = trials[trials["step"] == rec.step].sort_values("sample")
        flags, rewards = rows["stopped_early"].eq(True).to_numpy(), np.asarray(rec.rewards)
        # the searcher was told the same samples as stopped as the store marks
        assert json.loads(rec.extra_json)["stopped_early"] == flags.tolist()
        if flags.any() and (~flags).any():
            assert rewards[flags].max() < rewards[~flags].min()
            finals = rows["reward"].to_numpy()[~flags]
            assert rewards[~flags].tolist() == pytest.approx(finals.tolist())
    # the progress lines say which trials were stopped (not failed)
    assert out.stdout.count("stopped at iteration") == len(stopped)
    assert "FAILED" not in out.stdout
    # the answer is the best *finished* trial, never a rung's reward
    done = json.loads(out.stdout.split("[autoloss] done: ", 1)[1].splitlines()[0])
    assert done["stopped"] == len(stopped) and done["failed"] == 0
    best = finished.loc[finished["reward"].astype(float).idxmax()]
    assert done["best_theta"] == pytest.approx(list(best["theta"]), abs=1e-6)


def test_store_row_of_a_rung_report_is_stopped_early_and_a_final_one_is_not():
    from autoloss_ray.store import trial_row

    config = {"metric": "miou", "theta": [0.5], "iterations": 80, "search_step": 0,
              "search_sample": 1}
    rung = {"reward": 0.12, "rung_reward": 0.12, "rung_iteration": 20, "iterations": 20,
            "eval_protocol": "train_size", "status": "running", "done": True}
    final = {"reward": 0.25, "rung_reward": float("nan"), "iterations": 80, "status": "ok",
             "eval_protocol": "native", "done": True}
    stopped = trial_row("e", "t1", config, rung)
    assert stopped["stopped_early"] and stopped["iterations"] == 20
    assert stopped["status"] == "ok" and stopped["eval_protocol"] == "train_size"
    done = trial_row("e", "t2", config, final)
    assert not done["stopped_early"] and done["iterations"] == 80


def test_random_search_is_told_stopped_samples_below_and_never_answers_with_one():
    from autoloss_ray.search import RandomSearch, StepProtocol

    p = StepProtocol(steps=1, samples_per_step=6, name="RandomSearcher")
    p.rank_stopped = True
    p.space, p.mode, p.metric = _Space(), "max", "reward"
    p.optimizer = RandomSearch(low=[0, 0], high=[1, 1], samples_per_step=6, seed=1)
    _run(p, VALUES[:1], STOPPED[:1])
    record = p.records[0]
    survivors = [0, 2, 3, 5]
    assert max(record["rewards"][i] for i in (1, 4)) < min(record["rewards"][i]
                                                           for i in survivors)
    # its best is the best finished sample (0.40, sample 3), not the 0.9 of a rung
    assert p.optimizer.best_reward == pytest.approx(0.40)
    assert np.allclose(p.optimizer.best, record["thetas"][3])


def test_best_trial_answer_and_playoff_skip_stopped_trials():
    import pandas as pd

    from autoloss_ray.answer import best_trial_theta, playoff_candidates
    from autoloss_ray.report import best_theta

    trials = pd.DataFrame({
        "kind": ["search"] * 3, "status": ["ok"] * 3, "trial_id": ["a", "b", "c"],
        "theta": [[0.1], [0.2], [0.3]], "reward": [0.20, 0.90, 0.25],
        "stopped_early": [False, True, None],  # b: a rung reward of 0.9
    })
    assert best_trial_theta(trials).tolist() == [0.3]
    assert best_theta(trials, None).tolist() == [0.3]  # a store without a manifest
    assert [t.tolist() for _, t in playoff_candidates(trials, None, k=3)] == [[0.3], [0.1]]


def test_without_a_scheduler_an_early_end_changes_no_update():
    """``rank_stopped`` off (no --scheduler asha; Tune's "ended early" also flags ordinary
    ends of function trainables): the optimizer is told the values as they are."""
    from autoloss_ray.search import PPO2

    p = _protocol()
    p.rank_stopped = False
    _run(p, VALUES[:1], STOPPED[:1])
    ref = PPO2(low=[0, 0], high=[1, 1], mu0=[0.5, 0.5], samples_per_step=6, seed=7)
    thetas = ref.ask()
    ref.tell(thetas, VALUES[0])
    assert np.allclose(ref.mu, p.records[0]["mu_next"])
    assert p.worst_value == pytest.approx(min(VALUES[0]))
