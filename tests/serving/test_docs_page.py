"""``/docs`` is Swagger UI served by the service itself: it renders in a real Chromium with no network at all."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from tests.serving.test_review_page import CHROMIUM, CHROMIUM_ARGS, served_app  # noqa: F401 - the fixture

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def documented_operations(base: str) -> int:
    """Every operation of the service's own OpenAPI document (tests/serving/test_openapi.py names them)."""
    spec = httpx.get(f"{base}/openapi.json", timeout=10).json()
    return sum(1 for item in spec["paths"].values() for method in item if method in HTTP_METHODS)


def test_docs_assets_are_served_locally(served_app):  # noqa: F811
    base, _ = served_app
    with httpx.Client(base_url=base, timeout=30) as http:
        html = http.get("/docs").text
        assert "/docs/assets/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
        js = http.get("/docs/assets/swagger-ui-bundle.js")
        assert js.status_code == 200 and len(js.content) > 500_000
        assert http.get("/docs/assets/swagger-ui.css").status_code == 200
        assert http.get("/docs/assets/../../settings.py").status_code == 404
        assert http.get("/docs/assets/index.html").status_code == 404


@pytest.mark.browser
def test_swagger_ui_renders_offline_in_chromium(served_app):  # noqa: F811
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    base, _ = served_app
    outside: list[str] = []

    def only_loopback(route):
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:  # no network: anything else (a CDN) fails, and is recorded
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            *CHROMIUM_ARGS, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.set_default_timeout(30_000)
            page.route("**/*", only_loopback)
            page.goto(f"{base}/docs")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("rxtriage")
            expect(page.locator(".opblock")).to_have_count(documented_operations(base))
            check = page.locator("#operations-prescriptions-check_prescription")
            check.locator(".opblock-summary").click()
            responses = check.locator(".responses-wrapper")
            expect(responses).to_contain_text("RXT_MAX_REQUEST_BYTES")  # the documented 413 ...
            expect(responses).to_contain_text('"request_id"')  # ... and the error body's example
        finally:
            browser.close()
    assert outside == [], f"/docs tried to reach the network: {outside}"
