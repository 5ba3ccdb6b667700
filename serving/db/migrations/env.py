"""Alembic environment of the review database.

Used two ways: programmatically (``serving.db.session.upgrade`` passes an open connection in
``config.attributes["connection"]``) or from the command line (``-x url=...``, else the project settings).
"""

from __future__ import annotations

from alembic import context

from serving.db.models import Base
from serving.db.session import make_engine
from serving.settings import get_settings

config = context.config
target_metadata = Base.metadata

# One advisory-lock id for all migrations of this schema (PostgreSQL): concurrent start-ups of several
# app processes then migrate one after the other instead of racing on CREATE TABLE.
_PG_MIGRATION_LOCK = 0x52585431  # "RXT1"


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url

    return get_settings().resolved_database_url()


def _run(connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return

    engine = make_engine(_url())
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
