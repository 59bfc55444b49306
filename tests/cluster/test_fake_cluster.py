"""The cluster path on one machine: cluster/fake.yaml (Ray's fake multi-node provider, the
node types of gpu.yaml) started as `ray up` would start its head, a search joined to it.

The head has no CPU and no GPU and there are no workers at start (gpu.yaml's `min_workers: 0`):
the trials' GPU requests must reach the autoscaler, which starts fake GPU workers (logical
GPUs), and every trial must run there with a GPU id. Everything runs in the test's own temp
dir and ports and is stopped by its own processes afterwards. The same cluster then takes a
search as a Ray job (`ray job submit`: the Jobs API on the head's dashboard, token auth).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests import REPO

yaml = pytest.importorskip("yaml")

sys.path.insert(0, str(REPO / "cluster"))
from make_fake import CLUSTER, fake_config, render  # noqa: E402

from tests.raynode import SUBMIT_JOB, head_ports, kill_head, start_head  # noqa: E402

# ray 2.60, ray/autoscaler/_private/fake_multi_node/node_provider.py
FAKE_HEAD_NODE_ID = "f" * 51 + "00000"

# `ray job submit` through the Jobs API (in its own process), printing status and logs
_SUBMIT = SUBMIT_JOB + (
    'print(json.dumps({"status": str(status), "logs": client.get_job_logs(job_id)}))\n')


def test_fake_yaml_is_derived_from_gpu_yaml():
    gpu = yaml.safe_load((CLUSTER / "gpu.yaml").read_text())
    assert (CLUSTER / "fake.yaml").read_text() == render(fake_config(gpu)), (
        "cluster/fake.yaml is stale: run `python cluster/make_fake.py`")
    fake = yaml.safe_load((CLUSTER / "fake.yaml").read_text())
    types = fake["available_node_types"]
    assert types["ray.head.default"]["resources"] == {"CPU": 0}
    assert types["gpu_worker"]["resources"] == {"CPU": 4, "GPU": 1}
    assert types["gpu_worker"]["min_workers"] == 0 and fake["provider"]["type"] == "fake_multinode"
    with pytest.raises(ValueError, match="max_workers"):
        fake_config(gpu, max_workers=0)


@pytest.mark.slow
def test_search_on_the_fake_cluster_scales_up_gpu_workers(tmp_path: Path):
    temp_dir = tempfile.mkdtemp(prefix="rf", dir="/tmp")
    ports = head_ports()
    gcs = f"127.0.0.1:{ports['port']}"
    gpu = yaml.safe_load((CLUSTER / "gpu.yaml").read_text())
    config = tmp_path / "fake.yaml"
    config.write_text(render(fake_config(gpu, max_workers=2, gcs_address=gcs)))
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    store = tmp_path / "store"
    tiny = ["--iterations", "6", "--image-size", "32", "--train-size", "16", "--batch-size", "4",
            "--store", str(store)]
    left: list[int] = []
    try:
        # the head as gpu.yaml's head_start_ray_commands start it (CPU: 0, autoscaler on), its
        # dashboard (the Jobs API) on 127.0.0.1 only
        start_head(temp_dir, ports, "--num-cpus", "0", "--num-gpus", "0",
                   "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                   "--autoscaling-config", str(config), env=env)
        proc = subprocess.run(
            [sys.executable, str(REPO / "search.py"), "--address", gcs, "--steps", "2",
             "--samples", "2", *tiny, "--experiment", "fake"],
            capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        # `ray job submit -- python search.py ...` on the same cluster: the driver runs on the
        # head (no --address: it joins the cluster it was submitted to), its trials on workers
        entrypoint = " ".join([sys.executable, str(REPO / "search.py"), "--steps", "1",
                               "--samples", "2", *tiny, "--experiment", "fakejob"])
        job = subprocess.run(
            [sys.executable, "-c", _SUBMIT, f"http://127.0.0.1:{ports['dashboard-port']}",
             entrypoint, "400"],
            capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
        )
        assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-3000:]
        submitted = json.loads(job.stdout.strip().splitlines()[-1])
        monitor = "".join(p.read_text(errors="replace")
                          for p in Path(temp_dir).glob("session_*/logs/monitor.log"))
    finally:
        left = kill_head(temp_dir, ports["port"])
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"processes of the fake cluster survived: {left}"

    from autoloss_ray.store import ExperimentStore

    rows = ExperimentStore(store).trials("fake")
    assert len(rows) == 4 and not rows.duplicated(["step", "sample"]).any()
    assert (rows["status"] == "ok").all(), rows[["status", "error"]]
    # every trial ran on a worker the autoscaler launched, never on the head
    assert rows["node_id"].notna().all() and (rows["node_id"] != FAKE_HEAD_NODE_ID).all()
    assert all(n.startswith("f" * 51) for n in rows["node_id"])
    assert rows["node_ip"].notna().all()
    # ... and each got a (logical) GPU
    for extra in rows["extra_json"]:
        gpu_ids = json.loads(extra)["gpu_ids"]  # comma-joined ids ("0", "12", "0,3")
        assert [g for g in gpu_ids.split(",") if g.strip()] == [gpu_ids], gpu_ids  # one id
    # the autoscaler started GPU workers for the pending trials
    assert "Adding" in monitor and "gpu_worker" in monitor, monitor[-3000:]

    # the submitted job succeeded, and its trials too ran on GPU workers, not on the head
    assert submitted["status"] == "SUCCEEDED", submitted["logs"][-3000:]
    assert "[autoloss] done" in submitted["logs"], submitted["logs"][-3000:]
    jobs = ExperimentStore(store).trials("fakejob")
    assert len(jobs) == 2 and (jobs["status"] == "ok").all(), jobs[["status", "error"]]
    assert jobs["node_id"].notna().all() and (jobs["node_id"] != FAKE_HEAD_NODE_ID).all()
    assert all(n.startswith("f" * 51) for n in jobs["node_id"])
    for extra in jobs["extra_json"]:
        assert len(json.loads(extra)["gpu_ids"]) == 1
