"""The issue-11 move of the search code changed no number and keeps old states loadable.

The reference files in ``tests/fixtures`` were written by the code before the move (commit febb766,
see ``tests/fixtures/make_search_reference.py`` for how): the PPO2 update's parameters bit for bit,
and searcher states saved mid-step with everything the old code did after restoring them.
Besides: PPO2's update diagnostics (CleanRL's ``clip_fraction``/``approx_kl``) against a brute
force with scipy's truncated normal, and their columns in the store's policy table.
"""

from __future__ import annotations

import json
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from autoloss_ray.search import PPO2, ppo_update
from autoloss_ray.store import POLICY_SCHEMA, ExperimentStore, PolicyWriter
from tests import FIXTURES

DATA = FIXTURES
sys.path.insert(0, str(DATA))
import make_search_reference as ref  # noqa: E402

REFERENCE = json.loads((DATA / "search_reference.json").read_text())


# --------------------------------------------------------------------------- bit for bit
@pytest.mark.parametrize("case", sorted(ref.PPO_CASES))
def test_ppo_update_gives_the_parameters_of_the_old_code_bit_for_bit(case) -> None:
    opt = PPO2(**ref.PPO_CASES[case])
    for step, expected in enumerate(REFERENCE["ppo"][case]):
        x = opt.ask()
        opt.tell(x, [ref.reward_of(t) for t in x])
        assert ref._hex(opt.state_dict()["z"]) == expected["z"], (case, step)
        assert ref._hex(opt.mu) == expected["mu"], (case, step)


def _subset(new, old):
    """``new`` restricted to the keys ``old`` has (records gained keys since)."""
    if isinstance(old, dict):
        return {k: _subset(new[k], v) for k, v in old.items()}
    if isinstance(old, list):
        return [_subset(n, o) for n, o in zip(new, old, strict=True)]
    return new


@pytest.mark.parametrize("case", sorted(ref.SEARCHER_CASES))
def test_searcher_state_saved_by_the_old_code_restores_and_continues_identically(
        case, tmp_path) -> None:
    import searchers

    with open(DATA / "searcher_state_v1.pkl", "rb") as f:
        state = pickle.load(f)[case]
    cls_name, kwargs = ref.SEARCHER_CASES[case]
    assert state["version"] == 1 and state["class"] == cls_name
    path = tmp_path / "searcher.pkl"  # through Searcher.save's file format
    path.write_bytes(pickle.dumps(state))
    s = getattr(searchers, cls_name)(**{k: v for k, v in kwargs.items()
                                        if k not in ("metric", "mode")})
    s.restore(str(path))
    assert (s.step, s.optimizer.step) == (1, 1)
    out = ref.continue_search(s)
    expected = REFERENCE["searchers"][case]
    assert out["configs"] == expected["configs"]
    assert _subset(out["history"], expected["history"]) == expected["history"]
    assert out["best_theta"] == expected["best_theta"]
    rec = s.history
    assert rec[0]["fail_reasons"] == [None, "error", "not finite", None]
    assert rec[1]["stopped_early"] == [False, True, False, False]
    # the state the new code saves restores the same way
    again = getattr(searchers, cls_name)()
    again.set_state(pickle.loads(pickle.dumps(s.get_state())))
    assert again.history == s.history and again.is_finished


def test_a_tune_pickled_searcher_object_of_the_old_layout_restores() -> None:
    """Tuner.restore unpickles the searcher object (old attribute layout), then restores."""
    import searchers

    with open(DATA / "searcher_state_v1.pkl", "rb") as f:
        state = pickle.load(f)["ppo2"]
    seen = []
    s = searchers.PPO2Searcher.__new__(searchers.PPO2Searcher)
    s.__dict__.update(step_callback=seen.append, _warned=set(), _warned_min=False,
                      _ppo_kwargs=dict(sigma=0.25, clip_eps=0.2, lr=0.2, update_steps=60,
                                       baseline="mean", include_mean=False, sigma_decay=1.0,
                                       sigma_min=0.0))
    s.set_state(state)
    ref.continue_search(s)
    assert [r["step"] for r in seen] == [1, 2]


# --------------------------------------------------------------------------- diagnostics
def _update(opt, x, rewards, k):
    return ppo_update(thetas=x, advantages=opt.advantages(rewards), z_old=opt._z,
                      param=opt._param, low=opt.low, high=opt.high, scale=opt.scale,
                      clip_eps=opt.clip_eps, lr=opt.lr, update_steps=k)


