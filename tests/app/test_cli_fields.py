"""One definition per option (issue 30): the flags of ``autoloss search`` / ``search.py`` are
generated from the fields of :class:`SearchOptions` (default, help, choices, nargs, action in
the field), and the library's search sizes come from ``autoloss_ray.search.config``."""

from __future__ import annotations

import argparse
import dataclasses
import inspect

import pytest

from autoloss_app import cli
from autoloss_app.options import SearchOptions


def _search_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="search.py")
    cli.add_search_arguments(parser)
    return parser


def test_every_option_is_a_flag_with_its_fields_default() -> None:
    actions = {a.dest: a for a in _search_parser()._actions}
    fields = {f.name: f for f in dataclasses.fields(SearchOptions)}
    # every field but verbose (-q/--quiet) and extra_config (no flag) has a flag of its name
    assert set(cli.SEARCH_FIELDS) == set(fields) - {"verbose", "extra_config"}
    assert set(actions) == set(cli.SEARCH_FIELDS) | {"help", "quiet"}
    for name in cli.SEARCH_FIELDS:
        action, f = actions[name], fields[name]
        flag = "--" + name.replace("_", "-")
        assert action.option_strings[0] == flag, name
        if isinstance(action, argparse.BooleanOptionalAction):
            assert action.option_strings == [flag, "--no-" + flag[2:]]
        else:
            assert action.option_strings == [flag]
        assert action.default == f.default and type(action.default) is type(f.default), name
        if "choices" in f.metadata:
            assert tuple(action.choices) == tuple(f.metadata["choices"]), name
        # the help's %(default)s is filled in by the generator (what the docs show too)
        assert "%(" not in (action.help or ""), name
        assert bool(action.help) == bool(f.metadata.get("help")), name


def test_no_flags_give_the_default_options() -> None:
    args = _search_parser().parse_args([])
    assert cli.search_options_from_args(args) == SearchOptions()


def test_flags_reach_their_fields() -> None:
    argv = ["--metric", "miou+biou", "--no-crn", "--image-size", "32x48", "--steps", "3",
            "--sigma", "0.5", "--mirrored", "--scheduler", "asha", "--grace-period", "2",
            "--reduction-factor", "3", "--resume", "--answer", "playoff", "-q"]
    opts = cli.search_options_from_args(_search_parser().parse_args(argv))
    assert opts == dataclasses.replace(
        SearchOptions(), metric="miou+biou", crn=False, image_size=(32, 48), steps=3,
        sigma=0.5, mirrored=True, scheduler="asha", grace_period=2, reduction_factor=3.0,
        resume=True, answer="playoff", verbose=0)
    assert type(opts.steps) is int and type(opts.reduction_factor) is float


def test_the_searches_sizes_are_defined_once() -> None:
    from autoloss_ray.search.config import (
        DEFAULT_SAMPLES_PER_STEP,
        DEFAULT_SIGMA,
        DEFAULT_STEPS,
        PPO2Config,
    )
    from autoloss_ray.search.ppo import PPO2
    from autoloss_ray.search.random_search import RandomSearch

    assert (DEFAULT_STEPS, DEFAULT_SAMPLES_PER_STEP, DEFAULT_SIGMA) == (12, 32, 0.2)
    assert PPO2Config().sigma == DEFAULT_SIGMA
    for cls in (PPO2, RandomSearch):
        params = inspect.signature(cls.__init__).parameters
        assert params["samples_per_step"].default == DEFAULT_SAMPLES_PER_STEP
    assert inspect.signature(RandomSearch.__init__).parameters["sigma"].default == DEFAULT_SIGMA
    pytest.importorskip("ray")
    from searchers import CMAESSearcher, PPO2Searcher, RandomSearcher, TPESearcher

    for cls in (PPO2Searcher, RandomSearcher, TPESearcher, CMAESSearcher):
        params = inspect.signature(cls.__init__).parameters
        assert params["steps"].default == DEFAULT_STEPS
        assert params["samples_per_step"].default == DEFAULT_SAMPLES_PER_STEP
        if "sigma" in params:
            assert params["sigma"].default == DEFAULT_SIGMA
