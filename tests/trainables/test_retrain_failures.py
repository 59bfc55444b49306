"""A retrain whose every trial fails says why, and frees its experiment name (issue 32.4)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

AUTOLOSS = str(Path(sys.executable).with_name("autoloss"))

# A model that passes the up-front probe (eval mode, no grad) and fails in training.
FAILING_PY = '''
import torch
from torch import nn


class FailsInTraining(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 1)

    def forward(self, x):
        if self.training and torch.is_grad_enabled():
            raise RuntimeError("the user's model broke in training")
        return self.conv(x)


def build(num_classes):
    return FailsInTraining(num_classes)
'''


@pytest.mark.slow
def test_a_retrain_whose_every_trial_fails_prints_the_error_and_frees_the_name(tmp_path, capsys,
                                                                            monkeypatch):
    (tmp_path / "failing.py").write_text(FAILING_PY)
    common = ["--iterations", "2", "--batch-size", "2", "--image-size", "16",
              "--train-size", "8", "--gpus-per-trial", "0", "--experiment", "r"]

    def retrain(model: str) -> subprocess.CompletedProcess:
        return subprocess.run([AUTOLOSS, "retrain", "--loss", "ce", "--model", model, *common],
                              cwd=tmp_path, capture_output=True, text=True, timeout=400)

    out = retrain("failing:build")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("autoloss retrain: error: every trial failed") and \
        "the user's model broke in training" in last, last
    assert "results_table" not in out.stdout + out.stderr

    from autoloss_ray.store import ExperimentStore

    store = ExperimentStore(tmp_path / "runs" / "store")
    assert list(store.trials("r")["status"]) == ["failed"]
    again = retrain("tiny")  # the same name: only failed rows were there
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "removed 1 row(s) of an earlier retrain" in again.stdout
    assert list(store.trials("r")["status"]) == ["ok"]
    # now it holds a result: refused before Ray starts (so in this process, argparse included)
    from autoloss_app.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert cli_main(["retrain", "--loss", "ce", "--model", "tiny", *common]) == 2
    assert "already has rows" in capsys.readouterr().err
