"""Alert tiers over HTTP: counselling notes on the answer, the lead's tuning (stored, audited, applied without a
restart, followed by a second process), and the dashboard's JSON and page."""

from __future__ import annotations

import re
import time

from fastapi.testclient import TestClient

from serving import audit
from serving.db import Database
from tests.plugins.db import auth
from tests.serving.test_review_page import _csrf, _sign_in
from tests.serving.test_reviews_api import BLOCKED, FLAGGED

# levothyroxine with calcium: DDInter Moderate; the levothyroxine label's management is "4 hours apart"
COUNSEL = {"id": "rx-levo-calcium", "patient": {"age_years": 70, "sex": "female"},
           "items": [{"drug": "levothyroxine", "dose": 75, "unit": "mcg", "frequency": "qd"},
                     {"drug": "calcium carbonate", "dose": 1500, "unit": "mg", "frequency": "qd"}]}


def test_counselling_note_instead_of_a_review_and_audited_tuning(review_app, db_url):
    with TestClient(review_app(db_url, tier_settings_poll_s=0)) as client:
        r = client.post("/v1/prescriptions/check", json=COUNSEL, headers=auth("prescriber"))
        body = r.json()
        assert r.status_code == 200 and body["verdict"] == "pass" and body["queued"] is False
        assert body["counselling_notes"][0]["management_class"] == "separate_doses"
        assert "4 hours" in body["counselling_notes"][0]["note"] and body["tier_policy"] == "default v0"
        assert {f["tier"] for f in body["findings"]} >= {"counsel"}

        got = client.get("/v1/admin/alert-tiers", headers=auth("pharmacist")).json()
        assert got["version"] == 0 and got["settings"]["name"] == "default" and "strict" in got["presets"]
        # only the admin role tunes; bad input is a 422 naming the field, never a 500
        assert client.put("/v1/admin/alert-tiers", json={"preset": "strict"},
                          headers=auth("pharmacist")).status_code == 403
        r = client.put("/v1/admin/alert-tiers", json={"settings": {"cells": {"interaction": {"moderate": ["block"]}}}},
                       headers=auth("admin"))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "settings"
        assert "cells.interaction.moderate" in r.json()["detail"]
        r = client.put("/v1/admin/alert-tiers", json={"preset": "lenient"}, headers=auth("admin"))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "preset"
        r = client.put("/v1/admin/alert-tiers", json={"preset": "strict", "expected_version": 0,
                                                      "note": "audit week"}, headers=auth("admin"))
        assert r.status_code == 200 and r.json()["version"] == 1 and r.json()["settings"]["name"] == "strict"
        # effective at once, no restart: the same prescription now queues
        r = client.post("/v1/prescriptions/check", json={**COUNSEL, "id": "rx-2"}, headers=auth("prescriber")).json()
        assert r["verdict"] == "review" and r["queued"] and r["tier_policy"] == "strict v1"
        # a stale edit is a 409
        r = client.put("/v1/admin/alert-tiers", json={"preset": "default", "expected_version": 0},
                       headers=auth("admin"))
        assert r.status_code == 409
        # a custom grid: interaction moderates that are counselled still queue; everything else as default
        r = client.put("/v1/admin/alert-tiers", headers=auth("admin"), json={
            "settings": {"name": "interactions-strict", "cells": {"interaction": {"moderate": ["counsel", "review"]}}},
            "expected_version": 1})
        assert r.status_code == 200 and r.json()["version"] == 2
    db = Database(db_url)
    with db.session() as s:
        entries = audit.history(s, action="policy.alert_tiers")
        assert [e.after["version"] for e in entries] == [1, 2]
        assert entries[0].after["settings"]["name"] == "strict" and entries[0].after["note"] == "audit week"
        assert entries[0].before["settings"]["name"] == "default" and entries[0].actor.startswith("admin:")
        assert audit.verify_chain(s).ok
        checks = audit.history(s, action="prescription.check")
        assert "counsel" in checks[0].after["tiers"] and checks[0].after["counselling_notes"] == 1
    db.dispose()


def test_a_second_process_follows_the_lead_without_restart(review_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'two.db'}"
    with TestClient(review_app(url, tier_settings_poll_s=0)) as a, \
            TestClient(review_app(url, tier_settings_poll_s=0.2)) as b:
        assert b.post("/v1/prescriptions/check", json=COUNSEL, headers=auth("prescriber")).json()["verdict"] == "pass"
        assert a.put("/v1/admin/alert-tiers", json={"preset": "strict"}, headers=auth("admin")).status_code == 200
        deadline = time.monotonic() + 20
        while True:
            r = b.post("/v1/prescriptions/check", json=COUNSEL, headers=auth("prescriber")).json()
            if r["verdict"] == "review":
                break
            assert time.monotonic() < deadline, "process b never applied the stored settings"
            time.sleep(0.2)
        assert r["tier_policy"] == "strict v1"


