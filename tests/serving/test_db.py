"""The review-queue storage layer on SQLite and on the real PostgreSQL (``db_url`` is parametrized)."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, inspect, select, text, update

from serving import audit
from serving import review_queue as reviews
from serving.db import (
    Database,
    DatabaseUnavailable,
    IdempotencyKey,
    Review,
    ReviewFinding,
    upgrade,
)
from serving.db.session import session_scope
from serving.settings import Settings


def finding(rule_id: str, severity: str, category: str = "interaction") -> dict:
    return {"rule_id": rule_id, "category": category, "severity": severity, "drugs": ["a", "b"],
            "message": f"{rule_id} message", "evidence": {"k": "v"}, "source": "FDA label", "action": "review",
            "predicted": False, "probability": None}


def result(*findings: dict, verdict: str | None = None) -> dict:
    worst = reviews.max_severity(list(findings))
    if verdict is None:
        verdict = "block" if worst == "contraindicated" else ("review" if worst in ("major", "moderate") else "pass")
    return {"verdict": verdict, "findings": list(findings), "kb_version": "kb-test-1", "model_version": "3",
            "model_status": "ok", "items": [{"index": 0, "written": "warfarin", "ingredients": ["warfarin"]}]}


RX = {"id": "rx-1", "prescriber_id": "dr-7", "patient": {"age_years": 71, "allergies": ["penicillin"]},
      "items": [{"drug": "warfarin", "dose": 5, "unit": "mg"}, {"drug": "aspirin", "dose": 75, "unit": "mg"}]}


def store(db: Database, res: dict, rx: dict = RX, min_sev: str = "moderate") -> reviews.CheckRecord:
    with db.session() as s:
        return reviews.record_check(s, prescription=rx, result=res, actor="prescriber:key-p",
                                    queue_min_severity=min_sev)


def test_migrations_create_the_schema_and_are_idempotent(review_db):
    names = set(inspect(review_db.engine).get_table_names())
    assert {"reviews", "review_findings", "idempotency_keys", "audit_log", "audit_chain_head",
            "check_idempotency_keys", "revoked_sessions", "alembic_version", "triage_records", "triage_outcomes",
            "shadow_scores"} <= names
    upgrade(review_db.engine)  # running again is a no-op
    with review_db.session() as s:
        assert s.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"
        assert s.execute(text("SELECT count(*) FROM audit_chain_head")).scalar() == 1


def test_migrations_downgrade_and_upgrade_again(db_url):
    from alembic import command
    from alembic.config import Config

    from serving.db.session import ALEMBIC_INI

    db = Database(db_url)
    db.ensure_ready()
    cfg = Config(str(ALEMBIC_INI))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert "reviews" not in inspect(db.engine).get_table_names()
    upgrade(db.engine)
    assert "reviews" in inspect(db.engine).get_table_names()
    db.dispose()


def test_flagged_check_is_stored_with_findings_and_audit(review_db):
    res = result(finding("ddi:aspirin+warfarin", "major"), finding("age:beers:aspirin", "moderate", "age"))
    rec = store(review_db, res)
    assert rec.queued and rec.review_id == 1 and rec.audit_id == 1
    with review_db.session() as s:
        r = s.get(Review, rec.review_id)
        assert (r.status, r.verdict, r.max_severity, r.severity_rank, r.version) == ("pending", "review", "major", 1, 1)
        assert r.patient == RX["patient"] and r.prescription["items"] == RX["items"]
        assert "patient" not in r.prescription
        assert r.findings == res["findings"] and r.kb_version == "kb-test-1" and r.model_version == "3"
        assert (r.prescription_ref, r.prescriber_id, r.submitted_by) == ("rx-1", "dr-7", "prescriber:key-p")
        assert reviews.aware(r.created_at).tzinfo is not None
        rows = s.scalars(select(ReviewFinding).order_by(ReviewFinding.id)).all()
        assert [(f.rule_id, f.severity, f.category) for f in rows] == [
            ("ddi:aspirin+warfarin", "major", "interaction"), ("age:beers:aspirin", "moderate", "age")]
        [entry] = audit.history(s)
    assert (entry.action, entry.subject, entry.actor) == ("prescription.check", "review:1", "prescriber:key-p")
    assert entry.after["queued"] is True and entry.after["rule_ids"] == ["ddi:aspirin+warfarin", "age:beers:aspirin"]
    assert "patient" not in entry.after


def test_unflagged_checks_are_audited_but_not_queued(review_db):
    rec = store(review_db, result(finding("dose:x", "minor", "dose")))
    assert (rec.queued, rec.review_id) == (False, None)
    # review verdict but below the queue threshold
    rec2 = store(review_db, result(finding("ddi:x", "moderate")), min_sev="major")
    assert not rec2.queued
    rec3 = store(review_db, result(finding("ddi:x", "major")), min_sev="major")
    assert rec3.queued
    with review_db.session() as s:
        assert s.scalar(select(func.count(Review.id))) == 1
        entries = audit.history(s)
    assert [e.after["queued"] for e in entries] == [False, False, True]
    assert entries[0].subject == "prescription:rx-1" and "patient" not in entries[0].after
    with pytest.raises(ValueError, match="queue_min_severity"):
        reviews.should_queue("review", [finding("a", "major")], "severe")


def test_failed_transaction_stores_nothing(review_db):
    with pytest.raises(RuntimeError):
        with review_db.session() as s:
            reviews.record_check(s, prescription=RX, result=result(finding("ddi:x", "major")), actor="p",
                                 queue_min_severity="moderate")
            raise RuntimeError("the answer could not be sent")
    with review_db.session() as s:
        assert s.scalar(select(func.count(Review.id))) == 0
        assert audit.history(s) == []
        assert audit.verify_chain(s).ok


def test_queue_order_filters_and_pagination(review_db):
    sevs = ["moderate", "contraindicated", "major", "moderate", "major", "minor"]
    for i, sev in enumerate(sevs):
        verdict = "review" if sev != "contraindicated" else "block"
        store(review_db, result(finding(f"r{i}", sev), verdict=verdict if sev != "minor" else "review"),
              min_sev="minor")
    with review_db.session() as s:
        # make creation times strictly ordered and distinct
        base = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
        for i in range(1, 7):
            s.execute(update(Review).where(Review.id == i).values(created_at=base + timedelta(days=i)))
    with review_db.session() as s:
        page = reviews.list_reviews(s)
        assert [r.id for r in page.items] == [2, 3, 5, 1, 4, 6]  # most severe first, then oldest
        assert page.total == 6
        assert [r.id for r in reviews.list_reviews(s, limit=2, offset=2).items] == [5, 1]
        assert [r.id for r in reviews.list_reviews(s, severities=["moderate"]).items] == [1, 4]
        assert [r.id for r in reviews.list_reviews(s, min_severity="major").items] == [2, 3, 5]
        got = reviews.list_reviews(s, created_from=date(2026, 1, 13), created_to=date(2026, 1, 15))
        assert [r.id for r in got.items] == [3, 5, 4]  # 'to' as a date includes the whole day
        naive = reviews.list_reviews(s, created_from=datetime(2026, 1, 15, 12, 0))  # naive = UTC
        assert {r.id for r in naive.items} == {5, 6}
        with pytest.raises(reviews.InvalidDecision) as exc:
            reviews.list_reviews(s, status="lost")
        assert exc.value.field == "status"
    reviews.decide(review_db, 2, decision="reject", reason_code="unsafe_interaction", actor="ph")
    with review_db.session() as s:
        assert [r.id for r in reviews.list_reviews(s).items] == [3, 5, 1, 4, 6]
        assert [r.id for r in reviews.list_reviews(s, status="rejected").items] == [2]
        assert reviews.list_reviews(s, status="all").total == 6


def test_decision_rules(review_db):
    rid = store(review_db, result(finding("ddi:major", "major"))).review_id
    moderate_id = store(review_db, result(finding("ddi:moderate", "moderate"))).review_id

    def expect(field, **kw):
        with pytest.raises(reviews.InvalidDecision) as exc:
            reviews.decide(review_db, kw.pop("review_id", rid), actor="ph", **kw)
        assert exc.value.field == field, exc.value.detail
        assert exc.value.status_code == 422
        return exc.value.detail

    assert "overrides a major finding" in expect("reason_code", decision="approve")
    expect("reason_code", decision="reject")
    expect("reason_code", decision="request_change", note="please change")
    expect("reason_code", decision="approve", reason_code="no_such_reason")
    assert "does not fit" in expect("reason_code", decision="approve", reason_code="unsafe_interaction")
    expect("reason_code", decision="reject", reason_code="clinically_appropriate")
    expect("note", decision="approve", reason_code="other")
    expect("note", decision="approve", reason_code="other", note="   ")
    expect("decision", decision="dispense")
    with pytest.raises(reviews.NotFound):
        reviews.decide(review_db, 999, decision="reject", reason_code="other", note="x", actor="ph")
    # approving a moderate-only review needs no reason
    ok = reviews.decide(review_db, moderate_id, decision="approve", actor="ph")
    assert ok.body["status"] == "approved" and ok.body["decision"]["reason_code"] is None
    ok = reviews.decide(review_db, rid, decision="approve", reason_code="other", note="INR monitored weekly",
                        actor="ph")
    assert ok.body["status"] == "approved" and ok.body["version"] == 2
    assert ok.body["decision"]["note"] == "INR monitored weekly"
    with pytest.raises(reviews.Conflict) as exc:
        reviews.decide(review_db, rid, decision="reject", reason_code="unsafe_interaction", actor="ph2")
    assert exc.value.status_code == 409 and "already decided" in exc.value.detail
    with review_db.session() as s:
        r = s.get(Review, rid)
        assert (r.decision, r.reason_code, r.decided_by, r.version) == ("approve", "other", "ph", 2)
        assert reviews.aware(r.decided_at) > reviews.aware(r.created_at)
        decision = audit.history(s, subject=f"review:{rid}", action="review.decision")[0]
    assert decision.before == {"status": "pending", "version": 1}
    assert decision.after["overridden_rules"] == ["ddi:major"] and decision.after["reason_code"] == "other"


def test_expected_version_mismatch_is_a_conflict(review_db):
    rid = store(review_db, result(finding("ddi:x", "major"))).review_id
    with pytest.raises(reviews.Conflict, match="version 1"):
        reviews.decide(review_db, rid, decision="reject", reason_code="unsafe_interaction", actor="ph",
                       expected_version=7)
    assert reviews.decide(review_db, rid, decision="reject", reason_code="unsafe_interaction", actor="ph",
                          expected_version=1).body["version"] == 2


def test_concurrent_deciders_exactly_one_wins(review_db):
    ids = [store(review_db, result(finding("ddi:x", "major"))).review_id for _ in range(3)]
    for rid in ids:
        barrier = threading.Barrier(4)
        outcomes: list[str] = []

        def decide(n: int, rid=rid, barrier=barrier, outcomes=outcomes) -> None:
            barrier.wait()
            try:
                reviews.decide(review_db, rid, decision="reject" if n % 2 else "approve",
                               reason_code="unsafe_interaction" if n % 2 else "benefit_outweighs_risk",
                               actor=f"ph{n}")
                outcomes.append("won")
            except reviews.Conflict:
                outcomes.append("conflict")

        threads = [threading.Thread(target=decide, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(outcomes) == ["conflict", "conflict", "conflict", "won"], outcomes
    with review_db.session() as s:
        assert len(audit.history(s, action="review.decision")) == 3
        assert all(s.get(Review, rid).version == 2 for rid in ids)
        assert audit.verify_chain(s).ok


def test_idempotency_keys(review_db):
    rid = store(review_db, result(finding("ddi:x", "major"))).review_id
    other = store(review_db, result(finding("ddi:y", "major"))).review_id
    kw = dict(decision="reject", reason_code="unsafe_interaction", note="bleeding risk", actor="ph")
    first = reviews.decide(review_db, rid, idempotency_key="key-1", **kw)
    again = reviews.decide(review_db, rid, idempotency_key="key-1", **kw)
    assert not first.replayed and again.replayed
    assert again.body == first.body and again.status_code == 200
    for change in ({"note": "different"}, {"actor": "ph2"}, {"decision": "request_change"}):
        with pytest.raises(reviews.IdempotencyMismatch) as exc:
            reviews.decide(review_db, rid, idempotency_key="key-1", **{**kw, **change})
        assert exc.value.field == "Idempotency-Key" and exc.value.status_code == 422
    with pytest.raises(reviews.IdempotencyMismatch):
        reviews.decide(review_db, other, idempotency_key="key-1", **kw)
    with pytest.raises(reviews.InvalidDecision):
        reviews.decide(review_db, other, idempotency_key="bad\nkey", **kw)
    with review_db.session() as s:
        assert len(audit.history(s, action="review.decision")) == 1
        assert s.scalar(select(func.count()).select_from(IdempotencyKey)) == 1


def test_concurrent_requests_with_one_idempotency_key_record_one_decision(review_db):
    rid = store(review_db, result(finding("ddi:x", "major"))).review_id
    barrier = threading.Barrier(3)
    bodies, errors = [], []

    def go() -> None:
        barrier.wait()
        try:
            bodies.append(reviews.decide(review_db, rid, decision="reject", reason_code="unsafe_interaction",
                                         actor="ph", idempotency_key="same").body)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(bodies) == 3 and all(b == bodies[0] for b in bodies)
    with review_db.session() as s:
        assert len(audit.history(s, action="review.decision")) == 1


def test_override_statistics_per_rule(review_db):
    def flagged(*rules):
        return store(review_db, result(*[finding(r, "major") for r in rules])).review_id

    a1, a2, a3, a4 = flagged("ddi:A"), flagged("ddi:A", "dose:B"), flagged("ddi:A"), flagged("dose:B")
    flagged("ddi:A")  # stays pending
    reviews.decide(review_db, a1, decision="approve", reason_code="benefit_outweighs_risk", actor="ph")
    reviews.decide(review_db, a2, decision="approve", reason_code="monitoring_in_place", actor="ph")
    reviews.decide(review_db, a3, decision="reject", reason_code="unsafe_interaction", actor="ph")
    reviews.decide(review_db, a4, decision="request_change", reason_code="dose_out_of_range", actor="ph")
    with review_db.session() as s:
        stats = reviews.override_stats(s)
        future = reviews.override_stats(s, since=date.today() + timedelta(days=2))
    by_rule = {r["rule_id"]: r for r in stats["rules"]}
    assert by_rule["ddi:A"] == {"rule_id": "ddi:A", "category": "interaction", "severity": "major",
                                "decided": 3, "overridden": 2, "pending": 1, "override_rate": round(2 / 3, 4),
                                "ehr_feedback": 0, "ehr_overridden": 0, "ehr_accepted": 0, "ehr_override_rate": None}
    assert (by_rule["dose:B"]["decided"], by_rule["dose:B"]["overridden"], by_rule["dose:B"]["override_rate"]) == (2, 1, 0.5)
    assert stats["total"] == {"decided": 5, "overridden": 3, "override_rate": 0.6, "ehr_feedback": 0,
                              "ehr_overridden": 0, "ehr_accepted": 0, "ehr_override_rate": None}
    assert future["rules"] == []


def test_unreachable_database_is_reported_as_unavailable(tmp_path):
    db = Database("postgresql+psycopg://postgres@127.0.0.1:1/test")
    with pytest.raises(DatabaseUnavailable, match="unavailable"):
        db.ensure_ready()
    ok, detail = db.ping()
    assert not ok and "127.0.0.1:1" in detail
    with pytest.raises(ValueError, match="unsupported database URL"):
        Database("mysql://x@y/z")


def test_session_scope_uses_settings(tmp_path):
    settings = Settings(work_dir=tmp_path / "var", api_keys={})
    with session_scope(settings) as s:
        audit.record(s, actor="cli", action="model.promote", subject="model:x@champion")
    assert (tmp_path / "var" / "rxtriage.db").exists()
    with session_scope(database_url=settings.resolved_database_url()) as s:
        assert audit.verify_chain(s).checked == 1


def test_models_match_the_migrations(review_db):
    """Autogenerate finds nothing to do: the ORM models and the migration scripts describe the same schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from serving.db.models import Base

    with review_db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        conn.rollback()
    assert diff == []
