"""First start in minutes (training.bootstrap --quick / --full): a quick triage model registered as champion and
labelled quick everywhere the service names its version; the poller does not reload it in a loop and swaps to the
full champion when it is registered; one background trainer at a time."""

from __future__ import annotations

import fcntl
import json
import shutil

import pytest
from fastapi.testclient import TestClient

from serving.settings import Settings
from tests.serving.triage_support import CHAT, KEYS, register_folder
from training import bootstrap

pytestmark = pytest.mark.slow  # trains a (quick) model


@pytest.fixture
def quick_settings(tmp_path, rx_checker_settings, rx_checker, monkeypatch):
    # the shipped quick options, on fewer texts per center so the test stays short
    monkeypatch.setitem(bootstrap.QUICK_TRIAGE_OPTIONS, "limit_per_center", 8)
    monkeypatch.setitem(bootstrap.QUICK_TRIAGE_OPTIONS, "max_length", 48)
    return Settings(work_dir=tmp_path / "var", api_keys=KEYS, kb_path=rx_checker_settings.resolved_kb_path(),
                    ddi_model_uri="models:/ddi-severity@champion", model_poll_seconds=0)


def test_quick_start_then_swap_to_the_full_champion(quick_settings, tmp_path):
    from serving.app import create_app
    from serving.components import load_triage_classifier
    from serving.model_holder import ModelHolder
    from serving.registry import resolve_model_dir

    settings = quick_settings
    lines, need_full = bootstrap.bootstrap_quick(settings)
    assert "trained and registered triage-classifier" in lines[1]
    assert need_full  # the champion is quick and no DDI model is registered
    assert bootstrap.champion_is_quick(settings) and bootstrap.ddi_missing(settings)
    folder, version = resolve_model_dir(settings.triage_model_uri, settings)
    assert json.loads((folder / "meta.json").read_text())["quick"] is True
    assert json.loads((folder / "meta.json").read_text())["layers"] == 2

    model = load_triage_classifier(settings.triage_model_uri, settings)
    assert model.version == f"{version}+quick" and model.registry_version == version

    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/triage", json={"text": "my knee hurts when I climb stairs"}, headers=CHAT)
        assert r.status_code == 200 and r.json()["model_version"] == f"{version}+quick"
        ready = client.get("/readyz").json()
        assert ready["worker"]["triage_model_version"] == f"{version}+quick"
        assert "+quick" in ready["components"]["triage_model"]["detail"]
        assert ready["components"]["ddi_model"]["detail"].startswith("degraded: rules-only")
        rx = client.post("/v1/prescriptions/check", json={"items": [{"sig": "omeprazole 20 mg daily"}]},
                         headers={"Authorization": "Bearer test-prescriber-key-012345"})
        assert rx.status_code == 200 and rx.json()["model_status"].startswith("rules-only")

    holder = ModelHolder(settings)
    assert holder.load().reloaded
    assert holder.poll_once() is None  # "<v>+quick" is the alias's version: no reload loop

    # the full champion arrives (here: a copy with the quick mark removed); the poller swaps to it
    full = tmp_path / "full"
    shutil.copytree(folder, full)
    meta = json.loads((full / "meta.json").read_text())
    meta.pop("quick")
    (full / "meta.json").write_text(json.dumps(meta))
    v_full = register_folder(settings, full)
    result = holder.poll_once()
    assert result is not None and result.reloaded and holder.version == v_full
    assert not bootstrap.champion_is_quick(settings)
    lines, need_full = bootstrap.bootstrap_quick(settings)  # a later start: nothing to train for triage
    assert f"-> version {v_full}" in lines[1] and need_full  # (the DDI model is still missing)


def test_one_full_bootstrap_at_a_time(tmp_path):
    settings = Settings(work_dir=tmp_path / "var", api_keys={})
    settings.work_dir.mkdir(parents=True)
    with open(settings.work_dir / "bootstrap-full.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert bootstrap.bootstrap_full(settings) == ["another 'bootstrap --full' is running; nothing to do"]
