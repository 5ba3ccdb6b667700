"""The /review page: security checks through the test client, and an end-to-end run in a real headless
Chromium (Debian's /usr/bin/chromium driven by Playwright) against the app served by uvicorn."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from serving import audit
from serving.db import Database, Review
from tests.plugins.db import ROLE_KEYS, auth
from tests.serving.test_reviews_api import BLOCKED, FLAGGED

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("RXT_SCREENSHOT_DIR", PROJECT_ROOT / "reports" / "screenshots"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def _sign_in(client: TestClient, who: str):
    page = client.get("/review")
    assert page.status_code == 200 and "Pharmacist sign-in" in page.text
    return client.post("/review/login", data={"api_key": ROLE_KEYS[who], "csrf": _csrf(page.text)},
                       follow_redirects=False)


def test_page_sign_in_csrf_and_roles(review_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'page.db'}"
    app = review_app(url)
    with TestClient(app) as client:
        rid = client.post("/v1/prescriptions/check", json=FLAGGED, headers=auth("prescriber")).json()["review_id"]
        # not signed in: the sign-in form, never the queue
        assert "Pharmacist sign-in" in client.get("/review").text
        assert client.get(f"/review/{rid}", follow_redirects=False).status_code == 303
        # non-pharmacist keys are refused; a forged form token too
        for who in ("chat", "prescriber"):
            r = _sign_in(client, who)
            assert r.status_code == 403 and "cannot open the review queue" in r.text
        r = client.post("/review/login", data={"api_key": ROLE_KEYS["pharmacist"], "csrf": "forged"})
        assert r.status_code == 400
        r = _sign_in(client, "pharmacist")
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert ROLE_KEYS["pharmacist"] not in cookie
        listing = client.get("/review")
        assert listing.status_code == 200 and f'href="/review/{rid}"' in listing.text
        assert "default-src 'self'" in listing.headers["content-security-policy"]
        detail = client.get(f"/review/{rid}").text
        assert "warfarin" in detail and "Record decision" in detail
        # a decision without the session's CSRF token is refused and changes nothing
        r = client.post(f"/review/{rid}/decision", data={"decision": "reject", "reason_code": "unsafe_interaction",
                                                           "csrf": "wrong"})
        assert r.status_code == 403
        # a missing reason re-renders the form with the error
        token = _csrf(detail)
        r = client.post(f"/review/{rid}/decision", data={"decision": "reject", "csrf": token})
        assert r.status_code == 422 and "needs a reason_code" in r.text
        # revoking the key ends the session
        app.state.rxt.api_keys = {k: v for k, v in app.state.rxt.api_keys.items() if k != ROLE_KEYS["pharmacist"]}
        assert "Pharmacist sign-in" in client.get("/review").text
    db = Database(url)
    with db.session() as s:
        assert s.get(Review, rid).status == "pending"
    db.dispose()


def test_admin_signs_in_read_only(review_app, tmp_path):
    with TestClient(review_app(f"sqlite:///{tmp_path / 'ro.db'}")) as client:
        rid = client.post("/v1/prescriptions/check", json=FLAGGED, headers=auth("prescriber")).json()["review_id"]
        assert _sign_in(client, "admin").status_code == 303
        detail = client.get(f"/review/{rid}").text
        assert "only pharmacists can decide" in detail and "Record decision" not in detail
        r = client.post(f"/review/{rid}/decision", data={"decision": "reject", "reason_code": "unsafe_interaction",
                                                           "csrf": _csrf(detail)})
        assert r.status_code == 403


# --- the real browser --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served_app(review_app, tmp_path):
    """The app served by uvicorn in a thread on a free loopback port; yields (base_url, database_url)."""
    import uvicorn

    url = f"sqlite:///{tmp_path / 'browser.db'}"
    app = review_app(url)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", url
    server.should_exit = True
    thread.join(timeout=30)


@pytest.mark.browser
def test_review_page_in_chromium(served_app):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    base, db_url = served_app
    with httpx.Client(base_url=base, timeout=60) as api:
        ids = []
        for rx in (FLAGGED, BLOCKED, {**FLAGGED, "id": "rx-flagged-2"}):
            r = api.post("/v1/prescriptions/check", json=rx, headers=auth("prescriber"))
            assert r.status_code == 200 and r.json()["queued"], r.text
            ids.append(r.json()["review_id"])
    rid = ids[0]

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.set_default_timeout(30_000)
            page.goto(f"{base}/review")
            expect(page.get_by_role("heading", name="Pharmacist sign-in")).to_be_visible()
            page.fill("#api_key", ROLE_KEYS["pharmacist"])
            page.click("#sign-in")
            expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
            rows = page.locator("table.queue tbody tr")
            expect(rows).to_have_count(3)
            # most severe first: the contraindicated (blocked) one heads the list
            expect(rows.first.locator(".sev")).to_have_text("contraindicated")
            scratch = PROJECT_ROOT / "reports" / "tmp"
            scratch.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(scratch / "review_queue.png"))

            page.click(f'a.open-review[href="/review/{rid}"]')
            expect(page.get_by_role("heading", name=re.compile(f"Review #{rid}"))).to_be_visible()
            expect(page.locator("article.finding").first).to_contain_text("warfarin")
            expect(page.locator("article.finding .source").first).to_be_visible()
            # the cited source's URL is a real link (only http(s) URLs become links)
            expect(page.locator("article.finding .source a").first).to_have_attribute("href", re.compile(r"^https://"))
            page.check('input[name="decision"][value="reject"]')
            # the reason list follows the decision (approve-only reasons are hidden)
            assert page.locator('#reason_code option[value="clinically_appropriate"]').is_disabled()
            page.select_option("#reason_code", "unsafe_interaction")
            page.fill("#note", "Bleeding risk with warfarin + aspirin; asked prescriber to stop aspirin.")
            page.screenshot(path=str(SCREENSHOTS / "review_page.png"), full_page=True)
            page.click("#submit-decision")
            expect(page.locator(".notice")).to_contain_text(f"Decision on review #{rid} recorded")
            expect(page.locator("table.queue tbody tr")).to_have_count(2)

            page.goto(f"{base}/review/{rid}")
            expect(page.locator("#decision-summary")).to_contain_text("reject")
            expect(page.locator("table.audit tbody tr")).to_have_count(2)
        finally:
            browser.close()

    db = Database(db_url)
    try:
        with db.session() as s:
            row = s.get(Review, rid)
            assert (row.status, row.decision, row.reason_code) == ("rejected", "reject", "unsafe_interaction")
            assert row.note.startswith("Bleeding risk") and row.decided_by.startswith("pharmacist:key-")
            assert row.version == 2
            decisions = audit.history(s, subject=f"review:{rid}", action="review.decision")
            assert len(decisions) == 1
            assert decisions[0].actor == row.decided_by
            assert decisions[0].after["reason_code"] == "unsafe_interaction"
            assert decisions[0].before == {"status": "pending", "version": 1}
            assert audit.verify_chain(s).ok
            others = [s.get(Review, i).status for i in ids[1:]]
            assert others == ["pending", "pending"]
    finally:
        db.dispose()
    assert (SCREENSHOTS / "review_page.png").stat().st_size > 10_000


def test_page_says_when_the_database_is_down(review_app):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with TestClient(review_app(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test")) as client:
        assert _sign_in(client, "pharmacist").status_code == 303
        for path in ("/review", "/review/1"):
            r = client.get(path)
            assert r.status_code == 503 and "unavailable" in r.text, path


def test_sign_out_revokes_the_session_on_the_server(review_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'logout.db'}"
    app = review_app(url)
    with TestClient(app) as client:
        assert _sign_in(client, "pharmacist").status_code == 303
        stolen = client.cookies.get("rxt_review_session")
        listing = client.get("/review")
        assert "Review queue" in listing.text
        r = client.post("/review/logout", data={"csrf": _csrf(listing.text)}, follow_redirects=False)
        assert r.status_code == 303
        # a copy of the cookie taken before the sign-out no longer opens the queue, in this process ...
        other = TestClient(app)  # another browser on the same running app
        other.cookies.set("rxt_review_session", stolen, path="/review")
        assert "Pharmacist sign-in" in other.get("/review").text
    # ... nor in another process serving the page with the same secret and database
    second = review_app(url)
    with TestClient(second) as other:
        second.state.rxt.session_secret = app.state.rxt.session_secret
        other.cookies.set("rxt_review_session", stolen, path="/review")
        assert "Pharmacist sign-in" in other.get("/review").text
        assert other.get("/review/1", follow_redirects=False).status_code == 303


def test_security_headers_on_every_review_response(review_app, tmp_path, monkeypatch):
    from serving import review_queue
    from serving.security import REVIEW_PAGE_HEADERS

    app = review_app(f"sqlite:///{tmp_path / 'headers.db'}", max_request_bytes=4096)
    with TestClient(app, raise_server_exceptions=False) as client:
        rid = client.post("/v1/prescriptions/check", json=FLAGGED, headers=auth("prescriber")).json()["review_id"]
        assert _sign_in(client, "pharmacist").status_code == 303
        csrf = _csrf(client.get("/review").text)
        responses = {
            "422 form validation": client.post(f"/review/{rid}/decision", data={"decision": "reject", "csrf": csrf,
                                                                                 "note": "n" * 2100}),
            "404 static": client.get("/review/static/nope.js"),
            "404 review": client.get("/review/99999"),
            "405": client.put("/review"),
            "413": client.post("/review/login", content=b"x" * 5000,
                               headers={"Content-Type": "application/x-www-form-urlencoded"}),
            "303": client.get(f"/review/{rid}", cookies={"rxt_review_session": "forged"}, follow_redirects=False),
        }
        monkeypatch.setattr(review_queue, "list_reviews", lambda *a, **k: 1 / 0)
        responses["500"] = client.get("/review")
        for what, r in responses.items():
            assert r.status_code == int(what[:3]), (what, r.status_code, r.text[:200])
            for name, value in REVIEW_PAGE_HEADERS.items():
                assert r.headers.get(name) == value, (what, name, dict(r.headers))
        # the API is not the page: no page CSP forced on JSON answers
        assert "content-security-policy" not in client.get("/healthz").headers
