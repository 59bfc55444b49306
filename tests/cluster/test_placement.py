"""Work Ray could never place is refused in one line instead of waiting forever (issue 32.1)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoloss_ray.validation import missing_resources


def test_missing_resources_names_only_what_does_not_fit():
    have = {"CPU": 2.0, "memory": 1e9, "node:127.0.0.1": 1.0}
    assert missing_resources({"CPU": 2.0}, have) == {}
    assert missing_resources({"CPU": 3.0}, have) == {"CPU": (3.0, 2.0)}
    assert missing_resources({"CPU": 1.0, "GPU": 0.25}, have) == {"GPU": (0.25, 0.0)}
    assert missing_resources({"CPU": 2.0 + 1e-12}, have) == {}  # float sums of fractions


def _autoloss(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "autoloss_app.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def _refused(out: subprocess.CompletedProcess, *texts: str) -> None:
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 2, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    for text in texts:
        assert text in last, last
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_retrain_with_more_workers_than_the_machine_is_refused_not_hung(tmp_path):
    t0 = time.monotonic()
    out = _autoloss("retrain", "--workers", "64", "--loss", "ce", "--iterations", "2",
                    "--batch-size", "64", "--image-size", "32", "--train-size", "8",
                    "--store", str(tmp_path / "store"), "--experiment", "w64", cwd=tmp_path)
    _refused(out, "retrain --workers 64 needs 65 CPU at once", "would wait forever",
             "use fewer --workers")
    assert time.monotonic() - t0 < 200
    assert not list((tmp_path / "store").rglob("*.parquet"))  # no trial was started


@pytest.mark.slow
def test_evaluate_with_more_workers_than_the_machine_is_refused_not_hung(tmp_path):
    from autoloss_ray.checkpoint import save_checkpoint
    from autoloss_ray.models import build_model

    ckpt = save_checkpoint(tmp_path / "m.pt", build_model("tiny", num_classes=8),
                           model_name="tiny", num_classes=8, dataset="synthetic",
                           image_size=32, ignore_index=255, boundary_tolerance=5)
    out = _autoloss("evaluate", "--checkpoint", str(ckpt), "--workers", "64",
                    "--train-size", "8", cwd=tmp_path)
    _refused(out, "evaluate --workers 64 needs 64 CPU at once", "would wait forever")
