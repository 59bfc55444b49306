"""Pure tests of autoloss_ray.search (no ray): truncated normal, PPO2 and random search."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from scipy import stats

from autoloss_ray.search import PPO2, RandomSearch, TruncatedNormal
from autoloss_ray.search.truncnorm import log_prob_and_grad

# --------------------------------------------------------------------------- truncated normal
CASES = [
    # low, high, mu, sigma  (mu inside, at/far outside the box, tails, infinite bounds)
    (0.0, 1.0, 0.3, 0.2),
    (0.0, 1.0, 1.7, 0.2),  # box in the lower tail of N(mu, sigma)
    (0.0, 1.0, -2.5, 0.2),  # box far in the upper tail (mirrored branch)
    (-1.0, 3.0, 0.5, 2.0),
    (-np.inf, np.inf, 0.2, 0.5),  # plain normal
    (0.0, np.inf, -0.5, 0.3),
    (-np.inf, 0.25, 0.1, 0.1),
]


def _ref(low, high, mu, sigma):
    return stats.truncnorm((low - mu) / sigma, (high - mu) / sigma, loc=mu, scale=sigma)


def test_truncnorm_log_prob_matches_scipy() -> None:
    lows, highs, mus, sigmas = (np.array(c, dtype=float) for c in zip(*CASES))
    tn = TruncatedNormal(lows, highs)
    rng = np.random.default_rng(1)
    x = tn.sample(mus, sigmas, 200, rng)
    lp = tn.log_prob(x, mus, sigmas)
    for d, (lo, hi, mu, s) in enumerate(CASES):
        np.testing.assert_allclose(lp[:, d], _ref(lo, hi, mu, s).logpdf(x[:, d]), rtol=1e-9,
                                   atol=1e-9)


def test_truncnorm_log_prob_outside_box_is_minus_inf() -> None:
    tn = TruncatedNormal([0.0, 0.0], [1.0, 1.0])
    lp = tn.log_prob(np.array([[-0.1, 1.1], [0.5, 0.5]]), [0.5, 0.5], 0.2)
    assert np.all(np.isneginf(lp[0]))
    assert np.all(np.isfinite(lp[1]))


@pytest.mark.parametrize("case", CASES)
def test_truncnorm_samples_pass_ks_and_stay_inside(case) -> None:
    lo, hi, mu, s = case
    tn = TruncatedNormal([lo], [hi])
    x = tn.sample([mu], [s], 4000, np.random.default_rng(7))[:, 0]
    assert x.shape == (4000,)
    assert np.all((x >= lo) & (x <= hi))
    assert stats.kstest(x, _ref(lo, hi, mu, s).cdf).pvalue > 1e-3


def test_truncnorm_extreme_tail_stays_finite_inside() -> None:
    tn = TruncatedNormal([0.0], [1.0])
    x = tn.sample([40.0], [0.2], 100, np.random.default_rng(0))
    assert np.all(np.isfinite(x)) and np.all((x >= 0) & (x <= 1))
    assert x.min() > 0.9  # all mass hugs the upper bound
    assert np.all(np.isfinite(tn.log_prob(x, [40.0], [0.2])))


def test_truncnorm_sampling_is_seeded() -> None:
    tn = TruncatedNormal(np.zeros(3), np.ones(3))
    a = tn.sample(0.5, 0.2, 5, np.random.default_rng(3))
    b = tn.sample(0.5, 0.2, 5, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- objectives
D12 = 12


def bowl(th: np.ndarray) -> np.ndarray:
    """Quadratic bowl on [0,1]^D, maximum 0 at theta = 0.75."""
    return -((np.atleast_2d(th) - 0.75) ** 2).sum(axis=1)


def rosenbrock(th: np.ndarray) -> np.ndarray:
    """Shifted Rosenbrock: x = 2 theta - 0.5, optimum at theta = 0.75 (x = 1)."""
    x = 2.0 * np.atleast_2d(th) - 0.5
    return -(100.0 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1.0 - x[:, :-1]) ** 2).sum(axis=1)


def _run(opt, f, steps):
    for _ in range(steps):
        th = opt.ask()
        opt.tell(th, f(th))
    return opt


def _ppo(seed, d=D12, m=16, **kw):
    return PPO2(low=np.zeros(d), high=np.ones(d), mu0=np.full(d, 0.5), samples_per_step=m,
                seed=seed, **kw)


# --------------------------------------------------------------------------- PPO2
@pytest.mark.parametrize("f", [bowl, rosenbrock])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ppo2_improves_step_mean(f, seed) -> None:
    opt = _run(_ppo(seed, m=16 if f is bowl else 32), f, 12)
    means = [h["mean_reward"] for h in opt.history]
    assert len(means) == 12 and opt.step == 12
    first, last = np.mean(means[:2]), np.mean(means[-3:])
    assert last > first + 0.05 * abs(first), (first, last)
    if f is bowl:  # on the bowl the smoothed optimum is the optimum: mu approaches 0.75
        assert last > first + 0.3 * abs(first)
        assert np.mean(np.abs(opt.mu - 0.75)) < 0.5 * np.mean(np.abs(opt.mu0 - 0.75))
    # best is the mu of the step with the best mean reward
    i = int(np.argmax(means))
    np.testing.assert_array_equal(opt.best, opt.history[i]["mu"])
    assert opt.best_reward == max(means)


@pytest.mark.parametrize("f", [bowl, rosenbrock])
def test_ppo2_beats_random_at_equal_evaluations(f) -> None:
    """Best observed reward after the same T*M evaluations, over several seeds."""
    wins, ppo_best, rnd_best = 0, [], []
    for seed in range(6):
        p = _run(_ppo(seed), f, 12)
        r = _run(RandomSearch(low=np.zeros(D12), high=np.ones(D12), samples_per_step=16,
                              seed=seed), f, 12)
        pb = max(max(h["rewards"]) for h in p.history)
        assert len(r.history) == len(p.history) == 12  # same number of evaluations
        ppo_best.append(pb)
        rnd_best.append(r.best_reward)
        wins += pb > r.best_reward
    assert wins >= 5, (ppo_best, rnd_best)
    assert np.mean(ppo_best) > np.mean(rnd_best)


def test_ppo2_gradient_matches_torch_autograd() -> None:
    """The analytic gradient of the clipped objective equals autograd through scipy-free torch."""
    torch = pytest.importorskip("torch")
    m = 8
    low = np.array([0.0, 0.0, -np.inf, 0.0, -np.inf])
    high = np.array([1.0, 2.0, np.inf, np.inf, 1.0])
    opt = PPO2(low=low, high=high, mu0=[0.3, 1.2, 0.1, 0.4, 0.2], samples_per_step=m, seed=0,
               sigma=0.3)
    x = opt.ask()
    rewards = np.random.default_rng(1).normal(size=m)
    adv = opt.advantages(rewards)
    mu_old = opt.mu
    box = dict(low=opt.low, high=opt.high, scale=opt.scale)
    lp_old, _ = log_prob_and_grad(x, mu_old, **box)
    mu = mu_old + np.array([0.05, -0.1, 0.2, 0.02, -0.03])
    lp, dlp = log_prob_and_grad(x, mu, **box)
    ratio = np.exp(lp - lp_old)
    active = ratio * adv[:, None] <= np.clip(ratio, 0.8, 1.2) * adv[:, None]
    g_np = np.where(active, ratio * adv[:, None] * dlp, 0).sum(0) / m

    t = torch.tensor(mu, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(opt.scale)
    xt = torch.tensor(x)
    normal = torch.distributions.Normal(t, s)
    lo, hi = torch.tensor(low), torch.tensor(high)
    mass = normal.cdf(hi) - normal.cdf(lo)  # fine for these moderate values
    lp_t = normal.log_prob(xt) - torch.log(mass)
    r_t = torch.exp(lp_t - torch.tensor(lp_old))
    a_t = torch.tensor(adv)[:, None]
    j = torch.minimum(r_t * a_t, torch.clamp(r_t, 0.8, 1.2) * a_t).mean(0).sum()
    j.backward()
    np.testing.assert_allclose(g_np, t.grad.numpy(), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(opt.objective(x, adv, mu, mu_old), j.item(), rtol=1e-10)


def test_ppo2_update_increases_clipped_objective_and_respects_box() -> None:
    opt = _ppo(3, d=6, m=8)
    x = opt.ask()
    r = bowl(x)
    mu_old = opt.mu
    opt.tell(x, r)
    adv = opt.advantages(r)
    assert opt.objective(x, adv, opt.mu, mu_old) > opt.objective(x, adv, mu_old, mu_old)
    assert np.all((opt.mu > 0) & (opt.mu < 1))


def test_ppo2_mu_baseline_and_include_mean() -> None:
    opt = _ppo(0, d=4, m=6, include_mean=True, baseline="mu")
    x = opt.ask()
    np.testing.assert_array_equal(x[0], opt.mu)
    np.testing.assert_allclose(opt.advantages([1.0, 2, 3, 4, 5, 6]), [0, 1, 2, 3, 4, 5])
    assert np.allclose(_ppo(0, d=4, m=6).advantages([1.0, 2, 3, 4, 5, 6]).sum(), 0)


def test_ppo2_unbounded_and_half_bounded_dims_move_toward_optimum() -> None:
    low = np.array([-np.inf, 0.0, -np.inf])
    high = np.array([np.inf, np.inf, 5.0])
    target = np.array([1.5, 2.0, 3.0])
    opt = PPO2(low=low, high=high, mu0=[0.0, 0.5, 0.0], samples_per_step=16, sigma=0.5,
               seed=0)
    _run(opt, lambda th: -((np.atleast_2d(th) - target) ** 2).sum(1), 12)
    assert np.all(np.abs(opt.mu - target) < np.abs(np.array([0.0, 0.5, 0.0]) - target))
    assert opt.mu[1] > 0 and opt.mu[2] < 5


def test_ask_is_stable_until_tell_and_seeded() -> None:
    a, b = _ppo(11, d=3, m=4), _ppo(11, d=3, m=4)
    x = a.ask()
    np.testing.assert_array_equal(x, a.ask())
    np.testing.assert_array_equal(x, b.ask())
    assert not np.array_equal(x, _ppo(12, d=3, m=4).ask())


@pytest.mark.parametrize("cls", ["ppo", "random"])
def test_state_dict_round_trip_continues_identically(cls) -> None:
    def make(seed):
        if cls == "ppo":
            return _ppo(seed, d=5, m=6)
        return RandomSearch(low=np.zeros(5), high=np.ones(5), samples_per_step=6, seed=seed)

    a = _run(make(5), bowl, 3)
    a.ask()  # pending samples must survive too
    state = pickle.loads(pickle.dumps(a.state_dict()))
    b = make(99)  # different seed: everything must come from the state
    b.load_state_dict(copy.deepcopy(state))
    _run(a, bowl, 3)
    _run(b, bowl, 3)
    assert a.history == b.history
    np.testing.assert_array_equal(a.mu, b.mu)
    np.testing.assert_array_equal(a.best, b.best)
    np.testing.assert_array_equal(a.ask(), b.ask())
    if cls == "ppo":
        c = PPO2.from_state_dict(state)
        _run(c, bowl, 3)
        assert c.history == a.history


def test_load_state_dict_rejects_foreign_state() -> None:
    p = _ppo(0, d=3, m=4)
    with pytest.raises(ValueError, match="random"):
        p.load_state_dict(RandomSearch(low=np.zeros(3), high=np.ones(3), samples_per_step=4)
                          .state_dict())
    with pytest.raises(ValueError, match="D=4"):
        p.load_state_dict(_ppo(0, d=4, m=4).state_dict())
    with pytest.raises(ValueError, match="state dict"):
        p.load_state_dict({"z": [0, 0, 0]})


# --------------------------------------------------------------------------- random search
def test_random_search_uniform_in_box_and_normal_for_unbounded() -> None:
    rs = RandomSearch(low=[0.0, -2.0, -np.inf], high=[1.0, 2.0, np.inf], samples_per_step=4000,
                      seed=0, mu0=[0.5, 0.0, 3.0], sigma=0.5)
    x = rs.ask()
    assert stats.kstest(x[:, 0], stats.uniform(0, 1).cdf).pvalue > 1e-3
    assert stats.kstest(x[:, 1], stats.uniform(-2, 4).cdf).pvalue > 1e-3
    assert stats.kstest(x[:, 2], stats.norm(3.0, 0.5).cdf).pvalue > 1e-3
    rs.tell(x, -x[:, 0])
    assert rs.best_reward == pytest.approx(-x[:, 0].min())
    np.testing.assert_array_equal(rs.best, x[np.argmin(x[:, 0])])


# --------------------------------------------------------------------------- input errors
@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(samples_per_step=1), "M"),
        (dict(samples_per_step=2.5), "M"),
        (dict(sigma=0.0), "sigma"),
        (dict(sigma=-0.1), "sigma"),
        (dict(sigma=float("nan")), "sigma"),
        (dict(low=[0.0, 1.0], high=[1.0, 1.0], mu0=[0.5, 1.0]), "empty or inverted"),
        (dict(low=[0.0, 2.0], high=[1.0, 1.0], mu0=[0.5, 1.0]), "empty or inverted"),
        (dict(low=[], high=[], mu0=[]), "empty"),
        (dict(mu0=[0.5, 1.5]), "outside the box"),
        (dict(mu0=[0.5]), "shape"),
        (dict(baseline="median"), "baseline"),
        (dict(baseline="mu"), "include_mean"),
        (dict(clip_eps=1.5), "clip_eps"),
        (dict(update_steps=0), "update_steps"),
    ],
)
def test_ppo2_constructor_errors(kw, match) -> None:
    args = dict(low=[0.0, 0.0], high=[1.0, 1.0], mu0=[0.5, 0.5], samples_per_step=4)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        PPO2(**args)


def test_random_search_constructor_errors() -> None:
    with pytest.raises(ValueError, match="M"):
        RandomSearch(low=[0.0], high=[1.0], samples_per_step=1)
    with pytest.raises(ValueError, match="inverted"):
        RandomSearch(low=[1.0], high=[0.0], samples_per_step=4)


@pytest.mark.parametrize("opt", [
    _ppo(0, d=3, m=4),
    RandomSearch(low=np.zeros(3), high=np.ones(3), samples_per_step=4, seed=0),
])
def test_tell_errors(opt) -> None:
    x = opt.ask()
    with pytest.raises(ValueError, match="M=4"):
        opt.tell(x, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="NaN"):
        opt.tell(x, [1.0, float("nan"), 3.0, 4.0])
    with pytest.raises(ValueError, match="shape"):
        opt.tell(x[:, :2], [1.0, 2.0, 3.0, 4.0])
    bad = x.copy()
    bad[0, 0] = 1.5
    with pytest.raises(ValueError, match="inside the box"):
        opt.tell(bad, [1.0, 2.0, 3.0, 4.0])
    assert opt.step == 0 and opt.history == []  # nothing was half-applied
    opt.tell(x, [1.0, 2.0, 3.0, 4.0])
    assert opt.step == 1


def test_ppo2_update_is_fast_enough() -> None:
    """One update at D=24, M=32 with the paper's 60 inner steps (goal < 10 ms; loose bound)."""
    import time

    opt = _ppo(0, d=24, m=32)
    x = opt.ask()
    r = bowl(x)
    t0 = time.perf_counter()
    opt.tell(x, r)
    assert time.perf_counter() - t0 < 0.5


