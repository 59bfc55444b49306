"""Shared pytest fixtures. Ray-starting fixtures live in the integration test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CAMVID_ROOT = REPO_ROOT.parent / "shared" / "data" / "camvid"


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    if not (CAMVID_ROOT / "trainannot").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID_ROOT}")
    return CAMVID_ROOT


# The modules that take longest in one process (sums of `pytest --durations=60` on the 2-core
# machine: 153, 117, 76, 70, 69, 56, 55, 51, 48 s), longest first. In two pytest-xdist workers
# (`--dist loadfile`: a worker takes the next whole module when it is free) a long module that
# started last ran alone at the end; starting them first lets the short ones fill the gaps.
# Only the order changes; a module missing from this list runs after these, as collected.
LONGEST_FIRST = ("app/test_examples.py",  # ~225 s under load: subprocesses importing frameworks
                 "app/test_service.py", "trainables/test_retrain_ddp.py",
                 "app/test_reliability.py", "searchers/test_searcher_contract.py",
                 "bench/test_gpu_check.py", "store/test_s3_store.py",
                 "cluster/test_fake_cluster.py", "cluster/test_jobs.py",
                 "searchers/test_searchers.py")
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item: pytest.Item) -> int:
        try:
            name = item.path.resolve().relative_to(TESTS).as_posix()
        except ValueError:  # a test file outside tests/ (given on the command line)
            return len(LONGEST_FIRST)
        return rank.get(name, len(LONGEST_FIRST))

    items.sort(key=key)  # stable: each module's tests stay together, in their order
