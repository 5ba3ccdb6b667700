"""Group commit of prescription checks (serving.group_commit, review_queue.record_checks, audit.append_many), on
SQLite and the real PostgreSQL: the chain stays valid with concurrent writers, answers come after the commit, one
bad job never fails the others, Idempotency-Keys keep their meaning inside a batch."""

from __future__ import annotations

import asyncio
import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from serving import audit, group_commit, review_queue
from serving.db import AuditEntryRow, Database, Review, ReviewFinding
from serving.review_queue import CheckJob, IdempotencyMismatch
from tests.plugins.db import auth

FLAGGED = {"verdict": "review", "kb_version": "kb-t", "model_version": None, "model_status": "rules-only", "items": [],
           "findings": [{"rule_id": "DDI-T", "category": "interaction", "severity": "major"},
                        {"rule_id": "DOSE-T", "category": "dose", "severity": "moderate"}]}
CLEAN = {"verdict": "pass", "kb_version": "kb-t", "model_version": None, "model_status": "rules-only", "items": [],
         "findings": []}


def job(i: int, flagged: bool, actor: str = "prescriber:k1") -> CheckJob:
    rx = {"id": f"rx-{i}", "prescriber_id": "dr-1", "patient": {"age_years": 40 + i % 30},
          "items": [{"drug": "warfarin"}, {"drug": "ibuprofen"}]}
    return CheckJob(rx, FLAGGED if flagged else CLEAN, actor, "moderate")


def counts(db: Database) -> tuple[int, int, int]:
    with db.sessions() as s:
        return (s.scalar(select(func.count()).select_from(Review)),
                s.scalar(select(func.count()).select_from(ReviewFinding)),
                s.scalar(select(func.count()).select_from(AuditEntryRow)))


def test_record_checks_writes_what_record_check_writes(review_db):
    jobs = [job(i, flagged=i % 3 != 0) for i in range(9)]
    with review_db.session() as s:
        records = review_queue.record_checks(s, jobs)
    assert [r.queued for r in records] == [i % 3 != 0 for i in range(9)]
    assert [r.audit_id for r in records] == list(range(1, 10))
    with review_db.session() as s:  # one more through the single path: the chain continues from the batch
        single = review_queue.record_check(s, prescription=jobs[1].prescription, result=FLAGGED,
                                           actor="prescriber:k1", queue_min_severity="moderate")
    assert single.audit_id == 10
    with review_db.sessions() as s:
        assert audit.verify_chain(s).ok
        assert audit.verify_reviews(s).ok
        entries = audit.history(s)
        for record, entry in zip(records, entries):
            assert entry.action == "prescription.check"
            if record.queued:
                assert entry.subject == f"review:{record.review_id}"
                assert entry.after["review_id"] == record.review_id and entry.after["status"] == "pending"
                review = s.get(Review, record.review_id)
                assert review.status == "pending" and review.max_severity == "major"
            else:
                assert entry.subject.startswith("prescription:rx-") and entry.after["queued"] is False
    assert counts(review_db) == (7, 14, 10)


