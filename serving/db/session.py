"""Engines, sessions and migrations for the review database, with time limits a frozen server cannot defeat.

- SQLite (the embedded default, ``sqlite:///<work_dir>/rxtriage.db``): WAL journal, foreign keys on, a busy
  timeout of ``statement_timeout_ms``, and every transaction starts with ``BEGIN IMMEDIATE`` (pysqlite's own
  implicit transaction handling is switched off), so writers are serialised and a transaction never fails
  half-way with ``SQLITE_BUSY_SNAPSHOT``.
- PostgreSQL (``postgresql+psycopg://user@host:port/db``): READ COMMITTED, ``connect_timeout``, server-side
  ``statement_timeout`` / ``lock_timeout``, TCP keepalives and ``tcp_user_timeout``, and a ping on every
  checkout (our own, under the operation's deadline: SQLAlchemy's ``pool_pre_ping`` has no time limit).

Time limits (``DbTimeouts``, from the ``RXT_DB_*`` settings).  A server that is *stopped* (SIGSTOP, a VM
pause, a network black hole) still lets the kernel accept connections and acknowledge bytes, so neither
``statement_timeout`` (the server enforces it) nor TCP keepalives ever fire, and a blocking driver call
waits forever.  So every unit of database work run through :meth:`Database.run` carries a client-side
deadline (``socket_timeout_s``): the async caller stops waiting at the deadline (-> 503), and a watchdog
thread shuts down the socket of every connection that unit still holds (SQLite: interrupts the statement),
so the worker thread is freed at the same moment and the pool discards the connection.  Database work runs
on the database's own bounded thread pool, never on the event loop.

``Database`` bundles an engine, a session factory and the "migrated yet?" state: ``ensure_ready()`` runs
``alembic upgrade head`` once (it is retried on the next call when the server was down), ``ping()`` /
``ping_async()`` are the readiness probe.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from sqlalchemy import Engine, Table, create_engine, event, exc as sa_exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from serving.settings import get_settings

log = logging.getLogger("rxtriage.db")

ALEMBIC_INI = Path(__file__).resolve().parent / "alembic.ini"
T = TypeVar("T")


@dataclass(frozen=True)
class DbTimeouts:
    """Time limits of the review database (see the module docstring); defaults = the settings' defaults."""

    connect_timeout_s: int = 3
    statement_timeout_ms: int = 5000
    socket_timeout_s: float = 8.0
    ping_timeout_s: float = 1.0

    @classmethod
    def from_settings(cls, settings) -> "DbTimeouts":
        return cls(connect_timeout_s=settings.db_connect_timeout_s,
                   statement_timeout_ms=settings.db_statement_timeout_ms,
                   socket_timeout_s=settings.db_socket_timeout_s, ping_timeout_s=settings.db_ping_timeout_s)


class DatabaseUnavailable(RuntimeError):
    """The review database cannot be reached or migrated; the caller should answer 503."""


# --- the watchdog: deadlines that a frozen server cannot ignore ------------------------------


class _Deadline:
    """One unit of database work: its deadline and the connections it holds (record -> kill callable)."""

    __slots__ = ("at", "held", "expired")

    def __init__(self, at: float) -> None:
        self.at = at
        self.held: dict[int, Callable[[], None]] = {}
        self.expired = False


class _Watchdog:
    """One thread per process: kills the connections of a unit of work that outlived its deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._seq = 0
        self._thread: threading.Thread | None = None

    def arm(self, deadline: _Deadline) -> None:
        with self._cond:
            self._seq += 1
            # the watchdog sleeps until the earliest entry of the heap (done entries stay in it until their time
            # comes): it needs waking only when this deadline is earlier than that -- not once per unit of work,
            # which would cost a thread switch per database call (issue #16)
            wake = not self._heap or deadline.at < self._heap[0][0]
            heapq.heappush(self._heap, (deadline.at, self._seq, deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rxt-db-watchdog", daemon=True)
                self._thread.start()
            elif wake:
                self._cond.notify()

    def attach(self, deadline: _Deadline, key: int, kill: Callable[[], None]) -> None:
        with self._cond:
            if deadline.expired:  # already late: kill at once instead of letting it block
                _quietly(kill)
                return
            deadline.held[key] = kill

    def detach(self, deadline: _Deadline, key: int) -> Callable[[], None] | None:
        with self._cond:
            return deadline.held.pop(key, None)

    def disarm(self, deadline: _Deadline) -> list[Callable[[], None]]:
        with self._cond:
            left = list(deadline.held.values())
            deadline.held.clear()
            deadline.at = -1.0  # marks it done; the heap entry is dropped when it comes up
            return left

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].at < 0 or self._heap[0][0] <= now):
                    at, _, deadline = heapq.heappop(self._heap)
                    if deadline.at < 0:
                        continue
                    deadline.expired = True
                    for kill in deadline.held.values():
                        _quietly(kill)
                timeout = (self._heap[0][0] - now) if self._heap else None
                self._cond.wait(timeout)


def _quietly(kill: Callable[[], None]) -> None:
    try:
        kill()
    except Exception:  # noqa: BLE001 - the connection may be gone already
        pass


_WATCHDOG = _Watchdog()
_current = threading.local()  # .deadline: the unit of work running in this thread


def _current_deadline() -> _Deadline | None:
    return getattr(_current, "deadline", None)


def _socket_killer(dbapi_conn) -> Callable[[], None] | None:
    """A callable that shuts down a psycopg connection's socket (a dup of it: no fd-reuse race)."""
    try:
        fd = dbapi_conn.pgconn.socket
        sock = socket.socket(fileno=os.dup(fd))
    except Exception:  # noqa: BLE001 - not connected: nothing to kill
        return None

    def kill() -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()

    kill.release = sock.close  # type: ignore[attr-defined]
    return kill


