"""Shared pytest fixtures: the CamVid copy, one local Ray per module, the module order."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CAMVID_ROOT = REPO_ROOT.parent / "shared" / "data" / "camvid"


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker, the CPU threads of torch (this process's) and of the child
    processes it starts (OMP_NUM_THREADS: the CLI runs, the examples, the benches) share the
    machine's cores with the other workers (``-n 2`` on 2 cores: one thread each) instead of
    each worker taking all of them. On the 2-core machine under load, 27 training and gradcheck
    tests took 41-55 s this way against 198-201 s with torch's default. An OMP_NUM_THREADS of
    the user's own is left alone, and a run in one process keeps the defaults."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(1, (cores or 1) // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    if not (CAMVID_ROOT / "trainannot").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID_ROOT}")
    return CAMVID_ROOT


# What every module's Ray gets unless the module's RAY_OPTIONS says otherwise: no dashboard, the
# workers' output and Ray's own logging kept out of the test output.
RAY_DEFAULTS = {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False,
                "configure_logging": False}


@pytest.fixture(scope="module")
def local_ray(request: pytest.FixtureRequest):
    """A Ray of the module's own, started once for all its tests that ask for it and shut down
    after the module; yields its GCS address (for a driver in a subprocess to join).

    ``address="local"``: a new cluster even when a ``ray start`` one runs on this machine. The
    module's ``RAY_OPTIONS`` (e.g. ``{"num_cpus": 4}``, ``{"num_gpus": 2}`` for fake GPUs) go
    over :data:`RAY_DEFAULTS`. The module's own functions and classes are pickled by value, so
    the workers need not import the test module. Its session files go to a short temp dir of
    its own (the sockets' paths must stay short), removed afterwards."""
    import ray

    if ray.is_initialized():  # an in-process CLI run of an earlier test left its Ray up
        ray.shutdown()
    options = {**RAY_DEFAULTS, **getattr(request.module, "RAY_OPTIONS", {})}
    ray.cloudpickle.register_pickle_by_value(request.module)
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    ray.init(address="local", _temp_dir=temp_dir, **options)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(request.module)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def _no_ray_left_behind():
    """An in-process ``autoloss search``/``retrain`` starts an embedded Ray and leaves it up
    for the process; after each module it is shut down, so that the next module a pytest-xdist
    worker takes starts without a Ray of someone else's (its checks that nothing started Ray,
    its own local_ray)."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


# The modules that take longest, longest first: the sums of their tests over 5 s in the whole
# suite's `--durations=80` (2 workers, the 2-core machine under a background benchmark, load
# 5-15): 268, 227, 157, 156, 129, 125, 110, 100, 98, 91, 89, 86, 85, 83, 82, 81, 74 s. In
# pytest-xdist workers (`--dist loadfile`: a worker takes the next whole module when it is
# free) a long module that started last ran alone at the end; starting them first lets the
# short ones fill the gaps. Only the order changes; a module missing from this list runs after
# these, as collected. Paths relative to tests/.
LONGEST_FIRST = ("app/test_service.py", "trainables/test_retrain_ddp.py",
                 "trainables/test_user_plugins.py",
                 "app/test_examples.py",  # subprocesses importing Lightning, smp, mmengine
                 "trainables/test_user_train_fn.py", "app/test_reliability.py",
                 "bench/test_gpu_check.py", "losses/test_native.py", "store/test_s3_store.py",
                 "trainables/test_retrain_failures.py", "trainables/test_trainables.py",
                 "bench/test_bench_search_quality.py", "searchers/test_searchers.py",
                 "cluster/test_jobs.py", "trainables/test_retrain.py", "app/test_docs.py",
                 "searchers/test_searcher_contract.py")
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    stale = [name for name in LONGEST_FIRST if not (TESTS / name).is_file()]
    if stale:  # a moved or renamed module would silently lose its place
        raise pytest.UsageError(f"tests/conftest.py LONGEST_FIRST names no file: {stale}")
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item: pytest.Item) -> int:
        try:
            name = item.path.resolve().relative_to(TESTS).as_posix()
        except ValueError:  # a test file outside tests/ (given on the command line)
            return len(LONGEST_FIRST)
        return rank.get(name, len(LONGEST_FIRST))

    items.sort(key=key)  # stable: each module's tests stay together, in their order
