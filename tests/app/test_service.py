"""The search service end to end: the `autoloss` CLI for real, kill-and-resume, multi-node.

Each run is a real subprocess (or a real ``ray.cluster_utils.Cluster``) with a real embedded
Ray, real Parquet files and the real proxy task at a reduced size.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoloss_app.cli import main as cli_main
from autoloss_ray.store import ExperimentStore
from tests import REPO
from tests.tiny import tiny_args

SMALL = tiny_args(iterations=8, train_size=32)


def _autoloss(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "autoloss_app.cli", *args],
        capture_output=True, text=True, env=env, **kw,
    )


def _in_process(capsys, *args: str) -> subprocess.CompletedProcess:
    """``autoloss ARGS`` through the CLI's main in this process, for calls that start no
    Ray (refusals, a search with nothing left to run); the same result object as
    :func:`_autoloss`."""
    capsys.readouterr()
    code = cli_main(list(args))
    out = capsys.readouterr()
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized(), "this call started Ray in the test process"
    return subprocess.CompletedProcess(args, code, out.out, out.err)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "args, message",
    [
        (["--metric", "accuracy"], "unknown metric"),
        (["--samples", "1"], "--samples"),
        (["--dataset", "camvid", "--data-root", "/no/such/dir"], "does not exist"),
        (["--dataset", "camvid"], "--data-root"),
        (["--sigma", "0"], "--sigma"),
        (["--experiment", "bad name!"], "--experiment"),
    ],
)
def test_bad_search_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    store = tmp_path / "store"
    code = cli_main(["search", "--store", str(store), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err
    assert not store.exists()
    assert not (tmp_path / "tune").exists()


def test_store_path_that_is_a_file_is_refused(tmp_path: Path, capsys) -> None:
    store = tmp_path / "store"
    store.write_text("not a directory")
    assert cli_main(["search", "--store", str(store)]) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert store.read_text() == "not a directory"


def test_export_and_report_of_unknown_experiment_fail_cleanly(tmp_path: Path, capsys) -> None:
    out = tmp_path / "loss.json"
    assert cli_main(["export", "--store", str(tmp_path / "s"), "--experiment", "nope",
                     "--out", str(out)]) == 2
    assert "no trials" in capsys.readouterr().err
    assert not out.exists()
    assert cli_main(["report", "--store", str(tmp_path / "s"), "--experiment", "nope",
                     "--out", str(tmp_path / "r")]) == 2


def test_every_command_has_help() -> None:
    for command in (["--help"], ["search", "--help"], ["export", "--help"],
                    ["report", "--help"]):
        out = _autoloss(*command, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "usage:" in out.stdout
    out = subprocess.run([sys.executable, "search.py", "--help"], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0 and "--metric" in out.stdout


# --------------------------------------------------------------------------- main job
@pytest.mark.slow
def test_main_job_runs_end_to_end_and_the_exported_loss_trains(tmp_path: Path, capsys) -> None:
    import torch

    from autoloss_ray import SurrogateLoss

    store, steps, samples = tmp_path / "store", 2, 3
    loss_file, report = tmp_path / "loss.json", tmp_path / "report"
    out = _autoloss(
        "search", "--experiment", "demo", "--store", str(store), "--steps", str(steps),
        "--samples", str(samples), *SMALL, "--export", str(loss_file),
        "--report-dir", str(report), timeout=400,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "[autoloss] step 2/2" in out.stdout  # progress while it runs

    s = ExperimentStore(store)
    trials, policy = s.trials("demo"), s.policy("demo")
    assert len(trials) == steps * samples
    assert set(trials["status"]) == {"ok"}
    assert sorted(zip(trials["step"], trials["sample"])) == [
        (t, m) for t in range(steps) for m in range(samples)
    ]
    assert trials[["miou", "fwiou", "biou", "bf1", "macc", "gacc"]].notna().all().all()
    assert (trials["reward"] == trials["miou"]).all()
    assert len(policy) == steps
    assert (report / "report.md").is_file() and (report / "curves.png").stat().st_size > 5000

    loss_fn = SurrogateLoss.from_file(loss_file)
    # the answer: the best trial (--answer best-trial, the default for every searcher)
    best = trials.loc[trials["reward"].astype(float).idxmax(), "theta"]
    assert loss_fn.theta.tolist() == pytest.approx(list(best))
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, loss_fn.num_classes, 3, padding=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.randn(2, 3, 16, 16)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < first - 0.1

    # a second run of the same experiment without --resume is refused and changes nothing
    # (before Ray starts: in this process, as the refusals of the resume test below)
    again = _in_process(capsys, "search", "--experiment", "demo", "--store", str(store), *SMALL)
    assert again.returncode == 2 and "--resume" in again.stderr
    assert len(ExperimentStore(store).trials("demo")) == steps * samples


@pytest.mark.slow
def test_killed_search_resumes_without_losing_or_repeating_trials(tmp_path: Path) -> None:
    store, steps, samples = tmp_path / "store", 3, 2
    args = ["search", "--experiment", "kill", "--store", str(store), "--steps", str(steps),
            "--samples", str(samples), "--max-concurrent", "1", *SMALL]
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoloss_app.cli", *args], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    s = ExperimentStore(store)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(s.trials("kill")) >= 3:
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its embedded Ray
        proc.wait()
    done_before = len(s.trials("kill"))
    assert 1 <= done_before < steps * samples, "the kill must land mid-search"

    out = _autoloss(*args, "--resume", env=env, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    trials = s.trials("kill")
    pairs = sorted(zip(trials["step"], trials["sample"]))
    assert pairs == [(t, m) for t in range(steps) for m in range(samples)]
    assert len(s.policy("kill")) == steps
    assert list(s.policy("kill")["step"]) == list(range(steps))


@pytest.mark.slow
def test_resume_rebuilds_the_search_from_the_store_alone(tmp_path: Path, capsys) -> None:
    """The store is the source of truth: with the newest rows lost (killed before they were
    written) and Tune's own experiment directory gone, --resume runs exactly the missing
    samples with the thetas the uninterrupted search drew, and ends at the same policy."""
    import shutil

    store, tune_dir, steps, samples = tmp_path / "store", tmp_path / "tune", 2, 3
    args = ["search", "--experiment", "lost", "--store", str(store), "--steps", str(steps),
            "--samples", str(samples), "--max-concurrent", "1", "--seed", "4", *SMALL]
    out = _autoloss(*args, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"with ppo: {steps} steps x {samples} trials" in out.stdout  # the default searcher
    s = ExperimentStore(store)
    full, full_policy = s.trials("lost"), s.policy("lost")
    key = lambda df: {(int(a), int(b)): (list(t), r) for a, b, t, r in  # noqa: E731
                      zip(df["step"], df["sample"], df["theta"], df["reward"])}
    expected = key(full)

    # lose the two newest rows (mid step 1), every policy row (the replay rewrites step 0's)
    # and every file Tune wrote
    lost = {(1, 1), (1, 2)}
    for step, sample, trial_id in zip(full["step"], full["sample"], full["trial_id"]):
        if (step, sample) in lost:
            os.unlink(s.trial_path("lost", trial_id))
    for step in full_policy["step"]:
        os.unlink(s.policy_path("lost", int(step)))
    shutil.rmtree(tune_dir)
    # resuming with different search options is refused and changes nothing (the calls
    # that start no Ray run in this process: a child would only add ~5 s of imports)
    bad = _in_process(capsys, *[a if a != "4" else "5" for a in args], "--resume")
    assert bad.returncode == 2 and "--seed was 4, now 5" in bad.stderr, bad.stderr
    assert len(s.trials("lost")) == steps * samples - len(lost)

    out = _autoloss(*args, "--resume", timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"resuming: {steps * samples - len(lost)} trials from the store" in out.stdout
    again = key(s.trials("lost"))
    assert sorted(again) == sorted(expected)  # nothing lost, nothing twice
    for k, (theta, reward) in expected.items():
        assert again[k][0] == pytest.approx(theta, abs=1e-12)  # same draws
        assert again[k][1] == pytest.approx(reward, abs=1e-6)  # trials are deterministic
    policy = s.policy("lost")
    assert list(policy["step"]) == list(range(steps))
    for a, b in zip(full_policy["mu_next"], policy["mu_next"]):
        assert list(b) == pytest.approx(list(a), abs=1e-6)

    # a complete search resumes to nothing and runs nothing; a short command line takes
    # every option it does not give from the search's manifest
    done = _in_process(capsys, "search", "--experiment", "lost", "--store", str(store),
                       "--resume")
    assert done.returncode == 0 and "nothing to run" in done.stdout, done.stderr[-2000:]
    assert len(s.trials("lost")) == steps * samples

    # a larger --steps extends the finished search, and the manifest remembers it
    short = ["search", "--experiment", "lost", "--store", str(store), "--resume"]
    more = _autoloss(*short, "--steps", str(steps + 1), timeout=400)
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-3000:]
    assert len(s.trials("lost")) == (steps + 1) * samples
    assert list(s.policy("lost")["step"]) == list(range(steps + 1))
    assert s.read_search("lost")["steps"] == steps + 1
    again = _in_process(capsys, *short)
    assert again.returncode == 0 and "nothing to run" in again.stdout, again.stderr[-2000:]
    fewer = _in_process(capsys, *short, "--steps", "1")
    assert fewer.returncode == 2 and "fewer steps" in fewer.stderr, fewer.stderr[-2000:]


def test_resume_options_check_and_previous_results_without_ray(tmp_path: Path) -> None:
    """Which options a resume may change, and how store rows become replay results (the
    last finished row of a sample counts; failed and NaN rows replay as failures)."""
    import math

    import numpy as np
    import pandas as pd

    from autoloss_app.options import OptionsError, SearchOptions
    from autoloss_app.resume import check_resume_options, previous_results, search_manifest
    from trainables.progress import ProgressCallback

    base = SearchOptions(store=str(tmp_path / "s"), steps=2, samples=3).resolved()
    manifest = search_manifest(base)
    check_resume_options(base, manifest)
    runtime = SearchOptions(store=str(tmp_path / "other"), steps=5, samples=3,
                            max_concurrent=1, gpus_per_trial=0.25, verbose=0,
                            address="auto").resolved()
    check_resume_options(runtime, manifest)  # resources, paths and T may change
    for change, name in [({"seed": 1}, "--seed"), ({"sigma": 0.3}, "--sigma"),
                         ({"metric": "biou"}, "--metric"), ({"samples": 4}, "--samples"),
                         ({"iterations": 9}, "--iterations")]:
        other = SearchOptions(store=str(tmp_path / "s"), steps=2,
                              **{"samples": 3, **change}).resolved()
        with pytest.raises(OptionsError, match=name):
            check_resume_options(other, manifest)

    store = ExperimentStore(tmp_path / "s")
    rows = [  # (step, sample, reward, status, finished_at)
        (0, 0, 0.5, "ok", 3.0), (0, 0, 0.9, "ok", 9.0), (0, 1, None, "failed", 4.0),
        (0, 2, float("nan"), "nan", 5.0),
    ]
    for i, (step, sample, reward, status, at) in enumerate(rows):
        store.write_trial({"experiment": "e", "trial_id": f"t{i}", "kind": "search",
                           "step": step, "sample": sample, "theta": [0.1 * i, 0.2],
                           "reward": reward, "status": status,
                           "finished_at": pd.Timestamp(at, unit="s", tz="UTC")})
    store.write_trial({"experiment": "e", "trial_id": "r0", "kind": "retrain",
                       "reward": 0.99, "status": "ok"})
    kept, results = previous_results(store, "e")
    assert sorted((r["step"], r["sample"]) for r in results) == [(0, 0), (0, 1), (0, 2)]
    last = next(r for r in results if r["sample"] == 0)
    assert last["value"] == 0.9 and last["trial_id"] == "t1"  # the later row counts
    assert np.allclose(last["config"]["theta"], [0.1, 0.2])
    assert all(math.isnan(r["value"]) for r in results if r["sample"] in (1, 2))
    progress = ProgressCallback(experiment="e", steps=2, samples=3)
    progress.count_previous(kept)
    assert (progress.done, progress.failed, progress.best) == (3, 2, 0.9)


def test_short_resume_command_takes_the_original_options(tmp_path: Path) -> None:
    from autoloss_app.cli import build_parser, explicit_search_options, search_options_from_args
    from autoloss_app.options import SearchOptions
    from autoloss_app.resume import search_manifest

    store = tmp_path / "s"
    original = SearchOptions(store=str(store), experiment="e", metric="biou", seed=7,
                             samples=3, steps=2, sigma=0.3, iterations=9,
                             gpus_per_trial=0.5).resolved()
    ExperimentStore(store).write_search("e", search_manifest(original))
    argv = ["search", "--experiment", "e", "--store", str(store), "--resume",
            "--max-concurrent", "1", "-q"]
    assert explicit_search_options(argv[1:]) == {"experiment", "store", "resume",
                                                 "max_concurrent", "quiet"}
    args = build_parser().parse_args(argv)
    opts = search_options_from_args(args, explicit=explicit_search_options(argv[1:]))
    opts = opts.resolved()
    assert (opts.metric, opts.seed, opts.samples, opts.steps, opts.sigma, opts.iterations,
            opts.gpus_per_trial) == ("biou", 7, 3, 2, 0.3, 9, 0.5)  # from the manifest
    assert (opts.max_concurrent, opts.verbose) == (1, 0)  # from the command line
    # without --resume nothing comes from a manifest
    fresh = search_options_from_args(build_parser().parse_args(argv[:5]),
                                     explicit=explicit_search_options(argv[1:5]))
    assert fresh.metric == "miou" and fresh.seed == 0


# --------------------------------------------------------------------------- multi-node
@pytest.mark.slow
def test_trials_spread_over_nodes_of_a_multi_node_cluster(tmp_path: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from autoloss_app.options import SearchOptions
    from autoloss_app.search_job import run_search

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0,
                                                            "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, num_gpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        opts = SearchOptions(
            steps=2, samples=4, iterations=8, image_size=32, train_size=32, batch_size=4,
            gpus_per_trial=0.5, cpus_per_trial=0.5, store=str(tmp_path / "store"),
            experiment="nodes", verbose=0,
        )
        outcome = run_search(opts)
    finally:
        ray.shutdown()
        cluster.shutdown()
    trials = ExperimentStore(tmp_path / "store").trials("nodes")
    assert outcome["trials"] == 8 and len(trials) == 8
    assert set(trials["status"]) == {"ok"}
    import json

    node_ids = set(trials["node_id"])  # Ray's node id has its own column
    assert len(node_ids) == 2, node_ids  # both worker nodes ran trials, the head none
    assert trials["node_ip"].notna().all()
    gpu_ids = [json.loads(e).get("gpu_ids") for e in trials["extra_json"]]
    # every trial was pinned to one (fake) GPU; ids are a comma-separated string
    assert all(isinstance(g, str) and g and "," not in g for g in gpu_ids)


def test_relative_data_root_reaches_trials_as_an_absolute_path(tmp_path: Path,
                                                               monkeypatch) -> None:
    """Trials run in their own working directory, so a relative --data-root must be resolved
    on the driver (a CamVid search with `--data-root ../shared/...` once failed every trial)."""
    from autoloss_app.options import SearchOptions

    (tmp_path / "camvid").mkdir()
    monkeypatch.chdir(tmp_path)
    opts = SearchOptions(dataset="camvid", data_root="camvid",
                         store=str(tmp_path / "s")).resolved()
    assert opts.trial_config()["data_root"] == str(tmp_path / "camvid")


def test_resume_with_nothing_to_resume_is_refused_before_anything_starts(
    tmp_path: Path, capsys
) -> None:
    store = tmp_path / "store"
    code = cli_main(["search", "--store", str(store), "--experiment", "none", "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--resume" in err and err.count("\n") == 0
    assert not (tmp_path / "tune").exists() and not store.exists()
