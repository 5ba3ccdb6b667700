"""Paediatric patient fields over HTTP (issue 17): contradictory ages are a 422 naming the field; a child
without a weight is checked and answered with a finding that the dose cannot be checked, never a silent pass."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.plugins.db import auth
from tests.serving.test_review_page import _sign_in


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ped.db'}"


def test_paediatric_patient_fields_over_http(review_app, sqlite_url):
    with TestClient(review_app(sqlite_url)) as client:
        h = auth("prescriber")
        items = [{"sig": "paracetamol 240 mg po q6h"}]
        for patient, field in (({"age_years": 4, "age_days": 10}, "patient.age_days"),
                               ({"age_years": 4, "age_months": 3}, "patient.age_months"),
                               ({"age_years": 4, "weight_kg": 0}, "patient.weight_kg")):
            r = client.post("/v1/prescriptions/check", headers=h, json={"patient": patient, "items": items})
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, r.json()
        r = client.post("/v1/prescriptions/check", headers=h, json={"patient": {"age_years": 4}, "items": items})
        assert r.status_code == 200 and r.json()["verdict"] == "review"
        assert [f["rule_id"] for f in r.json()["findings"]] == ["DOSE-WEIGHT-MISSING"]
        r = client.post("/v1/prescriptions/check", headers=h,
                        json={"patient": {"age_months": 30, "weight_kg": 13}, "items": items})
        # 18.5 mg/kg per dose is above 15 mg/kg; 73.8 mg/kg/day is within 75 mg/kg/day
        assert r.status_code == 200 and r.json()["verdict"] == "review"
        assert [f["rule_id"] for f in r.json()["findings"]] == ["DOSE-MAX-SINGLE-PER-KG"]


def test_review_page_shows_a_neonates_age_in_days(review_app, sqlite_url):
    """A neonate given by age in days is flagged and the pharmacist sees the age on the review page."""
    rx = {"patient": {"age_days": 10, "weight_kg": 3.5},
          "items": [{"drug": "acetaminophen", "dose": 50, "unit": "mg", "route": "iv", "frequency": "q6h"}]}
    with TestClient(review_app(sqlite_url)) as client:
        body = client.post("/v1/prescriptions/check", headers=auth("prescriber"), json=rx).json()
        assert body["verdict"] == "review" and body["queued"] is True
        assert _sign_in(client, "pharmacist").status_code == 303
        page = client.get(f"/review/{body['review_id']}")
        assert page.status_code == 200
        assert "<dt>Age (days)</dt><dd>10.0 d</dd>" in page.text and "3.5 kg" in page.text
        assert "neonate, birth to &lt; 29 days" in page.text  # the finding's band, as the pharmacist reads it
