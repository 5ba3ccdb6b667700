"""Model reload without a restart: admin endpoint, registry polling, failed reloads, in-flight batches."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from serving.model_holder import ModelHolder, parse_alias_uri
from tests.serving.triage_support import (  # noqa: F401 - fixtures
    ADMIN,
    CHAT,
    copy_model,
    module_registry,
    own_registry,
    register_folder,
)
from training import registry
from training.triage_train import TRIAGE_MODEL_NAME


def _app(settings):
    from serving.app import create_app

    return create_app(settings)


def _version(client) -> str:
    r = client.post("/v1/triage", json={"text": "my knee hurts when I climb stairs"}, headers=CHAT)
    assert r.status_code == 200, r.text
    return r.json()["model_version"]


def _corrupt_copy(src, dest):
    folder = copy_model(src, dest)
    (folder / "model.int8.onnx").write_bytes(b"this is not an onnx model")
    return folder


def test_reload_swaps_to_the_new_champion(own_registry, triage_model_dir, tmp_path):
    settings, v1 = own_registry
    with TestClient(_app(settings)) as c:
        assert _version(c) == v1
        v2 = register_folder(settings, copy_model(triage_model_dir, tmp_path / "v2"))
        assert _version(c) == v1  # nothing changes until a reload (polling is off)
        r = c.post("/v1/admin/models/reload", headers=ADMIN)
        assert r.status_code == 200
        assert r.json() == {"model": "triage", "previous_version": v1, "current_version": v2, "reloaded": True,
                            "error": None}
        assert _version(c) == v2
        assert f'rxt_triage_model_info{{taxonomy_version="' in c.get("/metrics").text
        assert f'version="{v2}"' in c.get("/metrics").text and f'version="{v1}"' not in c.get("/metrics").text


@pytest.mark.parametrize("breakage", ["corrupt_onnx", "missing_files", "incompatible_labels"])
def test_failed_reload_keeps_the_old_model_and_says_why(own_registry, triage_model_dir, tmp_path, breakage):
    settings, v1 = own_registry
    folder = copy_model(triage_model_dir, tmp_path / "bad")
    if breakage == "corrupt_onnx":
        (folder / "model.int8.onnx").write_bytes(b"this is not an onnx model")
        expected = "ModelArtifactError"
    elif breakage == "missing_files":
        (folder / "labels.json").unlink()
        expected = "labels.json"
    else:
        import json

        labels = json.loads((folder / "labels.json").read_text())
        labels[0] = "astrology"
        (folder / "labels.json").write_text(json.dumps(labels))
        expected = "astrology"
    with TestClient(_app(settings)) as c:
        bad = register_folder(settings, folder)  # the champion alias now points at a broken artifact
        r = c.post("/v1/admin/models/reload", headers=ADMIN)
        assert r.status_code == 200
        body = r.json()
        assert body["reloaded"] is False and body["previous_version"] == v1 and body["current_version"] == v1
        assert expected in body["error"], body["error"]
        assert bad != v1
        assert _version(c) == v1  # still serving the old model
        assert c.get("/readyz").json()["components"]["triage_model"]["ok"] is True
        assert 'rxt_model_reloads_total{model="triage",outcome="failed"} 1.0' in c.get("/metrics").text


def test_reload_when_the_alias_was_deleted_keeps_serving(own_registry):
    from mlflow import MlflowClient

    settings, v1 = own_registry
    with TestClient(_app(settings)) as c:
        registry.configure(settings)
        MlflowClient().delete_registered_model_alias(TRIAGE_MODEL_NAME, "champion")
        body = c.post("/v1/admin/models/reload", headers=ADMIN).json()
        assert body["reloaded"] is False and body["current_version"] == v1
        assert "ModelNotFoundError" in body["error"] and "champion" in body["error"]
        assert _version(c) == v1


def test_polling_picks_up_a_new_champion(own_registry, triage_model_dir, tmp_path):
    settings, v1 = own_registry
    settings = settings.model_copy(update={"model_poll_seconds": 0.2})
    with TestClient(_app(settings)) as c:
        assert _version(c) == v1
        bad = register_folder(settings, _corrupt_copy(triage_model_dir, tmp_path / "bad"))
        time.sleep(1.0)  # several polls: the broken version is tried once, then skipped
        assert _version(c) == v1
        text = c.get("/metrics").text
        assert 'rxt_model_reloads_total{model="triage",outcome="failed"} 1.0' in text, text
        v3 = register_folder(settings, copy_model(triage_model_dir, tmp_path / "good"))
        deadline = time.monotonic() + 15
        while _version(c) != v3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _version(c) == v3 and bad != v3


class GatedModel:
    """The real classifier, with a gate that holds a batch mid-flight."""

    def __init__(self, inner):
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, texts):
        self.entered.set()
        assert self.release.wait(10)
        return self.inner.predict(texts)


def test_in_flight_requests_finish_on_the_old_model(own_registry, triage_model_dir, tmp_path):
    settings, v1 = own_registry
    app = _app(settings)

    async def main():
        async with app.router.lifespan_context(app):
            service = app.state.rxt.triage
            gated = GatedModel(service.holder.model)
            service.holder._model = gated  # the batch below starts on version v1 and is held
            v2 = await asyncio.to_thread(register_folder, settings, copy_model(triage_model_dir, tmp_path / "v2"))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                in_flight = asyncio.ensure_future(c.post("/v1/triage", json={"text": "rash on my arm"}, headers=CHAT))
                assert await asyncio.to_thread(gated.entered.wait, 10)
                reload = await c.post("/v1/admin/models/reload", headers=ADMIN)  # swaps while the batch runs
                assert reload.json()["reloaded"] is True and reload.json()["current_version"] == v2
                # queued behind the held batch; it will form the next batch, on the new model
                after = asyncio.ensure_future(c.post("/v1/triage", json={"text": "sore throat"}, headers=CHAT))
                await asyncio.sleep(0.05)
                gated.release.set()
                return v2, await in_flight, await after

    v2, old, after = asyncio.run(main())
    # The request that was in the batch when the swap happened answered with the old model ...
    assert old.status_code == 200 and old.json()["model_version"] == v1
    # ... and the one after the swap with the new one.
    assert after.status_code == 200 and after.json()["model_version"] == v2


def test_parse_alias_uri():
    assert parse_alias_uri("models:/triage-classifier@champion") == ("triage-classifier", "champion")
    assert parse_alias_uri("models:/triage-classifier/3") is None
    assert parse_alias_uri("/srv/models/triage") is None


def test_holder_reports_why_it_is_not_ready(tmp_path):
    from tests.serving.triage_support import make_settings

    holder = ModelHolder(make_settings(tmp_path / "var"), uri=str(tmp_path / "no-such-model"))
    assert holder.is_ready() == (False, f"not loaded ({tmp_path / 'no-such-model'}): loading")
    result = holder.reload()
    assert result.reloaded is False and result.current_version is None
    assert "model folder not found" in result.error
    ok, detail = holder.is_ready()
    assert ok is False and "model folder not found" in detail
