"""Reliability and security guarantees (docs/reliability.md): bad options refused before
Ray, output paths, unreadable store files, one search per experiment, a loopback-only
embedded Ray. CLI cases run the real entry points in a child process and check status 2, one
line on stderr, no Ray started and a store unchanged byte for byte."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from autoloss_ray.store import ExperimentStore, StoreError, StoreWarning
from tests import REPO
from tests.store.test_store import full_row
from tests.tiny import tiny_args

SMALL = tiny_args(iterations=2, train_size=16)


def _run(*args: str, script: str | None = None, timeout: float = 240, **kw):
    cmd = [sys.executable, script] if script else [sys.executable, "-m", "autoloss_app.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=kw.pop("cwd", REPO), **kw)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line_error(out: subprocess.CompletedProcess, text: str) -> None:
    err = out.stderr.strip()
    assert out.returncode == 2, (out.returncode, out.stdout[-2000:], err[-2000:])
    assert len(err.splitlines()) == 1 and text in err, err


def _write_store(root: Path) -> Path:
    """A store holding one finished search step of experiment "old" (written without Ray)."""
    from autoloss_ray.losses.presets import preset_theta

    parameterization, theta = preset_theta("miou")
    store = ExperimentStore(root / "store")
    for i in range(4):
        store.write_trial(full_row(i, experiment="old", parameterization=parameterization,
                                   theta=[float(v) for v in theta]))
    store.write_search("old", {"metric": "miou", "steps": 1, "samples": 4})
    return root / "store"


@pytest.fixture()
def store_dir(tmp_path: Path) -> Path:
    return _write_store(tmp_path)


# ------------------------------------------------------------------- 1, 2: bad options
BAD_SEARCH = [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--holdout-fraction", "2"], "holdout_fraction must be in (0, 1)"),
    (["--train-size", "-5"], "'train_size' must be an int >= 0"),
    (["--gpus-per-trial", "nan"], "--gpus-per-trial must be a finite number"),
    (["--cpus-per-trial", "inf"], "--cpus-per-trial must be a finite number"),
    (["--sigma", "nan"], "--sigma must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--failure-reward=-inf"], "--failure-reward must be a finite number"),
    (["--holdout-fraction", "nan"], "--holdout-fraction must be a finite number"),
    (["--max-concurrent", "0"], "--max-concurrent must be >= 1"),
    (["--gpus-per-trial", "1.5"], "whole number"),
    (["--model", "lraspp_mobilenet_v3_large", "--batch-size", "1"], "batch_size must be >= 2"),
]
BAD_SEARCH_PY = [
    (["--model", "nope"], "unknown model"),
    (["--sigma", "nan"], "--sigma must be a finite number"),
    (["--max-concurrent", "0"], "--max-concurrent must be >= 1"),
]
BAD_RETRAIN = [
    (["--model", "nope"], "unknown model"),
    (["--dataset", "nope"], "unknown dataset"),
    (["--train-size", "-5"], "'train_size' must be an int >= 0"),
    (["--gpus-per-trial", "nan"], "--gpus-per-trial must be a finite number"),
    (["--cpus-per-trial", "inf"], "--cpus-per-trial must be a finite number"),
    (["--max-concurrent", "0"], "--max-concurrent must be >= 1"),
]

BAD_EVALUATE = [
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--workers", "2", "--gpus-per-worker", "nan"], "--gpus-per-worker must be a finite number"),
    (["--workers", "2", "--gpus-per-worker", "-1"], "--gpus-per-worker must be >= 0"),
    (["--store", "{store}"], "--store and --experiment go together"),
    (["--experiment", "x"], "--store and --experiment go together"),
    (["--store", "{store}", "--experiment", "../x"], "experiment must be a non-empty string"),
    (["--store", "{store}/searches/old.json", "--experiment", "x"], "is an existing file"),
]


def _refusal_cases() -> dict[str, tuple[str, list[str]]]:
    """case id -> (entry point, argv with ``{store}`` for the case's own store)."""
    store = ["--store", "{store}"]
    cases = {}
    for args, _ in BAD_SEARCH:
        cases["search " + " ".join(args)] = ("cli", ["search", *store, "--experiment", "new",
                                                     *args])
    for args, _ in BAD_SEARCH_PY:
        cases["search.py " + " ".join(args)] = ("search.py", [*store, "--experiment", "new",
                                                              *args])
    for args, _ in BAD_RETRAIN:
        cases["retrain " + " ".join(args)] = ("cli", ["retrain", "--loss", "ce", *store,
                                                      "--experiment", "rt", *args])
    for args, _ in BAD_EVALUATE:
        cases["evaluate " + " ".join(args)] = ("cli", ["evaluate", "--checkpoint",
                                                       "{store}/none.pt", *args])
    return cases


# Each case through the real entry point (autoloss_app.cli.main / search.py's main, argparse
# included), all in ONE child process (a process per case cost ~3 s of imports each); the
# child reports the status, both streams, and whether Ray was started.
_REFUSALS = r"""
import contextlib, io, json, sys
sys.path.insert(0, sys.argv[2])
results = {}
for key, (entry, argv) in json.loads(sys.argv[1]).items():
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if entry == "search.py":
                import search
                rc = search.main(argv)
            else:
                from autoloss_app.cli import main
                rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
    ray = sys.modules.get("ray")
    results[key] = {"returncode": rc, "stdout": out.getvalue(), "stderr": err.getvalue(),
                    "ray_started": bool(ray is not None and ray.is_initialized())}
print("RESULTS" + json.dumps(results))
"""


@pytest.fixture(scope="module")
def refusals(tmp_path_factory) -> dict[str, dict]:
    """Every bad-option case run once: case id -> its result and whether its own store (the
    one of :func:`_write_store`) and folder came out byte for byte unchanged."""
    cases, roots, before = {}, {}, {}
    for i, (key, (entry, argv)) in enumerate(_refusal_cases().items()):
        root = tmp_path_factory.mktemp(f"refusal{i}")
        store = _write_store(root)
        roots[key], before[key] = root, _snapshot(root)
        cases[key] = (entry, [a.replace("{store}", str(store)) for a in argv])
    proc = subprocess.run([sys.executable, "-c", _REFUSALS, json.dumps(cases), str(REPO)],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULTS"))
    results = json.loads(line[len("RESULTS"):])
    for key, r in results.items():
        r["unchanged"] = _snapshot(roots[key]) == before[key]
    return results


def _refused(result: dict, text: str) -> None:
    """Status 2, one line on stderr naming the problem, no Ray, the store unchanged."""
    err = result["stderr"].strip()
    assert result["returncode"] == 2, (result["returncode"], result["stdout"][-2000:], err)
    assert len(err.splitlines()) == 1 and text in err, err
    assert not result["ray_started"], "Ray was started before the option was refused"
    assert result["unchanged"], "the store or its folder changed"  # no manifest, rows, tune dir


@pytest.mark.parametrize("args, message", BAD_SEARCH, ids=[" ".join(a) for a, _ in BAD_SEARCH])
def test_bad_search_option_is_refused_before_ray(refusals, args, message) -> None:
    _refused(refusals["search " + " ".join(args)], message)


@pytest.mark.parametrize("args, message", BAD_SEARCH_PY)
def test_bad_option_of_search_py_is_refused(refusals, args, message) -> None:
    _refused(refusals["search.py " + " ".join(args)], message)


@pytest.mark.parametrize("args, message", BAD_RETRAIN)
def test_bad_retrain_option_is_refused_before_ray(refusals, args, message) -> None:
    _refused(refusals["retrain " + " ".join(args)], message)


@pytest.mark.parametrize("args, message", BAD_EVALUATE)
def test_bad_evaluate_option_is_refused(refusals, args, message) -> None:
    """Before the checkpoint (here: none) is read, Ray started or the store touched."""
    _refused(refusals["evaluate " + " ".join(args)], message)


def test_a_bad_option_is_refused_by_the_installed_command_too(store_dir: Path) -> None:
    """One case through a real process of its own (the module entry point, as a user runs
    it): the same status, line and untouched store as in the shared child above."""
    before = _snapshot(store_dir.parent)
    out = _run("search", "--store", str(store_dir), "--experiment", "new", "--sigma", "nan")
    _one_line_error(out, "--sigma must be a finite number")
    assert _snapshot(store_dir.parent) == before


def test_a_step_whose_every_trial_failed_ends_the_search_with_its_error(capsys) -> None:
    from autoloss_app.cli import _finish_search
    from autoloss_app.search_job import first_failed_step

    rows = pd.DataFrame([
        full_row(i, status="failed", error=f"ValueError: boom {i}", reward=float("nan"))
        for i in range(4)] + [full_row(4), full_row(5, status="nan")])
    assert first_failed_step(rows) == (0, "ValueError: boom 0")
    assert first_failed_step(rows[rows["step"] == 1]) is None  # one ok, one diverged
    assert _finish_search({"failed_step": 0, "error": "ValueError: boom 0\nmore"},
                          "autoloss search") == 1
    err = capsys.readouterr().err.strip()
    assert err == ("autoloss search: error: every trial of step 0 failed; the first one's "
                   "error: ValueError: boom 0 more")
    assert _finish_search({"trials": 2}, "autoloss search") == 0
    assert "done" in capsys.readouterr().out


def test_summarize_of_a_store_whose_first_step_all_failed_names_it(tmp_path, capsys) -> None:
    """The path the CLI takes: the store's rows -> summarize -> status 1 with the error."""
    from autoloss_app.cli import _finish_search
    from autoloss_app.options import SearchOptions
    from autoloss_app.search_job import summarize

    store = ExperimentStore(tmp_path / "store")
    for i in range(4):
        store.write_trial(full_row(i, status="failed", error=f"ValueError: boom {i}",
                                   reward=float("nan")))
    opts = SearchOptions(store=str(tmp_path / "store"), experiment="exp-a").resolved()
    outcome = summarize(opts, store)
    assert outcome["failed_step"] == 0 and outcome["error"].startswith("ValueError: boom ")
    assert outcome["failed"] == outcome["trials"] == 4
    assert _finish_search(outcome, "autoloss search") == 1
    assert "every trial of step 0 failed" in capsys.readouterr().err


# ------------------------------------------------------------------------ 6: output paths
def test_output_paths_that_are_the_wrong_kind_are_refused(store_dir: Path, capsys) -> None:
    folder = store_dir.parent / "folder"
    folder.mkdir()
    afile = store_dir.parent / "afile"
    afile.write_text("keep")
    before = _snapshot(store_dir.parent)
    cases = [
        (["export", "--store", str(store_dir), "--experiment", "old", "--out", str(folder)],
         "is an existing directory"),
        (["report", "--store", str(store_dir), "--experiment", "old", "--out", str(afile)],
         "is an existing file"),
        (["report", "--store", str(store_dir), "--experiment", "old", "--out",
          str(afile / "sub")], "is an existing file"),
        (["search", "--store", str(store_dir), "--experiment", "new", "--export",
          str(folder)], "is an existing directory"),
        (["search", "--store", str(store_dir), "--experiment", "new", "--report-dir",
          str(afile)], "is an existing file"),
        (["search", "--store", str(store_dir), "--experiment", "new", "--tune-dir",
          str(afile / "tune")], "is an existing file"),
    ]
    from autoloss_app.cli import main

    for args, message in cases:  # in this process: each is refused before Ray starts
        capsys.readouterr()
        code = main(args)
        out = capsys.readouterr()
        _one_line_error(subprocess.CompletedProcess(args, code, out.out, out.err), message)
        ray = sys.modules.get("ray")
        assert ray is None or not ray.is_initialized(), args
    assert _snapshot(store_dir.parent) == before
    assert sorted(p.name for p in store_dir.parent.iterdir()) == ["afile", "folder", "store"]


def test_a_relative_tune_dir_is_made_absolute(tmp_path: Path, monkeypatch) -> None:
    # Ray Tune refuses a relative storage path ("URI has empty scheme"), after Ray started
    from autoloss_app.options import SearchOptions

    monkeypatch.chdir(tmp_path)
    opts = SearchOptions(store="s", tune_dir="runs/tune").resolved()
    assert opts.tune_dir == str(tmp_path / "runs" / "tune")
    assert SearchOptions(store="s").resolved().tune_dir == str(tmp_path / "tune")
    uri = SearchOptions(store="s3://b/s", tune_dir="s3://b/tune").resolved()
    assert uri.tune_dir == "s3://b/tune"


def test_a_failed_report_leaves_no_folder(store_dir: Path, monkeypatch) -> None:
    from autoloss_ray import report

    def boom(*a, **k):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(report, "_write_search_report", boom)
    out = store_dir.parent / "a" / "b"
    with pytest.raises(RuntimeError, match="plot failed"):
        report.write_search_report(ExperimentStore(store_dir), "old", out)
    assert not (store_dir.parent / "a").exists()


# --------------------------------------------------------------------- 5: unreadable files
def _damage(store_dir: Path) -> dict[str, Path]:
    """Three bad trial files beside the four good ones of "old", plus a bad policy file."""
    store = ExperimentStore(store_dir)
    good = [Path(store.trial_path("old", f"trial_{i:05d}")) for i in range(4)]
    base = good[0].parent
    raw = good[0].read_bytes()
    bad = {
        # footer bytes overwritten ("Couldn't deserialize thrift" before)
        "corrupt": base / "corrupt.parquet",
        "truncated": base / "truncated.parquet",
        "foreign": base / "foreign.parquet",
        "pages": base / "pages.parquet",
    }
    footer = bytearray(raw)
    footer[-300:-8] = b"\xff" * 292
    bad["corrupt"].write_bytes(bytes(footer))
    bad["truncated"].write_bytes(raw[: len(raw) // 2])
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(bad["foreign"])
    # a sound footer over garbage data pages: fails only when the data is read
    pages = bytearray(raw)
    pages[4:len(raw) // 3] = b"\x13" * (len(raw) // 3 - 4)
    bad["pages"].write_bytes(bytes(pages))
    return bad


def test_unreadable_and_foreign_files_are_skipped_with_a_warning(store_dir: Path) -> None:
    bad = _damage(store_dir)
    store = ExperimentStore(store_dir)
    for read in (lambda: store.trials("old"), lambda: store.trials()):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rows = read()
        assert sorted(rows["trial_id"]) == [f"trial_{i:05d}" for i in range(4)]
        assert set(rows["experiment"]) == {"old"}
        named = " ".join(str(w.message) for w in caught if w.category is StoreWarning)
        for path in bad.values():
            assert str(path) in named, (path, named)
    # a resume sees the four good samples only: an unreadable trial is missing, so re-run
    from autoloss_app.resume import previous_results

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        rows, results = previous_results(store, "old")
    assert sorted((r["step"], r["sample"]) for r in results) == [(0, s) for s in range(4)]


def test_report_and_export_work_beside_a_bad_file(store_dir: Path) -> None:
    bad = _damage(store_dir)
    export = _run("export", "--store", str(store_dir), "--experiment", "old", "--out",
                  str(store_dir.parent / "loss.json"), "--num-classes", "3")
    assert export.returncode == 0, export.stderr
    assert json.loads((store_dir.parent / "loss.json").read_text())["metric"] == "miou"
    assert str(bad["corrupt"]) in export.stderr and str(bad["foreign"]) in export.stderr
    report = _run("report", "--store", str(store_dir), "--experiment", "old", "--out",
                  str(store_dir.parent / "report"))
    assert report.returncode == 0, report.stderr
    assert "trials: 4" in (store_dir.parent / "report" / "report.md").read_text()


def test_resume_with_a_corrupted_manifest_is_refused(store_dir: Path) -> None:
    manifest = Path(ExperimentStore(store_dir).search_path("old"))
    manifest.write_bytes(b'{"experiment": "old", "options": {tru')
    before = _snapshot(store_dir.parent)
    out = _run("search", "--store", str(store_dir), "--experiment", "old", "--resume")
    _one_line_error(out, "is unreadable")
    assert _snapshot(store_dir.parent) == before


# ------------------------------------------------------------- concurrent writers: a lock
_HOLD = """
import sys, time
from autoloss_ray.store import ExperimentStore
with ExperimentStore(sys.argv[1]).search_lock("new"):
    print("HELD", flush=True)
    time.sleep(600)
"""


def test_a_second_search_of_the_same_experiment_is_refused(store_dir: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(store_dir)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        before = _snapshot(store_dir.parent)
        out = _run("search", "--store", str(store_dir), "--experiment", "new")
        _one_line_error(out, f"is being searched by another process (pid {holder.pid}")
        assert socket.gethostname() in out.stderr
        assert _snapshot(store_dir.parent) == before
        with pytest.raises(StoreError, match="being searched"):
            with ExperimentStore(store_dir).search_lock("new"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: the lock file stays behind ...
        holder.wait()
    lock = Path(ExperimentStore(store_dir).search_path("new")).with_suffix(".lock")
    assert lock.exists()
    with ExperimentStore(store_dir).search_lock("new") as path:  # ... and blocks nobody
        assert path == str(lock)
        assert lock.read_text() == f"pid {os.getpid()} on host {socket.gethostname()}"
    assert not lock.exists()


# ------------------------------------------------------------ 3: loopback-only embedded Ray
def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _address(hexaddr: str) -> str:
    ip, port = hexaddr.split(":")
    if len(ip) == 8:
        text = socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(ip, 16)))
    else:
        words = struct.unpack("<4I", bytes.fromhex(ip))
        text = socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))
    return f"{text}:{int(port, 16)}"


def listening_sockets(pids: list[int]) -> set[tuple[str, str]]:
    """(process name, "ip:port") of every listening TCP socket ``pids`` hold (from /proc:
    the socket inodes of /proc/<pid>/fd matched against /proc/<pid>/net/tcp{,6})."""
    found = set()
    for pid in pids:
        inodes = set()
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
        except OSError:  # gone, or not ours
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:  # closed meanwhile
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
        for table in ("tcp", "tcp6"):
            try:
                with open(f"/proc/{pid}/net/{table}") as f:
                    lines = f.readlines()[1:]
            except OSError:
                continue
            for line in lines:
                parts = line.split()
                if parts[3] == "0A" and int(parts[9]) in inodes:  # 0A: LISTEN
                    found.add((name, _address(parts[1])))
    return found


def _loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.rsplit(":", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_joining_a_cluster_keeps_its_own_network_settings(monkeypatch) -> None:
    """Only the embedded Ray is pinned to loopback: with --address (or inside `ray job
    submit`, RAY_ADDRESS) init_ray passes no node IP, and the driver's environment is the
    same after the embedded start as before it."""
    import ray

    from autoloss_app import ray_start

    calls: list[dict] = []
    seen_env: list[str | None] = []

    def fake_init(**kwargs):
        calls.append(kwargs)
        seen_env.append(os.environ.get(ray_start._LOOPBACK_ENV))

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(ray_start._LOOPBACK_ENV, raising=False)
    ray_start.init_ray("10.1.2.3:6379")
    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6379")
    ray_start.init_ray(None)
    monkeypatch.delenv("RAY_ADDRESS")
    ray_start.init_ray(None)  # embedded
    assert [c.get("_node_ip_address") for c in calls] == [None, None, "127.0.0.1"]
    assert calls[0]["address"] == "10.1.2.3:6379" and "address" not in calls[1]
    assert seen_env == [None, None, "0"]
    assert ray_start._LOOPBACK_ENV not in os.environ  # restored after the embedded start


def test_socket_reader_sees_a_wildcard_listener() -> None:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        found = listening_sockets([os.getpid()])
    assert (Path(f"/proc/{os.getpid()}/comm").read_text().strip(), f"0.0.0.0:{port}") in found
    assert not _loopback(f"0.0.0.0:{port}") and _loopback("::ffff:127.0.0.1:1")


def _run_watching_listeners(*args: str, timeout: float = 600, env_extra=None):
    """``autoloss ARGS`` on the embedded default Ray, reading every TCP socket its processes
    listen on, for the whole run; returns (the finished process's result, the sockets)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env.update(env_extra or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoloss_app.cli", *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= listening_sockets(_descendants(proc.pid))
            time.sleep(0.3)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode, out, err), seen


def _assert_loopback_only(seen: set[tuple[str, str]]) -> None:
    """Every TCP socket that the driver, the GCS, the raylet, the dashboard and its agent,
    the runtime-env agent and the workers of an embedded search listened on is loopback."""
    names = {n for n, _ in seen}
    # the reader saw Ray itself: the GCS, the raylet, the dashboard agent, the runtime-env
    # agent and the workers (comm names are cut to 15 characters), each holding a listener
    assert {"gcs_server", "raylet", "ray::DashboardA", "ray::RuntimeEnv"} <= names, seen
    assert any(n.startswith("ray::") and n not in ("ray::DashboardA", "ray::RuntimeEnv")
               for n in names), seen
    outside = sorted((n, a) for n, a in seen if not _loopback(a))
    assert not outside, f"listening beyond loopback: {outside}"


# ------------------------------------------------------- SIGINT, and a worker killed -9
def _search(tmp_path: Path, name: str, *extra: str) -> list[str]:
    return ["search", "--store", str(tmp_path / "s"), "--experiment", name, "--samples", "2",
            "--max-concurrent", "1", *SMALL, *extra]


@pytest.mark.slow
def test_ctrl_c_then_resume_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """SIGINT to the foreground process group (what Ctrl-C sends) mid-search: status 130,
    a one-line hint, and --resume completes with exactly one row per (step, sample).
    While it runs, its experiment's lock is held by it (a real running search, not only the
    helper of the concurrent-writers test) and a second writer is refused. The resumed run
    (the real `autoloss search` on the embedded default) listens on loopback only, and starts
    its own Ray although the machine's Ray folder names a cluster that `ray start` left
    (plain ``ray.init()`` would join that one)."""
    args = _search(tmp_path, "intr", "--steps", "3")
    proc = subprocess.Popen([sys.executable, "-m", "autoloss_app.cli", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    store = ExperimentStore(tmp_path / "s")
    deadline = time.monotonic() + 300
    second = None
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            n = len(store.trials("intr"))
            if n >= 1 and second is None:  # the running search holds the lock
                try:
                    with store.search_lock("intr"):
                        second = "acquired"
                except StoreError as e:
                    second = str(e)
            if n >= 2 and second is not None:
                break
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # Ray's processes of that session, if any
        except ProcessLookupError:
            pass
    assert second is not None, "the search ended before a trial landed"
    assert f"is being searched by another process (pid {proc.pid}" in second, second
    assert proc.returncode == 130, err[-2000:]
    assert "rerun with --resume" in err
    before = len(store.trials("intr"))
    assert 2 <= before < 6, "the interrupt must land mid-search"
    ray_tmp = tempfile.mkdtemp(prefix="rl", dir="/tmp")  # Ray's socket paths stay short
    try:
        os.makedirs(os.path.join(ray_tmp, "ray"))
        with open(os.path.join(ray_tmp, "ray", "ray_current_cluster"), "w") as f:
            f.write("127.0.0.1:9")  # a head that is gone
        out, listeners = _run_watching_listeners(*args, "--resume",
                                                 env_extra={"RAY_TMPDIR": ray_tmp})
        sessions = list(Path(ray_tmp, "ray").glob("session_*"))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert sessions, "the resumed search did not start its own Ray"
    _assert_loopback_only(listeners)
    trials = store.trials("intr")
    assert sorted(zip(trials["step"], trials["sample"])) == [(t, m) for t in range(3)
                                                             for m in range(2)]


@pytest.mark.slow
def test_a_trial_worker_killed_9_is_recorded_failed_and_the_search_finishes(
        tmp_path: Path) -> None:
    """kill -9 of the worker process running a trial: the search goes on; that trial has a
    row with status "failed" (PPO is told --failure-reward for it), the others are ok, and a
    resume has nothing left to run (a failed trial is a result, not a missing one)."""
    # 150 iterations (~4 s here after the worker's ~4 s of imports): the 0.2 s poll below
    # kills the first trial long before it could end
    args = _search(tmp_path, "wk", "--steps", "1", "--iterations", "150")
    proc = subprocess.Popen([sys.executable, "-m", "autoloss_app.cli", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    killed = None
    deadline = time.monotonic() + 300
    try:
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            for pid in _descendants(proc.pid):
                try:
                    name = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    continue
                if name.startswith("ray::ImplicitF") or name.startswith("ray::proxy"):
                    os.kill(pid, signal.SIGKILL)
                    killed = name
                    break
            time.sleep(0.2)
        output = proc.communicate(timeout=600)[0]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert killed, "no trial worker was found to kill"
    assert proc.returncode == 0, output[-3000:]
    trials = ExperimentStore(tmp_path / "s").trials("wk")
    assert sorted(trials["sample"]) == [0, 1]
    assert sorted(trials["status"]) == ["failed", "ok"], trials[["status", "error"]]
    again = _run(*args, "--resume", timeout=300)
    assert again.returncode == 0 and "nothing to run" in again.stdout, again.stderr[-2000:]


def test_seed_metric_spelling_and_a_name_with_a_newline(tmp_path, capsys) -> None:
    """Issue 32 (low): --seed -1 names --seed on search, retrain and evaluate; --metric MIOU
    is stored as miou (so --resume --metric miou matches); "name\\n" is not a name."""
    from autoloss_app.cli import main as cli_main
    from autoloss_app.options import OptionsError, SearchOptions
    from autoloss_ray.store import check_name

    with pytest.raises(OptionsError, match="--seed must be an integer >= 0, got -1"):
        SearchOptions(seed=-1, store=str(tmp_path / "s")).resolved()
    assert SearchOptions(metric="MIOU + Biou", store=str(tmp_path / "s")).resolved().metric \
        == "miou+biou"
    with pytest.raises(OptionsError, match="experiment"):
        SearchOptions(experiment="nl\n", store=str(tmp_path / "s")).resolved()
    with pytest.raises(ValueError):
        check_name("nl\n", "experiment")
    for argv in (["retrain", "--loss", "ce", "--seed", "-1", "--store", str(tmp_path / "s"),
                  "--experiment", "r"],
                 ["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--seed", "-1"]):
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--seed must be an integer >= 0" in err, err
    assert not (tmp_path / "s").exists()
