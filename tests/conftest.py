"""Shared fixtures.  Heavier fixtures live in tests/plugins/ (one module per area)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest

from serving.settings import Settings

pytest_plugins = [
    "tests.plugins.services",
    "tests.plugins.triage_model",
    "tests.plugins.db",
    "tests.plugins.ddi_model",
    "tests.plugins.red_flags",
]


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings isolated in a temp dir: its own MLflow SQLite store, artifacts and database."""
    return Settings(work_dir=tmp_path / "var", api_keys={})


# The fast tier (`scripts/test -m "not slow"`; times in docs/benchmarks.md) leaves out every test that trains or exports a
# model, builds a knowledge base, starts a browser or a tracking server. Tests that use the session fixtures
# which train models are marked here by fixture, so a new test cannot land in the fast tier by accident.
SLOW_FIXTURES = frozenset({
    "triage_registry", "triage_model_dir", "module_registry", "own_registry", "served_settings",
    "ddi_training", "ddi_model_dir", "ddi_settings",
    "tracking_server",
})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())) or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)
