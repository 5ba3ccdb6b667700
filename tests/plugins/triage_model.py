"""Session fixtures with a real, quickly trained triage model.

``triage_registry`` trains the 2-layer MiniLM classifier once per test session on a few real
examples per center (short max length, no cross-source run) into an isolated MLflow store under
a temp dir, registers it as ``triage-classifier`` version 1 and sets alias ``champion``.
``triage_model_dir`` is the registered artifact folder (model.onnx, model.int8.onnx, tokenizer/,
labels.json, meta.json) as fetched back from that registry.

The model is small and barely trained: tests may rely on its shape (19 labels, calibrated
probabilities, threshold, both ONNX variants), not on its accuracy.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FIXTURE_OPTIONS = dict(
    layers=2,
    epochs=2,
    limit_per_center=10,
    max_length=48,
    batch_size=32,
    lr=3e-4,
    seed=13,
    cross_source=False,
    few_shot="prototypes",
    progress=False,
    urgency=False,  # rules-only urgency here; tests/training/test_urgency_train.py adds a head to a copy
)


@pytest.fixture(scope="session")
def triage_registry(tmp_path_factory):
    """(Settings, version): an isolated MLflow registry holding triage-classifier@champion."""
    from serving.settings import Settings
    from training.registry import CHAMPION
    from training.triage_train import train_triage

    work = tmp_path_factory.mktemp("triage-model") / "var"
    settings = Settings(work_dir=work, api_keys={})
    result = train_triage(settings, alias=CHAMPION, output_dir=work / "run", **FIXTURE_OPTIONS)
    assert result.version is not None
    return settings, result.version


@pytest.fixture(scope="session")
def triage_model_dir(triage_registry) -> Path:
    """Local folder of the registered triage artifact (fetched from the fixture's registry)."""
    from training.registry import resolve_model_dir
    from training.triage_train import TRIAGE_MODEL_NAME

    settings, version = triage_registry
    folder, _ = resolve_model_dir(f"models:/{TRIAGE_MODEL_NAME}/{version}", settings)
    return Path(folder)
