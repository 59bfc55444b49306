"""PPO2's settings are defined once (issue 30): PPO2Config, shared by PPO2, PPO2Searcher,
SearchOptions and the CLI; the keyword arguments of before still work."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from autoloss_ray.search import PPO2, PPO2Config

BOX = dict(low=np.zeros(3), high=np.ones(3), mu0=np.full(3, 0.4), samples_per_step=6, seed=3)


def _run(opt: PPO2) -> list[list[float]]:
    out = []
    for _ in range(3):
        x = opt.ask()
        opt.tell(x, -np.sum((x - 0.7) ** 2, axis=1))
        out.append(opt.mu.tolist())
    return out


def test_keywords_and_config_are_the_same_optimizer() -> None:
    kw = dict(sigma=0.3, lr=0.1, update_steps=7, baseline="mu", include_mean=True,
              advantages="rank", mirrored=True)
    a = PPO2(**BOX, **kw)
    b = PPO2(**BOX, config=PPO2Config(**kw))
    c = PPO2(**BOX, config=PPO2Config(sigma=0.9, lr=0.1, update_steps=7), baseline="mu",
             include_mean=True, advantages="rank", mirrored=True, sigma=0.3)
    assert a.config == b.config == c.config == PPO2Config(**kw)
    assert _run(a) == _run(b) == _run(c)


def test_defaults_are_the_papers_and_the_state_keeps_its_keys() -> None:
    opt = PPO2(**BOX)
    assert opt.config == PPO2Config()
    state = opt.state_dict()
    fields = [f.name for f in dataclasses.fields(PPO2Config)]
    assert fields == ["sigma", "clip_eps", "lr", "update_steps", "baseline", "include_mean",
                      "sigma_decay", "sigma_min", "startup", "advantages", "mirrored"]
    assert [k for k in state if k in fields] == fields
    again = PPO2.from_state_dict(state)
    assert again.config == opt.config


@pytest.mark.parametrize("bad, match", [
    (dict(sigma=0.0), "sigma must be"), (dict(clip_eps=1.0), "clip_eps must be"),
    (dict(lr=-1.0), "lr must be"), (dict(update_steps=0), "update_steps must be"),
    (dict(baseline="median"), "baseline must be"), (dict(baseline="mu"), "include_mean"),
    (dict(startup="x"), "startup must be"), (dict(advantages="x"), "advantages must be"),
    (dict(mirrored="yes"), "mirrored must be"), (dict(sigma_decay=0.0), "sigma_decay"),
    (dict(sigma_min=-1.0), "sigma_min"),
])
def test_bad_settings_are_refused_by_the_config_and_by_ppo2(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        PPO2Config(**bad)
    with pytest.raises(ValueError, match=match):
        PPO2(**BOX, **bad)


def test_an_unknown_setting_is_named() -> None:
    with pytest.raises(TypeError, match="sigmaa"):
        PPO2(**BOX, sigmaa=0.3)
    with pytest.raises(TypeError, match="PPO2Config"):
        PPO2(**BOX, config={"sigma": 0.3})


def test_the_searcher_takes_keywords_or_a_config() -> None:
    pytest.importorskip("ray")
    from searchers import PPO2Searcher

    a = PPO2Searcher(sigma=0.3, startup="uniform")
    b = PPO2Searcher(config=PPO2Config(sigma=0.3, startup="uniform"))
    assert a.config == b.config == PPO2Config(sigma=0.3, startup="uniform")
    assert a._ppo_kwargs == b._ppo_kwargs  # what searchers pickled by earlier versions hold
    with pytest.raises(ValueError, match="sigma must be"):
        PPO2Searcher(sigma=-1.0)


def test_options_and_cli_take_ppo2s_defaults_and_choices() -> None:
    from autoloss_app.cli import PPO2_OPTIONS, build_parser
    from autoloss_app.options import SearchOptions, ppo2_config

    assert PPO2_OPTIONS == ("sigma", "clip_eps", "lr", "update_steps", "baseline", "startup",
                            "advantages", "mirrored")
    opts = SearchOptions()
    assert ppo2_config(opts) == PPO2Config()
    assert ppo2_config(dataclasses.replace(opts, baseline="mu")) == PPO2Config(
        baseline="mu", include_mean=True)
    search = build_parser()._subparsers._group_actions[0].choices["search"]
    actions = {a.dest: a for a in search._actions}
    for f in dataclasses.fields(PPO2Config):
        if f.name in PPO2_OPTIONS:
            assert actions[f.name].default == f.default == getattr(opts, f.name), f.name
            if "choices" in f.metadata:
                assert tuple(actions[f.name].choices) == f.metadata["choices"]
    args = search.parse_args(["--sigma", "0.3", "--advantages", "rank", "--mirrored"])
    from autoloss_app.cli import _options_from_args

    got = ppo2_config(_options_from_args(args))
    assert got == PPO2Config(sigma=0.3, advantages="rank", mirrored=True)
