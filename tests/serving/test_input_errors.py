"""Inputs that used to end in a 500: each is now a 4xx naming the field (or, for a sig line, a finding)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from prescription_check.schemas import PrescriptionItem
from prescription_check.sig_parser import parse_sig
from tests.plugins.db import auth
from tests.serving.test_review_page import _sign_in
from tests.serving.test_reviews_api import FLAGGED

NUL = "\u0000"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'input.db'}"


@pytest.mark.parametrize(("change", "field"), [
    (lambda rx: rx.update(id=f"rx{NUL}1"), "id"),
    (lambda rx: rx.update(prescriber_id=f"dr{NUL}"), "prescriber_id"),
    (lambda rx: rx["items"][0].update(drug=f"warfarin{NUL}"), "items.0.drug"),
    (lambda rx: rx["items"][1].update(sig=f"aspirin 75 mg{NUL} daily"), "items.1.sig"),
    (lambda rx: rx["patient"].update(allergies=[f"peni{NUL}cillin"]), "patient.allergies.0"),
])
def test_nul_characters_are_a_422_naming_the_field(review_app, db_url, change, field):
    rx = {**FLAGGED, "patient": dict(FLAGGED["patient"]), "items": [dict(i) for i in FLAGGED["items"]]}
    change(rx)
    with TestClient(review_app(db_url)) as client:
        r = client.post("/v1/prescriptions/check", json=rx, headers=auth("prescriber"))
        assert r.status_code == 422, r.text
        assert field in [e["field"] for e in r.json()["errors"]]


def test_nul_characters_in_a_decision_are_a_422(review_app, db_url):
    with TestClient(review_app(db_url)) as client:
        rid = client.post("/v1/prescriptions/check", json=FLAGGED, headers=auth("prescriber")).json()["review_id"]
        r = client.post(f"/v1/reviews/{rid}/decision", headers=auth("pharmacist"),
                        json={"decision": "reject", "reason_code": "unsafe_interaction", "note": f"bleed{NUL}ing"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "note", r.text
        # the page's form too: the decision is refused, the page says why, nothing is stored
        assert _sign_in(client, "pharmacist").status_code == 303
        page = client.get(f"/review/{rid}").text
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        r = client.post(f"/review/{rid}/decision", data={"decision": "reject", "reason_code": "unsafe_interaction",
                                                         "note": f"x{NUL}y", "csrf": csrf})
        assert r.status_code == 422 and "note" in r.text
        assert client.get(f"/v1/reviews/{rid}", headers=auth("pharmacist")).json()["status"] == "pending"


@pytest.mark.parametrize("sig", [
    "warfarin 0 mg daily",                      # dose must be > 0
    "amoxicillin 5000000 mg tid",               # dose above the schema's limit
    "amoxicillin 500 mg tid x 99999 days",      # duration above the limit
    "paracetamol 99999999999999999999999 mg",    # a number too long for any limit
    "amoxicillin 250000000mg/5ml 10 ml tid",    # strength above the limit
])
def test_sig_numbers_out_of_range_are_an_unparsed_sig_not_an_error(sig):
    parsed = parse_sig(sig)
    assert not parsed.ok and any("out of range" in p for p in parsed.problems), parsed.problems
    if parsed.item is not None:  # whatever is returned fits the schema's limits
        PrescriptionItem.model_validate(parsed.item.model_dump())


def test_sig_out_of_range_over_http_is_a_finding(review_app, sqlite_url):
    with TestClient(review_app(sqlite_url)) as client:
        r = client.post("/v1/prescriptions/check", headers=auth("prescriber"),
                        json={"items": [{"sig": "warfarin 0 mg daily"}, {"sig": "aspirin 5000000 mg daily"}]})
        assert r.status_code == 200, r.text
        assert {f["rule_id"] for f in r.json()["findings"]} >= {"SIG-UNPARSED"}


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59",
                                   "0001-01-01T00:30:00+01:00"])
@pytest.mark.parametrize("param", ["since", "until"])
def test_extreme_utc_offsets_are_a_422(review_app, db_url, param, value):
    from urllib.parse import quote

    with TestClient(review_app(db_url)) as client:
        r = client.get(f"/v1/reviews/stats/overrides?{param}={quote(value)}", headers=auth("pharmacist"))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == param, r.text
        other = "created_from" if param == "since" else "created_to"
        r = client.get(f"/v1/reviews?{other}={quote(value)}", headers=auth("pharmacist"))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == other, r.text


@pytest.mark.parametrize("rid", ["0", "2147483648", "99999999999999999999999", "-5"])
def test_out_of_range_review_id_on_the_page_is_a_404(review_app, db_url, rid):
    with TestClient(review_app(db_url)) as client:
        assert _sign_in(client, "pharmacist").status_code == 303
        r = client.get(f"/review/{rid}")
        assert r.status_code == 404, r.text
        csrf = client.get("/review").text.split('name="csrf" value="')[1].split('"')[0]
        r = client.post(f"/review/{rid}/decision", data={"decision": "reject", "reason_code": "unsafe_interaction",
                                                         "csrf": csrf})
        assert r.status_code == 404, r.text
