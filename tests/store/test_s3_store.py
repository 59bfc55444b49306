"""The store on ``s3://bucket/prefix``, against a real S3 HTTP server (moto) on 127.0.0.1.

A whole tiny search writes its trials, policy and manifest to S3; it is killed mid-search and
resumed with ``--resume``; ``report`` and ``export`` read the store from S3; pandas (and DuckDB,
when its httpfs extension can be loaded) read the trials straight from the bucket.

The endpoint of a non-AWS server goes in the store URI's query
(``s3://bucket/prefix?endpoint_override=127.0.0.1:PORT&scheme=http``, which pyarrow's
``FileSystem.from_uri`` reads) or in the standard ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``
(pyarrow 26.0.1 reads them: a search below runs with only that variable); the credentials come
from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` in the environment, and nothing about
them is written anywhere. A store that cannot be reached, a missing bucket and a URI without a
bucket are one-line errors within ``AUTOLOSS_STORE_TIMEOUT`` seconds (issue 32).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

moto_server = pytest.importorskip("moto.server")

BUCKET = "autoloss-test"
SEARCH = ["--steps", "3", "--samples", "2", "--iterations", "30", "--image-size", "32",
          "--train-size", "16", "--batch-size", "4", "--gpus-per-trial", "0",
          "--max-concurrent", "1", "--experiment", "s3exp"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def s3(monkeypatch, tmp_path):
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import pyarrow.fs as pafs

    query = f"endpoint_override=127.0.0.1:{port}&scheme=http"
    pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http",
                      allow_bucket_creation=True).create_dir(BUCKET)
    try:
        yield {"endpoint": endpoint, "env": env, "query": query,
               "uri": f"s3://{BUCKET}/runs/store?{query}"}
    finally:
        server.stop()


def _keys(s3: dict, prefix: str) -> list[str]:
    import pyarrow.fs as pafs

    fs, _ = pafs.FileSystem.from_uri(f"s3://{BUCKET}?{s3['query']}")
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True))
    except FileNotFoundError:
        return []
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def _autoloss(*args: str, ray_tmp: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_TMPDIR": ray_tmp}
    return subprocess.Popen([str(Path(sys.executable).with_name("autoloss")), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True, cwd=kw.get("cwd"))


def _kill_ray_of(ray_tmp: str) -> None:
    """The embedded Ray of a killed search (its processes name its temp dir)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if ray_tmp.encode() in cmd:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


@pytest.mark.slow
def test_search_on_an_s3_store_survives_a_kill_resumes_and_reads_back(s3, tmp_path):
    from autoloss_ray.store import ExperimentStore

    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    uri = s3["uri"]
    try:
        proc = _autoloss("search", *SEARCH, "--store", uri, "--tune-dir",
                         str(tmp_path / "tune"), ray_tmp=ray_tmp)
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            if len([k for k in _keys(s3, "runs/store/trials") if k.endswith(".parquet")]) >= 2:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the search ended before it could be killed: " + (
            proc.stdout.read()[-3000:])
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        _kill_ray_of(ray_tmp)
        store = ExperimentStore(uri)
        before = store.trials("s3exp")
        assert 2 <= len(before) < 6
        # objects only under their final keys: no temp files, no partial parquet
        keys = _keys(s3, "runs/store")
        assert not [k for k in keys if k.endswith(".tmp")], keys
        assert f"{BUCKET}/runs/store/searches/s3exp.json" in keys
        assert store.read_search("s3exp")["store"] == uri

        proc = _autoloss("search", *SEARCH, "--store", uri, "--tune-dir",
                         str(tmp_path / "tune"), "--resume", ray_tmp=ray_tmp)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-4000:]
        assert "[autoloss] resuming:" in out
    finally:
        _kill_ray_of(ray_tmp)

    rows = store.trials("s3exp")
    assert len(rows) == 6 and not rows.duplicated(["step", "sample"]).any()
    kept = rows.set_index("trial_id").loc[list(before["trial_id"]), "finished_at"]
    assert kept.tolist() == before.set_index("trial_id")["finished_at"].tolist()
    assert len(store.policy("s3exp")) == 3

    report = tmp_path / "report"
    exported = tmp_path / "best.json"
    from autoloss_app.cli import main as cli_main

    for cmd in (["report", "--store", uri, "--experiment", "s3exp", "--out", str(report)],
                ["export", "--store", uri, "--experiment", "s3exp", "--out", str(exported)]):
        assert cli_main(cmd) == 0, cmd  # in this process: neither starts Ray
    assert any(report.iterdir())
    assert len(json.loads(exported.read_text())["theta"]) > 0 or exported.stat().st_size > 0

    # pandas reads the trials straight from the bucket (the endpoint in the URI, keys
    # from the env)
    import pandas as pd

    df = pd.read_parquet(store.trials_uri)
    assert len(df) == 6 and set(df["experiment"].astype(str)) == {"s3exp"}
    assert sorted(df["trial_id"]) == sorted(rows["trial_id"])