def _attach(dbapi_conn, record, killer_for) -> None:
    deadline = _current_deadline()
    if deadline is None or id(record) in deadline.held:
        return
    kill = killer_for(dbapi_conn)
    if kill is not None:
        _WATCHDOG.attach(deadline, id(record), kill)


def _detach(record) -> None:
    deadline = _current_deadline()
    if deadline is None:
        return
    kill = _WATCHDOG.detach(deadline, id(record))
    release = getattr(kill, "release", None)
    if release is not None:
        release()


def make_engine(url: str, timeouts: DbTimeouts | None = None, **kwargs) -> Engine:
    """An engine configured for this project (see the module docstring)."""
    t = timeouts or DbTimeouts()
    parsed = make_url(url)
    kwargs.setdefault("hide_parameters", True)  # SQL errors never carry patient data into logs or answers
    kwargs.setdefault("pool_timeout", t.socket_timeout_s)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            # the most recently returned connection first (a file database has a QueuePool): the group-commit
            # writer keeps one warm connection instead of rotating through the pool (SQLite drops a
            # connection's page cache when another connection wrote since its last use)
            kwargs.setdefault("pool_use_lifo", True)
        busy = max(1.0, t.statement_timeout_ms / 1000)
        connect_args = {"timeout": busy, "check_same_thread": False, **kwargs.pop("connect_args", {})}
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, record):  # pragma: no cover - exercised by every SQLite test
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        @event.listens_for(engine, "checkout")
        def _sqlite_checkout(dbapi_conn, record, proxy):
            _attach(dbapi_conn, record, lambda c: c.interrupt)

        @event.listens_for(engine, "checkin")
        def _sqlite_checkin(dbapi_conn, record):
            _detach(record)

        return engine
    if parsed.get_backend_name() == "postgresql":
        options = parsed.query.get("options", "")
        options = " ".join(options) if isinstance(options, tuple) else options
        ms = t.statement_timeout_ms
        connect_args = {
            "connect_timeout": t.connect_timeout_s,
            "options": f"{options} -c statement_timeout={ms} -c lock_timeout={ms}".strip(),
            # a peer that vanished (not a stopped one: the kernel still answers for that) is noticed
            "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
            "tcp_user_timeout": int(t.socket_timeout_s * 1000),
            **kwargs.pop("connect_args", {}),
        }
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 10)
        pre_ping = kwargs.pop("pool_pre_ping", True)
        _cache_converted_statements()
        engine = create_engine(url, connect_args=connect_args, pool_pre_ping=False, **kwargs)

        @event.listens_for(engine, "connect")
        def _pg_connect(dbapi_conn, record):
            record.info["rxt_fresh"] = True
            _attach(dbapi_conn, record, _socket_killer)  # dialect initialisation runs under the deadline too

        @event.listens_for(engine, "checkout")
        def _pg_checkout(dbapi_conn, record, proxy):
            _attach(dbapi_conn, record, _socket_killer)
            if pre_ping and not record.info.pop("rxt_fresh", False):
                # SQLAlchemy's pool_pre_ping, but under this unit's deadline (the watchdog can cut it short)
                try:
                    engine.dialect.do_ping(dbapi_conn)
                except Exception as exc:  # noqa: BLE001 - a dead connection: the pool reconnects once
                    _detach(record)
                    raise sa_exc.DisconnectionError(f"pre-ping failed: {exc.__class__.__name__}") from exc

        @event.listens_for(engine, "checkin")
        def _pg_checkin(dbapi_conn, record):
            _detach(record)

        return engine
    raise ValueError(
        f"unsupported database URL scheme {parsed.drivername!r}: use sqlite:///path or postgresql+psycopg://..."
    )