# --------------------------------------------------------------------------- PPO2 options
# (issue 29.3: a uniform start-up step, rank advantages, mirrored draws)
def test_uniform_startup_step_is_uniform_in_the_box_and_mu1_is_its_best() -> None:
    low, high = np.array([0.0, -2.0, 10.0]), np.array([1.0, 2.0, 12.0])
    opt = PPO2(low=low, high=high, mu0=[0.1, -1.9, 10.1], samples_per_step=400, seed=3,
               startup="uniform")
    x = opt.ask()
    assert np.all(x >= low) and np.all(x <= high)
    for d in range(3):  # uniform on [low, high], not a truncated normal around mu0
        u = (x[:, d] - low[d]) / (high[d] - low[d])
        assert stats.kstest(u, "uniform").pvalue > 1e-3
    r = -np.abs(x - [0.8, 1.0, 11.5]).sum(axis=1)
    opt.tell(x, r)
    np.testing.assert_allclose(opt.mu, x[np.argmax(r)], atol=1e-7)  # no PPO update
    h = opt.history[0]
    assert h["startup"] is True and h["clip_fraction"] is None
    np.testing.assert_allclose(h["mu"], [0.5, 0.0, 11.0])  # the uniform draw's mean
    # step 1 is an ordinary PPO step around mu_1
    x1 = opt.ask()
    opt.tell(x1, -np.abs(x1 - [0.8, 1.0, 11.5]).sum(axis=1))
    assert "startup" not in opt.history[1] and opt.history[1]["clip_fraction"] is not None
    np.testing.assert_allclose(opt.history[1]["mu"], x[np.argmax(r)], atol=1e-7)


