"""The pre-registered comparison's statistics (bench/paired_stats.py) against independent
references (scipy's paired t-test, a Monte-Carlo power estimate, Holm's procedure by its
definition), the budget cut of bench/search_quality.py, and a smoke run of the bench."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests import REPO

BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import paired_stats as ps  # noqa: E402
import search_quality as sq  # noqa: E402


@pytest.mark.parametrize("seed", range(5))
def test_paired_summary_matches_scipy_ttest_rel(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.25, 0.01, 6), rng.normal(0.24, 0.01, 6)
    s = ps.paired_summary(a - b)
    ref = stats.ttest_rel(a, b)
    assert s["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert s["t"] == pytest.approx(ref.statistic, rel=1e-10)
    assert s["mean"] == pytest.approx(np.mean(a - b))
    assert s["se"] == pytest.approx(np.std(a - b, ddof=1) / math.sqrt(6))
    assert s["wins"] + s["losses"] + s["ties"] == 6
    assert s["wins"] == int(np.sum(a > b))


@pytest.mark.parametrize("n", [2, 3, 5])  # 2 seeds: scipy's far lower tail of nct was NaN
def test_detectable_difference_has_the_power_it_claims_by_simulation(n):
    sd = 0.01
    delta = ps.detectable_difference(sd, n)
    rng = np.random.default_rng(0)
    d = rng.normal(delta, sd, size=(40_000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    power = np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1))
    assert power == pytest.approx(0.8, abs=0.01)
    # the textbook approximation (t_{1-a/2} + t_{power}) * sd / sqrt(n) is close to it
    approx = (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
    if n >= 5:  # the approximation is poor with 1-2 degrees of freedom
        assert delta == pytest.approx(approx, rel=0.1)
    assert ps.detectable_difference(sd, 20) < delta  # more seeds detect less
    assert math.isnan(ps.detectable_difference(sd, 1)) and ps.detectable_difference(0.0, 5) == 0


def _holm_by_definition(pvalues, alpha):
    """Holm: reject the smallest p while p_(i) < alpha / (m - i); stop at the first miss."""
    order = sorted(pvalues, key=pvalues.get)
    m, reject = len(order), {}
    go = True
    for i, k in enumerate(order):
        go = go and pvalues[k] < alpha / (m - i)
        reject[k] = go
    return reject


@pytest.mark.parametrize("seed", range(20))
def test_holm_rejects_what_the_definition_rejects(seed):
    rng = np.random.default_rng(seed)
    p = {f"h{i}": float(x) for i, x in enumerate(rng.uniform(0, 0.1, rng.integers(1, 6)))}
    got = ps.holm(p, alpha=0.05)
    assert {k: v["reject"] for k, v in got.items()} == _holm_by_definition(p, 0.05)
    assert all(got[k]["p_adj"] >= p[k] for k in p)


def test_holm_leaves_nan_out():
    got = ps.holm({"a": 0.01, "b": math.nan, "c": 0.02})
    assert not got["b"]["reject"] and math.isnan(got["b"]["p_adj"])
    assert got["a"]["p_adj"] == pytest.approx(0.02) and got["c"]["p_adj"] == pytest.approx(0.02)


def test_decide_names_the_significantly_better_arm_with_the_largest_gain():
    rng = np.random.default_rng(1)
    ref = rng.normal(0.25, 0.01, 8)
    scores = {"ref": ref, "same": ref + rng.normal(0, 0.002, 8),
              "better": ref + 0.02 + rng.normal(0, 0.002, 8),
              "best": ref + 0.03 + rng.normal(0, 0.002, 8),
              "worse": ref - 0.02 + rng.normal(0, 0.002, 8)}
    d = ps.decide(scores, reference="ref")
    assert d["winner"] == "best"
    assert set(d["better"]) == {"better", "best"} and d["worse"] == ["worse"]
    assert not d["comparisons"]["same"]["reject"]
    assert ps.decide({"ref": ref, "same": scores["same"]}, reference="ref")["winner"] is None


def test_decide_refuses_incomplete_pairs():
    with pytest.raises(ValueError, match="complete pairs"):
        ps.decide({"ref": [0.2, 0.3], "a": [0.2]}, reference="ref")
    with pytest.raises(ValueError, match="finite"):
        ps.decide({"ref": [0.2, 0.3], "a": [0.2, math.nan]}, reference="ref")
    with pytest.raises(ValueError, match="reference"):
        ps.decide({"a": [0.2]}, reference="ref")


def test_budget_cut_and_trial_compute():
    assert sq.budget_cut([80, 20, 40, 80], 140) == 3
    assert sq.budget_cut([80, 80], 160) == 2
    assert sq.budget_cut([80, 80], 10) == 0
    rows = pd.DataFrame({
        "iterations": [80, 80, 80],
        "stopped_early": [False, True, True],
        "extra_json": [None, json.dumps({"rung_iteration": 20}), json.dumps({"x": 1})],
    })
    assert sq.trial_compute(rows) == [80, 20, 80]


def test_seed_option_refuses_bad_lists():
    assert sq._seed_list("100,101") == [100, 101]
    for bad in ("", "1,1", "-1", "a"):
        with pytest.raises(Exception, match="distinct non-negative"):
            sq._seed_list(bad)


@pytest.mark.slow
def test_smoke_run_writes_a_seed_and_resumes_without_training(tmp_path):
    """The whole flow on the synthetic dataset (its val split stands in for CamVid val)."""
    args = ["--seeds", "0", "--steps", "1", "--samples", "2", "--iterations", "4",
            "--retrain-iterations", "4", "--image-size", "32", "--fresh", "1",
            "--num-cpus", "2", "--dataset", "synthetic", "--data-root", "",
            "--out", str(tmp_path)]
    import ray

    ray.shutdown()  # the bench starts its own local Ray (an earlier test's may be up)
    assert sq.main(args) == 0
    seed = json.loads((tmp_path / "seeds" / "seed-0.json").read_text())
    assert set(seed["arms"]) == set(sq.ARMS)
    for arm in seed["arms"].values():
        assert 0.0 <= arm["val_score"] <= 1.0 and arm["compute"] <= seed["budget_iterations"]
    # ppo and ppo-paper are one search answered by two rules
    assert seed["arms"]["ppo"]["trials"] == seed["arms"]["ppo-paper"]["trials"] == 2
    retrains = (tmp_path / "retrains.jsonl").read_text().splitlines()
    assert 1 <= len(retrains) <= len(sq.ARMS)
    for name in ("table.md", "results.json", "paired.png", "best_so_far.png"):
        assert (tmp_path / name).stat().st_size > 0
    # a rerun finds the seed done: nothing trains, the report is rebuilt
    assert sq.main(args) == 0
    assert (tmp_path / "retrains.jsonl").read_text().splitlines() == retrains
    assert sq.main(["--report-only", "--out", str(tmp_path)]) == 0
