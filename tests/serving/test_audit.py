"""The hash-chained audit log, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from serving import audit
from serving.db import Database
from serving.db.models import GENESIS_HASH


def _append(db, n: int, prefix: str = "review:") -> list[int]:
    ids = []
    for i in range(n):
        with db.session() as s:
            ids.append(audit.record(s, actor=f"pharmacist:key-{i}", action="review.decision",
                                    subject=f"{prefix}{i}", before={"status": "pending"},
                                    after={"status": "approved", "dose": 1.5, "note": "ñ✓"}))
    return ids


def _drop_append_only_triggers(db) -> None:
    """An attacker with DDL rights removes the triggers first; the hash chain must still catch them."""
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            conn.exec_driver_sql("DROP TRIGGER audit_log_append_only ON audit_log")
        else:
            conn.exec_driver_sql("DROP TRIGGER audit_log_no_update")
            conn.exec_driver_sql("DROP TRIGGER audit_log_no_delete")


def test_chain_links_and_verifies(review_db):
    ids = _append(review_db, 5)
    assert ids == [1, 2, 3, 4, 5]
    with review_db.session() as s:
        entries = audit.history(s)
        result = audit.verify_chain(s)
    assert result.ok and result.checked == 5 and result.first_bad_id is None, result
    assert entries[0].prev_hash == GENESIS_HASH
    for prev, cur in zip(entries, entries[1:]):
        assert cur.prev_hash == prev.hash
    # the hash is sha256 over the canonical JSON of exactly these fields
    e = entries[2]
    payload = {"id": e.id, "ts": e.ts, "actor": e.actor, "action": e.action, "subject": e.subject,
               "before": e.before, "after": e.after, "prev_hash": e.prev_hash}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(canonical.encode()).hexdigest() == e.hash
    assert e.after == {"status": "approved", "dose": 1.5, "note": "ñ✓"}
    assert e.created_at.tzinfo is not None and abs(e.created_at - datetime.now(UTC)) < timedelta(minutes=5)
    # verify also works from an engine
    assert audit.verify_chain(review_db.engine).ok


def test_rolled_back_append_leaves_no_trace(review_db):
    _append(review_db, 2)
    with pytest.raises(RuntimeError, match="caller failed"):
        with review_db.session() as s:
            audit.record(s, actor="a", action="x", subject="s")
            raise RuntimeError("caller failed after recording")
    ids = _append(review_db, 1)
    assert ids == [3]  # the rolled-back id was not consumed
    with review_db.session() as s:
        assert audit.verify_chain(s).ok


def test_append_only_triggers_refuse_update_and_delete(review_db):
    _append(review_db, 2)
    for sql in ("UPDATE audit_log SET actor = 'mallory' WHERE id = 1", "DELETE FROM audit_log WHERE id = 2"):
        with pytest.raises((IntegrityError, DBAPIError), match="append-only"):
            with review_db.session() as s:
                s.execute(text(sql))
    with review_db.session() as s:
        assert audit.verify_chain(s).ok


def test_tampered_content_is_named(review_db):
    _append(review_db, 6)
    _drop_append_only_triggers(review_db)
    with review_db.session() as s:
        s.execute(text("""UPDATE audit_log SET after_json = '{"status":"rejected"}' WHERE id = 4"""))
    with review_db.session() as s:
        result = audit.verify_chain(s)
    assert not result.ok
    assert result.first_bad_id == 4
    assert result.checked == 3
    assert "modified" in result.reason
    assert "entry 4" in str(result)


def test_rehashed_entry_is_named_by_its_successor(review_db):
    """Altering entry 2 and recomputing its hash still breaks the link stored in entry 3."""
    _append(review_db, 4)
    _drop_append_only_triggers(review_db)
    with review_db.session() as s:
        e = [x for x in audit.history(s) if x.id == 2][0]
        new_after = audit.canonical_json({"status": "rejected"})
        new_hash = audit.entry_hash(id=2, ts=e.ts, actor=e.actor, action=e.action, subject=e.subject,
                                    before_json=audit.canonical_json(e.before), after_json=new_after,
                                    prev_hash=e.prev_hash)
        s.execute(text("UPDATE audit_log SET after_json = :a, hash = :h WHERE id = 2"),
                  {"a": new_after, "h": new_hash})
    with review_db.session() as s:
        result = audit.verify_chain(s)
    assert (result.ok, result.first_bad_id) == (False, 2), result
    assert "re-hashed" in result.reason


def test_deleted_entries_are_detected(review_db):
    _append(review_db, 5)
    _drop_append_only_triggers(review_db)
    with review_db.session() as s:
        s.execute(text("DELETE FROM audit_log WHERE id = 3"))
    with review_db.session() as s:
        result = audit.verify_chain(s)
    assert (result.ok, result.first_bad_id) == (False, 4)
    assert "missing" in result.reason
    # removing the newest entries is caught by the chain head
    with review_db.session() as s:
        s.execute(text("DELETE FROM audit_log WHERE id >= 3"))
    with review_db.session() as s:
        result = audit.verify_chain(s)
    assert (result.ok, result.first_bad_id) == (False, 3), result
    assert "chain head" in result.reason


def test_concurrent_appends_never_fork(review_db):
    threads, per_thread = 6, 8
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with review_db.session() as s:
                    audit.record(s, actor=f"t{t}", action="model.promote", subject=f"model:m{t}@champion",
                                 after={"i": i})
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout=120)
    assert not errors, errors
    with review_db.session() as s:
        result = audit.verify_chain(s)
        ids = [e.id for e in audit.history(s)]
    assert result.ok, result
    assert result.checked == threads * per_thread
    assert ids == list(range(1, threads * per_thread + 1))


def test_history_filters(review_db):
    with review_db.session() as s:
        audit.record(s, actor="a", action="model.promote", subject="model:ddi_severity@champion", after={"version": "1"})
        audit.record(s, actor="a", action="model.promote", subject="model:ddiXseverity@champion", after={"version": "9"})
        audit.record(s, actor="b", action="review.decision", subject="review:1")
        audit.record(s, actor="b", action="review.decision", subject="review:12")
    with review_db.session() as s:
        # '_' in the prefix is literal, not a LIKE wildcard
        assert [e.after["version"] for e in audit.history(s, subject_prefix="model:ddi_severity@")] == ["1"]
        assert [e.subject for e in audit.history(s, subject="review:1")] == ["review:1"]
        assert len(audit.history(s, action="review.decision")) == 2
        assert audit.history(s, until=datetime.now(UTC) - timedelta(hours=1)) == []
        assert [e.id for e in audit.history(s, limit=2)] == [3, 4]


def test_record_rejects_blank_fields(review_db):
    with review_db.session() as s:
        with pytest.raises(ValueError, match="actor"):
            audit.record(s, actor=" ", action="x", subject="y")
        with pytest.raises(ValueError):
            audit.record(s, actor="a", action="x", subject="y", after={"bad": float("nan")})


def test_cli_verify(review_db, capsys):
    _append(review_db, 3)
    assert audit.main(["verify", "--database-url", review_db.url]) == 0
    assert capsys.readouterr().out.startswith("OK: 3 audit entries")
    _drop_append_only_triggers(review_db)
    with review_db.session() as s:
        s.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE id = 2"))
    assert audit.main(["verify", "--database-url", review_db.url]) == 1
    assert "TAMPERED: entry 2" in capsys.readouterr().out


def test_cli_as_a_process(tmp_path):
    """`python -m serving.audit verify` really exits non-zero and names the entry (SQLite only: one process)."""
    from serving.db import Database

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    db = Database(url)
    db.ensure_ready()
    _append(db, 2)
    ok = subprocess.run([sys.executable, "-m", "serving.audit", "verify", "--database-url", url],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "OK: 2 audit entries" in ok.stdout
    _drop_append_only_triggers(db)
    with db.session() as s:
        s.execute(text("UPDATE audit_log SET subject = 'review:999' WHERE id = 1"))
    db.dispose()
    bad = subprocess.run([sys.executable, "-m", "serving.audit", "verify", "--database-url", url],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "TAMPERED: entry 1" in bad.stdout
    down = subprocess.run([sys.executable, "-m", "serving.audit", "verify", "--database-url",
                           "postgresql+psycopg://postgres@127.0.0.1:1/test"], capture_output=True, text=True,
                          timeout=120)
    assert down.returncode == 2 and "unavailable" in down.stderr


# --- the audit trail covers decisions: review rows are checked against the chain ----------------------------


def _decided_reviews(db) -> tuple[int, int, int]:
    """Three flagged checks: one rejected, one approved with a reason, one left pending."""
    from serving import review_queue
    from tests.serving.test_db import finding, result, store

    ids = [store(db, result(finding("DDI-1", "major"))).review_id for _ in range(3)]
    review_queue.decide(db, ids[0], decision="reject", actor="pharmacist:key-a", reason_code="unsafe_interaction",
                        note="bleeding risk")
    review_queue.decide(db, ids[1], decision="approve", actor="pharmacist:key-b",
                        reason_code="monitoring_in_place")
    return ids[0], ids[1], ids[2]


def test_decisions_are_bound_to_their_audit_entries(review_db, capsys):
    rejected, approved, pending = _decided_reviews(review_db)
    with review_db.session() as s:
        result = audit.verify_reviews(s)
        row = s.get(__import__("serving.db", fromlist=["Review"]).Review, rejected)
        entry = audit.history(s, subject=f"review:{rejected}", action="review.decision")[0]
    assert result.ok and result.checked == 3, result
    assert row.decision_audit_hash == entry.hash and entry.after["decided_at"] == audit.format_ts(row.decided_at)
    assert audit.main(["verify", "--database-url", review_db.url]) == 0
    assert "OK: 3 reviews agree with their audit entries" in capsys.readouterr().out


@pytest.mark.parametrize("tamper,expected", [
    ("UPDATE reviews SET decision = 'approve', status = 'approved' WHERE id = {rejected}",
     "review {rejected}: status, decision disagree with audit entry"),
    ("UPDATE reviews SET reason_code = 'other', note = 'fine' WHERE id = {rejected}",
     "review {rejected}: reason_code, note disagree"),
    ("UPDATE reviews SET decided_by = 'pharmacist:key-mallory' WHERE id = {approved}",
     "review {approved}: decided_by disagree"),
    ("UPDATE reviews SET status = 'pending', decision = NULL, reason_code = NULL, note = NULL, decided_by = NULL, "
     "decided_at = NULL, version = 1 WHERE id = {approved}",
     "review {approved} is pending but audit entry"),
    ("UPDATE reviews SET status = 'approved', decision = 'approve', decided_by = 'pharmacist:key-x', version = 2 "
     "WHERE id = {pending}", "review {pending} is approved but no audit entry records its decision"),
])
def test_verify_names_a_review_whose_state_disagrees_with_the_chain(review_db, capsys, tamper, expected):
    ids = dict(zip(("rejected", "approved", "pending"), _decided_reviews(review_db)))
    with review_db.session() as s:
        s.execute(text(tamper.format(**ids)))
    assert audit.main(["verify", "--database-url", review_db.url]) == 1
    out = capsys.readouterr().out
    assert "OK: " in out.splitlines()[0]  # the chain itself is intact: only the review rows were changed
    assert expected.format(**ids) in out, out


@pytest.fixture
def pg_review_db(pg_schema_url):
    """A migrated review database on the real PostgreSQL only (SQLite has no TRUNCATE; DELETE is refused there by
    0001's triggers, tested above)."""
    db = Database(pg_schema_url)
    db.ensure_ready()
    yield db
    db.dispose()


def test_truncate_of_the_audit_log_is_refused_on_postgresql(pg_review_db):
    review_db = pg_review_db
    _append(review_db, 2)
    for table in ("audit_log", "audit_chain_head"):
        with pytest.raises(DBAPIError, match="TRUNCATE refused"):
            with review_db.session() as s:
                s.execute(text(f"TRUNCATE {table} CASCADE"))
    with review_db.session() as s:
        assert audit.verify_chain(s).checked == 2


@pytest.mark.parametrize("before, after", [
    (None, None),
    ({"status": "pending"}, {"status": "approved", "dose": 1.5, "note": "ñ✓ \"quoted\" \\ back\nline"}),
    (None, {"verdict": "review", "max_severity": "major", "rule_ids": ["DDI-1", None], "tiers": [1, 2.0, -0.0],
            "big": 10**30, "tiny": 1e-300, "huge": 1.5e300, "nested": {"z": [], "a": {"b": True, "c": None}},
            "unicode": "\u2028\u00e9\U0001F600", "queued": False}),
    ({"a": []}, None),
])
def test_canonical_entry_hash_is_entry_hash_without_the_round_trip(before, after):
    """append/append_many hash the canonical texts they store in one pass (issue #16); the digest is the
    documented one (entry_hash: the texts parsed back into the payload), which verify_chain keeps using."""
    fields = {"id": 12345, "ts": "2026-12-07T18:00:00.000001Z", "actor": "prescriber:k-ñ\"1",
              "action": "prescription.check", "subject": "prescription:rx-\u00e9/1",
              "before_json": None if before is None else audit.canonical_json(before),
              "after_json": None if after is None else audit.canonical_json(after), "prev_hash": "ab" * 32}
    assert audit.canonical_entry_hash(**fields) == audit.entry_hash(**fields)
    payload = {"id": 12345, "ts": fields["ts"], "actor": fields["actor"], "action": fields["action"],
               "subject": fields["subject"], "before": before, "after": after, "prev_hash": fields["prev_hash"]}
    assert audit.canonical_entry_hash(**fields) == hashlib.sha256(
        json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    with pytest.raises(TypeError):
        audit.canonical_entry_hash(**{**fields, "id": True})