def test_dashboard_json_counts_tiers_overrides_decision_time_and_queue(review_app, db_url):
    with TestClient(review_app(db_url, tier_settings_poll_s=0)) as client:
        client.post("/v1/prescriptions/check", json=COUNSEL, headers=auth("prescriber"))
        ids = [client.post("/v1/prescriptions/check", json={**FLAGGED, "id": f"rx-{i}"},
                           headers=auth("prescriber")).json()["review_id"] for i in range(3)]
        r = client.post(f"/v1/reviews/{ids[0]}/decision", headers=auth("pharmacist"),
                        json={"decision": "approve", "reason_code": "monitoring_in_place"})
        assert r.status_code == 200
        client.post(f"/v1/reviews/{ids[1]}/decision", headers=auth("pharmacist"),
                    json={"decision": "reject", "reason_code": "unsafe_interaction"})
        assert client.get("/v1/reviews/stats/dashboard", headers=auth("prescriber")).status_code == 403
        assert client.get("/v1/reviews/stats/dashboard?days=0", headers=auth("admin")).status_code == 422
        d = client.get("/v1/reviews/stats/dashboard?days=7", headers=auth("admin")).json()
    assert d["alerts"]["checks"] == 4 and d["alerts"]["queued"] == 3 and d["alerts"]["with_counselling_notes"] == 1
    assert d["alerts"]["totals"]["counsel"] >= 1 and d["alerts"]["totals"]["review"] >= 3
    assert len(d["alerts"]["days"]) == 7 and sum(x["review"] for x in d["alerts"]["days"]) == d["alerts"]["totals"]["review"]
    rule = next(o for o in d["overrides"] if o["decided"] == 2)
    assert rule["overridden"] == 1 and rule["override_rate"] == 0.5
    assert rule["reasons"][0]["reason_code"] == "monitoring_in_place"
    assert d["time_to_decision"]["decided"] == 2 and sum(b["count"] for b in d["time_to_decision"]["histogram"]) == 2
    assert d["queue_depth"]["now"] == 1 and d["queue_depth"]["days"][-1]["pending"] == 1


