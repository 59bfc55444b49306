"""A store that cannot be written is found before anything trains, and a finished trial whose
row the store refuses is kept where it can be recovered (issue 32.5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoloss_ray.store import ExperimentStore, StoreError
from tests.store.test_store import full_row


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_check_writable_leaves_nothing_behind(tmp_path):
    store = ExperimentStore(tmp_path / "store")
    store.check_writable()
    assert _files(tmp_path / "store") == []


def test_check_writable_names_what_cannot_be_written(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "trials").write_text("not a folder")
    with pytest.raises(StoreError, match=r"cannot write to the store .*\(trials/: "):
        ExperimentStore(tmp_path / "store").check_writable()
    assert _files(tmp_path / "store") == ["trials"]


def test_a_search_on_an_unwritable_store_is_refused_before_the_manifest(tmp_path, capsys):
    from autoloss_app.cli import main as cli_main

    store = tmp_path / "store"
    store.mkdir()
    (store / "trials").write_text("not a folder")
    code = cli_main(["search", "--store", str(store), "--experiment", "u", "--steps", "1",
                     "--samples", "2", "--tune-dir", str(tmp_path / "tune"), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "cannot write to the store" in err
    assert _files(store) == ["trials"]  # no manifest, no probe


def test_a_row_the_store_refuses_is_kept_and_its_place_is_said(tmp_path, monkeypatch, capsys):
    from trainables.store_callback import StoreCallback

    store = tmp_path / "store"
    store.mkdir()
    (store / "trials").write_text("not a folder")
    monkeypatch.setenv("AUTOLOSS_UNSAVED_DIR", str(tmp_path / "kept"))
    cb = StoreCallback(str(store), "exp-a", "miou", retries=1)
    row = full_row(3)
    cb._write_with_retries(row)
    err = capsys.readouterr().err
    assert "refused trial trial_00003" in err and str(tmp_path / "kept") in err
    kept = ExperimentStore(tmp_path / "kept").trials("exp-a")
    assert list(kept["trial_id"]) == ["trial_00003"]
    assert kept["reward"].iloc[0] == pytest.approx(row["reward"])
