"""The source manifest: every file verifies against the real data directory; errors name the problem."""

from __future__ import annotations

import shutil

import pytest

from serving.settings import Settings
from training.sources import (
    DataSourceError,
    describe,
    manifest,
    source_file,
    verify_all,
)


def test_manifest_entries_are_complete():
    for sid, entry in manifest().items():
        assert entry["licence"], sid
        assert entry["commercial_use"] in {"yes", "no", "unverified", "yes, with attribution"}, sid
        for name, meta in entry["files"].items():
            assert len(meta["sha256"]) == 64, (sid, name)
            if entry["upstream"]:
                # a file without URL is a derived one; the note must say how it was made
                assert meta["url"] or entry["note"], (sid, name)


def test_every_file_verifies_in_the_shared_data_dir():
    report = verify_all()
    bad = {k: v for k, v in report.items() if v != "ok"}
    assert not bad


def test_unknown_source_and_file_are_named():
    with pytest.raises(DataSourceError, match="unknown data source 'nope'"):
        describe("nope", "x.csv")
    with pytest.raises(DataSourceError, match="has no file 'x.csv'"):
        describe("ddinter", "x.csv")


def test_env_data_dir_wins_and_missing_file_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("RXT_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.resolved_data_dir() == tmp_path.resolve()
    with pytest.raises(DataSourceError, match="RXT_ALLOW_DOWNLOAD") as err:
        source_file("symptom2disease", "Symptom2Disease.csv", settings)
    assert str(tmp_path) in str(err.value)


def test_corrupt_file_is_refused(tmp_path):
    real = describe("symptom2disease", "Symptom2Disease.csv").path
    folder = tmp_path / "triage" / "symptom2disease"
    folder.mkdir(parents=True)
    shutil.copy(real, folder / real.name)
    with (folder / real.name).open("a") as fh:
        fh.write("tampered,row\n")
    with pytest.raises(DataSourceError, match="corrupt or a different version"):
        source_file("symptom2disease", "Symptom2Disease.csv", Settings(data_dir=tmp_path))