def test_dashboard_page_charts_and_admin_only_tuning_form(review_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    with TestClient(review_app(url, tier_settings_poll_s=0)) as client:
        client.post("/v1/prescriptions/check", json=FLAGGED, headers=auth("prescriber"))
        assert client.get("/review/dashboard", follow_redirects=False).status_code == 303  # not signed in
        _sign_in(client, "pharmacist")
        page = client.get("/review/dashboard").text
        assert page.count("<svg") == 5 and "Only the admin role" in page and 'action="/review/dashboard/tiers"' not in page
        r = client.post("/review/dashboard/tiers", data={"csrf": _csrf(page), "preset": "strict"})
        assert r.status_code == 403
        client.post("/review/logout", data={"csrf": _csrf(page)})
        _sign_in(client, "admin")
        page = client.get("/review/dashboard").text
        assert 'action="/review/dashboard/tiers"' in page
        assert client.post("/review/dashboard/tiers", data={"csrf": "forged", "preset": "strict"}).status_code == 403
        form = {"csrf": _csrf(page), "preset": "custom", "expected_version": "0", "note": "counselled DDIs queue",
                "q:interaction:moderate:counsel": "on", "q:interaction:moderate:review": "on"}
        r = client.post("/review/dashboard/tiers", data=form, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/review/dashboard?saved=1"
        got = client.get("/v1/admin/alert-tiers", headers=auth("admin")).json()
        assert got["settings"]["cells"]["interaction"]["moderate"] == ["counsel", "review"]
        assert got["settings"]["cells"]["dose"]["major"] == []  # unticked cells queue nothing
        # the same form again with the old version: "someone else changed it" on the page, nothing stored
        r = client.post("/review/dashboard/tiers", data=form)
        assert r.status_code == 409 and re.search(r"changed \(version 1", r.text)
        assert client.get("/review/dashboard?saved=1").status_code == 200
        # the custom grid left interaction / major unticked: warfarin + aspirin now passes with a note ...
        r = client.post("/v1/prescriptions/check", json={**FLAGGED, "id": "rx-tier"}, headers=auth("prescriber")).json()
        assert r["verdict"] == "pass" and r["counselling_notes"][0]["management_class"] == "not_queued_by_settings"
        # ... while a contraindicated finding always blocks, and the review page shows each finding's tier
        rid = client.post("/v1/prescriptions/check", json=BLOCKED, headers=auth("prescriber")).json()["review_id"]
        assert 'class="tier tier-block"' in client.get(f"/review/{rid}").text


# --- the real browser ------------------------------------------------------------------------------------

import httpx  # noqa: E402
import pytest  # noqa: E402

from tests.serving.test_review_page import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, served_app  # noqa: E402,F401
from tests.plugins.db import ROLE_KEYS  # noqa: E402


@pytest.mark.browser
def test_dashboard_in_chromium(served_app):  # noqa: F811 - the fixture of test_review_page, reused
    from pathlib import Path

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    base, db_url = served_app
    everyday = [COUNSEL,
                {"id": "rx-dapt", "patient": {"age_years": 61},
                 "items": [{"drug": "aspirin", "dose": 75, "unit": "mg", "frequency": "qd"},
                           {"drug": "clopidogrel", "dose": 75, "unit": "mg", "frequency": "qd"}]},
                {"id": "rx-nsaid-ppi", "patient": {"age_years": 55},
                 "items": [{"drug": "naproxen", "dose": 500, "unit": "mg", "frequency": "bid"},
                           {"drug": "omeprazole", "dose": 20, "unit": "mg", "frequency": "qd"}]}]
    with httpx.Client(base_url=base, timeout=60) as api:
        for rx in everyday:
            assert api.post("/v1/prescriptions/check", json=rx, headers=auth("prescriber")).json()["verdict"] == "pass"
        ids = [api.post("/v1/prescriptions/check", json={**FLAGGED, "id": f"rx-w{i}"},
                        headers=auth("prescriber")).json()["review_id"] for i in range(4)]
        for rid, decision, reason in ((ids[0], "approve", "monitoring_in_place"),
                                      (ids[1], "approve", "benefit_outweighs_risk"),
                                      (ids[2], "reject", "unsafe_interaction")):
            r = api.post(f"/v1/reviews/{rid}/decision", json={"decision": decision, "reason_code": reason},
                         headers=auth("pharmacist"))
            assert r.status_code == 200, r.text

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.set_default_timeout(30_000)
            page.goto(f"{base}/review")
            page.fill("#api_key", ROLE_KEYS["admin"])
            page.click("#sign-in")
            page.click("a.navlink")  # the top bar's "Dashboard"
            expect(page.get_by_role("heading", name="Pharmacy lead's dashboard")).to_be_visible()
            page.goto(f"{base}/review/dashboard?days=7")
            expect(page.locator("svg.chart")).to_have_count(5)
            expect(page.locator("#kpi-checks")).to_have_text("7")
            expect(page.locator("#kpi-queued")).to_have_text("4")
            expect(page.locator("#kpi-pending")).to_have_text("1")
            # the charts are drawn: bars per tier, an override bar at 67% with its reasons, the queue line
            assert page.locator("#chart-alerts-per-day rect[fill='#1f5fbf']").count() >= 1  # counsel
            assert page.locator("#chart-alerts-per-day rect[fill='#c2410c']").count() >= 1  # review
            expect(page.locator("#chart-overrides")).to_contain_text("67% of 3")
            expect(page.locator("#chart-overrides")).to_contain_text("Monitoring in place")
            expect(page.locator("#chart-queue-depth polyline")).to_have_count(1)
            box = page.locator("#chart-alerts-per-rule svg").bounding_box()
            assert box and box["width"] > 300 and box["height"] > 60
            page.screenshot(path=str(SCREENSHOTS / "review_dashboard.png"), full_page=True)
            # the lead makes counselled interactions queue again: the form -> stored, audited, in force
            page.select_option("#preset", "strict")
            page.fill("#note", "one-week audit of counselled interactions")
            page.click("#tiers button[type=submit]")
            expect(page.locator(".notice")).to_contain_text("saved (version 1)")
            expect(page.locator("#preset")).to_have_value("strict")
        finally:
            browser.close()
    with httpx.Client(base_url=base, timeout=60) as api:
        r = api.post("/v1/prescriptions/check", json={**COUNSEL, "id": "rx-after"}, headers=auth("prescriber")).json()
        assert r["verdict"] == "review" and r["tier_policy"] == "strict v1"
    db = Database(db_url)
    try:
        with db.session() as s:
            (entry,) = audit.history(s, action="policy.alert_tiers")
            assert entry.actor.startswith("admin:") and entry.after["note"].startswith("one-week audit")
            assert audit.verify_chain(s).ok
    finally:
        db.dispose()
    assert (SCREENSHOTS / "review_dashboard.png").stat().st_size > 20_000
