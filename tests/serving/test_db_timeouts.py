"""A frozen or locked review database answers 503 within its deadline and never stalls the event loop.

The frozen server is the real PostgreSQL behind ``tests/serving/faults.FreezableProxy`` (sockets stay open,
nothing is answered: what a SIGSTOPped server or a paused host looks like).  The full fault-injection suite
with a cluster of its own (stopped, SIGSTOPped, restarted; service killed) is tests/serving/test_faults.py.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url

from serving import audit
from serving.db import Database
from serving.db.session import DatabaseUnavailable, DbTimeouts
from tests.plugins.db import auth
from tests.serving.faults import FreezableProxy
from tests.serving.test_reviews_api import CLEAN, FLAGGED

FAST = dict(db_socket_timeout_s=1.5, db_statement_timeout_ms=1000, db_connect_timeout_s=2, db_ping_timeout_s=0.5)


def _via(proxy: FreezableProxy, url: str) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def _timed(fn, *args, **kwargs):
    started = time.monotonic()
    response = fn(*args, **kwargs)
    return response, time.monotonic() - started


def test_frozen_postgres_answers_503_in_time_and_the_event_loop_keeps_serving(review_app, pg_schema_url):
    proxy = FreezableProxy(make_url(pg_schema_url).port or 5432)
    app = review_app(_via(proxy, pg_schema_url), **FAST)
    try:
        with TestClient(app) as client, ThreadPoolExecutor(8) as pool:
            assert client.post("/v1/prescriptions/check", json=FLAGGED, headers=auth("prescriber")).status_code == 200
            assert client.get("/v1/reviews", headers=auth("pharmacist")).status_code == 200

            proxy.freeze()
            try:
                checks = [pool.submit(_timed, client.post, "/v1/prescriptions/check", json=rx,
                                      headers=auth("prescriber")) for rx in (FLAGGED, CLEAN, FLAGGED, CLEAN)]
                listing = pool.submit(_timed, client.get, "/v1/reviews", headers=auth("pharmacist"))
                ready = pool.submit(_timed, client.get, "/readyz")
                time.sleep(0.2)  # the requests above are now waiting on the frozen server
                # the event loop is free: liveness answers at once while database work hangs
                for _ in range(5):
                    r, took = pool.submit(_timed, client.get, "/healthz").result(timeout=5)
                    assert r.status_code == 200 and took < 1.0, f"/healthz took {took:.2f} s while the DB is frozen"
                r, took = ready.result(timeout=10)
                assert r.status_code == 503 and took < FAST["db_ping_timeout_s"] + 1.0, (took, r.text)
                assert r.json()["components"]["database"]["ok"] is False
                for future in [*checks, listing]:
                    r, took = future.result(timeout=15)
                    assert r.status_code == 503, r.text  # never a verdict that was not recorded, never a pass
                    assert took < FAST["db_socket_timeout_s"] + 1.5, f"answered after {took:.2f} s"
                    assert r.headers["retry-after"] and "verdict" not in r.json()
            finally:
                proxy.thaw()  # also lets requests that hang (without the fix) finish, so the pool can close
            # the frozen requests' connections were cut: the pool recovers by itself
            deadline = time.monotonic() + 15
            while True:
                r = client.post("/v1/prescriptions/check", json=FLAGGED, headers=auth("prescriber"))
                if r.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert r.status_code == 200, r.text
            assert client.get("/readyz").json()["components"]["database"]["ok"] is True
    finally:
        proxy.thaw()
        proxy.close()
    db = Database(pg_schema_url)
    with db.session() as s:
        assert audit.verify_chain(s).ok
    db.dispose()


def test_locked_sqlite_answers_503_within_the_statement_timeout(review_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    app = review_app(url, db_statement_timeout_ms=300, db_socket_timeout_s=2.0)
    with TestClient(app) as client:
        assert client.post("/v1/prescriptions/check", json=FLAGGED, headers=auth("prescriber")).status_code == 200
        holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        try:
            r, took = _timed(client.post, "/v1/prescriptions/check", json=FLAGGED, headers=auth("prescriber"))
            assert r.status_code == 503 and took < 2.0, (took, r.text)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert client.post("/v1/prescriptions/check", json=FLAGGED, headers=auth("prescriber")).status_code == 200


def test_run_interrupts_a_runaway_sqlite_statement_and_frees_its_thread(tmp_path):
    import asyncio

    db = Database(f"sqlite:///{tmp_path / 'slow.db'}", DbTimeouts(socket_timeout_s=0.5))
    db.ensure_ready()
    endless = text("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")

    def slow():
        with db.session() as s:
            return s.execute(endless).scalar()

    def quick():
        with db.session() as s:
            return s.execute(text("SELECT 42")).scalar()

    async def main():
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="within 0.5 s"):
            await db.run(slow)
        took = time.monotonic() - started
        # the statement was interrupted: the one worker is free again for the next unit of work
        return took, await db.run(quick)

    try:
        took, answer = asyncio.run(main())
        assert took < 1.5 and answer == 42
        busy = [t for t in threading.enumerate() if t.name.startswith("rxt-db")]
        assert len(busy) <= db._workers
    finally:
        db.dispose()


def test_async_handlers_never_call_blocking_database_code():
    """Structural guard beside the behavioural tests above: in the route modules, an ``async def`` never opens a
    database session or calls ``review_queue.decide`` itself; it hands blocking work to ``db.run`` (nested plain
    ``def`` helpers, which run on the database's threads, may)."""
    import ast
    from pathlib import Path

    routes = Path(__file__).resolve().parents[2] / "serving" / "routes"
    blocking = {"session", "ensure_ready", "ping", "decide", "record_check", "record_check_once"}
    wrong = []
    for path in sorted(routes.glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in [n for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef)]:
            stack = list(fn.body)
            while stack:
                node = stack.pop()
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    continue  # a helper handed to db.run, not run on the event loop
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr in blocking:
                    wrong.append(f"{path.name}:{node.lineno} {fn.name} calls .{node.func.attr}() on the event loop")
                stack.extend(ast.iter_child_nodes(node))
    assert not wrong, "\n".join(wrong)