@pytest.mark.parametrize("case", ["box_d24_m32", "mixed_bounds"])
def test_update_diagnostics_match_a_brute_force_over_the_epochs(case) -> None:
    """Epoch k's ratios are taken at mu after k-1 Adam steps (= the result of an update with
    update_steps=k-1); densities from scipy's truncnorm, independent of ours."""
    opt = PPO2(**{**ref.PPO_CASES[case], "update_steps": 12})
    x = opt.ask()
    rewards = np.array([ref.reward_of(t) for t in x])
    eps, s = opt.clip_eps, opt.scale

    def logpdf(mu):
        return stats.truncnorm.logpdf(x, (opt.low - mu) / s, (opt.high - mu) / s, loc=mu,
                                      scale=s)

    mu_old = opt.mu
    fractions, kls = [], []
    for k in range(1, 13):
        z = opt._z if k == 1 else _update(opt, x, rewards, k - 1).z
        log_r = logpdf(opt._param.from_z(z)[0]) - logpdf(mu_old)
        r = np.exp(log_r)
        fractions.append(np.mean(np.abs(r - 1) > eps))
        kls.append(np.mean((r - 1) - log_r))
    got = _update(opt, x, rewards, 12)
    assert got.clip_fraction == pytest.approx(np.mean(fractions), abs=1e-12)
    assert got.approx_kl == pytest.approx(kls[-1], rel=1e-6, abs=1e-12)
    assert got.approx_kl > 0 and 0 < got.clip_fraction < 1
    assert fractions[0] == 0 and kls[0] == pytest.approx(0, abs=1e-15)  # epoch 1: r = 1
    first = _update(opt, x, rewards, 1)
    assert first.clip_fraction == 0 and first.approx_kl == pytest.approx(0, abs=1e-15)


def test_diagnostics_are_in_the_history_and_in_the_step_records() -> None:
    import searchers

    opt = PPO2(**ref.PPO_CASES["mixed_bounds"])
    x = opt.ask()
    opt.tell(x, [ref.reward_of(t) for t in x])
    h = opt.history[-1]
    assert 0 <= h["clip_fraction"] <= 1 and h["approx_kl"] >= 0
    for cls, has in ((searchers.PPO2Searcher, True), (searchers.RandomSearcher, False)):
        s = cls(ref._space(), metric="loss", mode="min", steps=1, samples_per_step=4, seed=0)
        cfg = [s.suggest(f"t{i}") for i in range(4)]
        for i, c in enumerate(cfg):
            s.on_trial_complete(f"t{i}", {"loss": ref._loss(c)})
        rec = s.history[0]
        assert (rec["clip_fraction"] is not None, rec["approx_kl"] is not None) == (has, has)


# --------------------------------------------------------------------------- policy table
def _drive(s) -> list[dict]:
    """Run a searcher synchronously to its end; its step records."""
    n = 0
    while not s.is_finished:
        out = []
        while isinstance(c := s.suggest(f"t{n}"), dict):
            out.append((f"t{n}", c))
            n += 1
        for tid, c in out:
            s.on_trial_complete(tid, {"loss": ref._loss(c)})
    return s.history


def test_policy_table_has_the_diagnostic_columns_written_and_read_back(tmp_path) -> None:
    import searchers

    assert POLICY_SCHEMA.names[-2:] == ["clip_fraction", "approx_kl"]
    for n in ("clip_fraction", "approx_kl"):
        assert POLICY_SCHEMA.field(n).type == "double" and POLICY_SCHEMA.field(n).nullable
    store = ExperimentStore(str(tmp_path / "store"))
    runs = {}
    for exp, cls in (("p", searchers.PPO2Searcher), ("r", searchers.RandomSearcher)):
        s = cls(ref._space(), metric="loss", mode="min", steps=2, samples_per_step=4, seed=1,
                step_callback=PolicyWriter(store.root, exp))
        runs[exp] = _drive(s)
    pol = store.policy()
    ppo = pol[pol["experiment"] == "p"].sort_values("step")
    rnd = pol[pol["experiment"] == "r"]
    assert len(ppo) == len(rnd) == 2
    for col in ("clip_fraction", "approx_kl"):
        np.testing.assert_array_equal(ppo[col].to_numpy(dtype=float),
                                      [h[col] for h in runs["p"]])
        assert rnd[col].isna().all()
    assert (ppo["approx_kl"] > 0).all()


def test_policy_rows_of_an_older_store_read_with_null_diagnostics(tmp_path) -> None:
    """A policy file without the two columns (written before them) reads with nulls."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from autoloss_ray.store import POLICY_FILE_SCHEMA, normalize_policy_row

    store = ExperimentStore(str(tmp_path / "store"))
    row = normalize_policy_row({"experiment": "old", "step": 0, "mu": [0.5], "rewards": [1.0]})
    old_schema = pa.schema([f for f in POLICY_FILE_SCHEMA
                            if f.name not in ("clip_fraction", "approx_kl")])
    path = Path(store.policy_path("old", 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([{k: row[k] for k in old_schema.names}],
                                        schema=old_schema), path)
    pol = store.policy("old")
    assert len(pol) == 1 and math.isnan(pol["clip_fraction"].iloc[0])
    assert math.isnan(pol["approx_kl"].iloc[0])


def test_ppo_update_refuses_zero_epochs() -> None:
    opt = PPO2(**ref.PPO_CASES["mixed_bounds"])
    x = opt.ask()
    with pytest.raises(ValueError, match="update_steps must be an int >= 1"):
        _update(opt, x, np.arange(len(x), dtype=float), 0)
