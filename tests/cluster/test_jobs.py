"""The search as a Ray job: a real head with its dashboard on 127.0.0.1, the Jobs API, and the
search's Ray metrics on the head's metrics endpoint.

Ray 2.60 here: `ray start --head` turns token authentication on (the token lives in
~/.ray/auth_token) and the job client sends it only with RAY_AUTH_MODE=token set.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from autoloss_ray.store import ExperimentStore
from tests import REPO
from tests.raynode import CONNECT_CLIENT, head_ports, kill_head, start_head


@pytest.fixture()
def ray_head(monkeypatch):
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # socket paths must stay short
    ports = head_ports()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    # A fresh machine has no ~/.ray/auth_token: give this head (and the clients below, which
    # inherit the environment) a token of its own, never written to disk.
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    monkeypatch.setenv("RAY_metrics_report_interval_ms", "1000")  # gauges reach /metrics fast
    try:
        start_head(temp_dir, ports, "--num-cpus", "2", "--dashboard-host", "127.0.0.1",
                   "--include-dashboard", "true")
        yield {"dashboard": f"http://127.0.0.1:{ports['dashboard-port']}",
               "gcs": f"127.0.0.1:{ports['port']}"}
    finally:
        left = kill_head(temp_dir, ports["port"])
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"processes of the test head survived: {left}"


# The search as a Ray job, end to end: submit it (`ray job submit --working-dir .` as a user
# would, through the client's runtime_env), stop it while it runs, resubmit it with --resume,
# check the search's gauges while it runs, that both jobs are listed, and that an
# unauthenticated submission is refused. (A plain submitted search that runs to the end:
# tests/cluster/test_fake_cluster.py.)
_STOP_RESUME = r"""
import json, sys, time, urllib.error, urllib.request
from pathlib import Path
from ray.job_submission import JobStatus, JobSubmissionClient
import pyarrow.parquet as pq
dashboard, gcs, repo, entrypoint, store = sys.argv[1:6]
""" + CONNECT_CLIENT + r"""
out = {}
# no token: the head refuses the submission
req = urllib.request.Request(dashboard + "/api/jobs/", method="POST",
                             data=json.dumps({"entrypoint": "echo hi"}).encode(),
                             headers={"Content-Type": "application/json"})
try:
    urllib.request.urlopen(req, timeout=30)
    out["unauthenticated"] = "accepted"
except urllib.error.HTTPError as e:
    out["unauthenticated"] = e.code
env = {"working_dir": repo, "excludes": [".git", ".venv", "runs"]}
files = lambda: sorted(p.name for p in Path(store, "trials").rglob("*.parquet"))
def submit(**kw):
    deadline = time.monotonic() + 120
    while True:  # the job agent comes up a little after the head
        try:
            return client.submit_job(**kw)
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(2)
def wait(job_id, until, limit):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if until():
            return True
        time.sleep(0.5)
    return False
first = submit(entrypoint=entrypoint, runtime_env=env)
wait(first, lambda: len(files()) >= 2 or client.get_job_status(first).is_terminal(), 300)
out["running_when_stopped"] = str(client.get_job_status(first))
client.stop_job(first)
wait(first, lambda: client.get_job_status(first).is_terminal(), 120)
out["first_status"] = str(client.get_job_status(first))
time.sleep(2)
before = {}
for p in Path(store, "trials").rglob("*.parquet"):
    t = pq.read_table(p, columns=["finished_at"]).to_pylist()[0]
    before[p.name] = str(t["finished_at"])
out["before"] = before
second = submit(entrypoint=entrypoint + " --resume", runtime_env=env)
import ray
ray.init(address=gcs, log_to_driver=False)
node = ray.nodes()[0]
url = "http://%s:%s/metrics" % (node["NodeManagerAddress"], node["MetricsExportPort"])
found = []
def scrape():
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    found[:] = [ln for ln in text.splitlines()
                if ln.startswith("ray_autoloss_trials_done") and 'experiment="jobres"' in ln]
    if found:
        out["status_when_scraped"] = str(client.get_job_status(second))
    return bool(found) or client.get_job_status(second).is_terminal()
wait(second, scrape, 300)
out["metrics"] = list(found)
wait(second, lambda: client.get_job_status(second).is_terminal(), 400)
out["second_status"] = str(client.get_job_status(second))
out["second_logs"] = client.get_job_logs(second)
out["listed"] = {first, second} <= {j.submission_id for j in client.list_jobs()}
ray.shutdown()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_a_stopped_job_resumed_with_resume_loses_and_repeats_nothing(ray_head, tmp_path: Path):
    import json

    store = tmp_path / "store"
    # `python search.py` relative to the job's working dir (the uploaded repository)
    entrypoint = (
        f"{sys.executable} search.py --steps 4 --samples 2 --iterations 40 "
        f"--image-size 32 --train-size 16 --batch-size 4 --store {store} --experiment jobres "
        "--gpus-per-trial 0 --max-concurrent 1"
    )
    proc = subprocess.run(
        [sys.executable, "-c", _STOP_RESUME, ray_head["dashboard"], ray_head["gcs"], str(REPO),
         entrypoint, str(store)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "RAY_AUTH_MODE": "token"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["unauthenticated"] in (401, 403), out["unauthenticated"]
    assert out["running_when_stopped"] == "RUNNING", out
    assert out["first_status"] == "STOPPED"
    # the resumed job's gauges are on the head's Prometheus endpoint while it runs
    assert out["metrics"] and out.get("status_when_scraped") == "RUNNING", out["metrics"]
    assert out["second_status"] == "SUCCEEDED", out["second_logs"][-3000:]
    assert "[autoloss] resuming:" in out["second_logs"]
    assert "[autoloss] step 4/4" in out["second_logs"] and "[autoloss] done" in out["second_logs"]
    assert out["listed"]  # both jobs in the Jobs API's list
    before = out["before"]
    assert 0 < len(before) < 8  # stopped mid-search
    rows = ExperimentStore(store).trials("jobres")
    assert len(rows) == 8 and not rows.duplicated(["step", "sample"]).any()
    # nothing that had finished ran again: its file is the same one, same finish time
    by_id = {f"{t}.parquet": str(f) for t, f in zip(rows["trial_id"], rows["finished_at"])}
    for name, finished in before.items():
        assert name in by_id
        assert pd_ts(by_id[name]) == pd_ts(finished)


def pd_ts(text: str):
    import pandas as pd

    return pd.Timestamp(text)
