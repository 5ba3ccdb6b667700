"""Fixtures of the review queue: databases (SQLite and the real PostgreSQL), a loaded prescription checker,
an app with API keys for every role.

- ``db_url``: parametrized over ``sqlite`` (a file in tmp) and ``postgresql`` (the real server, a fresh
  schema per test selected through ``search_path``, dropped afterwards, so parallel runs never collide).
- ``review_db``: a migrated :class:`serving.db.Database` on ``db_url``.
- ``rx_checker``: the real ``prescription_check.Checker`` (KB built once per session into a tmp dir).
- ``review_app``: ``(app, keys)`` factory building ``create_app`` on a database URL with the shared checker.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine

from serving.settings import Settings

ROLE_KEYS = {
    "chat": "chat-key-0123456789",
    "prescriber": "prescriber-key-0123456789",
    "pharmacist": "pharmacist-key-0123456789",
    "pharmacist2": "pharmacist2-key-0123456789",
    "admin": "admin-key-0123456789",
    "ml": "ml-key-0123456789",
    "clinician": "clinician-key-0123456789",
}
API_KEYS = {key: ("pharmacist" if name == "pharmacist2" else name) for name, key in ROLE_KEYS.items()}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ROLE_KEYS[name]}"}


def _pg_admin_engine(pg_url: str):
    return create_engine(pg_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


@pytest.fixture
def pg_schema_url(pg_url):
    """A PostgreSQL URL whose connections live in a brand-new schema (dropped after the test)."""
    schema = f"rxt_t_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    admin = _pg_admin_engine(pg_url)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in pg_url else "?"
    yield f"{pg_url}{sep}options={quote(f'-csearch_path={schema}')}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'reviews.db'}"
    return request.getfixturevalue("pg_schema_url")


@pytest.fixture
def review_db(db_url):
    from serving.db import Database

    db = Database(db_url)
    db.ensure_ready()
    yield db
    db.dispose()


@pytest.fixture(scope="session")
def rx_checker_settings(tmp_path_factory) -> Settings:
    return Settings(work_dir=tmp_path_factory.mktemp("rx_checker") / "var", api_keys={})


@pytest.fixture(scope="session")
def rx_checker(rx_checker_settings):
    """The real prescription checker, rules only (the DDI model is another area's), loaded once per session
    with its KB built from the real tables into a session tmp dir (``rx_checker_settings.resolved_kb_path()``)."""
    from serving.components import load_checker
    from training.kb_build import ensure_kb

    ensure_kb(rx_checker_settings)
    return load_checker(rx_checker_settings, model_status="rules-only: DDI model disabled")


@pytest.fixture
def review_app(tmp_path, rx_checker):
    """Factory: ``make(database_url=None, **settings)`` -> FastAPI app using the shared checker."""
    from serving.app import create_app

    def make(database_url: str | None = None, **overrides):
        overrides.setdefault("triage_model_uri", str(tmp_path / "no-triage-model"))  # triage is not under test
        settings = Settings(work_dir=tmp_path / "var", api_keys=API_KEYS, database_url=database_url, **overrides)
        return create_app(settings, checker=rx_checker)

    return make
