"""Oversized requests are refused before anything reads them: 413 before parsing and before authentication; a
too-long complaint is refused before any per-character work on it."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.plugins.db import auth

LIMIT = 4096


@pytest.fixture
def client(review_app, tmp_path):
    with TestClient(review_app(f"sqlite:///{tmp_path / 'limits.db'}", max_request_bytes=LIMIT)) as c:
        yield c


def _assert_413(r):
    assert r.status_code == 413, r.text
    body = r.json()
    assert str(LIMIT) in body["detail"] and body["errors"][0]["field"] == "body" and body["request_id"]


@pytest.mark.parametrize("path", ["/v1/triage", "/v1/prescriptions/check", "/v1/reviews/1/decision",
                                  "/review/login"])
def test_a_declared_oversized_body_is_413_before_authentication(client, path):
    big = json.dumps({"text": "x" * (LIMIT * 2)})
    # no API key at all: without the limit this would be a 401 (or a 303 for the page) after reading the body
    _assert_413(client.post(path, content=big, headers={"Content-Type": "application/json"}))


def test_a_streamed_oversized_body_is_413_too(client):
    def chunks():  # no Content-Length: chunked transfer encoding
        for _ in range(LIMIT // 512 + 4):
            yield b"x" * 1024

    r = client.post("/v1/prescriptions/check", content=chunks(), headers={"Content-Type": "application/json"})
    _assert_413(r)


def test_a_body_within_the_limit_goes_on_to_authentication(client):
    r = client.post("/v1/triage", json={"text": "x" * 100})
    assert r.status_code == 401


def test_default_limit_is_one_megabyte():
    from serving.settings import Settings

    assert Settings().max_request_bytes == 1_048_576


def test_text_length_is_checked_before_any_per_character_work(review_app, tmp_path, monkeypatch):
    import serving.routes.triage as triage_routes
    import serving.schemas as schemas

    calls: list[int] = []

    def spy(text: str) -> str:
        calls.append(len(text))
        return text.strip()

    monkeypatch.setattr(schemas, "clean_text", spy, raising=False)
    monkeypatch.setattr(triage_routes, "clean_text", spy, raising=False)
    with TestClient(review_app(f"sqlite:///{tmp_path / 't.db'}", max_text_chars=50)) as client:
        r = client.post("/v1/triage", json={"text": "y" * 3000}, headers=auth("chat"))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "text"
        assert "limit is 50" in r.json()["errors"][0]["message"]
        assert calls == [], f"the oversized text was processed character by character first: {calls}"
        r = client.post("/v1/triage/batch", json={"items": [{"text": "ok"}, {"text": "z" * 3000}]},
                        headers=auth("chat"))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "items.1.text"
        assert 3000 not in calls
        # a blank text is still refused, naming the field
        r = client.post("/v1/triage", json={"text": "   "}, headers=auth("chat"))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "text"
