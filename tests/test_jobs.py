"""The search as a Ray job: a real head with its dashboard on 127.0.0.1, the Jobs API, and the
search's Ray metrics on the head's metrics endpoint.

Ray 2.60 here: `ray start --head` turns token authentication on (the token lives in
~/.ray/auth_token) and the job client sends it only with RAY_AUTH_MODE=token set.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from autoloss_ray.store import ExperimentStore

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_head(temp_dir: str) -> None:
    """Stop only the processes of this head (identified by its own temp dir)."""
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if temp_dir.encode() in cmd:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture()
def ray_head(monkeypatch):
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # socket paths must stay short
    gcs_port, dash_port = _free_port(), _free_port()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    # A fresh machine has no ~/.ray/auth_token: give this head (and the clients below, which
    # inherit the environment) a token of its own, never written to disk.
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    out = subprocess.run(
        [RAY, "start", "--head", "--num-cpus", "2", "--port", str(gcs_port),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port),
         "--include-dashboard", "true", "--temp-dir", temp_dir, "--disable-usage-stats"],
        capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    try:
        yield {"dashboard": f"http://127.0.0.1:{dash_port}", "gcs": f"127.0.0.1:{gcs_port}"}
    finally:
        _kill_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


# Runs in its own process: Ray reads RAY_AUTH_MODE once per process, and earlier tests of the
# same pytest session may already have used Ray without token auth.
_CLIENT = r"""
import json, sys, time, urllib.request
from ray.job_submission import JobStatus, JobSubmissionClient
dashboard, gcs, entrypoint = sys.argv[1:4]
deadline = time.monotonic() + 60
while True:  # the job API comes up shortly after `ray start`
    try:
        client = JobSubmissionClient(dashboard)
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
job_id = client.submit_job(entrypoint=entrypoint)
deadline = time.monotonic() + 240
while time.monotonic() < deadline:
    status = client.get_job_status(job_id)
    if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        break
    time.sleep(1)
out = {"status": str(status), "logs": client.get_job_logs(job_id),
       "listed": job_id in {j.submission_id for j in client.list_jobs()}}
import ray
ray.init(address=gcs, log_to_driver=False)
node = ray.nodes()[0]
url = "http://%s:%s/metrics" % (node["NodeManagerAddress"], node["MetricsExportPort"])
deadline, found = time.monotonic() + 30, []
while not found and time.monotonic() < deadline:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    found = [ln for ln in text.splitlines()
             if ln.startswith("ray_autoloss_trials_done") and 'experiment="job"' in ln]
    time.sleep(1)
ray.shutdown()
out["metrics"] = found
print(json.dumps(out))
"""


@pytest.mark.slow
def test_search_submitted_as_a_ray_job_succeeds_and_reports_metrics(
    ray_head, tmp_path: Path
) -> None:
    import json

    store = tmp_path / "store"
    entrypoint = (
        f"{sys.executable} {REPO / 'search.py'} --steps 2 --samples 2 --iterations 6 "
        f"--image-size 32 --train-size 16 --batch-size 4 --store {store} --experiment job"
    )
    proc = subprocess.run(
        [sys.executable, "-c", _CLIENT, ray_head["dashboard"], ray_head["gcs"], entrypoint],
        capture_output=True, text=True, timeout=400,
        env={**os.environ, "RAY_AUTH_MODE": "token"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "SUCCEEDED", out["logs"][-3000:]
    assert "[autoloss] step 2/2" in out["logs"] and "[autoloss] done" in out["logs"]
    assert out["listed"]
    assert len(ExperimentStore(store).trials("job")) == 4
    # the search's gauges reach the head's Prometheus endpoint (what the dashboard charts)
    assert out["metrics"] and float(out["metrics"][-1].rsplit(" ", 1)[1]) == 4.0
