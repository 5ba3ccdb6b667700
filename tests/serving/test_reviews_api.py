"""The check -> queue -> decision flow over HTTP, with the real prescription checker and real databases."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from serving import audit
from serving.db import Database
from tests.plugins.db import auth

# warfarin + aspirin: a documented major interaction -> verdict review
FLAGGED = {"id": "rx-flagged", "prescriber_id": "dr-1",
           "patient": {"age_years": 58, "sex": "female", "weight_kg": 70},
           "items": [{"drug": "warfarin", "dose": 5, "unit": "mg", "route": "oral", "frequency": "daily"},
                     {"drug": "aspirin", "dose": 75, "unit": "mg", "route": "oral", "frequency": "daily"}]}
# amoxicillin in a penicillin-allergic patient -> contraindicated -> verdict block
BLOCKED = {"id": "rx-blocked", "patient": {"age_years": 40, "allergies": ["penicillin"]},
           "items": [{"sig": "Amoxicillin 500 mg PO TID x 7 days"}]}
CLEAN = {"id": "rx-clean", "patient": {"age_years": 40, "sex": "male", "weight_kg": 80},
         "items": [{"sig": "Amoxicillin 500 mg PO TID x 7 days"}]}


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'api.db'}"


def check(client, rx, who="prescriber"):
    return client.post("/v1/prescriptions/check", json=rx, headers=auth(who))


def flagged_review(client, rx=FLAGGED) -> int:
    r = check(client, rx)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verdict"] in ("review", "block"), f"the real checker no longer flags this prescription: {body}"
    assert body["queued"] is True and isinstance(body["review_id"], int)
    return body["review_id"]


def test_check_queue_decision_flow(review_app, db_url):
    app = review_app(db_url)
    with TestClient(app) as client:
        r = check(client, FLAGGED)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["verdict"] == "review" and body["queued"] is True
        assert any(f["severity"] == "major" and f["category"] == "interaction" for f in body["findings"])
        rid = body["review_id"]
        blocked_id = flagged_review(client, BLOCKED)
        clean = check(client, CLEAN).json()
        assert (clean["verdict"], clean["queued"], clean["review_id"]) == ("pass", False, None)
        assert isinstance(clean["audit_id"], int)

        queue = client.get("/v1/reviews", headers=auth("pharmacist")).json()
        assert [i["id"] for i in queue["items"]] == [blocked_id, rid]  # contraindicated before major
        assert queue["total"] == 2 and queue["next_offset"] is None
        assert queue["items"][0]["max_severity"] == "contraindicated"

        detail = client.get(f"/v1/reviews/{rid}", headers=auth("pharmacist")).json()
        assert detail["status"] == "pending" and detail["requires_override_reason"] is True
        assert {k: detail["patient"][k] for k in FLAGGED["patient"]} == FLAGGED["patient"]
        assert [i["drug"] for i in detail["prescription"]["items"]] == ["warfarin", "aspirin"]
        assert detail["findings"] == body["findings"]
        assert detail["kb_version"] == body["kb_version"] and detail["kb_version"].startswith("kb-")
        assert [e["action"] for e in detail["audit"]] == ["prescription.check"]
        assert all(f["source"] for f in detail["findings"])

        r = client.post(f"/v1/reviews/{rid}/decision", headers=auth("pharmacist"),
                        json={"decision": "reject", "reason_code": "unsafe_interaction", "note": "bleeding risk"})
        assert r.status_code == 200, r.text
        decided = r.json()
        assert decided["status"] == "rejected" and decided["version"] == 2
        assert decided["decision"]["reason_code"] == "unsafe_interaction"
        assert decided["decision"]["decided_by"].startswith("pharmacist:key-")

        assert [i["id"] for i in client.get("/v1/reviews", headers=auth("pharmacist")).json()["items"]] == [blocked_id]
        rejected = client.get("/v1/reviews?status=rejected", headers=auth("admin")).json()
        assert [i["id"] for i in rejected["items"]] == [rid]
        detail = client.get(f"/v1/reviews/{rid}", headers=auth("admin")).json()
        assert [e["action"] for e in detail["audit"]] == ["prescription.check", "review.decision"]
        assert detail["audit"][1]["after"]["reason_code"] == "unsafe_interaction"

        stats = client.get("/v1/reviews/stats/overrides", headers=auth("pharmacist")).json()
        rule = {r["rule_id"]: r for r in stats["rules"]}[body["findings"][0]["rule_id"]]
        assert (rule["decided"], rule["overridden"], rule["override_rate"]) == (1, 0, 0.0)

        ready = client.get("/readyz").json()["components"]
        assert ready["database"]["ok"] and ready["kb"]["ok"] and body["kb_version"] in ready["kb"]["detail"]
    db = Database(db_url)
    with db.session() as s:
        entries = audit.history(s)
        assert [e.action for e in entries] == ["prescription.check"] * 3 + ["review.decision"]
        assert audit.verify_chain(s).ok
    db.dispose()


def test_two_pharmacists_deciding_at_once_one_gets_409(review_app, db_url):
    app = review_app(db_url)
    with TestClient(app) as first:
        second = TestClient(app)  # a separate client on the same running app
        for _ in range(3):
            rid = flagged_review(first)
            barrier = threading.Barrier(2)

            def decide(client, who, decision, reason, rid=rid, barrier=barrier):
                barrier.wait()
                return client.post(f"/v1/reviews/{rid}/decision", headers=auth(who),
                                   json={"decision": decision, "reason_code": reason})

            with ThreadPoolExecutor(2) as pool:
                a = pool.submit(decide, first, "pharmacist", "approve", "benefit_outweighs_risk")
                b = pool.submit(decide, second, "pharmacist2", "reject", "unsafe_interaction")
                responses = [a.result(timeout=60), b.result(timeout=60)]
            assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
            winner = next(r for r in responses if r.status_code == 200).json()
            loser = next(r for r in responses if r.status_code == 409).json()
            assert "decided" in loser["detail"] and loser["request_id"]
            final = first.get(f"/v1/reviews/{rid}", headers=auth("pharmacist")).json()
            assert final["status"] == winner["status"] and final["version"] == 2
            assert [e["action"] for e in final["audit"]] == ["prescription.check", "review.decision"]


def test_idempotency_key(review_app, sqlite_url):
    with TestClient(review_app(sqlite_url)) as client:
        rid = flagged_review(client)
        body = {"decision": "approve", "reason_code": "monitoring_in_place", "note": "INR weekly"}
        headers = {**auth("pharmacist"), "Idempotency-Key": "7f1c-approve-1"}
        first = client.post(f"/v1/reviews/{rid}/decision", headers=headers, json=body)
        again = client.post(f"/v1/reviews/{rid}/decision", headers=headers, json=body)
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        assert again.headers.get("Idempotent-Replayed") == "true" and "Idempotent-Replayed" not in first.headers
        other = client.post(f"/v1/reviews/{rid}/decision", headers=headers, json={**body, "note": "changed"})
        assert other.status_code == 422
        assert other.json()["errors"][0]["field"] == "Idempotency-Key"
        assert "different request" in other.json()["detail"]
        # without the key, a repeat is a conflict: the review is already decided
        assert client.post(f"/v1/reviews/{rid}/decision", headers=auth("pharmacist"), json=body).status_code == 409
        detail = client.get(f"/v1/reviews/{rid}", headers=auth("pharmacist")).json()
        assert [e["action"] for e in detail["audit"]].count("review.decision") == 1


def test_reasons_required_for_overrides(review_app, sqlite_url):
    with TestClient(review_app(sqlite_url)) as client:
        rid = flagged_review(client, BLOCKED)

        def post(body):
            return client.post(f"/v1/reviews/{rid}/decision", headers=auth("pharmacist"), json=body)

        r = post({"decision": "approve"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason_code"
        assert "overrides a contraindicated finding" in r.json()["detail"]
        r = post({"decision": "approve", "reason_code": "other"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "note"
        r = post({"decision": "reject"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason_code"
        r = post({"decision": "approve", "reason_code": "allergy_risk"})
        assert r.status_code == 422 and "does not fit" in r.json()["detail"]
        r = post({"decision": "dispense"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "decision"
        r = post({"decision": "approve", "reason_code": "patient_tolerated_previously", "extra": 1})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "extra"
        assert client.get(f"/v1/reviews/{rid}", headers=auth("pharmacist")).json()["status"] == "pending"
        r = post({"decision": "approve", "reason_code": "patient_tolerated_previously",
                  "note": "took amoxicillin in 2024 without reaction"})
        assert r.status_code == 200 and r.json()["status"] == "approved"
        stats = client.get("/v1/reviews/stats/overrides", headers=auth("admin")).json()
        assert {k: stats["total"][k] for k in ("decided", "overridden", "override_rate")} == \
            {"decided": 1, "overridden": 1, "override_rate": 1.0}
        codes = client.get("/v1/reviews/reason-codes", headers=auth("pharmacist")).json()
        assert {"clinically_appropriate", "benefit_outweighs_risk", "other"} <= {c["code"] for c in codes["reason_codes"]}


def test_roles(review_app, sqlite_url):
    with TestClient(review_app(sqlite_url)) as client:
        rid = flagged_review(client)
        decision = {"decision": "reject", "reason_code": "unsafe_interaction"}
        for who in ("chat", "prescriber", "ml"):
            assert client.get("/v1/reviews", headers=auth(who)).status_code == 403, who
            assert client.get(f"/v1/reviews/{rid}", headers=auth(who)).status_code == 403, who
            assert client.get("/v1/reviews/stats/overrides", headers=auth(who)).status_code == 403, who
        for who in ("chat", "prescriber", "admin", "ml"):
            r = client.post(f"/v1/reviews/{rid}/decision", headers=auth(who), json=decision)
            assert r.status_code == 403, who
        for who in ("chat", "ml"):
            assert check(client, CLEAN, who).status_code == 403, who
        for who in ("prescriber", "pharmacist", "admin"):
            assert check(client, CLEAN, who).status_code == 200, who
        assert client.get("/v1/reviews").status_code == 401
        assert client.post("/v1/prescriptions/check", json=CLEAN).status_code == 401
        assert client.get("/v1/reviews", headers=auth("admin")).status_code == 200
        assert client.get("/v1/reviews", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post(f"/v1/reviews/{rid}/decision", headers=auth("pharmacist"), json=decision).status_code == 200


def test_bad_input_is_a_4xx_naming_the_field(review_app, sqlite_url):
    with TestClient(review_app(sqlite_url)) as client:
        r = client.post("/v1/prescriptions/check", headers=auth("prescriber"), json={"patient": {}})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "items"
        r = client.post("/v1/prescriptions/check", headers=auth("prescriber"),
                        json={"items": [{"drug": "warfarin"}], "patient": {"age_years": -3}})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "patient.age_years"
        ph = auth("pharmacist")
        assert client.get("/v1/reviews/999", headers=ph).status_code == 404
        assert client.get("/v1/reviews/abc", headers=ph).status_code == 422
        assert client.post("/v1/reviews/999/decision", headers=ph,
                           json={"decision": "reject", "reason_code": "unsafe_interaction"}).status_code == 404
        for query, field in (("status=lost", "status"), ("severity=severe", "severity.0"), ("limit=0", "limit"),
                             ("created_from=yesterday", "created_from")):
            r = client.get(f"/v1/reviews?{query}", headers=ph)
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, (query, r.text)
        r = client.post("/v1/reviews/1/decision", headers={**ph, "Idempotency-Key": "k" * 201},
                        json={"decision": "reject", "reason_code": "unsafe_interaction"})
        assert r.status_code == 422 and "idempotency" in r.text.lower()


def test_filters_and_pagination(review_app, sqlite_url):
    with TestClient(review_app(sqlite_url)) as client:
        ids = [flagged_review(client) for _ in range(3)] + [flagged_review(client, BLOCKED)]
        ph = auth("pharmacist")
        page1 = client.get("/v1/reviews?limit=2", headers=ph).json()
        page2 = client.get(f"/v1/reviews?limit=2&offset={page1['next_offset']}", headers=ph).json()
        assert [i["id"] for i in page1["items"] + page2["items"]] == [ids[3], ids[0], ids[1], ids[2]]
        assert page1["total"] == 4 and page2["next_offset"] is None
        assert [i["id"] for i in client.get("/v1/reviews?severity=contraindicated", headers=ph).json()["items"]] == [ids[3]]
        assert client.get("/v1/reviews?severity=major&severity=contraindicated", headers=ph).json()["total"] == 4
        assert client.get("/v1/reviews?created_from=2000-01-01&created_to=2000-12-31", headers=ph).json()["total"] == 0
        assert client.get("/v1/reviews?created_from=2000-01-01", headers=ph).json()["total"] == 4


def test_queue_min_severity_setting(review_app, sqlite_url):
    with TestClient(review_app(sqlite_url, queue_min_severity="contraindicated")) as client:
        r = check(client, FLAGGED).json()
        assert r["verdict"] == "review" and r["queued"] is False and r["review_id"] is None
        assert check(client, BLOCKED).json()["queued"] is True


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_database_down_gives_503_never_a_pass(review_app):
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/test"
    with TestClient(review_app(url)) as client:
        for rx in (FLAGGED, BLOCKED, CLEAN):
            r = check(client, rx)
            assert r.status_code == 503, r.text
            body = r.json()
            assert "verdict" not in body and "findings" not in body
            assert "could not be recorded" in body["detail"] and "do not dispense" in body["detail"]
            assert r.headers["Retry-After"]
        for path in ("/v1/reviews", "/v1/reviews/1", "/v1/reviews/stats/overrides"):
            assert client.get(path, headers=auth("pharmacist")).status_code == 503
        r = client.post("/v1/reviews/1/decision", headers=auth("pharmacist"),
                        json={"decision": "reject", "reason_code": "unsafe_interaction"})
        assert r.status_code == 503 and "unavailable" in r.json()["detail"]
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["components"]["database"]["ok"] is False


def test_checker_missing_gives_503(review_app, sqlite_url):
    app = review_app(sqlite_url)
    with TestClient(app) as client:
        app.state.rxt.checker.current = None
        app.state.rxt.checker.error = "prescription checker failed to load: KB missing"
        r = check(client, FLAGGED)
        assert r.status_code == 503 and "KB missing" in r.json()["detail"]


def test_nothing_accepted_is_lost(review_app, db_url):
    """Every answered check is on disk (review + audit) and survives a restart of the app."""
    rxs = [FLAGGED, CLEAN, BLOCKED] * 4
    with TestClient(review_app(db_url)) as client:
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda rx: check(client, rx), rxs))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    queued = sorted(r.json()["review_id"] for r in responses if r.json()["queued"])
    assert len(queued) == 8
    with TestClient(review_app(db_url)) as client:  # a fresh app on the same database
        listed = client.get("/v1/reviews?status=all&limit=200", headers=auth("admin")).json()
        assert sorted(i["id"] for i in listed["items"]) == queued
    db = Database(db_url)
    with db.session() as s:
        checks = audit.history(s, action="prescription.check")
        assert sorted(e.id for e in checks) == sorted(r.json()["audit_id"] for r in responses)
        assert audit.verify_chain(s).ok
    db.dispose()


def test_app_loads_the_checker_at_start_up(rx_checker, rx_checker_settings, tmp_path):
    """No checker injected: the lifespan loads the checker itself (KB artefact already built)."""
    from serving.app import create_app
    from serving.settings import Settings
    from tests.plugins.db import API_KEYS

    settings = Settings(work_dir=tmp_path / "var", api_keys=API_KEYS, kb_path=rx_checker_settings.resolved_kb_path(),
                        ddi_model_uri=str(tmp_path / "no-ddi-model"), triage_model_uri=str(tmp_path / "no-triage"))
    app = create_app(settings)
    with TestClient(app) as client:
        checker = app.state.rxt.checker.current
        assert checker is not None and checker is not rx_checker
        assert checker.kb_version == rx_checker.kb_version
        body = check(client, FLAGGED).json()
        assert body["queued"] and body["model_status"].startswith("rules-only")
        components = client.get("/readyz").json()["components"]
        assert components["kb"] == {"ok": True, "detail": f"kb {rx_checker.kb_version}"}
        assert components["database"]["ok"] is True
        assert components["ddi_model"]["ok"] is True
        assert components["ddi_model"]["detail"].startswith("degraded: rules-only")


def test_misconfigured_queue_threshold_stops_start_up(review_app, sqlite_url):
    with pytest.raises(ValueError, match="RXT_QUEUE_MIN_SEVERITY"):
        with TestClient(review_app(sqlite_url, queue_min_severity="severe")):
            pass


def test_check_idempotency_key(review_app, db_url):
    with TestClient(review_app(db_url)) as client:
        headers = {**auth("prescriber"), "Idempotency-Key": "rx-flagged-attempt-1"}
        first = client.post("/v1/prescriptions/check", json=FLAGGED, headers=headers)
        again = client.post("/v1/prescriptions/check", json=FLAGGED, headers=headers)
        assert first.status_code == again.status_code == 200, again.text
        assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"
        assert "Idempotent-Replayed" not in first.headers
        other = client.post("/v1/prescriptions/check", json=CLEAN, headers=headers)
        assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"
        # another caller cannot read someone else's answer through the key
        assert client.post("/v1/prescriptions/check", json=FLAGGED,
                           headers={**auth("pharmacist"), "Idempotency-Key": "rx-flagged-attempt-1"}).status_code == 422
        # two racing retries with one key record one check
        barrier = threading.Barrier(2)

        def send():
            barrier.wait()
            return client.post("/v1/prescriptions/check", json=BLOCKED,
                               headers={**auth("prescriber"), "Idempotency-Key": "race-1"})

        with ThreadPoolExecutor(2) as pool:
            a, b = [f.result(timeout=60) for f in [pool.submit(send), pool.submit(send)]]
        assert a.status_code == b.status_code == 200 and a.json() == b.json()
        queue = client.get("/v1/reviews", headers=auth("pharmacist")).json()
        assert queue["total"] == 2  # FLAGGED once, BLOCKED once
    db = Database(db_url)
    with db.session() as s:
        assert [e.action for e in audit.history(s)] == ["prescription.check"] * 2
    db.dispose()


def test_readyz_without_a_key_hides_the_database_url_and_driver_errors(review_app):
    port = _closed_port()
    with TestClient(review_app(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test")) as client:
        public = client.get("/readyz")
        assert public.status_code == 503
        detail = public.json()["components"]["database"]
        assert detail["ok"] is False
        for secret in ("127.0.0.1", str(port), "postgres", "psycopg", "refused", "connection"):
            assert secret not in detail["detail"].lower(), detail
        assert secret not in public.text.lower()
        for who in ("admin", "ml"):  # an operator's key sees why
            inside = client.get("/readyz", headers=auth(who)).json()["components"]["database"]
            assert f"127.0.0.1:{port}" in inside["detail"]
