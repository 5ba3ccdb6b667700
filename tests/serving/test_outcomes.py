"""Outcome feedback over HTTP against the real databases (SQLite and PostgreSQL): what is kept per answer, the
outcome endpoint's answers and refusals, delete, purge, and the writer under pressure.

Answers are recorded through the real writer (``FeedbackRecorder``) from real ``TriageOutcome`` objects; the
triage model itself is exercised by tests/training/test_feedback_loop.py (slow tier)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from serving.db.models import TriageOutcome, TriageRecord
from serving.feedback import FeedbackRecorder, make_record, purge, sketch, write
from serving.metrics import Metrics
from serving.settings import Settings
from serving.triage_service import TriageOutcome as Answer
from tests.plugins.db import auth

TEXT = "I have had a dry cough and a fever for three days"


def answer(center="respiratory", p=0.8, version="7", embedding=None) -> Answer:
    return Answer(centers=[(center, p), ("cardiology", 1 - p)], abstained=p < 0.5, abstain_reason=None, flags=[],
                  urgency="routine", urgency_reasons=[], model_version=version, taxonomy_version="1",
                  embedding=embedding)


def store(app, request_id, *, text=TEXT, consent=None, created_at=None, outcome=None, settings=None):
    state = app.state.rxt
    rec = make_record(settings or state.settings, request_id, text, "en", consent, outcome or answer(),
                      {"centers": [{"id": "respiratory"}]}, now=created_at)
    with state.db.session() as s:
        write(s, [rec])
    return rec


def post(client, body, who="chat"):
    return client.post("/v1/triage/outcomes", json=body, headers=auth(who))


@pytest.fixture
def app(review_app, db_url):
    return review_app(db_url, feedback_keep_text=True)


def test_outcome_is_stored_idempotent_and_conflicts_name_the_id(app):
    with TestClient(app) as client:
        store(app, "req-1", consent=True)
        body = {"request_id": "req-1", "actual_center": "respiratory", "clinician_urgency": "routine"}
        first = post(client, body)
        assert first.status_code == 200, first.text
        got = first.json()
        assert got["created"] is True and got["top1_correct"] is True and got["model_version"] == "7"
        assert got["text_kept"] is True and got["predicted_urgency"] == "routine"
        again = post(client, body, who="clinician")
        assert again.status_code == 200 and again.json() == {**got, "created": False}
        other = post(client, {**body, "actual_center": "cardiology"})
        assert other.status_code == 409 and "req-1" in other.json()["detail"], other.text
        metrics = client.get("/metrics").text
        assert 'rxt_triage_outcomes_total{match="top1"} 1.0' in metrics
        with app.state.rxt.db.session() as s:
            row = s.get(TriageOutcome, "req-1")
            assert (row.actual_center, row.clinician_urgency) == ("respiratory", "routine")
            assert row.recorded_by.startswith("chat:key-")


def test_an_outcome_sent_before_another_worker_wrote_the_answer_waits_for_it(app):
    """One worker per core (and replicas on one database): the outcome can reach a worker whose own writer never
    saw the answer, while the answering worker has not written it yet; it is accepted once the answer lands."""
    import threading

    with TestClient(app) as client:
        late = threading.Timer(0.5, lambda: store(app, "req-late"))  # the other worker's writer, half a second on
        late.start()
        try:
            r = post(client, {"request_id": "req-late", "actual_center": "respiratory"})
        finally:
            late.join()
        assert r.status_code == 200 and r.json()["created"] is True, r.text


def test_bad_outcomes_are_4xx_naming_the_problem(app):
    with TestClient(app) as client:
        store(app, "req-old", created_at=datetime.now(UTC) - timedelta(days=31))
        store(app, "req-2")
        r = post(client, {"request_id": "nope", "actual_center": "respiratory"})
        assert r.status_code == 404 and "'nope'" in r.json()["detail"]
        r = post(client, {"request_id": "req-old", "actual_center": "respiratory"})
        assert r.status_code == 410 and "req-old" in r.json()["detail"] and "30" in r.json()["detail"]
        r = post(client, {"request_id": "req-2", "actual_center": "podiatry"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "actual_center", r.text
        assert "podiatry" in r.json()["detail"]
        r = post(client, {"request_id": "req-2", "actual_center": "respiratory", "clinician_urgency": "soon"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "clinician_urgency"
        r = post(client, {"request_id": "req-2", "actual_center": "respiratory", "text": TEXT})
        assert r.status_code == 422 and "feedback_consent" in r.text
        r = post(client, {"request_id": "req-2", "actual_center": "respiratory"}, who="pharmacist")
        assert r.status_code == 403
        with app.state.rxt.db.session() as s:
            assert s.scalars(select(TriageOutcome)).all() == []  # nothing stored by any refusal


def test_text_is_kept_only_with_setting_and_consent(review_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'keep.db'}"
    app = review_app(url, feedback_keep_text=True)
    off = Settings(work_dir=tmp_path / "var", feedback_keep_text=False)
    with TestClient(app):
        store(app, "consent", consent=True)
        store(app, "no-consent", consent=False)
        store(app, "unsaid")
        store(app, "setting-off", consent=True, settings=off)
        with app.state.rxt.db.session() as s:
            rows = {r.request_id: r for r in s.scalars(select(TriageRecord))}
    assert rows["consent"].text == TEXT
    assert [rows[k].text for k in ("no-consent", "unsaid", "setting-off")] == [None, None, None]
    assert {r.text_sha256 for r in rows.values()} == {__import__("hashlib").sha256(TEXT.encode()).hexdigest()}


def test_delete_removes_outcome_and_text(app):
    with TestClient(app) as client:
        store(app, "req-3", consent=True, outcome=answer(embedding=np.ones(384, np.float32)))
        assert post(client, {"request_id": "req-3", "actual_center": "cardiology"}).status_code == 200
        r = client.delete("/v1/triage/outcomes/req-3", headers=auth("clinician"))
        assert r.status_code == 200 and r.json() == {"request_id": "req-3", "outcome_deleted": True,
                                                     "text_deleted": True}
        with app.state.rxt.db.session() as s:
            rec = s.get(TriageRecord, "req-3")
            assert rec.text is None and rec.sketch is None and rec.purged_at is not None
            assert s.get(TriageOutcome, "req-3") is None
        assert client.delete("/v1/triage/outcomes/none", headers=auth("chat")).status_code == 404
        # after the delete a new outcome may be recorded
        assert post(client, {"request_id": "req-3", "actual_center": "respiratory"}).json()["created"] is True


def test_purge_follows_the_retention(app):
    now = datetime.now(UTC)
    with TestClient(app) as client:
        old = now - timedelta(days=91)
        store(app, "old-matched", consent=True, created_at=now - timedelta(days=20))
        assert post(client, {"request_id": "old-matched", "actual_center": "respiratory"}).status_code == 200
        store(app, "old-unmatched", consent=True, created_at=old)
        store(app, "new", consent=True)
        state = app.state.rxt
        with state.db.session() as s:
            s.get(TriageRecord, "old-matched").created_at = old  # answered 91 days ago, outcome recorded in time
        with state.db.session() as s:
            result = purge(s, state.settings, now=now)
        assert result["records_deleted"] == 1 and result["texts_deleted"] == 1
        with state.db.session() as s:
            rows = {r.request_id: r for r in s.scalars(select(TriageRecord))}
            assert set(rows) == {"old-matched", "new"}
            assert rows["old-matched"].text is None and rows["new"].text == TEXT
            assert s.get(TriageOutcome, "old-matched") is not None


def test_writer_records_in_the_background_and_drops_under_pressure(tmp_path):
    from serving.db import Database

    settings = Settings(work_dir=tmp_path / "var", feedback_queue=2, monitor_window=10)
    db = Database(settings.resolved_database_url())
    metrics = Metrics()
    recorder = FeedbackRecorder(db, settings, metrics)
    emb = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    recs = [make_record(settings, f"r{i}", TEXT, None, None, answer(embedding=emb), {}) for i in range(3)]
    assert recorder.offer(recs[0]) and recorder.offer(recs[1])
    assert recorder.offer(recs[2]) is False  # not started, queue of 2 full: dropped, counted
    assert 'rxt_feedback_dropped_total{reason="record_queue_full"} 1.0' in metrics.render()[0].decode()
    recorder.start()
    assert recorder.wait_idle(10)
    recorder.stop()
    with db.session() as s:
        stored = s.scalars(select(TriageRecord).order_by(TriageRecord.request_id)).all()
        assert [r.request_id for r in stored] == ["r0", "r1"]
        assert np.allclose(stored[0].sketch, sketch(emb)[0], atol=1e-4)
    text = metrics.render()[0].decode()
    assert "rxt_feedback_recorded_total 2.0" in text and "rxt_triage_live_window 2.0" in text
    assert "rxt_triage_live_confidence_mean 0.8" in text
    db.dispose()


def test_live_gauges_follow_the_window_through_a_burst(tmp_path):
    """The live gauges keep running sums over the window (no recomputation per batch): after a burst of several
    write batches they describe exactly the last ``monitor_window`` answers."""
    from serving.db import Database
    from serving.feedback import WRITE_BATCH

    settings = Settings(work_dir=tmp_path / "var", feedback_queue=4 * WRITE_BATCH, monitor_window=50)
    db = Database(settings.resolved_database_url())
    metrics = Metrics()
    recorder = FeedbackRecorder(db, settings, metrics)
    n = 2 * WRITE_BATCH + 7  # three batches: two see a non-empty queue, the last empties it
    for i in range(n):
        confidence = 0.9 if i >= n - 50 else 0.1  # the window (last 50) is all 0.9
        assert recorder.offer(make_record(settings, f"b{i}", TEXT, None, None, answer(p=confidence), {}))
    recorder.start()
    assert recorder.wait_idle(30)
    recorder.stop()
    text = metrics.render()[0].decode()
    assert f"rxt_feedback_recorded_total {float(n)}" in text
    assert "rxt_triage_live_window 50.0" in text and "rxt_triage_live_confidence_mean 0.9" in text
    db.dispose()


def test_live_running_sums_equal_a_recomputation():
    """_Live's running sums (evictions subtracted, exact again every window) against plain means of its rows."""
    from serving.feedback import NON_LATIN, _Live, embedding_shift

    rng = np.random.default_rng(3)
    settings = Settings()
    reference = {"sketch_mean": [0.0] * 8, "sketch_std": [1.0] * 8}
    live = _Live(window=37)
    live.reset("7", reference)
    for i in range(500):
        rec = make_record(settings, f"s{i}", "x" * int(rng.integers(1, 300)), None, None,
                          answer(p=float(rng.uniform(0.3, 1.0))), {})
        rec = replace(rec, sketch=None if i % 5 == 0 else rng.standard_normal(8).tolist(),
                      latin_share=float(rng.uniform(0, 1)))
        live.add(rec)
        if i % 23 == 0 or i == 499:
            rows = list(live.rows)
            assert len(rows) == min(i + 1, 37)
            means, sketch_mean = live.means()
            expect = [np.mean([r.confidence for r in rows]), np.mean([r.abstained for r in rows]),
                      np.mean([r.latin_share < NON_LATIN for r in rows]), np.mean([r.text_chars for r in rows])]
            assert np.allclose(means, expect, atol=1e-9)
            sketches = np.asarray([r.sketch for r in rows if r.sketch is not None])
            if not len(sketches):
                assert sketch_mean is None
                continue
            assert np.isclose(embedding_shift(sketch_mean[None, :], reference), embedding_shift(sketches, reference))


def test_request_ids_stay_unique_in_forked_workers():
    """Outcomes are matched by request id: a forked worker must not repeat its parent's ids."""
    import os

    from serving.logs import new_request_id

    read, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one id, then out without running any cleanup of the parent's
        os.write(write_end, new_request_id(None).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    os.close(read)
    parent = new_request_id(None)
    assert len(child) == len(parent) == 32 and child[:20] != parent[:20]