def test_concurrent_group_commits_and_per_request_writers_keep_one_chain(db_url):
    """Two 'processes' (two Database objects, each with its own writer) and plain per-request writers at once."""
    dbs = [Database(db_url), Database(db_url)]
    dbs[0].ensure_ready()
    per_loop, loops, threads_plain, per_thread = 40, 2, 3, 5
    errors: list[BaseException] = []
    audit_ids: list[int] = []
    lock = threading.Lock()

    def run_loop(k: int) -> None:
        async def main() -> None:
            committer = group_commit.GroupCommitter(dbs[k], max_batch=16)
            try:
                outcomes = await asyncio.gather(*(committer.submit(job(1000 * k + i, i % 2 == 0))
                                                  for i in range(per_loop)))
                assert committer.batches < per_loop  # they were grouped
            finally:
                await committer.stop()
            with lock:
                audit_ids.extend(o.body["audit_id"] for o in outcomes)

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def run_plain(t: int) -> None:
        try:
            for i in range(per_thread):
                out = review_queue.record_check_once(dbs[t % 2], prescription=job(5000 + 10 * t + i, True).prescription,
                                                     result=FLAGGED, actor="prescriber:k2", queue_min_severity="moderate")
                with lock:
                    audit_ids.append(out.body["audit_id"])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    workers = [threading.Thread(target=run_loop, args=(k,)) for k in range(loops)]
    workers += [threading.Thread(target=run_plain, args=(t,)) for t in range(threads_plain)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    try:
        assert not errors, errors
        total = loops * per_loop + threads_plain * per_thread
        assert sorted(audit_ids) == list(range(1, total + 1))  # every answer names its own committed entry
        with dbs[0].sessions() as s:
            result = audit.verify_chain(s)
            assert result.ok and result.checked == total, result
            assert audit.verify_reviews(s).ok
        flagged = loops * (per_loop // 2) + threads_plain * per_thread
        assert counts(dbs[0]) == (flagged, 2 * flagged, total)
    finally:
        for db in dbs:
            db.dispose()


def test_one_bad_job_does_not_fail_its_batch(review_db):
    bad = CheckJob(job(1, True).prescription, FLAGGED, "x" * 300, "moderate")  # actor too long for the audit log

    async def main():
        committer = group_commit.GroupCommitter(review_db)
        try:
            return await asyncio.gather(committer.submit(job(0, True)), committer.submit(bad),
                                        committer.submit(job(2, False)), return_exceptions=True)
        finally:
            await committer.stop()

    first, second, third = asyncio.run(main())
    # SQLite: the audit module's own check (ValueError); PostgreSQL refuses the review row first (DataError)
    assert isinstance(second, Exception) and not isinstance(second, review_queue.CheckOutcome)
    assert first.body["queued"] is True and third.body["queued"] is False
    assert counts(review_db) == (1, 2, 2)
    with review_db.sessions() as s:
        assert audit.verify_chain(s).ok


def test_idempotency_keys_inside_one_batch(review_db):
    same = job(7, True)
    other = job(8, True)

    async def main():
        committer = group_commit.GroupCommitter(review_db)
        try:
            first = await asyncio.gather(committer.submit(same, "key-a"), committer.submit(same, "key-a"),
                                         committer.submit(job(9, False), "key-b"), committer.submit(job(10, True)))
            again = await asyncio.gather(committer.submit(same, "key-a"), committer.submit(other, "key-a"),
                                         committer.submit(job(11, False)), return_exceptions=True)
            return first, again
        finally:
            await committer.stop()

    (a1, a2, b, plain), (a3, mismatch, plain2) = asyncio.run(main())
    assert a1.replayed is False and a2.replayed is True and a3.replayed is True
    assert a1.body == a2.body == a3.body
    assert b.body["queued"] is False and plain.body["queued"] is True and plain2.body["queued"] is False
    assert isinstance(mismatch, IdempotencyMismatch)
    # key-a recorded once, key-b once, two plain checks
    assert counts(review_db) == (2, 4, 4)


def test_http_answers_after_commit_with_group_commit(review_app, db_url, rx_checker):
    """Concurrent HTTP checks: every answer's audit entry and review exist, the chain is intact."""
    app = review_app(db_url, db_group_commit=True)
    bodies = [{"id": f"http-{i}", "patient": {"age_years": 50},
               "items": ([{"sig": "warfarin 5 mg daily"}, {"sig": "ibuprofen 400mg q8h prn pain"}] if i % 2
                         else [{"sig": "omeprazole 20 mg daily"}])} for i in range(24)]
    answers = []
    with TestClient(app) as client:
        def post(body):
            r = client.post("/v1/prescriptions/check", json=body, headers=auth("prescriber"))
            answers.append(r)

        pool = [threading.Thread(target=post, args=(b,)) for b in bodies]
        for t in pool:
            t.start()
        for t in pool:
            t.join(60)
        db = app.state.rxt.db
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200]
        with db.sessions() as s:
            for r in answers:
                body = r.json()
                entry = s.get(AuditEntryRow, body["audit_id"])
                assert entry is not None
                if body["queued"]:
                    assert s.get(Review, body["review_id"]) is not None
            assert audit.verify_chain(s).ok
        assert sorted(r.json()["audit_id"] for r in answers) == list(range(1, 25))
        assert sum(r.json()["queued"] for r in answers) == 12


@pytest.mark.parametrize("enabled", [True, False])
def test_setting_switches_the_write_path(review_app, tmp_path, enabled):
    app = review_app(f"sqlite:///{tmp_path / 'gc.db'}", db_group_commit=enabled)
    with TestClient(app) as client:
        r = client.post("/v1/prescriptions/check", json={"items": [{"sig": "omeprazole 20 mg daily"}]},
                        headers=auth("prescriber"))
        assert r.status_code == 200
        db = app.state.rxt.db
        assert (db in group_commit._committers) is enabled  # noqa: SLF001


def test_insert_rows_writes_what_executemany_writes(review_db, monkeypatch):
    """serving.db.session.insert_rows (one multi-row INSERT per chunk on PostgreSQL, executemany on SQLite; issue
    #16): every row lands, in chunks too, and a table with a processed column type (JSON) still goes through
    SQLAlchemy's binding."""
    from datetime import UTC, datetime

    from serving.db import session as db_session
    from serving.db.models import CheckIdempotencyKey

    monkeypatch.setattr(db_session, "INSERT_ROWS_CHUNK", 3)
    with review_db.session() as s:
        ids = list(s.execute(review_queue._INSERT_REVIEW.returning(Review.__table__.c.id, sort_by_parameter_order=True),  # noqa: SLF001
                             [review_queue._review_row(job(i, True).prescription, FLAGGED, "prescriber:k1",  # noqa: SLF001
                                                       FLAGGED["findings"], "review", "major") for i in range(2)]
                             ).scalars())
        rows = [{"review_id": ids[i % 2], "rule_id": f"R-{i}", "category": "interaction", "severity": "major"}
                for i in range(8)]
        db_session.insert_rows(s, ReviewFinding.__table__, rows)
        db_session.insert_rows(s, ReviewFinding.__table__, [])
        db_session.insert_rows(s, ReviewFinding.__table__, [{"review_id": ids[0], "rule_id": "R-single",
                                                             "category": "dose", "severity": "minor"}])
        keyed = [{"key": f"k-{i}", "request_hash": "h" * 64, "actor": "prescriber:k1", "audit_id": i + 1,
                  "response": {"verdict": "pass", "n": i, "text": "ñ"}, "created_at": datetime.now(UTC)}
                 for i in range(4)]
        db_session.insert_rows(s, CheckIdempotencyKey.__table__, keyed)
    with review_db.sessions() as s:
        got = s.execute(select(ReviewFinding.review_id, ReviewFinding.rule_id).order_by(ReviewFinding.id)).all()
        assert [tuple(r) for r in got] == [(r["review_id"], r["rule_id"]) for r in rows] + [(ids[0], "R-single")]
        stored = {k.key: k.response for k in s.scalars(select(CheckIdempotencyKey))}
        assert stored == {f"k-{i}": {"verdict": "pass", "n": i, "text": "ñ"} for i in range(4)}
    if review_db.dialect == "postgresql":  # the driver keeps its parse of the long batch statements
        from psycopg import _queries

        assert _queries.MAX_CACHED_STATEMENT_PARAMS >= 20_000


def test_bounded_gathering_waits_for_the_expected_batch_and_never_when_idle(review_db):
    """RXT_DB_GROUP_COMMIT_WAIT_MS (issue #16): after a batch of 8, a lone check waits for the 7 the writer expects
    and they are recorded in one transaction; a service whose batches are of one never waits; a wait that is not
    met ends at its bound and writes what it has; a writer stopped while gathering answers the job it holds."""

    async def main() -> None:
        idle = group_commit.GroupCommitter(review_db, max_batch=64, wait_s=30.0)
        for i in range(3):  # one at a time: never waits (the 30 s bound would show as a hung test)
            await idle.submit(job(i, i % 2 == 0))
        assert (idle.batches, idle.waits) == (3, 0)
        await idle.stop()

        committer = group_commit.GroupCommitter(review_db, max_batch=64, wait_s=30.0)
        await asyncio.gather(*(committer.submit(job(10 + i, i % 2 == 0)) for i in range(8)))
        assert committer.batches == 1  # all 8 were waiting when the writer first ran
        lone = asyncio.ensure_future(committer.submit(job(20, True)))
        while committer.waits == 0:  # the writer took the lone job and waits for 7 more
            await asyncio.sleep(0.01)
        assert not lone.done()
        rest = [asyncio.ensure_future(committer.submit(job(21 + i, i % 2 == 0))) for i in range(7)]
        outcomes = await asyncio.gather(lone, *rest)
        assert committer.batches == 2 and committer.jobs == 16  # the 8 in one transaction
        assert all(o.body["audit_id"] for o in outcomes)
        await committer.stop()

        short = group_commit.GroupCommitter(review_db, max_batch=64, wait_s=0.02)
        await asyncio.gather(*(short.submit(job(40 + i, False)) for i in range(8)))
        alone = await short.submit(job(50, True))  # expected 8, none came: written after the bound
        assert alone.body["queued"] and short.batches == 2 and short.waits == 1
        await short.stop()

        stopping = group_commit.GroupCommitter(review_db, max_batch=64, wait_s=30.0)
        await asyncio.gather(*(stopping.submit(job(60 + i, False)) for i in range(4)))
        held = asyncio.ensure_future(stopping.submit(job(70, False)))
        while stopping.waits == 0:
            await asyncio.sleep(0.01)
        await stopping.stop()
        with pytest.raises(group_commit.DatabaseUnavailable):
            await held

    asyncio.run(main())
    with review_db.sessions() as s:
        assert audit.verify_chain(s).ok
    assert counts(review_db)[2] == 3 + 16 + 9 + 4  # the held job of the stopped writer was not recorded
