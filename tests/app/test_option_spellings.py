"""The options every search shares are checked once (``CommonSearchOptions.validate_common``)
for ``autoloss search`` and ``search_loss``: the same bad value gives the same sentence, naming
the command line's ``--flag-name`` to a CLI user and the ``keyword_name`` to a user of the
Python API (``UserSearchOptions``, what ``search_loss`` builds)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from autoloss_app import cli
from autoloss_app.option_checks import FLAGS, KEYWORDS, check_finite
from autoloss_app.options import OptionsError, SearchOptions
from autoloss_app.user_options import UserSearchOptions


def _cli_error(argv: list[str], tmp: Path) -> str:
    parser = argparse.ArgumentParser(prog="autoloss search")
    cli.add_search_arguments(parser)
    args = parser.parse_args(["--store", str(tmp / "store"), *argv])  # (a later --store wins)
    with pytest.raises(OptionsError) as err:
        cli.search_options_from_args(args).resolved()
    return str(err.value)


def _api_error(values: dict, tmp: Path) -> str:
    with pytest.raises(OptionsError) as err:
        UserSearchOptions(task="m:f", num_classes=4,
                          **{"store": str(tmp / "store"), **values}).resolved()
    return str(err.value)


def _files(tmp: Path) -> tuple[Path, Path]:
    """An existing file and an existing folder under ``tmp``."""
    (tmp / "a_file").write_text("x")
    (tmp / "a_dir").mkdir()
    return tmp / "a_file", tmp / "a_dir"


# (the options the message names, the CLI's argv, the API's keywords; "{file}"/"{dir}": an
# existing file/folder), the message's start as the CLI gives it
SHARED = [
    (("sigma",), ["--sigma", "nan"], {"sigma": float("nan")},
     "--sigma must be a finite number, got nan"),
    (("failure_reward",), ["--failure-reward=-inf"], {"failure_reward": float("-inf")},
     "--failure-reward must be a finite number, got -inf"),
    (("sigma",), ["--sigma=-1"], {"sigma": -1.0}, "--sigma must be > 0, got -1.0"),
    (("gpus_per_trial", "cpus_per_trial"), ["--cpus-per-trial", "0"], {"cpus_per_trial": 0.0},
     "--gpus-per-trial must be >= 0 and --cpus-per-trial > 0, got 1.0 and 0.0"),
    (("gpus_per_trial",), ["--gpus-per-trial", "1.5"], {"gpus_per_trial": 1.5},
     "--gpus-per-trial above 1 must be a whole number, got 1.5"),
    (("max_concurrent",), ["--max-concurrent", "0"], {"max_concurrent": 0},
     "--max-concurrent must be >= 1 (or left out), got 0"),
    (("seed",), ["--seed=-1"], {"seed": -1}, "--seed must be an integer >= 0, got -1"),
    (("experiment",), ["--experiment", "../up"], {"experiment": "../up"},
     "--experiment must be 1-128 letters, digits, '_', '.', '-' (not starting with '.', '_' "
     "or '-'), got '../up'"),
    (("store",), ["--store", "{file}"], {"store": "{file}"},
     "--store '{file}' is an existing file; give a directory path"),
    (("export",), ["--export", "{dir}"], {"export": "{dir}"},
     "--export '{dir}' is an existing directory; give a file path"),
    (("report_dir",), ["--report-dir", "{file}"], {"report_dir": "{file}"},
     "--report-dir '{file}': '{file}' is an existing file; give a directory path"),
    (("tune_dir",), ["--tune-dir", "{file}"], {"tune_dir": "{file}"},
     "--tune-dir '{file}': '{file}' is an existing file; give a directory path"),
    (("init_preset",), ["--init-preset", "nope"], {"init_preset": "nope"},
     "--init-preset must be one of ["),
]


@pytest.mark.parametrize("names, argv, values, start", SHARED,
                         ids=[f"{c[0][0]}-{i}" for i, c in enumerate(SHARED)])
def test_a_shared_check_names_the_flag_on_the_cli_and_the_keyword_in_the_api(
        tmp_path, names, argv, values, start) -> None:
    file, folder = _files(tmp_path)

    def fill(v):
        return v.format(file=file, dir=folder) if isinstance(v, str) else v

    cli_msg = _cli_error([fill(a) for a in argv], tmp_path)
    api_msg = _api_error({k: fill(v) for k, v in values.items()}, tmp_path)
    assert cli_msg.startswith(fill(start)), cli_msg
    as_keywords = cli_msg
    for name in names:
        assert FLAGS(name) in cli_msg and FLAGS(name) not in api_msg, (cli_msg, api_msg)
        as_keywords = as_keywords.replace(FLAGS(name), KEYWORDS(name))
    # the rest of the sentence is the same
    assert api_msg == as_keywords, (cli_msg, api_msg)
    assert "\n" not in cli_msg


def test_a_searcher_out_of_the_choices_names_the_flag_or_the_keyword(tmp_path) -> None:
    # (argparse's choices refuse it on the command line; SearchOptions is also built by code)
    with pytest.raises(OptionsError) as cli_err:
        SearchOptions(searcher="ppo2", store=str(tmp_path / "s")).resolved()
    api_msg = _api_error({"searcher": "ppo2"}, tmp_path)
    assert str(cli_err.value) == "--searcher must be one of ppo, random, tpe, cmaes, got 'ppo2'"
    assert api_msg == "searcher must be one of ppo, random, tpe, cmaes, got 'ppo2'"


def test_a_bad_metric_is_an_options_error_of_the_same_words_in_both(tmp_path) -> None:
    cli_msg = _cli_error(["--metric", "iou"], tmp_path)
    assert cli_msg == _api_error({"metric": "iou"}, tmp_path) and "unknown metric 'iou'" in cli_msg


def test_a_non_int_max_concurrent_or_seed_is_refused_in_both(tmp_path) -> None:
    for value, message in ((2.0, "must be an int >= 1, got 2.0"),
                           (True, "must be an int >= 1, got True")):
        with pytest.raises(OptionsError, match=f"^--max-concurrent {message}$"):
            SearchOptions(max_concurrent=value, store=str(tmp_path / "s")).resolved()
        assert _api_error({"max_concurrent": value}, tmp_path) == f"max_concurrent {message}"
    assert _api_error({"seed": 1.5}, tmp_path) == "seed must be an integer >= 0, got 1.5"


def test_check_finite_names_flags_by_default_and_keywords_when_asked() -> None:
    with pytest.raises(OptionsError, match="^--gpus-per-worker must be a finite number"):
        check_finite(gpus_per_worker=float("nan"))
    with pytest.raises(OptionsError, match="^gpus_per_worker must be a finite number"):
        check_finite(KEYWORDS, gpus_per_worker=float("nan"))


def test_nothing_is_written_by_a_refusal(tmp_path) -> None:
    _cli_error(["--seed=-1"], tmp_path)
    _api_error({"seed": -1}, tmp_path)
    assert list(tmp_path.iterdir()) == []