# rows per multi-row INSERT (9 columns x 500 = 4,500 parameters: far below PostgreSQL's 65,535)
INSERT_ROWS_CHUNK = 500


@functools.lru_cache(maxsize=512)
def _multi_row_insert(dialect, table: Table, columns: tuple[str, ...], n: int) -> str | None:
    """``INSERT INTO t (a, b) VALUES (%s, %s), ...`` for ``n`` rows, or None when a column's type processes
    its values before they reach the driver (JSON, some DateTimes: then SQLAlchemy must bind them)."""
    quote = dialect.identifier_preparer.quote
    for name in columns:
        if table.c[name].type._cached_bind_processor(dialect) is not None:  # noqa: SLF001 - SQLAlchemy's own cache
            return None
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return (f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({', '.join(quote(c) for c in columns)}) "
            f"VALUES {', '.join([row] * n)}")


def _cache_converted_statements() -> None:
    """Let psycopg cache its parse of our statements with more than 50 parameters or 4 KB of text.

    psycopg converts a query's ``%(name)s`` / ``%s`` placeholders with a regex pass over the text and caches the
    result (an LRU of 128 texts) only for statements of at most 50 parameters and 4,096 bytes
    (``psycopg._queries.MAX_CACHED_STATEMENT_*``: meant to keep ORM-generated one-off texts out of the cache).  The
    group commit's statements are exactly those: the reviews' ``INSERT ... VALUES (...) x n RETURNING`` and the
    multi-row inserts of :func:`insert_rows` for n = the batch size, a few dozen texts used over and over.  Parsed
    anew each time they cost ~30% of the writer's CPU on PostgreSQL (issue #16, docs/benchmarks.md).  psycopg is
    pinned to 3.3; if the constants move, this does nothing and only the speed is lost."""
    try:
        from psycopg import _queries
    except ImportError:  # pragma: no cover - no PostgreSQL driver installed
        return
    if hasattr(_queries, "MAX_CACHED_STATEMENT_PARAMS") and hasattr(_queries, "MAX_CACHED_STATEMENT_LENGTH"):
        _queries.MAX_CACHED_STATEMENT_PARAMS = max(_queries.MAX_CACHED_STATEMENT_PARAMS, 20_000)
        _queries.MAX_CACHED_STATEMENT_LENGTH = max(_queries.MAX_CACHED_STATEMENT_LENGTH, 256 * 1024)