def test_uniform_startup_draws_policy_samples_in_unbounded_dimensions() -> None:
    opt = PPO2(low=[0.0, -np.inf], high=[1.0, np.inf], mu0=[0.5, 3.0], samples_per_step=300,
               sigma=0.5, seed=0, startup="uniform")
    x = opt.ask()
    assert stats.kstest(x[:, 0], "uniform").pvalue > 1e-3
    assert abs(x[:, 1].mean() - 3.0) < 0.15 and abs(x[:, 1].std() - 0.5) < 0.1


def test_rank_advantages_are_invariant_to_monotone_transforms() -> None:
    rng = np.random.default_rng(0)
    r = rng.normal(size=8)
    a = _ppo(0, d=3, m=8, advantages="rank")
    for f in (np.exp, lambda v: 5 * v + 3, lambda v: v**3, lambda v: np.where(v < 0, 0.0, v)):
        if f is not np.exp and len(set(f(r))) < len(r):  # ties (the 0.0 failures) share a rank
            continue
        np.testing.assert_allclose(a.advantages(f(r)), a.advantages(r))
    # centred, in [-1/2, 1/2], an independent reference: (argsort of argsort) / (M - 1)
    ref = np.argsort(np.argsort(r)) / 7.0 - 0.5
    np.testing.assert_allclose(a.advantages(r), ref)
    # ties share their mean rank; baseline "mu" centres on sample 0's rank
    np.testing.assert_allclose(a.advantages([0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                               (np.array([0.5, 0.5, 2, 3, 4, 5, 6, 7]) - 3.5) / 7.0)
    mu_base = _ppo(0, d=3, m=8, advantages="rank", baseline="mu", include_mean=True)
    adv = mu_base.advantages(r)
    assert adv[0] == 0.0 and np.allclose(adv, ref - ref[0])
    # the whole update follows ranks only: rewards and exp(rewards) move mu identically
    x = _ppo(5, d=3, m=8).ask()
    b1, b2 = _ppo(5, d=3, m=8, advantages="rank"), _ppo(5, d=3, m=8, advantages="rank")
    b1.ask(), b2.ask()
    b1.tell(x, bowl(x)), b2.tell(x, np.exp(50 * bowl(x)))
    np.testing.assert_array_equal(b1.mu, b2.mu)
    plain1, plain2 = _ppo(5, d=3, m=8), _ppo(5, d=3, m=8)
    plain1.ask(), plain2.ask()
    plain1.tell(x, bowl(x)), plain2.tell(x, np.exp(50 * bowl(x)))
    assert not np.allclose(plain1.mu, plain2.mu)  # the default is not rank-invariant


def _std_normal_noise(x, mu, scale, low, high):
    """Phi^-1 of each sample's quantile under its truncated normal [M, D] (scipy: an
    independent reference for the sampler)."""
    a, b = (low - mu) / scale, (high - mu) / scale
    q = stats.truncnorm.cdf(x, a, b, loc=mu, scale=scale)
    return stats.norm.ppf(q)


@pytest.mark.parametrize("include_mean", [False, True])
def test_mirrored_pairs_are_symmetric_in_the_standard_normal_space(include_mean) -> None:
    low, high = np.array([0.0, 0.0, -1.0]), np.array([1.0, 1.0, 3.0])
    mu0 = np.array([0.9, 0.5, 0.0])  # near a bound: the truncation is asymmetric there
    opt = PPO2(low=low, high=high, mu0=mu0, samples_per_step=9, seed=1, sigma=0.3,
               mirrored=True, include_mean=include_mean,
               baseline="mu" if include_mean else "mean")
    x = opt.ask()
    assert np.all(x >= low) and np.all(x <= high)
    first = 1 if include_mean else 0
    if include_mean:
        np.testing.assert_allclose(x[0], opt.mu)
    z = _std_normal_noise(x[first:], opt.mu, opt.scale, low, high)
    pairs = (9 - first) // 2
    np.testing.assert_allclose(z[0:2 * pairs:2], -z[1:2 * pairs:2], atol=1e-6)
    # in dimension 1 (mu at the centre) the pairs are symmetric around mu in x itself
    np.testing.assert_allclose(x[first:first + 2 * pairs:2, 1] - 0.5,
                               0.5 - x[first + 1:first + 2 * pairs:2, 1], atol=1e-9)
    # each sample is still a truncated normal draw: KS over many mirrored draws
    big = PPO2(low=low, high=high, mu0=mu0, samples_per_step=2000, seed=2, sigma=0.3,
               mirrored=True).ask()
    a, b = (low - mu0) / (0.3 * (high - low)), (high - mu0) / (0.3 * (high - low))
    for d in range(3):
        cdf = stats.truncnorm(a[d], b[d], loc=mu0[d], scale=0.3 * (high[d] - low[d])).cdf
        assert stats.kstest(big[:, d], cdf).pvalue > 1e-3
    # the log-density the update uses is the exact one (scipy reference)
    lp = TruncatedNormal(low, high).log_prob(x, opt.mu, opt.scale)
    ref = stats.truncnorm.logpdf(x, (low - opt.mu) / opt.scale, (high - opt.mu) / opt.scale,
                                 loc=opt.mu, scale=opt.scale)
    np.testing.assert_allclose(lp, ref, rtol=1e-9, atol=1e-9)


OPTION_SETS = [
    dict(startup="uniform"),
    dict(advantages="rank"),
    dict(mirrored=True),
    dict(startup="uniform", advantages="rank", mirrored=True, baseline="mu",
         include_mean=True),
]


@pytest.mark.parametrize("kw", OPTION_SETS)
def test_options_survive_state_dict_and_pickle_and_continue_identically(kw) -> None:
    a = _run(_ppo(4, d=4, m=6, **kw), bowl, 2)
    a.ask()
    b = PPO2.from_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    assert (b.startup, b.advantage_rule, b.mirrored) == (a.startup, a.advantage_rule,
                                                         a.mirrored)
    _run(a, bowl, 3), _run(b, bowl, 3)
    np.testing.assert_array_equal(a.mu, b.mu)
    assert a.history == b.history


def test_state_dicts_before_the_options_load_as_the_paper() -> None:
    state = _run(_ppo(4, d=3, m=4), bowl, 1).state_dict()
    for key in ("startup", "advantages", "mirrored"):
        del state[key]
    b = PPO2.from_state_dict(state)
    assert (b.startup, b.advantage_rule, b.mirrored) == ("policy", "baseline", False)


def test_default_options_draw_exactly_as_before() -> None:
    """The defaults consume the RNG as the paper's PPO2 always did (stored searches replay)."""
    x = _ppo(9, d=3, m=5).ask()
    mu = np.full(3, 0.5)
    ref = TruncatedNormal(np.zeros(3), np.ones(3)).sample(mu, 0.2, 5, np.random.default_rng(9))
    np.testing.assert_array_equal(x, ref)


@pytest.mark.parametrize("kw", OPTION_SETS)
def test_replay_through_the_step_protocol_gives_identical_thetas(kw) -> None:
    from autoloss_ray.search import StepProtocol

    class Space:
        names = ("a", "b", "c")

        def to_config(self, theta):
            return {"theta": [float(v) for v in theta]}

        def from_config(self, config):
            return np.asarray(config["theta"])

    def protocol():
        p = StepProtocol(steps=3, samples_per_step=6)
        p.space, p.mode, p.metric = Space(), "max", "r"
        p.optimizer = _ppo(7, d=3, m=6, **kw)
        return p

    p, results = protocol(), []
    while not p.finished:
        step = p.step
        for _ in range(6):
            i = p.hand_out(None)
            theta = p.thetas[i]
            v = float(bowl(theta)[0]) if i != 3 else float("nan")  # one failed trial a step
            results.append({"step": step, "sample": i, "config": p.config(step, i),
                            "value": v})
            p.tell(i, None, v)
    q = protocol()
    assert q.replay(results) == 18 and q.finished
    assert [r["thetas"] for r in q.records] == [r["thetas"] for r in p.records]
    np.testing.assert_array_equal(q.optimizer.mu, p.optimizer.mu)
    other = protocol()
    other.optimizer = _ppo(7, d=3, m=6)  # the paper's options draw other thetas
    with pytest.raises(ValueError, match="resume with the options"):
        other.replay(results)


@pytest.mark.parametrize("kw, match", [
    (dict(startup="sobol"), "startup must be one of"),
    (dict(advantages="zscore"), "advantages must be one of"),
    (dict(mirrored="yes"), "mirrored must be True or False"),
])
def test_ppo2_option_errors(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        _ppo(0, d=2, m=4, **kw)
