"""Helpers and fixtures shared by the triage-serving tests (imported by each test module).

Everything is real: the tiny triage model trained once per session by ``tests.plugins.triage_model``,
a real MLflow SQLite registry in a temp dir, real onnxruntime and the real red-flag rules.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.settings import Settings

KEYS = {
    "test-chat-key-0123456789": "chat",
    "test-admin-key-0123456789": "admin",
    "test-pharmacist-key-012345": "pharmacist",
    "test-prescriber-key-012345": "prescriber",
    "test-ml-key-0123456789abcd": "ml",
}
CHAT = {"Authorization": "Bearer test-chat-key-0123456789"}
ADMIN = {"Authorization": "Bearer test-admin-key-0123456789"}
PHARMACIST = {"Authorization": "Bearer test-pharmacist-key-012345"}
EMERGENCY_TEXT = "crushing chest pain spreading to my left arm and I'm sweating"

# Only the files the int8 variant needs (keeps copies small).
_MODEL_FILES = ("labels.json", "meta.json", "model.int8.onnx", "tokenizer")


def copy_model(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in _MODEL_FILES:
        path = src / name
        if path.is_dir():
            shutil.copytree(path, dest / name)
        elif path.is_file():
            shutil.copy2(path, dest / name)
    for extra in src.iterdir():  # anything else small the artifact carries (cards, config)
        if extra.name not in _MODEL_FILES and extra.is_file() and extra.suffix != ".onnx":
            shutil.copy2(extra, dest / extra.name)
    return dest


def register_folder(settings: Settings, folder: Path, alias: str | None = "champion") -> str:
    """Log ``folder`` as a run artifact, register it as a new triage-classifier version."""
    import mlflow

    from training import registry
    from training.triage_train import TRIAGE_MODEL_NAME

    registry.configure(settings)
    exp = registry.experiment_id("serving-tests", settings)
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_artifacts(str(folder), artifact_path="model")
    version = registry.register_run_artifact(TRIAGE_MODEL_NAME, run.info.run_id, "model")
    if alias:
        registry.set_alias(TRIAGE_MODEL_NAME, alias, version)
    return version


def make_settings(work_dir: Path, **overrides) -> Settings:
    return Settings(work_dir=work_dir, api_keys=KEYS, **overrides)


@pytest.fixture(scope="module")
def served_settings(triage_registry) -> Settings:
    """Settings on the session's registry (champion = the tiny model) with test API keys."""
    reg_settings, _ = triage_registry
    return make_settings(reg_settings.work_dir)


@pytest.fixture(scope="module")
def client(served_settings):
    from serving.app import create_app

    app = create_app(served_settings)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def module_registry(tmp_path_factory, triage_model_dir):
    """An isolated registry (one per test module: creating an MLflow store is slow) + a good model copy."""
    root = tmp_path_factory.mktemp("serving-registry")
    settings = make_settings(root / "var")
    good = copy_model(triage_model_dir, root / "good")
    register_folder(settings, good)
    return settings, good


@pytest.fixture
def own_registry(module_registry):
    """(settings, version): the isolated registry with alias champion on a freshly registered good version."""
    settings, good = module_registry
    return settings, register_folder(settings, good)