def insert_rows(session: Session, table: Table, rows: list[dict]) -> None:
    """INSERT ``rows`` (dicts with the same keys) into ``table`` in the session's transaction.

    On PostgreSQL: one multi-row ``INSERT ... VALUES (...), (...)`` per :data:`INSERT_ROWS_CHUNK` rows, i.e. one
    round trip, sent as the driver's SQL (its text built once per table, columns and row count: SQLAlchemy would
    compile a multi-row statement anew for every call) when no column's type processes its values; else, and
    on SQLite, the driver's ``executemany``.  psycopg's ``executemany`` (pipeline mode) sends and syncs row by
    row: a group-commit batch of ~8 checks spent ~14 client/server waits and most of its client CPU in it
    (issue #16, docs/benchmarks.md).  SQLite's ``executemany`` is one C loop in this process: kept.
    """
    if not rows:
        return
    bind = session.get_bind()
    if len(rows) > 1 and bind.dialect.name == "postgresql":
        columns = tuple(rows[0])
        connection = session.connection()
        for start in range(0, len(rows), INSERT_ROWS_CHUNK):
            chunk = rows[start:start + INSERT_ROWS_CHUNK]
            sql = _multi_row_insert(bind.dialect, table, columns, len(chunk))
            if sql is None:
                break
            connection.exec_driver_sql(sql, tuple(row[c] for row in chunk for c in columns))
        else:
            return
        rows = rows[start:]
    session.execute(table.insert(), rows)


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
    def __init__(self, url: str, timeouts: DbTimeouts | None = None, **engine_kwargs) -> None:
        self.url = url
        self.timeouts = timeouts or DbTimeouts()
        self.engine = make_engine(url, self.timeouts, **engine_kwargs)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._migrated = False
        self._lock = threading.Lock()
        pool = self.engine.pool
        workers = (pool.size() + max(0, getattr(pool, "_max_overflow", 0))) if hasattr(pool, "size") else 8
        self._workers = max(4, min(32, workers))
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._ping: asyncio.Future | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def assume_migrated(self) -> None:
        """Skip ``alembic upgrade head`` here: another process ran it (``python -m serving --workers N``)."""
        self._migrated = True

    def ensure_ready(self) -> None:
        """Migrate once; raise :class:`DatabaseUnavailable` when the database cannot be reached."""
        if self._migrated:
            return
        with self._lock:
            if self._migrated:
                return
            try:
                upgrade(self.engine)
            except (OperationalError, DBAPIError, sa_exc.TimeoutError) as exc:
                raise self._unavailable(exc) from exc
            self._migrated = True

    def _unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        deadline = _current_deadline()
        if deadline is not None and deadline.expired:
            return DatabaseUnavailable(f"review database {describe(self.url)} did not answer within "
                                       f"{self.timeouts.socket_timeout_s:g} s")
        return DatabaseUnavailable(f"review database {describe(self.url)} is unavailable: {_first_line(exc)}")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back on error.

        Connection-level failures surface as :class:`DatabaseUnavailable`.  Blocking: call it from a worker
        thread (``await db.run(fn)``), never on the event loop.
        """
        self.ensure_ready()
        try:
            with self.sessions() as session, session.begin():
                yield session
        except (OperationalError, DBAPIError) as exc:
            if _is_connection_problem(exc) or (_current_deadline() is not None and _current_deadline().expired):
                raise self._unavailable(exc) from exc
            raise
        except sa_exc.TimeoutError as exc:  # no pooled connection came free in time
            raise self._unavailable(exc) from exc

    # -- running blocking work with a deadline -------------------------------------------------
    @contextmanager
    def deadline(self, seconds: float | None = None) -> Iterator[None]:
        """Blocking work in this block gets a client-side deadline (see the module docstring)."""
        outer = _current_deadline()
        if outer is not None:  # nested: the outer unit's deadline rules
            yield
            return
        unit = _Deadline(time.monotonic() + (self.timeouts.socket_timeout_s if seconds is None else seconds))
        _WATCHDOG.arm(unit)
        _current.deadline = unit
        try:
            yield
        finally:
            _current.deadline = None
            for kill in _WATCHDOG.disarm(unit):
                release = getattr(kill, "release", None)
                if release is not None:
                    release()

    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="rxt-db")
            return self._executor

    def _call(self, started: float, seconds: float, fn: Callable[..., T], args, kwargs) -> T:
        left = started + seconds - time.monotonic()
        if left <= 0:  # waited for a worker past the deadline (every worker was busy): do not start
            raise DatabaseUnavailable(f"review database {describe(self.url)} is busy: no worker came free within "
                                      f"{seconds:g} s")
        with self.deadline(left):
            return fn(*args, **kwargs)

    async def run(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """Run blocking database work ``fn(*args, **kwargs)`` on the database's threads, within ``timeout``
        (default ``socket_timeout_s``) counted from now: past it :class:`DatabaseUnavailable` is raised
        (-> 503) and the work's connections are cut, so the thread does not stay blocked either."""
        seconds = self.timeouts.socket_timeout_s if timeout is None else timeout
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool(), functools.partial(
            self._call, time.monotonic(), seconds, fn, args, kwargs))
        try:
            # a little grace: the watchdog's cut normally ends the work first, with the driver's own error
            return await asyncio.wait_for(asyncio.shield(future), seconds + 0.25)
        except TimeoutError:
            future.add_done_callback(_consume)
            raise DatabaseUnavailable(f"review database {describe(self.url)} did not answer within "
                                      f"{seconds:g} s") from None

    # -- readiness -----------------------------------------------------------------------------
    def ping(self) -> tuple[bool, str]:
        """Readiness probe (blocking): (ok, detail)."""
        try:
            self.ensure_ready()
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                conn.rollback()
        except DatabaseUnavailable as exc:
            return False, str(exc)
        except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
            if _current_deadline() is not None and _current_deadline().expired:
                return False, str(self._unavailable(exc))
            return False, f"{describe(self.url)}: {_first_line(exc)}"
        return True, f"{self.dialect} ok"

    async def ping_async(self) -> tuple[bool, str]:
        """Readiness probe off the event loop, answered within ``ping_timeout_s``; concurrent probes share
        one ping in flight (a hanging database never gathers a thread per /readyz call)."""
        seconds = self.timeouts.ping_timeout_s
        ping = self._ping
        if ping is None or ping.done() or ping.get_loop() is not asyncio.get_running_loop():
            ping = self._ping = asyncio.ensure_future(self.run(self.ping, timeout=seconds))
        try:
            return await asyncio.wait_for(asyncio.shield(ping), seconds + 0.5)
        except DatabaseUnavailable as exc:
            return False, str(exc)
        except TimeoutError:
            return False, f"review database {describe(self.url)} did not answer within {seconds:g} s"

    def dispose(self) -> None:
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()


def _consume(future) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: no "exception was never retrieved" noise for abandoned work


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
