"""/readyz shows a failed model reload (the old model keeps answering, so readiness stays ok)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.testclient import TestClient

from tests.plugins.db import auth


@dataclass
class _FakeClassifier:
    version: str = "7"
    labels: tuple = ("cardiology",)


def _broken_loader(uri, settings):
    raise FileNotFoundError(f"no model at {uri}")


def test_a_failed_reload_is_visible_in_readyz(review_app, tmp_path):
    app = review_app(f"sqlite:///{tmp_path / 'ready.db'}")
    with TestClient(app) as client:
        state = app.state.rxt
        holder = state.triage.holder
        holder._model = _FakeClassifier()  # a model serving now
        holder._loader = _broken_loader
        r = client.post("/v1/admin/models/reload", headers=auth("admin"))
        assert r.status_code == 200 and r.json()["reloaded"] is False
        comp = client.get("/readyz").json()["components"]["triage_model"]
        assert comp["ok"] is True  # still serving version 7
        assert "version 7" in comp["detail"] and "last reload failed" in comp["detail"]
        assert "no model at" in comp["detail"]

        # the DDI model: the checker runs (rules-only here), the failed reload is named
        state.checker.ddi._loader = _broken_loader
        state.checker._injected = False
        r = client.post("/v1/admin/models/reload?model=ddi", headers=auth("admin"))
        assert r.json()["reloaded"] is False
        ddi = client.get("/readyz").json()["components"]["ddi_model"]
        assert ddi["ok"] is True and "last reload failed" in ddi["detail"] and "no model at" in ddi["detail"]

        # a later successful reload clears it
        holder._loader = lambda uri, settings: _FakeClassifier(version="8")
        holder._check = lambda model: None
        assert client.post("/v1/admin/models/reload", headers=auth("admin")).json()["reloaded"] is True
        comp = client.get("/readyz").json()["components"]["triage_model"]
        assert comp["detail"].startswith("version 8") and "last reload failed" not in comp["detail"]
