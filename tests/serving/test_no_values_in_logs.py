"""Prescription values never reach logs or error answers, not even through a database error's message."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from serving.db import Review
from tests.plugins.db import auth

SECRET = "zebrasecretpatient"


def test_sql_errors_do_not_carry_their_parameters(review_db):
    with pytest.raises(Exception) as caught:
        with review_db.session() as s:
            s.execute(insert(Review), {"submitted_by": "x", "prescription_ref": SECRET, "prescription": {"a": SECRET},
                                       "patient": {"allergies": [SECRET]}, "findings": [], "verdict": "bogus",
                                       "max_severity": "major", "severity_rank": 1, "kb_version": "k",
                                       "status": "pending", "version": 1})
    # SQLAlchemy's part of the message (statement + parameters) hides the values; the driver's own message is
    # the server's (PostgreSQL quotes the failing row in a DETAIL line), which is why 500s are logged redacted
    ours = str(caught.value).replace(str(getattr(caught.value, "orig", "")), "")
    assert SECRET not in ours and "hidden" in ours


def test_a_database_error_during_a_check_logs_no_prescription_values(review_app, db_url, monkeypatch, caplog):
    import serving.review_queue as rq
    from serving.logs import JsonFormatter

    # the review INSERT fails in the database: a CHECK constraint (PostgreSQL quotes the whole row in its error)
    monkeypatch.setattr(rq, "SEVERITY_RANK", {**rq.SEVERITY_RANK, "bogus": 0})
    monkeypatch.setattr(rq, "max_severity", lambda findings: "bogus")
    rx = {"id": "rx-secret", "patient": {"age_years": 50, "allergies": [SECRET], "conditions": [SECRET + "itis"]},
          "items": [{"drug": "warfarin", "dose": 5, "unit": "mg", "frequency": "daily"},
                    {"drug": "aspirin", "dose": 75, "unit": "mg", "frequency": "daily"}]}
    with TestClient(review_app(db_url), raise_server_exceptions=False) as client, caplog.at_level(logging.DEBUG):
        r = client.post("/v1/prescriptions/check", json=rx, headers=auth("prescriber"))
    assert r.status_code == 500
    assert SECRET not in r.text
    logged = "\n".join(JsonFormatter().format(rec) for rec in caplog.records)
    assert "unhandled error" in logged  # the failure is logged (with its type and where it happened) ...
    assert SECRET not in logged  # ... but not the values