def test_duckdb_reads_the_trials_from_s3(s3, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    from autoloss_ray.store import ExperimentStore

    store = ExperimentStore(s3["uri"])
    for i in range(3):
        store.write_trial({"experiment": "ddb", "trial_id": f"t{i}", "status": "ok",
                           "step": 0, "sample": i, "reward": 0.1 * i})
    con = duckdb.connect()
    try:
        con.execute("LOAD httpfs")
    except Exception as exc:  # noqa: BLE001 - not installed and no network to fetch it
        pytest.skip(f"DuckDB's httpfs extension cannot be loaded offline here: {exc}")
    host = s3["endpoint"].removeprefix("http://")
    con.execute(f"CREATE SECRET (TYPE s3, KEY_ID 'testing', SECRET 'testing', "
                f"REGION 'us-east-1', ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)")
    got = con.execute(
        f"SELECT experiment, count(*), max(reward) FROM read_parquet("
        f"'s3://{BUCKET}/runs/store/trials/*/*.parquet', hive_partitioning = true) GROUP BY ALL"
    ).fetchall()
    assert got == [("ddb", 3, pytest.approx(0.2))]


@pytest.mark.slow
def test_a_search_on_s3_needs_no_tune_dir_and_takes_the_endpoint_from_aws_endpoint_url(
        s3, tmp_path):
    """Issue 32, items 2 and 7: no ``--tune-dir`` (Tune's state goes under the store URI) and
    the endpoint only from ``AWS_ENDPOINT_URL``, as boto3 and MinIO users set it."""
    from autoloss_ray.store import ExperimentStore

    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    uri = f"s3://{BUCKET}/plain/store"
    env_before = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = s3["endpoint"]
    try:
        search = [a if a != "3" else "1" for a in SEARCH]  # 1 step of 2 samples
        proc = _autoloss("search", *search, "--store", uri, ray_tmp=ray_tmp, cwd=tmp_path)
        out, _ = proc.communicate(timeout=400)
        assert proc.returncode == 0, out[-4000:]
        rows = ExperimentStore(uri).trials("s3exp")
        assert len(rows) == 2 and set(rows["status"]) == {"ok"}
        keys = _keys(s3, "plain/store")
        assert any(k.startswith(f"{BUCKET}/plain/store/tune/s3exp/") for k in keys), keys
        assert not any(p.name == "tune" for p in tmp_path.iterdir())  # nothing local
    finally:
        _kill_ray_of(ray_tmp)
        if env_before is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = env_before


def test_a_missing_bucket_is_one_line_before_anything_is_written(s3, tmp_path, capsys):
    from autoloss_app.cli import main as cli_main
    from autoloss_ray.store import ExperimentStore, StoreError

    uri = f"s3://no-such-bucket/store?{s3['query']}"
    with pytest.raises(StoreError, match="bucket 'no-such-bucket' .* does not exist"):
        ExperimentStore(uri)
    code = cli_main(["export", "--store", uri, "--experiment", "e",
                     "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err
    assert not (tmp_path / "x.json").exists()


def test_aws_endpoint_url_alone_reaches_the_store(s3, monkeypatch):
    from autoloss_ray.store import ExperimentStore

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3["endpoint"])
    store = ExperimentStore(f"s3://{BUCKET}/envonly")
    store.write_trial({"experiment": "env", "trial_id": "t0", "status": "ok", "step": 0,
                       "sample": 0, "reward": 0.5})
    assert _keys(s3, "envonly/trials") and len(store.trials("env")) == 1


@pytest.mark.parametrize("uri, expected", [
    ("s3://", "names no bucket"),
    ("gs://", "names no bucket"),
    ("s3:///prefix", "Missing bucket name"),
])
def test_a_uri_without_a_bucket_is_refused(uri, expected):
    from autoloss_ray.store import ExperimentStore, StoreError

    with pytest.raises(StoreError, match=expected):
        ExperimentStore(uri)


@pytest.mark.parametrize("uri", [
    "gs://autoloss-unreachable/store",  # no credentials, no network: pyarrow retries 15 min
    "s3://bucket/store?endpoint_override=127.0.0.1:1&scheme=http",  # nothing listens there
])
def test_an_unreachable_store_is_a_one_line_error_within_the_time_bound(uri, monkeypatch):
    from autoloss_ray.store import ExperimentStore, StoreError

    monkeypatch.setenv("AUTOLOSS_STORE_TIMEOUT", "3")
    t0 = time.monotonic()
    with pytest.raises(StoreError) as info:
        ExperimentStore(uri)
    assert time.monotonic() - t0 < 15
    msg = str(info.value)
    assert "\n" not in msg and ("did not answer within 3 s" in msg
                                or "cannot reach the store" in msg)


def test_a_bad_store_timeout_is_refused(monkeypatch):
    from autoloss_ray.store import ExperimentStore, StoreError

    for bad in ("0", "-1", "soon", "inf"):
        monkeypatch.setenv("AUTOLOSS_STORE_TIMEOUT", bad)
        with pytest.raises(StoreError, match="AUTOLOSS_STORE_TIMEOUT must be a positive"):
            ExperimentStore("gs://b/x")


def test_the_tune_dir_defaults_under_a_uri_store_and_beside_a_local_one(tmp_path):
    from autoloss_app.options import default_tune_dir

    assert default_tune_dir("s3://b/x/?endpoint_override=h:9&scheme=http", None) == \
        "s3://b/x/tune?endpoint_override=h:9&scheme=http"
    assert default_tune_dir("gs://b/x", None) == "gs://b/x/tune"
    assert default_tune_dir(str(tmp_path / "store"), None) == str(tmp_path / "tune")
    assert default_tune_dir("s3://b/x", "s3://c/t") == "s3://c/t"
