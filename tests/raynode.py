"""Start and stop a Ray head of a test's own (own temp dir, own free ports) on a shared
machine, and stop exactly its processes afterwards (never a machine-wide `ray stop`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head_ports() -> dict[str, int]:
    """A free port for every server a head starts: Ray's defaults (10001, 52365, ...) would
    collide with any other head on this machine."""
    names = ("port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port",
             "node-manager-port", "object-manager-port")
    return {n: free_port() for n in names}


def start_head(temp_dir: str, ports: dict[str, int], *extra: str, env=None,
               timeout: float = 240, attempts: int = 5) -> None:
    """`ray start --head` on ``ports``; retried when the head times out during startup (Ray
    2.60 waits a fixed 30 s for its raylet, too short on a busy shared machine)."""
    args = [RAY, "start", "--head", "--temp-dir", temp_dir, "--disable-usage-stats",
            *[f"--{k}={v}" for k, v in ports.items()], *extra]
    for _attempt in range(attempts):
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
        if out.returncode == 0:
            return
        if "timed out during startup" not in out.stderr + out.stdout:
            break
        kill_head(temp_dir, ports["port"])
    raise AssertionError(out.stdout[-2000:] + out.stderr[-2000:])


def head_pids(temp_dir: str, gcs_port: int) -> list[int]:
    """Processes of this head: every one names its temp dir on its command line, except
    Ray's client server, which names the head's GCS address."""
    me, pids = os.getpid(), []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if temp_dir.encode() in cmd or (
            b"ray.util.client.server" in cmd and f":{gcs_port}\0".encode() in cmd
        ):
            pids.append(int(pid))
    return pids


def kill_head(temp_dir: str, gcs_port: int) -> list[int]:
    """SIGKILL the processes of this head; returns the pids still alive after 10 s."""
    for pid in head_pids(temp_dir, gcs_port):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [p for p in head_pids(temp_dir, gcs_port) if _alive(p)]
        if not left:
            return []
        time.sleep(0.5)
    return left


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


# A job submitted through the Jobs API and waited for, as `python -c SUBMIT_JOB DASHBOARD
# ENTRYPOINT SECONDS [...]` in a process of its own (Ray reads RAY_AUTH_MODE once per process,
# and earlier tests of the same pytest session may have used Ray without token auth). Code
# appended to it finds `client`, `job_id` and `status`; extra arguments start at sys.argv[4].
# Connects `client` to the Jobs API at `dashboard`, which comes up shortly after `ray start`
# (for scripts run as `python -c`; needs `time` and JobSubmissionClient imported).
CONNECT_CLIENT = r"""
deadline = time.monotonic() + 60
while True:
    try:
        client = JobSubmissionClient(dashboard)
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
"""

SUBMIT_JOB = r"""
import json, sys, time
from ray.job_submission import JobStatus, JobSubmissionClient
dashboard, entrypoint, wait = sys.argv[1], sys.argv[2], float(sys.argv[3])
""" + CONNECT_CLIENT + r"""
deadline = time.monotonic() + 120
while True:  # the job agent comes up a little after the head
    try:
        job_id = client.submit_job(entrypoint=entrypoint)
        break
    except RuntimeError as e:
        if "No available agent" not in str(e) or time.monotonic() > deadline:
            raise
        time.sleep(2)
deadline = time.monotonic() + wait
while time.monotonic() < deadline:
    status = client.get_job_status(job_id)
    if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        break
    time.sleep(1)
"""
