"""The DDI risk model is swapped without a restart: admin reload, failed reload, registry polling."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from tests.plugins.db import API_KEYS, auth
from tests.plugins.registry_support import register_copy
from training import registry
from training.ddi_train import MODEL_NAME

RX = {"patient": {"age_years": 50}, "items": [{"drug": "amoxicillin"}, {"drug": "escitalopram"}]}


def _register(settings, src, dest, broken=False) -> str:
    def damage(folder):
        (folder / "model.onnx").write_bytes(b"not an onnx model")

    return register_copy(settings, src, dest, MODEL_NAME, damage if broken else None)


@pytest.fixture
def ddi_registry(ddi_model_dir, rx_checker_settings, tmp_path):
    from serving.settings import Settings

    settings = Settings(work_dir=tmp_path / "var", api_keys=API_KEYS, kb_path=rx_checker_settings.resolved_kb_path(),
                        triage_model_uri=str(tmp_path / "no-triage"))
    v1 = _register(settings, ddi_model_dir, tmp_path / "v1")
    registry.set_alias(MODEL_NAME, "champion", v1, actor="test", reason="first", settings=settings)
    return settings, v1


def _model_version(client) -> str:
    body = client.post("/v1/prescriptions/check", json=RX, headers=auth("prescriber")).json()
    assert body["model_status"] == "ok", body
    return body["model_version"]


def test_admin_reload_swaps_the_ddi_model_and_keeps_it_on_failure(ddi_registry, ddi_model_dir, tmp_path):
    from serving.app import create_app

    settings, v1 = ddi_registry
    with TestClient(create_app(settings)) as c:
        assert _model_version(c) == v1
        v2 = _register(settings, ddi_model_dir, tmp_path / "v2")
        registry.set_alias(MODEL_NAME, "champion", v2, actor="test", reason="retrain", settings=settings)
        assert _model_version(c) == v1  # nothing moves until a reload (polling is off)
        assert c.post("/v1/admin/models/reload?model=ddi", headers=auth("pharmacist")).status_code == 403
        r = c.post("/v1/admin/models/reload?model=ddi", headers=auth("admin"))
        assert r.json() == {"model": "ddi", "previous_version": v1, "current_version": v2, "reloaded": True,
                            "error": None}
        assert _model_version(c) == v2
        assert c.get("/readyz").json()["components"]["ddi_model"]["detail"] == f"ddi-severity {v2}"

        bad = _register(settings, ddi_model_dir, tmp_path / "bad", broken=True)
        registry.set_alias(MODEL_NAME, "champion", bad, actor="test", reason="broken on purpose", settings=settings)
        body = c.post("/v1/admin/models/reload?model=ddi", headers=auth("admin")).json()
        assert body["reloaded"] is False and body["current_version"] == v2 and body["error"]
        assert _model_version(c) == v2  # still answering with the good model
        assert 'rxt_model_reloads_total{model="ddi",outcome="failed"} 1.0' in c.get("/metrics").text

        r = c.post("/v1/admin/models/reload?model=kb", headers=auth("admin"))
        assert r.status_code == 422 and "model" in r.text


def test_polling_picks_up_a_new_ddi_champion(ddi_registry, ddi_model_dir, tmp_path):
    from serving.app import create_app

    settings, v1 = ddi_registry
    settings = settings.model_copy(update={"model_poll_seconds": 0.2})
    with TestClient(create_app(settings)) as c:
        assert _model_version(c) == v1
        v2 = _register(settings, ddi_model_dir, tmp_path / "v2")
        registry.set_alias(MODEL_NAME, "champion", v2, actor="test", reason="retrain", settings=settings)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _model_version(c) != v2:
            time.sleep(0.2)
        assert _model_version(c) == v2
