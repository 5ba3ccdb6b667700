"""Shared fixtures.  Heavier fixtures live in tests/plugins/ (one module per area)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest

from training.config import Settings

pytest_plugins = [
    "tests.plugins.services",
    "tests.plugins.triage_model",
    "tests.plugins.db",
    "tests.plugins.ddi_model",
]


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings isolated in a temp dir: its own MLflow SQLite store, artifacts and database."""
    return Settings(work_dir=tmp_path / "var", api_keys={})
