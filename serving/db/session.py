"""Engines, sessions and migrations for the review database.

- SQLite (the embedded default, ``sqlite:///<work_dir>/rxtriage.db``): WAL journal, foreign keys on, a
  30 s busy timeout, and every transaction starts with ``BEGIN IMMEDIATE`` (pysqlite's own implicit
  transaction handling is switched off), so writers are serialised and a transaction never fails half-way
  with ``SQLITE_BUSY_SNAPSHOT``.
- PostgreSQL (``postgresql+psycopg://user@host:port/db``): READ COMMITTED, connections pre-pinged, a short
  connect timeout so an unreachable server is reported quickly as :class:`DatabaseUnavailable`.

``Database`` bundles an engine, a session factory and the "migrated yet?" state: ``ensure_ready()`` runs
``alembic upgrade head`` once (it is retried on the next call when the server was down), ``ping()`` is the
readiness probe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from serving.settings import get_settings

log = logging.getLogger("rxtriage.db")

ALEMBIC_INI = Path(__file__).resolve().parent / "alembic.ini"


class DatabaseUnavailable(RuntimeError):
    """The review database cannot be reached or migrated; the caller should answer 503."""


def make_engine(url: str, **kwargs) -> Engine:
    """An engine configured for this project (see the module docstring)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": 30, "check_same_thread": False, **kwargs.pop("connect_args", {})}
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every SQLite test
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == "postgresql":
        connect_args = {"connect_timeout": 5, **kwargs.pop("connect_args", {})}
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 10)
        return create_engine(url, connect_args=connect_args, **kwargs)
    raise ValueError(
        f"unsupported database URL scheme {parsed.drivername!r}: use sqlite:///path or postgresql+psycopg://..."
    )


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations (``serving/db/alembic.ini``) on ``engine`` up to ``revision``."""
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def describe(url: str) -> str:
    """The URL without its password, safe for logs and error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported as such
        return "<unparsable database URL>"


class Database:
    def __init__(self, url: str, **engine_kwargs) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._migrated = False
        self._lock = threading.Lock()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def ensure_ready(self) -> None:
        """Migrate once; raise :class:`DatabaseUnavailable` when the database cannot be reached."""
        if self._migrated:
            return
        with self._lock:
            if self._migrated:
                return
            try:
                upgrade(self.engine)
            except (OperationalError, DBAPIError) as exc:
                raise DatabaseUnavailable(
                    f"review database {describe(self.url)} is unavailable: {_first_line(exc)}"
                ) from exc
            self._migrated = True

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back on error.

        Connection-level failures surface as :class:`DatabaseUnavailable`.
        """
        self.ensure_ready()
        try:
            with self.sessions() as session, session.begin():
                yield session
        except (OperationalError, DBAPIError) as exc:
            if _is_connection_problem(exc):
                raise DatabaseUnavailable(
                    f"review database {describe(self.url)} is unavailable: {_first_line(exc)}"
                ) from exc
            raise

    def ping(self) -> tuple[bool, str]:
        """Readiness probe: (ok, detail)."""
        try:
            self.ensure_ready()
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                conn.rollback()
        except DatabaseUnavailable as exc:
            return False, str(exc)
        except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
            return False, f"{describe(self.url)}: {_first_line(exc)}"
        return True, f"{self.dialect} ok"

    def dispose(self) -> None:
        self.engine.dispose()


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0][:300]


def _is_connection_problem(exc: DBAPIError) -> bool:
    if getattr(exc, "connection_invalidated", False):
        return True
    if isinstance(exc, OperationalError):
        message = str(exc.orig).lower()
        # SQLite "database is locked" after the busy timeout is also "unavailable right now".
        return not any(s in message for s in ("syntax error", "no such column", "no such table"))
    return False


_databases: dict[str, Database] = {}
_databases_lock = threading.Lock()


def database_for(url: str) -> Database:
    """One shared :class:`Database` per URL in this process (engines are pools; create them once)."""
    with _databases_lock:
        db = _databases.get(url)
        if db is None:
            db = _databases[url] = Database(url)
        return db


@contextmanager
def session_scope(settings=None, *, database_url: str | None = None) -> Iterator[Session]:
    """A migrated session in one transaction on the configured review database (for CLIs and scripts).

    ``database_url`` wins over ``settings.resolved_database_url()``; with neither, the project settings.
    """
    if database_url is None:
        if settings is None:

            settings = get_settings()
        database_url = settings.resolved_database_url()
    with database_for(database_url).session() as session:
        yield session
