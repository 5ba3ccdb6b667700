"""API keys and roles on the triage and admin endpoints (401 without a valid key, 403 wrong role)."""

from __future__ import annotations

import logging

import pytest

from tests.serving.triage_support import KEYS, client, served_settings  # noqa: F401 - fixtures

BODY = {"text": "sore throat and a runny nose"}


def _key(role: str) -> str:
    return next(k for k, r in KEYS.items() if r == role)


@pytest.mark.parametrize("path, body", [("/v1/triage", BODY), ("/v1/triage/batch", {"items": [BODY]})])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer not-a-real-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-API-Key": "not-a-real-key"},
    ],
)
def test_missing_or_unknown_key_is_401(client, path, body, headers):
    r = client.post(path, json=body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["detail"] and r.json()["request_id"]


@pytest.mark.parametrize("role", ["pharmacist", "prescriber", "ml"])
def test_other_roles_may_not_triage(client, role):
    r = client.post("/v1/triage", json=BODY, headers={"Authorization": f"Bearer {_key(role)}"})
    assert r.status_code == 403
    assert role in r.json()["detail"] and "chat" in r.json()["detail"]


@pytest.mark.parametrize("role", ["chat", "admin"])
def test_chat_and_admin_may_triage_with_either_header(client, role):
    assert client.post("/v1/triage", json=BODY, headers={"Authorization": f"Bearer {_key(role)}"}).status_code == 200
    assert client.post("/v1/triage", json=BODY, headers={"X-API-Key": _key(role)}).status_code == 200


@pytest.mark.parametrize("role", ["chat", "pharmacist", "prescriber", "ml"])
def test_only_admin_may_reload(client, role):
    r = client.post("/v1/admin/models/reload", headers={"Authorization": f"Bearer {_key(role)}"})
    assert r.status_code == 403
    assert client.post("/v1/admin/models/reload").status_code == 401


def test_public_endpoints_need_no_key(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)
    assert client.get("/metrics").status_code == 200


def test_keys_never_reach_the_logs(client, caplog):
    with caplog.at_level(logging.DEBUG):
        client.post("/v1/triage", json=BODY, headers={"Authorization": f"Bearer {_key('chat')}"})
        client.post("/v1/triage", json=BODY, headers={"Authorization": "Bearer wrong-secret-key-123"})
        client.post("/v1/admin/models/reload", headers={"X-API-Key": _key("pharmacist")})
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "key_id" in logged  # the fingerprint is logged ...
    for secret in (*KEYS, "wrong-secret-key-123"):
        assert secret not in logged  # ... the key never is
