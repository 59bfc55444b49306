"""bench/gpu_check.sh in its dry mode (every stage on CPU, tiny sizes), so it cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests import REPO

SCRIPT = REPO / "bench" / "gpu_check.sh"
STAGES = ("env", "tests", "loss", "metrics", "sync", "trial", "packed", "overhead")


def _run(*args, tmp_path, timeout=60):
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_gpu_check_rejects_bad_arguments_and_prints_help(tmp_path):
    bad = _run("--bogus", "--log", str(tmp_path / "log"), tmp_path=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "unknown argument --bogus" in bad.stderr
    assert not (tmp_path / "log").exists()
    ok = _run("--help", tmp_path=tmp_path)
    assert ok.returncode == 0 and "--dry-run" in ok.stdout and "--prepare" in ok.stdout


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_stage(tmp_path):
    log = tmp_path / "check.log"
    proc = _run("--dry-run", "--log", str(log), tmp_path=tmp_path, timeout=1500)
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    for name in STAGES:
        assert f"== STAGE {name} ok" in text, (name, text[-4000:])
    assert "== STAGE install skipped" in text
    assert f"== SUMMARY {len(STAGES)} of {len(STAGES)} stages ok; failed: none" in text
    # on CPU the sync stage counts host reads in the operator stream (HostReads): the loop of
    # the CUDA code path reads only the loss, every check_every iterations
    assert "syncs in the training loop: 2 (2 expected loss reads, 0 others)" in text, \
        text[text.find("== BEGIN sync"):][:2000]
    assert "EXTRAPOLATED" in text and "packed trials ok: 2 of 2" in text
    assert "overhead: " in text[text.find("== BEGIN overhead"):]
    # the summary lines also go to stdout
    assert proc.stdout.count("== STAGE") == len(STAGES) + 1


@pytest.mark.slow
def test_gpu_check_only_runs_the_named_stages(tmp_path):
    log = tmp_path / "check.log"
    proc = _run("--dry-run", "--only", "sync", "--log", str(log), tmp_path=tmp_path, timeout=300)
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    assert "== STAGE env ok" in text and "== STAGE sync ok" in text
    for name in set(STAGES) - {"env", "sync"}:
        assert f"== STAGE {name} skipped: not in --only" in text, name
    assert "== SUMMARY 2 of 2 stages ok; failed: none" in text
