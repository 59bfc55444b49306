"""End-to-end tests of the search service (issue 6, Tests part).

Partial: the main-job subprocess test and bad CLI input. Kill-and-resume, multi-node
(ray.cluster_utils.Cluster) and the Ray Jobs API test are still to be written (see the
report of the helper session; findings on the Jobs API are in the docstring below).

Jobs API findings (ray 2.60 here): a head from `ray start --head ... --include-dashboard true`
demands a token; JobSubmissionClient only sends it when RAY_AUTH_MODE=token is in the
*environment before ray is imported* (it then reads ~/.ray/auth_token or RAY_AUTH_TOKEN);
RAY_AUTH_TOKEN alone is not enough. Right after `ray start` returns, submit_job may answer
500 "No available agent to submit job": poll/retry until the dashboard agent registers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--iterations", "10", "--image-size", "32", "--train-size", "32",
         "--batch-size", "4", "--gpus-per-trial", "0"]


@pytest.mark.slow
def test_main_job_subprocess(tmp_path):
    import torch

    from autoloss_ray.store import ExperimentStore
    from autoloss_ray.surrogates import SurrogateLoss

    T, M = 2, 2
    store, loss_path = tmp_path / "store", tmp_path / "loss.json"
    cmd = [sys.executable, "-m", "autoloss_ray.cli", "search", "--steps", str(T),
           "--samples", str(M), *SMALL, "--store", str(store), "--experiment", "main",
           "--export", str(loss_path), "--report-dir", str(tmp_path / "report")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[autoloss] step" in proc.stdout
    st = ExperimentStore(store)
    trials, policy = st.trials("main"), st.policy("main")
    assert len(trials) == T * M and (trials["status"] == "ok").all()
    assert sorted(zip(trials["step"], trials["sample"])) == [(s, m) for s in range(T)
                                                             for m in range(M)]
    assert len(policy) == T
    loss = SurrogateLoss.from_file(loss_path)
    torch.manual_seed(0)
    C = loss.num_classes if hasattr(loss, "num_classes") else 3
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, C, 1))
    x = torch.randn(4, 3, 16, 16)
    y = (x[:, 0] > 0).long() % C
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    first = float(loss(model(x), y))
    for _ in range(30):
        opt.zero_grad()
        value = loss(model(x), y)
        value.backward()
        opt.step()
    assert float(loss(model(x), y)) < first


def _cli(argv):
    from autoloss_ray.cli import main

    return main(argv)


@pytest.mark.parametrize("extra", [
    ["--metric", "nosuch"],
    ["--dataset", "camvid", "--data-root", "/nonexistent/camvid"],
    ["--samples", "1"],
])
def test_bad_cli_input(tmp_path, capsys, extra):
    store = tmp_path / "store"
    rc = _cli(["search", "--store", str(store), "--experiment", "bad", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "error" in err
    assert not store.exists() and not (tmp_path / "tune").exists()


def test_store_is_a_file(tmp_path, capsys):
    store = tmp_path / "store"
    store.write_text("x")
    rc = _cli(["search", "--store", str(store), "--experiment", "bad"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "file" in err and err.count("\n") == 0
    assert store.read_text() == "x"


def test_resume_with_nothing_to_resume(tmp_path, capsys):
    store = tmp_path / "store"
    rc = _cli(["search", "--store", str(store), "--experiment", "none", "--resume"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "resume" in err and err.count("\n") == 0
    assert not (tmp_path / "tune").exists() and not store.exists()
